//! Tokens: what an administrator may name them, how long they live, and
//! how their health is shown.
//!
//! The rules (docs/product.md "Token lifecycle", "Limits"):
//! - a token expires when Apple's `access_token_expiry` passes (about a
//!   year after the file was downloaded); it is shown as `expired` from
//!   that instant, whatever the last sync recorded;
//! - a token is flagged `expiring_soon` while 30 days or less remain;
//! - an account holds at most 2,000 tokens;
//! - the account's certificate (uploaded to Apple Business) is re-issued
//!   for the same key pair before it could lapse during a token's life.
//!
//! Everything here is pure; the adapters store and enforce it.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, PolicyId, TokenId};
use crate::sync::Lease;

/// Most tokens one account may hold.
pub const MAX_TOKENS_PER_ACCOUNT: u64 = 2_000;

/// Another token may not be added: the account holds the most it may. One
/// wording for every layer that reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "this account already holds {MAX_TOKENS_PER_ACCOUNT} tokens, the most it may hold; delete a token you no longer use before adding another"
)]
pub struct TokenLimitReached;

/// Tokens with this long or less to live are flagged `expiring_soon`.
pub const EXPIRY_WARNING: Duration = Duration::days(30);

/// Longest token name, in characters.
pub const MAX_NAME_CHARS: usize = 128;

/// Longest Apple ID (an e-mail address: RFC 5321 caps a path at 254).
pub const MAX_APPLE_ID_CHARS: usize = 254;

/// How long a newly issued account certificate is valid, in days.
///
/// Apple Business only needs the certificate to encrypt the token file when
/// an administrator downloads it, and re-encrypts renewals to the
/// certificate it already holds. Two years covers a token's first year and
/// its renewal with room to spare.
pub const CERTIFICATE_VALIDITY_DAYS: u32 = 730;

/// A certificate with less validity left than this is re-issued (same key
/// pair, new serial) when an administrator next downloads it, so every
/// certificate handed out outlives a whole token year plus its 30-day
/// renewal window. Files encrypted to an earlier certificate still open.
pub const CERTIFICATE_MIN_REMAINING: Duration = Duration::days(365 + 30);

/// A token's health as the sync worker last recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenStatus {
    /// Apple accepted the token's last call.
    Ok,
    /// Apple refuses every call until an administrator accepts its new terms.
    TermsNotSigned,
    /// Apple no longer accepts the credentials: the token was re-downloaded
    /// in Apple Business (which invalidates the one in use), revoked, or its
    /// Apple Account removed.
    TokenInvalid,
}

impl TokenStatus {
    /// The stored and shown spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenStatus::Ok => "ok",
            TokenStatus::TermsNotSigned => "terms_not_signed",
            TokenStatus::TokenInvalid => "token_invalid",
        }
    }

    /// Reads a stored spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ok" => Some(TokenStatus::Ok),
            "terms_not_signed" => Some(TokenStatus::TermsNotSigned),
            "token_invalid" => Some(TokenStatus::TokenInvalid),
            _ => None,
        }
    }

    /// What the administrator should do, when the caller has nothing more precise.
    pub fn default_message(self) -> Option<&'static str> {
        match self {
            TokenStatus::Ok => None,
            TokenStatus::TermsNotSigned => Some(
                "Apple refuses this token until an administrator accepts Apple's latest terms and conditions in Apple Business Manager or Apple School Manager; syncs resume after that.",
            ),
            TokenStatus::TokenInvalid => Some(
                "Apple no longer accepts this token: it was downloaded again in Apple Business (which invalidates the one in use), revoked, or its Apple Account removed. Renew it by uploading the newly downloaded token file (PUT /v1/tokens/{token_id}/renewal).",
            ),
        }
    }
}

/// A token's health as shown to administrators: the recorded status, or
/// `expired` once the expiry has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShownStatus {
    Ok,
    TermsNotSigned,
    TokenInvalid,
    Expired,
}

impl ShownStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ShownStatus::Ok => "ok",
            ShownStatus::TermsNotSigned => "terms_not_signed",
            ShownStatus::TokenInvalid => "token_invalid",
            ShownStatus::Expired => "expired",
        }
    }
}

