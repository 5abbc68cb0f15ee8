//! Apple misbehaving, through the whole pipeline: after each fault every
//! device is present exactly once with its newest state, counts match, no
//! released device comes back, and the token's status and run history say
//! what happened.

use std::collections::HashSet;
use std::time::Duration;

use adesync_tests::TestService;
use adesync_tests::flows::CreatedToken;
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Value, json};

const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// Small pages, so every run spans several requests to Apple.
const PAGE: u32 = 200;

/// A token with `devices` devices after its first full sync, Apple paging
/// by [`PAGE`].
async fn synced(devices: usize) -> (TestService, CreatedToken) {
    let env = TestService::start().await;
    env.sim_post(
        "/_sim/config",
        json!({"limit_default": PAGE, "limit_maximum": PAGE}),
    )
    .await;
    let token = env.create_token("acme", devices).await;
    let run = env.wait_until_idle(&token, RUN_TIMEOUT).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(run["pages"].as_u64().unwrap() >= 2, "{run}");
    (env, token)
}

/// Adds devices in Apple Business so the next delta has pages to fetch.
async fn add_devices(env: &TestService, token: &CreatedToken, count: usize) {
    env.sim_post(
        &format!("/_sim/servers/{}/devices", token.server_uuid),
        json!({ "count": count }),
    )
    .await;
}

async fn fault(env: &TestService, fault: Value) {
    env.sim_post("/_sim/faults", fault).await;
}

/// Runs a manual sync of `kind` to its end; returns the run.
async fn sync(env: &TestService, token: &CreatedToken, kind: &str) -> Value {
    let reply = env.request_sync(token, kind).await;
    assert_eq!(reply.status, 202, "{reply:?}");
    env.wait_for_run(token, reply.body["run_id"].as_str().unwrap(), RUN_TIMEOUT)
        .await
}

/// Every device Apple has is listed once; `released` (if it was released
/// and a full sync has run since) is removed; counts agree.
async fn assert_converged(env: &TestService, token: &CreatedToken, released: Option<&str>) {
    let in_apple: HashSet<String> = env
        .sim_devices(&token.server_uuid)
        .await
        .iter()
        .map(|d| d["serial_number"].as_str().unwrap().to_owned())
        .collect();
    let active = env.all_devices(token, "&state=active").await;
    let active_serials: HashSet<String> = active
        .iter()
        .map(|d| d["serial_number"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        active.len(),
        active_serials.len(),
        "a device is listed twice"
    );
    if let Some(released) = released {
        let removed = env.all_devices(token, "&state=removed_from_apple").await;
        assert!(
            removed.iter().any(|d| d["serial_number"] == released),
            "the released device must stay removed"
        );
    }
    let missing: Vec<_> = in_apple.difference(&active_serials).collect();
    let extra: Vec<_> = active_serials.difference(&in_apple).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "listed devices differ from Apple's: missing {missing:?}, extra {extra:?}"
    );
    let listed = env.all_devices(token, "").await.len() as u64;
    assert_eq!(env.sync_status(token).await["device_count"], listed);
}

#[tokio::test]
async fn a_401_during_a_run_reauthenticates_once_and_the_run_continues() {
    let (env, token) = synced(300).await;
    add_devices(&env, &token, 500).await;
    fault(
        &env,
        json!({"route": "/devices/sync", "status": 401, "body": "UNAUTHORIZED", "times": 1}),
    )
    .await;
    let run = sync(&env, &token, "delta").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(run["pages"].as_u64().unwrap() >= 3, "{run}");
    assert_converged(&env, &token, None).await;
    assert_eq!(env.sync_status(&token).await["device_count"], 800);
}

