//! Apple's routes (docs/apple.md §3) and the gate every one of them passes first: request
//! counting, injected faults, `User-Agent`, protocol version and session checks.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::SimState;
use crate::device::{DeviceList, DeviceView};
use crate::error::{AppleError, plain_text};
use crate::oauth::{self, OAuthHeader};
use crate::world::{Authed, Page};

/// The session header, in requests and (when rotated) in responses.
pub const SESSION_HEADER: HeaderName = HeaderName::from_static("x-adm-auth-session");
const PROTOCOL_HEADER: HeaderName = HeaderName::from_static("x-server-protocol-version");
/// The newest protocol version the simulator knows; higher requests are clamped to it, as
/// Apple does (zentral#1653).
pub const NEWEST_PROTOCOL_VERSION: u8 = 10;
/// Routes `/account` advertises, with whether they take fetch/sync limits.
const ADVERTISED: [(&str, &[&str], bool); 6] = [
    ("/server/devices", &["POST"], true),
    ("/devices/sync", &["POST"], true),
    ("/devices", &["POST"], false),
    ("/devices/disown", &["POST"], false),
    ("/profile/devices", &["DELETE", "POST", "PUT"], false),
    ("/profile", &["POST", "GET"], false),
];

/// The `X-Server-Protocol-Version` a request asked for, clamped.
#[derive(Debug, Clone, Copy)]
pub struct ProtocolVersion(pub u8);

