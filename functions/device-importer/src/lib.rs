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
use adesync_service::faults::Faults;
use adesync_service::import::Importer;
use adesync_store::Store;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};

/// Builds the importer once per process.
pub fn importer(
    config: &Config,
    clients: &Clients,
    clock: SharedClock,
    faults: Arc<Faults>,
) -> Arc<Importer> {
    Arc::new(Importer {
        store: Store::new(clients.dynamodb.clone(), config.tables.clone()),
        clock,
        faults,
        close_part_devices: config.close_part_devices,
        queues: adesync_queue::Queues::new(
            clients.sqs.clone(),
            &config.sync_jobs_queue_url,
            &config.device_batches_queue_url,
        ),
    })
}

/// Handles one SQS event.
pub async fn handle(importer: &Importer, event: SqsEvent) -> SqsBatchResponse {
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
