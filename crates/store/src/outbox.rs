//! The outbox of domain events: what a change still owes the event bus.
//!
//! An item is written before the change it announces and deleted once the
//! bus accepted its events, so a change is never announced without being
//! recorded first, and an announcement lost to a crash or a bus outage is
//! found again. What an item holds is the caller's (`adesync-service`
//! writes compact device entries or encoded events); this module only
//! keeps it. Items live in the runs table under `outbox#<key>`, next to
//! the token's runs, and expire with the run history.

use adesync_core::ids::TokenId;
use chrono::{DateTime, Utc};

use crate::attrs;
use crate::runs::RUN_HISTORY;
use crate::{Runs, StoreError};

const PREFIX: &str = "outbox#";
const BODY: &str = "body";

/// One pending item: its key and what the caller wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub key: String,
    pub body: String,
}

impl Runs {
    /// Records what `key` owes the bus (replacing an item of that key).
    pub async fn put_outbox(
        &self,
        token: &TokenId,
        key: &str,
        body: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.tables.runs)
            .item("token_id", attrs::s(token.as_str()))
            .item("sk", attrs::s(format!("{PREFIX}{key}")))
            .item(BODY, attrs::s(body))
            .item("created_at", attrs::millis(now))
            .item("expires_at", attrs::ttl_seconds(now + RUN_HISTORY))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("PutItem(outbox)", e))?;
        Ok(())
    }

    /// Every item the token still owes the bus, oldest key first.
    pub async fn outbox(&self, token: &TokenId) -> Result<Vec<Pending>, StoreError> {
        let mut pending = Vec::new();
        self.each_run_item(token, PREFIX, None, "Query(outbox)", |item| {
            let read = || {
                Some(Pending {
                    key: attrs::get_s(item, "sk")?.strip_prefix(PREFIX)?.to_owned(),
                    body: attrs::get_s(item, BODY)?.to_owned(),
                })
            };
            pending.extend(read());
        })
        .await?;
        Ok(pending)
    }

    /// The bus accepted what `key` owed it.
    pub async fn delete_outbox(&self, token: &TokenId, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.tables.runs)
            .key("token_id", attrs::s(token.as_str()))
            .key("sk", attrs::s(format!("{PREFIX}{key}")))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("DeleteItem(outbox)", e))?;
        Ok(())
    }
}
