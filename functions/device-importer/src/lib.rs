//! The device-importer function: SQS `device-batches` (FIFO) → devices.
//!
//! Records of one token are applied strictly in order; a record that fails
//! holds back the rest of its token's records in the event, which SQS
//! redelivers after it. A message that cannot be read fails every time and
//! ends in the dead-letter queue, where the run's end-of-run marker notices
//! the missing batch.

use std::sync::Arc;

use adesync_core::clock::SharedClock;
use adesync_queue::batches;
use adesync_runtime::Config;
use adesync_runtime::aws::Clients;
use adesync_runtime::sqs::MissingMessageId;
use adesync_service::faults::Faults;
use adesync_service::import::Importer;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};

/// Builds the importer once per process.
pub fn importer(
    config: &Config,
    clients: &Clients,
    clock: SharedClock,
    faults: Arc<Faults>,
) -> Arc<Importer> {
    Arc::new(Importer {
        store: clients.store(config),
        clock,
        events: clients.announcer(config, faults.clone()),
        faults,
        close_part_devices: config.close_part_devices,
        queues: clients.queues(config),
    })
}

/// Handles one SQS event.
pub async fn handle(
    importer: &Importer,
    event: SqsEvent,
) -> Result<SqsBatchResponse, MissingMessageId> {
    adesync_runtime::sqs::run_fifo_batch(event, |message: SqsMessage| async move {
        let body = message.body.as_deref().unwrap_or_default();
        let batch = match batches::decode(body) {
            Ok(batch) => batch,
            Err(error) => return set_aside(importer, &message, &error).await,
        };
        let applied = importer.apply(&batch).await.map_err(|e| e.to_string())?;
        tracing::debug!(?applied, "batch applied");
        Ok::<(), String>(())
    })
    .await
}

/// A message that is not a device batch fails on every receive: it goes to
/// the dead-letter queue now, where the run's close finds its batch
/// missing, instead of holding its token's later batches back for
/// `maxReceiveCount` visibility timeouts. Without a dead-letter queue
/// configured it fails, and SQS moves it after the last receive.
async fn set_aside(
    importer: &Importer,
    message: &SqsMessage,
    error: &serde_json::Error,
) -> Result<(), String> {
    let problem = adesync_runtime::http::json_problem(error);
    let group = message
        .attributes
        .get("MessageGroupId")
        .map_or("unreadable", String::as_str);
    let id = message.message_id.as_deref().unwrap_or_default();
    let body = message.body.as_deref().unwrap_or_default();
    match importer.queues.set_aside_batch(body, group, id).await {
        Ok(true) => {
            tracing::error!(message_id = %id, %problem, "not a device batch; set aside in the dead-letter queue");
            Ok(())
        }
        Ok(false) => Err(format!(
            "not a device batch ({problem}); it goes to the dead-letter queue after the last retry"
        )),
        Err(queue) => Err(format!(
            "not a device batch ({problem}), and it could not be set aside ({queue}); it is retried"
        )),
    }
}
