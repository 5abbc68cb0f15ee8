//! Define/get profiles, assign, remove, disown and their per-device outcomes.

mod common;

use anyhow::{Context, Result};
use common::{Sim, serials};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn profile() -> Value {
    json!({
        "profile_name": "Corporate",
        "url": "https://mdm.example.com/enroll",
        "is_supervised": true,
        "is_mdm_removable": false,
        "department": "IT",
        "support_phone_number": "+1 555 0100",
        "support_email_address": "it@example.com",
        "language": "en",
        "region": "US",
        "skip_setup_items": ["Location", "Privacy"],
    })
}

async fn setup(sim: &Sim, devices: usize) -> Result<(common::TestServer, String, Vec<String>)> {
    let server = sim.create_server("acme", devices).await?;
    let session = sim.session(&server).await?;
    let listed = sim
        .control(
            Method::GET,
            &format!("/_sim/servers/{}/devices", server.uuid),
            None,
        )
        .await?;
    let serials = serials(listed["devices"].as_array().context("devices")?);
    Ok((server, session, serials))
}

async fn define(sim: &Sim, session: &str, body: Value) -> Result<String> {
    let reply = sim
        .apple(Method::POST, "/profile", session, Some(body))
        .await?;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    Ok(reply.json()?["profile_uuid"]
        .as_str()
        .context("profile_uuid")?
        .to_owned())
}

