//! Notices a token is owed once each (`token.expiring` at 30, 7 and 1 days).

use adesync_core::ids::{AccountId, TokenId};
use chrono::{DateTime, Utc};

use crate::attrs;
use crate::{StoreError, Tokens};

/// Token attributes: the expiry the last notice was for, and its days.
pub mod notice_attr {
    pub const EXPIRY_NOTICE_AT: &str = "expiry_notice_at";
    pub const EXPIRY_NOTICE_DAYS: &str = "expiry_notice_days";
}
use notice_attr as n;

impl Tokens {
    /// Claims the `days` notice of the token's expiry at `expires_at`:
    /// true once — for the first caller, when no notice as near (or nearer)
    /// was claimed for that expiry. A renewed token (another expiry) starts
    /// over. One conditional write, so concurrent passes claim it once.
    pub async fn claim_expiry_notice(
        &self,
        account: &AccountId,
        token: &TokenId,
        expires_at: DateTime<Utc>,
        days: u32,
    ) -> Result<bool, StoreError> {
        let result = self
            .update_token(account, token)
            .condition_expression(format!(
                "attribute_exists(token_id) AND (attribute_not_exists({at}) OR {at} <> :at OR {days} > :days)",
                at = n::EXPIRY_NOTICE_AT,
                days = n::EXPIRY_NOTICE_DAYS
            ))
            .update_expression(format!(
                "SET {} = :at, {} = :days",
                n::EXPIRY_NOTICE_AT,
                n::EXPIRY_NOTICE_DAYS
            ))
            .expression_attribute_values(":at", attrs::millis(expires_at))
            .expression_attribute_values(":days", attrs::n(days))
            .send()
            .await;
        crate::error::update_applied(result, "UpdateItem(expiry notice)")
    }
}

impl Tokens {
    /// Sets the token's stored status to `status` only if it is another:
    /// true when it changed, so a change is announced once however many
    /// steps record the same status. (The status's message and time are
    /// written by `set_token_status`, as before.)
    pub async fn claim_status_change(
        &self,
        account: &AccountId,
        token: &TokenId,
        status: &str,
    ) -> Result<bool, StoreError> {
        let result = self
            .update_token(account, token)
            .condition_expression(
                "attribute_exists(token_id) AND (attribute_not_exists(#status) OR #status <> :status)",
            )
            .update_expression("SET #status = :status")
            .expression_attribute_names("#status", crate::tokens::attr::STATUS)
            .expression_attribute_values(":status", attrs::s(status))
            .send()
            .await;
        crate::error::update_applied(result, "UpdateItem(token status change)")
    }
}
