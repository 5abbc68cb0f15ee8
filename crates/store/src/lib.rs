//! The DynamoDB adapter.
//!
//! # Layout
//! - [`Tables`]: the table names, read from the environment by the caller.
//! - [`claims`]: starting and finishing sync runs: the cooldowns and the
//!   one-at-a-time lease as single conditional writes on the token item.
//! - [`devices`]: device items, written conditionally on their revision.
//! - [`progress`]: the worker's saved walk and the importer's batch markers.
//! - [`runs`]: run history and progress counters.
//! - [`outbox`]: domain events a change still owes the event bus.
//! - [`notices`]: notices owed once each (a token's expiry at 30, 7 and 1 days).
//! - [`accounts`]: account items: the key pair, the token counter, server links.
//! - [`tokens`]: token items: create, read, renew, delete; status and secrets.
//! - [`sessions`]: the token's one Apple session, renewed by one caller at a time.
//! - [`policies`]: enrollment policies and the counters of their limits (1,000 per
//!   token, 200,000 devices per policy), changed in the same transaction as what they count.
//! - [`assignments`]: the indexes of assignments due for Apple and of serial numbers.
//! - [`enrollments`]: licenses, and enrollments with their 15-minute SCEP challenge.
//! - [`attrs`]: reading and writing typed values in DynamoDB items.
//!
//! Every rule that must hold across concurrent callers is a condition
//! expression here, never a read followed by a write. When a condition
//! fails, the item DynamoDB returns (`ReturnValuesOnConditionCheckFailure`)
//! is handed to the pure rule in `adesync-core` to explain the refusal.

pub mod accounts;
pub mod assignments;
pub mod attrs;
pub mod claims;
pub mod devices;
pub mod enrollments;
mod error;
pub mod notices;
pub mod outbox;
pub mod policies;
pub mod progress;
pub mod runs;
pub mod sessions;
pub mod tokens;
mod transact;

pub use error::StoreError;

use std::sync::Arc;

/// Names of the service's tables (from the environment on AWS, from the
/// template's definitions locally).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    pub accounts: String,
    pub tokens: String,
    pub devices: String,
    pub policies: String,
    pub runs: String,
}

/// Handle to the service's tables; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    client: aws_sdk_dynamodb::Client,
    tables: Arc<Tables>,
}

impl Store {
    pub fn new(client: aws_sdk_dynamodb::Client, tables: Tables) -> Self {
        Self {
            client,
            tables: Arc::new(tables),
        }
    }

    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    pub fn client(&self) -> &aws_sdk_dynamodb::Client {
        &self.client
    }
}