impl ProtocolVersion {
    /// Absent or unreadable means the original protocol, version 1.
    fn from_headers(headers: &HeaderMap) -> Self {
        let requested = headers
            .get(PROTOCOL_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(1);
        Self(requested.clamp(1, u64::from(NEWEST_PROTOCOL_VERSION)) as u8)
    }
}

pub fn routes(state: SimState) -> Router<SimState> {
    Router::new()
        .route("/session", get(session))
        .route("/account", get(account))
        .route("/server/devices", post(fetch_devices))
        .route("/devices/sync", post(sync_devices))
        .route("/devices", post(device_details))
        .route("/devices/disown", post(disown))
        .route("/profile", post(define_profile).get(get_profile))
        .route(
            "/profile/devices",
            post(assign_profile)
                .put(assign_profile)
                .delete(remove_profile),
        )
        .route_layer(middleware::from_fn_with_state(state, gate))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Apple's echoed cursor (micromdm#1016): the cursor the request sent,
/// `more_to_follow: true`, no devices. A request without a cursor gets an
/// empty cursor back, which the contract does not allow either.
async fn echo_cursor(request: Request) -> Response {
    let body = axum::body::to_bytes(request.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let cursor = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("cursor").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default();
    Json(json!({ "cursor": cursor, "more_to_follow": true, "devices": [] })).into_response()
}

/// Runs before every Apple route.
async fn gate(State(state): State<SimState>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let headers = request.headers();
    let session_token = header_str(headers, &SESSION_HEADER).map(str::to_owned);
    let consumer_key = (path == "/session")
        .then(|| OAuthHeader::parse(header_str(headers, &header::AUTHORIZATION)).ok())
        .flatten()
        .map(|h| h.consumer_key().to_owned());
    let (fault, delay) = {
        let mut world = state.lock();
        world.count_request(request.method().as_str(), &path);
        let server = match (&consumer_key, &session_token) {
            (Some(ck), _) => world.consumer_server(ck).map(str::to_owned),
            (None, Some(token)) => world.session_server(token).map(str::to_owned),
            (None, None) => None,
        };
        let fault = world.take_fault(&path, server.as_deref());
        // `delay_ms` is simulator time, so a sped-up run is not slowed down by it.
        let delay = fault.as_ref().map(|f| {
            world
                .clock()
                .real_duration(Duration::from_millis(f.delay_ms))
        });
        (fault, delay)
    };
    tracing::debug!(method = %request.method(), path, faulted = fault.is_some(), "apple request");
    if let Some(fault) = fault {
        if let Some(delay) = delay.filter(|d| !d.is_zero()) {
            tokio::time::sleep(delay).await;
        }
        if fault.echo_cursor {
            return echo_cursor(request).await;
        }
        if let Ok(status) = StatusCode::from_u16(fault.status) {
            let mut response = plain_text(status, fault.body);
            if let Some(value) = fault
                .retry_after
                .and_then(|v| HeaderValue::from_str(&v).ok())
            {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            return response;
        }
    }
    if header_str(request.headers(), &header::USER_AGENT).is_none_or(|ua| ua.trim().is_empty()) {
        return AppleError::bad_request("USER_AGENT_MISSING").into_response();
    }
    let version = ProtocolVersion::from_headers(request.headers());
    request.extensions_mut().insert(version);
    if path == "/session" {
        return next.run(request).await;
    }
    let authed = match state.lock().authenticate(session_token.as_deref()) {
        Ok(authed) => authed,
        Err(error) => return error.into_response(),
    };
    let rotated = authed.rotated_token.clone();
    request.extensions_mut().insert(authed);
    let mut response = next.run(request).await;
    if let Some(value) = rotated.and_then(|t| HeaderValue::from_str(t.expose_secret()).ok()) {
        response.headers_mut().insert(SESSION_HEADER, value);
    }
    response
}

fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, AppleError> {
    serde_json::from_slice(body).map_err(|_| AppleError::malformed())
}

/// A JSON answer in the charset spelling Apple's clients send.
fn json_bytes(body: Vec<u8>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json;charset=UTF8"),
        )],
        body,
    )
        .into_response()
}

fn json_value(value: &impl serde::Serialize) -> Result<Response, AppleError> {
    serde_json::to_vec(value)
        .map(json_bytes)
        .map_err(|_| AppleError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"))
}

async fn session(
    State(state): State<SimState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, AppleError> {
    let auth = OAuthHeader::parse(header_str(&headers, &header::AUTHORIZATION))
        .map_err(|_| AppleError::bad_request("BAD_REQUEST"))?;
    // The URL as the client addressed it: Host header (HTTP/1.1) or authority (HTTP/2).
    let host = header_str(&headers, &header::HOST)
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.to_string()))
        .ok_or(AppleError::bad_request("BAD_REQUEST"))?;
    let base_uri = oauth::base_uri("http", &host, uri.path());
    let token = state.lock().open_session(&auth, &base_uri, uri.query())?;
    Ok(Json(json!({ "auth_session_token": token.expose_secret() })).into_response())
}

async fn account(
    State(state): State<SimState>,
    Extension(authed): Extension<Authed>,
    Extension(ProtocolVersion(version)): Extension<ProtocolVersion>,
) -> Result<Response, AppleError> {
    let world = state.lock();
    let server = world
        .server(&authed.server_uuid)
        .ok_or_else(AppleError::unauthorized)?;
    let org = &server.org;
    let mut body = json!({
        "server_name": server.name,
        "server_uuid": server.uuid,
        "admin_id": org.admin_id,
        "facilitator_id": org.admin_id,
        "org_name": org.name,
        "org_email": org.admin_id,
        "org_phone": "8005550100",
        "org_address": "1 Example Way, Springfield, US",
    });
    if version >= 3
        && let Value::Object(map) = &mut body
    {
        let limit = json!({
            "default": world.behaviour.limit_default,
            "maximum": world.behaviour.limit_maximum,
        });
        let urls: Vec<Value> = ADVERTISED
            .iter()
            .map(|(uri, methods, limited)| {
                let mut url = json!({ "uri": uri, "http_method": methods });
                if *limited && let Value::Object(url) = &mut url {
                    url.insert("limit".into(), limit.clone());
                }
                url
            })
            .collect();
        map.insert("org_id".into(), json!(org.id));
        map.insert("org_id_hash".into(), json!(org.id_hash));
        map.insert("org_type".into(), json!("org"));
        map.insert("org_version".into(), json!("v2"));
        map.insert("urls".into(), Value::Array(urls));
    }
    json_value(&body)
}

#[derive(Debug, Default, Deserialize)]
struct StreamRequest {
    cursor: Option<String>,
    limit: Option<i64>,
}

/// Holds a page back like Apple's ~3,000 devices/minute when pacing is on. The rate is per
/// simulator minute, so a sped-up clock pages proportionally faster; a speed change during the
/// wait applies from the next page.
async fn pace(state: &SimState, devices: usize) {
    let wait = {
        let world = state.lock();
        let rate = world.devices_per_minute;
        (rate > 0 && devices > 0).then(|| {
            let simulated = Duration::from_secs_f64(devices as f64 * 60.0 / f64::from(rate));
            world.clock().real_duration(simulated)
        })
    };
    if let Some(wait) = wait {
        tokio::time::sleep(wait).await;
    }
}

fn page_response(page: &Page, version: u8) -> Result<Response, AppleError> {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        devices: DeviceList<'a>,
        fetched_until: &'a str,
        more_to_follow: bool,
        cursor: &'a str,
    }
    json_value(&Body {
        devices: DeviceList {
            entries: &page.entries,
            version,
        },
        fetched_until: &page.fetched_until,
        more_to_follow: page.more_to_follow,
        cursor: &page.cursor,
    })
}

