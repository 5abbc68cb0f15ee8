//! Apple's documented bodies, as fixtures (`tests/fixtures/`, see its README): the
//! client reads every one of them, and the simulator answers each endpoint in the same
//! shape (no field Apple does not document, the same JSON type for every field, every
//! required field present). A simulator that drifts from Apple would otherwise make the
//! client's tests prove nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use adesync_apple::{
    Account, AppleError, AssignedProfile, DefinedProfile, DeviceDetails, DevicePage, DeviceStatus,
    DeviceStatuses, OpType, Profile, ProfileStatus,
};
use reqwest::Method;
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::support::{Sim, start, text};

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let body = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_str(&body).unwrap_or_else(|error| panic!("{name}: {error}"))
}

fn read<T: DeserializeOwned>(name: &str) -> T {
    serde_json::from_value(fixture(name))
        .unwrap_or_else(|error| panic!("the client cannot read {name}: {error}"))
}

#[test]
fn the_client_reads_every_documented_body_and_models_every_field() {
    let account: Account = read("account.json");
    assert_eq!(account.page_limit("/server/devices"), Some(5000));
    assert_eq!(account.org_type.as_deref(), Some("edu"));
    assert!(account.extra.is_empty(), "unmodelled: {:?}", account.extra);

    let fetch: DevicePage = read("fetch.json");
    assert!(!fetch.more_to_follow);
    assert!(fetch.fetched_until.is_some());
    let device = &fetch.devices[0];
    assert_eq!(device.profile_status, Some(ProfileStatus::Pushed));
    assert!(device.mdm_migration_deadline.is_some());
    assert!(device.profile_push_time.is_some());
    assert!(
        device.unreadable.is_empty() && device.extra.is_empty(),
        "{device:?}"
    );

    let sync: DevicePage = read("sync.json");
    let ops: Vec<_> = sync.devices.iter().map(|d| d.op_type).collect();
    assert_eq!(
        ops,
        [
            Some(OpType::Added),
            Some(OpType::Modified),
            Some(OpType::Deleted)
        ]
    );
    assert_eq!(sync.devices[2].released_by_replacement, Some(true));
    assert!(
        sync.devices
            .iter()
            .all(|d| d.op_date.is_some() && d.extra.is_empty())
    );
    let empty: DevicePage = read("empty_sync.json");
    assert!(empty.devices.is_empty() && !empty.cursor.is_empty());

    let details: DeviceDetails = read("device_details.json");
    assert_eq!(
        details.devices["F2LXK0A1B2C3"].response_status.as_deref(),
        Some("SUCCESS")
    );
    assert_eq!(
        details.devices["NOTOURS12345"].response_status.as_deref(),
        Some("NOT_ACCESSIBLE")
    );

    let profile: Profile = read("profile.json");
    assert_eq!(profile.is_mdm_removable, Some(false));
    assert_eq!(profile.skip_setup_items.len(), 3);
    assert!(profile.extra.is_empty(), "unmodelled: {:?}", profile.extra);
    let defined: DefinedProfile = read("define_profile.json");
    assert_eq!(defined.devices["NOTOURS12345"], DeviceStatus::NotAccessible);
    let assigned: AssignedProfile = read("assign_profile.json");
    assert_eq!(assigned.retry_after_seconds, Some(3600));
    assert_eq!(assigned.devices["C02ZX1Y2Z3A4"], DeviceStatus::Throttled);
    assert_eq!(assigned.devices["DMPQR9S8T7U6"], DeviceStatus::Failed);
    let removed: DeviceStatuses = read("remove_profile.json");
    assert_eq!(removed.devices["F2LXK0A1B2C3"], DeviceStatus::Success);
}

/// Apple's error bodies, armed on the simulator one by one: the client reads each as
/// the error Apple means.
#[tokio::test]
async fn the_client_reads_every_documented_error_body() {
    let sim = start(1).await;
    let session = sim.session_with(adesync_apple::AppleConfig {
        retry: adesync_apple::RetryPolicy {
            deadline: std::time::Duration::ZERO,
            ..sim.config().retry
        },
        ..sim.config()
    });
    session.account().await.expect("a session to start from");
    let Value::Array(cases) = fixture("errors.json") else {
        panic!("errors.json is a list");
    };
    for case in cases {
        let route = text(&case, "route");
        sim.fault(json!({"route": route, "status": case["status"], "body": case["body"]}))
            .await;
        let error = match route.as_str() {
            "/account" => session.account().await.expect_err("faulted"),
            "/server/devices" => session
                .fetch_devices(None, Some(100))
                .await
                .expect_err("faulted"),
            "/devices/sync" => session
                .sync_devices("MTc3MjUzOTIwMDozOnN5bmM", Some(100))
                .await
                .expect_err("faulted"),
            other => panic!("no call for {other}"),
        };
        sim.control(Method::DELETE, "/_sim/faults", Value::Null)
            .await;
        assert_eq!(kind(&error), text(&case, "means"), "{case}: {error}");
    }
}

