//! Logs that follow Lambda's log format setting.

use tracing_subscriber::EnvFilter;

/// Installs the global `tracing` subscriber: JSON lines when the function is
/// configured with `LogFormat: JSON` (`AWS_LAMBDA_LOG_FORMAT=JSON`), plain
/// text otherwise; level from `RUST_LOG` (default `info`).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT")
        .map(|v| v.eq_ignore_ascii_case("json"))
        .unwrap_or(false);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    // try_init: the local runner hosts several functions in one process.
    let _ = if json {
        builder.json().flatten_event(true).without_time().try_init()
    } else {
        builder.try_init()
    };
}
