//! Domain events on the EventBridge bus.
//!
//! - [`event`]: what the service announces (`device.added`, `sync.finished`,
//!   …), each with a stable id, encoded as the entry's JSON `Detail`.
//! - [`publish`]: the [`Publisher`], which sends events in `PutEvents`
//!   requests of at most 10 entries and 256 KiB, retrying the entries
//!   EventBridge reports failed, through the narrow [`Bus`] trait (the AWS
//!   client in production, a fake in unit tests).
//!
//! Publishing is at least once: consumers drop repeats by the event's `id`.

pub mod event;
pub mod publish;

pub use event::{AssignmentDetail, DeviceDetail, Event, RunDetail, TokenDetail};
pub use publish::{Bus, Entry, EventBridgeBus, PublishError, Publisher};

/// Every event's `source`.
pub const SOURCE: &str = "adesync";
