//! Licenses and enrollments: per-account items of the accounts table.
//!
//! - `license#user#<user_id>` / `license#device#<serial>`: present while the user or
//!   the device holds a license.
//! - `enrollment#<enrollment_id>`: one ADE enrollment — the device, its policy, its user
//!   and the SHA-256 of its current SCEP challenge (`scep_challenge_sha256`), never the
//!   challenge itself: whoever reads the table (a backup, a console, a leaked role) gets
//!   nothing that enrolls a device. `challenge_expires_at` (epoch milliseconds) is when
//!   the challenge ends, 15 minutes after the enrollment; `expires_at`, the DynamoDB TTL
//!   attribute, is the same instant rounded up to the second. TTL deletion lags by up to
//!   days, so every use checks `challenge_expires_at > now` in its condition and an
//!   expired item is never served.
//!
//! An enrollment is created in ONE transaction with the device's new enrollment state,
//! conditional on the device's revision: two devices racing to enroll the same serial,
//! or an enrollment racing a wipe, cannot both win. A download of the profile replaces
//! the challenge's digest and counts itself in one conditional `UpdateItem`, so two
//! downloads at the same moment are two downloads in DynamoDB's order: the later one's
//! challenge holds, as if they came one after the other.

use std::collections::HashMap;

use adesync_core::enrollment::{EnrollmentRecord, Licensee, ScepChallengeDigest};
use adesync_core::ids::{AccountId, EnrollmentId, PolicyId, Serial, TokenId, UserId};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use chrono::{DateTime, Utc};

use crate::attrs::{self, Item};
use adesync_core::device::DeviceWrite;

use crate::devices::device_item;
use crate::error::build_error;
use crate::{Enrollments, StoreError};

/// Enrollment and licence item attribute names (accounts table).
pub mod attr {
    pub const ENROLLMENT_ID: &str = "enrollment_id";
    pub const TOKEN_ID: &str = "token_id";
    pub const SERIAL: &str = "serial";
    pub const POLICY_ID: &str = "policy_id";
    /// SHA-256 of the current SCEP challenge (B, 32 bytes).
    pub const SCEP_CHALLENGE_SHA256: &str = "scep_challenge_sha256";
    /// The challenge in plaintext, as items written before digests held it: the next
    /// download removes it (and TTL deletes the rest, expired, within days).
    pub const LEGACY_SCEP_CHALLENGE: &str = "scep_challenge";
    pub const CREATED_AT: &str = "created_at";
    pub const CHALLENGE_EXPIRES_AT: &str = "challenge_expires_at";
    pub const EXPIRES_AT: &str = "expires_at";
    pub const DOWNLOADS: &str = "downloads";
    pub const USER_ID: &str = "user_id";
    pub const LICENSED_AT: &str = "licensed_at";
    pub const LAST_DOWNLOAD_AT: &str = "last_download_at";
}
use attr as e;

/// The sort key of a license item.
fn licensee_sk(licensee: &Licensee) -> String {
    match licensee {
        Licensee::User(user) => format!("license#user#{user}"),
        Licensee::Device(serial) => format!("license#device#{serial}"),
    }
}

/// What using an enrollment found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrollmentUse {
    /// Within its 15 minutes: the enrollment, with the download counted and the new
    /// challenge's digest stored.
    Valid(EnrollmentRecord),
    /// The item is there but its challenge expired.
    Expired(Box<EnrollmentRecord>),
    /// No such item (never made, another account's, or already deleted by TTL).
    Missing,
}

fn enrollment_sk(id: &EnrollmentId) -> String {
    format!("enrollment#{id}")
}

fn digest_attr(digest: &ScepChallengeDigest) -> AttributeValue {
    AttributeValue::B(Blob::new(digest.as_bytes().to_vec()))
}

