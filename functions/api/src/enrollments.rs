//! Enrollment: re-enroll actions on a device, its user, licenses, and ADE enrollments
//! with their management profile and 15-minute SCEP challenge.
//!
//! The SCEP challenge is a credential for the rest of the enrollment's 15 minutes. It is
//! in the one answer that issues it (the enrollment, or a download of its profile) and
//! nowhere else: never logged, never stored (the store keeps its SHA-256), and only for
//! the roles that may enroll a device, `admin` and `dem`.

use std::sync::Arc;

use adesync_core::enrollment::EnrollmentRecord;
use adesync_core::enrollment::Licensee;
use adesync_core::enrollment::{DeviceAction, SCEP_EXPIRED_MESSAGE, ScepChallenge};
use adesync_core::ids::{EnrollmentId, Serial, UserId};
use adesync_core::policy::PolicyRecord;
use adesync_runtime::http::DevicePath;
use adesync_runtime::routes::Routes;
use adesync_runtime::{ApiError, Caller};
use adesync_service::enroll::{self as service, EnrollError, Enrolled, Profile};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Api;
use crate::devices::device_json;
use crate::policies::policy_json;
use crate::status::owned_token;
use crate::tokens::{body_bytes, parse_body};

pub fn routes() -> Routes<Arc<Api>> {
    Routes::new()
        .post(
            "/v1/tokens/{token_id}/devices/{serial}/actions/{action}",
            act,
        )
        .put("/v1/tokens/{token_id}/devices/{serial}/user", set_user)
        .put("/v1/licenses/users/{user_id}", license_user)
        .put("/v1/licenses/devices/{serial}", license_device)
        .post("/v1/enrollments", enroll)
        .get("/v1/enrollments/{enrollment_id}/profile", profile)
}

fn refused(error: EnrollError) -> ApiError {
    match error {
        EnrollError::DeviceNotFound => ApiError::not_found("device"),
        EnrollError::NotAssigned => ApiError::new(
            StatusCode::NOT_FOUND,
            "device_not_assigned",
            "No token of your account has an active device with this serial number; assign the device to your MDM server in Apple Business and sync, then enroll again.",
        ),
        EnrollError::NoPolicy => ApiError::conflict(
            "policy_not_assigned",
            "The device has no enrollment policy; assign it to a policy (or set the token's default policy and sync), then enroll again.",
        ),
        EnrollError::NotWiped(state) => ApiError::conflict(
            "device_not_wiped",
            "The device is already activated, so it cannot enroll with Automated Device Enrollment until it is wiped (or retired and factory reset); record the wipe, then enroll again.",
        )
        .with("enrollment_state", state.as_str()),
        EnrollError::LicenseRequired(needs) => ApiError::new(
            StatusCode::PAYMENT_REQUIRED,
            "license_required",
            format!(
                "Enrollment refused: {needs}. Assign the license (PUT /v1/licenses/...), then enroll again."
            ),
        )
        .with("needs", needs.as_str()),
        EnrollError::InvalidAction(e) => ApiError::conflict(
            "invalid_state",
            format!("{} {}", adesync_runtime::http::sentence(&e.to_string()), e.advice()),
        )
        .with("enrollment_state", e.state.as_str())
        .with("action", e.action.as_str()),
        EnrollError::Released => ApiError::conflict(
            "invalid_state",
            "The device was released from Apple Business; re-enroll actions apply to devices assigned to this token.",
        )
        .with("state", "removed_from_apple"),
        EnrollError::EnrollmentNotFound => ApiError::not_found("enrollment"),
        EnrollError::ChallengeExpired => ApiError::new(
            StatusCode::GONE,
            "scep_challenge_expired",
            format!(
                "{SCEP_EXPIRED_MESSAGE} The enrollment's SCEP challenge is valid for 15 minutes and has expired: factory reset the device, then enroll it again."
            ),
        ),
        EnrollError::Busy => ApiError::conflict(
            "device_busy",
            "The device kept changing during the request (a sync is importing it); retry in a moment.",
        ),
        EnrollError::Store(e) => e.into(),
    }
}

async fn act(
    State(api): State<Arc<Api>>,
    caller: Caller,
    DevicePath(token, serial): DevicePath,
    params: Result<Path<std::collections::HashMap<String, String>>, PathRejection>,
) -> Result<Response, ApiError> {
    caller.require_write()?;
    owned_token(&api, &caller, &token).await?;
    let action = params
        .ok()
        .and_then(|Path(params)| params.get("action").and_then(|a| DeviceAction::parse(a)))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "No such action; the actions are wipe, retire and factory-reset.",
            )
        })?;
    let device = service::act(
        &api.adapters.store,
        &token,
        &serial,
        action,
        api.clock.now(),
    )
    .await
    .map_err(refused)?;
    let mut body = device_json(&device);
    body["action"] = json!(action.as_str());
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserBody {
    user_id: Option<String>,
}