impl From<TokenStatus> for ShownStatus {
    fn from(status: TokenStatus) -> Self {
        match status {
            TokenStatus::Ok => ShownStatus::Ok,
            TokenStatus::TermsNotSigned => ShownStatus::TermsNotSigned,
            TokenStatus::TokenInvalid => ShownStatus::TokenInvalid,
        }
    }
}

/// How long a token has left, judged at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    /// Whole days left, rounded up (a token with 10 hours left has 1 day
    /// left); 0 once expired. Rounding up keeps `expiring_soon` and the
    /// number shown consistent: flagged exactly when `days_left <= 30`.
    pub days_left: u64,
    /// 30 days or less remain and the token has not expired yet.
    pub expiring_soon: bool,
    /// The expiry has passed (a token expiring exactly now is expired, as
    /// the token file reader judges it).
    pub expired: bool,
}

/// Judges `expires_at` at `now`.
pub fn expiry(expires_at: DateTime<Utc>, now: DateTime<Utc>) -> Expiry {
    let left = expires_at - now;
    let expired = left <= Duration::zero();
    let day_millis = Duration::days(1).num_milliseconds();
    let days_left = if expired {
        0
    } else {
        u64::try_from(left.num_milliseconds())
            .map_or(u64::MAX, |ms| ms.div_ceil(day_millis.unsigned_abs()))
    };
    Expiry {
        days_left,
        expiring_soon: !expired && left <= EXPIRY_WARNING,
        expired,
    }
}

/// The status to show: an expired token is `expired` whatever was last
/// recorded, since no call with it can succeed.
pub fn shown_status(
    recorded: TokenStatus,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> ShownStatus {
    if expiry(expires_at, now).expired {
        ShownStatus::Expired
    } else {
        recorded.into()
    }
}

/// The message shown with an expired token.
pub fn expired_message(expires_at: DateTime<Utc>) -> String {
    format!(
        "This token expired on {}; download a new token file for its MDM server in Apple Business and renew the token with it.",
        expires_at.format("%Y-%m-%d %H:%M UTC")
    )
}

/// Whether an account certificate valid until `not_after` should be
/// re-issued before it is handed out at `now`.
pub fn certificate_needs_renewal(not_after: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    not_after - now < CERTIFICATE_MIN_REMAINING
}

/// A condition that keeps a token from being deleted (docs/product.md "Delete").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteBlocker {
    /// Devices are assigned to the token.
    DevicesAssigned,
    /// Devices are assigned to the token's default enrollment policy.
    DefaultPolicyDevices,
    /// The token has enrollment policies (the default one included).
    PoliciesExist,
}

impl DeleteBlocker {
    /// The stable name of the HTTP contract (`conditions[].condition`).
    pub fn as_str(self) -> &'static str {
        match self {
            DeleteBlocker::DevicesAssigned => "devices_assigned",
            DeleteBlocker::DefaultPolicyDevices => "default_policy_devices",
            DeleteBlocker::PoliciesExist => "policies_exist",
        }
    }
}

/// Every condition that keeps a token with these counts from being
/// deleted, with its count; empty when it may be deleted.
pub fn delete_blockers(
    device_count: u64,
    default_policy_devices: u64,
    policy_count: u64,
) -> Vec<(DeleteBlocker, u64)> {
    [
        (DeleteBlocker::DevicesAssigned, device_count),
        (DeleteBlocker::DefaultPolicyDevices, default_policy_devices),
        (DeleteBlocker::PoliciesExist, policy_count),
    ]
    .into_iter()
    .filter(|(_, count)| *count > 0)
    .collect()
}

/// Why a name or an Apple ID was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    #[error("the name must not be empty")]
    EmptyName,
    #[error("the name must be at most {MAX_NAME_CHARS} characters")]
    NameTooLong,
    #[error("the name must not contain control characters (line breaks, tabs, …)")]
    NameControlChars,
    #[error(
        "apple_id must be the e-mail address of the Apple Account that manages the MDM server in Apple Business"
    )]
    NotAnAppleId,
}

/// A token's display name: trimmed, 1 to 128 characters, no control characters.
pub fn token_name(text: &str) -> Result<String, InvalidInput> {
    let name = text.trim();
    if name.is_empty() {
        return Err(InvalidInput::EmptyName);
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(InvalidInput::NameTooLong);
    }
    if name.chars().any(char::is_control) {
        return Err(InvalidInput::NameControlChars);
    }
    Ok(name.to_owned())
}

