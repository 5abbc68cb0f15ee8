//! Enrollment policies of a token: create, list, show, change, delete; the token's
//! default policy; assigning devices to a policy.
//!
//! Each handler checks the caller's role and that the token is the caller's (404
//! otherwise, whether or not it exists elsewhere) before reading its body.

use std::sync::Arc;

use adesync_core::assignment::{Assignment, AssignmentStatus};
use adesync_core::ids::{PolicyId, Serial, TokenId};
use adesync_core::policy::PolicyRecord;
use adesync_core::policy::{
    FIELD_KINDS, FieldKind, InvalidPolicy, MAX_DEVICES_PER_POLICY, MAX_POLICIES_PER_TOKEN,
    PolicyPatch, PolicySettings,
};
use adesync_runtime::http::TokenPath;
use adesync_runtime::routes::Routes;
use adesync_runtime::{ApiError, Caller};
use adesync_service::policies::{self as service, AssignReport, MAX_SERIALS_PER_CALL, PolicyError};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::Api;
use crate::status::owned_token;
use crate::tokens::{body_bytes, parse_body};

pub fn routes() -> Routes<Arc<Api>> {
    Routes::new()
        .get("/v1/tokens/{token_id}/policies", list)
        .post("/v1/tokens/{token_id}/policies", create)
        .get("/v1/tokens/{token_id}/policies/{policy_id}", show)
        .patch("/v1/tokens/{token_id}/policies/{policy_id}", update)
        .delete("/v1/tokens/{token_id}/policies/{policy_id}", delete)
        .post(
            "/v1/tokens/{token_id}/policies/{policy_id}/devices",
            assign_devices,
        )
        .put("/v1/tokens/{token_id}/default-policy", set_default)
}

/// The token and policy named by `{token_id}` and `{policy_id}` (404 for anything
/// unparsable, like [`TokenPath`]).
pub struct PolicyPath(pub TokenId, pub PolicyId);

impl<S: Send + Sync> FromRequestParts<S> for PolicyPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let TokenPath(token) = TokenPath::from_request_parts(parts, state).await?;
        let axum::extract::Path(params) = axum::extract::Path::<
            std::collections::HashMap<String, String>,
        >::from_request_parts(parts, state)
        .await
        .map_err(|_| ApiError::not_found("policy"))?;
        params
            .get("policy_id")
            .and_then(|id| PolicyId::parse(id).ok())
            .map(|policy| PolicyPath(token, policy))
            .ok_or_else(|| ApiError::not_found("policy"))
    }
}

fn at(time: Option<DateTime<Utc>>) -> Value {
    time.map_or(Value::Null, |t| json!(t.to_rfc3339()))
}

/// A policy as the API shows it: its settings and its bookkeeping.
pub fn policy_json(record: &PolicyRecord, default: Option<&PolicyId>) -> Value {
    let mut body = match serde_json::to_value(&record.settings) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    for (key, value) in [
        // Every resource answers its id as `id`; `policy_id` stays for the
        // clients written before (deprecated in docs/openapi.yaml).
        ("id", json!(record.policy)),
        ("policy_id", json!(record.policy)),
        ("token_id", json!(record.token)),
        ("is_default", json!(default == Some(&record.policy))),
        ("device_count", json!(record.device_count)),
        ("version", json!(record.version)),
        ("profile_uuid", json!(record.current_profile())),
        ("profile_error", json!(record.profile_error)),
        ("reassign_pending", json!(record.reassign_pending)),
        ("created_at", json!(record.created_at.to_rfc3339())),
        ("updated_at", json!(record.updated_at.to_rfc3339())),
    ] {
        body.insert(key.to_owned(), value);
    }
    Value::Object(body)
}

fn invalid_policy(error: &InvalidPolicy) -> ApiError {
    ApiError::bad_request(
        "invalid_policy",
        format!("The policy's {} {}.", error.field, error.message),
    )
    .with("field", error.field)
}

/// Checks the JSON types of a settings object, naming the first wrong field (serde's
/// own messages would not name it). `null` clears an optional field in a patch.
fn check_fields(body: &[u8], patch: bool) -> Result<(), ApiError> {
    let shape = if patch {
        "with the fields to change"
    } else {
        r#"such as {"name": "...", "url": "https://..."}"#
    };
    let value: Value = parse_body(body, shape)?;
    let Value::Object(object) = value else {
        return Err(ApiError::bad_request(
            "invalid_request",
            "The request body must be a JSON object.",
        ));
    };
    for (key, value) in &object {
        let Some((field, kind)) = FIELD_KINDS.iter().find(|(name, _)| name == key) else {
            let known: Vec<&str> = FIELD_KINDS.iter().map(|(name, _)| *name).collect();
            return Err(ApiError::bad_request(
                "invalid_policy",
                format!(
                    "The policy has no field {:?}; its fields are {}.",
                    key.chars().take(40).collect::<String>(),
                    known.join(", ")
                ),
            )
            .with("field", key.chars().take(40).collect::<String>()));
        };
        let required = matches!(*field, "name" | "url" | "user_affinity");
        let fits = match (kind, value) {
            (_, Value::Null) => patch && !required,
            (FieldKind::Text, Value::String(_)) => true,
            (FieldKind::Flag, Value::Bool(_)) => true,
            (FieldKind::TextList, Value::Array(items)) => items.iter().all(Value::is_string),
            _ => false,
        };
        if !fits {
            return Err(ApiError::bad_request(
                "invalid_policy",
                format!("The policy's {field} must be {}.", kind.describe()),
            )
            .with("field", *field));
        }
    }
    Ok(())
}

