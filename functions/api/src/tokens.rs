//! Tokens: create, list, show, renew, change scope tags and delete.
//!
//! Each handler checks the caller's role first (401 and 403 come before
//! anything about the request), then parses the path and the body, calls
//! one operation of [`adesync_service::tokens`] and maps its result. A token
//! id that is malformed or belongs to another account is a 404, so nothing
//! confirms that another account's token exists; a token outside a scoped
//! caller's scope tags is answered the same way.
//!
//! No answer carries a secret: token records are read without their sealed
//! credentials, and error messages never quote the uploaded file.

use std::sync::Arc;

use adesync_apple::AppleError;
use adesync_core::ids::TokenId;
use adesync_core::token::TokenRecord;
use adesync_core::token::{self, MAX_TOKENS_PER_ACCOUNT, ShownStatus};
use adesync_runtime::routes::Routes;
use adesync_runtime::{ApiError, Caller};
use adesync_service::tokens::{
    self as service, Created, FirstSync, RenewalUpload, TokenError, TokenUpload,
};
use adesync_tokenfile::TokenFileError;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Api;
use crate::accounts::{account_key_error, vault_error};

pub fn routes() -> Routes<Arc<Api>> {
    Routes::new()
        .get("/v1/tokens", list)
        .post("/v1/tokens", create)
        .get("/v1/tokens/{token_id}", show)
        .patch("/v1/tokens/{token_id}", update)
        .delete("/v1/tokens/{token_id}", delete)
        .put("/v1/tokens/{token_id}/renewal", renew)
}

/// Default and largest page of `GET /v1/tokens`.
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    apple_id: String,
    /// Base64 of the `.p7m` file.
    token_file: String,
    #[serde(default)]
    scope_tags: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RenewBody {
    apple_id: String,
    token_file: String,
    #[serde(default)]
    scope_tags: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    scope_tags: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

/// The token named in the path; anything that is not a token id (bad
/// percent-encoding included) names no token of the caller's.
fn token_id(path: Result<Path<String>, PathRejection>) -> Result<TokenId, ApiError> {
    path.ok()
        .and_then(|Path(text)| TokenId::parse(&text).ok())
        .ok_or_else(|| ApiError::not_found("token"))
}

/// The request body, with the size cap answered in the contract's shape.
pub(crate) fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::body_too_large()
        } else {
            ApiError::bad_request(
                "invalid_request",
                "The request body could not be read; send it again.",
            )
        }
    })
}

pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    shape: &str,
) -> Result<T, ApiError> {
    adesync_runtime::http::parse_object(body).map_err(|problem| {
        ApiError::bad_request(
            "invalid_request",
            format!("The request body must be a JSON object {shape} ({problem})."),
        )
    })
}

/// Decodes `token_file`. Line breaks and spaces are ignored: `base64`
/// tools wrap their output, and people paste it as it is.
fn token_file(text: &str) -> Result<Vec<u8>, ApiError> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_request",
                "token_file must be the base64 encoding of the .p7m token file downloaded from Apple Business (for example the output of `base64 -w0 token.p7m`).",
            )
        })
}

fn at(time: Option<DateTime<Utc>>) -> Value {
    time.map_or(Value::Null, |t| json!(t.to_rfc3339()))
}

/// A token as the API shows it; `now` decides expiry.
pub(crate) fn token_json(record: &TokenRecord, now: DateTime<Utc>) -> Value {
    let expiry = token::expiry(record.token_expires_at, now);
    let status = token::shown_status(record.status, record.token_expires_at, now);
    let status_message = match status {
        ShownStatus::Expired => Some(token::expired_message(record.token_expires_at)),
        _ => record.status_message.clone(),
    };
    let running = record.lease.as_ref().filter(|lease| lease.expires_at > now);
    json!({
        "id": record.token,
        "name": record.name,
        "apple_id": record.apple_id,
        "server_name": record.server_name,
        "server_uuid": record.server_uuid,
        "org_name": record.org_name,
        "admin_id": record.admin_id,
        "expires_at": record.token_expires_at.to_rfc3339(),
        "days_left": expiry.days_left,
        "expiring_soon": expiry.expiring_soon,
        "status": status.as_str(),
        "status_message": status_message,
        "status_at": at(record.status_at),
        "device_count": record.device_count,
        "policy_count": record.policy_count,
        "default_policy_id": record.default_policy_id,
        "last_full_sync_at": at(record.last_full_sync_at),
        "last_delta_sync_at": at(record.last_delta_sync_at),
        "last_manual_sync_at": at(record.last_manual_sync_at),
        "sync_running": running.is_some(),
        "created_at": record.created_at.to_rfc3339(),
        "renewed_at": at(record.renewed_at),
        "scope_tags": record.scope_tags,
    })
}