fn enrollment_item(record: &EnrollmentRecord, digest: &ScepChallengeDigest) -> Item {
    let mut item: Item = HashMap::from([
        ("account_id".to_owned(), attrs::s(record.account.as_str())),
        ("sk".to_owned(), attrs::s(enrollment_sk(&record.id))),
        (e::ENROLLMENT_ID.to_owned(), attrs::s(record.id.as_str())),
        (e::TOKEN_ID.to_owned(), attrs::s(record.token.as_str())),
        (e::SERIAL.to_owned(), attrs::s(record.serial.as_str())),
        (e::POLICY_ID.to_owned(), attrs::s(record.policy.as_str())),
        (e::SCEP_CHALLENGE_SHA256.to_owned(), digest_attr(digest)),
        (e::CREATED_AT.to_owned(), attrs::millis(record.created_at)),
        (
            e::CHALLENGE_EXPIRES_AT.to_owned(),
            attrs::millis(record.expires_at),
        ),
        // The TTL reads whole seconds: round up, never delete early.
        (
            e::EXPIRES_AT.to_owned(),
            attrs::n(ttl_ceiling(record.expires_at)),
        ),
        (e::DOWNLOADS.to_owned(), attrs::n(record.downloads)),
    ]);
    if let Some(user) = &record.user {
        item.insert(e::USER_ID.into(), attrs::s(user.as_str()));
    }
    item
}

fn ttl_ceiling(at: DateTime<Utc>) -> i64 {
    let seconds = at.timestamp();
    if at.timestamp_subsec_millis() > 0 {
        seconds + 1
    } else {
        seconds
    }
}

fn enrollment_from(item: &Item) -> Result<EnrollmentRecord, StoreError> {
    let text = |name: &str| {
        attrs::get_s(item, name)
            .ok_or_else(|| StoreError::Malformed(format!("an enrollment without {name}")))
    };
    let malformed = |e: adesync_core::ids::InvalidId| StoreError::Malformed(e.to_string());
    let expires = attrs::get_time(item, e::CHALLENGE_EXPIRES_AT)?.ok_or_else(|| {
        StoreError::Malformed("an enrollment without challenge_expires_at".into())
    })?;
    Ok(EnrollmentRecord {
        id: EnrollmentId::parse(text(e::ENROLLMENT_ID)?).map_err(malformed)?,
        account: AccountId::parse(text("account_id")?).map_err(malformed)?,
        token: TokenId::parse(text(e::TOKEN_ID)?).map_err(malformed)?,
        serial: Serial::parse(text(e::SERIAL)?).map_err(malformed)?,
        policy: PolicyId::parse(text(e::POLICY_ID)?).map_err(malformed)?,
        user: attrs::get_s(item, e::USER_ID)
            .map(UserId::parse)
            .transpose()
            .map_err(malformed)?,
        created_at: attrs::get_time(item, e::CREATED_AT)?
            .ok_or_else(|| StoreError::Malformed("an enrollment without created_at".into()))?,
        expires_at: expires,
        downloads: attrs::get_u64(item, e::DOWNLOADS)?.unwrap_or(0),
    })
}

impl Enrollments {
    /// Grants (`true`) or withdraws (`false`) a license.
    pub async fn set_license(
        &self,
        account: &AccountId,
        licensee: &Licensee,
        licensed: bool,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if licensed {
            self.client
                .put_item()
                .table_name(&self.tables.accounts)
                .item("account_id", attrs::s(account.as_str()))
                .item("sk", attrs::s(licensee_sk(licensee)))
                .item(e::LICENSED_AT, attrs::millis(now))
                .send()
                .await
                .map_err(|e| StoreError::dynamo("PutItem(license)", e))?;
        } else {
            self.client
                .delete_item()
                .table_name(&self.tables.accounts)
                .key("account_id", attrs::s(account.as_str()))
                .key("sk", attrs::s(licensee_sk(licensee)))
                .send()
                .await
                .map_err(|e| StoreError::dynamo("DeleteItem(license)", e))?;
        }
        Ok(())
    }

