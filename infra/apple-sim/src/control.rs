//! The `/_sim/*` control API (`infra/apple-sim/README.md`): what an Apple Business
//! administrator would do in the web portal, plus fault injection, pacing, the clock and
//! request statistics for tests.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::SimState;
use crate::apple::NEWEST_PROTOCOL_VERSION;
use crate::config::Behaviour;
use crate::device::{Device, DeviceView, Family, OpType};
use crate::error::ControlError;
use crate::world::{
    AssignOutcome, Credentials, FaultSpec, OutcomeStatus, Server, World, format_time,
};

type Answer = Result<axum::Json<Value>, ControlError>;

/// Loading many exact device records in one request needs more than axum's 2 MB default.
const CONTROL_BODY_LIMIT: usize = 256 * 1024 * 1024;

pub fn routes() -> Router<SimState> {
    Router::new()
        .route("/_sim/health", get(health))
        .route("/_sim/servers", post(create_server).get(list_servers))
        .route("/_sim/servers/{server_uuid}", get(get_server))
        .route("/_sim/servers/{server_uuid}/token", post(renew_token))
        .route("/_sim/servers/{server_uuid}/terms", post(set_terms))
        .route(
            "/_sim/servers/{server_uuid}/devices",
            post(add_devices).get(list_devices),
        )
        .route(
            "/_sim/servers/{server_uuid}/devices/{serial}",
            get(get_device).patch(patch_device),
        )
        .route(
            "/_sim/servers/{server_uuid}/devices/{serial}/release",
            post(release_device),
        )
        .route(
            "/_sim/servers/{server_uuid}/devices/{serial}/reassign",
            post(reassign_device),
        )
        .route(
            "/_sim/servers/{server_uuid}/devices/{serial}/assign-outcome",
            post(set_assign_outcome).delete(clear_assign_outcome),
        )
        .route(
            "/_sim/faults",
            post(add_fault).delete(clear_faults).get(list_faults),
        )
        .route("/_sim/rate", post(set_rate).get(get_rate))
        .route("/_sim/clock", post(change_clock).get(get_clock))
        .route("/_sim/stats", get(get_stats).delete(reset_stats))
        .route("/_sim/config", post(set_config).get(get_config))
        .layer(DefaultBodyLimit::max(CONTROL_BODY_LIMIT))
}

/// Parses a JSON body; an empty body means "all defaults".
fn parse<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, ControlError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ControlError::BadRequest(format!("bad JSON body: {e}")))
}

fn ok(value: Value) -> Answer {
    Ok(axum::Json(value))
}

fn device_json(device: &Device) -> Value {
    serde_json::to_value(DeviceView {
        device,
        version: NEWEST_PROTOCOL_VERSION,
        op: None,
        response_status: None,
        released_by_replacement: false,
    })
    .unwrap_or(Value::Null)
}

fn server_json(server: &Server) -> Value {
    json!({
        "server_uuid": server.uuid,
        "server_name": server.name,
        "org_name": server.org.name,
        "admin_id": server.org.admin_id,
        "device_count": server.device_count(),
        "terms_signed": server.terms_signed,
        "token_generation": server.generation,
        "access_token_expiry": format_time(server.credentials.access_token_expiry),
    })
}

async fn health() -> Answer {
    ok(json!({ "status": "ok" }))
}

