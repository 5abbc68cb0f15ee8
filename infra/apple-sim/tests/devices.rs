//! Fetch, sync and cursors, driven by device changes made through `/_sim`.

mod common;

use std::collections::HashSet;

use anyhow::{Context, Result};
use common::{Sim, serials};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The device record of docs/apple.md §4.3 (micromdm's `device_response.json`).
fn sample_device() -> Value {
    json!({"serial_number":"C02T0HL0GGC0","model":"MacBook Pro",
      "description":"MBP 13.3 SPACE GRAY/2.0GHZ/8GB/256GB-USA","color":"SPACE GRAY",
      "os":"OSX","device_family":"Mac","profile_status":"assigned",
      "profile_uuid":"C1F123098EB5074580041E69883004C3","profile_assign_time":"2018-09-08T16:49:09Z",
      "device_assigned_by":"apple-dep@acme.co","device_assigned_date":"2017-10-16T01:55:30Z"})
}

fn events(page: &Value) -> Vec<(String, String)> {
    page["devices"]
        .as_array()
        .map(|devices| {
            devices
                .iter()
                .map(|d| {
                    (
                        d["serial_number"].as_str().unwrap_or_default().to_owned(),
                        d["op_type"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn full_fetch_pages_every_device_once_then_exhausts() -> Result<()> {
    let sim = Sim::start().await?;
    let server = sim.create_server("acme", 2500).await?;
    let session = sim.session(&server).await?;
    let (devices, cursor, pages) = sim.fetch_all(&session, 1000).await?;
    assert_eq!(pages, 3);
    let fetched = serials(&devices);
    let unique: HashSet<&String> = fetched.iter().collect();
    assert_eq!(fetched.len(), 2500);
    assert_eq!(unique.len(), 2500);
    let listed = sim
        .control(
            Method::GET,
            &format!("/_sim/servers/{}/devices", server.uuid),
            None,
        )
        .await?;
    let expected: HashSet<String> = serials(listed["devices"].as_array().context("devices")?)
        .into_iter()
        .collect();
    assert_eq!(
        unique.into_iter().cloned().collect::<HashSet<_>>(),
        expected
    );
    // Fetch records carry no op_type, and the v2+ fields are there at v10.
    assert!(devices.iter().all(|d| d.get("op_type").is_none()
        && d["device_family"].is_string()
        && d["device_assigned_by"] == "acme@example.com"));
    assert!(cursor.len() <= 1000);

    sim.apple(
        Method::POST,
        "/server/devices",
        &session,
        Some(json!({"cursor": cursor})),
    )
    .await?
    .assert_error(400, "EXHAUSTED_CURSOR");
    // The exhausted cursor is the sync starting point: nothing happened since.
    let page = sim.sync(&session, &cursor).await?;
    assert_eq!(page["devices"], json!([]));
    assert_eq!(page["more_to_follow"], json!(false));
    assert!(page["cursor"].as_str().is_some_and(|c| !c.is_empty()));
    Ok(())
}

#[tokio::test]
async fn fetch_is_a_snapshot_of_the_first_request() -> Result<()> {
    let sim = Sim::start().await?;
    let server = sim.create_server("acme", 30).await?;
    let session = sim.session(&server).await?;
    let first = sim
        .apple(
            Method::POST,
            "/server/devices",
            &session,
            Some(json!({"limit": 10})),
        )
        .await?
        .json()?;
    let cursor = first["cursor"].as_str().context("cursor")?.to_owned();
    let devices_path = format!("/_sim/servers/{}/devices", server.uuid);
    sim.control(Method::POST, &devices_path, Some(json!({"count": 5})))
        .await?;
    let mut cursor = cursor;
    let mut total = first["devices"].as_array().map_or(0, Vec::len);
    loop {
        let page = sim
            .apple(
                Method::POST,
                "/server/devices",
                &session,
                Some(json!({"cursor": cursor, "limit": 10})),
            )
            .await?
            .json()?;
        total += page["devices"].as_array().map_or(0, Vec::len);
        cursor = page["cursor"].as_str().context("cursor")?.to_owned();
        if page["more_to_follow"] != json!(true) {
            break;
        }
    }
    assert_eq!(total, 30, "devices added mid-fetch are not in the snapshot");
    let page = sim.sync(&session, &cursor).await?;
    let added = events(&page);
    assert_eq!(added.len(), 5);
    assert!(added.iter().all(|(_, op)| op == "added"));
    Ok(())
}

#[tokio::test]
async fn sync_reports_changes_in_order_and_release_is_silent() -> Result<()> {
    let sim = Sim::start().await?;
    let acme = sim.create_server("acme", 3).await?;
    let other = sim.create_server("other", 0).await?;
    let session = sim.session(&acme).await?;
    let (devices, cursor, _) = sim.fetch_all(&session, 1000).await?;
    let known = serials(&devices);
    let base = format!("/_sim/servers/{}/devices", acme.uuid);

    let added = sim
        .control(
            Method::POST,
            &base,
            Some(json!({"count": 2, "family": "iPad"})),
        )
        .await?;
    let new_serials: Vec<String> = serde_json::from_value(added["serials"].clone())?;
    sim.control(
        Method::PATCH,
        &format!("{base}/{}", known[0]),
        Some(json!({"asset_tag": "TAG-1", "color": "PINK"})),
    )
    .await?;
    sim.control(
        Method::POST,
        &format!("{base}/{}/reassign", known[1]),
        Some(json!({"to_server_uuid": other.uuid})),
    )
    .await?;
    sim.control(Method::POST, &format!("{base}/{}/release", known[2]), None)
        .await?;

    let page = sim.sync(&session, &cursor).await?;
    assert_eq!(
        events(&page),
        vec![
            (new_serials[0].clone(), "added".to_owned()),
            (new_serials[1].clone(), "added".to_owned()),
            (known[0].clone(), "modified".to_owned()),
            (known[1].clone(), "deleted".to_owned()),
        ]
    );
    let records = page["devices"].as_array().context("devices")?;
    assert_eq!(records[0]["device_family"], "iPad");
    assert_eq!(records[0]["op_date"], records[0]["device_assigned_date"]);
    assert_eq!(records[2]["asset_tag"], "TAG-1");
    assert_eq!(records[2]["color"], "PINK");

    // Nothing more after that page; the new cursor carries on from there.
    let next = page["cursor"].as_str().context("cursor")?;
    assert_eq!(sim.sync(&session, next).await?["devices"], json!([]));

    // The moved device shows up on the other server as added.
    let other_session = sim.session(&other).await?;
    let (other_devices, _, _) = sim.fetch_all(&other_session, 100).await?;
    assert_eq!(serials(&other_devices), vec![known[1].clone()]);
    assert_eq!(other_devices[0]["device_assigned_by"], "other@example.com");

    // A new full fetch no longer has the released nor the moved device.
    let (after, _, _) = sim.fetch_all(&session, 1000).await?;
    let after: HashSet<String> = serials(&after).into_iter().collect();
    assert!(!after.contains(&known[1]) && !after.contains(&known[2]));
    assert!(after.contains(&known[0]) && after.contains(&new_serials[0]));
    assert_eq!(after.len(), 3);
    Ok(())
}

#[tokio::test]
async fn sync_pages_follow_the_limit() -> Result<()> {
    let sim = Sim::start().await?;
    let server = sim.create_server("acme", 0).await?;
    let session = sim.session(&server).await?;
    let (_, cursor, _) = sim.fetch_all(&session, 1000).await?;
    sim.control(
        Method::POST,
        &format!("/_sim/servers/{}/devices", server.uuid),
        Some(json!({"count": 25})),
    )
    .await?;
    let mut cursor = cursor;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = sim
            .apple(
                Method::POST,
                "/devices/sync",
                &session,
                Some(json!({"cursor": cursor, "limit": 10})),
            )
            .await?
            .json()?;
        pages += 1;
        seen.extend(events(&page));
        cursor = page["cursor"].as_str().context("cursor")?.to_owned();
        if page["more_to_follow"] != json!(true) {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 25);
    Ok(())
}

#[tokio::test]
async fn duplicate_knob_repeats_events() -> Result<()> {
    let sim = Sim::start().await?;
    let server = sim.create_server("acme", 0).await?;
    let session = sim.session(&server).await?;
    let (_, cursor, _) = sim.fetch_all(&session, 1000).await?;
    sim.control(
        Method::POST,
        "/_sim/config",
        Some(json!({"duplicate_every": 2})),
    )
    .await?;
    sim.control(
        Method::POST,
        &format!("/_sim/servers/{}/devices", server.uuid),
        Some(json!({"count": 4})),
    )
    .await?;
    let page = sim.sync(&session, &cursor).await?;
    let records = page["devices"].as_array().context("devices")?;
    assert_eq!(records.len(), 6);
    assert_eq!(records[1], records[2], "every 2nd event twice");
    Ok(())
}

#[tokio::test]
async fn cursor_errors() -> Result<()> {
    let sim = Sim::start().await?;
    let acme = sim.create_server("acme", 5).await?;
    let other = sim.create_server("other", 5).await?;
    let session = sim.session(&acme).await?;
    let other_session = sim.session(&other).await?;
    let (_, cursor, _) = sim.fetch_all(&session, 1000).await?;
    let (_, other_cursor, _) = sim.fetch_all(&other_session, 1000).await?;

    sim.apple(Method::POST, "/devices/sync", &session, Some(json!({})))
        .await?
        .assert_error(400, "CURSOR_REQUIRED");
    sim.apple(
        Method::POST,
        "/devices/sync",
        &session,
        Some(json!({"cursor": ""})),
    )
    .await?
    .assert_error(400, "CURSOR_REQUIRED");
    for bad in [
        "garbage",
        "MDowOjE1MzY0Mjc2OTg5MTQ6MTUzNjQyNzY5ODkxNDp0cnVlOjE1MzY0Mjc2OTg5MTQ",
    ] {
        sim.apple(
            Method::POST,
            "/devices/sync",
            &session,
            Some(json!({"cursor": bad})),
        )
        .await?
        .assert_error(400, "INVALID_CURSOR");
        sim.apple(
            Method::POST,
            "/server/devices",
            &session,
            Some(json!({"cursor": bad})),
        )
        .await?
        .assert_error(400, "INVALID_CURSOR");
    }
    // Another server's cursor.
    sim.apple(
        Method::POST,
        "/devices/sync",
        &session,
        Some(json!({"cursor": other_cursor})),
    )
    .await?
    .assert_error(400, "INVALID_CURSOR");
    // A tampered cursor: flip one character.
    let mut tampered: Vec<char> = cursor.chars().collect();
    tampered[5] = if tampered[5] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    sim.apple(
        Method::POST,
        "/devices/sync",
        &session,
        Some(json!({"cursor": tampered})),
    )
    .await?
    .assert_error(400, "INVALID_CURSOR");
    Ok(())
}

#[tokio::test]
async fn cursors_expire_after_seven_days_of_simulator_time() -> Result<()> {
    let sim = Sim::start().await?;
    let server = sim.create_server("acme", 5).await?;
    let session = sim.session(&server).await?;
    let (_, cursor, _) = sim.fetch_all(&session, 1000).await?;

    sim.advance_clock(6 * 24 * 3600 + 23 * 3600).await?;
    let session = sim.session(&server).await?;
    let page = sim.sync(&session, &cursor).await?;
    let fresh = page["cursor"].as_str().context("cursor")?.to_owned();

    sim.advance_clock(3600).await?;
    let session = sim.session(&server).await?;
    sim.apple(
        Method::POST,
        "/devices/sync",
        &session,
        Some(json!({"cursor": cursor})),
    )
    .await?
    .assert_error(400, "EXPIRED_CURSOR");
    // The cursor returned by the last sync is an hour old and still good.
    sim.sync(&session, &fresh).await?;
    Ok(())
}

#[tokio::test]
async fn limits_default_and_clamp() -> Result<()> {
    let sim = Sim::start().await?;
    let server = sim.create_server("acme", 5200).await?;
    let session = sim.session(&server).await?;
    let count = |page: &Value| page["devices"].as_array().map_or(0, Vec::len);
    let default = sim
        .apple(Method::POST, "/server/devices", &session, Some(json!({})))
        .await?
        .json()?;
    assert_eq!(count(&default), 1000);
    let clamped = sim
        .apple(
            Method::POST,
            "/server/devices",
            &session,
            Some(json!({"limit": 100000})),
        )
        .await?
        .json()?;
    assert_eq!(count(&clamped), 5000);
    assert_eq!(clamped["more_to_follow"], json!(true));
    Ok(())
}

#[tokio::test]
async fn sample_records_are_replayed_field_for_field() -> Result<()> {
    let sim = Sim::start().await?;
    let server = sim.create_server("acme", 0).await?;
    let session = sim.session(&server).await?;
    sim.control(
        Method::POST,
        &format!("/_sim/servers/{}/devices", server.uuid),
        Some(json!({"devices": [sample_device()]})),
    )
    .await?;
    let page = sim
        .apple(
            Method::POST,
            "/server/devices",
            &session,
            Some(json!({"limit": 1000})),
        )
        .await?
        .json()?;
    assert_eq!(page["devices"], json!([sample_device()]));
    assert_eq!(page["more_to_follow"], json!(false));
    assert!(
        page["fetched_until"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    // Device details answer the same record plus response_status (§4.5).
    let details = sim
        .apple(
            Method::POST,
            "/devices",
            &session,
            Some(json!({"devices": ["C02T0HL0GGC0", "NOPE"]})),
        )
        .await?
        .json()?;
    let mut expected = sample_device();
    expected["response_status"] = json!("SUCCESS");
    assert_eq!(details["devices"]["C02T0HL0GGC0"], expected);
    assert_eq!(details["devices"]["NOPE"]["response_status"], "NOT_FOUND");

    // Protocol v1 hides os and device_family.
    let v1 = sim
        .apple_v(
            Method::POST,
            "/server/devices",
            &session,
            Some(json!({})),
            "1",
        )
        .await?
        .json()?;
    assert!(v1["devices"][0].get("os").is_none());
    assert_eq!(v1["devices"][0]["model"], "MacBook Pro");

    // Loading the same serial again is refused.
    let (status, _) = sim
        .control_raw(
            Method::POST,
            &format!("/_sim/servers/{}/devices", server.uuid),
            Some(json!({"devices": [sample_device()]})),
        )
        .await?;
    assert_eq!(status, StatusCode::CONFLICT);
    Ok(())
}

#[tokio::test]
async fn same_server_reassignment_drops_the_profile() -> Result<()> {
    let sim = Sim::start().await?;
    let server = sim.create_server("acme", 0).await?;
    let session = sim.session(&server).await?;
    let base = format!("/_sim/servers/{}/devices", server.uuid);
    sim.control(
        Method::POST,
        &base,
        Some(json!({"devices": [sample_device()]})),
    )
    .await?;
    let (_, cursor, _) = sim.fetch_all(&session, 1000).await?;
    sim.control(Method::POST, &format!("{base}/C02T0HL0GGC0/reassign"), None)
        .await?;
    let page = sim.sync(&session, &cursor).await?;
    let record = &page["devices"][0];
    assert_eq!(record["op_type"], "modified");
    assert_eq!(record["profile_status"], "removed");
    assert_eq!(record["profile_uuid"], "C1F123098EB5074580041E69883004C3");
    Ok(())
}
