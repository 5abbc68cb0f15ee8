//! The product's operations, composed from the pure rules of
//! `adesync-core` and the adapters (DynamoDB, SQS, Apple).
//!
//! # Layout
//! - [`start`]: starting a sync run (manual, scheduled, or a new token's
//!   first full sync): claim, record, queue.
//!
//! Handlers in `functions/*` parse their event, call one operation here and
//! map its result; the operations never see an HTTP request or an SQS event.

pub mod start;
