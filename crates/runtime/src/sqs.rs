//! SQS consumers with partial batch failure reporting.
//!
//! Lambda hands a consumer up to `BatchSize` messages at once. Each record
//! is handled on its own — a bad record (unparseable, poison, or one whose
//! handler panics) fails alone and is reported in `batchItemFailures`, so
//! only it is retried and, after `maxReceiveCount` receives, moved to the
//! dead-letter queue. The rest of the batch is deleted as done.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures::{FutureExt, StreamExt};

/// A record without a message id: it cannot be reported as failed (an empty
/// id makes Lambda fail the whole batch, silently), so no record of the
/// batch is handled and the invocation fails, loudly: SQS delivers the whole
/// batch again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "an SQS record came without a message id; the whole batch is failed so SQS delivers it again"
)]
pub struct MissingMessageId;

/// Refuses a batch with a record that has no message id (see [`MissingMessageId`]).
fn check_ids(event: &SqsEvent) -> Result<(), MissingMessageId> {
    if event
        .records
        .iter()
        .any(|m| m.message_id.as_deref().is_none_or(str::is_empty))
    {
        tracing::error!("{MissingMessageId}");
        return Err(MissingMessageId);
    }
    Ok(())
}

/// How many times SQS has delivered this message (1 on the first receive).
pub fn receive_count(message: &SqsMessage) -> u32 {
    message
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|c| c.parse().ok())
        .unwrap_or(1)
}

/// Handles every record of `event` with `handle`, at most `concurrency` at a
/// time, and reports the ones that failed.
pub async fn run_batch<F, Fut, E>(
    event: SqsEvent,
    concurrency: usize,
    handle: F,
) -> Result<SqsBatchResponse, MissingMessageId>
where
    F: Fn(SqsMessage) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    check_ids(&event)?;
    let failures: Vec<BatchItemFailure> = futures::stream::iter(event.records)
        .map(|message| {
            let id = message.message_id.clone().unwrap_or_default(); // checked above
            let work = AssertUnwindSafe(handle(message)).catch_unwind();
            async move {
                match work.await {
                    Ok(Ok(())) => None,
                    Ok(Err(error)) => {
                        tracing::warn!(message_id = %id, error = %error, "record failed; it will be retried");
                        Some(id)
                    }
                    Err(_) => {
                        tracing::error!(message_id = %id, "record handler panicked; it will be retried");
                        Some(id)
                    }
                }
            }
        })
        .buffer_unordered(concurrency.max(1))
        .filter_map(|failed| async move { failed })
        .map(|id| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failure
        })
        .collect()
        .await;
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failures;
    Ok(response)
}

/// Handles the records of a FIFO queue event: message groups run
/// concurrently, the records of one group strictly in order. After a
/// record fails, the later records of its group are not attempted and are
/// reported as failed too, so SQS redelivers them after it, in order (what
/// Lambda requires of FIFO consumers that report partial failures).
pub async fn run_fifo_batch<F, Fut, E>(
    event: SqsEvent,
    handle: F,
) -> Result<SqsBatchResponse, MissingMessageId>
where
    F: Fn(SqsMessage) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    check_ids(&event)?;
    let mut groups: Vec<(String, Vec<SqsMessage>)> = Vec::new();
    for message in event.records {
        let group = message
            .attributes
            .get("MessageGroupId")
            .cloned()
            .unwrap_or_default();
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, messages)) => messages.push(message),
            None => groups.push((group, vec![message])),
        }
    }
    let handle = &handle;
    let failed: Vec<Vec<String>> = futures::future::join_all(groups.into_iter().map(
        |(group, messages)| async move {
            let mut failed = Vec::new();
            for message in messages {
                let id = message.message_id.clone().unwrap_or_default(); // checked above
                if !failed.is_empty() {
                    failed.push(id);
                    continue;
                }
                match AssertUnwindSafe(handle(message)).catch_unwind().await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        tracing::warn!(message_id = %id, %group, error = %error, "record failed; it and the rest of its group will be retried in order");
                        failed.push(id);
                    }
                    Err(_) => {
                        tracing::error!(message_id = %id, %group, "record handler panicked; it and the rest of its group will be retried in order");
                        failed.push(id);
                    }
                }
            }
            failed
        },
    ))
    .await;
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failed
        .into_iter()
        .flatten()
        .map(|id| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failure
        })
        .collect();
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(bodies: &[&str]) -> SqsEvent {
        let mut event = SqsEvent::default();
        event.records = bodies
            .iter()
            .enumerate()
            .map(|(i, body)| {
                let mut m = SqsMessage::default();
                m.message_id = Some(format!("m{i}"));
                m.body = Some(body.to_string());
                m
            })
            .collect();
        event
    }

    #[tokio::test]
    async fn a_fifo_failure_holds_back_the_rest_of_its_group_only() {
        let mut event = event(&["a1", "b1", "a-bad", "b2", "a3"]);
        for record in &mut event.records {
            let group = record.body.as_deref().unwrap()[..1].to_owned();
            record.attributes.insert("MessageGroupId".into(), group);
        }
        let seen = std::sync::Mutex::new(Vec::new());
        let response = run_fifo_batch(event, |m| {
            let body = m.body.clone().unwrap();
            seen.lock().unwrap().push(body.clone());
            async move {
                if body.contains("bad") {
                    Err("poison")
                } else {
                    Ok(())
                }
            }
        })
        .await
        .unwrap();
        let failed: Vec<_> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect();
        // a-bad (m2) failed, so a3 (m4) was held back; group b was unaffected.
        assert_eq!(failed, vec!["m2", "m4"]);
        let seen = seen.into_inner().unwrap();
        assert!(!seen.contains(&"a3".to_owned()));
        assert!(seen.contains(&"b2".to_owned()));
    }

    #[tokio::test]
    async fn a_record_without_an_id_fails_the_whole_batch_before_anything_runs() {
        let mut event = event(&["a", "b"]);
        event.records[1].message_id = None;
        let ran = std::sync::atomic::AtomicUsize::new(0);
        let handle = |_m: SqsMessage| {
            ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Ok::<(), &str>(()) }
        };
        assert_eq!(
            run_batch(event.clone(), 2, handle).await.unwrap_err(),
            MissingMessageId
        );
        assert_eq!(
            run_fifo_batch(event, handle).await.unwrap_err(),
            MissingMessageId
        );
        assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn only_failed_and_panicking_records_are_reported() {
        let response = run_batch(event(&["ok", "bad", "ok", "panic"]), 2, |m| async move {
            match m.body.as_deref() {
                Some("bad") => Err("bad record"),
                Some("panic") => panic!("boom"),
                _ => Ok(()),
            }
        })
        .await
        .unwrap();
        let mut failed: Vec<_> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect();
        failed.sort();
        assert_eq!(failed, vec!["m1", "m3"]);
    }
}