#[tokio::test]
async fn terms_not_signed_marks_the_token_keeps_the_devices_and_clears_on_the_next_success() {
    let (env, token) = synced(300).await;
    env.sim_post(
        &format!("/_sim/servers/{}/terms", token.server_uuid),
        json!({"signed": false}),
    )
    .await;
    let run = sync(&env, &token, "delta").await;
    assert_eq!(run["status"], "failed", "{run}");
    let shown = env.token(&token).await;
    assert_eq!(shown.body["status"], "terms_not_signed", "{shown:?}");
    assert!(
        shown.body["status_message"]
            .as_str()
            .unwrap()
            .contains("terms")
    );
    assert_eq!(env.all_devices(&token, "").await.len(), 300, "no data lost");

    env.sim_post(
        &format!("/_sim/servers/{}/terms", token.server_uuid),
        json!({"signed": true}),
    )
    .await;
    env.advance(15 * 60).await;
    let run = sync(&env, &token, "delta").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        run["kind"], "full",
        "a failed delta makes the next sync full: {run}"
    );
    let shown = env.token(&token).await;
    assert_eq!(shown.body["status"], "ok", "{shown:?}");
}

#[tokio::test]
async fn forbidden_after_a_redownload_marks_the_token_invalid_and_keeps_the_devices() {
    let (env, token) = synced(300).await;
    env.sim_post(
        &format!("/_sim/servers/{}/token", token.server_uuid),
        json!({}),
    )
    .await;
    let run = sync(&env, &token, "delta").await;
    assert_eq!(run["status"], "failed", "{run}");
    let shown = env.token(&token).await;
    assert_eq!(shown.body["status"], "token_invalid", "{shown:?}");
    assert_eq!(env.all_devices(&token, "").await.len(), 300);
}

#[tokio::test]
async fn a_429_with_retry_after_is_honoured() {
    let (env, token) = synced(300).await;
    add_devices(&env, &token, 300).await;
    fault(
        &env,
        json!({"route": "/devices/sync", "status": 429, "body": "TOO_MANY_REQUESTS", "times": 1, "retry_after": 2}),
    )
    .await;
    let started = std::time::Instant::now();
    let run = sync(&env, &token, "delta").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After was not honoured"
    );
    assert_converged(&env, &token, None).await;
}

#[tokio::test]
async fn bursts_of_server_errors_are_retried() {
    let (env, token) = synced(300).await;
    add_devices(&env, &token, 300).await;
    // Within the test service's 4-second retry deadline for one Apple call.
    fault(
        &env,
        json!({"route": "/devices/sync", "status": 503, "body": "", "times": 1}),
    )
    .await;
    fault(
        &env,
        json!({"route": "/devices/sync", "status": 500, "body": "", "times": 1}),
    )
    .await;
    let run = sync(&env, &token, "delta").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_converged(&env, &token, None).await;
}

#[tokio::test]
async fn a_response_slower_than_the_client_timeout_is_retried() {
    let (env, token) = synced(300).await;
    add_devices(&env, &token, 300).await;
    // The test service gives Apple 2 seconds per answer.
    fault(
        &env,
        json!({"route": "/devices/sync", "delay_ms": 3_000, "times": 1}),
    )
    .await;
    let run = sync(&env, &token, "delta").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_converged(&env, &token, None).await;
}

#[tokio::test]
async fn an_expired_cursor_turns_the_delta_into_a_full_sync_that_sweeps() {
    let (env, token) = synced(400).await;
    let released = env.release_in_apple(&token, 0).await;
    add_devices(&env, &token, 50).await;
    // Apple keeps cursors 7 days; time passes for Apple and for us.
    env.advance(8 * 24 * 3600).await;
    let run = sync(&env, &token, "delta").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["kind"], "full", "{run}");
    assert!(
        run["warning"].as_str().unwrap().contains("expired"),
        "{run}"
    );
    assert_converged(&env, &token, Some(&released)).await;
}

#[tokio::test]
async fn an_invalid_cursor_turns_the_delta_into_a_full_sync() {
    let (env, token) = synced(400).await;
    let released = env.release_in_apple(&token, 0).await;
    fault(
        &env,
        json!({"route": "/devices/sync", "status": 400, "body": "INVALID_CURSOR", "times": 1}),
    )
    .await;
    let run = sync(&env, &token, "delta").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["kind"], "full", "{run}");
    assert_converged(&env, &token, Some(&released)).await;
}

