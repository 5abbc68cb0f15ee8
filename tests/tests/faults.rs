//! Crashes and delivery faults: whatever is killed where, and however SQS
//! delivers, every device ends up present exactly once in its newest state
//! and the run's counts and outcome say what happened.

use std::collections::HashSet;
use std::time::Duration;

use adesync_core::clock::Clock;
use adesync_core::device::{AppleAttributes, DeviceRecord, Observation, Version};
use adesync_core::ids::{AccountId, RunId, Serial, TokenId};
use adesync_core::run::messages::{BatchMessage, DeviceBatch, EndOfRun, RunOutcome};
use adesync_core::sync::{SyncKind, SyncRequest, Trigger};
use adesync_service::faults::CrashPoint;
use adesync_tests::flows::CreatedToken;
use adesync_tests::{TestOptions, TestService};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::QueueAttributeName;
use reqwest::Method;
use serde_json::Value;

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

fn serials(devices: &[Value]) -> HashSet<String> {
    devices
        .iter()
        .map(|d| d["serial_number"].as_str().unwrap().to_owned())
        .collect()
}

/// A service whose clock runs 30 times faster: a message whose invocation
/// failed comes back after its queue's visibility timeout (9 minutes for a
/// sync job, 6 for a device batch), as on AWS — 18 and 12 real seconds here.
async fn redelivering() -> TestService {
    TestService::start_with(TestOptions {
        clock_speed: Some(30.0),
        ..TestOptions::default()
    })
    .await
}

/// Syncs `devices` devices with `point` armed `times`, then checks that
/// the run recovered with every device exactly once and exact counts.
async fn sync_through_a_crash(point: CrashPoint, times: u32, devices: usize) {
    let env = redelivering().await;
    env.service.runner.faults().arm(point, times);
    let token = env.create_token("acme", devices).await;
    let run = env.wait_until_idle(&token, RUN_TIMEOUT).await;
    assert_eq!(
        env.service.runner.faults().remaining(point),
        0,
        "{point:?} was never reached"
    );
    assert_eq!(run["status"], "succeeded", "{point:?}: {run}");
    assert_eq!(run["fetched"], devices as u64, "{point:?}: {run}");
    assert_eq!(run["imported"], devices as u64, "{point:?}: {run}");
    let listed = env.all_devices(&token, "").await;
    assert_eq!(listed.len(), devices, "{point:?}");
    assert_eq!(
        serials(&listed),
        serials(&env.sim_devices(&token.server_uuid).await),
        "{point:?}"
    );
    assert_eq!(
        env.sync_status(&token).await["device_count"],
        devices as u64
    );
}

#[tokio::test]
async fn the_worker_killed_after_sending_batches_before_saving_its_cursor_loses_nothing() {
    sync_through_a_crash(CrashPoint::WorkerBeforeSave, 1, 3_000).await;
}

#[tokio::test]
async fn the_worker_killed_after_part_of_a_pages_batches_loses_nothing() {
    sync_through_a_crash(CrashPoint::WorkerAfterPartialSend, 2, 3_000).await;
}

#[tokio::test]
async fn the_worker_killed_after_a_fetch_loses_nothing() {
    sync_through_a_crash(CrashPoint::WorkerAfterFetch, 1, 1_500).await;
}

#[tokio::test]
async fn the_importer_killed_mid_batch_loses_nothing() {
    sync_through_a_crash(CrashPoint::ImporterMidBatch, 2, 2_000).await;
}

#[tokio::test]
async fn the_importer_killed_before_marking_a_batch_counts_it_once() {
    sync_through_a_crash(CrashPoint::ImporterBeforeMark, 2, 2_000).await;
}

/// 2,500 devices close in three parts of 1,000 (the tests' part size).
#[tokio::test]
async fn the_importer_killed_between_parts_of_a_runs_close_counts_every_device_once() {
    sync_through_a_crash(CrashPoint::ImporterAfterNextPart, 2, 2_500).await;
}

/// A run the test feeds by hand, as the worker would.
struct HandRun {
    account: AccountId,
    token: TokenId,
    run: RunId,
}

async fn hand_run(env: &TestService, created: &CreatedToken) -> HandRun {
    let account = AccountId::parse("acme").unwrap();
    let token = TokenId::parse(&created.token_id).unwrap();
    let now = env.service.runner.clock().now();
    let claimed = env
        .store()
        .claims
        .claim_sync(
            &account,
            &token,
            SyncRequest {
                trigger: Trigger::Scheduled,
                kind: SyncKind::Delta,
            },
            now,
            RunId::new_at(now),
        )
        .await
        .unwrap();
    env.store()
        .runs
        .record_run_started(&account, &token, &claimed.claim, None)
        .await
        .unwrap();
    HandRun {
        account,
        token,
        run: claimed.claim.run_id,
    }
}

fn batch(run: &HandRun, seq: u64, records: Vec<DeviceRecord>) -> String {
    serde_json::to_string(&BatchMessage::Devices(DeviceBatch {
        account_id: run.account.clone(),
        token_id: run.token.clone(),
        run_id: run.run.clone(),
        seq,
        snapshot: false,
        records,
    }))
    .unwrap()
}

