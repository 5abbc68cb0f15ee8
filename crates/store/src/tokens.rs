//! Token items: creating, reading, renewing and deleting enrollment
//! program tokens, and the status and secrets the sync worker keeps on them.
//!
//! Creating and deleting a token are ONE `TransactWriteItems` each, so the
//! rules that span items can never be broken by concurrent callers:
//! - create: the account's `token_count` goes up by one only while below
//!   2,000, the `server#<server_uuid>` guard item is new (one Apple MDM
//!   server is linked once), and the token item is new;
//! - delete: the token has no devices, no policies and no running sync,
//!   its guard item goes with it, and `token_count` goes down by one.
//!
//! A cancelled transaction names the failed condition by position
//! (`CancellationReasons`), which becomes a typed refusal. Transaction
//! conflicts with concurrent writers are retried with backoff.
//!
//! Reads for display project only the non-secret attributes, so sealed
//! credentials and sessions never leave DynamoDB for a listing.

use std::collections::HashMap;

use adesync_core::ids::{AccountId, PolicyId, RunId, TokenId};
use adesync_core::scope::Scope;
use adesync_core::sync::Lease;
use adesync_core::token::{MAX_TOKENS_PER_ACCOUNT, TokenRecord, TokenStatus};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, Put, ReturnValue, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem, Update,
};
use backon::Retryable;
use chrono::{DateTime, Utc};

use crate::accounts::{self, ACCOUNT_SK, blob, get_blob, server_sk};
use crate::attrs::{self, Item};
use crate::claims::attr as sync_attr;
use crate::error::{build_error, retry_policy};
use crate::transact::{Refusal, transact};
use crate::{Db, StoreError, Tokens};

/// Token item attribute names (the sync state's are in [`crate::claims::attr`]).
pub mod attr {
    pub const NAME: &str = "name";
    pub const APPLE_ID: &str = "apple_id";
    pub const SERVER_NAME: &str = "server_name";
    pub const SERVER_UUID: &str = "server_uuid";
    pub const ORG_NAME: &str = "org_name";
    pub const ADMIN_ID: &str = "admin_id";
    pub const TOKEN_EXPIRES_AT: &str = "token_expires_at";
    pub const CREATED_AT: &str = "created_at";
    pub const RENEWED_AT: &str = "renewed_at";
    pub const CREDENTIALS_SEALED: &str = "credentials_sealed";
    pub const SESSION_SEALED: &str = "session_sealed";
    pub const STATUS: &str = "status";
    pub const STATUS_MESSAGE: &str = "status_message";
    pub const STATUS_AT: &str = "status_at";
    pub const POLICY_COUNT: &str = "policy_count";
    pub const DEFAULT_POLICY_ID: &str = "default_policy_id";
    /// String set of the token's scope tags (absent: untagged).
    pub const SCOPE_TAGS: &str = "scope_tags";
}

/// The plain (non-secret) fields of a new token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    pub account: AccountId,
    pub token: TokenId,
    pub name: String,
    /// The Apple Account the administrator says created the token.
    pub apple_id: String,
    /// From Apple's `/account`.
    pub server_name: String,
    /// From Apple's `/account`: the MDM server, stable across renewals.
    pub server_uuid: String,
    pub org_name: Option<String>,
    pub admin_id: Option<String>,
    /// The token file's `access_token_expiry`.
    pub token_expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// Checked by `adesync_core::scope::scope_tags`.
    pub scope_tags: Vec<String>,
}

/// A token's secrets as stored: sealed by the caller, opaque here.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SealedSecrets {
    /// The token file's OAuth JSON, sealed (purpose `token-credentials`).
    pub credentials: Option<Vec<u8>>,
    /// Apple's `X-ADM-Auth-Session`, sealed (purpose `apple-session`).
    pub session: Option<Vec<u8>>,
}

impl std::fmt::Debug for SealedSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedSecrets")
            .field("credentials", &self.credentials.as_ref().map(Vec::len))
            .field("session", &self.session.as_ref().map(Vec::len))
            .finish()
    }
}

