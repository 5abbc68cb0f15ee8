//! The simulator clock's speed: validation, what `/_sim/clock` reports, and that simulator time,
//! pacing, fault delays and session expiry all follow it.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use apple_sim::SimConfig;
use chrono::{DateTime, Utc};
use common::Sim;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn clock_now(clock: &Value) -> Result<DateTime<Utc>> {
    let now = clock["now"].as_str().context("now")?;
    Ok(DateTime::parse_from_rfc3339(now)?.with_timezone(&Utc))
}

/// Reads `GET /_sim/clock`, with the real instants just before and just after the request.
async fn read_clock(sim: &Sim) -> Result<(Instant, Value, Instant)> {
    let before = Instant::now();
    let clock = sim.control(Method::GET, "/_sim/clock", None).await?;
    Ok((before, clock, Instant::now()))
}

/// Asserts that the simulator moved from `first` to `second` by `speed` × the real time between
/// the two readings, give or take the whole-second rounding of `now`.
fn assert_ran_at(
    speed: f64,
    first: &(Instant, Value, Instant),
    second: &(Instant, Value, Instant),
) -> Result<()> {
    let simulated = (clock_now(&second.1)? - clock_now(&first.1)?).num_milliseconds() as f64;
    let shortest = second.0.duration_since(first.2).as_secs_f64() * 1000.0 * speed - 1000.0;
    let longest = second.2.duration_since(first.0).as_secs_f64() * 1000.0 * speed + 1000.0;
    assert!(
        (shortest..=longest).contains(&simulated),
        "simulator moved {simulated} ms, expected {shortest}..={longest} at ×{speed}"
    );
    Ok(())
}

#[tokio::test]
async fn speed_outside_one_to_ten_thousand_is_refused() -> Result<()> {
    let sim = Sim::start().await?;
    for body in [
        json!({"speed": 0.5}),
        json!({"speed": 0}),
        json!({"speed": -2}),
        json!({"speed": 10_000.5}),
        json!({"speed": "fast"}),
        json!({"speed": 20, "advance_seconds": 3600, "pace": true}),
        json!({}),
        // A valid advance is not applied when the speed is refused.
        json!({"advance_seconds": 3600, "speed": 0.9}),
    ] {
        let (status, answer) = sim
            .control_raw(Method::POST, "/_sim/clock", Some(body.clone()))
            .await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(answer["error"].is_string(), "{body}: {answer}");
    }
    let (status, answer) = sim
        .control_raw(Method::POST, "/_sim/clock", Some(json!({"speed": 0.5})))
        .await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("speed"),
        "{answer}"
    );
    // JSON has no infinity; a number too large for f64 is refused as such.
    let response = sim
        .http
        .post(format!("{}/_sim/clock", sim.base))
        .header("Content-Type", "application/json")
        .body(r#"{"speed": 1e400}"#)
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.json::<Value>().await?["error"].is_string());

    let clock = sim.control(Method::GET, "/_sim/clock", None).await?;
    assert_eq!(clock["speed"], 1.0);
    assert_eq!(clock["offset_seconds"], 0);
    // Both ends of the range are accepted.
    for speed in [10_000.0, 1.0] {
        let answer = sim
            .control(Method::POST, "/_sim/clock", Some(json!({"speed": speed})))
            .await?;
        assert_eq!(answer["speed"], speed);
    }
    Ok(())
}

#[tokio::test]
async fn a_bad_start_speed_stops_the_simulator_from_starting() {
    for clock_speed in [0.5, f64::NAN, f64::INFINITY, 20_000.0] {
        let started = apple_sim::spawn(SimConfig {
            clock_speed,
            ..SimConfig::default()
        })
        .await;
        assert!(started.is_err(), "{clock_speed}");
    }
}

#[tokio::test]
async fn the_clock_reports_its_speed() -> Result<()> {
    let sim = Sim::start_with(SimConfig {
        clock_speed: 3.0,
        ..SimConfig::default()
    })
    .await?;
    let clock = sim.control(Method::GET, "/_sim/clock", None).await?;
    assert_eq!(clock["speed"], 3.0);
    let answer = sim
        .control(Method::POST, "/_sim/clock", Some(json!({"speed": 1.5})))
        .await?;
    assert_eq!(answer["speed"], 1.5);
    assert!(answer["now"].is_string() && answer["offset_seconds"].is_i64());
    let clock = sim.control(Method::GET, "/_sim/clock", None).await?;
    assert_eq!(clock["speed"], 1.5);
    Ok(())
}

