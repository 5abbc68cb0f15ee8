//! Wiring only: configuration and clients once per process, then the handler.

use std::sync::Arc;

use adesync_core::clock::SystemClock;
use adesync_runtime::{Config, aws::Clients, logging};
use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    logging::init();
    let config = Config::from_env()?;
    let clients = Clients::from_env().await;
    let importer =
        adesync_device_importer::importer(&config, &clients, Arc::new(SystemClock), Arc::default());
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let importer = importer.clone();
        async move {
            adesync_device_importer::handle(&importer, event.payload)
                .await
                .map_err(lambda_runtime::Error::from)
        }
    }))
    .await
}
