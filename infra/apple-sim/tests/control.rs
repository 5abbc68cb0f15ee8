//! Fault injection, pacing, statistics and the clock of the control API.

mod common;

use std::time::{Duration, Instant};

use anyhow::Result;
use common::Sim;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn faults_answer_the_next_requests_then_stop() -> Result<()> {
    let sim = Sim::start().await?;
    let server = sim.create_server("acme", 3).await?;
    let session = sim.session(&server).await?;
    sim.control(
        Method::POST,
        "/_sim/faults",
        Some(json!({"route": "/server/devices", "status": 503, "body": "SERVICE_UNAVAILABLE", "times": 2, "retry_after": 7})),
    )
    .await?;
    for _ in 0..2 {
        let reply = sim
            .apple(Method::POST, "/server/devices", &session, Some(json!({})))
            .await?;
        reply.assert_error(503, "SERVICE_UNAVAILABLE");
        assert_eq!(
            reply
                .headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("7")
        );
    }
    // Other routes were never affected, and the third fetch succeeds.
    assert_eq!(
        sim.apple(Method::GET, "/account", &session, None)
            .await?
            .status,
        StatusCode::OK
    );
    assert_eq!(
        sim.apple(Method::POST, "/server/devices", &session, Some(json!({})))
            .await?
            .status,
        StatusCode::OK
    );
    Ok(())
}

#[tokio::test]
async fn wildcard_and_server_scoped_faults() -> Result<()> {
    let sim = Sim::start().await?;
    let acme = sim.create_server("acme", 0).await?;
    let other = sim.create_server("other", 0).await?;
    let acme_session = sim.session(&acme).await?;
    let other_session = sim.session(&other).await?;
    sim.control(
        Method::POST,
        "/_sim/faults",
        Some(json!({"route": "*", "status": 403, "body": "T_C_NOT_SIGNED", "times": 5, "server_uuid": acme.uuid})),
    )
    .await?;
    assert_eq!(
        sim.apple(Method::GET, "/account", &other_session, None)
            .await?
            .status,
        StatusCode::OK
    );
    sim.apple(Method::GET, "/account", &acme_session, None)
        .await?
        .assert_error(403, "T_C_NOT_SIGNED");
    // /session of that server (found by consumer key) is faulted too.
    sim.session_with(Some(&sim.sign(&acme.token, "f-1", common::now_secs())))
        .await?
        .assert_error(403, "T_C_NOT_SIGNED");
    let listed = sim.control(Method::GET, "/_sim/faults", None).await?;
    assert_eq!(listed["faults"][0]["remaining"], 3);
    sim.control(Method::DELETE, "/_sim/faults", None).await?;
    assert_eq!(
        sim.apple(Method::GET, "/account", &acme_session, None)
            .await?
            .status,
        StatusCode::OK
    );
    Ok(())
}

#[tokio::test]
async fn slow_faults_delay_successful_answers() -> Result<()> {
    let sim = Sim::start().await?;
    let server = sim.create_server("acme", 0).await?;
    let session = sim.session(&server).await?;
    sim.control(
        Method::POST,
        "/_sim/faults",
        Some(json!({"route": "/account", "delay_ms": 300})),
    )
    .await?;
    let started = Instant::now();
    let reply = sim.apple(Method::GET, "/account", &session, None).await?;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
    Ok(())
}

#[tokio::test]
async fn pacing_delays_pages_by_their_size() -> Result<()> {
    let sim = Sim::start().await?;
    let server = sim.create_server("acme", 20).await?;
    let session = sim.session(&server).await?;
    // 20 devices at 2,400/min = 0.5 s.
    sim.control(
        Method::POST,
        "/_sim/rate",
        Some(json!({"devices_per_minute": 2400})),
    )
    .await?;
    let started = Instant::now();
    sim.fetch_all(&session, 1000).await?;
    assert!(started.elapsed() >= Duration::from_millis(500));
    sim.control(
        Method::POST,
        "/_sim/rate",
        Some(json!({"devices_per_minute": 0})),
    )
    .await?;
    assert_eq!(
        sim.control(Method::GET, "/_sim/rate", None).await?["devices_per_minute"],
        0
    );
    Ok(())
}

#[tokio::test]
async fn stats_count_requests_per_route() -> Result<()> {
    let sim = Sim::start().await?;
    let server = sim.create_server("acme", 0).await?;
    let session = sim.session(&server).await?;
    for _ in 0..3 {
        sim.apple(Method::GET, "/account", &session, None).await?;
    }
    sim.apple(Method::PUT, "/profile/devices", &session, Some(json!({})))
        .await?;
    let stats = sim.control(Method::GET, "/_sim/stats", None).await?;
    assert_eq!(stats["requests"]["/account"], 3);
    assert_eq!(stats["requests"]["/session"], 1);
    assert_eq!(stats["requests"]["/profile/devices"], 1);
    assert_eq!(stats["by_method"]["PUT /profile/devices"], 1);
    assert_eq!(stats["total"], 5);
    sim.control(Method::DELETE, "/_sim/stats", None).await?;
    assert_eq!(
        sim.control(Method::GET, "/_sim/stats", None).await?["total"],
        0
    );
    Ok(())
}

#[tokio::test]
async fn clock_and_health() -> Result<()> {
    let sim = Sim::start().await?;
    sim.control(Method::GET, "/_sim/health", None).await?;
    sim.advance_clock(86_400).await?;
    let clock = sim.control(Method::GET, "/_sim/clock", None).await?;
    assert_eq!(clock["offset_seconds"], 86_400);
    let now = chrono::DateTime::parse_from_rfc3339(clock["now"].as_str().unwrap_or_default())?;
    let ahead = now.signed_duration_since(chrono::Utc::now()).num_seconds();
    assert!((86_390..=86_410).contains(&ahead), "{ahead}");
    Ok(())
}

#[tokio::test]
async fn control_errors_are_reported() -> Result<()> {
    let sim = Sim::start().await?;
    let (status, body) = sim
        .control_raw(
            Method::POST,
            "/_sim/servers",
            Some(json!({"name": "x", "public_key_pem": "not a cert"})),
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].is_string());
    let (status, _) = sim
        .control_raw(
            Method::POST,
            "/_sim/servers/NOPE/devices",
            Some(json!({"count": 1})),
        )
        .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = sim
        .control_raw(
            Method::POST,
            "/_sim/faults",
            Some(json!({"route": "no-slash", "status": 500})),
        )
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    Ok(())
}