#[tokio::test]
async fn an_exhausted_cursor_on_sync_keeps_the_cursor_and_says_so() {
    let (env, token) = synced(300).await;
    fault(
        &env,
        json!({"route": "/devices/sync", "status": 400, "body": "EXHAUSTED_CURSOR", "times": 1}),
    )
    .await;
    let run = sync(&env, &token, "delta").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["kind"], "delta", "{run}");
    assert!(
        run["warning"].as_str().unwrap().contains("exhausted"),
        "{run}"
    );
    // The next delta continues from the kept cursor.
    add_devices(&env, &token, 20).await;
    env.advance(15 * 60).await;
    let run = sync(&env, &token, "delta").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_converged(&env, &token, None).await;
}

#[tokio::test]
async fn the_same_cursor_echoed_with_more_to_follow_stops_the_run_without_looping() {
    let (env, token) = synced(300).await;
    let cursor = stored_cursor(&env, &token)
        .await
        .expect("a synced token keeps a cursor");
    fault(
        &env,
        json!({"route": "/devices/sync", "status": 200, "times": 1, "body": json!({
            "cursor": cursor, "more_to_follow": true, "devices": [],
            "fetched_until": chrono::Utc::now().to_rfc3339(),
        }).to_string()}),
    )
    .await;
    let run = sync(&env, &token, "delta").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["pages"], 1, "one request, no loop: {run}");
    assert!(
        run["warning"].as_str().unwrap().contains("same cursor"),
        "{run}"
    );
    add_devices(&env, &token, 20).await;
    env.advance(15 * 60).await;
    let run = sync(&env, &token, "delta").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_converged(&env, &token, None).await;
}

/// The cursor stored on the token between runs (None: the next run fetches
/// from scratch).
async fn stored_cursor(env: &TestService, token: &CreatedToken) -> Option<String> {
    let item = env
        .service
        .clients
        .dynamodb
        .get_item()
        .table_name(&env.service.config.tables.tokens)
        .key("account_id", AttributeValue::S("acme".into()))
        .key("token_id", AttributeValue::S(token.token_id.clone()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    item.get("cursor").and_then(|c| c.as_s().ok()).cloned()
}

/// Apple echoes the cursor of a full fetch in its middle (the one field
/// report, micromdm#1016): the run stops there, releases nothing, drops the
/// cursor rather than sending it again every 12 hours, and the next sync
/// lists every device afresh.
#[tokio::test]
async fn an_echoed_cursor_in_the_middle_of_a_fetch_is_dropped_and_the_next_sync_fetches_afresh() {
    let (env, token) = synced(600).await;
    let released = env.release_in_apple(&token, 0).await;
    env.advance(7 * 24 * 3600).await;
    fault(
        &env,
        json!({"route": "/server/devices", "echo_cursor": true, "skip": 1}),
    )
    .await;
    let run = sync(&env, &token, "full").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(run["warning"].as_str().unwrap().contains("afresh"), "{run}");
    assert!(
        env.all_devices(&token, "&state=removed_from_apple")
            .await
            .is_empty(),
        "an incomplete snapshot released devices"
    );
    assert_eq!(
        stored_cursor(&env, &token).await,
        None,
        "the echoed cursor was kept"
    );

    env.advance(15 * 60).await;
    let run = sync(&env, &token, "delta").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["kind"], "full", "the next sync fetches afresh: {run}");
    assert_converged(&env, &token, Some(&released)).await;
}

/// `EXHAUSTED_CURSOR` in the middle of a full fetch proves nothing about
/// the devices not yet seen: the run releases nothing, and the next sync
/// fetches afresh and releases exactly what Apple released.
#[tokio::test]
async fn an_exhausted_cursor_in_the_middle_of_a_fetch_releases_nothing() {
    let (env, token) = synced(600).await;
    let released = env.release_in_apple(&token, 0).await;
    env.advance(7 * 24 * 3600).await;
    fault(
        &env,
        json!({"route": "/server/devices", "status": 400, "body": "EXHAUSTED_CURSOR", "skip": 1}),
    )
    .await;
    let run = sync(&env, &token, "full").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(
        run["warning"].as_str().unwrap().contains("exhausted"),
        "{run}"
    );
    let removed = env.all_devices(&token, "&state=removed_from_apple").await;
    assert!(
        removed.is_empty(),
        "a cut-short snapshot released {} devices",
        removed.len()
    );
    assert_eq!(env.all_devices(&token, "&state=active").await.len(), 600);
    assert_eq!(stored_cursor(&env, &token).await, None);

    env.advance(15 * 60).await;
    let run = sync(&env, &token, "delta").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["kind"], "full", "{run}");
    assert_converged(&env, &token, Some(&released)).await;
}