#[tokio::test]
async fn define_validates_like_apple() -> Result<()> {
    let sim = Sim::start().await?;
    let (_, session, _) = setup(&sim, 0).await?;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"url": "https://x.example"}), "CONFIG_NAME_REQUIRED"),
        (
            json!({"profile_name": "n".repeat(126), "url": "https://x.example"}),
            "CONFIG_NAME_INVALID",
        ),
        (json!({"profile_name": "p"}), "CONFIG_URL_REQUIRED"),
        (
            json!({"profile_name": "p", "url": "not a url"}),
            "CONFIG_URL_INVALID",
        ),
        (
            json!({"profile_name": "p", "url": "https://x.example", "is_mdm_removable": false}),
            "FLAGS_INVALID",
        ),
        (
            json!({"profile_name": "p", "url": "https://x.example", "department": "d".repeat(126)}),
            "DEPARTMENT_INVALID",
        ),
        (
            json!({"profile_name": "p", "url": "https://x.example", "org_magic": "m".repeat(257)}),
            "MAGIC_INVALID",
        ),
        (
            json!({"profile_name": "p", "url": "https://x.example", "support_phone_number": "1".repeat(51)}),
            "SUPPORT_PHONE_INVALID",
        ),
        (
            json!({"profile_name": "p", "url": "https://x.example", "support_email_address": "nobody"}),
            "SUPPORT_EMAIL_INVALID",
        ),
        (
            json!({"profile_name": "p", "url": "https://x.example", "language": "english!"}),
            "LOCALE_INVALID",
        ),
        (
            json!({"profile_name": "p", "url": "https://x.example", "is_supervised": "yes"}),
            "MALFORMED_REQUEST_BODY",
        ),
    ];
    for (body, token) in cases {
        sim.apple(Method::POST, "/profile", &session, Some(body))
            .await?
            .assert_error(400, token);
    }
    // A 125-character name is fine.
    define(
        &sim,
        &session,
        json!({"profile_name": "n".repeat(125), "url": "https://x.example"}),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn defined_profiles_can_be_read_back() -> Result<()> {
    let sim = Sim::start().await?;
    let (_, session, _) = setup(&sim, 0).await?;
    let uuid = define(&sim, &session, profile()).await?;
    assert_eq!(uuid.len(), 32);
    let read = sim
        .apple(
            Method::GET,
            &format!("/profile?profile_uuid={uuid}"),
            &session,
            None,
        )
        .await?
        .json()?;
    let mut expected = profile();
    expected["profile_uuid"] = json!(uuid);
    assert_eq!(read, expected);
    sim.apple(Method::GET, "/profile?profile_uuid=NOPE", &session, None)
        .await?
        .assert_error(404, "NOT_FOUND");
    sim.apple(Method::GET, "/profile", &session, None)
        .await?
        .assert_error(400, "PROFILE_UUID_REQUIRED");
    Ok(())
}

#[tokio::test]
async fn define_with_devices_assigns_them() -> Result<()> {
    let sim = Sim::start().await?;
    let (_, session, serials) = setup(&sim, 2).await?;
    let mut body = profile();
    body["devices"] = json!([serials[0], "NOTMINE00000"]);
    let reply = sim
        .apple(Method::POST, "/profile", &session, Some(body))
        .await?
        .json()?;
    assert_eq!(reply["devices"][&serials[0]], "SUCCESS");
    assert_eq!(reply["devices"]["NOTMINE00000"], "NOT_ACCESSIBLE");
    Ok(())
}

#[tokio::test]
async fn assignment_updates_devices_and_emits_modified() -> Result<()> {
    let sim = Sim::start().await?;
    let (server, session, serials) = setup(&sim, 3).await?;
    let other = sim.create_server("other", 1).await?;
    let other_serial = serials_of(&sim, &other.uuid).await?.remove(0);
    let (_, cursor, _) = sim.fetch_all(&session, 1000).await?;
    let uuid = define(&sim, &session, profile()).await?;

    let reply = sim
        .apple(
            Method::PUT,
            "/profile/devices",
            &session,
            Some(json!({"profile_uuid": uuid, "devices": [serials[0], serials[1], other_serial]})),
        )
        .await?
        .json()?;
    assert_eq!(reply["profile_uuid"], json!(uuid));
    assert_eq!(reply["devices"][&serials[0]], "SUCCESS");
    assert_eq!(reply["devices"][&serials[1]], "SUCCESS");
    assert_eq!(reply["devices"][&other_serial], "NOT_ACCESSIBLE");
    assert!(reply.get("retry_after_seconds").is_none());

    let page = sim.sync(&session, &cursor).await?;
    let records = page["devices"].as_array().context("devices")?;
    assert_eq!(records.len(), 2);
    for record in records {
        assert_eq!(record["op_type"], "modified");
        assert_eq!(record["profile_uuid"], json!(uuid));
        assert_eq!(record["profile_status"], "assigned");
        assert!(record["profile_assign_time"].is_string());
    }
    let device = sim
        .control(
            Method::GET,
            &format!("/_sim/servers/{}/devices/{}", server.uuid, serials[2]),
            None,
        )
        .await?;
    assert_eq!(device["profile_status"], "empty");

    // Removing: status removed, the UUID stays, another modified event.
    let cursor = page["cursor"].as_str().context("cursor")?.to_owned();
    let removed = sim
        .apple(
            Method::DELETE,
            "/profile/devices",
            &session,
            Some(json!({"devices": [serials[0]]})),
        )
        .await?
        .json()?;
    assert_eq!(removed["devices"][&serials[0]], "SUCCESS");
    let page = sim.sync(&session, &cursor).await?;
    assert_eq!(page["devices"][0]["profile_status"], "removed");
    assert_eq!(page["devices"][0]["profile_uuid"], json!(uuid));
    Ok(())
}

async fn serials_of(sim: &Sim, uuid: &str) -> Result<Vec<String>> {
    let listed = sim
        .control(Method::GET, &format!("/_sim/servers/{uuid}/devices"), None)
        .await?;
    Ok(serials(listed["devices"].as_array().context("devices")?))
}

#[tokio::test]
async fn assignment_request_errors() -> Result<()> {
    let sim = Sim::start().await?;
    let (_, session, serials) = setup(&sim, 1).await?;
    let uuid = define(&sim, &session, profile()).await?;
    let too_many: Vec<String> = (0..1001).map(|i| format!("SER{i:09}")).collect();
    sim.apple(
        Method::POST,
        "/profile/devices",
        &session,
        Some(json!({"profile_uuid": uuid, "devices": too_many})),
    )
    .await?
    .assert_error(400, "");
    let thousand: Vec<String> = (0..1000).map(|i| format!("SER{i:09}")).collect();
    let reply = sim
        .apple(
            Method::POST,
            "/profile/devices",
            &session,
            Some(json!({"profile_uuid": uuid, "devices": thousand})),
        )
        .await?;
    assert_eq!(reply.status, StatusCode::OK);
    sim.apple(
        Method::POST,
        "/profile/devices",
        &session,
        Some(json!({"profile_uuid": "0000", "devices": serials})),
    )
    .await?
    .assert_error(404, "");
    sim.apple(
        Method::POST,
        "/profile/devices",
        &session,
        Some(json!({"devices": serials})),
    )
    .await?
    .assert_error(400, "PROFILE_UUID_REQUIRED");
    sim.apple(
        Method::POST,
        "/profile/devices",
        &session,
        Some(json!({"profile_uuid": uuid, "devices": []})),
    )
    .await?
    .assert_error(400, "DEVICE_ID_REQUIRED");
    Ok(())
}

#[tokio::test]
async fn forced_outcomes_failed_throttled_not_accessible() -> Result<()> {
    let sim = Sim::start().await?;
    let (server, session, serials) = setup(&sim, 4).await?;
    let uuid = define(&sim, &session, profile()).await?;
    let outcome = |serial: &str| {
        format!(
            "/_sim/servers/{}/devices/{serial}/assign-outcome",
            server.uuid
        )
    };
    sim.control(
        Method::POST,
        &outcome(&serials[0]),
        Some(json!({"status": "FAILED"})),
    )
    .await?;
    sim.control(
        Method::POST,
        &outcome(&serials[1]),
        Some(json!({"status": "THROTTLED", "retry_after_seconds": 120, "times": 2})),
    )
    .await?;
    sim.control(
        Method::POST,
        &outcome(&serials[2]),
        Some(json!({"status": "NOT_ACCESSIBLE"})),
    )
    .await?;

    let assign = |version: &'static str| {
        let body = json!({"profile_uuid": uuid, "devices": serials});
        let session = session.clone();
        let sim = &sim;
        async move {
            sim.apple_v(
                Method::POST,
                "/profile/devices",
                &session,
                Some(body),
                version,
            )
            .await?
            .json()
        }
    };
    let first = assign("10").await?;
    assert_eq!(first["devices"][&serials[0]], "FAILED");
    assert_eq!(first["devices"][&serials[1]], "THROTTLED");
    assert_eq!(first["devices"][&serials[2]], "NOT_ACCESSIBLE");
    assert_eq!(first["devices"][&serials[3]], "SUCCESS");
    assert_eq!(first["retry_after_seconds"], 120);

    // Second time: v8 does not know THROTTLED and gets FAILED, without retry_after_seconds.
    let second = assign("8").await?;
    assert_eq!(second["devices"][&serials[1]], "FAILED");
    assert!(second.get("retry_after_seconds").is_none());
    assert_eq!(
        second["devices"][&serials[0]], "SUCCESS",
        "FAILED was forced once"
    );

    let third = assign("10").await?;
    assert!(
        third["devices"]
            .as_object()
            .is_some_and(|d| d.values().all(|s| s == "SUCCESS"))
    );
    assert!(third.get("retry_after_seconds").is_none());
    Ok(())
}

#[tokio::test]
async fn disown_removes_devices_without_an_event() -> Result<()> {
    let sim = Sim::start().await?;
    let (_, session, serials) = setup(&sim, 2).await?;
    let (_, cursor, _) = sim.fetch_all(&session, 1000).await?;
    let reply = sim
        .apple(
            Method::POST,
            "/devices/disown",
            &session,
            Some(json!({"devices": [serials[0], "UNKNOWN00000"]})),
        )
        .await?
        .json()?;
    assert_eq!(reply["devices"][&serials[0]], "SUCCESS");
    assert_eq!(reply["devices"]["UNKNOWN00000"], "NOT_ACCESSIBLE");
    assert_eq!(sim.sync(&session, &cursor).await?["devices"], json!([]));
    let (after, _, _) = sim.fetch_all(&session, 1000).await?;
    assert_eq!(common::serials(&after), vec![serials[1].clone()]);
    Ok(())
}
