//! `PutEvents`, batched and retried.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};

use crate::event::Event;

/// At most 10 entries per `PutEvents` request (EventBridge's limit).
pub const MAX_ENTRIES: usize = 10;
/// At most 256 KiB per request, counted as EventBridge counts an entry.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;
/// Attempts for an entry EventBridge reports failed (throttling, an
/// internal failure) before the publish gives up and the caller keeps it
/// pending.
const ATTEMPTS: usize = 3;
/// Requests in flight at once for one publish.
const CONCURRENT_REQUESTS: usize = 8;

/// One entry of a `PutEvents` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub detail_type: String,
    pub detail: String,
}

impl Entry {
    /// Its size as EventBridge counts it: 14 bytes for the time, and the
    /// source, detail type and detail in UTF-8.
    pub fn size(&self) -> usize {
        14 + crate::SOURCE.len() + self.detail_type.len() + self.detail.len()
    }
}

/// The bus, as narrow as the publisher needs: one `PutEvents` request of
/// at most [`MAX_ENTRIES`] entries, answering per entry whether it failed
/// (`Some(error code)`), in order.
pub trait Bus: Send + Sync {
    fn put_events<'a>(
        &'a self,
        entries: &'a [Entry],
    ) -> BoxFuture<'a, Result<Vec<Option<String>>, PublishError>>;
}

/// Events that could not be published: the caller keeps them pending.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the PutEvents request failed: {0}")]
    Request(String),
    #[error("{failed} events were not accepted by the bus ({code})")]
    Rejected { failed: usize, code: String },
}

/// Publishes events; cheap to clone. Without a bus (no
/// `ADESYNC_EVENT_BUS_NAME`) publishing does nothing.
#[derive(Clone, Default)]
pub struct Publisher {
    bus: Option<Arc<dyn Bus>>,
    backoff: Duration,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("enabled", &self.bus.is_some())
            .finish()
    }
}

impl Publisher {
    pub fn new(bus: Arc<dyn Bus>) -> Self {
        Self {
            bus: Some(bus),
            backoff: Duration::from_millis(100),
        }
    }

    /// Publishing to nowhere (a deployment without a bus, unit tests).
    pub fn disabled() -> Self {
        Self::default()
    }

    /// The AWS bus named `bus_name`, or [`Publisher::disabled`] if empty.
    pub fn eventbridge(client: aws_sdk_eventbridge::Client, bus_name: Option<&str>) -> Self {
        match bus_name.filter(|name| !name.is_empty()) {
            Some(name) => Self::new(Arc::new(EventBridgeBus {
                client,
                bus_name: name.to_owned(),
            })),
            None => Self::disabled(),
        }
    }

    /// With another first wait between attempts (doubling each time).
    pub fn with_backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    pub fn is_enabled(&self) -> bool {
        self.bus.is_some()
    }

    /// Publishes every event, or fails naming how many were not accepted
    /// (some may have been: publishing is at least once).
    pub async fn publish(&self, events: &[Event]) -> Result<(), PublishError> {
        let Some(bus) = &self.bus else {
            return Ok(());
        };
        let entries: Vec<Entry> = events
            .iter()
            .map(|event| Entry {
                detail_type: event.kind.clone(),
                detail: event.detail(),
            })
            .collect();
        futures::stream::iter(requests(entries))
            .map(|request| self.put_with_retries(bus.as_ref(), request))
            .buffer_unordered(CONCURRENT_REQUESTS)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// One request; the entries it reports failed are sent again.
    async fn put_with_retries(
        &self,
        bus: &dyn Bus,
        mut pending: Vec<Entry>,
    ) -> Result<(), PublishError> {
        let mut last = PublishError::Request("not sent".into());
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(self.backoff * (1 << attempt)).await;
            }
            match bus.put_events(&pending).await {
                Ok(answers) => {
                    let mut code = String::new();
                    let mut failed = Vec::new();
                    for (entry, answer) in pending.into_iter().zip(answers) {
                        if let Some(error) = answer {
                            code = error;
                            failed.push(entry);
                        }
                    }
                    if failed.is_empty() {
                        return Ok(());
                    }
                    last = PublishError::Rejected {
                        failed: failed.len(),
                        code,
                    };
                    pending = failed;
                }
                Err(error) => last = error,
            }
            tracing::warn!(error = %last, attempt, "publishing events failed; retrying");
        }
        Err(last)
    }
}

/// Cuts entries into requests of at most [`MAX_ENTRIES`] entries and
/// [`MAX_REQUEST_BYTES`] bytes (an entry larger than that goes alone, and
/// EventBridge refuses it).
pub fn requests(entries: Vec<Entry>) -> Vec<Vec<Entry>> {
    let mut requests: Vec<Vec<Entry>> = Vec::new();
    let mut bytes = 0;
    for entry in entries {
        let size = entry.size();
        match requests.last_mut() {
            Some(last) if last.len() < MAX_ENTRIES && bytes + size <= MAX_REQUEST_BYTES => {
                bytes += size;
                last.push(entry);
            }
            _ => {
                bytes = size;
                requests.push(vec![entry]);
            }
        }
    }
    requests
}

