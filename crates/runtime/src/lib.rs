//! Plumbing shared by every Lambda function (and by the local runner, which
//! hosts the same handlers on one machine).
//!
//! # Layout
//! - [`config`]: the service's settings, read once from the environment.
//! - [`aws`]: AWS SDK clients built once per process from the standard
//!   `AWS_*` variables (so `AWS_ENDPOINT_URL*` points them at emulators).
//! - [`logging`]: `tracing` set up to follow `AWS_LAMBDA_LOG_FORMAT`.
//! - [`caller`]: the verified caller identity (account, roles) taken from
//!   API Gateway's JWT authorizer context.
//! - [`http`]: the error body of the HTTP contract and the status of each
//!   error, chosen in one place.
//! - [`sqs`]: the partial-batch runner for SQS consumers.
//! - [`routes`]: a router that lists its routes (the OpenAPI document is
//!   checked against that list).

pub mod aws;
pub mod caller;
pub mod config;
pub mod http;
pub mod logging;
pub mod routes;
pub mod sqs;

pub use caller::{Caller, Role};
pub use config::Config;
pub use http::ApiError;
