//! Wiring only: configuration and clients once per process, then the handler.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use adesync_core::clock::SystemClock;
use adesync_runtime::{Config, aws::Clients, logging};
use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    logging::init();
    let config = Config::from_env()?;
    let clients = Clients::from_env().await;
    let worker =
        adesync_sync_worker::worker(&config, &clients, Arc::new(SystemClock), Arc::default())?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let worker = worker.clone();
        async move {
            // Lambda's deadline is wall-clock epoch milliseconds.
            let left = Duration::from_millis(event.context.deadline).saturating_sub(
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default(),
            );
            let deadline = Instant::now() + left;
            Ok::<_, lambda_runtime::Error>(
                adesync_sync_worker::handle(&worker, event.payload, deadline).await,
            )
        }
    }))
    .await
}
