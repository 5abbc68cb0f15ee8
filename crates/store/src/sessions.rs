//! The token's one Apple session, shared by every function that talks to
//! Apple for it (sync worker, assignment jobs, token checks).
//!
//! Apple may end a server's older sessions when it issues a new one. If two
//! functions each found the shared session stale and each asked `/session`,
//! the second answer would kill the first, and the first function would see
//! a 401 on a session it had just received. So renewing is a claim: one
//! conditional write on the token item lets one caller ask Apple while the
//! others wait for the session it shares. The claim names the session it
//! replaces by a fingerprint (a digest, never the session itself), so a
//! caller whose stale session was already replaced takes the newer one
//! instead of asking again.

use adesync_core::ids::{AccountId, TokenId};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;
use chrono::{DateTime, Utc};

use crate::accounts::{blob, get_blob};
use crate::attrs;
use crate::tokens::attr::SESSION_SEALED;
use crate::{StoreError, Tokens};

/// Token item attributes of the shared session (the sealed session itself
/// is [`crate::tokens::attr::SESSION_SEALED`]).
pub mod session_attr {
    /// Digest of the stored session: which session a renewal replaces.
    pub const FINGERPRINT: &str = "session_fingerprint";
    /// Who is asking Apple for a new session, and until when.
    pub const RENEWER: &str = "session_renewer";
    pub const RENEWING_UNTIL: &str = "session_renewing_until";
}

use session_attr as a;

/// What asking to renew the token's session found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionRenewal {
    /// Ours to ask Apple for, until the `until` asked for.
    Granted,
    /// Another caller already replaced the stale session: use this one.
    Replaced { sealed: Vec<u8> },
    /// Another caller is asking Apple now, until `until` at the latest.
    Busy { until: DateTime<Utc> },
    /// The token no longer exists.
    TokenGone,
}

impl Tokens {
    /// Claims the renewal of `token`'s session for `renewer` until `until`.
    ///
    /// `stale` is the fingerprint of the session Apple refused (None when the
    /// caller had none). Granted when the stored session is still that one (or
    /// has no fingerprint: stored before fingerprints, or cleared by a renewal of
    /// the credentials) and nobody else holds an unexpired claim. One
    /// conditional write: two callers cannot both be granted.
    pub async fn claim_session_renewal(
        &self,
        account: &AccountId,
        token: &TokenId,
        stale: Option<&str>,
        renewer: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<SessionRenewal, StoreError> {
        let still_stale = match stale {
            Some(_) => format!(
                "(attribute_not_exists({fp}) OR {fp} = :stale)",
                fp = a::FINGERPRINT
            ),
            None => format!("attribute_not_exists({})", a::FINGERPRINT),
        };
        let mut update = self
            .update_token(account, token)
            .condition_expression(format!(
                "attribute_exists(token_id) AND {still_stale} AND {}",
                attrs::slot_free_or_mine(a::RENEWER, a::RENEWING_UNTIL)
            ))
            .update_expression(format!(
                "SET {} = :me, {} = :until",
                a::RENEWER,
                a::RENEWING_UNTIL
            ))
            .expression_attribute_values(":me", attrs::s(renewer))
            .expression_attribute_values(":until", attrs::millis(until))
            .expression_attribute_values(":now", attrs::millis(now))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if let Some(stale) = stale {
            update = update.expression_attribute_values(":stale", attrs::s(stale));
        }
        let error = match update.send().await {
            Ok(_) => return Ok(SessionRenewal::Granted),
            Err(error) => error,
        };
        let Some(UpdateItemError::ConditionalCheckFailedException(failed)) =
            error.as_service_error()
        else {
            return Err(StoreError::dynamo(
                "UpdateItem(claim session renewal)",
                error,
            ));
        };
        let Some(item) = failed.item().filter(|item| !item.is_empty()) else {
            return Ok(SessionRenewal::TokenGone);
        };
        let stored = attrs::get_s(item, a::FINGERPRINT);
        match get_blob(item, SESSION_SEALED)? {
            Some(sealed) if stored.is_some() && stored != stale => {
                Ok(SessionRenewal::Replaced { sealed })
            }
            _ => Ok(SessionRenewal::Busy {
                until: attrs::get_time(item, a::RENEWING_UNTIL)?.unwrap_or(now),
            }),
        }
    }

    /// Stores `sealed` (whose fingerprint is `fingerprint`) as the token's
    /// session and ends `renewer`'s claim. Skipped (false) when another
    /// caller holds an unexpired claim: the session it is fetching replaces
    /// ours anyway. False too when the token no longer exists.
    pub async fn share_session(
        &self,
        account: &AccountId,
        token: &TokenId,
        sealed: &[u8],
        fingerprint: &str,
        renewer: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let result = self
            .update_token(account, token)
            .condition_expression(format!(
                "attribute_exists(token_id) AND {}",
                attrs::slot_free_or_mine(a::RENEWER, a::RENEWING_UNTIL)
            ))
            .update_expression(format!(
                "SET #session = :session, {} = :fp REMOVE {}, {}",
                a::FINGERPRINT,
                a::RENEWER,
                a::RENEWING_UNTIL
            ))
            .expression_attribute_names("#session", SESSION_SEALED)
            .expression_attribute_values(":session", blob(sealed))
            .expression_attribute_values(":fp", attrs::s(fingerprint))
            .expression_attribute_values(":me", attrs::s(renewer))
            .expression_attribute_values(":now", attrs::millis(now))
            .send()
            .await;
        crate::error::update_applied(result, "UpdateItem(share session)")
    }
}