fn refused(error: PolicyError) -> ApiError {
    match error {
        PolicyError::TokenNotFound => ApiError::not_found("token"),
        PolicyError::NotFound => ApiError::not_found("policy"),
        PolicyError::Invalid(e) => invalid_policy(&e),
        PolicyError::LimitReached => ApiError::conflict(
            "policy_limit_reached",
            format!(
                "This token already has {MAX_POLICIES_PER_TOKEN} enrollment policies, the most a token may have; delete a policy you no longer use first."
            ),
        )
        .with("limit", MAX_POLICIES_PER_TOKEN),
        PolicyError::InUse { device_count } => ApiError::conflict(
            "policy_in_use",
            format!(
                "{device_count} devices are assigned to this policy; assign them to another policy before deleting it."
            ),
        )
        .with("device_count", device_count),
        PolicyError::DeviceLimitReached {
            device_count,
            adding,
        } => ApiError::conflict(
            "policy_device_limit_reached",
            format!(
                "A policy may hold at most {MAX_DEVICES_PER_POLICY} devices; it holds {device_count} and this request adds {adding}. Assign some devices to another policy."
            ),
        )
        .with("limit", MAX_DEVICES_PER_POLICY)
        .with("device_count", device_count)
        .with("adding", adding),
        PolicyError::UnknownDevices(serials) => ApiError::bad_request(
            "unknown_devices",
            format!(
                "{} of the serial numbers are not devices of this token; nothing was assigned. Check them (a device appears here once a sync brought it).",
                serials.len()
            ),
        )
        .with("serials", first(&serials)),
        PolicyError::InactiveDevices(serials) => ApiError::conflict(
            "devices_released",
            format!(
                "{} of the devices were released from Apple Business, so Apple cannot assign them; nothing was assigned. Leave them out.",
                serials.len()
            ),
        )
        .with("serials", first(&serials)),
        PolicyError::Changed => ApiError::conflict(
            "policy_changed",
            "The policy changed while this request ran; send the request again.",
        ),
        PolicyError::Busy => ApiError::conflict(
            "device_busy",
            "The devices kept changing while they were being assigned (a sync is importing them); retry in a moment.",
        ),
        PolicyError::Store(e) => e.into(),
    }
}

/// At most 100 serial numbers, for an error's details.
fn first(serials: &[Serial]) -> Vec<&str> {
    serials.iter().take(100).map(Serial::as_str).collect()
}

async fn create(
    State(api): State<Arc<Api>>,
    caller: Caller,
    TokenPath(token): TokenPath,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require_write()?;
    owned_token(&api, &caller, &token).await?;
    let body = body_bytes(body)?;
    check_fields(&body, false)?;
    let settings: PolicySettings = parse_body(&body, "of policy settings")?;
    let record = service::create(
        &api.adapters.store.policies,
        &caller.account,
        &token,
        settings,
        api.clock.now(),
    )
    .await
    .map_err(refused)?;
    Ok((StatusCode::CREATED, Json(policy_json(&record, None))).into_response())
}

async fn default_of(
    api: &Api,
    caller: &Caller,
    token: &TokenId,
) -> Result<Option<PolicyId>, ApiError> {
    service::default_policy(&api.adapters.store.policies, &caller.account, token)
        .await
        .map_err(refused)
}

async fn list(
    State(api): State<Arc<Api>>,
    caller: Caller,
    TokenPath(token): TokenPath,
) -> Result<Json<Value>, ApiError> {
    owned_token(&api, &caller, &token).await?;
    let default = default_of(&api, &caller, &token).await?;
    let policies = api
        .adapters
        .store
        .policies
        .list_policies(&token)
        .await
        .map_err(|e| refused(e.into()))?;
    Ok(Json(json!({
        "policies": policies.iter().map(|p| policy_json(p, default.as_ref())).collect::<Vec<_>>(),
        "default_policy_id": default,
    })))
}

