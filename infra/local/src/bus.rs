//! Watching the domain events pass on a stage's bus, as a consumer would:
//! an EventBridge rule on the bus with an SQS queue as its target (moto
//! delivers to it as AWS does). The tests read the events off it, and
//! `adesync-local serve --events` prints them.

use std::time::Duration;

use adesync_runtime::aws::Clients;
use anyhow::{Context, Result};
use aws_sdk_eventbridge::types::Target;
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::Value;

/// A rule matching every adesync event of one bus, delivering to a queue.
#[derive(Debug)]
pub struct EventTap {
    clients: Clients,
    bus: String,
    rule: String,
    queue_url: String,
}

impl EventTap {
    /// Creates the queue `name` and the rule `name` on `bus`.
    pub async fn start(clients: &Clients, bus: &str, name: &str) -> Result<Self> {
        let queue_url = clients
            .sqs
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .context("CreateQueue (event tap)")?
            .queue_url
            .context("CreateQueue returned no URL")?;
        let arn = clients
            .sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .context("GetQueueAttributes (event tap)")?
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .context("no QueueArn")?;
        clients
            .eventbridge
            .put_rule()
            .name(name)
            .event_bus_name(bus)
            .event_pattern(serde_json::json!({"source": [adesync_events::SOURCE]}).to_string())
            .send()
            .await
            .context("PutRule (event tap)")?;
        clients
            .eventbridge
            .put_targets()
            .rule(name)
            .event_bus_name(bus)
            .targets(Target::builder().id("queue").arn(arn).build()?)
            .send()
            .await
            .context("PutTargets (event tap)")?;
        Ok(Self {
            clients: clients.clone(),
            bus: bus.to_owned(),
            rule: name.to_owned(),
            queue_url,
        })
    }

    /// The events delivered so far (waiting up to `wait` for the first):
    /// each EventBridge envelope (`id`, `detail-type`, `source`, `detail`, …).
    pub async fn poll(&self, wait: Duration) -> Result<Vec<Value>> {
        let received = self
            .clients
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(i32::try_from(wait.as_secs()).unwrap_or(20).min(20))
            .send()
            .await
            .context("ReceiveMessage (event tap)")?;
        let mut events = Vec::new();
        let mut handles = Vec::new();
        for message in received.messages() {
            if let Some(body) = message.body() {
                events.push(serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())));
            }
            if let Some(handle) = message.receipt_handle() {
                handles.push(
                    aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                        .id(handles.len().to_string())
                        .receipt_handle(handle)
                        .build()?,
                );
            }
        }
        if !handles.is_empty() {
            // One request for the ten: moto's SQS slows down as a queue grows,
            // so the tap keeps up by emptying it in as few calls as it can.
            self.clients
                .sqs
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(handles))
                .send()
                .await
                .context("DeleteMessageBatch (event tap)")?;
        }
        Ok(events)
    }

    /// Every event delivered until `quiet` passes without one.
    pub async fn drain(&self, quiet: Duration) -> Result<Vec<Value>> {
        let mut all = Vec::new();
        loop {
            let events = self.poll(quiet).await?;
            if events.is_empty() {
                return Ok(all);
            }
            all.extend(events);
        }
    }

    /// Removes the rule and the queue.
    pub async fn stop(&self) {
        let eventbridge = &self.clients.eventbridge;
        let _ = eventbridge
            .remove_targets()
            .rule(&self.rule)
            .event_bus_name(&self.bus)
            .ids("queue")
            .send()
            .await;
        let _ = eventbridge
            .delete_rule()
            .name(&self.rule)
            .event_bus_name(&self.bus)
            .send()
            .await;
        let _ = self
            .clients
            .sqs
            .delete_queue()
            .queue_url(&self.queue_url)
            .send()
            .await;
    }
}

/// One line for a terminal: `device.added  C02X…  token 01…`.
pub fn describe(event: &Value) -> String {
    let detail = &event["detail"];
    let kind = event["detail-type"].as_str().unwrap_or("?");
    let subject = match (&detail["device"], &detail["run"]) {
        (device, _) if device.is_object() => format!(
            "{} {}{}",
            device["serial"].as_str().unwrap_or("?"),
            device["state"].as_str().unwrap_or("?"),
            detail["reason"]
                .as_str()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
        (_, run) if run.is_object() => format!(
            "{} sync {}: {} fetched, {} imported, {} listed, {} released, {} ms",
            run["kind"].as_str().unwrap_or("?"),
            run["outcome"].as_str().unwrap_or("?"),
            run["fetched"],
            run["imported"],
            run["listed"],
            run["released"],
            run["duration_ms"]
        ),
        _ => String::new(),
    };
    format!(
        "{kind:<16} {subject}  token {}  id {}",
        detail["token_id"].as_str().unwrap_or("?"),
        detail["id"].as_str().unwrap_or("?")
    )
}

/// Prints the events `tap` receives until the task is dropped: the first
/// [`SHOWN_PER_KIND`] of each kind in full, then how many more of each
/// passed, whenever the bus goes quiet (a first sync of 20,000 devices is
/// 20,000 `device.added`: a tally, not a flood).
pub fn print_events(tap: EventTap) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen: std::collections::BTreeMap<String, u64> = Default::default();
        let mut untold: std::collections::BTreeMap<String, u64> = Default::default();
        loop {
            let events = match tap.poll(Duration::from_secs(2)).await {
                Ok(events) => events,
                Err(error) => {
                    eprintln!("events: the tap stopped: {error:#}");
                    return;
                }
            };
            if events.is_empty() && !untold.is_empty() {
                let tally: Vec<String> = std::mem::take(&mut untold)
                    .into_iter()
                    .map(|(kind, n)| format!("{n} more {kind}"))
                    .collect();
                println!("event  … {}", tally.join(", "));
            }
            for event in events {
                let kind = event["detail-type"].as_str().unwrap_or("?").to_owned();
                let count = seen.entry(kind.clone()).or_default();
                *count += 1;
                if *count <= SHOWN_PER_KIND {
                    println!("event  {}", describe(&event));
                } else {
                    *untold.entry(kind).or_default() += 1;
                }
            }
        }
    })
}

/// Events of one kind [`print_events`] shows in full.
pub const SHOWN_PER_KIND: u64 = 3;
