//! Finding devices by what the MDM side needs: assignments waiting for Apple, and the
//! tokens that hold a serial number.
//!
//! Both are global secondary indexes of the devices table:
//! - `by-assignment-due` is sparse: only devices whose profile assignment waits for
//!   Apple (pending, or failed/throttled until their retry time) carry its keys,
//!   `assign_due_token` and `assign_due_at`, so the retry pass reads exactly the work
//!   that is due and nothing else;
//! - `by-serial` keys every device by its serial number (keys only), so an enrolling
//!   device is found among the account's tokens without reading them all.
//!
//! Index reads are eventually consistent: callers re-read the devices they act on.

use adesync_core::ids::{Serial, TokenId};
use chrono::{DateTime, Utc};

use crate::attrs::{self, Item};
use crate::devices::{ASSIGNMENT_DUE_INDEX, SERIAL_INDEX, management_attr as m};
use crate::{Store, StoreError};

/// A device whose assignment is due, as the index shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueAssignment {
    pub serial: Serial,
    pub due_at: DateTime<Utc>,
}

impl Store {
    /// A page of a token's devices whose assignment is due at `now`, oldest first,
    /// after `after` (the last of the previous page).
    pub async fn due_assignments(
        &self,
        token: &TokenId,
        now: DateTime<Utc>,
        after: Option<&DueAssignment>,
        limit: u32,
    ) -> Result<(Vec<DueAssignment>, Option<DueAssignment>), StoreError> {
        let mut query = self
            .client
            .query()
            .table_name(&self.tables.devices)
            .index_name(ASSIGNMENT_DUE_INDEX)
            .key_condition_expression("#token = :token AND #due <= :now")
            .expression_attribute_names("#token", m::ASSIGN_DUE_TOKEN)
            .expression_attribute_names("#due", m::ASSIGN_DUE_AT)
            .expression_attribute_values(":token", attrs::s(token.as_str()))
            .expression_attribute_values(":now", attrs::millis(now))
            .limit(i32::try_from(limit.max(1)).unwrap_or(i32::MAX));
        if let Some(after) = after {
            query = query
                .exclusive_start_key(m::ASSIGN_DUE_TOKEN, attrs::s(token.as_str()))
                .exclusive_start_key(m::ASSIGN_DUE_AT, attrs::millis(after.due_at))
                .exclusive_start_key("token_id", attrs::s(token.as_str()))
                .exclusive_start_key("serial", attrs::s(after.serial.as_str()));
        }
        let output = query
            .send()
            .await
            .map_err(|e| StoreError::dynamo("Query(due assignments)", e))?;
        let due: Vec<DueAssignment> = output.items().iter().filter_map(due_from).collect();
        let next = match output.last_evaluated_key() {
            Some(key) if !key.is_empty() => due_from(key),
            _ => None,
        };
        Ok((due, next))
    }

    /// Whether any assignment of the token is due at `now` (one index read).
    pub async fn has_due_assignments(
        &self,
        token: &TokenId,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.tables.devices)
            .index_name(ASSIGNMENT_DUE_INDEX)
            .key_condition_expression("#token = :token AND #due <= :now")
            .expression_attribute_names("#token", m::ASSIGN_DUE_TOKEN)
            .expression_attribute_names("#due", m::ASSIGN_DUE_AT)
            .expression_attribute_values(":token", attrs::s(token.as_str()))
            .expression_attribute_values(":now", attrs::millis(now))
            .limit(1)
            .select(aws_sdk_dynamodb::types::Select::Count)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("Query(any due assignment)", e))?;
        Ok(output.count() > 0)
    }

    /// The tokens (of any account) that hold a device with this serial number.
    pub async fn tokens_with_serial(&self, serial: &Serial) -> Result<Vec<TokenId>, StoreError> {
        let mut tokens = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.tables.devices)
                .index_name(SERIAL_INDEX)
                .key_condition_expression("serial = :serial")
                .expression_attribute_values(":serial", attrs::s(serial.as_str()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| StoreError::dynamo("Query(devices by serial)", e))?;
            tokens.extend(
                output
                    .items()
                    .iter()
                    .filter_map(|item| TokenId::parse(attrs::get_s(item, "token_id")?).ok()),
            );
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(tokens),
            }
        }
    }
}

fn due_from(item: &Item) -> Option<DueAssignment> {
    Some(DueAssignment {
        serial: Serial::parse(attrs::get_s(item, "serial")?).ok()?,
        due_at: attrs::get_time(item, m::ASSIGN_DUE_AT).ok()??,
    })
}
