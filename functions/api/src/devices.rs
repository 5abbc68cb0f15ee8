//! A token's devices: listing with filters and pages, details, deletion.

use std::sync::Arc;

use adesync_core::device::Device;
use adesync_core::ids::{PolicyId, Serial};
use adesync_runtime::http::{DevicePath, TokenPath};
use adesync_runtime::routes::Routes;
use adesync_runtime::{ApiError, Caller};
use adesync_service::devices::{self, DeleteError, DeviceFilter};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Api;
use crate::status::owned_token;

pub fn routes() -> Routes<Arc<Api>> {
    Routes::new()
        .get("/v1/tokens/{token_id}/devices", list)
        .get("/v1/tokens/{token_id}/devices/{serial}", show)
        .delete("/v1/tokens/{token_id}/devices/{serial}", delete)
}

/// The warning every device deletion carries (docs/product.md "Device
/// lifecycle"): what the deletion does to the device's user, how to bring
/// the device back under management, and why it comes back by itself.
pub const DELETE_WARNING: &str = "The device was removed from management: its user loses access to corporate resources, and the device must be wiped and re-enrolled to be managed again. It is still assigned to this MDM server in Apple Business, so it reappears on the next full sync; to keep it away, unassign it in Apple Business first.";

fn at(time: Option<DateTime<Utc>>) -> Value {
    time.map_or(Value::Null, |t| json!(t.to_rfc3339()))
}

pub use adesync_core::device::shown_state;

/// A device as the API shows it.
pub fn device_json(device: &Device) -> Value {
    let a = &device.attributes;
    let m = &device.management;
    let state = shown_state(device);
    let assignment = m.assignment.as_ref().map(|assignment| {
        json!({
            "status": assignment.status.as_str(),
            "at": assignment.at.to_rfc3339(),
            "profile_uuid": assignment.profile_uuid,
            "retry_after": at(assignment.retry_at),
        })
    });
    json!({
        // A device is known by its serial number: it is its `id`, as every
        // resource answers one.
        "id": device.serial,
        "serial_number": device.serial,
        "model": a.model,
        "description": a.description,
        "color": a.color,
        "asset_tag": a.asset_tag,
        "os": a.os,
        "device_family": a.device_family,
        "profile_status": a.profile_status,
        "profile_uuid": a.profile_uuid,
        "device_assigned_by": a.device_assigned_by,
        "device_assigned_date": a.device_assigned_date,
        "policy_id": device.policy_id,
        "assignment": assignment,
        "state": state,
        "enrollment_state": m.enrollment.as_str(),
        "last_action": m.last_action.map(|a| a.as_str()),
        "enrollment_changed_at": at(m.enrollment_changed_at),
        "user_id": m.user_id,
        "removed_at": at(device.removed_at),
        "released_by_replacement": device.released_by_replacement,
        "deletes_at": at(device.deletes_at),
        "first_seen_at": device.first_seen_at.to_rfc3339(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    policy_id: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

const MAX_LIMIT: u32 = 1000;

async fn list(
    State(api): State<Arc<Api>>,
    caller: Caller,
    TokenPath(token): TokenPath,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    owned_token(&api, &caller, &token).await?;
    let Query(query) = query.map_err(|_| {
        ApiError::bad_request(
            "invalid_request",
            "Query parameters are state, policy_id, cursor and limit.",
        )
    })?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("limit must be between 1 and {MAX_LIMIT}."),
        ));
    }
    const SHOWN_STATES: [&str; 3] = ["active", "removed_from_apple", "pending_reset"];
    let state = match query.state.as_deref() {
        None => None,
        Some(asked) if SHOWN_STATES.contains(&asked) => {
            SHOWN_STATES.iter().copied().find(|s| *s == asked)
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "state must be active, removed_from_apple or pending_reset.",
            ));
        }
    };
    let after = match query.cursor.as_deref() {
        None => None,
        Some(cursor) => Some(Serial::parse(cursor).map_err(|_| {
            ApiError::bad_request(
                "invalid_cursor",
                "The cursor is not one this API returned; start again without it.",
            )
        })?),
    };
    let policy = match query.policy_id.as_deref() {
        None => None,
        Some(p) => Some(PolicyId::parse(p).map_err(|_| ApiError::not_found("policy"))?),
    };
    let filter = DeviceFilter { state, policy };
    let page = devices::list(
        &api.adapters.store.devices,
        &token,
        &filter,
        after,
        limit,
        api.clock.now(),
    )
    .await?;
    let devices: Vec<Value> = page.devices.iter().map(device_json).collect();
    let next = page.next;
    Ok(Json(json!({ "devices": devices, "next_cursor": next })))
}

async fn show(
    State(api): State<Arc<Api>>,
    caller: Caller,
    DevicePath(token, serial): DevicePath,
) -> Result<Json<Value>, ApiError> {
    owned_token(&api, &caller, &token).await?;
    match devices::show(&api.adapters.store, &token, &serial, api.clock.now()).await? {
        Some(device) => Ok(Json(device_json(&device))),
        None => Err(ApiError::not_found("device")),
    }
}

async fn delete(
    State(api): State<Arc<Api>>,
    caller: Caller,
    DevicePath(token, serial): DevicePath,
) -> Result<Json<Value>, ApiError> {
    caller.require_write()?;
    owned_token(&api, &caller, &token).await?;
    let clock = api.clock.clone();
    match devices::delete(
        &api.adapters.store,
        &api.adapters.events,
        &caller.account,
        &token,
        &serial,
        || clock.now(),
    )
    .await
    {
        Ok(device) => Ok(Json(json!({
            "id": device.serial,
            "serial_number": device.serial,
            "state": "deleted",
            "warning": DELETE_WARNING,
        }))),
        Err(DeleteError::NotFound) => Err(ApiError::not_found("device")),
        Err(DeleteError::Busy) => Err(ApiError::conflict(
            "device_busy",
            "The device kept changing while it was being deleted (a sync is importing it); retry in a moment.",
        )),
        Err(DeleteError::Store(e)) => Err(e.into()),
    }
}