fn end(run: &HandRun, batches: u64) -> String {
    serde_json::to_string(&BatchMessage::EndOfRun(EndOfRun {
        account_id: run.account.clone(),
        token_id: run.token.clone(),
        run_id: run.run.clone(),
        kind: SyncKind::Delta,
        batches,
        fetched: 0,
        outcome: RunOutcome::Finished {
            sweep_at: None,
            warning: None,
        },
        closing: None,
    }))
    .unwrap()
}

fn modified(serial: &str, at: chrono::DateTime<chrono::Utc>, color: &str) -> DeviceRecord {
    DeviceRecord {
        serial: Serial::parse(serial).unwrap(),
        observation: Observation::Modified,
        version: Version::for_change(at, 0),
        attributes: AppleAttributes {
            model: Some("iPad Pro".into()),
            color: Some(color.into()),
            ..AppleAttributes::default()
        },
        released_by_replacement: false,
    }
}

/// Sends raw bodies to the token's FIFO group, each with its own
/// deduplication id, so SQS delivers every copy (as a re-send after the
/// five-minute deduplication window would).
async fn deliver(env: &TestService, token: &TokenId, bodies: &[String]) {
    for body in bodies {
        env.service
            .clients
            .sqs
            .send_message()
            .queue_url(&env.service.config.device_batches_queue_url)
            .message_group_id(token.as_str())
            .message_deduplication_id(uuid::Uuid::new_v4().to_string())
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn duplicate_and_reordered_batches_leave_the_newest_state() {
    let env = TestService::start().await;
    let created = env.create_token("acme", 3).await;
    env.wait_until_idle(&created, RUN_TIMEOUT).await;
    let serials: Vec<String> = env
        .sim_devices(&created.server_uuid)
        .await
        .iter()
        .map(|d| d["serial_number"].as_str().unwrap().to_owned())
        .collect();
    let run = hand_run(&env, &created).await;
    let t = chrono::Utc::now() + chrono::Duration::hours(1);
    let older = batch(
        &run,
        0,
        serials.iter().map(|s| modified(s, t, "RED")).collect(),
    );
    let newer = batch(
        &run,
        1,
        serials
            .iter()
            .map(|s| modified(s, t + chrono::Duration::seconds(5), "BLUE"))
            .collect(),
    );
    // Newest first, then the older one, then both again.
    deliver(
        &env,
        &run.token,
        &[newer.clone(), older.clone(), newer, older, end(&run, 2)],
    )
    .await;
    let record = env
        .wait_for_run(&created, run.run.as_str(), RUN_TIMEOUT)
        .await;
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_eq!(record["imported"], 6, "each batch counted once: {record}");
    for serial in &serials {
        let device = env
            .call(
                Method::GET,
                &format!("/v1/tokens/{}/devices/{serial}", created.token_id),
                &created.jwt,
                None,
            )
            .await;
        assert_eq!(device.body["color"], "BLUE", "{device:?}");
    }
    assert_eq!(env.all_devices(&created, "").await.len(), 3);
}

#[tokio::test]
async fn a_poison_batch_goes_to_the_dead_letter_queue_and_the_run_reports_it() {
    let env = redelivering().await;
    let created = env.create_token("acme", 2).await;
    env.wait_until_idle(&created, RUN_TIMEOUT).await;
    let run = hand_run(&env, &created).await;
    let t = chrono::Utc::now() + chrono::Duration::hours(1);
    deliver(
        &env,
        &run.token,
        &[
            batch(&run, 0, vec![modified("POISONTEST01", t, "GREEN")]),
            "{\"type\":\"devices\",\"records\":\"not a list\"}".to_owned(),
            batch(&run, 2, vec![modified("POISONTEST02", t, "GREEN")]),
            end(&run, 3),
        ],
    )
    .await;
    let record = env
        .wait_for_run(&created, run.run.as_str(), RUN_TIMEOUT)
        .await;
    assert_eq!(record["status"], "failed", "{record}");
    assert!(
        record["error"]
            .as_str()
            .unwrap()
            .contains("1 of 3 device batches could not be imported"),
        "{record}"
    );
    // The other batches were applied.
    for serial in ["POISONTEST01", "POISONTEST02"] {
        let device = env
            .call(
                Method::GET,
                &format!("/v1/tokens/{}/devices/{serial}", created.token_id),
                &created.jwt,
                None,
            )
            .await;
        assert_eq!(device.status, 200, "{serial}: {device:?}");
    }
    // The poison message waits in the dead-letter queue.
    let bodies = env.queued_bodies("DeviceBatchesDeadLetterQueue").await;
    assert_eq!(
        bodies,
        vec!["{\"type\":\"devices\",\"records\":\"not a list\"}"]
    );
    // The failed run makes the next sync a full one.
    assert_eq!(env.sync_status(&created).await["next_sync_is_full"], true);
}

#[tokio::test]
async fn dynamodb_throttling_is_retried_and_loses_nothing() {
    // At real speed: throttling is retried inside each function (the
    // store's backoff), so no record fails and waits for its queue.
    let env = TestService::start_with(TestOptions {
        throttle_dynamodb_every: Some(4),
        ..TestOptions::default()
    })
    .await;
    let token = env.create_token("acme", 2_000).await;
    let run = env.wait_until_idle(&token, RUN_TIMEOUT).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["imported"], 2_000, "{run}");
    let listed = env.all_devices(&token, "").await;
    assert_eq!(
        serials(&listed),
        serials(&env.sim_devices(&token.server_uuid).await)
    );
    assert_eq!(env.sync_status(&token).await["device_count"], 2_000);
}

#[tokio::test]
async fn a_worker_whose_lease_lapsed_cannot_overwrite_the_run_that_took_over() {
    let env = TestService::start().await;
    // Slow Apple: 200 devices a page, one second a page (under the test client's two-second timeout).
    env.sim_post(
        "/_sim/config",
        serde_json::json!({"limit_default": 200, "limit_maximum": 200}),
    )
    .await;
    env.sim_post(
        "/_sim/rate",
        serde_json::json!({"devices_per_minute": 12_000}),
    )
    .await;
    let token = env.create_token("acme", 1_000).await;
    // Wait until the first run has fetched a page.
    let waiting = std::time::Instant::now();
    let first = loop {
        let status = env.sync_status(&token).await;
        if status["run"]["pages"].as_u64().unwrap_or(0) >= 1 {
            break status["run"]["run_id"].as_str().unwrap().to_owned();
        }
        assert!(
            waiting.elapsed() < RUN_TIMEOUT,
            "the first run never fetched a page: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Fifteen minutes pass: the lease lapses while the worker still runs,
    // and a new sync takes the token over.
    env.advance(16 * 60).await;
    let takeover = env.request_sync(&token, "delta").await;
    assert_eq!(takeover.status, 202, "{takeover:?}");
    env.sim_post("/_sim/rate", serde_json::json!({"devices_per_minute": 0}))
        .await;
    let second = env
        .wait_for_run(
            &token,
            takeover.body["run_id"].as_str().unwrap(),
            RUN_TIMEOUT,
        )
        .await;
    assert_eq!(second["status"], "succeeded", "{second}");
    let abandoned = env.wait_for_run(&token, &first, RUN_TIMEOUT).await;
    assert_eq!(abandoned["status"], "abandoned", "{abandoned}");
    // The newer run's progress stands: every device, once.
    let listed = env.all_devices(&token, "").await;
    assert_eq!(listed.len(), 1_000);
    assert_eq!(
        serials(&listed),
        serials(&env.sim_devices(&token.server_uuid).await)
    );
    assert_eq!(env.sync_status(&token).await["state"], "idle");
}

/// The API refuses to delete a token while its import runs, but an import
/// that outlived its estimate may still be draining when the delete is
/// allowed: its batches must then leave nothing behind.
#[tokio::test]
async fn a_batch_applied_after_its_token_was_deleted_leaves_no_device() {
    let env = TestService::start().await;
    let created = env.create_token("acme", 0).await;
    env.wait_until_idle(&created, RUN_TIMEOUT).await;
    let run = hand_run(&env, &created).await;
    env.service
        .clients
        .dynamodb
        .delete_item()
        .table_name(&env.service.config.tables.tokens)
        .key("account_id", AttributeValue::S("acme".into()))
        .key("token_id", AttributeValue::S(created.token_id.clone()))
        .send()
        .await
        .unwrap();

    let t = chrono::Utc::now() + chrono::Duration::hours(1);
    let records = ["DRAIN0000001", "DRAIN0000002", "DRAIN0000003"]
        .iter()
        .map(|s| modified(s, t, "RED"))
        .collect();
    deliver(&env, &run.token, &[batch(&run, 0, records)]).await;
    wait_until_consumed(&env).await;

    let items = env
        .service
        .clients
        .dynamodb
        .query()
        .table_name(&env.service.config.tables.devices)
        .key_condition_expression("token_id = :t")
        .expression_attribute_values(":t", AttributeValue::S(created.token_id.clone()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert_eq!(items.count(), 0, "orphaned devices: {:?}", items.items());
}

/// Waits until the device-batches queue holds no message, visible or in flight.
async fn wait_until_consumed(env: &TestService) {
    let started = std::time::Instant::now();
    loop {
        let attributes = env
            .service
            .clients
            .sqs
            .get_queue_attributes()
            .queue_url(&env.service.config.device_batches_queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap();
        let left: u64 = attributes
            .attributes()
            .map(|a| a.values().filter_map(|v| v.parse::<u64>().ok()).sum())
            .unwrap_or(0);
        if left == 0 {
            return;
        }
        assert!(
            started.elapsed() < RUN_TIMEOUT,
            "{left} messages still on the device-batches queue"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
