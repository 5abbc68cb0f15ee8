//! The sync pipeline end to end: the API, the sync worker, SQS, the
//! importer and DynamoDB, against the Apple simulator.

use std::collections::HashSet;
use std::time::Duration;

use adesync_tests::{TestOptions, TestService};
use reqwest::Method;
use serde_json::{Value, json};

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

fn small_close_parts() -> TestOptions {
    TestOptions {
        close_part_devices: Some(3),
        ..TestOptions::default()
    }
}

fn serials(devices: &[Value]) -> HashSet<String> {
    devices
        .iter()
        .map(|d| d["serial_number"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_first_full_sync_imports_every_device() {
    let env = TestService::start().await;
    let token = env.create_token("acme", 2_500).await;
    let run = env.wait_until_idle(&token, RUN_TIMEOUT).await;
    assert_eq!(run["kind"], "full", "{run}");
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["fetched"], 2_500);
    assert_eq!(run["imported"], 2_500);
    assert_eq!(run["estimated_seconds_left"], 0);

    let listed = env.all_devices(&token, "").await;
    assert_eq!(listed.len(), 2_500);
    let in_apple = serials(&env.sim_devices(&token.server_uuid).await);
    assert_eq!(
        serials(&listed),
        in_apple,
        "every Apple device, exactly once"
    );
    let one = &listed[0];
    assert_eq!(one["state"], "active");
    assert!(
        one["model"].is_string() && one["device_family"].is_string(),
        "{one}"
    );

    let status = env.sync_status(&token).await;
    assert_eq!(status["state"], "idle");
    assert_eq!(status["device_count"], 2_500);
    assert_eq!(status["last_outcome"], "succeeded");
    assert!(status["last_full_sync_at"].is_string());
    assert_eq!(status["next_sync_is_full"], false);

    // Pages: 1,000 at most, cursors chain, no duplicates.
    let first = env
        .call(
            Method::GET,
            &format!("/v1/tokens/{}/devices?limit=1000", token.token_id),
            &token.jwt,
            None,
        )
        .await;
    assert_eq!(first.body["devices"].as_array().unwrap().len(), 1000);
    assert!(first.body["next_cursor"].is_string());
}

#[tokio::test]
async fn manual_syncs_follow_the_cooldowns_on_the_services_clock() {
    let env = TestService::start().await;
    let token = env.create_token("acme", 50).await;
    env.wait_until_idle(&token, RUN_TIMEOUT).await;

    let first = env.request_sync(&token, "delta").await;
    assert_eq!(first.status, 202, "{first:?}");
    env.wait_for_run(&token, first.body["run_id"].as_str().unwrap(), RUN_TIMEOUT)
        .await;
    let again = env.request_sync(&token, "delta").await;
    assert_eq!(again.status, 429, "{again:?}");
    assert_eq!(again.error(), "manual_sync_cooldown");
    let retry: u64 = again.header("retry-after").unwrap().parse().unwrap();
    assert!((880..=900).contains(&retry), "Retry-After {retry}");

    env.advance(15 * 60).await;
    let later = env.request_sync(&token, "delta").await;
    assert_eq!(later.status, 202, "{later:?}");
    env.wait_for_run(&token, later.body["run_id"].as_str().unwrap(), RUN_TIMEOUT)
        .await;

    // The token's first full sync ran minutes ago: a full is refused for 7 days.
    env.advance(15 * 60).await;
    let full = env.request_sync(&token, "full").await;
    assert_eq!(full.status, 429, "{full:?}");
    assert_eq!(full.error(), "full_sync_cooldown");
    let retry: u64 = full.header("retry-after").unwrap().parse().unwrap();
    assert!(retry > 6 * 24 * 3600, "Retry-After {retry}");
}

#[tokio::test]
async fn deltas_pick_up_added_modified_and_reassigned_devices() {
    let env = TestService::start().await;
    let token = env.create_token("acme", 30).await;
    env.wait_until_idle(&token, RUN_TIMEOUT).await;
    let before = env.sim_devices(&token.server_uuid).await;
    let modified = before[0]["serial_number"].as_str().unwrap().to_owned();
    let reassigned = before[1]["serial_number"].as_str().unwrap().to_owned();

    let added = env
        .sim_post(
            &format!("/_sim/servers/{}/devices", token.server_uuid),
            json!({"count": 5}),
        )
        .await;
    let added: HashSet<String> = added["serials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    let patched = env
        .http
        .patch(env.sim(&format!(
            "/_sim/servers/{}/devices/{modified}",
            token.server_uuid
        )))
        .json(&json!({"asset_tag": "IT-4711", "color": "MIDNIGHT"}))
        .send()
        .await
        .unwrap();
    assert!(patched.status().is_success());
    // Moved to another MDM server of the organisation: a `deleted` event here.
    env.move_to_another_server(&token, &reassigned).await;

    let sync = env.request_sync(&token, "delta").await;
    assert_eq!(sync.status, 202, "{sync:?}");
    let run = env
        .wait_for_run(&token, sync.body["run_id"].as_str().unwrap(), RUN_TIMEOUT)
        .await;
    assert_eq!(run["kind"], "delta", "{run}");
    assert_eq!(run["status"], "succeeded", "{run}");

    let active = env.all_devices(&token, "&state=active").await;
    let active = serials(&active);
    assert!(added.is_subset(&active), "added devices imported");
    assert!(
        !active.contains(&reassigned),
        "a reassigned device is no longer active: run {run}"
    );
    let device = env
        .call(
            Method::GET,
            &format!("/v1/tokens/{}/devices/{modified}", token.token_id),
            &token.jwt,
            None,
        )
        .await;
    assert_eq!(device.body["asset_tag"], "IT-4711", "{device:?}");
    assert_eq!(device.body["color"], "MIDNIGHT");
    let gone = env
        .call(
            Method::GET,
            &format!("/v1/tokens/{}/devices/{reassigned}", token.token_id),
            &token.jwt,
            None,
        )
        .await;
    assert_eq!(gone.body["state"], "removed_from_apple", "{gone:?}");
    assert_eq!(env.sync_status(&token).await["device_count"], 35);
}

#[tokio::test]
async fn released_devices_are_marked_removed_and_expire_in_30_to_45_days() {
    // Runs close in parts of 3 devices, as a large token's do.
    let env = TestService::start_with(small_close_parts()).await;
    let token = env.create_token("acme", 20).await;
    env.wait_until_idle(&token, RUN_TIMEOUT).await;
    let released = env.release_in_apple(&token, 3).await;

    // Apple sends no delta event for a release: a delta keeps the device…
    env.advance(15 * 60).await;
    let delta = env.request_sync(&token, "delta").await;
    env.wait_for_run(&token, delta.body["run_id"].as_str().unwrap(), RUN_TIMEOUT)
        .await;
    let path = format!("/v1/tokens/{}/devices/{released}", token.token_id);
    assert_eq!(
        env.call(Method::GET, &path, &token.jwt, None).await.body["state"],
        "active"
    );

    // …the next full sync does not see it and marks it removed.
    env.advance(7 * 24 * 3600).await;
    let full = env.request_sync(&token, "full").await;
    assert_eq!(full.status, 202, "{full:?}");
    let run = env
        .wait_for_run(&token, full.body["run_id"].as_str().unwrap(), RUN_TIMEOUT)
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let device = env.call(Method::GET, &path, &token.jwt, None).await;
    assert_eq!(device.body["state"], "removed_from_apple", "{device:?}");
    let removed_at: chrono::DateTime<chrono::Utc> =
        device.body["removed_at"].as_str().unwrap().parse().unwrap();
    let deletes_at: chrono::DateTime<chrono::Utc> =
        device.body["deletes_at"].as_str().unwrap().parse().unwrap();
    let days = (deletes_at - removed_at).num_hours() as f64 / 24.0;
    assert!(
        (30.0..=45.0).contains(&days),
        "deleted {days} days after release"
    );
    let removed = env.all_devices(&token, "&state=removed_from_apple").await;
    assert_eq!(serials(&removed), HashSet::from([released.clone()]));
    assert_eq!(env.all_devices(&token, "&state=active").await.len(), 19);
    // Removed devices are still listed, so still counted.
    assert_eq!(env.sync_status(&token).await["device_count"], 20);

    // An administrator may delete it before then.
    let deleted = env.call(Method::DELETE, &path, &token.jwt, None).await;
    assert_eq!(deleted.status, 200, "{deleted:?}");
    assert_eq!(
        env.call(Method::GET, &path, &token.jwt, None).await.status,
        404
    );
}

#[tokio::test]
async fn an_expired_device_a_policy_counts_is_deleted_with_its_count_when_a_run_closes() {
    // The TTL would delete the item without uncounting it from its policy,
    // so a counted device is not left to it: the next run's close deletes it.
    let env = TestService::start_with(small_close_parts()).await;
    let token = env.create_token("acme", 0).await;
    env.wait_until_idle(&token, RUN_TIMEOUT).await;
    let policy = env.new_policy(&token, "Default").await;
    assert_eq!(env.set_default_policy(&token, &policy).await.status, 200);
    env.sim_post(
        &format!("/_sim/servers/{}/devices", token.server_uuid),
        json!({"count": 8}),
    )
    .await;
    let delta = env.request_sync(&token, "delta").await;
    env.wait_for_run(&token, delta.body["run_id"].as_str().unwrap(), RUN_TIMEOUT)
        .await;
    assert_eq!(env.policy(&token, &policy).await["device_count"], 8);

    let released = env.release_in_apple(&token, 5).await;
    env.advance(7 * 24 * 3600).await;
    let full = env.request_sync(&token, "full").await;
    env.wait_for_run(&token, full.body["run_id"].as_str().unwrap(), RUN_TIMEOUT)
        .await;
    let path = format!("/v1/tokens/{}/devices/{released}", token.token_id);
    let removed = env.call(Method::GET, &path, &token.jwt, None).await;
    assert_eq!(removed.body["state"], "removed_from_apple", "{removed:?}");
    // Removed, it still counts in its policy until it is deleted.
    assert_eq!(env.policy(&token, &policy).await["device_count"], 8);

    // Past its deletion date: hidden at once, deleted (and uncounted) by the
    // close of the next run, a delta whose close only counts.
    env.advance(46 * 24 * 3600).await;
    assert_eq!(
        env.call(Method::GET, &path, &token.jwt, None).await.status,
        404
    );
    assert_eq!(env.policy(&token, &policy).await["device_count"], 8);
    let delta = env.request_sync(&token, "delta").await;
    assert_eq!(delta.status, 202, "{delta:?}");
    let run = env
        .wait_for_run(&token, delta.body["run_id"].as_str().unwrap(), RUN_TIMEOUT)
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(env.policy(&token, &policy).await["device_count"], 7);
    assert_eq!(env.sync_status(&token).await["device_count"], 7);
}

#[tokio::test]
async fn an_admin_deleted_device_stays_away_on_deltas_and_returns_on_the_next_full_sync() {
    let env = TestService::start_with(small_close_parts()).await;
    let token = env.create_token("acme", 10).await;
    env.wait_until_idle(&token, RUN_TIMEOUT).await;
    let serial = env.sim_devices(&token.server_uuid).await[0]["serial_number"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/tokens/{}/devices/{serial}", token.token_id);

    let deleted = env.call(Method::DELETE, &path, &token.jwt, None).await;
    assert_eq!(deleted.status, 200, "{deleted:?}");
    assert_eq!(deleted.body["id"], serial.as_str(), "{deleted:?}");
    assert_eq!(
        deleted.body["serial_number"],
        serial.as_str(),
        "{deleted:?}"
    );
    // The answer warns of everything the deletion does (docs/product.md
    // "Device lifecycle"): out of management, its user cut off, a wipe and
    // re-enrollment to come back, and back anyway on the next full sync.
    let warning = deleted.body["warning"].as_str().unwrap();
    for words in [
        "removed from management",
        "loses access to corporate resources",
        "wiped and re-enrolled",
        "reappears on the next full sync",
        "unassign it in Apple Business first",
    ] {
        assert!(warning.contains(words), "no {words:?} in: {warning}");
    }
    assert_eq!(
        env.call(Method::GET, &path, &token.jwt, None).await.status,
        404
    );
    assert_eq!(env.sync_status(&token).await["device_count"], 9);

    // A change in Apple Business arrives on the next delta: still away.
    env.http
        .patch(env.sim(&format!(
            "/_sim/servers/{}/devices/{serial}",
            token.server_uuid
        )))
        .json(&json!({"asset_tag": "CHANGED"}))
        .send()
        .await
        .unwrap();
    let delta = env.request_sync(&token, "delta").await;
    env.wait_for_run(&token, delta.body["run_id"].as_str().unwrap(), RUN_TIMEOUT)
        .await;
    assert_eq!(
        env.call(Method::GET, &path, &token.jwt, None).await.status,
        404
    );
    // The delta's close recounted the token in parts of 3.
    assert_eq!(env.sync_status(&token).await["device_count"], 9);

    env.advance(7 * 24 * 3600).await;
    let full = env.request_sync(&token, "full").await;
    env.wait_for_run(&token, full.body["run_id"].as_str().unwrap(), RUN_TIMEOUT)
        .await;
    let back = env.call(Method::GET, &path, &token.jwt, None).await;
    assert_eq!(
        back.status, 200,
        "the device reappears on the next full sync"
    );
    assert_eq!(back.body["state"], "active");
    assert_eq!(back.body["asset_tag"], "CHANGED");
    assert_eq!(env.sync_status(&token).await["device_count"], 10);
}

#[tokio::test]
async fn a_delta_failing_with_server_errors_makes_the_next_sync_full() {
    let env = TestService::start().await;
    let token = env.create_token("acme", 10).await;
    env.wait_until_idle(&token, RUN_TIMEOUT).await;

    // More 503s than the client's retries cover within its deadline.
    env.sim_post(
        "/_sim/faults",
        json!({"route": "/devices/sync", "status": 500, "body": "", "times": 1000}),
    )
    .await;
    let delta = env.request_sync(&token, "delta").await;
    assert_eq!(delta.status, 202);
    let run = env
        .wait_for_run(
            &token,
            delta.body["run_id"].as_str().unwrap(),
            Duration::from_secs(300),
        )
        .await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(run["error"].as_str().unwrap().contains("Apple"), "{run}");
    let status = env.sync_status(&token).await;
    assert_eq!(status["next_sync_is_full"], true, "{status}");
    assert!(status["last_error"].is_string());
    env.http
        .delete(env.sim("/_sim/faults"))
        .send()
        .await
        .unwrap();

    env.advance(15 * 60).await;
    let next = env.request_sync(&token, "delta").await;
    assert_eq!(next.status, 202, "{next:?}");
    assert_eq!(
        next.body["kind"], "full",
        "the next sync after a failed delta is full"
    );
    let run = env
        .wait_for_run(&token, next.body["run_id"].as_str().unwrap(), RUN_TIMEOUT)
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(env.sync_status(&token).await["next_sync_is_full"], false);
}

#[tokio::test]
async fn the_schedule_runs_a_delta_of_every_token_and_a_full_when_7_days_passed() {
    let env = TestService::start().await;
    let a = env.create_token("acme", 5).await;
    let b = env.create_token("globex", 5).await;
    env.wait_until_idle(&a, RUN_TIMEOUT).await;
    env.wait_until_idle(&b, RUN_TIMEOUT).await;

    env.sweep("delta").await;
    for token in [&a, &b] {
        let run = env.wait_until_idle(token, RUN_TIMEOUT).await;
        assert_eq!(run["kind"], "delta", "{run}");
        assert_eq!(run["trigger"], "scheduled");
    }
    // The weekly sweep finds nothing due…
    env.sweep("full").await;
    let runs = env
        .call(
            Method::GET,
            &format!("/v1/tokens/{}/runs", a.token_id),
            &a.jwt,
            None,
        )
        .await;
    assert_eq!(runs.body["runs"].as_array().unwrap().len(), 2);
    // …until 7 days have passed.
    env.advance(7 * 24 * 3600).await;
    env.sweep("full").await;
    let run = env.wait_until_idle(&a, RUN_TIMEOUT).await;
    assert_eq!(run["kind"], "full", "{run}");
    assert_eq!(run["status"], "succeeded");
}

/// A scheduled pass goes through the tokens table page by page (here 3
/// tokens a page in 2 segments, so 13 tokens take several pages each) and
/// starts a sync of every token; an item that is not a readable token is
/// logged and skipped, and stops nothing. The first pages are delivered
/// twice at once, as SQS sometimes does: still one run per token.
#[tokio::test]
async fn a_pass_reaches_every_token_page_by_page_past_malformed_items() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let env = TestService::start_with(TestOptions {
        environment: vec![
            ("ADESYNC_SWEEP_PAGE_TOKENS", "3"),
            ("ADESYNC_SWEEP_SEGMENTS", "2"),
            ("ADESYNC_SYNC_STARTS_PER_SECOND", "1000"),
        ],
        ..TestOptions::default()
    })
    .await;
    let mut tokens = Vec::new();
    for n in 0..13 {
        let account = if n % 2 == 0 { "acme" } else { "globex" };
        tokens.push(env.seed_token(account).await);
    }
    let table = &env.service.config.tables.tokens;
    for (token_id, field, value) in [
        // A key that is not a token id, and a lease that is not a time.
        ("../../etc", "status", "ok"),
        ("01MALFORMEDLEASE0000000000", "lease_until", "not a time"),
    ] {
        env.service
            .clients
            .dynamodb
            .put_item()
            .table_name(table)
            .item("account_id", AttributeValue::S("acme".into()))
            .item("token_id", AttributeValue::S(token_id.into()))
            .item(
                "lease_run_id",
                AttributeValue::S("01MALFORMEDRUN000000000000".into()),
            )
            .item(field, AttributeValue::S(value.into()))
            .send()
            .await
            .unwrap();
    }

    // Seeded tokens have no credentials: their runs start and fail at
    // Apple's door, so the queue never drains; each token's run is what
    // the pass is judged by.
    env.service
        .runner
        .deliveries()
        .deliver_twice("SyncJobsQueue", 2);
    env.service
        .runner
        .fire("sync-scheduler", json!({"sweep": "delta"}))
        .await
        .unwrap();
    let store = env.store();
    let started = std::time::Instant::now();
    for token in &tokens {
        let runs = loop {
            let runs = store.runs.recent_runs(token, 10).await.unwrap();
            if !runs.is_empty() {
                break runs;
            }
            assert!(
                started.elapsed() < RUN_TIMEOUT,
                "the pass never reached {token}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(runs.len(), 1, "{token}: one scheduled run, got {runs:?}");
        assert_eq!(runs[0].trigger, "scheduled", "{runs:?}");
    }
    assert_eq!(
        env.service.runner.deliveries().remaining("SyncJobsQueue"),
        0,
        "the first pages were delivered twice"
    );
    // No page holds more than 3 tokens and the 2 segments' first pages
    // hold at most 6: the other 7 tokens were reached by continuations.
    // The malformed items may sit on a segment's last page: wait for it.
    // (A page delivered twice logs its malformed items twice.)
    let malformed = ["acme/../../etc", "acme/01MALFORMEDLEASE0000000000"];
    let logged = |lines: &[String], key: &str| lines.iter().any(|l| l.contains(key));
    let skipped = loop {
        let skipped: Vec<String> = env
            .log_lines()
            .into_iter()
            .filter(|line| line.contains("not a readable token"))
            .collect();
        if malformed.iter().all(|key| logged(&skipped, key)) || started.elapsed() > RUN_TIMEOUT {
            break skipped;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for key in malformed {
        assert!(logged(&skipped, key), "{key} was not logged: {skipped:#?}");
    }
}

/// A filter that matches few devices of a large token reads a bounded
/// number of devices per request: the page comes back short (here empty)
/// with a cursor, and following the cursors reaches every match.
#[tokio::test]
async fn a_filtered_listing_reads_a_bounded_number_of_devices_per_request() {
    let env = TestService::start().await;
    let devices = adesync_service::devices::READS_PER_PAGE + 1_500;
    let token = env.create_token("acme", devices).await;
    let run = env.wait_until_idle(&token, RUN_TIMEOUT).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let released = env.release_in_apple(&token, devices - 1).await;
    env.advance(7 * 24 * 3600).await;
    let full = env.request_sync(&token, "full").await;
    assert_eq!(full.status, 202, "{full:?}");
    env.wait_until_idle(&token, RUN_TIMEOUT).await;

    let mut requests = 0;
    let mut found = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!(
            "/v1/tokens/{}/devices?state=removed_from_apple&limit=1",
            token.token_id
        );
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let reply = env.call(Method::GET, &path, &token.jwt, None).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        requests += 1;
        let page = reply.body["devices"].as_array().unwrap().clone();
        found.extend(
            page.iter()
                .map(|d| d["serial_number"].as_str().unwrap().to_owned()),
        );
        match reply.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(requests <= 10, "the listing does not end");
    }
    assert_eq!(found, vec![released.clone()]);
    // The one match sorts anywhere: whichever request reaches it, the read
    // bound split the token's devices over more than one request.
    assert!(
        requests >= 2,
        "{requests} request(s): the reads were not bounded"
    );
}

/// Sets the token's device count as a sync of `devices` devices would have
/// left it. The count is the one every imported batch moves and every run's
/// close recounts from the stored devices; whatever reads it (the status,
/// the claim of the next sync) is the service's own code.
async fn set_device_count(
    env: &TestService,
    token: &adesync_tests::flows::CreatedToken,
    devices: u64,
) {
    use aws_sdk_dynamodb::types::AttributeValue;
    env.service
        .clients
        .dynamodb
        .update_item()
        .table_name(&env.service.config.tables.tokens)
        .key("account_id", AttributeValue::S("acme".into()))
        .key("token_id", AttributeValue::S(token.token_id.clone()))
        .update_expression("SET device_count = :n")
        .condition_expression("attribute_exists(token_id)")
        .expression_attribute_values(":n", AttributeValue::N(devices.to_string()))
        .send()
        .await
        .expect("the token's device count set");
}

/// Above 200,000 devices, the token's sync status and every sync started
/// warn that syncs will struggle and advise splitting its devices across
/// tokens (docs/product.md "Large tokens"). Importing 200,001 devices takes
/// minutes, so the token's count is set as such an import leaves it; the
/// warning is the service's own reading of it, through the API and the
/// sync-trigger, and it goes when the next run's close recounts the
/// token's real devices.
#[tokio::test]
async fn a_token_above_200000_devices_is_warned_about_in_its_status_and_its_syncs() {
    let env = TestService::start().await;
    let token = env.create_token("acme", 5).await;
    env.wait_until_idle(&token, RUN_TIMEOUT).await;
    let warns_large = |warnings: &Value| {
        warnings.as_array().unwrap().iter().any(|w| {
            let w = w.as_str().unwrap();
            w.contains("more than 200,000 devices") && w.contains("Split the devices")
        })
    };
    assert!(!warns_large(&env.sync_status(&token).await["warnings"]));

    // 200,000 is the limit itself: no warning.
    set_device_count(&env, &token, 200_000).await;
    let at_limit = env.sync_status(&token).await;
    assert_eq!(at_limit["device_count"], 200_000);
    assert!(!warns_large(&at_limit["warnings"]), "{at_limit}");

    // One more: the status warns…
    set_device_count(&env, &token, 200_001).await;
    let above = env.sync_status(&token).await;
    assert_eq!(above["device_count"], 200_001);
    assert!(warns_large(&above["warnings"]), "{above}");
    let shown = env
        .call(
            Method::GET,
            &format!("/v1/tokens/{}", token.token_id),
            &token.jwt,
            None,
        )
        .await;
    assert_eq!(shown.body["device_count"], 200_001, "{shown:?}");

    // …and so does the answer to a sync started.
    let started = env.request_sync(&token, "delta").await;
    assert_eq!(started.status, 202, "{started:?}");
    assert!(warns_large(&started.body["warnings"]), "{started:?}");
    let run_id = started.body["id"].as_str().unwrap();
    assert_eq!(started.body["run_id"], run_id, "{started:?}");

    // The run's close recounts the token's 5 devices: no warning any more.
    let run = env.wait_for_run(&token, run_id, RUN_TIMEOUT).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["id"], run_id, "{run}");
    let after = env.sync_status(&token).await;
    assert_eq!(after["device_count"], 5, "{after}");
    assert!(!warns_large(&after["warnings"]), "{after}");
}
