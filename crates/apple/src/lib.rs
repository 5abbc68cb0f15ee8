//! Client for Apple's device assignment service (Automated Device Enrollment, "DEP").
//!
//! One [`AppleClient`] per process holds the connection pool and settings; each server
//! token gets an [`AppleSession`] that signs `GET /session` with the token's OAuth 1.0a
//! credentials, sends the session token on every call, follows Apple's session rotation,
//! re-authenticates once when the session goes stale, and retries throttling and server
//! errors with backoff. Which cursor to send next is not decided here: that is
//! `adesync_core::cursor`, fed with these calls' outcomes.
//!
//! # Layout
//! - [`config`]: [`AppleConfig`] and [`RetryPolicy`] (timeouts, size cap, backoff deadline).
//! - [`credentials`]: [`Credentials`], the four OAuth values of a server token.
//! - [`client`]: [`AppleClient`] and [`AppleSession`], one method per endpoint.
//! - [`route`]: [`Route`], Apple's endpoints with their methods.
//! - [`model`]: Apple's JSON shapes (accounts, device pages, devices, profiles, statuses).
//! - [`error`]: [`AppleError`], how an HTTP answer is read as one, and `Retry-After`.
//! - [`shared`]: [`SessionKeeper`], how the processes of a token share its one session.
//! - [`walk`]: fetch/sync results as `adesync_core::cursor` outcomes, and the page a walk names.
//!
//! Nothing secret (OAuth values, session tokens, the `Authorization` header) is ever
//! logged, formatted by `Debug`, or put in an error message.

pub mod client;
pub mod config;
pub mod credentials;
pub mod error;
pub mod model;
pub mod route;
pub mod shared;
pub mod walk;

pub use client::{
    AppleClient, AppleSession, CallLimits, FALLBACK_PAGE_LIMIT, MAX_DEVICES_PER_REQUEST,
};
pub use config::{APPLE_BASE_URL, AppleConfig, RetryPolicy};
pub use credentials::Credentials;
pub use error::{AppleError, REFUSED_WITHOUT_A_REASON, parse_retry_after};
pub use model::{
    Account, AccountUrl, AssignedProfile, DefinedProfile, Device, DeviceDetails, DevicePage,
    DeviceStatus, DeviceStatuses, OpType, PageLimit, Profile, ProfileStatus,
};
pub use route::Route;
pub use shared::{KeeperFuture, Renewal, SessionKeeper};
