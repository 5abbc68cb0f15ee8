//! Device batches: the `device-batches` FIFO queue between the sync worker
//! and the device importer.
//!
//! Messages of one token share a message group, so the importer sees them
//! in the order the worker sent them: the device batches of a run, then
//! its end-of-run marker. Each message fits SQS's 256 KiB limit with room
//! for attributes; a `SendMessageBatch` call carries as many messages as
//! fit in that same limit (at most 10), and every entry SQS refuses is
//! retried, never silently dropped.

use adesync_core::device::DeviceRecord;
use adesync_core::run::messages::{BatchMessage, DeviceBatch};
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use backon::Retryable;

use crate::{QueueError, Queues};

/// Largest message body we build (SQS allows 256 KiB per message and per
/// batch call, attributes included).
pub const MAX_MESSAGE_BYTES: usize = 240 * 1024;
/// Entries per `SendMessageBatch` (SQS's limit).
pub const MAX_BATCH_ENTRIES: usize = 10;

/// Reads a message of the device-batches queue.
pub fn decode(body: &str) -> Result<BatchMessage, serde_json::Error> {
    serde_json::from_str(body)
}

/// FIFO deduplication id: a re-send of the same batch within five
/// minutes (a worker that crashed before saving its cursor) is dropped.
fn deduplication_id(message: &BatchMessage) -> String {
    match message {
        BatchMessage::Devices(b) => format!("{}-{}", b.run_id, b.seq),
        BatchMessage::EndOfRun(e) => match &e.closing {
            None => format!("{}-end", e.run_id),
            Some(closing) => format!("{}-end-{}", e.run_id, closing.part),
        },
    }
}

/// Splits `records` into device batches like `header` (its `records` are
/// ignored), numbered from `header.seq`, whose bodies fit
/// [`MAX_MESSAGE_BYTES`].
pub fn split(
    header: DeviceBatch,
    records: Vec<DeviceRecord>,
) -> Result<Vec<DeviceBatch>, QueueError> {
    let empty = DeviceBatch {
        records: Vec::new(),
        ..header
    };
    // Envelope size plus a margin for the sequence number growing.
    let envelope = serde_json::to_vec(&BatchMessage::Devices(empty.clone()))?.len() + 32;
    let mut batches = Vec::new();
    let mut current = empty.clone();
    let mut size = envelope;
    for record in records {
        let record_size = serde_json::to_vec(&record)?.len() + 1;
        if !current.records.is_empty() && size + record_size > MAX_MESSAGE_BYTES {
            let next_seq = current.seq + 1;
            batches.push(std::mem::replace(
                &mut current,
                DeviceBatch {
                    seq: next_seq,
                    ..empty.clone()
                },
            ));
            size = envelope;
        }
        size += record_size;
        current.records.push(record);
    }
    if !current.records.is_empty() {
        batches.push(current);
    }
    Ok(batches)
}

impl Queues {
    /// Moves a device-batches message that can never be applied (it is not
    /// a batch at all) to the dead-letter queue at once, in its message
    /// group, rather than letting it be received `maxReceiveCount` times:
    /// each failed receive of a FIFO message holds back every later batch
    /// of its token for the visibility timeout. Returns false when no
    /// dead-letter queue is configured (the caller then fails the record).
    pub async fn set_aside_batch(
        &self,
        body: &str,
        group: &str,
        message_id: &str,
    ) -> Result<bool, QueueError> {
        let Some(url) = &self.device_batches_dlq_url else {
            return Ok(false);
        };
        self.client
            .send_message()
            .queue_url(url)
            .message_body(body)
            .message_group_id(group)
            .message_deduplication_id(message_id)
            .send()
            .await
            .map_err(|e| QueueError::sqs("SendMessage(device-batches dead-letter queue)", e))?;
        Ok(true)
    }

    /// Sends `messages` to the device-batches queue in order, in as few
    /// `SendMessageBatch` calls as fit, retrying every entry SQS refuses.
    /// Returns once SQS accepted all of them.
    pub async fn send_batch_messages(&self, messages: &[BatchMessage]) -> Result<(), QueueError> {
        let mut call: Vec<SendMessageBatchRequestEntry> = Vec::new();
        let mut call_bytes = 0;
        for (index, message) in messages.iter().enumerate() {
            let body = serde_json::to_string(message)?;
            let (token, run) = message.ids();
            let entry = SendMessageBatchRequestEntry::builder()
                .id(index.to_string())
                .message_body(body.clone())
                .message_group_id(token.as_str())
                .message_deduplication_id(deduplication_id(message))
                .message_attributes("token_id", string_attribute(token.as_str())?)
                .message_attributes("run_id", string_attribute(run.as_str())?)
                .build()
                .map_err(|e| QueueError::Encode(serde::ser::Error::custom(e.to_string())))?;
            let bytes = body.len() + 256;
            if !call.is_empty()
                && (call.len() == MAX_BATCH_ENTRIES
                    || call_bytes + bytes > MAX_MESSAGE_BYTES + 16 * 1024)
            {
                self.send_entries(std::mem::take(&mut call)).await?;
                call_bytes = 0;
            }
            call_bytes += bytes;
            call.push(entry);
        }
        if !call.is_empty() {
            self.send_entries(call).await?;
        }
        Ok(())
    }