/// The attributes a [`TokenRecord`] is read from.
const RECORD_ATTRIBUTES: &[&str] = &[
    "account_id",
    "token_id",
    attr::NAME,
    attr::APPLE_ID,
    attr::SERVER_NAME,
    attr::SERVER_UUID,
    attr::ORG_NAME,
    attr::ADMIN_ID,
    attr::TOKEN_EXPIRES_AT,
    attr::CREATED_AT,
    attr::RENEWED_AT,
    attr::STATUS,
    attr::STATUS_MESSAGE,
    attr::STATUS_AT,
    sync_attr::DEVICE_COUNT,
    attr::POLICY_COUNT,
    attr::DEFAULT_POLICY_ID,
    sync_attr::LAST_FULL_AT,
    sync_attr::LAST_DELTA_AT,
    sync_attr::LAST_MANUAL_AT,
    sync_attr::LEASE_RUN_ID,
    sync_attr::LEASE_UNTIL,
    sync_attr::IMPORT_UNTIL,
    attr::SCOPE_TAGS,
];

/// `ProjectionExpression` and its names for [`RECORD_ATTRIBUTES`]
/// (several are reserved words, so every one goes through a placeholder).
fn record_projection() -> (String, HashMap<String, String>) {
    let names: HashMap<String, String> = RECORD_ATTRIBUTES
        .iter()
        .enumerate()
        .map(|(i, name)| (format!("#p{i}"), (*name).to_owned()))
        .collect();
    let expression = (0..RECORD_ATTRIBUTES.len())
        .map(|i| format!("#p{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    (expression, names)
}

/// Reads a token item. `None` for an item without a token's identity
/// (`server_uuid`): a stray write after a delete must not break listings.
pub fn token_from_item(item: &Item) -> Result<Option<TokenRecord>, StoreError> {
    let Some(server_uuid) = attrs::get_s(item, attr::SERVER_UUID) else {
        return Ok(None);
    };
    let text = |name: &str| -> Result<String, StoreError> {
        attrs::get_s(item, name)
            .map(str::to_owned)
            .ok_or_else(|| StoreError::Malformed(format!("a token without {name}")))
    };
    let optional = |name: &str| attrs::get_s(item, name).map(str::to_owned);
    let time = |name: &str| -> Result<DateTime<Utc>, StoreError> {
        attrs::get_time(item, name)?
            .ok_or_else(|| StoreError::Malformed(format!("a token without {name}")))
    };
    let account =
        AccountId::parse(&text("account_id")?).map_err(|e| StoreError::Malformed(e.to_string()))?;
    let token =
        TokenId::parse(&text("token_id")?).map_err(|e| StoreError::Malformed(e.to_string()))?;
    let status = match attrs::get_s(item, attr::STATUS) {
        None => TokenStatus::Ok,
        Some(text) => TokenStatus::parse(text)
            .ok_or_else(|| StoreError::Malformed(format!("unknown token status {text}")))?,
    };
    let default_policy_id = attrs::get_s(item, attr::DEFAULT_POLICY_ID)
        .map(PolicyId::parse)
        .transpose()
        .map_err(|e| StoreError::Malformed(e.to_string()))?;
    let lease = match (
        attrs::get_s(item, sync_attr::LEASE_RUN_ID),
        attrs::get_time(item, sync_attr::LEASE_UNTIL)?,
    ) {
        (Some(run), Some(until)) => Some(Lease {
            run_id: RunId::parse(run).map_err(|e| StoreError::Malformed(e.to_string()))?,
            expires_at: until,
        }),
        _ => None,
    };
    Ok(Some(TokenRecord {
        account,
        token,
        name: text(attr::NAME)?,
        apple_id: text(attr::APPLE_ID)?,
        server_name: text(attr::SERVER_NAME)?,
        server_uuid: server_uuid.to_owned(),
        org_name: optional(attr::ORG_NAME),
        admin_id: optional(attr::ADMIN_ID),
        token_expires_at: time(attr::TOKEN_EXPIRES_AT)?,
        created_at: time(attr::CREATED_AT)?,
        renewed_at: attrs::get_time(item, attr::RENEWED_AT)?,
        status,
        status_message: optional(attr::STATUS_MESSAGE),
        status_at: attrs::get_time(item, attr::STATUS_AT)?,
        device_count: attrs::get_u64(item, sync_attr::DEVICE_COUNT)?.unwrap_or(0),
        policy_count: attrs::get_u64(item, attr::POLICY_COUNT)?.unwrap_or(0),
        default_policy_id,
        last_full_sync_at: attrs::get_time(item, sync_attr::LAST_FULL_AT)?,
        last_delta_sync_at: attrs::get_time(item, sync_attr::LAST_DELTA_AT)?,
        last_manual_sync_at: attrs::get_time(item, sync_attr::LAST_MANUAL_AT)?,
        lease,
        import_until: attrs::get_time(item, sync_attr::IMPORT_UNTIL)?,
        scope_tags: attrs::get_string_set(item, attr::SCOPE_TAGS)?,
    }))
}

/// Why a token was not created.
#[derive(Debug, thiserror::Error)]
pub enum CreateTokenError {
    #[error("{}", adesync_core::token::TokenLimitReached)]
    LimitReached,
    /// The Apple MDM server is already linked to a token of this account.
    #[error("this Apple MDM server is already linked to a token")]
    ServerLinked { existing: Option<TokenId> },
    /// A token with this id exists (ids are random: a caller bug).
    #[error("a token with this id already exists")]
    IdTaken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a token was not deleted.
#[derive(Debug, thiserror::Error)]
pub enum DeleteTokenError {
    #[error("no such token")]
    NotFound,
    /// Devices or policies still belong to the token.
    #[error("the token still has devices or enrollment policies")]
    NotEmpty {
        device_count: u64,
        policy_count: u64,
        default_policy_id: Option<PolicyId>,
    },
    /// A sync run holds the token (its lease or its import is live).
    #[error("a sync of this token is running")]
    SyncInProgress {
        run_id: Option<RunId>,
        until: DateTime<Utc>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a renewal replaces on a token.
#[derive(Clone)]
pub struct Renewal {
    /// The Apple ID stored on the token (the write is conditional on it).
    pub apple_id: String,
    /// The MDM server stored on the token (the write is conditional on it).
    pub server_uuid: String,
    pub server_name: String,
    pub org_name: Option<String>,
    pub admin_id: Option<String>,
    pub token_expires_at: DateTime<Utc>,
    /// The new credentials, sealed.
    pub credentials_sealed: Vec<u8>,
    /// Apple's session for the new credentials, sealed (None: the old
    /// session is dropped and the next call authenticates).
    pub session_sealed: Option<Vec<u8>>,
    pub renewed_at: DateTime<Utc>,
    /// New scope tags (None: kept as they are).
    pub scope_tags: Option<Vec<String>>,
}

impl std::fmt::Debug for Renewal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renewal")
            .field("server_uuid", &self.server_uuid)
            .field("token_expires_at", &self.token_expires_at)
            .field("renewed_at", &self.renewed_at)
            .field("scope_tags", &self.scope_tags)
            .finish_non_exhaustive()
    }
}

/// The condition that a caller with `scope` sees the token item (None: it
/// sees every token), with its values `:scope0`, `:scope1`, … and the name
/// `#scope_tags`: the same rule as `adesync_core::scope::visible`, put into
/// a write so that the write and the rule cannot drift apart in time.
pub(crate) fn scope_condition(scope: &Scope) -> Option<(String, Vec<(String, AttributeValue)>)> {
    let mine = scope.limited_to()?;
    if mine.is_empty() {
        // Sees no token: a condition no item meets.
        return Some(("attribute_not_exists(token_id)".to_owned(), Vec::new()));
    }
    let values: Vec<(String, AttributeValue)> = mine
        .iter()
        .enumerate()
        .map(|(i, tag)| (format!(":scope{i}"), attrs::s(tag.as_str())))
        .collect();
    let condition = values
        .iter()
        .map(|(name, _)| format!("contains(#scope_tags, {name})"))
        .collect::<Vec<_>>()
        .join(" OR ");
    Some((format!("({condition})"), values))
}

fn insert_some(item: &mut Item, name: &str, value: Option<&str>) {
    if let Some(value) = value {
        item.insert(name.to_owned(), attrs::s(value));
    }
}

impl Db {
    /// An `UpdateItem` of `token`'s item: every rule kept on the token item
    /// (claims, leases, slots, the shared session) starts from here.
    pub(crate) fn update_token(
        &self,
        account: &AccountId,
        token: &TokenId,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.tables.tokens)
            .key("account_id", attrs::s(account.as_str()))
            .key("token_id", attrs::s(token.as_str()))
    }
}

impl Tokens {
    /// Creates a token: one transaction that counts it on the account
    /// (refused at [`MAX_TOKENS_PER_ACCOUNT`]), links its Apple MDM server
    /// (refused when already linked) and stores it with its sealed secrets.
    pub async fn create_token(
        &self,
        token: &NewToken,
        secrets: &SealedSecrets,
    ) -> Result<(), CreateTokenError> {
        let items = self.create_token_items(token, secrets)?;
        let attempt = || async {
            let reasons = match transact(
                &self.client,
                "TransactWriteItems(create token)",
                items.clone(),
            )
            .await
            {
                Ok(()) => return Ok(()),
                Err(Refusal::Store(error)) => return Err(error.into()),
                Err(Refusal::Conditions(reasons)) => reasons,
            };
            // Reasons are in request order: account, guard, token.
            Err(if reasons.failed(1) {
                let existing = reasons
                    .item(1)
                    .and_then(|item| attrs::get_s(item, "token_id"))
                    .and_then(|id| TokenId::parse(id).ok());
                CreateTokenError::ServerLinked { existing }
            } else if reasons.failed(0) {
                CreateTokenError::LimitReached
            } else {
                CreateTokenError::IdTaken
            })
        };
        attempt
            .retry(retry_policy())
            .when(|e| matches!(e, CreateTokenError::Store(e) if e.is_transient()))
            .await
    }

    fn create_token_items(
        &self,
        token: &NewToken,
        secrets: &SealedSecrets,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let count = Update::builder()
            .table_name(&self.tables.accounts)
            .key("account_id", attrs::s(token.account.as_str()))
            .key("sk", attrs::s(ACCOUNT_SK))
            .update_expression("ADD #count :one")
            .condition_expression("attribute_not_exists(#count) OR #count < :limit")
            .expression_attribute_names("#count", accounts::attr::TOKEN_COUNT)
            .expression_attribute_values(":one", attrs::n(1))
            .expression_attribute_values(":limit", attrs::n(MAX_TOKENS_PER_ACCOUNT))
            .build()
            .map_err(build_error)?;
        let guard = Put::builder()
            .table_name(&self.tables.accounts)
            .item("account_id", attrs::s(token.account.as_str()))
            .item("sk", attrs::s(server_sk(&token.server_uuid)))
            .item("token_id", attrs::s(token.token.as_str()))
            .item(attr::CREATED_AT, attrs::millis(token.created_at))
            .condition_expression("attribute_not_exists(sk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(build_error)?;
        let mut item: Item = [
            ("account_id", attrs::s(token.account.as_str())),
            ("token_id", attrs::s(token.token.as_str())),
            (attr::NAME, attrs::s(token.name.as_str())),
            (attr::APPLE_ID, attrs::s(token.apple_id.as_str())),
            (attr::SERVER_NAME, attrs::s(token.server_name.as_str())),
            (attr::SERVER_UUID, attrs::s(token.server_uuid.as_str())),
            (
                attr::TOKEN_EXPIRES_AT,
                attrs::millis(token.token_expires_at),
            ),
            (attr::CREATED_AT, attrs::millis(token.created_at)),
            (attr::STATUS, attrs::s(TokenStatus::Ok.as_str())),
            (attr::STATUS_AT, attrs::millis(token.created_at)),
            (sync_attr::DEVICE_COUNT, attrs::n(0)),
            (attr::POLICY_COUNT, attrs::n(0)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        insert_some(&mut item, attr::ORG_NAME, token.org_name.as_deref());
        insert_some(&mut item, attr::ADMIN_ID, token.admin_id.as_deref());
        if let Some(tags) = attrs::string_set(&token.scope_tags) {
            item.insert(attr::SCOPE_TAGS.into(), tags);
        }
        if let Some(sealed) = &secrets.credentials {
            item.insert(attr::CREDENTIALS_SEALED.into(), blob(sealed));
        }
        if let Some(sealed) = &secrets.session {
            item.insert(attr::SESSION_SEALED.into(), blob(sealed));
        }
        let put = Put::builder()
            .table_name(&self.tables.tokens)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(token_id)")
            .build()
            .map_err(build_error)?;
        Ok(vec![
            TransactWriteItem::builder().update(count).build(),
            TransactWriteItem::builder().put(guard).build(),
            TransactWriteItem::builder().put(put).build(),
        ])
    }

    /// Stores a token without credentials, counted and linked like any
    /// other: for the local demo and tests that need a token but no Apple.
    ///
    /// Returns false when the token id or its server is already there.
    pub async fn insert_token(&self, token: &NewToken) -> Result<bool, CreateTokenError> {
        match self.create_token(token, &SealedSecrets::default()).await {
            Ok(()) => Ok(true),
            Err(CreateTokenError::IdTaken | CreateTokenError::ServerLinked { .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// A token of `account` as shown to administrators (None: not in this account).
    pub async fn token(
        &self,
        account: &AccountId,
        token: &TokenId,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let (projection, names) = record_projection();
        let output = self
            .client
            .get_item()
            .table_name(&self.tables.tokens)
            .key("account_id", attrs::s(account.as_str()))
            .key("token_id", attrs::s(token.as_str()))
            .projection_expression(projection)
            .set_expression_attribute_names(Some(names))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem(token)", e))?;
        match output.item() {
            Some(item) => token_from_item(item),
            None => Ok(None),
        }
    }

    /// One page of `account`'s tokens in id order, starting after `after`.
    /// Returns the page and the id to continue after, if more may follow.
    pub async fn list_tokens(
        &self,
        account: &AccountId,
        after: Option<&TokenId>,
        limit: u32,
    ) -> Result<(Vec<TokenRecord>, Option<TokenId>), StoreError> {
        let (projection, mut names) = record_projection();
        names.insert("#account".into(), "account_id".into());
        let mut query = self
            .client
            .query()
            .table_name(&self.tables.tokens)
            .key_condition_expression("#account = :account")
            .expression_attribute_values(":account", attrs::s(account.as_str()))
            .projection_expression(projection)
            .set_expression_attribute_names(Some(names))
            .consistent_read(true)
            .limit(i32::try_from(limit.max(1)).unwrap_or(i32::MAX));
        if let Some(after) = after {
            query = query.set_exclusive_start_key(Some(HashMap::from([
                ("account_id".to_owned(), attrs::s(account.as_str())),
                ("token_id".to_owned(), attrs::s(after.as_str())),
            ])));
        }
        let output = query
            .send()
            .await
            .map_err(|e| StoreError::dynamo("Query(tokens)", e))?;
        let mut records = Vec::new();
        for item in output.items() {
            match token_from_item(item)? {
                Some(record) => records.push(record),
                None => tracing::warn!(
                    token = attrs::get_s(item, "token_id").unwrap_or("?"),
                    "a token item without identity (a write after its deletion?) is not listed"
                ),
            }
        }
        let next = output
            .last_evaluated_key()
            .and_then(|key| attrs::get_s(key, "token_id"))
            .and_then(|id| TokenId::parse(id).ok());
        Ok((records, next))
    }

    /// The sealed secrets of a token (None: not in this account).
    pub async fn token_secrets(
        &self,
        account: &AccountId,
        token: &TokenId,
    ) -> Result<Option<SealedSecrets>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.tables.tokens)
            .key("account_id", attrs::s(account.as_str()))
            .key("token_id", attrs::s(token.as_str()))
            .projection_expression("#token, #credentials, #session")
            .expression_attribute_names("#token", "token_id")
            .expression_attribute_names("#credentials", attr::CREDENTIALS_SEALED)
            .expression_attribute_names("#session", attr::SESSION_SEALED)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem(token secrets)", e))?;
        output
            .item()
            .map(|item| {
                Ok(SealedSecrets {
                    credentials: get_blob(item, attr::CREDENTIALS_SEALED)?,
                    session: get_blob(item, attr::SESSION_SEALED)?,
                })
            })
            .transpose()
    }

    /// Replaces a token's credentials with renewed ones, provided it still
    /// exists with the same Apple ID and MDM server. Replaces the cached
    /// Apple session (the old one belongs to the old credentials) and sets
    /// the status `ok`;
    /// the id, devices, policies and sync state are kept.
    ///
    /// Returns the renewed token, or None when the condition failed (the
    /// token was deleted meanwhile).
    pub async fn renew_token(
        &self,
        account: &AccountId,
        token: &TokenId,
        renewal: &Renewal,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let mut sets = vec![
            "#credentials = :credentials",
            "#expires = :expires",
            "#renewed = :renewed",
            "#status = :ok",
            "#status_at = :renewed",
            "#server_name = :server_name",
        ];
        let mut removes = vec!["#status_message"];
        let mut update = self
            .update_token(account, token)
            .condition_expression(
                "attribute_exists(token_id) AND #apple_id = :apple_id AND #server_uuid = :server_uuid",
            )
            .expression_attribute_names("#credentials", attr::CREDENTIALS_SEALED)
            .expression_attribute_names("#expires", attr::TOKEN_EXPIRES_AT)
            .expression_attribute_names("#renewed", attr::RENEWED_AT)
            .expression_attribute_names("#status", attr::STATUS)
            .expression_attribute_names("#status_at", attr::STATUS_AT)
            .expression_attribute_names("#status_message", attr::STATUS_MESSAGE)
            .expression_attribute_names("#server_name", attr::SERVER_NAME)
            .expression_attribute_names("#session", attr::SESSION_SEALED)
            .expression_attribute_names("#apple_id", attr::APPLE_ID)
            .expression_attribute_names("#server_uuid", attr::SERVER_UUID)
            .expression_attribute_names("#org", attr::ORG_NAME)
            .expression_attribute_names("#admin", attr::ADMIN_ID)
            .expression_attribute_values(":credentials", blob(&renewal.credentials_sealed))
            .expression_attribute_values(":expires", attrs::millis(renewal.token_expires_at))
            .expression_attribute_values(":renewed", attrs::millis(renewal.renewed_at))
            .expression_attribute_values(":ok", attrs::s(TokenStatus::Ok.as_str()))
            .expression_attribute_values(":server_name", attrs::s(renewal.server_name.as_str()))
            .expression_attribute_values(":apple_id", attrs::s(renewal.apple_id.as_str()))
            .expression_attribute_values(":server_uuid", attrs::s(renewal.server_uuid.as_str()));
        // The old session belongs to the old credentials; its fingerprint goes
        // with it, so the next caller Apple refuses may renew at once.
        removes.push(crate::sessions::session_attr::FINGERPRINT);
        match &renewal.session_sealed {
            Some(session) => {
                sets.push("#session = :session");
                update = update.expression_attribute_values(":session", blob(session));
            }
            None => removes.push("#session"),
        }
        // Apple may report a new organisation name or downloading admin.
        match &renewal.org_name {
            Some(org) => {
                sets.push("#org = :org");
                update = update.expression_attribute_values(":org", attrs::s(org.as_str()));
            }
            None => removes.push("#org"),
        }
        match &renewal.admin_id {
            Some(admin) => {
                sets.push("#admin = :admin");
                update = update.expression_attribute_values(":admin", attrs::s(admin.as_str()));
            }
            None => removes.push("#admin"),
        }
        if let Some(tags) = &renewal.scope_tags {
            update = update.expression_attribute_names("#scope_tags", attr::SCOPE_TAGS);
            match attrs::string_set(tags) {
                Some(set) => {
                    sets.push("#scope_tags = :scope_tags");
                    update = update.expression_attribute_values(":scope_tags", set);
                }
                None => removes.push("#scope_tags"),
            }
        }
        let result = update
            .update_expression(format!(
                "SET {} REMOVE {}",
                sets.join(", "),
                removes.join(", ")
            ))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => match output.attributes() {
                Some(item) => token_from_item(item),
                None => Err(StoreError::Malformed("a renewal returned no item".into())),
            },
            Err(error)
                if matches!(
                    error.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(None)
            }
            Err(error) => Err(StoreError::dynamo("UpdateItem(renew token)", error)),
        }
    }

    /// Replaces a token's scope tags, provided it exists and a caller with
    /// `scope` sees it (checked in the write itself). Returns the token as
    /// it is now, or None when there is no such token for this caller.
    pub async fn set_scope_tags(
        &self,
        account: &AccountId,
        token: &TokenId,
        scope: &Scope,
        tags: &[String],
    ) -> Result<Option<TokenRecord>, StoreError> {
        let mut condition =
            "attribute_exists(token_id) AND attribute_exists(#server_uuid)".to_owned();
        let mut update = self
            .update_token(account, token)
            .expression_attribute_names("#scope_tags", attr::SCOPE_TAGS)
            .expression_attribute_names("#server_uuid", attr::SERVER_UUID);
        if let Some((visible, values)) = scope_condition(scope) {
            condition.push_str(&format!(" AND {visible}"));
            for (name, value) in values {
                update = update.expression_attribute_values(name, value);
            }
        }
        update = match attrs::string_set(tags) {
            Some(set) => update
                .update_expression("SET #scope_tags = :tags")
                .expression_attribute_values(":tags", set),
            None => update.update_expression("REMOVE #scope_tags"),
        };
        let result = update
            .condition_expression(condition)
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => match output.attributes() {
                Some(item) => token_from_item(item),
                None => Err(StoreError::Malformed(
                    "a scope change returned no item".into(),
                )),
            },
            Err(error)
                if matches!(
                    error.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(None)
            }
            Err(error) => Err(StoreError::dynamo("UpdateItem(token scope tags)", error)),
        }
    }

    /// Records a token's health as the sync worker found it. `message`
    /// replaces the status message (None: the status's default message).
    ///
    /// Returns false when the token does not exist (deleted meanwhile).
    pub async fn set_token_status(
        &self,
        account: &AccountId,
        token: &TokenId,
        status: TokenStatus,
        message: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let message = message.or(status.default_message());
        let mut update = self
            .update_token(account, token)
            .condition_expression("attribute_exists(token_id)")
            .expression_attribute_names("#status", attr::STATUS)
            .expression_attribute_names("#status_at", attr::STATUS_AT)
            .expression_attribute_names("#message", attr::STATUS_MESSAGE)
            .expression_attribute_values(":status", attrs::s(status.as_str()))
            .expression_attribute_values(":now", attrs::millis(now));
        update = match message {
            Some(message) => update
                .update_expression("SET #status = :status, #status_at = :now, #message = :message")
                .expression_attribute_values(":message", attrs::s(message)),
            None => {
                update.update_expression("SET #status = :status, #status_at = :now REMOVE #message")
            }
        };
        crate::error::update_applied(update.send().await, "UpdateItem(token status)")
    }

    /// Deletes a token that has no devices, no policies and no running
    /// sync: one transaction with its server link and the account's count.
    ///
    /// A running sync refuses the delete because its worker and importer
    /// keep writing to the token until the run ends.
    pub async fn delete_token(
        &self,
        account: &AccountId,
        token: &TokenId,
        now: DateTime<Utc>,
    ) -> Result<(), DeleteTokenError> {
        let attempt = || async {
            let Some(current) = self.token(account, token).await? else {
                return Err(DeleteTokenError::NotFound);
            };
            let items = self.delete_token_items(account, token, &current.server_uuid, now)?;
            let reasons =
                match transact(&self.client, "TransactWriteItems(delete token)", items).await {
                    Ok(()) => return Ok(()),
                    Err(Refusal::Store(error)) => return Err(error.into()),
                    Err(Refusal::Conditions(reasons)) => reasons,
                };
            // Reasons are in request order: token, guard, account.
            if reasons.failed(0) {
                let record = match reasons.item(0) {
                    Some(item) => token_from_item(item)?,
                    None => self.token(account, token).await?,
                };
                return Err(match record {
                    None => DeleteTokenError::NotFound,
                    Some(record) => {
                        why_not_deleted(&record, now).unwrap_or(DeleteTokenError::Store(
                            // The token changed between the read and the write
                            // (e.g. a sync just ended): read again and retry.
                            StoreError::Unprocessed("TransactWriteItems(delete token)"),
                        ))
                    }
                });
            }
            if reasons.failed(2) {
                return Err(StoreError::Malformed(format!(
                    "account {account} counts no token while token {token} exists"
                ))
                .into());
            }
            Err(StoreError::Unprocessed("TransactWriteItems(delete token)").into())
        };
        attempt
            .retry(retry_policy())
            .when(|e| matches!(e, DeleteTokenError::Store(e) if e.is_transient()))
            .await
    }

    fn delete_token_items(
        &self,
        account: &AccountId,
        token: &TokenId,
        server_uuid: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let delete = Delete::builder()
            .table_name(&self.tables.tokens)
            .key("account_id", attrs::s(account.as_str()))
            .key("token_id", attrs::s(token.as_str()))
            .condition_expression(
                "attribute_exists(token_id) AND #server_uuid = :server_uuid \
                 AND (attribute_not_exists(#devices) OR #devices = :zero) \
                 AND (attribute_not_exists(#policies) OR #policies = :zero) \
                 AND (attribute_not_exists(#lease) OR #lease <= :now) \
                 AND (attribute_not_exists(#import) OR #import <= :now)",
            )
            .expression_attribute_names("#server_uuid", attr::SERVER_UUID)
            .expression_attribute_names("#devices", sync_attr::DEVICE_COUNT)
            .expression_attribute_names("#policies", attr::POLICY_COUNT)
            .expression_attribute_names("#lease", sync_attr::LEASE_UNTIL)
            .expression_attribute_names("#import", sync_attr::IMPORT_UNTIL)
            .expression_attribute_values(":server_uuid", attrs::s(server_uuid))
            .expression_attribute_values(":zero", attrs::n(0))
            .expression_attribute_values(":now", attrs::millis(now))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(build_error)?;
        let guard = Delete::builder()
            .table_name(&self.tables.accounts)
            .key("account_id", attrs::s(account.as_str()))
            .key("sk", attrs::s(server_sk(server_uuid)))
            .condition_expression("attribute_not_exists(sk) OR token_id = :token")
            .expression_attribute_values(":token", attrs::s(token.as_str()))
            .build()
            .map_err(build_error)?;
        let count = Update::builder()
            .table_name(&self.tables.accounts)
            .key("account_id", attrs::s(account.as_str()))
            .key("sk", attrs::s(ACCOUNT_SK))
            .update_expression("ADD #count :minus_one")
            .condition_expression("#count > :zero")
            .expression_attribute_names("#count", accounts::attr::TOKEN_COUNT)
            .expression_attribute_values(":minus_one", attrs::n(-1))
            .expression_attribute_values(":zero", attrs::n(0))
            .build()
            .map_err(build_error)?;
        Ok(vec![
            TransactWriteItem::builder().delete(delete).build(),
            TransactWriteItem::builder().delete(guard).build(),
            TransactWriteItem::builder().update(count).build(),
        ])
    }
}

/// Which delete condition a token fails at `now` (None: none does).
fn why_not_deleted(record: &TokenRecord, now: DateTime<Utc>) -> Option<DeleteTokenError> {
    if record.device_count > 0 || record.policy_count > 0 {
        return Some(DeleteTokenError::NotEmpty {
            device_count: record.device_count,
            policy_count: record.policy_count,
            default_policy_id: record.default_policy_id.clone(),
        });
    }
    if let Some(lease) = record.lease.as_ref().filter(|l| l.expires_at > now) {
        return Some(DeleteTokenError::SyncInProgress {
            run_id: Some(lease.run_id.clone()),
            until: lease.expires_at,
        });
    }
    if let Some(until) = record.import_until.filter(|until| *until > now) {
        return Some(DeleteTokenError::SyncInProgress {
            run_id: None,
            until,
        });
    }
    None
}

impl Tokens {
    /// Whether the token exists (consistent read).
    pub async fn token_exists(
        &self,
        account: &AccountId,
        token: &TokenId,
    ) -> Result<bool, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.tables.tokens)
            .key("account_id", attrs::s(account.as_str()))
            .key("token_id", attrs::s(token.as_str()))
            .projection_expression("token_id")
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem(token exists)", e))?;
        Ok(output.item().is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_projection_names_every_record_attribute_once() {
        let (expression, names) = record_projection();
        assert_eq!(names.len(), RECORD_ATTRIBUTES.len());
        for (placeholder, name) in &names {
            assert!(expression.contains(placeholder.as_str()));
            assert!(RECORD_ATTRIBUTES.contains(&name.as_str()));
        }
        // Secrets are never projected into a record.
        for secret in [attr::CREDENTIALS_SEALED, attr::SESSION_SEALED] {
            assert!(!names.values().any(|n| n == secret));
        }
    }

    #[test]
    fn an_item_without_identity_is_not_a_token() {
        let item: Item = HashMap::from([
            ("account_id".to_owned(), attrs::s("acme")),
            ("token_id".to_owned(), attrs::s("t1")),
            (sync_attr::DEVICE_COUNT.to_owned(), attrs::n(3)),
        ]);
        assert_eq!(token_from_item(&item).unwrap(), None);
    }
}
