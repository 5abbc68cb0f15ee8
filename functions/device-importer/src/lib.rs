//! The device-importer function: SQS `device-batches` (FIFO) → devices.
//!
//! Records of one token are applied strictly in order; a record that fails
//! holds back the rest of its token's records in the event, which SQS
//! redelivers after it. A message that cannot be read fails every time and
//! ends in the dead-letter queue, where the run's end-of-run marker notices
//! the missing batch.

use std::sync::Arc;

use adesync_core::clock::SharedClock;
use adesync_queue::batches::BatchMessage;
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
        let batch = BatchMessage::decode(message.body.as_deref().unwrap_or_default()).map_err(|e| {
            format!(
                "not a device batch ({}); it goes to the dead-letter queue after the last retry",
                adesync_runtime::http::json_problem(&e)
            )
        })?;
        let applied = importer.apply(&batch).await.map_err(|e| e.to_string())?;
        tracing::debug!(?applied, "batch applied");
        Ok::<(), String>(())
    })
    .await
}