#[tokio::test]
async fn simulator_time_runs_at_the_speed() -> Result<()> {
    let sim = Sim::start().await?;
    sim.control(Method::POST, "/_sim/clock", Some(json!({"speed": 1000})))
        .await?;
    let first = read_clock(&sim).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = read_clock(&sim).await?;
    // ~200 simulator seconds; at real speed this would be ~0.
    assert_ran_at(1000.0, &first, &second)?;
    let gained = second.1["offset_seconds"].as_i64().context("offset")?
        - first.1["offset_seconds"].as_i64().context("offset")?;
    assert!(gained >= 150, "offset grew by {gained} s only");
    Ok(())
}

#[tokio::test]
async fn advance_and_speed_combine_without_jumps() -> Result<()> {
    let sim = Sim::start().await?;
    let answer = sim
        .control(
            Method::POST,
            "/_sim/clock",
            Some(json!({"advance_seconds": 3600, "speed": 500})),
        )
        .await?;
    assert_eq!(answer["speed"], 500.0);
    let offset = answer["offset_seconds"].as_i64().context("offset")?;
    assert!((3600..3610).contains(&offset), "{offset}");
    let first = read_clock(&sim).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = read_clock(&sim).await?;
    assert_ran_at(500.0, &first, &second)?;

    // An advance keeps the speed and adds on top of the time already gained.
    let before = clock_now(&second.1)?;
    let advanced = sim
        .control(
            Method::POST,
            "/_sim/clock",
            Some(json!({"advance_seconds": 86_400})),
        )
        .await?;
    assert_eq!(advanced["speed"], 500.0);
    let moved = (clock_now(&advanced)? - before).num_seconds();
    assert!((86_400..86_500).contains(&moved), "{moved}");

    // Back to real speed: simulator time continues from where it was, then follows real time.
    let slowed = sim
        .control(Method::POST, "/_sim/clock", Some(json!({"speed": 1})))
        .await?;
    assert!(clock_now(&slowed)? >= clock_now(&advanced)?);
    let offset = slowed["offset_seconds"].as_i64().context("offset")?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let later = sim.control(Method::GET, "/_sim/clock", None).await?;
    assert_eq!(later["speed"], 1.0);
    assert!((later["offset_seconds"].as_i64().context("offset")? - offset).abs() <= 1);
    Ok(())
}

#[tokio::test]
async fn pacing_waits_in_simulator_time() -> Result<()> {
    let sim = Sim::start().await?;
    let server = sim.create_server("acme", 600).await?;
    let session = sim.session(&server).await?;
    // 600 devices at 6,000/min = 6 simulator seconds = 0.3 real seconds at ×20.
    sim.control(
        Method::POST,
        "/_sim/rate",
        Some(json!({"devices_per_minute": 6000})),
    )
    .await?;
    sim.control(Method::POST, "/_sim/clock", Some(json!({"speed": 20})))
        .await?;
    let started = Instant::now();
    let (devices, _, pages) = sim.fetch_all(&session, 1000).await?;
    let elapsed = started.elapsed();
    assert_eq!((devices.len(), pages), (600, 1));
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    Ok(())
}

#[tokio::test]
async fn fault_delays_are_simulator_milliseconds() -> Result<()> {
    let sim = Sim::start().await?;
    let server = sim.create_server("acme", 0).await?;
    let session = sim.session(&server).await?;
    // 4 simulator seconds = 0.2 real seconds at ×20.
    sim.control(
        Method::POST,
        "/_sim/faults",
        Some(json!({"route": "/account", "delay_ms": 4000})),
    )
    .await?;
    sim.control(Method::POST, "/_sim/clock", Some(json!({"speed": 20})))
        .await?;
    let started = Instant::now();
    let reply = sim.apple(Method::GET, "/account", &session, None).await?;
    let elapsed = started.elapsed();
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        elapsed >= Duration::from_millis(190) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    Ok(())
}

#[tokio::test]
async fn sessions_expire_in_simulator_time() -> Result<()> {
    let sim = Sim::start().await?;
    let server = sim.create_server("acme", 0).await?;
    let session = sim.session(&server).await?;
    // The 30-minute session lifetime is 0.36 real seconds at ×5,000; the OAuth timestamp of
    // a new session is still checked against the real clock, so signing in still works.
    sim.control(Method::POST, "/_sim/clock", Some(json!({"speed": 5000})))
        .await?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    sim.apple(Method::GET, "/account", &session, None)
        .await?
        .assert_error(401, "UNAUTHORIZED");
    let fresh = sim.session(&server).await?;
    assert_eq!(
        sim.apple(Method::GET, "/account", &fresh, None)
            .await?
            .status,
        StatusCode::OK
    );
    Ok(())
}
