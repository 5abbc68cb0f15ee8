//! The sync-worker function: SQS `sync-jobs` → one step of a run, or one step of
//! a token's profile assignments with Apple (`adesync_service::assign`).
//!
//! A job that cannot be read (a bad message) fails alone and ends in the
//! dead-letter queue; a step that fails for a passing reason (DynamoDB,
//! SQS, KMS) fails its record so SQS redelivers it; Apple's refusals are
//! not failures here — the step records them on the run and the token.

use std::sync::Arc;
use std::time::Instant;

use adesync_apple::{AppleClient, AppleError};
use adesync_core::clock::SharedClock;
use adesync_queue::Queues;
use adesync_queue::jobs::Job;
use adesync_runtime::Config;
use adesync_runtime::aws::Clients;
use adesync_secrets::Vault;
use adesync_service::faults::Faults;
use adesync_service::worker::Worker;
use adesync_store::Store;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};

/// Builds the worker once per process.
pub fn worker(
    config: &Config,
    clients: &Clients,
    clock: SharedClock,
    faults: Arc<Faults>,
) -> Result<Arc<Worker>, AppleError> {
    Ok(Arc::new(Worker {
        store: Store::new(clients.dynamodb.clone(), config.tables.clone()),
        queues: Queues::new(
            clients.sqs.clone(),
            &config.sync_jobs_queue_url,
            &config.device_batches_queue_url,
        ),
        vault: Vault::new(clients.kms.clone(), &config.kms_key_id),
        apple: AppleClient::new(config.apple())?,
        clock,
        faults,
    }))
}

/// Handles one SQS event (the template sets `BatchSize: 1`; more work too).
pub async fn handle(worker: &Worker, event: SqsEvent, deadline: Instant) -> SqsBatchResponse {
    adesync_runtime::sqs::run_batch(event, 1, |message: SqsMessage| async move {
        let job = Job::decode(message.body.as_deref().unwrap_or_default()).map_err(|e| {
            format!(
                "not a sync or assignment job: {}",
                adesync_runtime::http::json_problem(&e)
            )
        })?;
        match job {
            Job::Sync(job) => worker
                .run_step(&job, deadline)
                .await
                .map(|end| tracing::info!(?end, "sync step done"))
                .map_err(|e| e.to_string()),
            Job::Assign(job) => {
                let adapters = adesync_service::assign::Adapters {
                    store: &worker.store,
                    queues: &worker.queues,
                    vault: &worker.vault,
                    apple: &worker.apple,
                };
                adesync_service::assign::run_job(adapters, &job, worker.clock.now(), deadline)
                    .await
                    .map(|report| tracing::info!(?report, "assignment step done"))
                    .map_err(|e| e.to_string())
            }
        }
    })
    .await
}