fn kind(error: &AppleError) -> &'static str {
    match error {
        AppleError::TermsNotSigned => "terms_not_signed",
        AppleError::AccessDenied => "access_denied",
        AppleError::Refused { .. } => "refused",
        AppleError::CursorInvalid => "cursor_invalid",
        AppleError::CursorExhausted => "cursor_exhausted",
        AppleError::CursorExpired => "cursor_expired",
        AppleError::CursorRequired => "cursor_required",
        AppleError::Throttled { .. } => "throttled",
        AppleError::Server { .. } => "server",
        AppleError::BadRequest { .. } => "bad_request",
        _ => "other",
    }
}

/// The simulator's answer to one Apple call, as raw JSON.
async fn raw(sim: &Sim, session: &str, method: Method, path: &str, body: Option<Value>) -> Value {
    let mut request = reqwest::Client::new()
        .request(method.clone(), format!("{}{path}", sim.base_url))
        .header("X-ADM-Auth-Session", session)
        .header("User-Agent", "adesync-conformance/1")
        .header("X-Server-Protocol-Version", "10");
    if let Some(body) = body {
        request = request
            .header("Content-Type", "application/json;charset=UTF8")
            .body(body.to_string());
    }
    let response = request.send().await.expect("the simulator answers");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert!(status.is_success(), "{method} {path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{path}: {error}: {text}"))
}

/// The JSON type of a value, as a shape compares it.
fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every field `documented` shows anywhere in its array or map, merged: the shape of
/// one element.
fn merged(documented: impl IntoIterator<Item = Value>) -> Value {
    let mut shape = Map::new();
    for item in documented {
        if let Value::Object(fields) = item {
            shape.extend(fields);
        }
    }
    Value::Object(shape)
}

/// Where `answer` leaves the shape of `documented`: a field Apple does not document, a
/// field of another type, a `required` field missing. Maps keyed by serial number
/// (`devices` in details and per-device statuses) compare their values.
fn differences(answer: &Value, documented: &Value, required: &[&str], at: &str) -> Vec<String> {
    let mut found = Vec::new();
    if type_of(answer) != type_of(documented) {
        found.push(format!(
            "{at}: {} where Apple sends {}",
            type_of(answer),
            type_of(documented)
        ));
        return found;
    }
    match (answer, documented) {
        (Value::Object(answer), Value::Object(documented)) if at.ends_with("devices{}") => {
            let element = merged(documented.values().cloned());
            for (serial, value) in answer {
                let inner = if element.as_object().is_some_and(Map::is_empty) {
                    documented.values().next().cloned().unwrap_or(Value::Null)
                } else {
                    element.clone()
                };
                found.extend(differences(value, &inner, &[], &format!("{at}[{serial}]")));
            }
        }
        (Value::Object(answer), Value::Object(documented)) => {
            for (field, value) in answer {
                match documented.get(field) {
                    Some(expected) => {
                        let inner = if field == "devices" && expected.is_object() {
                            format!("{at}.devices{{}}")
                        } else {
                            format!("{at}.{field}")
                        };
                        found.extend(differences(value, expected, &[], &inner));
                    }
                    None => found.push(format!("{at}.{field}: not in Apple's documented body")),
                }
            }
            for field in required {
                if !answer.contains_key(*field) {
                    found.push(format!("{at}.{field}: required, missing"));
                }
            }
        }
        (Value::Array(answer), Value::Array(documented)) => {
            let element = if documented.first().is_some_and(Value::is_object) {
                merged(documented.iter().cloned())
            } else {
                documented.first().cloned().unwrap_or(Value::Null)
            };
            for (i, value) in answer.iter().enumerate() {
                if !documented.is_empty() {
                    found.extend(differences(value, &element, &[], &format!("{at}[{i}]")));
                }
            }
        }
        _ => {}
    }
    found
}

fn assert_shape(name: &str, answer: &Value, documented: &Value, required: &[&str]) {
    let found = differences(answer, documented, required, name);
    assert!(found.is_empty(), "{name}:\n{}", found.join("\n"));
}