/// One device comes with an optional field Apple sends unreadable (here
/// `mdm_migration_deadline`, which nanodep does not parse): the page still
/// imports, that field is left out of that device, and the run says so.
/// Failing the page instead would stop every run at the same page.
#[tokio::test]
async fn an_unreadable_optional_field_is_left_out_and_the_page_still_imports() {
    let (env, token) = synced(300).await;
    let devices = env.sim_devices(&token.server_uuid).await;
    let odd = devices[0]["serial_number"].as_str().unwrap().to_owned();
    let renamed = devices[1]["serial_number"].as_str().unwrap().to_owned();
    env.sim_patch(
        &format!("/_sim/servers/{}/devices/{odd}", token.server_uuid),
        json!({"mdm_migration_deadline": "next tuesday", "asset_tag": "odd-one"}),
    )
    .await;
    env.sim_patch(
        &format!("/_sim/servers/{}/devices/{renamed}", token.server_uuid),
        json!({"asset_tag": "on-the-same-page"}),
    )
    .await;
    env.advance(15 * 60).await;
    let run = sync(&env, &token, "delta").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(
        run["warning"]
            .as_str()
            .unwrap_or_default()
            .contains("mdm_migration_deadline"),
        "{run}"
    );
    let device = env.device(&token, &odd).await;
    assert_eq!(device["asset_tag"], "odd-one", "{device}");
    assert!(device["mdm_migration_deadline"].is_null(), "{device}");
    assert_eq!(
        env.device(&token, &renamed).await["asset_tag"],
        "on-the-same-page"
    );
    assert_converged(&env, &token, None).await;
}

async fn token_status(env: &TestService, token: &CreatedToken) -> Value {
    env.token(token).await.body["status"].clone()
}

/// A 403 with an empty or HTML body (an edge in front of Apple) or a bare
/// 401 on a fresh session is not Apple saying the token is dead. Passing,
/// the run retries through it. Persisting, each run fails and says why,
/// and the token stays `ok` until three runs in a row have failed on it.
#[tokio::test]
async fn refusals_without_a_reason_are_retried_and_mark_the_token_only_when_they_persist() {
    let (env, token) = synced(300).await;
    add_devices(&env, &token, 20).await;
    fault(
        &env,
        json!({"route": "/devices/sync", "status": 403, "body": "<html><body>Forbidden</body></html>"}),
    )
    .await;
    fault(
        &env,
        json!({"route": "/devices/sync", "status": 401, "body": "", "times": 2}),
    )
    .await;
    let run = sync(&env, &token, "delta").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(token_status(&env, &token).await, "ok");
    assert_converged(&env, &token, None).await;

    // Every request refused from now on (a failed delta makes the next
    // sync a full one, so every route).
    fault(
        &env,
        json!({"route": "*", "status": 403, "body": "", "times": 1_000_000}),
    )
    .await;
    for attempt in 1..=adesync_service::worker::PERSISTENT_REFUSALS {
        env.advance(15 * 60).await;
        let run = sync(&env, &token, "delta").await;
        assert_eq!(run["status"], "failed", "{run}");
        assert!(
            run["error"]
                .as_str()
                .unwrap()
                .contains("without giving a reason"),
            "{run}"
        );
        let expected = if attempt < adesync_service::worker::PERSISTENT_REFUSALS {
            "ok"
        } else {
            "token_invalid"
        };
        assert_eq!(
            token_status(&env, &token).await,
            expected,
            "after run {attempt}"
        );
    }
    assert_eq!(env.all_devices(&token, "").await.len(), 320, "no data lost");
}

