//! Enrollment program tokens: create, show, renew and delete them, and
//! hand their credentials to the sync worker.
//!
//! Creating and renewing both open the uploaded token file with the
//! account's key, then ask Apple (`GET /account`) whether it accepts the
//! credentials before anything is stored: a file that is not a token, is
//! for another key, is expired, or that Apple refuses leaves no trace.
//! Credentials and Apple's session token are sealed with KMS, each bound to
//! its account, token and purpose.

use std::time::Duration;

use adesync_apple::{Account, AppleError, AppleSession, Credentials};
use adesync_core::ids::{AccountId, RunId, TokenId};
use adesync_core::scope::{self, InvalidScopeTags, OutsideScope, Scope};
use adesync_core::sync::{SyncKind, SyncRequest, Trigger};
use adesync_core::token::TokenRecord;
use adesync_core::token::{self, DeleteBlocker, InvalidInput, TokenStatus};
use adesync_events::Event;
use adesync_secrets::{Context, Sealed, Vault, VaultError};
use adesync_store::tokens::{CreateTokenError, DeleteTokenError, NewToken, Renewal, SealedSecrets};
use adesync_store::{Store, StoreError, Tokens};
use adesync_tokenfile::{AccountKey, ServerToken, TokenFileError};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use crate::Adapters;
use crate::accounts::{self, AccountKeyError};
use crate::start::start_sync;

/// Longest wait for Apple to confirm an uploaded token. The API answers
/// within API Gateway's 29 seconds; past this Apple is called unavailable.
pub const APPLE_CHECK_TIMEOUT: Duration = Duration::from_secs(20);

/// Purpose of a sealed Apple session token (`X-ADM-Auth-Session`).
pub const APPLE_SESSION_PURPOSE: &str = "apple-session";

/// An uploaded token file with what the administrator typed.
pub struct TokenUpload {
    pub name: String,
    pub apple_id: String,
    /// The `.p7m` file's bytes (already base64-decoded).
    pub token_file: Vec<u8>,
    /// Scope tags as sent (None: not sent).
    pub scope_tags: Option<Vec<String>>,
}

/// A newly downloaded token file for an existing token.
pub struct RenewalUpload {
    pub apple_id: String,
    pub token_file: Vec<u8>,
    /// New scope tags (None: kept).
    pub scope_tags: Option<Vec<String>>,
}

/// Whether a new token's first full sync was queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstSync {
    Queued {
        run_id: RunId,
    },
    /// It could not be queued now; the scheduler starts it with its next run.
    NextSchedule,
}

/// A created token.
#[derive(Debug, Clone)]
pub struct Created {
    pub token: TokenRecord,
    pub first_sync: FirstSync,
}

