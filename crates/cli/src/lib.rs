//! `adesync-cli`: the `adesync` command line, and the pieces of it other
//! programs reuse (`adesync-local demo`, the tests).
//!
//! # Layout
//! - [`client`]: a typed client of the HTTP API (docs/openapi.yaml), one
//!   method per route; error answers become [`client::ApiFailure`] with the
//!   contract's code, message and retry time.
//! - [`model`]: the API's answers as types that keep unknown fields.
//! - [`watch`]: follows a sync run with an indicatif progress bar
//!   (fetched/imported, rate, time left) and sums it up in one line.
//! - [`dev_token`]: development JWTs the local runner accepts.
//! - [`output`]: tables and JSON.
//! - [`app`]: the commands, what they print and their exit statuses
//!   ([`app::exit`]: 0 done, 1 failed, 2 usage, 3 refused by a rule).

pub mod app;
pub mod client;
pub mod dev_token;
pub mod model;
pub mod output;
pub mod watch;

pub use client::{ApiFailure, Client, ClientError};
