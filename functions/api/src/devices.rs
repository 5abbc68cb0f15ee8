//! A token's devices: listing with filters and pages, details, deletion.

use std::sync::Arc;

use adesync_core::device::{self, Device, DeviceState};
use adesync_core::enrollment::EnrollmentState;
use adesync_core::ids::{PolicyId, Serial, TokenId};
use adesync_runtime::http::{DevicePath, TokenPath};
use adesync_runtime::routes::Routes;
use adesync_runtime::{ApiError, Caller};
use adesync_store::devices::{DeviceWrite, Stored};
use adesync_store::policies::CountedWrite;
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

/// The warning every device deletion carries (product.md "Device lifecycle").
pub const DELETE_WARNING: &str = "The device was removed from management. It is still assigned to this MDM server in Apple Business, so it reappears on the next full sync; to keep it away, unassign it in Apple Business first.";

fn at(time: Option<DateTime<Utc>>) -> Value {
    time.map_or(Value::Null, |t| json!(t.to_rfc3339()))
}

/// The `state` the API shows: Apple's view, except that an active device retired
/// and waiting for its factory reset shows `pending_reset`.
pub fn shown_state(device: &Device) -> &'static str {
    match (device.state, device.management.enrollment) {
        (DeviceState::Active, EnrollmentState::PendingReset) => "pending_reset",
        (state, _) => state.as_str(),
    }
}

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

fn store_error(e: adesync_store::StoreError) -> ApiError {
    if e.is_transient() {
        ApiError::unavailable(&e)
    } else {
        ApiError::internal(&e)
    }
}

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
    let state = match query.state.as_deref() {
        None => None,
        Some(shown @ ("active" | "removed_from_apple" | "pending_reset")) => Some(shown),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "state must be active, removed_from_apple or pending_reset.",
            ));
        }
    };
    let mut after = match query.cursor.as_deref() {
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
    let now = api.clock.now();

    // Filters apply after reading, so keep reading pages until the page is
    // full or the devices run out.
    let mut devices = Vec::new();
    let next = loop {
        let (page, next) = match &policy {
            None => api
                .store
                .list_devices(&token, after.as_ref(), limit)
                .await
                .map_err(store_error)?,
            Some(policy) => {
                let (serials, next) = api
                    .store
                    .list_policy_serials(&token, policy, after.as_ref(), limit)
                    .await
                    .map_err(store_error)?;
                let found = api
                    .store
                    .get_devices(&token, &serials)
                    .await
                    .map_err(store_error)?;
                let page = serials
                    .iter()
                    .filter_map(|s| found.get(s).cloned())
                    .collect();
                (page, next)
            }
        };
        for Stored { device, .. } in page {
            let wanted = device.is_listed(now) && state.is_none_or(|s| s == shown_state(&device));
            if wanted && (devices.len() as u32) < limit {
                after = Some(device.serial.clone());
                devices.push(device_json(&device));
            }
        }
        if devices.len() as u32 >= limit {
            break next.and(after.clone());
        }
        match next {
            Some(n) => after = Some(n),
            None => break None,
        }
    };
    Ok(Json(json!({ "devices": devices, "next_cursor": next })))
}

async fn read_device(
    api: &Api,
    token: &TokenId,
    serial: &Serial,
    now: DateTime<Utc>,
) -> Result<Stored, ApiError> {
    match api
        .store
        .get_device(token, serial)
        .await
        .map_err(store_error)?
    {
        Some(stored) if stored.device.is_listed(now) => Ok(stored),
        _ => Err(ApiError::not_found("device")),
    }
}

async fn show(
    State(api): State<Arc<Api>>,
    caller: Caller,
    DevicePath(token, serial): DevicePath,
) -> Result<Json<Value>, ApiError> {
    owned_token(&api, &caller, &token).await?;
    let stored = read_device(&api, &token, &serial, api.clock.now()).await?;
    Ok(Json(device_json(&stored.device)))
}

async fn delete(
    State(api): State<Arc<Api>>,
    caller: Caller,
    DevicePath(token, serial): DevicePath,
) -> Result<Json<Value>, ApiError> {
    caller.require_write()?;
    owned_token(&api, &caller, &token).await?;
    // A racing importer may change the device between read and write: the
    // write is conditional on the revision read, so read and decide again.
    for _ in 0..5 {
        let now = api.clock.now();
        let stored = read_device(&api, &token, &serial, now).await?;
        let tombstone =
            device::admin_delete(&stored.device, now).map_err(|_| ApiError::not_found("device"))?;
        // The delete clears the policy: its count goes down in the same transaction.
        let written = api
            .store
            .write_devices_counted(
                &token,
                vec![CountedWrite {
                    write: DeviceWrite {
                        device: tombstone,
                        expected: Some(stored.revision),
                    },
                    from: stored.device.policy_id.clone(),
                }],
            )
            .await
            .map_err(store_error)?;
        if written.conflicts.is_empty() {
            api.store
                .add_device_count(&caller.account, &token, -1)
                .await
                .map_err(store_error)?;
            tracing::info!(token = %token, serial = %stored.device.serial, "device deleted by an administrator");
            return Ok(Json(json!({
                "serial_number": stored.device.serial,
                "state": "deleted",
                "warning": DELETE_WARNING,
            })));
        }
    }
    Err(ApiError::conflict(
        "device_busy",
        "The device kept changing while it was being deleted (a sync is importing it); retry in a moment.",
    ))
}
