//! Wiring only: configuration and clients once per process, then the handlers.

use std::sync::Arc;

use adesync_api::{Api, routes};
use adesync_core::clock::SystemClock;
use adesync_runtime::{Config, aws::Clients, logging};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    logging::init();
    let config = Config::from_env()?;
    let clients = Clients::from_env().await;
    let state = Api::new(&config, &clients, Arc::new(SystemClock))?;
    lambda_http::run(adesync_runtime::http::service(routes(state))).await
}