/// Why a token operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// The scope tags sent are not a valid list of tags.
    #[error(transparent)]
    InvalidScopeTags(#[from] InvalidScopeTags),
    /// A scoped caller's tags would hide the token from itself.
    #[error(transparent)]
    OutsideScope(#[from] OutsideScope),
    #[error("no such token")]
    NotFound,
    /// The account has no key pair yet, so no file can have been encrypted to it.
    #[error("the account has no public key yet")]
    NoAccountKey,
    /// The file is not a usable token file (expired included).
    #[error(transparent)]
    TokenFile(#[from] TokenFileError),
    /// Apple refused the credentials, or could not be asked.
    #[error(transparent)]
    Apple(#[from] AppleError),
    /// Apple did not confirm the token within [`APPLE_CHECK_TIMEOUT`].
    #[error("Apple did not answer in time")]
    AppleTimeout,
    #[error("{}", token::TokenLimitReached)]
    LimitReached,
    /// The Apple MDM server is already linked (to `existing`, when known).
    #[error("this Apple MDM server is already linked to a token")]
    Exists { existing: Option<TokenId> },
    #[error("the Apple ID is not the one that created the token")]
    AppleIdMismatch,
    /// The renewal file belongs to another Apple MDM server.
    #[error("the token file is for another MDM server")]
    DifferentServer,
    /// The token has devices or policies; every failing condition with its count.
    #[error("the token still has devices or enrollment policies")]
    NotEmpty {
        conditions: Vec<(DeleteBlocker, u64)>,
    },
    #[error("a sync of this token is running")]
    SyncInProgress {
        run_id: Option<RunId>,
        until: DateTime<Utc>,
    },
    /// The token changed while the request ran; retrying is safe.
    #[error("the token changed during the request")]
    Changed,
    #[error(transparent)]
    AccountKey(#[from] AccountKeyError),
    #[error("a secret could not be sealed or opened: {0}")]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a token's credentials could not be handed to the sync worker.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("no such token")]
    TokenNotFound,
    /// The token was stored without credentials (a seeded test token).
    #[error("the token has no stored credentials")]
    NoCredentials,
    #[error("the stored credentials could not be opened: {0}")]
    Vault(#[from] VaultError),
    /// The opened credentials are not a server token.
    #[error("the stored credentials are not a server token")]
    Malformed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The sealing context of a token's Apple session token.
pub fn apple_session_context(account: &AccountId, token: &TokenId) -> Context {
    Context::new()
        .with(Context::ACCOUNT, account.as_str())
        .with(Context::PURPOSE, APPLE_SESSION_PURPOSE)
        .with(Context::TOKEN, token.as_str())
}

fn credentials_context(account: &AccountId, token: &TokenId) -> Context {
    Context::token_credentials(account.as_str(), token.as_str())
}

fn apple_credentials(token: &ServerToken) -> Credentials {
    Credentials {
        consumer_key: token.consumer_key.clone(),
        consumer_secret: token.consumer_secret.clone(),
        access_token: token.access_token.clone(),
        access_secret: token.access_secret.clone(),
    }
}

/// A file opened with the account's key and confirmed by Apple.
struct Verified {
    server_token: ServerToken,
    account: Account,
    session: AppleSession,
}

/// Opens `file` with the account's key and asks Apple whether it accepts it.
async fn open_and_verify(
    adapters: &Adapters,
    account: &AccountId,
    token: &TokenId,
    file: &[u8],
    now: DateTime<Utc>,
) -> Result<Verified, TokenError> {
    let key: AccountKey = accounts::account_key(&adapters.store.accounts, &adapters.vault, account)
        .await?
        .ok_or(TokenError::NoAccountKey)?;
    let server_token = adesync_tokenfile::open(file, &key, now)?;
    let session = adapters
        .apple
        .session(token.as_str(), apple_credentials(&server_token), None);
    let apple_account = tokio::time::timeout(APPLE_CHECK_TIMEOUT, session.account())
        .await
        .map_err(|_| TokenError::AppleTimeout)??;
    Ok(Verified {
        server_token,
        account: apple_account,
        session,
    })
}

/// Seals the verified credentials and Apple's session for `token`.
async fn seal_secrets(
    vault: &Vault,
    account: &AccountId,
    token: &TokenId,
    verified: &Verified,
) -> Result<(Vec<u8>, Option<Vec<u8>>), VaultError> {
    let credentials = vault
        .seal(
            verified.server_token.to_json_bytes().expose_secret(),
            &credentials_context(account, token),
        )
        .await?;
    // Keeping the session spares the first sync a `/session` round trip.
    let session = match verified.session.current_auth_session() {
        Some(session) => Some(
            vault
                .seal(
                    session.expose_secret().as_bytes(),
                    &apple_session_context(account, token),
                )
                .await?
                .to_bytes(),
        ),
        None => None,
    };
    Ok((credentials.to_bytes(), session))
}

/// Creates a token from an uploaded file and queues its first full sync.
///
/// A caller limited to scopes tags the token so that it keeps seeing it:
/// with its own tags when it sends none ([`scope::new_token_tags`]).
pub async fn create_token(
    adapters: &Adapters,
    account: &AccountId,
    caller_scope: &Scope,
    upload: &TokenUpload,
    now: DateTime<Utc>,
) -> Result<Created, TokenError> {
    let name = token::token_name(&upload.name)?;
    let apple_id = token::apple_id(&upload.apple_id)?;
    let given = upload
        .scope_tags
        .as_deref()
        .map(scope::scope_tags)
        .transpose()?;
    let scope_tags = scope::new_token_tags(given, caller_scope)?;
    let token_id = TokenId::new_at(now);
    let verified = open_and_verify(adapters, account, &token_id, &upload.token_file, now).await?;
    let (credentials, session) =
        seal_secrets(&adapters.vault, account, &token_id, &verified).await?;
    let new = NewToken {
        account: account.clone(),
        token: token_id.clone(),
        name,
        apple_id,
        server_name: verified.account.server_name.clone(),
        server_uuid: verified.account.server_uuid.clone(),
        org_name: verified.account.org_name.clone(),
        admin_id: verified.account.admin_id.clone(),
        token_expires_at: verified.server_token.access_token_expiry,
        created_at: now,
        scope_tags,
    };
    adapters
        .store
        .tokens
        .create_token(
            &new,
            &SealedSecrets {
                credentials: Some(credentials),
                session,
            },
        )
        .await
        .map_err(|e| match e {
            CreateTokenError::LimitReached => TokenError::LimitReached,
            CreateTokenError::ServerLinked { existing } => TokenError::Exists { existing },
            // Ids are random: a collision is a bug, not a user's mistake.
            CreateTokenError::IdTaken => TokenError::Store(StoreError::Malformed(format!(
                "token id {token_id} was already taken"
            ))),
            CreateTokenError::Store(e) => TokenError::Store(e),
        })?;
    tracing::info!(account = %account, token = %token_id, server_uuid = %new.server_uuid, "token created");

    let first = SyncRequest {
        trigger: Trigger::Scheduled,
        kind: SyncKind::Full,
    };
    let first_sync = match start_sync(
        &adapters.store,
        &adapters.queues,
        account,
        &token_id,
        first,
        now,
    )
    .await
    {
        Ok(started) => FirstSync::Queued {
            run_id: started.claim.run_id,
        },
        Err(error) => {
            // The token is stored and valid; the scheduler's next run
            // syncs it, so the administrator's upload must not fail.
            tracing::warn!(%error, token = %token_id, "the first full sync could not be queued; it runs with the next schedule");
            FirstSync::NextSchedule
        }
    };
    let token = adapters
        .store
        .tokens
        .token(account, &token_id)
        .await?
        .ok_or(TokenError::Changed)?;
    Ok(Created { token, first_sync })
}

/// One token of the account, if the caller's `scope` sees it (a token it
/// does not see is not found, as another account's).
pub async fn get_token(
    store: &Tokens,
    account: &AccountId,
    caller_scope: &Scope,
    token: &TokenId,
) -> Result<TokenRecord, TokenError> {
    store
        .token(account, token)
        .await?
        .filter(|record| scope::visible(&record.scope_tags, caller_scope))
        .ok_or(TokenError::NotFound)
}

/// The largest page read from the table for a scoped listing: its tokens
/// are filtered after reading, so small reads could take many round trips
/// to fill one page (an account holds at most 2,000 tokens).
const SCOPED_LIST_READ: u32 = 1_000;

/// One page of the account's tokens that the caller's `scope` sees, in id
/// order after `after`, and the id to continue after when more may follow.
///
/// A scoped listing reads on past tokens it may not see until the page is
/// full or the account has no more, so a page is short only at the end and
/// the cursor never skips a visible token (it is the last token answered).
pub async fn list_tokens(
    store: &Tokens,
    account: &AccountId,
    caller_scope: &Scope,
    after: Option<&TokenId>,
    limit: u32,
) -> Result<(Vec<TokenRecord>, Option<TokenId>), TokenError> {
    if *caller_scope == Scope::All {
        return Ok(store.list_tokens(account, after, limit).await?);
    }
    let limit = usize::try_from(limit.max(1)).unwrap_or(usize::MAX);
    let mut page = Vec::new();
    let mut from = after.cloned();
    loop {
        let (records, next) = store
            .list_tokens(account, from.as_ref(), SCOPED_LIST_READ)
            .await?;
        for record in records {
            if scope::visible(&record.scope_tags, caller_scope) {
                if page.len() == limit {
                    // A visible token beyond the page: continue after the
                    // page's last one.
                    let last = page.last().map(|r: &TokenRecord| r.token.clone());
                    return Ok((page, last));
                }
                page.push(record);
            }
        }
        match next {
            Some(next) => from = Some(next),
            None => return Ok((page, None)),
        }
    }
}

/// Replaces a token's scope tags (`PATCH /v1/tokens/{id}`). A scoped
/// caller changes only tokens it sees, and only to tags it keeps seeing.
pub async fn set_scope_tags(
    store: &Tokens,
    account: &AccountId,
    caller_scope: &Scope,
    token: &TokenId,
    tags: &[String],
) -> Result<TokenRecord, TokenError> {
    let tags = scope::scope_tags(tags)?;
    scope::may_set(&tags, caller_scope)?;
    let record = store
        .set_scope_tags(account, token, caller_scope, &tags)
        .await?
        .ok_or(TokenError::NotFound)?;
    tracing::info!(account = %account, token = %token, tags = ?record.scope_tags, "token scope tags changed");
    Ok(record)
}

/// Renews a token with a newly downloaded file for the same Apple MDM
/// server, uploaded with the Apple ID that created the token. Keeps the
/// token's id, devices, policies and sync state.
pub async fn renew_token(
    adapters: &Adapters,
    account: &AccountId,
    caller_scope: &Scope,
    token: &TokenId,
    upload: &RenewalUpload,
    now: DateTime<Utc>,
) -> Result<TokenRecord, TokenError> {
    let apple_id = token::apple_id(&upload.apple_id)?;
    let scope_tags = upload
        .scope_tags
        .as_deref()
        .map(scope::scope_tags)
        .transpose()?;
    // Checked before the token is read: a refusal about the request must
    // not depend on (and so reveal) whether a hidden token exists.
    if let Some(tags) = &scope_tags {
        scope::may_set(tags, caller_scope)?;
    }
    let current = get_token(&adapters.store.tokens, account, caller_scope, token).await?;
    if !token::same_apple_id(&apple_id, &current.apple_id) {
        return Err(TokenError::AppleIdMismatch);
    }
    let verified = open_and_verify(adapters, account, token, &upload.token_file, now).await?;
    if verified.account.server_uuid != current.server_uuid {
        return Err(TokenError::DifferentServer);
    }
    let (credentials, session) = seal_secrets(&adapters.vault, account, token, &verified).await?;
    let renewal = Renewal {
        apple_id: current.apple_id.clone(),
        server_uuid: current.server_uuid.clone(),
        server_name: verified.account.server_name.clone(),
        org_name: verified.account.org_name.clone(),
        admin_id: verified.account.admin_id.clone(),
        token_expires_at: verified.server_token.access_token_expiry,
        credentials_sealed: credentials,
        session_sealed: session,
        renewed_at: now,
        scope_tags,
    };
    match adapters
        .store
        .tokens
        .renew_token(account, token, &renewal)
        .await?
    {
        Some(renewed) => {
            tracing::info!(account = %account, token = %token, "token renewed");
            if current.token_expires_at <= now && renewed.token_expires_at > now {
                // Back from `expired` (computed from the date, so no stored
                // status changes): the renewal is the change.
                let event =
                    Event::token_status_changed(account, token, TokenStatus::Ok.as_str(), now);
                let key = format!("status#ok#{}", now.timestamp_millis());
                adapters
                    .events
                    .publish_or_keep(token, &key, vec![event], now)
                    .await;
            }
            Ok(renewed)
        }
        None => match adapters.store.tokens.token(account, token).await? {
            None => Err(TokenError::NotFound),
            Some(_) => Err(TokenError::Changed),
        },
    }
}

/// Deletes a token with no devices, no policies and no running sync.
pub async fn delete_token(
    store: &Store,
    account: &AccountId,
    caller_scope: &Scope,
    token: &TokenId,
    now: DateTime<Utc>,
) -> Result<(), TokenError> {
    if *caller_scope != Scope::All {
        get_token(&store.tokens, account, caller_scope, token).await?;
    }
    match store.tokens.delete_token(account, token, now).await {
        Ok(()) => {
            tracing::info!(account = %account, token = %token, "token deleted");
            Ok(())
        }
        Err(DeleteTokenError::NotFound) => Err(TokenError::NotFound),
        Err(DeleteTokenError::NotEmpty {
            device_count,
            policy_count,
            default_policy_id,
        }) => {
            let default_policy_devices = match &default_policy_id {
                Some(policy) => store.policies.policy_device_count(token, policy).await?,
                None => 0,
            };
            Err(TokenError::NotEmpty {
                conditions: token::delete_blockers(
                    device_count,
                    default_policy_devices,
                    policy_count,
                ),
            })
        }
        Err(DeleteTokenError::SyncInProgress { run_id, until }) => {
            Err(TokenError::SyncInProgress { run_id, until })
        }
        Err(DeleteTokenError::Store(e)) => Err(e.into()),
    }
}

/// The token's OAuth credentials and its cached Apple session, for the
/// sync worker. A cached session that no longer opens is dropped (the
/// client authenticates again); credentials that do not open are an error.
pub async fn load_credentials(
    store: &Tokens,
    vault: &Vault,
    account: &AccountId,
    token: &TokenId,
) -> Result<(Credentials, Option<SecretString>), CredentialsError> {
    let secrets = store
        .token_secrets(account, token)
        .await?
        .ok_or(CredentialsError::TokenNotFound)?;
    let sealed = secrets.credentials.ok_or(CredentialsError::NoCredentials)?;
    let json = vault
        .open(
            &Sealed::from_bytes(&sealed)?,
            &credentials_context(account, token),
        )
        .await?;
    let server_token = ServerToken::from_json_bytes(json.expose_secret())
        .map_err(|_| CredentialsError::Malformed)?;
    let session = match secrets.session {
        Some(sealed) => open_session(vault, account, token, &sealed).await,
        None => None,
    };
    Ok((apple_credentials(&server_token), session))
}

pub(crate) async fn open_session(
    vault: &Vault,
    account: &AccountId,
    token: &TokenId,
    sealed: &[u8],
) -> Option<SecretString> {
    let opened = match Sealed::from_bytes(sealed) {
        Ok(sealed) => {
            vault
                .open(&sealed, &apple_session_context(account, token))
                .await
        }
        Err(error) => Err(error),
    };
    match opened {
        Ok(bytes) => match std::str::from_utf8(bytes.expose_secret()) {
            Ok(text) => Some(SecretString::from(text)),
            Err(_) => {
                tracing::warn!(token = %token, "the cached Apple session is not text; authenticating again");
                None
            }
        },
        Err(error) => {
            tracing::warn!(%error, token = %token, "the cached Apple session did not open; authenticating again");
            None
        }
    }
}