/// Apple releases a device because another replaced it: its delta says
/// `deleted` with `released_by_replacement`. The device is removed and the
/// API says why, unlike a device moved to another MDM server; a later full
/// sync does not forget it.
#[tokio::test]
async fn a_device_released_by_replacement_is_removed_and_says_so() {
    let (env, token) = synced(300).await;
    let devices = env.sim_devices(&token.server_uuid).await;
    let replaced = devices[5]["serial_number"].as_str().unwrap().to_owned();
    let moved = devices[6]["serial_number"].as_str().unwrap().to_owned();
    env.sim_post(
        &format!(
            "/_sim/servers/{}/devices/{replaced}/release",
            token.server_uuid
        ),
        json!({"by_replacement": true}),
    )
    .await;
    env.move_to_another_server(&token, &moved).await;
    env.advance(15 * 60).await;
    let run = sync(&env, &token, "delta").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let device = env.device(&token, &replaced).await;
    assert_eq!(device["state"], "removed_from_apple", "{device}");
    assert_eq!(device["released_by_replacement"], true, "{device}");
    let other = env.device(&token, &moved).await;
    assert_eq!(other["released_by_replacement"], false, "{other}");

    env.advance(7 * 24 * 3600).await;
    let run = sync(&env, &token, "full").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let device = env.device(&token, &replaced).await;
    assert_eq!(device["state"], "removed_from_apple", "{device}");
    assert_eq!(device["released_by_replacement"], true, "{device}");
    assert_converged(&env, &token, Some(&replaced)).await;
}

/// Apple ends a server's older sessions when it issues a new one. The
/// token's shared session has expired, and an assignment job and a sync run
/// find it stale at the same time while Apple is slow to answer `/session`:
/// one of them renews it, the other waits and takes the same session. One
/// `/session` in all; neither knocks the other out; the token stays `ok`.
#[tokio::test]
async fn functions_that_find_the_session_stale_at_once_share_one_renewal() {
    let (env, token) = synced(300).await;
    env.sim_post("/_sim/config", json!({"end_older_sessions": true}))
        .await;
    add_devices(&env, &token, 20).await;
    let serials = env.serials(&token).await;
    let refs: Vec<&str> = serials.iter().take(5).map(String::as_str).collect();
    let policy = env.new_policy(&token, "Shared session").await;
    // Past the sessions' 30 minutes (and the delta cooldown).
    env.advance(31 * 60).await;
    // Slow, but within the client's timeout of an answer.
    fault(
        &env,
        json!({"route": "/session", "delay_ms": 1000, "times": 2}),
    )
    .await;
    let sessions_before = sessions_issued(&env).await;

    let (assigned, reply) = tokio::join!(
        env.assign(&token, &policy, &refs),
        env.request_sync(&token, "delta")
    );
    assert_eq!(assigned.status, 200, "{assigned:?}");
    assert_eq!(reply.status, 202, "{reply:?}");
    let run = env
        .wait_for_run(&token, reply.body["run_id"].as_str().unwrap(), RUN_TIMEOUT)
        .await;
    env.wait_for_sync_jobs(RUN_TIMEOUT).await;

    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        sessions_issued(&env).await - sessions_before,
        1,
        "one renewal shared by both functions"
    );
    for serial in &refs {
        let device = env.device(&token, serial).await;
        assert_eq!(device["assignment"]["status"], "assigned", "{device}");
    }
    assert_eq!(token_status(&env, &token).await, "ok");
    assert_converged(&env, &token, None).await;
}

async fn sessions_issued(env: &TestService) -> u64 {
    env.sim_stats().await["requests"]["/session"]
        .as_u64()
        .unwrap_or(0)
}
