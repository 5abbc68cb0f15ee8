//! Wiring only: configuration and clients once per process, then the handler.

use std::sync::Arc;

use adesync_core::clock::SystemClock;
use adesync_runtime::{Config, aws::Clients, logging};
use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    logging::init();
    let config = Config::from_env()?;
    let clients = Clients::from_env().await;
    let scheduler = adesync_sync_scheduler::scheduler(&config, &clients, Arc::new(SystemClock));
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let scheduler = scheduler.clone();
        async move {
            adesync_sync_scheduler::handle(&scheduler, event.payload)
                .await
                .map_err(lambda_runtime::Error::from)
        }
    }))
    .await
}
