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

/// The connection the capabilities share: the client and the table names.
/// Only this crate reaches into it; callers hold a capability.
#[derive(Debug, Clone)]
pub struct Db {
    pub(crate) client: aws_sdk_dynamodb::Client,
    pub(crate) tables: Arc<Tables>,
}

macro_rules! capability {
    ($(#[$doc:meta])* $name:ident, $field:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            db: Db,
        }

        impl std::ops::Deref for $name {
            type Target = Db;

            fn deref(&self) -> &Db {
                &self.db
            }
        }

        impl Db {
            /// This connection as the capability its name says.
            #[allow(dead_code)]
            pub(crate) fn $field(&self) -> $name {
                $name { db: self.clone() }
            }
        }
    };
}

capability!(
    /// The account item: its key pair, certificate and token counter.
    Accounts, accounts
);
capability!(
    /// Token items: create, read, renew, delete; status, secrets, the shared
    /// Apple session and the notices owed once.
    Tokens, tokens
);
capability!(
    /// The claims on a token: starting and finishing runs (cooldowns, the
    /// one-at-a-time lease) and the assigner's slot.
    Claims, claims
);
capability!(
    /// A run's history, the worker's saved walk, the importer's batch
    /// markers, the device counts and the outbox of owed events.
    Runs, runs
);
capability!(
    /// Device items and their indexes (by policy, by serial, due assignments).
    Devices, devices
);
capability!(
    /// Enrollment policies and the counters of their limits.
    Policies, policies
);
capability!(
    /// Licenses and enrollments with their SCEP challenge digest.
    Enrollments, enrollments
);

/// Every capability over the service's tables, for wiring: each consumer
/// takes only the ones it uses. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pub accounts: Accounts,
    pub tokens: Tokens,
    pub claims: Claims,
    pub runs: Runs,
    pub devices: Devices,
    pub policies: Policies,
    pub enrollments: Enrollments,
}

impl Store {
    pub fn new(client: aws_sdk_dynamodb::Client, tables: Tables) -> Self {
        let db = Db {
            client,
            tables: Arc::new(tables),
        };
        Self {
            accounts: db.accounts(),
            tokens: db.tokens(),
            claims: db.claims(),
            runs: db.runs(),
            devices: db.devices(),
            policies: db.policies(),
            enrollments: db.enrollments(),
        }
    }

    pub fn tables(&self) -> &Tables {
        &self.tokens.tables
    }

    pub fn client(&self) -> &aws_sdk_dynamodb::Client {
        &self.tokens.client
    }
}
