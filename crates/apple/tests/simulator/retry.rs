//! Throttling, server errors and slowness: retried within the deadline, typed after it.

use std::time::{Duration, Instant, SystemTime};

use adesync_apple::{AppleConfig, AppleError, Profile, RetryPolicy};
use serde_json::json;

use crate::support::start;

#[tokio::test]
async fn throttling_waits_at_least_retry_after_seconds() {
    let sim = start(0).await;
    let session = sim.session();
    session.account().await.expect("authenticates");
    sim.fault(json!({
        "route": "/account", "status": 429, "body": "TOO_MANY_REQUESTS", "retry_after": 1
    }))
    .await;
    let started = Instant::now();
    session.account().await.expect("succeeds after waiting");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(1), "waited only {waited:?}");
    assert_eq!(sim.requests("/account").await, 3);
}

#[tokio::test]
async fn throttling_honours_a_retry_after_date() {
    let sim = start(0).await;
    let session = sim.session();
    session.account().await.expect("authenticates");
    // HTTP-dates have whole seconds: two seconds ahead is at least one second of wait.
    let when = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2));
    sim.fault(json!({ "route": "/account", "status": 429, "retry_after": when }))
        .await;
    let started = Instant::now();
    session.account().await.expect("succeeds after waiting");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(1), "waited only {waited:?}");
}

#[tokio::test]
async fn unavailable_with_retry_after_waits_too() {
    let sim = start(0).await;
    let session = sim.session();
    session.account().await.expect("authenticates");
    sim.fault(json!({ "route": "/account", "status": 503, "retry_after": 1 }))
        .await;
    let started = Instant::now();
    session.account().await.expect("succeeds after waiting");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(1), "waited only {waited:?}");
}

#[tokio::test]
async fn throttling_on_session_is_retried() {
    let sim = start(0).await;
    sim.fault(json!({
        "route": "/session", "status": 429, "body": "TOO_MANY_REQUESTS", "retry_after": 1
    }))
    .await;
    let started = Instant::now();
    sim.session()
        .account()
        .await
        .expect("authenticates after waiting");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(sim.requests("/session").await, 2);
}

#[tokio::test]
async fn throttling_past_the_deadline_returns_apple_retry_after() {
    let sim = start(0).await;
    let session = sim.session_with(AppleConfig {
        retry: RetryPolicy {
            deadline: Duration::from_secs(3),
            ..sim.config().retry
        },
        ..sim.config()
    });
    session.account().await.expect("authenticates");
    sim.fault(json!({ "route": "/account", "status": 429, "retry_after": 30 }))
        .await;
    let started = Instant::now();
    let error = session.account().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "gave up at once rather than sleeping past the deadline"
    );
    assert!(
        matches!(error, AppleError::Throttled { retry_after: Some(wait) } if wait == Duration::from_secs(30)),
        "{error:?}"
    );
    assert!(error.is_retryable());
}

#[tokio::test]
async fn a_burst_of_server_errors_is_ridden_out() {
    let sim = start(2).await;
    let session = sim.session();
    sim.fault(json!({ "route": "/server/devices", "status": 503, "times": 2 }))
        .await;
    sim.fault(json!({ "route": "/server/devices", "status": 500, "times": 1 }))
        .await;
    let page = session
        .fetch_devices(None, Some(10))
        .await
        .expect("the fourth attempt succeeds");
    assert_eq!(page.devices.len(), 2);
    assert_eq!(sim.requests("/server/devices").await, 4);
}

#[tokio::test]
async fn server_errors_past_the_deadline_are_returned() {
    let sim = start(0).await;
    let session = sim.session_with(AppleConfig {
        retry: RetryPolicy {
            deadline: Duration::from_millis(800),
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(200),
        },
        ..sim.config()
    });
    session.account().await.expect("authenticates");
    sim.fault(json!({ "route": "/account", "status": 502, "times": 1000 }))
        .await;
    let started = Instant::now();
    let error = session.account().await.unwrap_err();
    assert!(
        matches!(error, AppleError::Server { status: 502, .. }),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        sim.requests("/account").await >= 3,
        "retried before giving up"
    );
}

#[tokio::test]
async fn client_errors_are_never_retried() {
    let sim = start(0).await;
    let session = sim.session();
    let error = session
        .sync_devices("not-a-cursor", Some(10))
        .await
        .unwrap_err();
    assert!(matches!(error, AppleError::CursorInvalid), "{error:?}");
    assert_eq!(sim.requests("/devices/sync").await, 1);
}

#[tokio::test]
async fn defining_a_profile_is_not_repeated_after_an_unknown_outcome() {
    let sim = start(0).await;
    let session = sim.session();
    let profile = Profile {
        profile_name: "Once".to_owned(),
        url: Some("https://mdm.example.com/enroll".to_owned()),
        ..Profile::default()
    };
    // A 500 may have defined the profile: do not define a second one.
    sim.fault(json!({ "route": "/profile", "status": 500 }))
        .await;
    let error = session.define_profile(&profile).await.unwrap_err();
    assert!(
        matches!(error, AppleError::Server { status: 500, .. }),
        "{error:?}"
    );
    assert_eq!(sim.requests("/profile").await, 1);

    // A 503 or 429 was refused before any work: safe to send again.
    sim.fault(json!({ "route": "/profile", "status": 503 }))
        .await;
    session
        .define_profile(&profile)
        .await
        .expect("retried after a refusal");
    assert_eq!(sim.requests("/profile").await, 3);
}

#[tokio::test]
async fn a_slow_answer_times_out() {
    let sim = start(0).await;
    let session = sim.session_with(AppleConfig {
        request_timeout: Duration::from_millis(300),
        retry: RetryPolicy::none(),
        ..sim.config()
    });
    session.account().await.expect("authenticates");
    sim.fault(json!({ "route": "/account", "delay_ms": 2000 }))
        .await;
    let started = Instant::now();
    let error = session.account().await.unwrap_err();
    assert!(matches!(error, AppleError::Timeout), "{error:?}");
    assert!(error.is_retryable());
    assert!(started.elapsed() < Duration::from_millis(1500));
}

#[tokio::test]
async fn one_slow_answer_is_retried() {
    let sim = start(0).await;
    let session = sim.session_with(AppleConfig {
        request_timeout: Duration::from_millis(300),
        ..sim.config()
    });
    session.account().await.expect("authenticates");
    sim.fault(json!({ "route": "/account", "delay_ms": 2000 }))
        .await;
    session
        .account()
        .await
        .expect("the second attempt is quick");
    assert_eq!(sim.requests("/account").await, 3);
}