    /// One `SendMessageBatch`, re-sending only the entries SQS refused.
    async fn send_entries(
        &self,
        entries: Vec<SendMessageBatchRequestEntry>,
    ) -> Result<(), QueueError> {
        let total = entries.len();
        let pending = std::sync::Mutex::new(entries);
        let round = || async {
            let entries = pending.lock().map_err(|_| QueueError::Poisoned)?.clone();
            let output = self
                .client
                .send_message_batch()
                .queue_url(&self.device_batches_url)
                .set_entries(Some(entries.clone()))
                .send()
                .await
                .map_err(|e| QueueError::sqs("SendMessageBatch(device batches)", e))?;
            let failed = output.failed();
            if failed.is_empty() {
                return Ok(());
            }
            // Refusals SQS itself calls permanent (sender fault) will not get
            // better by retrying: report them.
            if let Some(permanent) = failed.iter().find(|f| f.sender_fault()) {
                return Err(QueueError::Rejected {
                    failed: failed.len(),
                    total,
                    first_code: permanent.code().to_owned(),
                });
            }
            let retry: Vec<_> = entries
                .into_iter()
                .filter(|e| failed.iter().any(|f| f.id() == e.id()))
                .collect();
            let first_code = failed[0].code().to_owned();
            let count = retry.len();
            *pending.lock().map_err(|_| QueueError::Poisoned)? = retry;
            Err(QueueError::Rejected {
                failed: count,
                total,
                first_code,
            })
        };
        round
            .retry(
                backon::ExponentialBuilder::default()
                    .with_jitter()
                    .with_max_times(6),
            )
            .when(|e| matches!(e, QueueError::Rejected { .. }) || e.is_transient())
            .await
    }
}

fn string_attribute(value: &str) -> Result<MessageAttributeValue, QueueError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| QueueError::Encode(serde::ser::Error::custom(e.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use adesync_core::device::{AppleAttributes, Observation, Version};
    use adesync_core::ids::{AccountId, RunId, Serial, TokenId};
    use adesync_core::run::messages::{Closing, EndOfRun, RunOutcome};
    use adesync_core::sync::SyncKind;

    fn record(i: usize) -> DeviceRecord {
        DeviceRecord {
            serial: Serial::parse(&format!("SER{i:09}")).unwrap(),
            observation: Observation::Snapshot,
            version: Version::for_snapshot(chrono::Utc::now(), i as u64),
            attributes: AppleAttributes {
                model: Some("MacBook Pro".into()),
                description: Some("MBP 13.3 SPACE GRAY/2.0GHZ/8GB/256GB-USA".into()),
                color: Some("SPACE GRAY".into()),
                os: Some("OSX".into()),
                device_family: Some("Mac".into()),
                profile_status: Some("empty".into()),
                device_assigned_by: Some("apple-dep@acme.co".into()),
                device_assigned_date: Some("2017-10-16T01:55:30Z".into()),
                ..AppleAttributes::default()
            },
            released_by_replacement: false,
        }
    }

    #[test]
    fn batches_fit_sqs_and_keep_every_record_in_order() {
        let records: Vec<_> = (0..5_000).map(record).collect();
        let header = DeviceBatch {
            account_id: AccountId::parse("a").unwrap(),
            token_id: TokenId::parse("t").unwrap(),
            run_id: RunId::parse("r").unwrap(),
            seq: 7,
            snapshot: true,
            records: Vec::new(),
        };
        let batches = split(header, records.clone()).unwrap();
        assert!(batches.len() > 1);
        for (i, batch) in batches.iter().enumerate() {
            assert_eq!(batch.seq, 7 + i as u64);
            let body = serde_json::to_string(&BatchMessage::Devices(batch.clone())).unwrap();
            assert!(body.len() <= MAX_MESSAGE_BYTES, "{} bytes", body.len());
        }
        // A batch queued by an older worker, which flagged a new token's
        // batches with `new_token`, still decodes.
        let mut older = serde_json::to_value(BatchMessage::Devices(batches[0].clone())).unwrap();
        older["new_token"] = serde_json::Value::Bool(true);
        assert_eq!(
            decode(&older.to_string()).unwrap(),
            BatchMessage::Devices(batches[0].clone())
        );
        let again: Vec<_> = batches.into_iter().flat_map(|b| b.records).collect();
        assert_eq!(again, records);
    }

    #[test]
    fn messages_round_trip() {
        let end = BatchMessage::EndOfRun(EndOfRun {
            account_id: AccountId::parse("a").unwrap(),
            token_id: TokenId::parse("t").unwrap(),
            run_id: RunId::parse("r").unwrap(),
            kind: SyncKind::Full,
            batches: 3,
            fetched: 1200,
            outcome: RunOutcome::Finished {
                sweep_at: Some(Version::for_snapshot(chrono::Utc::now(), 0)),
                warning: None,
            },
            closing: None,
        });
        let text = serde_json::to_string(&end).unwrap();
        assert_eq!(decode(&text).unwrap(), end);
        assert!(decode("{\"type\":\"devices\"}").is_err());

        // A later part of the close round-trips, and SQS does not drop it as
        // a duplicate of the first marker or of another part.
        let BatchMessage::EndOfRun(first) = &end else {
            unreachable!()
        };
        let part = |part| {
            BatchMessage::EndOfRun(EndOfRun {
                closing: Some(Closing {
                    part,
                    missing: 0,
                    after: Some(Serial::parse("C02T0HL0GGC0").unwrap()),
                    listed: 20_000,
                    released: 3,
                }),
                ..first.clone()
            })
        };
        let text = serde_json::to_string(&part(1)).unwrap();
        assert_eq!(decode(&text).unwrap(), part(1));
        let ids: std::collections::HashSet<String> = [end.clone(), part(1), part(2)]
            .iter()
            .map(deduplication_id)
            .collect();
        assert_eq!(ids.len(), 3);
    }
}