/// An Apple ID: an e-mail-like `local@domain.tld` without spaces or
/// control characters, trimmed. Not a full RFC 5322 check: Apple Business
/// already validated the account; this only catches a wrong field.
pub fn apple_id(text: &str) -> Result<String, InvalidInput> {
    let id = text.trim();
    let plausible = id.chars().count() <= MAX_APPLE_ID_CHARS
        && !id
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '<' | '>' | '"' | ','))
        && match id.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain
                        .split('.')
                        .all(|label| !label.is_empty() && !label.starts_with('-'))
                    && domain.contains('.')
            }
            None => false,
        };
    if plausible {
        Ok(id.to_owned())
    } else {
        Err(InvalidInput::NotAnAppleId)
    }
}

/// Whether two Apple IDs name the same account (e-mail addresses are
/// compared without regard to case, as Apple does).
pub fn same_apple_id(a: &str, b: &str) -> bool {
    a.trim().to_lowercase() == b.trim().to_lowercase()
}

/// A token as shown to administrators: no secret is read into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub account: AccountId,
    pub token: TokenId,
    pub name: String,
    pub apple_id: String,
    pub server_name: String,
    pub server_uuid: String,
    pub org_name: Option<String>,
    pub admin_id: Option<String>,
    pub token_expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub renewed_at: Option<DateTime<Utc>>,
    pub status: TokenStatus,
    pub status_message: Option<String>,
    pub status_at: Option<DateTime<Utc>>,
    pub device_count: u64,
    pub policy_count: u64,
    pub default_policy_id: Option<PolicyId>,
    pub last_full_sync_at: Option<DateTime<Utc>>,
    pub last_delta_sync_at: Option<DateTime<Utc>>,
    pub last_manual_sync_at: Option<DateTime<Utc>>,
    /// The run holding the token, if its lease has not been released.
    /// Whether it is still live depends on the caller's clock.
    pub lease: Option<Lease>,
    /// When the current run's import is expected to end, if one is running.
    pub import_until: Option<DateTime<Utc>>,
    /// Sorted; empty for an untagged token.
    pub scope_tags: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn expiring_soon_starts_at_exactly_30_days() {
        let now = t0();
        let at_30 = expiry(now + Duration::days(30), now);
        assert!(at_30.expiring_soon);
        assert_eq!(at_30.days_left, 30);
        assert!(!at_30.expired);

        let just_over = expiry(now + Duration::days(30) + Duration::seconds(1), now);
        assert!(!just_over.expiring_soon);
        assert_eq!(just_over.days_left, 31);

        let just_under = expiry(now + Duration::days(30) - Duration::seconds(1), now);
        assert!(just_under.expiring_soon);
        assert_eq!(just_under.days_left, 30);
    }

    #[test]
    fn days_left_rounds_up_and_stops_at_zero() {
        let now = t0();
        assert_eq!(expiry(now + Duration::days(365), now).days_left, 365);
        assert_eq!(expiry(now + Duration::hours(10), now).days_left, 1);
        assert_eq!(expiry(now + Duration::milliseconds(1), now).days_left, 1);
        assert_eq!(expiry(now + Duration::hours(24), now).days_left, 1);
        assert_eq!(expiry(now + Duration::hours(25), now).days_left, 2);
        assert_eq!(expiry(now, now).days_left, 0);
        assert_eq!(expiry(now - Duration::days(3), now).days_left, 0);
    }

    #[test]
    fn a_token_is_expired_from_its_expiry_instant() {
        let now = t0();
        let before = expiry(now + Duration::milliseconds(1), now);
        assert!(!before.expired && before.expiring_soon);
        let at = expiry(now, now);
        assert!(at.expired);
        assert!(
            !at.expiring_soon,
            "an expired token is expired, not expiring"
        );
        assert!(expiry(now - Duration::days(400), now).expired);
    }

    #[test]
    fn expiry_wins_over_the_recorded_status() {
        let now = t0();
        let later = now + Duration::days(10);
        for recorded in [
            TokenStatus::Ok,
            TokenStatus::TermsNotSigned,
            TokenStatus::TokenInvalid,
        ] {
            assert_eq!(shown_status(recorded, later, now), recorded.into());
            assert_eq!(shown_status(recorded, now, now), ShownStatus::Expired);
        }
        assert!(expired_message(now).contains("renew"));
    }

    #[test]
    fn statuses_round_trip_their_spelling() {
        for status in [
            TokenStatus::Ok,
            TokenStatus::TermsNotSigned,
            TokenStatus::TokenInvalid,
        ] {
            assert_eq!(TokenStatus::parse(status.as_str()), Some(status));
            assert_eq!(ShownStatus::from(status).as_str(), status.as_str());
        }
        assert_eq!(TokenStatus::parse("expired"), None);
        assert!(
            TokenStatus::TokenInvalid
                .default_message()
                .is_some_and(|m| m.contains("Renew"))
        );
        assert!(TokenStatus::Ok.default_message().is_none());
    }

    #[test]
    fn certificates_are_reissued_before_they_could_lapse_in_a_token_year() {
        let now = t0();
        let fresh = now + Duration::days(i64::from(CERTIFICATE_VALIDITY_DAYS));
        assert!(!certificate_needs_renewal(fresh, now));
        assert!(!certificate_needs_renewal(
            now + CERTIFICATE_MIN_REMAINING,
            now
        ));
        assert!(certificate_needs_renewal(
            now + CERTIFICATE_MIN_REMAINING - Duration::seconds(1),
            now
        ));
        assert!(certificate_needs_renewal(now - Duration::days(1), now));
        // A fresh certificate is not re-issued on every download.
        assert!(Duration::days(i64::from(CERTIFICATE_VALIDITY_DAYS)) > CERTIFICATE_MIN_REMAINING);
    }

    #[test]
    fn every_failing_delete_condition_is_listed_with_its_count() {
        assert!(delete_blockers(0, 0, 0).is_empty());
        assert_eq!(
            delete_blockers(12, 0, 0),
            [(DeleteBlocker::DevicesAssigned, 12)]
        );
        assert_eq!(
            delete_blockers(12, 5, 2),
            [
                (DeleteBlocker::DevicesAssigned, 12),
                (DeleteBlocker::DefaultPolicyDevices, 5),
                (DeleteBlocker::PoliciesExist, 2),
            ]
        );
        assert_eq!(
            delete_blockers(0, 0, 1),
            [(DeleteBlocker::PoliciesExist, 1)]
        );
        assert_eq!(
            DeleteBlocker::DefaultPolicyDevices.as_str(),
            "default_policy_devices"
        );
    }

    #[test]
    fn names_are_trimmed_bounded_and_free_of_control_characters() {
        assert_eq!(token_name("  Paris office ").unwrap(), "Paris office");
        assert_eq!(
            token_name("Bureau de Zürich 🍫").unwrap(),
            "Bureau de Zürich 🍫"
        );
        assert_eq!(token_name(&"é".repeat(128)).unwrap().chars().count(), 128);
        assert_eq!(token_name(&"é".repeat(129)), Err(InvalidInput::NameTooLong));
        assert_eq!(token_name("   "), Err(InvalidInput::EmptyName));
        for bad in ["a\nb", "a\u{0}b", "tab\there", "bell\u{7}", "\u{1b}[31mred"] {
            assert_eq!(
                token_name(bad),
                Err(InvalidInput::NameControlChars),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn apple_ids_look_like_email_addresses() {
        assert_eq!(
            apple_id(" Admin@Example.com ").unwrap(),
            "Admin@Example.com"
        );
        assert!(apple_id("it.team+abm@corp.example.co.uk").is_ok());
        for bad in [
            "",
            "admin",
            "admin@",
            "@example.com",
            "admin@example",
            "a@b@example.com",
            "admin@example..com",
            "ad min@example.com",
            "admin@exam\nple.com",
            "admin\u{0}@example.com",
            "<admin@example.com>",
        ] {
            assert_eq!(apple_id(bad), Err(InvalidInput::NotAnAppleId), "{bad:?}");
        }
        assert!(apple_id(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn apple_ids_compare_without_case() {
        assert!(same_apple_id("Admin@Example.com", "admin@example.COM"));
        assert!(same_apple_id(" admin@example.com", "admin@example.com "));
        assert!(!same_apple_id("admin@example.com", "other@example.com"));
    }
}