/// Encrypts the credentials to `certificate_pem` the way Apple Business does, base64 for JSON.
fn seal_token(credentials: &Credentials, certificate_pem: &str) -> Result<String, ControlError> {
    let token = adesync_tokenfile::ServerToken {
        consumer_key: credentials.consumer_key.clone().into(),
        consumer_secret: credentials.consumer_secret.clone(),
        access_token: credentials.access_token.clone(),
        access_secret: credentials.access_secret.clone(),
        access_token_expiry: credentials.access_token_expiry,
    };
    let file = adesync_tokenfile::seal(
        &token,
        certificate_pem,
        adesync_tokenfile::ContentCipher::Aes256Cbc,
    )
    .map_err(|e| ControlError::BadRequest(format!("public_key_pem cannot be used: {e}")))?;
    Ok(STANDARD.encode(file))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateServer {
    name: String,
    public_key_pem: String,
    org_name: Option<String>,
    admin_id: Option<String>,
    /// Generated devices to start with; the simulator's default when absent.
    devices: Option<usize>,
    family: Option<String>,
}

fn family(name: Option<&str>) -> Result<Option<Family>, ControlError> {
    name.map(str::parse::<Family>)
        .transpose()
        .map_err(|e| ControlError::BadRequest(e.to_string()))
}

async fn create_server(State(state): State<SimState>, body: Bytes) -> Answer {
    let request: CreateServer = parse(&body)?;
    if request.name.trim().is_empty() {
        return Err(ControlError::BadRequest("name is required".into()));
    }
    let family = family(request.family.as_deref())?;
    let credentials = Credentials::generate(state.lock().now());
    let token_file = seal_token(&credentials, &request.public_key_pem)?;
    let mut world = state.lock();
    let count = request.devices.unwrap_or(world.default_device_count);
    let uuid = world.create_server(
        request.name.clone(),
        request.org_name,
        request.admin_id,
        credentials,
        request.public_key_pem,
    );
    let added = world.add_generated_devices(&uuid, count, family)?.len();
    tracing::info!(server_uuid = uuid, devices = added, "server created");
    ok(json!({
        "server_uuid": uuid,
        "server_name": request.name,
        "token_file": token_file,
        "devices": added,
    }))
}

async fn list_servers(State(state): State<SimState>) -> Answer {
    let world = state.lock();
    let mut servers: Vec<&Server> = world.servers().collect();
    servers.sort_by(|a, b| a.name.cmp(&b.name).then(a.uuid.cmp(&b.uuid)));
    ok(json!({ "servers": servers.into_iter().map(server_json).collect::<Vec<_>>() }))
}

fn with_server<T>(
    world: &World,
    uuid: &str,
    f: impl FnOnce(&Server) -> T,
) -> Result<T, ControlError> {
    world
        .server(uuid)
        .map(f)
        .ok_or_else(|| ControlError::NotFound("server not found".into()))
}

async fn get_server(State(state): State<SimState>, Path(uuid): Path<String>) -> Answer {
    ok(with_server(&state.lock(), &uuid, server_json)?)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RenewToken {
    public_key_pem: Option<String>,
}

async fn renew_token(
    State(state): State<SimState>,
    Path(uuid): Path<String>,
    body: Bytes,
) -> Answer {
    let request: RenewToken = parse(&body)?;
    let (credentials, certificate) = {
        let world = state.lock();
        let now = world.now();
        with_server(&world, &uuid, |server| {
            (
                server.credentials.renewed(now),
                request
                    .public_key_pem
                    .unwrap_or_else(|| server.certificate_pem.clone()),
            )
        })?
    };
    let token_file = seal_token(&credentials, &certificate)?;
    let generation = state
        .lock()
        .renew_token(&uuid, credentials, certificate)
        .ok_or_else(|| ControlError::NotFound("server not found".into()))?;
    tracing::info!(server_uuid = uuid, generation, "token re-downloaded");
    ok(json!({ "server_uuid": uuid, "token_file": token_file }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Terms {
    signed: bool,
}

async fn set_terms(State(state): State<SimState>, Path(uuid): Path<String>, body: Bytes) -> Answer {
    let request: Terms = parse(&body)?;
    state.lock().set_terms(&uuid, request.signed)?;
    ok(json!({ "server_uuid": uuid, "terms_signed": request.signed }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddDevices {
    count: Option<usize>,
    family: Option<String>,
    /// Exact records to load instead of generated ones.
    devices: Option<Vec<Value>>,
}

async fn add_devices(
    State(state): State<SimState>,
    Path(uuid): Path<String>,
    body: Bytes,
) -> Answer {
    let request: AddDevices = parse(&body)?;
    let serials = match (request.count, request.devices) {
        (None, Some(records)) => state.lock().add_device_records(&uuid, records)?,
        (Some(count), None) => {
            let family = family(request.family.as_deref())?;
            state.lock().add_generated_devices(&uuid, count, family)?
        }
        _ => {
            return Err(ControlError::BadRequest(
                "give either count (with optional family) or devices".into(),
            ));
        }
    };
    ok(json!({ "added": serials.len(), "serials": serials }))
}

async fn list_devices(State(state): State<SimState>, Path(uuid): Path<String>) -> Answer {
    let devices = with_server(&state.lock(), &uuid, |server| {
        server.devices().map(|d| device_json(d)).collect::<Vec<_>>()
    })?;
    ok(json!({ "count": devices.len(), "devices": devices }))
}

async fn get_device(
    State(state): State<SimState>,
    Path((uuid, serial)): Path<(String, String)>,
) -> Answer {
    with_server(&state.lock(), &uuid, |server| {
        server.device(&serial).map(|d| device_json(d))
    })?
    .map(axum::Json)
    .ok_or_else(|| ControlError::NotFound("device not found".into()))
}

async fn patch_device(
    State(state): State<SimState>,
    Path((uuid, serial)): Path<(String, String)>,
    body: Bytes,
) -> Answer {
    let patch: Map<String, Value> = parse(&body)?;
    let device = state.lock().patch_device(&uuid, &serial, &patch)?;
    ok(device_json(&device))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Release {
    /// Released because Apple replaced the device: the sync reports `deleted` with
    /// `released_by_replacement: true`. A plain release has no event (as Apple does).
    #[serde(default)]
    by_replacement: bool,
}

async fn release_device(
    State(state): State<SimState>,
    Path((uuid, serial)): Path<(String, String)>,
    body: Bytes,
) -> Answer {
    let request: Release = parse(&body)?;
    state
        .lock()
        .release_device(&uuid, &serial, request.by_replacement)?;
    ok(json!({
        "serial_number": serial,
        "released": true,
        "by_replacement": request.by_replacement,
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reassign {
    to_server_uuid: Option<String>,
    /// What the new server's sync reports: `added` (default) or `modified`, which Apple
    /// sometimes sends for moves (docs/apple.md §7).
    op_type: Option<OpType>,
}

async fn reassign_device(
    State(state): State<SimState>,
    Path((uuid, serial)): Path<(String, String)>,
    body: Bytes,
) -> Answer {
    let request: Reassign = parse(&body)?;
    if request.op_type == Some(OpType::Deleted) {
        return Err(ControlError::BadRequest(
            "op_type must be added or modified".into(),
        ));
    }
    let target = request.to_server_uuid.unwrap_or_else(|| uuid.clone());
    let device = state
        .lock()
        .reassign_device(&uuid, &serial, Some(&target), request.op_type)?;
    ok(json!({ "server_uuid": target, "device": device_json(&device) }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutcomeRequest {
    status: OutcomeStatus,
    retry_after_seconds: Option<u64>,
    times: Option<u32>,
}

async fn set_assign_outcome(
    State(state): State<SimState>,
    Path((uuid, serial)): Path<(String, String)>,
    body: Bytes,
) -> Answer {
    let request: OutcomeRequest = serde_json::from_slice(&body)
        .map_err(|e| ControlError::BadRequest(format!("bad JSON body: {e}")))?;
    let outcome = AssignOutcome {
        status: request.status,
        retry_after_seconds: request.retry_after_seconds.unwrap_or(3600),
        remaining: request.times.unwrap_or(1),
    };
    let answer = serde_json::to_value(&outcome).map_err(anyhow::Error::from)?;
    state
        .lock()
        .set_assign_outcome(&uuid, &serial, Some(outcome))?;
    ok(answer)
}

async fn clear_assign_outcome(
    State(state): State<SimState>,
    Path((uuid, serial)): Path<(String, String)>,
) -> Answer {
    state.lock().set_assign_outcome(&uuid, &serial, None)?;
    ok(json!({ "cleared": true }))
}

async fn add_fault(State(state): State<SimState>, body: Bytes) -> Answer {
    let spec: FaultSpec = serde_json::from_slice(&body)
        .map_err(|e| ControlError::BadRequest(format!("bad JSON body: {e}")))?;
    let id = state.lock().add_fault(spec)?;
    ok(json!({ "id": id }))
}

async fn clear_faults(State(state): State<SimState>) -> Answer {
    state.lock().clear_faults();
    ok(json!({ "cleared": true }))
}

async fn list_faults(State(state): State<SimState>) -> Answer {
    let faults = serde_json::to_value(state.lock().faults()).map_err(anyhow::Error::from)?;
    ok(json!({ "faults": faults }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rate {
    devices_per_minute: Option<u32>,
}

async fn set_rate(State(state): State<SimState>, body: Bytes) -> Answer {
    let request: Rate = parse(&body)?;
    let rate = request.devices_per_minute.unwrap_or(0);
    state.lock().devices_per_minute = rate;
    ok(json!({ "devices_per_minute": rate }))
}

async fn get_rate(State(state): State<SimState>) -> Answer {
    ok(json!({ "devices_per_minute": state.lock().devices_per_minute }))
}

fn clock_json(world: &World) -> Value {
    let clock = world.clock();
    json!({
        "now": format_time(clock.now()),
        "offset_seconds": clock.offset_seconds(),
        "speed": clock.speed(),
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockChange {
    advance_seconds: Option<i64>,
    /// Simulator seconds per real second, 1 to 10,000.
    speed: Option<f64>,
}

async fn change_clock(State(state): State<SimState>, body: Bytes) -> Answer {
    let request: ClockChange = parse(&body)?;
    if request.advance_seconds.is_none() && request.speed.is_none() {
        return Err(ControlError::BadRequest(
            "give advance_seconds, speed or both".into(),
        ));
    }
    let mut world = state.lock();
    world
        .adjust_clock(request.advance_seconds, request.speed)
        .map_err(|e| ControlError::BadRequest(e.to_string()))?;
    ok(clock_json(&world))
}

async fn get_clock(State(state): State<SimState>) -> Answer {
    ok(clock_json(&state.lock()))
}

async fn get_stats(State(state): State<SimState>) -> Answer {
    let world = state.lock();
    let (by_path, by_method) = world.stats();
    ok(json!({
        "requests": by_path,
        "by_method": by_method,
        "total": by_path.values().sum::<u64>(),
    }))
}

async fn reset_stats(State(state): State<SimState>) -> Answer {
    state.lock().reset_stats();
    ok(json!({ "cleared": true }))
}

async fn get_config(State(state): State<SimState>) -> Answer {
    let behaviour = serde_json::to_value(&state.lock().behaviour).map_err(anyhow::Error::from)?;
    ok(behaviour)
}

/// Merges the given fields into the current behaviour (`null` resets an optional knob).
async fn set_config(State(state): State<SimState>, body: Bytes) -> Answer {
    let patch: Map<String, Value> = parse(&body)?;
    let mut world = state.lock();
    let Value::Object(mut current) =
        serde_json::to_value(&world.behaviour).map_err(anyhow::Error::from)?
    else {
        return Err(anyhow::anyhow!("behaviour is not a JSON object").into());
    };
    current.extend(patch);
    let behaviour: Behaviour = serde_json::from_value(Value::Object(current))
        .map_err(|e| ControlError::BadRequest(format!("bad config: {e}")))?;
    world.behaviour = behaviour;
    ok(serde_json::to_value(&world.behaviour).map_err(anyhow::Error::from)?)
}
