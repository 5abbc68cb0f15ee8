//! adesync's domain: the product's words as types, and its rules as pure functions.
//!
//! # Layout
//! - [`ids`]: identifiers parsed once at the edge (accounts, tokens, runs, serial numbers).
//! - [`clock`]: time as a dependency; every rule takes `now` from a [`clock::Clock`].
//! - [`sync`]: who may start a sync and when (cooldowns, the one-at-a-time lease).
//! - [`run`]: a run's lifecycle ([`run::RunStatus`]), the honest estimate of its progress,
//!   the messages of its steps ([`run::messages`]) and the pure decisions of importing a
//!   batch ([`run::import`]) and closing the run ([`run::close`]).
//! - [`fanout`]: a scheduled pass over every token, cut into paced pages.
//! - [`pace`]: page sizes and waits that fit Apple's pace.
//! - [`cursor`]: the fetch → sync state machine over Apple's device cursors.
//! - [`device`]: what the importer stores for each device record (versions, releases, admin deletes).
//! - [`token`]: token names, expiry and health, the per-account token limit, certificate re-issue.
//! - [`policy`]: enrollment policy settings, validated as Apple validates profiles; limits.
//! - [`assignment`]: a device's profile assignment in Apple, retries, the default policy.
//! - [`enrollment`]: re-enroll actions and enrollment state; the SCEP challenge's lifetime.
//! - [`license`]: who may enroll, license-wise.
//! - [`scope`]: scope tags: which of an account's tokens a caller sees.
//!
//! Nothing here performs I/O: adapters (DynamoDB, SQS, Apple) enforce these rules
//! with conditional writes and call back into them to explain refusals.

pub mod assignment;
pub mod change;
pub mod clock;
pub mod cursor;
pub mod device;
pub mod enrollment;
pub mod fanout;
pub mod ids;
pub mod license;
pub mod pace;
pub mod policy;
pub mod run;
pub mod scope;
pub mod sync;
pub mod token;