/// The AWS EventBridge bus.
#[derive(Debug, Clone)]
pub struct EventBridgeBus {
    client: aws_sdk_eventbridge::Client,
    bus_name: String,
}

impl Bus for EventBridgeBus {
    fn put_events<'a>(
        &'a self,
        entries: &'a [Entry],
    ) -> BoxFuture<'a, Result<Vec<Option<String>>, PublishError>> {
        use aws_sdk_eventbridge::types::PutEventsRequestEntry;
        Box::pin(async move {
            let request = entries
                .iter()
                .fold(self.client.put_events(), |request, entry| {
                    request.entries(
                        PutEventsRequestEntry::builder()
                            .event_bus_name(&self.bus_name)
                            .source(crate::SOURCE)
                            .detail_type(&entry.detail_type)
                            .detail(&entry.detail)
                            .build(),
                    )
                });
            let answer = request.send().await.map_err(|error| {
                PublishError::Request(
                    aws_sdk_eventbridge::error::DisplayErrorContext(error).to_string(),
                )
            })?;
            let mut answers: Vec<Option<String>> = answer
                .entries()
                .iter()
                .map(|entry| entry.error_code().map(str::to_owned))
                .collect();
            // An answer shorter than the request says nothing of the rest:
            // count them failed, so they are sent again.
            answers.resize(entries.len(), Some("MissingFromAnswer".into()));
            Ok(answers)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn entry(bytes: usize) -> Entry {
        Entry {
            detail_type: "device.added".into(),
            detail: "x".repeat(bytes),
        }
    }

    #[test]
    fn requests_hold_at_most_ten_entries_and_256_kib() {
        let sizes =
            |requests: Vec<Vec<Entry>>| -> Vec<usize> { requests.iter().map(Vec::len).collect() };
        assert_eq!(
            sizes(requests((0..25).map(|_| entry(100)).collect())),
            [10, 10, 5]
        );
        // 100 KiB each: two fit in 256 KiB, a third does not.
        let big: Vec<Entry> = (0..5).map(|_| entry(100 * 1024)).collect();
        let cut = requests(big);
        assert_eq!(sizes(cut.clone()), [2, 2, 1]);
        for request in cut {
            assert!(request.iter().map(Entry::size).sum::<usize>() <= MAX_REQUEST_BYTES);
        }
        assert!(requests(Vec::new()).is_empty());
    }

    /// Fails the first entry of each request `failures` times in all.
    struct Flaky {
        failures: Mutex<usize>,
        accepted: Mutex<Vec<String>>,
    }

    impl Bus for Flaky {
        fn put_events<'a>(
            &'a self,
            entries: &'a [Entry],
        ) -> BoxFuture<'a, Result<Vec<Option<String>>, PublishError>> {
            Box::pin(async move {
                let mut failures = self.failures.lock().unwrap();
                let mut answers = Vec::new();
                for (i, entry) in entries.iter().enumerate() {
                    if i == 0 && *failures > 0 {
                        *failures -= 1;
                        answers.push(Some("ThrottlingException".into()));
                    } else {
                        self.accepted.lock().unwrap().push(entry.detail.clone());
                        answers.push(None);
                    }
                }
                Ok(answers)
            })
        }
    }

    fn events(n: usize) -> Vec<Event> {
        (0..n)
            .map(|i| Event {
                id: format!("e{i}"),
                kind: "device.added".into(),
                time: chrono::DateTime::from_timestamp(0, 0).unwrap(),
                account_id: "a".into(),
                token_id: "t".into(),
                device: None,
                run: None,
                reason: None,
                token: None,
                assignment: None,
            })
            .collect()
    }

    #[tokio::test]
    async fn entries_reported_failed_are_sent_again_and_only_they() {
        let bus = Arc::new(Flaky {
            failures: Mutex::new(1),
            accepted: Mutex::default(),
        });
        Publisher::new(bus.clone())
            .with_backoff(Duration::ZERO)
            .publish(&events(12))
            .await
            .unwrap();
        let mut accepted = bus.accepted.lock().unwrap().clone();
        accepted.sort();
        accepted.dedup();
        assert_eq!(accepted.len(), 12);
        assert_eq!(
            bus.accepted.lock().unwrap().len(),
            12,
            "no entry sent twice"
        );
    }

    #[tokio::test]
    async fn an_entry_failing_every_attempt_fails_the_publish() {
        let bus = Arc::new(Flaky {
            failures: Mutex::new(ATTEMPTS),
            accepted: Mutex::default(),
        });
        let error = Publisher::new(bus.clone())
            .with_backoff(Duration::ZERO)
            .publish(&events(3))
            .await
            .unwrap_err();
        assert!(
            matches!(error, PublishError::Rejected { failed: 1, .. }),
            "{error}"
        );
        assert_eq!(bus.accepted.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn without_a_bus_publishing_does_nothing() {
        Publisher::disabled().publish(&events(3)).await.unwrap();
    }
}