    /// Whether the user or device holds a license in the account.
    pub async fn is_licensed(
        &self,
        account: &AccountId,
        licensee: &Licensee,
    ) -> Result<bool, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.tables.accounts)
            .key("account_id", attrs::s(account.as_str()))
            .key("sk", attrs::s(licensee_sk(licensee)))
            .projection_expression("sk")
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem(license)", e))?;
        Ok(output.item().is_some())
    }

    /// Stores an enrollment with the digest of its first challenge, together with the
    /// device's new state, in one transaction conditional on the device's revision.
    /// Returns false when the device changed since it was read (read it and decide
    /// again).
    pub async fn create_enrollment(
        &self,
        record: &EnrollmentRecord,
        challenge: &ScepChallengeDigest,
        device: &DeviceWrite,
    ) -> Result<bool, StoreError> {
        let revision = device.expected.map_or(1, |r| r + 1);
        let mut put_device = Put::builder()
            .table_name(&self.tables.devices)
            .set_item(Some(device_item(&record.token, &device.device, revision)));
        put_device = match device.expected {
            None => put_device.condition_expression("attribute_not_exists(serial)"),
            Some(expected) => put_device
                .condition_expression("revision = :expected")
                .expression_attribute_values(":expected", attrs::n(expected)),
        };
        let put_enrollment = Put::builder()
            .table_name(&self.tables.accounts)
            .set_item(Some(enrollment_item(record, challenge)))
            .condition_expression("attribute_not_exists(sk)")
            .build()
            .map_err(build_error)?;
        let items = vec![
            TransactWriteItem::builder()
                .put(put_device.build().map_err(build_error)?)
                .build(),
            TransactWriteItem::builder().put(put_enrollment).build(),
        ];
        match self
            .transact_conditionally("TransactWriteItems(create enrollment)", items)
            .await?
        {
            None => Ok(true),
            Some(0) => Ok(false),
            Some(_) => Err(StoreError::Malformed(format!(
                "enrollment id {} was already taken",
                record.id
            ))),
        }
    }

    /// The enrollment as stored (None: none, or DynamoDB's TTL deleted it).
    pub async fn enrollment(
        &self,
        account: &AccountId,
        id: &EnrollmentId,
    ) -> Result<Option<EnrollmentRecord>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.tables.accounts)
            .key("account_id", attrs::s(account.as_str()))
            .key("sk", attrs::s(enrollment_sk(id)))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem(enrollment)", e))?;
        output.item().map(enrollment_from).transpose()
    }

    /// Uses an enrollment at `now`: while its challenge is valid — the condition checks
    /// the expiry itself, since TTL deletion lags — counts a download and makes
    /// `challenge` the one that holds (the expiry stays where the enrollment put it).
    pub async fn use_enrollment(
        &self,
        account: &AccountId,
        id: &EnrollmentId,
        challenge: &ScepChallengeDigest,
        now: DateTime<Utc>,
    ) -> Result<EnrollmentUse, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.accounts)
            .key("account_id", attrs::s(account.as_str()))
            .key("sk", attrs::s(enrollment_sk(id)))
            .condition_expression(format!(
                "attribute_exists(sk) AND {} > :now",
                e::CHALLENGE_EXPIRES_AT
            ))
            .update_expression(format!(
                "SET {} = :digest, {} = :now ADD {} :one REMOVE {}",
                e::SCEP_CHALLENGE_SHA256,
                e::LAST_DOWNLOAD_AT,
                e::DOWNLOADS,
                e::LEGACY_SCEP_CHALLENGE
            ))
            .expression_attribute_values(":now", attrs::millis(now))
            .expression_attribute_values(":digest", digest_attr(challenge))
            .expression_attribute_values(":one", attrs::n(1))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => match output.attributes() {
                Some(item) => Ok(EnrollmentUse::Valid(enrollment_from(item)?)),
                None => Err(StoreError::Malformed(
                    "an enrollment use returned no item".into(),
                )),
            },
            Err(error) => match error.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    match failed.item().filter(|item| !item.is_empty()) {
                        Some(item) => Ok(EnrollmentUse::Expired(Box::new(enrollment_from(item)?))),
                        None => Ok(EnrollmentUse::Missing),
                    }
                }
                _ => Err(StoreError::dynamo("UpdateItem(use enrollment)", error)),
            },
        }
    }
}
