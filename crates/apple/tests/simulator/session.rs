//! Sessions: one re-authentication on a stale session, rotation, terms, renewed tokens.

use adesync_apple::AppleError;
use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::json;

use crate::support::{TOKEN_KEY, open_token, start, text};

#[tokio::test]
async fn unauthorized_mid_run_authenticates_again_once() {
    let sim = start(3).await;
    let session = sim.session();
    session.account().await.expect("first call authenticates");
    let first = session.current_auth_session().expect("a session is held");
    assert_eq!(sim.requests("/session").await, 1);

    sim.fault(json!({ "route": "/server/devices", "status": 401, "body": "UNAUTHORIZED" }))
        .await;
    let page = session
        .fetch_devices(None, Some(10))
        .await
        .expect("the call is replayed with a fresh session");
    assert_eq!(page.devices.len(), 3);
    assert_eq!(sim.requests("/session").await, 2, "exactly one re-auth");
    assert_eq!(sim.requests("/server/devices").await, 2, "one replay");
    let second = session.current_auth_session().expect("a session is held");
    assert_ne!(first.expose_secret(), second.expose_secret());

    // A 401 that survives the fresh session is not Apple's word that the token is dead
    // (that is a 401 to /session itself): it is retried, without another re-auth.
    sim.fault(json!({ "route": "/account", "status": 401, "body": "UNAUTHORIZED", "times": 2 }))
        .await;
    session
        .account()
        .await
        .expect("retried once the refusals pass");
    assert_eq!(
        sim.requests("/session").await,
        3,
        "still only one re-auth per call"
    );
    assert_eq!(
        sim.requests("/account").await,
        4,
        "two refused, one replayed"
    );

    // One that persists fails the call as a refusal, not as a dead token.
    sim.fault(json!({ "route": "/account", "status": 401, "body": "", "times": 1_000 }))
        .await;
    let error = session.account().await.unwrap_err();
    assert!(
        matches!(error, AppleError::Refused { status: 401 }),
        "{error:?}"
    );
    assert!(!error.is_auth());
}

#[tokio::test]
async fn forbidden_that_clears_after_a_new_session_is_not_an_error() {
    // depsim answers a stale session with 403 FORBIDDEN after a restart; nanodep re-auths.
    let sim = start(0).await;
    let session = sim.session();
    session.account().await.expect("first call authenticates");
    sim.fault(json!({ "route": "/account", "status": 403, "body": "\"FORBIDDEN\"" }))
        .await;
    session.account().await.expect("a fresh session clears it");
    assert_eq!(sim.requests("/session").await, 2);
}

#[tokio::test]
async fn a_shared_session_is_reused_and_a_stale_one_replaced() {
    let sim = start(0).await;
    let first = sim.session();
    first.account().await.expect("authenticates");
    let shared = first.current_auth_session();

    // Another worker picks up the shared session: no new /session call.
    let client = sim.client_with(sim.config());
    let second = client.session(TOKEN_KEY, sim.credentials.clone(), shared);
    second.account().await.expect("the shared session works");
    assert_eq!(sim.requests("/session").await, 1);

    let stale = client.session(
        TOKEN_KEY,
        sim.credentials.clone(),
        Some("00stale00session00".into()),
    );
    stale.account().await.expect("a stale session is replaced");
    assert_eq!(sim.requests("/session").await, 2);
    let current = stale.current_auth_session().expect("a session is held");
    assert_ne!(current.expose_secret(), "00stale00session00");
}

#[tokio::test]
async fn rotated_sessions_are_followed() {
    let sim = start(0).await;
    // Every second use rotates, and the old session dies at once.
    sim.configure(json!({ "rotate_session_every": 2, "rotation_grace_requests": 0 }))
        .await;
    let session = sim.session();
    session.account().await.expect("authenticates");
    let before = session.current_auth_session().expect("a session is held");
    session.account().await.expect("second use rotates");
    let after = session.current_auth_session().expect("a session is held");
    assert_ne!(
        before.expose_secret(),
        after.expose_secret(),
        "header replaced"
    );
    for _ in 0..6 {
        session.account().await.expect("the rotated session works");
    }
    assert_eq!(
        sim.requests("/session").await,
        1,
        "following rotation needs no re-authentication"
    );
}

#[tokio::test]
async fn unsigned_terms_are_reported_until_accepted() {
    let sim = start(0).await;
    let established = sim.session();
    established.account().await.expect("authenticates");

    let terms = format!("/_sim/servers/{}/terms", sim.server_uuid);
    sim.control(Method::POST, &terms, json!({ "signed": false }))
        .await;
    let error = established.account().await.unwrap_err();
    assert!(matches!(error, AppleError::TermsNotSigned), "{error:?}");
    assert!(error.is_auth() && !error.is_retryable());
    let error = sim.session().account().await.unwrap_err();
    assert!(
        matches!(error, AppleError::TermsNotSigned),
        "at /session too: {error:?}"
    );
    assert!(error.to_string().contains("accept"), "{error}");

    sim.control(Method::POST, &terms, json!({ "signed": true }))
        .await;
    established
        .account()
        .await
        .expect("works again once accepted");
}

#[tokio::test]
async fn a_renewed_token_invalidates_the_old_one() {
    let sim = start(0).await;
    let old = sim.session();
    old.account().await.expect("authenticates");

    let renewal = format!("/_sim/servers/{}/token", sim.server_uuid);
    let renewed = sim.control(Method::POST, &renewal, json!({})).await;
    let sessions_before = sim.requests("/session").await;

    // The old session answers 403 FORBIDDEN; the one re-auth with old credentials fails.
    let error = old.account().await.unwrap_err();
    assert!(matches!(error, AppleError::TokenInvalid), "{error:?}");
    assert!(error.is_auth());
    assert!(error.to_string().contains("renew"), "{error}");
    assert_eq!(sim.requests("/session").await, sessions_before + 1);

    let credentials = open_token(&text(&renewed, "token_file"));
    let client = sim.client_with(sim.config());
    let new = client.session(TOKEN_KEY, credentials, None);
    let account = new.account().await.expect("the renewed token works");
    assert_eq!(account.server_uuid, sim.server_uuid);
}
