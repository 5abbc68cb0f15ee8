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
) -> SqsBatchResponse
where
    F: Fn(SqsMessage) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let failures: Vec<BatchItemFailure> = futures::stream::iter(event.records)
        .map(|message| {
            let id = message.message_id.clone().unwrap_or_default();
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
    response
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
    async fn only_failed_and_panicking_records_are_reported() {
        let response = run_batch(event(&["ok", "bad", "ok", "panic"]), 2, |m| async move {
            match m.body.as_deref() {
                Some("bad") => Err("bad record"),
                Some("panic") => panic!("boom"),
                _ => Ok(()),
            }
        })
        .await;
        let mut failed: Vec<_> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect();
        failed.sort();
        assert_eq!(failed, vec!["m1", "m3"]);
    }
}