fn user_id(text: &str) -> Result<UserId, ApiError> {
    UserId::parse(text).map_err(|_| {
        ApiError::bad_request(
            "invalid_request",
            "user_id must be 1 to 128 letters, digits, '-', '_', '.' or '@'.",
        )
    })
}

async fn set_user(
    State(api): State<Arc<Api>>,
    caller: Caller,
    DevicePath(token, serial): DevicePath,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_write()?;
    owned_token(&api, &caller, &token).await?;
    let body: UserBody = parse_body(&body_bytes(body)?, r#"{"user_id": "..." or null}"#)?;
    let user = body.user_id.as_deref().map(user_id).transpose()?;
    let device = service::set_user(&api.adapters.store, &token, &serial, user, api.clock.now())
        .await
        .map_err(refused)?;
    Ok(Json(device_json(&device)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LicenseBody {
    licensed: bool,
}

async fn license_user(
    State(api): State<Arc<Api>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_write()?;
    let user = user_id(&path.map(|Path(p)| p).unwrap_or_default())?;
    let body: LicenseBody = parse_body(&body_bytes(body)?, r#"{"licensed": true}"#)?;
    service::set_license(
        &api.adapters.store.enrollments,
        &caller.account,
        &Licensee::User(user.clone()),
        body.licensed,
        api.clock.now(),
    )
    .await
    .map_err(refused)?;
    Ok(Json(json!({ "user_id": user, "licensed": body.licensed })))
}

async fn license_device(
    State(api): State<Arc<Api>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_write()?;
    let serial = Serial::parse(&path.map(|Path(p)| p).unwrap_or_default()).map_err(|_| {
        ApiError::bad_request(
            "invalid_request",
            "The serial number must be 1 to 64 letters and digits, as Apple shows it.",
        )
    })?;
    let body: LicenseBody = parse_body(&body_bytes(body)?, r#"{"licensed": true}"#)?;
    service::set_license(
        &api.adapters.store.enrollments,
        &caller.account,
        &Licensee::Device(serial.clone()),
        body.licensed,
        api.clock.now(),
    )
    .await
    .map_err(refused)?;
    Ok(Json(
        json!({ "serial_number": serial, "licensed": body.licensed }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollBody {
    serial: String,
    user: Option<String>,
}

/// The management profile of an enrollment: its policy and the SCEP challenge this
/// answer issued.
fn enrollment_json(
    record: &EnrollmentRecord,
    challenge: &ScepChallenge,
    policy: Option<&PolicyRecord>,
) -> Value {
    json!({
        // `id` as every resource; `enrollment_id` kept for earlier clients (deprecated).
        "id": record.id,
        "enrollment_id": record.id,
        "serial_number": record.serial,
        "token_id": record.token,
        "user_id": record.user,
        "policy_id": record.policy,
        "policy": policy.map(|p| policy_json(p, None)),
        "scep_challenge": challenge.expose(),
        "challenge_expires_at": record.expires_at.to_rfc3339(),
        "created_at": record.created_at.to_rfc3339(),
        "downloads": record.downloads,
    })
}

async fn enroll(
    State(api): State<Arc<Api>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require_write()?;
    let body: EnrollBody = parse_body(&body_bytes(body)?, r#"{"serial": "...", "user": "..."}"#)?;
    let serial = Serial::parse(&body.serial).map_err(|_| {
        ApiError::bad_request(
            "invalid_request",
            "serial must be 1 to 64 letters and digits, as Apple shows it.",
        )
    })?;
    let user = body.user.as_deref().map(user_id).transpose()?;
    let Enrolled {
        enrollment,
        challenge,
        policy,
        device,
    } = service::enroll(
        &api.adapters.store,
        &caller.account,
        &caller.scope,
        &serial,
        user,
        api.clock.now(),
    )
    .await
    .map_err(refused)?;
    let mut body = enrollment_json(&enrollment, &challenge, Some(&policy));
    body["device"] = device_json(&device);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn profile(
    State(api): State<Arc<Api>>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    // A download issues a new SCEP challenge, a credential that enrolls a device: it
    // takes a role that may enroll one, whatever its method says.
    caller.require_write().map_err(|refusal| {
        if refusal.status() == StatusCode::FORBIDDEN {
            ApiError::forbidden(
                "Downloading a management profile issues its SCEP challenge, which enrolls a device: it needs the Administrator (admin) or Device Enrollment Manager (dem) role; ask an administrator to grant it.",
            )
        } else {
            refusal
        }
    })?;
    let id = path
        .ok()
        .and_then(|Path(id)| EnrollmentId::parse(&id).ok())
        .ok_or_else(|| ApiError::not_found("enrollment"))?;
    let Profile {
        enrollment,
        challenge,
        policy,
    } = service::profile(
        &api.adapters.store,
        &caller.account,
        &caller.scope,
        &id,
        api.clock.now(),
    )
    .await
    .map_err(refused)?;
    Ok(Json(enrollment_json(
        &enrollment,
        &challenge,
        policy.as_ref(),
    )))
}
