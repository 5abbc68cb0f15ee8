//! The sync-worker function: SQS `sync-jobs` → one step of a run, one step of
//! a token's profile assignments with Apple (`adesync_service::assign`), or
//! one page of a scheduled pass over the tokens (`adesync_service::schedule`).
//!
//! A job that cannot be read (a bad message) fails alone and ends in the
//! dead-letter queue; a step that fails for a passing reason (DynamoDB,
//! SQS, KMS) fails its record so SQS redelivers it; Apple's refusals are
//! not failures here — the step records them on the run and the token.

use std::sync::Arc;

use adesync_apple::AppleError;
use adesync_core::clock::{Deadline, SharedClock};
use adesync_queue::jobs::Job;
use adesync_runtime::Config;
use adesync_runtime::aws::Clients;
use adesync_runtime::sqs::MissingMessageId;
use adesync_service::faults::Faults;
use adesync_service::worker::{Worker, redelivery_after};
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};

/// Builds the worker once per process.
pub fn worker(
    config: &Config,
    clients: &Clients,
    clock: SharedClock,
    faults: Arc<Faults>,
) -> Result<Arc<Worker>, AppleError> {
    Ok(Arc::new(Worker {
        adapters: clients.adapters(config, clock.clone(), faults.clone())?,
        clock,
        faults,
    }))
}

/// Handles one SQS event (the template sets `BatchSize: 1`; more work too).
pub async fn handle(
    worker: &Worker,
    event: SqsEvent,
    deadline: Deadline,
) -> Result<SqsBatchResponse, MissingMessageId> {
    let deadline = &deadline;
    adesync_runtime::sqs::run_batch(event, 1, |message: SqsMessage| async move {
        let job = Job::decode(message.body.as_deref().unwrap_or_default()).map_err(|e| {
            format!(
                "not a sync, assignment or sweep job: {}",
                adesync_runtime::http::json_problem(&e)
            )
        })?;
        match job {
            Job::Sync(job) => match worker.run_step(&job, deadline).await {
                Ok(end) => {
                    tracing::info!(?end, "sync step done");
                    Ok(())
                }
                Err(error) => {
                    retry_soon(worker, &message, error.retry_at()).await;
                    Err(error.to_string())
                }
            },
            Job::Assign(job) => {
                match adesync_service::assign::run_job(
                    &worker.adapters,
                    &job,
                    worker.clock.now(),
                    deadline,
                )
                .await
                {
                    Ok(report) => {
                        tracing::info!(?report, "assignment step done");
                        Ok(())
                    }
                    Err(error) => {
                        // Another job of the token holds it: come back when
                        // that one's deadline has passed, not in 9 minutes.
                        if let Some(at) = error.retry_at() {
                            retry_soon(worker, &message, Some(at)).await;
                        }
                        Err(error.to_string())
                    }
                }
            }
            Job::Sweep(job) => adesync_service::schedule::sweep_page(
                &worker.adapters.store,
                &worker.adapters.queues,
                &worker.adapters.events,
                worker.clock.as_ref(),
                &job,
            )
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
        }
    })
    .await
}

/// Brings a failed step's job back after [`redelivery_after`] its receives
/// (or once `not_before` has passed) rather than after the queue's
/// visibility timeout. If that cannot be arranged, the visibility timeout
/// still brings it back.
async fn retry_soon(
    worker: &Worker,
    message: &SqsMessage,
    not_before: Option<chrono::DateTime<chrono::Utc>>,
) {
    let Some(receipt) = message.receipt_handle.as_deref() else {
        return;
    };
    let backoff = redelivery_after(adesync_runtime::sqs::receive_count(message));
    let wait = not_before.map_or(chrono::Duration::zero(), |at| at - worker.clock.now());
    let real = worker
        .clock
        .real(backoff.max(wait + chrono::Duration::seconds(1)));
    if let Err(error) = worker
        .adapters
        .queues
        .redeliver_sync_job_after(receipt, real)
        .await
    {
        tracing::warn!(%error, "the failed step waits for the queue's visibility timeout");
    }
}
