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

use adesync_core::ids::{AccountId, Serial, TokenId};
use chrono::{DateTime, Utc};

use crate::attrs::{self, Item};
use crate::devices::{ASSIGNMENT_DUE_INDEX, SERIAL_INDEX, management_attr as m};
use crate::{Claims, Devices, StoreError};

/// A device whose assignment is due, as the index shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueAssignment {
    pub serial: Serial,
    pub due_at: DateTime<Utc>,
}

impl Devices {
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

/// The token item's assigner slot: which assignment job may talk to Apple
/// for the token, and until when.
pub mod assigner_attr {
    pub const ID: &str = "assigner_id";
    pub const UNTIL: &str = "assigner_until";
}

/// What taking a token's assigner slot found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssignerSlot {
    /// Ours until the `until` asked for.
    Taken,
    /// Another job holds it until `until` (its invocation's deadline).
    Busy { until: DateTime<Utc> },
    /// The token no longer exists.
    TokenGone,
}

impl Claims {
    /// Takes `token`'s assigner slot for `assigner` until `until`: granted
    /// when nobody holds it, its holder's deadline has passed (Lambda killed
    /// it), or it is already `assigner`'s (a retried write that DynamoDB
    /// applied but answered with an error). One conditional write, so two
    /// assignment jobs of a token can never talk to Apple at once: Apple's
    /// `POST /profile` is not idempotent, and each call would define a
    /// profile of its own.
    pub async fn claim_assigner(
        &self,
        account: &AccountId,
        token: &TokenId,
        assigner: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<AssignerSlot, StoreError> {
        use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
        use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;
        let result = self
            .update_token(account, token)
            .condition_expression(format!(
                "attribute_exists(token_id) AND {}",
                attrs::slot_free_or_mine(assigner_attr::ID, assigner_attr::UNTIL)
            ))
            .update_expression(format!(
                "SET {} = :me, {} = :until",
                assigner_attr::ID,
                assigner_attr::UNTIL
            ))
            .expression_attribute_values(":me", attrs::s(assigner))
            .expression_attribute_values(":until", attrs::millis(until))
            .expression_attribute_values(":now", attrs::millis(now))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(AssignerSlot::Taken),
            Err(error) => match error.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    match failed.item().filter(|item| !item.is_empty()) {
                        None => Ok(AssignerSlot::TokenGone),
                        Some(item) => Ok(AssignerSlot::Busy {
                            until: attrs::get_time(item, assigner_attr::UNTIL)?.unwrap_or(now),
                        }),
                    }
                }
                _ => Err(StoreError::dynamo("UpdateItem(claim assigner)", error)),
            },
        }
    }

    /// Gives the slot back (conditional on it still being `assigner`'s), so
    /// the next assignment job of the token need not wait for our deadline.
    pub async fn release_assigner(
        &self,
        account: &AccountId,
        token: &TokenId,
        assigner: &str,
    ) -> Result<(), StoreError> {
        let result = self
            .update_token(account, token)
            .condition_expression(format!("{} = :me", assigner_attr::ID))
            .update_expression(format!(
                "REMOVE {}, {}",
                assigner_attr::ID,
                assigner_attr::UNTIL
            ))
            .expression_attribute_values(":me", attrs::s(assigner))
            .send()
            .await;
        crate::error::update_applied(result, "UpdateItem(release assigner)").map(drop)
    }
}