async fn show(
    State(api): State<Arc<Api>>,
    caller: Caller,
    PolicyPath(token, policy): PolicyPath,
) -> Result<Json<Value>, ApiError> {
    owned_token(&api, &caller, &token).await?;
    let record = service::get(&api.adapters.store.policies, &token, &policy)
        .await
        .map_err(refused)?;
    let default = default_of(&api, &caller, &token).await?;
    Ok(Json(policy_json(&record, default.as_ref())))
}

async fn update(
    State(api): State<Arc<Api>>,
    caller: Caller,
    PolicyPath(token, policy): PolicyPath,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_write()?;
    owned_token(&api, &caller, &token).await?;
    let body = body_bytes(body)?;
    check_fields(&body, true)?;
    let patch: PolicyPatch = parse_body(&body, "with the fields to change")?;
    let record = service::update(
        &api.adapters.store,
        &api.adapters.queues,
        &caller.account,
        &token,
        &policy,
        &patch,
        api.clock.now(),
    )
    .await
    .map_err(refused)?;
    let default = default_of(&api, &caller, &token).await?;
    Ok(Json(policy_json(&record, default.as_ref())))
}

async fn delete(
    State(api): State<Arc<Api>>,
    caller: Caller,
    PolicyPath(token, policy): PolicyPath,
) -> Result<StatusCode, ApiError> {
    caller.require_write()?;
    owned_token(&api, &caller, &token).await?;
    service::delete(
        &api.adapters.store.policies,
        &caller.account,
        &token,
        &policy,
    )
    .await
    .map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultBody {
    policy_id: String,
}

async fn set_default(
    State(api): State<Arc<Api>>,
    caller: Caller,
    TokenPath(token): TokenPath,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_write()?;
    owned_token(&api, &caller, &token).await?;
    let body: DefaultBody = parse_body(&body_bytes(body)?, r#"{"policy_id": "..."}"#)?;
    let policy = PolicyId::parse(&body.policy_id).map_err(|_| ApiError::not_found("policy"))?;
    service::set_default(
        &api.adapters.store.policies,
        &caller.account,
        &token,
        &policy,
    )
    .await
    .map_err(refused)?;
    tracing::info!(token = %token, policy = %policy, "default policy set");
    Ok(Json(
        json!({ "token_id": token, "default_policy_id": policy }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DevicesBody {
    serials: Vec<String>,
}

/// A device's result in the contract's words.
fn result_json(serial: &Serial, assignment: &Assignment, now: DateTime<Utc>) -> Value {
    let retry_after = assignment.retry_at.filter(|_| {
        matches!(
            assignment.status,
            AssignmentStatus::Failed | AssignmentStatus::Throttled
        )
    });
    json!({
        "serial_number": serial,
        "result": assignment.status.as_str(),
        "retry_after": at(retry_after),
        "retry_after_seconds": retry_after.map(|t| (t - now).num_seconds().max(0)),
    })
}

fn report_json(report: &AssignReport, now: DateTime<Utc>) -> Value {
    let mut summary: std::collections::BTreeMap<&str, usize> = [
        "assigned",
        "not_accessible",
        "failed",
        "throttled",
        "pending",
    ]
    .into_iter()
    .map(|k| (k, 0))
    .collect();
    for result in &report.results {
        *summary
            .entry(result.assignment.status.as_str())
            .or_default() += 1;
    }
    json!({
        "policy_id": report.policy.policy,
        "profile_uuid": report.policy.current_profile(),
        "device_count": report.policy.device_count,
        "results": report.results.iter().map(|r| result_json(&r.serial, &r.assignment, now)).collect::<Vec<_>>(),
        "summary": summary,
        "warning": report.apple_problem,
    })
}

async fn assign_devices(
    State(api): State<Arc<Api>>,
    caller: Caller,
    PolicyPath(token, policy): PolicyPath,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_write()?;
    owned_token(&api, &caller, &token).await?;
    let body: DevicesBody = parse_body(&body_bytes(body)?, r#"{"serials": ["C02...", ...]}"#)?;
    if body.serials.is_empty() || body.serials.len() > MAX_SERIALS_PER_CALL {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("serials must list 1 to {MAX_SERIALS_PER_CALL} serial numbers."),
        ));
    }
    let mut serials = Vec::with_capacity(body.serials.len());
    for text in &body.serials {
        serials.push(Serial::parse(text).map_err(|_| {
            ApiError::bad_request(
                "invalid_request",
                "Every serial number must be 1 to 64 letters and digits, as Apple shows it.",
            )
        })?);
    }
    let now = api.clock.now();
    let report = service::assign_devices(
        &api.adapters,
        &caller.account,
        &token,
        &policy,
        &serials,
        now,
    )
    .await
    .map_err(refused)?;
    Ok(Json(report_json(&report, now)))
}
