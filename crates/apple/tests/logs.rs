//! No credential or session token reaches the logs, `Debug` output or error messages, even
//! on the paths that handle them (re-auth, rotation, throttling, refusals).
//!
//! Its own test binary with a single test: the subscriber is thread-local, and tracing
//! caches each callsite's interest process-wide, so a parallel test on another thread could
//! hide events from it.

#[allow(dead_code)] // shared with the simulator tests, which use the rest
mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use adesync_apple::{AppleError, Credentials};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use support::{TOKEN_KEY, start};

/// Everything the subscriber writes, kept for inspection.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut bytes) = self.0.lock() {
            bytes.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn secrets_of(credentials: &Credentials) -> Vec<String> {
    [
        &credentials.consumer_key,
        &credentials.consumer_secret,
        &credentials.access_token,
        &credentials.access_secret,
    ]
    .into_iter()
    .map(|secret| secret.expose_secret().to_owned())
    .collect()
}

fn remember(seen: &mut Vec<String>, session: Option<SecretString>) {
    if let Some(session) = session {
        seen.push(session.expose_secret().to_owned());
    }
}

// A current-thread runtime keeps every task on this thread, where the subscriber is set.
#[tokio::test(flavor = "current_thread")]
async fn secrets_stay_out_of_logs_and_errors() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("adesync_apple=trace"))
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let sim = start(3).await;
    sim.configure(json!({ "rotate_session_every": 2, "rotation_grace_requests": 0 }))
        .await;
    let mut secrets = secrets_of(&sim.credentials);
    let cached = "cached-session-0123456789abcdef";
    secrets.push(cached.to_owned());
    let client = sim.client_with(sim.config());
    let session = client.session(TOKEN_KEY, sim.credentials.clone(), Some(cached.into()));
    let mut errors: Vec<AppleError> = Vec::new();

    // Stale cached session → re-auth; then rotation, throttling, server errors.
    session.account().await.expect("re-authenticates");
    remember(&mut secrets, session.current_auth_session());
    sim.fault(json!({ "route": "/server/devices", "status": 429, "retry_after": 0 }))
        .await;
    sim.fault(json!({ "route": "/server/devices", "status": 503 }))
        .await;
    session
        .fetch_devices(None, Some(10))
        .await
        .expect("retried");
    remember(&mut secrets, session.current_auth_session());
    sim.fault(json!({ "route": "/account", "status": 401, "body": "UNAUTHORIZED" }))
        .await;
    session.account().await.expect("re-authenticates");
    remember(&mut secrets, session.current_auth_session());
    session.account().await.expect("rotates");
    remember(&mut secrets, session.current_auth_session());

    // Refusals: cursor, terms, a renewed token.
    errors.extend(session.sync_devices("bogus", Some(10)).await.err());
    let terms = format!("/_sim/servers/{}/terms", sim.server_uuid);
    sim.control(Method::POST, &terms, json!({ "signed": false }))
        .await;
    errors.extend(session.account().await.err());
    sim.control(Method::POST, &terms, json!({ "signed": true }))
        .await;
    let renewal = format!("/_sim/servers/{}/token", sim.server_uuid);
    sim.control(Method::POST, &renewal, json!({})).await;
    errors.extend(session.account().await.err());
    remember(&mut secrets, session.current_auth_session());
    assert_eq!(errors.len(), 3, "{errors:?}");

    let logs = captured.text();
    // The capture works and covers the interesting paths, so its silence means something.
    for expected in [
        "/account",
        "/server/devices",
        "renewing it",
        "retrying Apple call",
        "rotated",
        "status=429",
    ] {
        assert!(logs.contains(expected), "{expected:?} not logged:\n{logs}");
    }
    assert!(
        secrets.len() >= 8,
        "sessions were observed: {}",
        secrets.len()
    );
    let debug_session = format!("{session:?}");
    let debug_credentials = format!("{:?}", sim.credentials);
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret was logged:\n{logs}"
        );
        assert!(!debug_session.contains(secret.as_str()));
        assert!(!debug_credentials.contains(secret.as_str()));
        for error in &errors {
            assert!(!error.to_string().contains(secret.as_str()), "{error}");
            assert!(!format!("{error:?}").contains(secret.as_str()), "{error:?}");
        }
    }
    assert!(
        !logs.contains("oauth_signature"),
        "the Authorization header was logged"
    );
}
