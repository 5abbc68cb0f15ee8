//! The account's key pair: the certificate administrators upload to Apple
//! Business, and the private key that opens the token files Apple
//! encrypts to it.
//!
//! The key pair is made on first use, once per account (a conditional
//! write; a caller that loses the race adopts the winner's key). The
//! private key is kept for the account's whole life, sealed with KMS:
//! renewed token files are encrypted to whatever certificate Apple already
//! holds, so the key must outlive every certificate. A certificate close to
//! expiry is re-issued for the same key ([`adesync_core::token`] says when).

use adesync_core::ids::AccountId;
use adesync_core::token::{CERTIFICATE_VALIDITY_DAYS, certificate_needs_renewal};
use adesync_secrets::{Context, Sealed, Vault, VaultError};
use adesync_store::accounts::StoredKey;
use adesync_store::{Accounts, StoreError};
use adesync_tokenfile::{AccountKey, KeyError};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;

/// Why the account's key pair could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum AccountKeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the account key could not be sealed or opened: {0}")]
    Vault(#[from] VaultError),
    #[error("the account key pair is unusable: {0}")]
    Key(#[from] KeyError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// The certificate to upload to Apple Business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// `-----BEGIN CERTIFICATE-----` …
    pub pem: String,
    pub not_after: DateTime<Utc>,
}

impl From<&AccountKey> for Certificate {
    fn from(key: &AccountKey) -> Self {
        Certificate {
            pem: key.certificate_pem(),
            not_after: key.certificate_not_after(),
        }
    }
}

/// The subject of an account's certificate: Apple Business shows it next to
/// the MDM server, so it names the service and the account.
fn common_name(account: &AccountId) -> String {
    format!("adesync {account}")
}

/// The account's certificate, making the key pair on first call and
/// re-issuing the certificate (same key) when it is close to expiry.
pub async fn public_key(
    store: &Accounts,
    vault: &Vault,
    account: &AccountId,
    now: DateTime<Utc>,
) -> Result<Certificate, AccountKeyError> {
    let stored = match store.account_key(account).await? {
        Some(stored) => stored,
        None => {
            let key = generate(account, now).await?;
            let sealed = vault
                .seal(
                    key.private_key_der().expose_secret(),
                    &Context::account_key(account.as_str()),
                )
                .await?;
            let stored = StoredKey {
                sealed: sealed.to_bytes(),
                certificate_pem: key.certificate_pem(),
                created_at: now,
            };
            match store.insert_account_key(account, &stored).await? {
                None => {
                    tracing::info!(account = %account, "account key pair created");
                    return Ok(Certificate::from(&key));
                }
                // Another request made the key first: every certificate
                // handed out must belong to the one key the account keeps.
                Some(winner) => winner,
            }
        }
    };
    let key = open(vault, account, &stored).await?;
    if !certificate_needs_renewal(key.certificate_not_after(), now) {
        return Ok(Certificate::from(&key));
    }
    let renewed = key.renew_certificate(now, CERTIFICATE_VALIDITY_DAYS)?;
    if store
        .replace_certificate(
            account,
            &stored.certificate_pem,
            &renewed.certificate_pem(),
            now,
        )
        .await?
    {
        tracing::info!(account = %account, "account certificate re-issued for the same key");
        return Ok(Certificate::from(&renewed));
    }
    // Someone re-issued it at the same moment: hand out theirs.
    match store.account_key(account).await? {
        Some(current) => Ok(Certificate::from(&open(vault, account, &current).await?)),
        None => Err(StoreError::Malformed(format!("the key of account {account} vanished")).into()),
    }
}

/// The account's key pair, if it has one (it is made by [`public_key`]).
pub async fn account_key(
    store: &Accounts,
    vault: &Vault,
    account: &AccountId,
) -> Result<Option<AccountKey>, AccountKeyError> {
    match store.account_key(account).await? {
        Some(stored) => Ok(Some(open(vault, account, &stored).await?)),
        None => Ok(None),
    }
}

async fn open(
    vault: &Vault,
    account: &AccountId,
    stored: &StoredKey,
) -> Result<AccountKey, AccountKeyError> {
    let sealed = Sealed::from_bytes(&stored.sealed)?;
    let der = vault
        .open(&sealed, &Context::account_key(account.as_str()))
        .await?;
    Ok(AccountKey::from_parts(
        der.expose_secret(),
        &stored.certificate_pem,
    )?)
}

/// RSA key generation takes a noticeable fraction of a second: keep it off
/// the async workers.
async fn generate(account: &AccountId, now: DateTime<Utc>) -> Result<AccountKey, AccountKeyError> {
    let name = common_name(account);
    let key = tokio::task::spawn_blocking(move || {
        AccountKey::generate(&name, now, CERTIFICATE_VALIDITY_DAYS)
    })
    .await
    .map_err(|e| anyhow::anyhow!("key generation did not complete: {e}"))??;
    Ok(key)
}