/// Apple's answer to an uploaded token, as the API reports it.
fn apple_refused(error: &AppleError) -> ApiError {
    let unprocessable = |reason: &str, message: &str| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "apple_rejected_token",
            message,
        )
        .with("reason", reason)
    };
    match error {
        AppleError::TermsNotSigned => unprocessable(
            "terms_not_signed",
            "Apple refuses this token until an administrator accepts Apple's latest terms and conditions: sign in to Apple Business Manager (or Apple School Manager), accept them, then upload the token file again.",
        ),
        AppleError::TokenInvalid => unprocessable(
            "token_invalid",
            "Apple rejected this token: it was replaced by a newer download, revoked, or its Apple Account was removed. Download a new token file for the MDM server in Apple Business and upload that.",
        ),
        AppleError::AccessDenied => unprocessable(
            "access_denied",
            "Apple denied this token access to the MDM server's details; check the MDM server in Apple Business, download a new token file and upload it.",
        ),
        other => {
            tracing::warn!(error = %other, "Apple could not confirm an uploaded token");
            let wait = other.retry_after().map_or(30, |d| d.as_secs().max(1));
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "apple_unavailable",
                "Apple's device enrollment service could not confirm the token right now; nothing was stored, retry in a few minutes.",
            )
            .retry_after(wait)
        }
    }
}

/// The HTTP answer of each reason a token operation did not happen.
fn refused(error: TokenError) -> ApiError {
    match error {
        TokenError::Invalid(e) => {
            ApiError::bad_request("invalid_request", adesync_runtime::http::sentence(&e.to_string()))
        }
        TokenError::InvalidScopeTags(e) => {
            ApiError::bad_request("invalid_request", adesync_runtime::http::sentence(&e.to_string()))
        }
        TokenError::OutsideScope(e) => {
            ApiError::forbidden(adesync_runtime::http::sentence(&e.to_string()))
        }
        TokenError::NotFound => ApiError::not_found("token"),
        TokenError::NoAccountKey => ApiError::bad_request(
            "invalid_token_file",
            "This account has no public key yet, so no token file can have been encrypted for it: download the public key (GET /v1/public-key), upload it to the MDM server in Apple Business, then download the token file and upload it here.",
        ),
        TokenError::TokenFile(TokenFileError::Expired { expired_at }) => ApiError::bad_request(
            "token_expired",
            TokenFileError::Expired { expired_at }.to_string(),
        )
        .with("expired_at", expired_at.to_rfc3339()),
        TokenError::TokenFile(e) => ApiError::bad_request("invalid_token_file", e.to_string()),
        TokenError::Apple(e) => apple_refused(&e),
        TokenError::AppleTimeout => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "apple_unavailable",
            "Apple's device enrollment service did not confirm the token in time; nothing was stored, retry in a few minutes.",
        )
        .retry_after(60),
        TokenError::LimitReached => ApiError::conflict(
            "token_limit_reached",
            adesync_runtime::http::sentence(&token::TokenLimitReached.to_string()),
        )
        .with("limit", MAX_TOKENS_PER_ACCOUNT),
        TokenError::Exists { existing } => {
            let error = ApiError::conflict(
                "token_exists",
                "This Apple MDM server is already linked to a token of this account; renew that token (PUT /v1/tokens/{token_id}/renewal) instead of adding it again.",
            );
            match existing {
                Some(existing) => error.with("token_id", existing.as_str()),
                None => error,
            }
        }
        TokenError::AppleIdMismatch => ApiError::conflict(
            "apple_id_mismatch",
            "A token can only be renewed with the Apple ID that created it; enter that Apple ID (shown as apple_id on the token).",
        ),
        TokenError::DifferentServer => ApiError::conflict(
            "different_server",
            "This token file is for a different MDM server than the token being renewed; download the token file of this token's MDM server (server_name on the token) in Apple Business, or add the file as a new token.",
        ),
        TokenError::NotEmpty { conditions } => {
            let listed: Vec<String> = conditions
                .iter()
                .map(|(blocker, count)| format!("{} ({count})", blocker.as_str()))
                .collect();
            ApiError::conflict(
                "token_not_empty",
                format!(
                    "The token cannot be deleted while it has devices or enrollment policies ({}); unassign its devices in Apple Business and delete its policies first.",
                    listed.join(", ")
                ),
            )
            .with(
                "conditions",
                conditions
                    .iter()
                    .map(|(blocker, count)| json!({"condition": blocker.as_str(), "count": count}))
                    .collect::<Vec<_>>(),
            )
        }
        TokenError::SyncInProgress { run_id, until } => {
            let mut error = ApiError::conflict(
                "sync_in_progress",
                format!(
                    "A sync of this token is running; delete it once the sync has finished (it holds the token until {} and longer while it makes progress; `GET /v1/tokens/{{id}}/sync` shows how far it is).",
                    until.to_rfc3339()
                ),
            )
            .with("lease_expires_at", until.to_rfc3339());
            if let Some(run_id) = run_id {
                error = error.with("run_id", run_id.as_str());
            }
            error
        }
        TokenError::Changed => ApiError::conflict(
            "token_changed",
            "The token changed while this request ran; send the request again.",
        ),
        TokenError::AccountKey(e) => account_key_error(&e),
        TokenError::Vault(e) => vault_error(&e),
        TokenError::Store(e) => e.into(),
    }
}