/// Every device field Apple documents, with its type: the union of the fixtures' records.
fn documented_device() -> Value {
    let mut records = Vec::new();
    for name in ["fetch.json", "sync.json"] {
        records.extend(
            fixture(name)["devices"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
    }
    records.extend(
        fixture("device_details.json")["devices"]
            .as_object()
            .cloned()
            .unwrap_or_default()
            .into_values(),
    );
    merged(records)
}

fn page_of_documented_devices(name: &str) -> Value {
    let mut page = fixture(name);
    page["devices"] = json!([documented_device()]);
    page
}

#[tokio::test]
async fn the_simulator_answers_in_apples_documented_shapes() {
    let sim = start(0).await;
    // Apple's own sample records, loaded as they are, plus generated ones.
    let loaded: Vec<Value> = fixture("fetch.json")["devices"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let devices = format!("/_sim/servers/{}/devices", sim.server_uuid);
    sim.control(Method::POST, &devices, json!({ "devices": loaded }))
        .await;
    sim.add_devices(3).await;
    let client = sim.session();
    client.account().await.expect("a session");
    let session = client
        .current_auth_session()
        .expect("the client holds a session");
    let session = session.expose_secret();
    let page_required = ["cursor", "more_to_follow", "fetched_until", "devices"];

    let account = raw(&sim, session, Method::GET, "/account", None).await;
    assert_shape(
        "account",
        &account,
        &fixture("account.json"),
        &["server_name", "server_uuid", "admin_id", "org_name", "urls"],
    );

    let fetch = raw(
        &sim,
        session,
        Method::POST,
        "/server/devices",
        Some(json!({"limit": 1000})),
    )
    .await;
    assert_shape(
        "fetch",
        &fetch,
        &page_of_documented_devices("fetch.json"),
        &page_required,
    );
    for device in fetch["devices"].as_array().unwrap() {
        assert_shape(
            "fetch device",
            device,
            &documented_device(),
            &["serial_number", "model"],
        );
    }
    let cursor = text(&fetch, "cursor");

    // One change of each kind, then a sync.
    let serials: Vec<String> = sim.serials().await.into_iter().collect();
    sim.control(
        Method::PATCH,
        &format!("{devices}/{}", serials[0]),
        json!({"asset_tag": "SPR-00043"}),
    )
    .await;
    sim.control(
        Method::POST,
        &format!("{devices}/{}/release", serials[1]),
        json!({"by_replacement": true}),
    )
    .await;
    sim.add_devices(1).await;
    let sync = raw(
        &sim,
        session,
        Method::POST,
        "/devices/sync",
        Some(json!({"cursor": cursor})),
    )
    .await;
    assert_shape(
        "sync",
        &sync,
        &page_of_documented_devices("sync.json"),
        &page_required,
    );
    let ops: BTreeMap<String, usize> =
        sync["devices"]
            .as_array()
            .unwrap()
            .iter()
            .fold(BTreeMap::new(), |mut ops, device| {
                *ops.entry(text(device, "op_type")).or_default() += 1;
                ops
            });
    assert_eq!(
        ops.keys().map(String::as_str).collect::<Vec<_>>(),
        ["added", "deleted", "modified"],
        "{sync}"
    );
    let empty = raw(
        &sim,
        session,
        Method::POST,
        "/devices/sync",
        Some(json!({"cursor": text(&sync, "cursor")})),
    )
    .await;
    assert_shape(
        "empty sync",
        &empty,
        &fixture("empty_sync.json"),
        &page_required,
    );

    let details = raw(
        &sim,
        session,
        Method::POST,
        "/devices",
        Some(json!({"devices": [serials[0], "NOTOURS12345"]})),
    )
    .await;
    let documented_details = json!({"devices": {"F2LXK0A1B2C3": documented_device()}});
    assert_shape(
        "device details",
        &details,
        &documented_details,
        &["devices"],
    );

    let mut definition = fixture("profile.json");
    if let Value::Object(fields) = &mut definition {
        fields.remove("profile_uuid");
        fields.insert("devices".into(), json!([serials[0], "NOTOURS12345"]));
    }
    let defined = raw(&sim, session, Method::POST, "/profile", Some(definition)).await;
    assert_shape(
        "define profile",
        &defined,
        &fixture("define_profile.json"),
        &["profile_uuid", "devices"],
    );
    let profile_uuid = text(&defined, "profile_uuid");

    let read_back = raw(
        &sim,
        session,
        Method::GET,
        &format!("/profile?profile_uuid={profile_uuid}"),
        None,
    )
    .await;
    assert_shape(
        "profile",
        &read_back,
        &fixture("profile.json"),
        &["profile_name"],
    );

    sim.control(
        Method::POST,
        &format!("{devices}/{}/assign-outcome", serials[2]),
        json!({"status": "THROTTLED", "retry_after_seconds": 3600}),
    )
    .await;
    let assigned = raw(
        &sim,
        session,
        Method::PUT,
        "/profile/devices",
        Some(json!({"profile_uuid": profile_uuid, "devices": [serials[0], serials[2], "NOTOURS12345"]})),
    )
    .await;
    assert_shape(
        "assign profile",
        &assigned,
        &fixture("assign_profile.json"),
        &["profile_uuid", "devices", "retry_after_seconds"],
    );

    let removed = raw(
        &sim,
        session,
        Method::DELETE,
        "/profile/devices",
        Some(json!({"devices": [serials[0], "NOTOURS12345"]})),
    )
    .await;
    assert_shape(
        "remove profile",
        &removed,
        &fixture("remove_profile.json"),
        &["devices"],
    );
}
