//! The Apple client against the Apple simulator over real HTTP: every endpoint, every
//! error row of `docs/apple.md` §5 that reaches a client, and whole fetch → sync walks
//! driven by `adesync_core::cursor`.
//!
//! Each test starts its own simulator on a free port, so faults never leak between tests.
//! The log-capture test lives in its own binary (`logs.rs`): tracing caches per-callsite
//! interest process-wide, so events first hit by a parallel test on another thread can be
//! missed by a thread-local subscriber.

mod conformance;
mod cursor;
mod endpoints;
mod retry;
mod session;
#[path = "../support/mod.rs"]
mod support;