#[tracing::instrument(skip_all, fields(account = %caller.account))]
async fn create(
    State(api): State<Arc<Api>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require_write()?;
    let body: CreateBody = parse_body(
        &body_bytes(body)?,
        r#"{"name": "...", "apple_id": "...", "token_file": "<base64 of the .p7m file>", "scope_tags": ["..."] (optional)}"#,
    )?;
    let upload = TokenUpload {
        name: body.name,
        apple_id: body.apple_id,
        token_file: token_file(&body.token_file)?,
        scope_tags: body.scope_tags,
    };
    let now = api.clock.now();
    let Created { token, first_sync } =
        service::create_token(&api.adapters, &caller.account, &caller.scope, &upload, now)
            .await
            .map_err(refused)?;
    let mut answer = token_json(&token, now);
    answer["first_sync"] = match first_sync {
        FirstSync::Queued { run_id } => json!({"queued": true, "run_id": run_id, "kind": "full"}),
        FirstSync::NextSchedule => json!({
            "queued": false,
            "message": "The token is stored, but its first full sync could not be queued now; it runs with the next scheduled sync.",
        }),
    };
    let location = format!("/v1/tokens/{}", token.token);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(answer),
    )
        .into_response())
}

#[tracing::instrument(skip_all, fields(account = %caller.account))]
async fn list(
    State(api): State<Arc<Api>>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_read()?;
    let bad_query = || {
        ApiError::bad_request(
            "invalid_request",
            format!(
                "The query parameters are limit (1 to {MAX_PAGE}) and cursor (the next_cursor of the previous page)."
            ),
        )
    };
    let Query(query) = query.map_err(|_| bad_query())?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(bad_query());
    }
    let after = query
        .cursor
        .as_deref()
        .map(TokenId::parse)
        .transpose()
        .map_err(|_| bad_query())?;
    let (records, next) = service::list_tokens(
        &api.adapters.store.tokens,
        &caller.account,
        &caller.scope,
        after.as_ref(),
        limit,
    )
    .await
    .map_err(refused)?;
    let now = api.clock.now();
    Ok(Json(json!({
        "tokens": records.iter().map(|r| token_json(r, now)).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

#[tracing::instrument(skip_all, fields(account = %caller.account))]
async fn show(
    State(api): State<Arc<Api>>,
    caller: Caller,
    token: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_read()?;
    let token = token_id(token)?;
    let record = service::get_token(
        &api.adapters.store.tokens,
        &caller.account,
        &caller.scope,
        &token,
    )
    .await
    .map_err(refused)?;
    Ok(Json(token_json(&record, api.clock.now())))
}

/// `PATCH /v1/tokens/{id}`: replaces the token's scope tags.
#[tracing::instrument(skip_all, fields(account = %caller.account))]
async fn update(
    State(api): State<Arc<Api>>,
    caller: Caller,
    token: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let token = token_id(token)?;
    let body: UpdateBody = parse_body(&body_bytes(body)?, r#"{"scope_tags": ["..."]}"#)?;
    let record = service::set_scope_tags(
        &api.adapters.store.tokens,
        &caller.account,
        &caller.scope,
        &token,
        &body.scope_tags,
    )
    .await
    .map_err(refused)?;
    Ok(Json(token_json(&record, api.clock.now())))
}

#[tracing::instrument(skip_all, fields(account = %caller.account))]
async fn renew(
    State(api): State<Arc<Api>>,
    caller: Caller,
    token: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_write()?;
    let token = token_id(token)?;
    let body: RenewBody = parse_body(
        &body_bytes(body)?,
        r#"{"apple_id": "...", "token_file": "<base64 of the .p7m file>", "scope_tags": ["..."] (optional)}"#,
    )?;
    let upload = RenewalUpload {
        apple_id: body.apple_id,
        token_file: token_file(&body.token_file)?,
        scope_tags: body.scope_tags,
    };
    let now = api.clock.now();
    let record = service::renew_token(
        &api.adapters,
        &caller.account,
        &caller.scope,
        &token,
        &upload,
        now,
    )
    .await
    .map_err(refused)?;
    Ok(Json(token_json(&record, now)))
}

#[tracing::instrument(skip_all, fields(account = %caller.account))]
async fn delete(
    State(api): State<Arc<Api>>,
    caller: Caller,
    token: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    caller.require_write()?;
    let token = token_id(token)?;
    service::delete_token(
        &api.adapters.store,
        &caller.account,
        &caller.scope,
        &token,
        api.clock.now(),
    )
    .await
    .map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}
