//! How the client talks to Apple: where, as whom, how long to wait, how hard to retry.

use std::time::Duration;

use adesync_core::clock::{SharedClock, SystemClock};

/// Apple's production endpoint for the device assignment service.
pub const APPLE_BASE_URL: &str = "https://mdmenrollment.apple.com";

/// Settings of an [`crate::AppleClient`], read once at start-up.
#[derive(Clone, Debug)]
pub struct AppleConfig {
    /// Scheme, host and optional path prefix, e.g. [`APPLE_BASE_URL`] or a simulator's URL.
    pub base_url: String,
    /// Sent on every request; Apple refuses requests without one (`USER_AGENT_MISSING`).
    pub user_agent: String,
    /// `X-Server-Protocol-Version`. Version 10 adds `retry_after_seconds` to assignment
    /// answers; Apple clamps larger values to the newest version it knows.
    pub protocol_version: u32,
    /// Longest wait for one complete answer, body included.
    pub request_timeout: Duration,
    /// Longest wait to open a connection.
    pub connect_timeout: Duration,
    /// Largest body read from Apple; larger answers fail with
    /// [`crate::AppleError::ResponseTooLarge`] rather than exhausting memory.
    pub max_response_bytes: usize,
    /// How throttling and server errors are retried.
    pub retry: RetryPolicy,
    /// The clock every wait above is measured on: the machine's on AWS; a
    /// local run sped up N times waits N times less real time, as Apple
    /// (its simulator) answers N times faster.
    pub clock: SharedClock,
}

impl Default for AppleConfig {
    fn default() -> Self {
        AppleConfig {
            base_url: APPLE_BASE_URL.to_owned(),
            user_agent: concat!("adesync/", env!("CARGO_PKG_VERSION")).to_owned(),
            protocol_version: 10,
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            // A 5,000-device page is a few MiB; this leaves room without trusting Apple blindly.
            max_response_bytes: 32 * 1024 * 1024,
            retry: RetryPolicy::default(),
            clock: std::sync::Arc::new(SystemClock),
        }
    }
}

/// Exponential backoff with jitter, bounded by a deadline per call.
///
/// A call is retried on 429, 500, 502, 503, 504, timeouts and connection failures, waiting
/// at least as long as Apple's `Retry-After`. It gives up as soon as the next wait would end
/// past `deadline` (counted from the call's first attempt), returning the last error with
/// Apple's `Retry-After` so the caller can come back later.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Longest time one call may spend, waits included.
    pub deadline: Duration,
    /// First backoff delay.
    pub base_delay: Duration,
    /// Longest backoff delay (a longer `Retry-After` still wins).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            deadline: Duration::from_secs(120),
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Never retry: every error is returned at once.
    pub fn none() -> Self {
        RetryPolicy {
            deadline: Duration::ZERO,
            ..RetryPolicy::default()
        }
    }
}
