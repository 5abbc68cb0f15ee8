//! Account items: the account's key pair and its token counter.
//!
//! The `account` item of the accounts table holds the key pair Apple
//! Business encrypts token files to (the private key sealed by the caller,
//! the certificate in PEM) and `token_count`, which changes only in the
//! same transaction as the token it counts (see [`crate::tokens`]). Next to
//! it, one `server#<server_uuid>` item per linked Apple MDM server makes
//! linking the same server twice impossible.
//!
//! The key pair is created at most once per account: the write is
//! conditional on no key being there, and the loser of a race adopts the
//! winner's key, so every certificate ever handed out belongs to the key
//! the account keeps.

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use chrono::{DateTime, Utc};

use adesync_core::ids::AccountId;

use crate::attrs::{self, Item};
use crate::{Accounts, StoreError};

/// Sort key of an account's own item.
pub const ACCOUNT_SK: &str = "account";

/// Sort key of the item that links an Apple MDM server to one token.
pub fn server_sk(server_uuid: &str) -> String {
    format!("server#{server_uuid}")
}

/// Account item attribute names.
pub mod attr {
    pub const TOKEN_COUNT: &str = "token_count";
    pub const KEY_SEALED: &str = "key_sealed";
    pub const KEY_CERTIFICATE: &str = "key_certificate";
    pub const KEY_CREATED_AT: &str = "key_created_at";
    /// When the current certificate was issued (it differs from
    /// `key_created_at` once a certificate was re-issued for the same key).
    pub const KEY_CERTIFIED_AT: &str = "key_certified_at";
}

/// An account's key pair as stored: the private key sealed by the caller
/// (the store never sees it in clear) and the certificate handed out.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// The sealed PKCS#8 private key (ciphertext, but still not for logs).
    pub sealed: Vec<u8>,
    pub certificate_pem: String,
    pub created_at: DateTime<Utc>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("sealed", &format_args!("[{} bytes]", self.sealed.len()))
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

pub(crate) fn blob(bytes: &[u8]) -> AttributeValue {
    AttributeValue::B(Blob::new(bytes))
}

pub(crate) fn get_blob(item: &Item, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::B(bytes)) => Ok(Some(bytes.as_ref().to_vec())),
        Some(_) => Err(StoreError::Malformed(format!("{name} is not binary"))),
    }
}

fn stored_key(item: &Item) -> Result<Option<StoredKey>, StoreError> {
    let Some(sealed) = get_blob(item, attr::KEY_SEALED)? else {
        return Ok(None);
    };
    let certificate_pem = attrs::get_s(item, attr::KEY_CERTIFICATE)
        .ok_or_else(|| StoreError::Malformed("an account key without certificate".into()))?
        .to_owned();
    let created_at = attrs::get_time(item, attr::KEY_CREATED_AT)?
        .ok_or_else(|| StoreError::Malformed("an account key without creation time".into()))?;
    Ok(Some(StoredKey {
        sealed,
        certificate_pem,
        created_at,
    }))
}

impl Accounts {
    /// The account's key pair, if it has one.
    pub async fn account_key(&self, account: &AccountId) -> Result<Option<StoredKey>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.tables.accounts)
            .key("account_id", attrs::s(account.as_str()))
            .key("sk", attrs::s(ACCOUNT_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem(account)", e))?;
        match output.item() {
            Some(item) => stored_key(item),
            None => Ok(None),
        }
    }

    /// Stores the account's key pair unless it already has one.
    ///
    /// Returns `None` when `key` was stored, or the key another caller
    /// stored first (which the caller must use instead of its own).
    pub async fn insert_account_key(
        &self,
        account: &AccountId,
        key: &StoredKey,
    ) -> Result<Option<StoredKey>, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.accounts)
            .key("account_id", attrs::s(account.as_str()))
            .key("sk", attrs::s(ACCOUNT_SK))
            .condition_expression("attribute_not_exists(#sealed)")
            .update_expression(
                "SET #sealed = :sealed, #cert = :cert, #created = :at, #certified = :at",
            )
            .expression_attribute_names("#sealed", attr::KEY_SEALED)
            .expression_attribute_names("#cert", attr::KEY_CERTIFICATE)
            .expression_attribute_names("#created", attr::KEY_CREATED_AT)
            .expression_attribute_names("#certified", attr::KEY_CERTIFIED_AT)
            .expression_attribute_values(":sealed", blob(&key.sealed))
            .expression_attribute_values(":cert", attrs::s(key.certificate_pem.as_str()))
            .expression_attribute_values(":at", attrs::millis(key.created_at))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(None),
            Err(error) => match error.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    let winner = match failed.item() {
                        Some(item) => stored_key(item)?,
                        None => self.account_key(account).await?,
                    };
                    winner
                        .map(Some)
                        .ok_or_else(|| StoreError::Malformed("an account key vanished".into()))
                }
                _ => Err(StoreError::dynamo("UpdateItem(account key)", error)),
            },
        }
    }

    /// Replaces the account's certificate (re-issued for the same key),
    /// provided it is still `previous_pem`. Returns false when another
    /// caller replaced it first.
    pub async fn replace_certificate(
        &self,
        account: &AccountId,
        previous_pem: &str,
        certificate_pem: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.accounts)
            .key("account_id", attrs::s(account.as_str()))
            .key("sk", attrs::s(ACCOUNT_SK))
            .condition_expression("#cert = :previous")
            .update_expression("SET #cert = :cert, #certified = :now")
            .expression_attribute_names("#cert", attr::KEY_CERTIFICATE)
            .expression_attribute_names("#certified", attr::KEY_CERTIFIED_AT)
            .expression_attribute_values(":previous", attrs::s(previous_pem))
            .expression_attribute_values(":cert", attrs::s(certificate_pem))
            .expression_attribute_values(":now", attrs::millis(now))
            .send()
            .await;
        crate::error::update_applied(result, "UpdateItem(certificate)")
    }

    /// How many tokens the account holds.
    pub async fn token_count(&self, account: &AccountId) -> Result<u64, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.tables.accounts)
            .key("account_id", attrs::s(account.as_str()))
            .key("sk", attrs::s(ACCOUNT_SK))
            .projection_expression(attr::TOKEN_COUNT)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem(account)", e))?;
        match output.item() {
            Some(item) => Ok(attrs::get_u64(item, attr::TOKEN_COUNT)?.unwrap_or(0)),
            None => Ok(0),
        }
    }
}
