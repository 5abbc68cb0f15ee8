//! `/session`, session tokens, token files and the gate in front of every Apple route.

mod common;

use anyhow::Result;
use apple_sim::{Behaviour, SimConfig};
use common::{Sim, now_secs};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

#[tokio::test]
async fn token_file_decrypts_with_the_uploaded_certificate_key() -> Result<()> {
    let sim = Sim::start().await?;
    let server = sim.create_server("acme", 0).await?;
    let token = &server.token;
    for (value, prefix) in [
        (&token.consumer_key, "CK_"),
        (&token.consumer_secret, "CS_"),
        (&token.access_token, "AT_"),
        (&token.access_secret, "AS_"),
    ] {
        let value = value.expose_secret();
        assert!(value.starts_with(prefix), "{prefix} value");
        assert_eq!(value.len(), 3 + 32);
        assert!(value[3..].chars().all(|c| c.is_ascii_hexdigit()));
    }
    let days = (token.access_token_expiry - chrono::Utc::now()).num_days();
    assert!((364..=365).contains(&days), "expiry in {days} days");
    assert_eq!(token.access_token_expiry.timestamp_subsec_nanos(), 0);
    Ok(())
}

#[tokio::test]
async fn signed_session_request_gets_a_session() -> Result<()> {
    let sim = Sim::start().await?;
    let server = sim.create_server("acme", 0).await?;
    let session = sim.session(&server).await?;
    assert!(session.len() >= 32);
    let account = sim.apple(Method::GET, "/account", &session, None).await?;
    assert_eq!(account.status, StatusCode::OK);
    assert_eq!(account.json()?["server_uuid"], json!(server.uuid));
    Ok(())
}

#[tokio::test]
async fn bad_secret_reused_nonce_and_stale_timestamp_are_refused() -> Result<()> {
    let sim = Sim::start().await?;
    let server = sim.create_server("acme", 0).await?;

    let mut wrong = server.token.clone();
    wrong.consumer_secret = SecretString::from("CS_wrong");
    let reply = sim
        .session_with(Some(&sim.sign(&wrong, "n-1", now_secs())))
        .await?;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    let mut wrong = server.token.clone();
    wrong.access_secret = SecretString::from("AS_wrong");
    let reply = sim
        .session_with(Some(&sim.sign(&wrong, "n-2", now_secs())))
        .await?;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    let header = sim.sign(&server.token, "n-3", now_secs());
    assert_eq!(
        sim.session_with(Some(&header)).await?.status,
        StatusCode::OK
    );
    let replay = sim.session_with(Some(&header)).await?;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED, "reused nonce");

    let stale = sim.sign(&server.token, "n-4", now_secs() - 301);
    assert_eq!(
        sim.session_with(Some(&stale)).await?.status,
        StatusCode::UNAUTHORIZED
    );
    let future = sim.sign(&server.token, "n-5", now_secs() + 301);
    assert_eq!(
        sim.session_with(Some(&future)).await?.status,
        StatusCode::UNAUTHORIZED
    );
    let slightly_old = sim.sign(&server.token, "n-6", now_secs() - 200);
    assert_eq!(
        sim.session_with(Some(&slightly_old)).await?.status,
        StatusCode::OK
    );

    let mut unknown = server.token.clone();
    unknown.consumer_key = SecretString::from("CK_unknown");
    let reply = sim
        .session_with(Some(&sim.sign(&unknown, "n-7", now_secs())))
        .await?;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    Ok(())
}

#[tokio::test]
async fn timestamps_follow_the_real_clock_not_the_simulator_clock() -> Result<()> {
    let sim = Sim::start().await?;
    let server = sim.create_server("acme", 0).await?;
    sim.advance_clock(3 * 24 * 3600).await?;
    sim.session(&server).await?;
    Ok(())
}

