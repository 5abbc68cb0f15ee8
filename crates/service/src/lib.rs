//! The product's operations, composed from the pure rules of
//! `adesync-core` and the adapters (DynamoDB, SQS, Apple).
//!
//! # Layout
//! - [`accounts`]: the account's key pair and the certificate for Apple Business.
//! - [`devices`]: a token's devices: pages with filters (reads bounded per
//!   page), one device, an administrator's delete.
//! - [`tokens`]: create, show, renew and delete tokens; credentials for the worker.
//! - [`session`]: the token's one Apple session, shared by every function and
//!   renewed by one caller at a time.
//! - [`start`]: starting a sync run (manual, scheduled, or a new token's
//!   first full sync): claim, record, queue.
//! - [`schedule`]: the scheduler's sweeps over every token.
//! - [`status`]: a token's sync status and run history; a stuck run is
//!   recorded abandoned when it is noticed.
//! - [`worker`]: one step of a run: page Apple, fan devices out, save the cursor.
//! - [`faults`]: crash points fault tests arm (never armed in Lambda).
//! - [`import`]: apply device batches idempotently; close runs, sweep, recount.
//! - [`policies`]: enrollment policies, the default policy, assigning devices to a policy.
//! - [`assign`]: profile assignment with Apple: the importer's default-policy hook, the
//!   assignment job and its retry sweep.
//! - [`announce`]: domain events on the bus, through an outbox (never lost, never for a
//!   change that did not land).
//! - [`enroll`]: re-enroll actions, device users, licenses, enrollments and SCEP challenges.
//!
//! Handlers in `functions/*` parse their event, call one operation here and
//! map its result; the operations never see an HTTP request or an SQS event.

pub mod accounts;
pub mod announce;
pub mod assign;
pub mod devices;
pub mod enroll;
pub mod faults;
pub mod import;
pub mod policies;
pub mod schedule;
pub mod session;
pub mod start;
pub mod status;
pub mod tokens;
pub mod worker;

/// The adapters the operations that talk to Apple use, built once per
/// process by the function that hosts them; cheap to clone.
#[derive(Clone)]
pub struct Adapters {
    pub store: adesync_store::Store,
    pub queues: adesync_queue::Queues,
    pub vault: adesync_secrets::Vault,
    pub apple: adesync_apple::AppleClient,
    /// Domain events of the changes the operations make.
    pub events: announce::Announcer,
}

/// An invocation's own id for a slot it holds on a token (the run's walker,
/// the token's assigner, the renewer of its Apple session): random, so a write conditional on it can only be
/// this invocation's.
pub(crate) fn holder_id() -> String {
    hex::encode(rand::random::<[u8; 12]>())
}