async fn fetch_devices(
    State(state): State<SimState>,
    Extension(authed): Extension<Authed>,
    Extension(ProtocolVersion(version)): Extension<ProtocolVersion>,
    body: Bytes,
) -> Result<Response, AppleError> {
    // An empty body is a first fetch with default limit.
    let request: StreamRequest = if body.iter().all(u8::is_ascii_whitespace) {
        StreamRequest::default()
    } else {
        parse_body(&body)?
    };
    let page = state.lock().fetch(
        &authed.server_uuid,
        request.cursor.as_deref(),
        request.limit,
    )?;
    pace(&state, page.entries.len()).await;
    page_response(&page, version)
}

async fn sync_devices(
    State(state): State<SimState>,
    Extension(authed): Extension<Authed>,
    Extension(ProtocolVersion(version)): Extension<ProtocolVersion>,
    body: Bytes,
) -> Result<Response, AppleError> {
    let request: StreamRequest = parse_body(&body)?;
    let page = state.lock().sync(
        &authed.server_uuid,
        request.cursor.as_deref(),
        request.limit,
    )?;
    pace(&state, page.entries.len()).await;
    page_response(&page, version)
}

#[derive(Debug, Deserialize)]
struct DevicesRequest {
    devices: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct AssignRequest {
    profile_uuid: Option<String>,
    devices: Option<Vec<String>>,
}

async fn device_details(
    State(state): State<SimState>,
    Extension(authed): Extension<Authed>,
    Extension(ProtocolVersion(version)): Extension<ProtocolVersion>,
    body: Bytes,
) -> Result<Response, AppleError> {
    let request: DevicesRequest = parse_body(&body)?;
    let details = state
        .lock()
        .device_details(&authed.server_uuid, request.devices)?;
    let mut devices = Map::new();
    for (serial, device, status) in details {
        let entry = match device {
            Some(device) => serde_json::to_value(DeviceView {
                device: &device,
                version,
                op: None,
                response_status: Some(status),
                released_by_replacement: false,
            })
            .map_err(|_| AppleError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"))?,
            None => json!({ "serial_number": serial, "response_status": status }),
        };
        devices.insert(serial, entry);
    }
    json_value(&json!({ "devices": devices }))
}

async fn disown(
    State(state): State<SimState>,
    Extension(authed): Extension<Authed>,
    body: Bytes,
) -> Result<Response, AppleError> {
    let request: DevicesRequest = parse_body(&body)?;
    let result = state.lock().disown(&authed.server_uuid, request.devices)?;
    json_value(&result)
}

async fn define_profile(
    State(state): State<SimState>,
    Extension(authed): Extension<Authed>,
    Extension(ProtocolVersion(version)): Extension<ProtocolVersion>,
    body: Bytes,
) -> Result<Response, AppleError> {
    let profile: Map<String, Value> = parse_body(&body)?;
    let result = state
        .lock()
        .define_profile(&authed.server_uuid, profile, version)?;
    json_value(&result)
}

async fn get_profile(
    State(state): State<SimState>,
    Extension(authed): Extension<Authed>,
    RawQuery(query): RawQuery,
) -> Result<Response, AppleError> {
    let profile_uuid = query.as_deref().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "profile_uuid")
            .map(|(_, v)| v.into_owned())
    });
    let profile = state
        .lock()
        .profile(&authed.server_uuid, profile_uuid.as_deref())?;
    json_value(&profile)
}

async fn assign_profile(
    State(state): State<SimState>,
    Extension(authed): Extension<Authed>,
    Extension(ProtocolVersion(version)): Extension<ProtocolVersion>,
    body: Bytes,
) -> Result<Response, AppleError> {
    let request: AssignRequest = parse_body(&body)?;
    let mut world = state.lock();
    let result = world.assign_profile(
        &authed.server_uuid,
        request.profile_uuid,
        request.devices,
        version,
    )?;
    let mut answer = serde_json::to_value(&result)
        .map_err(|_| AppleError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"))?;
    if world.behaviour.assign_omits_profile_uuid
        && let Some(fields) = answer.as_object_mut()
    {
        fields.remove("profile_uuid");
    }
    json_value(&answer)
}

async fn remove_profile(
    State(state): State<SimState>,
    Extension(authed): Extension<Authed>,
    body: Bytes,
) -> Result<Response, AppleError> {
    let request: AssignRequest = parse_body(&body)?;
    let result = state
        .lock()
        .remove_profile(&authed.server_uuid, request.devices)?;
    json_value(&result)
}
