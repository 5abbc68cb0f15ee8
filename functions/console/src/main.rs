//! Wiring only: the sign-in settings from the environment, then the files.

use adesync_console::{ConsoleConfig, routes};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    lambda_http::run(routes(ConsoleConfig::from_env())).await
}