#[tokio::test]
async fn malformed_oauth_headers_are_bad_requests() -> Result<()> {
    let sim = Sim::start().await?;
    let server = sim.create_server("acme", 0).await?;
    let good = sim.sign(&server.token, "m-1", now_secs());

    assert_eq!(
        sim.session_with(None).await?.status,
        StatusCode::BAD_REQUEST
    );
    let plaintext = good.replace("HMAC-SHA1", "PLAINTEXT");
    assert_eq!(
        sim.session_with(Some(&plaintext)).await?.status,
        StatusCode::BAD_REQUEST
    );
    let without_nonce: String = good
        .split(',')
        .filter(|p| !p.contains("oauth_nonce"))
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(
        sim.session_with(Some(&without_nonce)).await?.status,
        StatusCode::BAD_REQUEST
    );
    let duplicated = format!("{good},oauth_nonce=\"again\"");
    assert_eq!(
        sim.session_with(Some(&duplicated)).await?.status,
        StatusCode::BAD_REQUEST
    );
    // None of these consumed the nonce: the well-formed request still works.
    assert_eq!(sim.session_with(Some(&good)).await?.status, StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn sessions_are_required_and_expire_on_the_simulator_clock() -> Result<()> {
    let sim = Sim::start().await?;
    let server = sim.create_server("acme", 0).await?;
    sim.apple(Method::GET, "/account", "", None)
        .await?
        .assert_error(401, "UNAUTHORIZED");
    sim.apple(Method::GET, "/account", "made-up", None)
        .await?
        .assert_error(401, "UNAUTHORIZED");

    let session = sim.session(&server).await?;
    sim.advance_clock(29 * 60).await?;
    assert_eq!(
        sim.apple(Method::GET, "/account", &session, None)
            .await?
            .status,
        StatusCode::OK
    );
    sim.advance_clock(60).await?;
    sim.apple(Method::GET, "/account", &session, None)
        .await?
        .assert_error(401, "UNAUTHORIZED");
    Ok(())
}

#[tokio::test]
async fn sessions_rotate_with_a_grace_period() -> Result<()> {
    let sim = Sim::start_with(SimConfig {
        behaviour: Behaviour {
            rotate_session_every: Some(3),
            rotation_grace_requests: 2,
            ..Behaviour::default()
        },
        ..SimConfig::default()
    })
    .await?;
    let server = sim.create_server("acme", 0).await?;
    let old = sim.session(&server).await?;
    let mut rotated = None;
    for i in 1..=3 {
        let reply = sim.apple(Method::GET, "/account", &old, None).await?;
        assert_eq!(reply.status, StatusCode::OK);
        let header = reply
            .headers
            .get("x-adm-auth-session")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        assert_eq!(header.is_some(), i == 3, "rotation on use {i}");
        rotated = rotated.or(header);
    }
    let new = rotated.unwrap_or_default();
    assert_ne!(new, old);
    for _ in 0..2 {
        assert_eq!(
            sim.apple(Method::GET, "/account", &old, None).await?.status,
            StatusCode::OK
        );
    }
    sim.apple(Method::GET, "/account", &old, None)
        .await?
        .assert_error(401, "UNAUTHORIZED");
    assert_eq!(
        sim.apple(Method::GET, "/account", &new, None).await?.status,
        StatusCode::OK
    );
    Ok(())
}

#[tokio::test]
async fn re_downloading_the_token_retires_the_old_credentials() -> Result<()> {
    let sim = Sim::start().await?;
    let server = sim.create_server("acme", 0).await?;
    let old_session = sim.session(&server).await?;

    let renewed = sim
        .control(
            Method::POST,
            &format!("/_sim/servers/{}/token", server.uuid),
            None,
        )
        .await?;
    let new_token = common::open_token_file(&renewed)?;
    assert_ne!(
        new_token.access_token.expose_secret(),
        server.token.access_token.expose_secret()
    );

    sim.apple(Method::GET, "/account", &old_session, None)
        .await?
        .assert_error(403, "FORBIDDEN");
    let stale = sim.sign(&server.token, "r-1", now_secs());
    assert_eq!(
        sim.session_with(Some(&stale)).await?.status,
        StatusCode::UNAUTHORIZED
    );

    let renewed_server = common::TestServer {
        uuid: server.uuid.clone(),
        token: new_token,
    };
    let session = sim.session(&renewed_server).await?;
    assert_eq!(
        sim.apple(Method::GET, "/account", &session, None)
            .await?
            .status,
        StatusCode::OK
    );
    Ok(())
}

#[tokio::test]
async fn expired_access_token_is_refused() -> Result<()> {
    let sim = Sim::start().await?;
    let server = sim.create_server("acme", 0).await?;
    sim.advance_clock(366 * 24 * 3600).await?;
    let reply = sim
        .session_with(Some(&sim.sign(&server.token, "e-1", now_secs())))
        .await?;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    Ok(())
}

#[tokio::test]
async fn unsigned_terms_block_every_call_until_accepted() -> Result<()> {
    let sim = Sim::start().await?;
    let server = sim.create_server("acme", 0).await?;
    let session = sim.session(&server).await?;
    let terms = format!("/_sim/servers/{}/terms", server.uuid);
    sim.control(Method::POST, &terms, Some(json!({"signed": false})))
        .await?;

    sim.apple(Method::GET, "/account", &session, None)
        .await?
        .assert_error(403, "T_C_NOT_SIGNED");
    sim.session_with(Some(&sim.sign(&server.token, "t-1", now_secs())))
        .await?
        .assert_error(403, "T_C_NOT_SIGNED");

    sim.control(Method::POST, &terms, Some(json!({"signed": true})))
        .await?;
    assert_eq!(
        sim.apple(Method::GET, "/account", &session, None)
            .await?
            .status,
        StatusCode::OK
    );
    Ok(())
}

#[tokio::test]
async fn user_agent_is_required() -> Result<()> {
    let sim = Sim::start().await?;
    let server = sim.create_server("acme", 0).await?;
    let session = sim.session(&server).await?;
    let response = sim
        .http
        .get(format!("{}/account", sim.base))
        .header("X-ADM-Auth-Session", &session)
        .send()
        .await?;
    common::reply(response)
        .await?
        .assert_error(400, "USER_AGENT_MISSING");
    Ok(())
}

#[tokio::test]
async fn account_has_the_shape_of_apples_sample() -> Result<()> {
    let sim = Sim::start().await?;
    let server = sim.create_server("acme", 0).await?;
    let session = sim.session(&server).await?;
    let account = sim
        .apple(Method::GET, "/account", &session, None)
        .await?
        .json()?;
    for field in [
        "server_name",
        "server_uuid",
        "admin_id",
        "facilitator_id",
        "org_name",
        "org_email",
        "org_phone",
        "org_address",
        "org_id",
        "org_id_hash",
        "org_type",
        "org_version",
    ] {
        assert!(account[field].is_string(), "{field} in {account}");
    }
    assert_eq!(account["server_name"], "acme");
    assert_eq!(account["admin_id"], "acme@example.com");
    assert_eq!(account["server_uuid"].as_str().map(str::len), Some(32));
    let urls = account["urls"].as_array().cloned().unwrap_or_default();
    let fetch = urls
        .iter()
        .find(|u| u["uri"] == "/server/devices")
        .cloned()
        .unwrap_or_default();
    assert_eq!(fetch["http_method"], json!(["POST"]));
    assert_eq!(fetch["limit"], json!({"default": 1000, "maximum": 5000}));
    let assign = urls
        .iter()
        .find(|u| u["uri"] == "/profile/devices")
        .cloned()
        .unwrap_or_default();
    assert_eq!(assign["http_method"], json!(["DELETE", "POST", "PUT"]));

    // Before v3 the org fields and urls are not part of the answer.
    let v2 = sim
        .apple_v(Method::GET, "/account", &session, None, "2")
        .await?
        .json()?;
    assert!(v2.get("urls").is_none() && v2.get("org_id").is_none());
    assert_eq!(v2["server_uuid"], json!(server.uuid));
    Ok(())
}

#[tokio::test]
async fn wrong_methods_and_bodies() -> Result<()> {
    let sim = Sim::start().await?;
    let server = sim.create_server("acme", 0).await?;
    let session = sim.session(&server).await?;
    let reply = sim
        .apple(Method::GET, "/server/devices", &session, None)
        .await?;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    let response = sim
        .http
        .post(format!("{}/devices/sync", sim.base))
        .header("User-Agent", common::USER_AGENT)
        .header("X-ADM-Auth-Session", &session)
        .body("{not json")
        .send()
        .await?;
    common::reply(response)
        .await?
        .assert_error(400, "MALFORMED_REQUEST_BODY");
    Ok(())
}
