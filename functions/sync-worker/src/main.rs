//! Wiring only: configuration and clients once per process, then the handler.

use std::sync::Arc;

use adesync_core::clock::{Deadline, SharedClock, SystemClock};
use adesync_runtime::{Config, aws::Clients, logging};
use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    logging::init();
    let config = Config::from_env()?;
    let clients = Clients::from_env().await;
    let clock: SharedClock = Arc::new(SystemClock);
    let worker = adesync_sync_worker::worker(&config, &clients, clock.clone(), Arc::default())?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let worker = worker.clone();
        let clock = clock.clone();
        async move {
            // Lambda's deadline is wall-clock epoch milliseconds.
            let at = i64::try_from(event.context.deadline)
                .ok()
                .and_then(chrono::DateTime::from_timestamp_millis)
                .unwrap_or_else(chrono::Utc::now);
            let deadline = Deadline::new(clock, at);
            adesync_sync_worker::handle(&worker, event.payload, deadline)
                .await
                .map_err(lambda_runtime::Error::from)
        }
    }))
    .await
}
