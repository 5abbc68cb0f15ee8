//! Syncs of any size at Apple's real pace, on a sped-up clock: a run keeps
//! its token for as long as it makes progress, survives a worker killed at
//! its deadline, tells the truth while it runs, and a run that stops is
//! recorded abandoned at once and followed by a full sync.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use adesync_service::faults::CrashPoint;
use adesync_tests::flows::CreatedToken;
use adesync_tests::{TestOptions, TestService};
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Value, json};

/// Apple's pace.
const APPLE_PER_MINUTE: u64 = 3_000;

fn serials(devices: &[Value]) -> HashSet<String> {
    devices
        .iter()
        .map(|d| d["serial_number"].as_str().unwrap().to_owned())
        .collect()
}

fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .unwrap_or_else(|| panic!("not a time: {value}"))
        .with_timezone(&Utc)
}

async fn sped_up(speed: f64) -> TestService {
    TestService::start_with(TestOptions {
        clock_speed: Some(speed),
        // Parts as large as a deployment's: the close is not what is tested.
        close_part_devices: Some(20_000),
        ..TestOptions::default()
    })
    .await
}

/// What was seen of a run while it went.
#[derive(Debug, Default)]
struct Seen {
    reads: usize,
    /// `imported` was above `fetched` in some answer.
    imported_above_fetched: Vec<Value>,
    /// A confident 0 seconds left while the run was still going.
    zero_left_while_running: Vec<Value>,
    /// The token's count while the run went (between 0 and the total).
    counts_while_running: Vec<u64>,
    /// Answers with `estimated_seconds_left: null`.
    unknown_left: usize,
    /// Highest measured rate shown.
    devices_per_minute: Option<u64>,
}

/// Polls the sync status until the token is idle, recording what it says.
async fn follow(env: &TestService, token: &CreatedToken, timeout: Duration) -> (Value, Seen) {
    let started = Instant::now();
    let mut seen = Seen::default();
    loop {
        let status = env.sync_status(token).await;
        seen.reads += 1;
        if status["state"] == "idle" {
            let runs = env
                .call(
                    Method::GET,
                    &format!("/v1/tokens/{}/runs?limit=1", token.token_id),
                    &token.jwt,
                    None,
                )
                .await;
            return (runs.body["runs"][0].clone(), seen);
        }
        let run = &status["run"];
        if run["imported"].as_u64() > run["fetched"].as_u64() {
            seen.imported_above_fetched.push(run.clone());
        }
        if run["estimated_seconds_left"] == 0 {
            seen.zero_left_while_running.push(run.clone());
        }
        if run["estimated_seconds_left"].is_null() {
            seen.unknown_left += 1;
        }
        if let Some(rate) = run["devices_per_minute"].as_u64() {
            seen.devices_per_minute = seen.devices_per_minute.max(Some(rate));
        }
        seen.counts_while_running
            .push(status["device_count"].as_u64().unwrap_or(0));
        assert!(
            started.elapsed() < timeout,
            "still syncing after {timeout:?}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// 48,000 devices at 3,000 a minute: 16 minutes of fetching, past the
/// 15-minute lease, with the simulator advertising pages of 5,000 (a page
/// that large would take 100 s at Apple's pace).
#[tokio::test]
async fn a_first_full_sync_longer_than_the_lease_completes_at_apples_pace_and_tells_the_truth() {
    const DEVICES: usize = 48_000;
    let env = sped_up(30.0).await;
    env.sim_post(
        "/_sim/rate",
        json!({"devices_per_minute": APPLE_PER_MINUTE}),
    )
    .await;
    let config = env.sim_post("/_sim/config", json!({})).await;
    assert_eq!(config["limit_maximum"], 5_000, "{config}");

    let token = env.create_token("acme", DEVICES).await;
    // While it runs, another sync is refused with the running run's
    // progress (a new token: its total, hence its time left, is unknown).
    let refused = env.request_sync(&token, "delta").await;
    assert_eq!(refused.status, 409, "{refused:?}");
    assert_eq!(refused.error(), "sync_in_progress");
    assert!(refused.body["run_id"].is_string(), "{refused:?}");
    assert!(
        refused.body.get("estimated_seconds_left").is_some(),
        "{refused:?}"
    );

    let (run, seen) = follow(&env, &token, Duration::from_secs(300)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["fetched"], DEVICES as u64, "{run}");
    assert_eq!(run["imported"], DEVICES as u64, "{run}");
    let took = time(&run["finished_at"]) - time(&run["started_at"]);
    assert!(
        took > chrono::Duration::minutes(15),
        "the run took {took} of the clock: not longer than its lease"
    );
    // Pages sized to Apple's pace (1,000 devices, 20 s each), not 5,000.
    assert!(
        run["pages"].as_u64().unwrap() >= (DEVICES / 1_000) as u64,
        "{run}"
    );

    // Truth while it ran.
    assert!(seen.reads > 20, "{seen:?}");
    assert!(
        seen.imported_above_fetched.is_empty(),
        "imported above fetched: {:?}",
        seen.imported_above_fetched
    );
    assert!(
        seen.zero_left_while_running.is_empty(),
        "0 s left while running: {:?}",
        seen.zero_left_while_running
    );
    assert!(
        seen.unknown_left > 0,
        "a new token's first sync cannot know its time left: {seen:?}"
    );
    assert!(
        seen.counts_while_running
            .iter()
            .any(|&c| c > 0 && c < DEVICES as u64),
        "the device count did not move with the import: {:?}",
        seen.counts_while_running
    );
    let rate = seen.devices_per_minute.expect("a measured rate");
    assert!(
        (2_000..=3_600).contains(&rate),
        "measured {rate} devices/min at Apple's 3,000"
    );

    let listed = env.all_devices(&token, "").await;
    assert_eq!(listed.len(), DEVICES);
    assert_eq!(
        serials(&listed),
        serials(&env.sim_devices(&token.server_uuid).await)
    );
    let status = env.sync_status(&token).await;
    assert_eq!(status["device_count"], DEVICES as u64, "{status}");
    assert_eq!(status["next_sync_is_full"], false, "{status}");
    assert_eq!(
        time(&status["last_full_sync_at"]),
        time(&run["started_at"]),
        "the 7 days count from the completed full sync"
    );
}

/// A worker that hangs mid-fetch is killed at its 90-second timeout; SQS
/// hands its job back after the 9-minute visibility timeout and the run
/// goes on, well inside its 15-minute lease. A page slower than its wait
/// is asked again smaller instead of failing the run.
#[tokio::test]
async fn a_worker_killed_mid_fetch_is_redelivered_and_a_slow_page_is_asked_smaller() {
    const DEVICES: usize = 12_000;
    let env = sped_up(60.0).await;
    let logged = adesync_tests::logs::mark();
    env.sim_post(
        "/_sim/rate",
        json!({"devices_per_minute": APPLE_PER_MINUTE}),
    )
    .await;
    env.service
        .runner
        .faults()
        .arm(CrashPoint::WorkerStallsAfterSave, 1);
    let token = env.create_token("acme", DEVICES).await;
    // Once the run is going, one page takes 70 s: past its 60-second wait.
    let waiting = Instant::now();
    while env.sync_status(&token).await["run"]["pages"]
        .as_u64()
        .unwrap_or(0)
        < 2
    {
        assert!(waiting.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.sim_post(
        "/_sim/faults",
        json!({"route": "/server/devices", "delay_ms": 70_000, "times": 1}),
    )
    .await;

    let (run, _) = follow(&env, &token, Duration::from_secs(240)).await;
    assert_eq!(
        env.service
            .runner
            .faults()
            .remaining(CrashPoint::WorkerStallsAfterSave),
        0,
        "the worker never stalled"
    );
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["recovery"], false, "{run}");
    assert_eq!(run["fetched"], DEVICES as u64, "{run}");
    assert_eq!(run["imported"], DEVICES as u64, "{run}");
    let ours = |needle: &str| {
        adesync_tests::logs::lines_since(logged)
            .iter()
            .any(|line| line.contains(needle) && line.contains(&token.token_id))
    };
    assert!(
        ours("asking a smaller one"),
        "the slow page was not asked again smaller"
    );
    // The kill cost a timeout (90 s) and a visibility timeout (540 s).
    let took = time(&run["finished_at"]) - time(&run["started_at"]);
    assert!(
        took > chrono::Duration::minutes(12),
        "took {took}: the stalled step was not waited out"
    );
    let listed = env.all_devices(&token, "").await;
    assert_eq!(
        serials(&listed),
        serials(&env.sim_devices(&token.server_uuid).await)
    );
    assert_eq!(
        env.sync_status(&token).await["device_count"],
        DEVICES as u64
    );
}

/// Creates a token whose first full sync gets stuck after its first page
/// (the worker hangs, and the test moves the clock 16 minutes on), with one
/// device of that page released in Apple meanwhile. Returns the token, the
/// stuck run's id and the released serial.
async fn stuck_first_sync(env: &TestService, devices: usize) -> (CreatedToken, String, String) {
    env.sim_post(
        "/_sim/config",
        json!({"limit_default": 200, "limit_maximum": 200}),
    )
    .await;
    env.service
        .runner
        .faults()
        .arm(CrashPoint::WorkerStallsAfterSave, 1);
    let token = env.create_token("acme", devices).await;
    let waiting = Instant::now();
    let stuck = loop {
        let status = env.sync_status(&token).await;
        if status["run"]["imported"].as_u64().unwrap_or(0) >= 200
            && env
                .service
                .runner
                .faults()
                .remaining(CrashPoint::WorkerStallsAfterSave)
                == 0
        {
            break status["run"]["run_id"].as_str().unwrap().to_owned();
        }
        assert!(
            waiting.elapsed() < Duration::from_secs(60),
            "the first page never came: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let imported = env.all_devices(&token, "").await;
    assert_eq!(imported.len(), 200, "only the first page is in");
    let released = imported[7]["serial_number"].as_str().unwrap().to_owned();
    env.sim_post(
        &format!(
            "/_sim/servers/{}/devices/{released}/release",
            token.server_uuid
        ),
        json!({}),
    )
    .await;
    // No progress for 16 minutes.
    env.advance(16 * 60).await;
    (token, stuck, released)
}

/// The scheduler's hourly pass records the stuck run abandoned and starts
/// the full sync it still owes, which releases what Apple released
/// meanwhile; the 7-day cooldown then counts from that completed full sync.
#[tokio::test]
async fn a_stuck_run_is_recorded_abandoned_by_the_next_scheduler_pass_and_a_full_sync_follows() {
    let env = TestService::start().await;
    let (token, stuck, released) = stuck_first_sync(&env, 1_000).await;

    // The pass runs through the sync-jobs queue. Nothing reads the token's
    // status through the API meanwhile (a status read would record the
    // stuck run itself): the store shows when the pass started the next run.
    env.service
        .runner
        .fire("sync-scheduler", json!({"sweep": "full"}))
        .await
        .expect("the full-sync pass");
    let token_id = adesync_core::ids::TokenId::parse(&token.token_id).unwrap();
    let waiting = Instant::now();
    while env
        .store()
        .runs
        .recent_runs(&token_id, 2)
        .await
        .unwrap()
        .len()
        < 2
    {
        assert!(
            waiting.elapsed() < Duration::from_secs(30),
            "the pass started no full sync"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let abandoned = env
        .wait_for_run(&token, &stuck, Duration::from_secs(5))
        .await;
    assert_eq!(abandoned["status"], "abandoned", "{abandoned}");
    assert!(
        abandoned["error"]
            .as_str()
            .is_some_and(|e| e.contains("no progress for 15 minutes")),
        "{abandoned}"
    );
    let recovery = env.wait_until_idle(&token, Duration::from_secs(120)).await;
    assert_ne!(recovery["run_id"], stuck.as_str());
    assert_eq!(recovery["status"], "succeeded", "{recovery}");
    assert_eq!(recovery["kind"], "full", "{recovery}");
    assert_eq!(recovery["recovery"], true, "{recovery}");
    assert_eq!(recovery["trigger"], "scheduled", "{recovery}");

    let device = env
        .call(
            Method::GET,
            &format!("/v1/tokens/{}/devices/{released}", token.token_id),
            &token.jwt,
            None,
        )
        .await;
    assert_eq!(device.body["state"], "removed_from_apple", "{device:?}");
    let status = env.sync_status(&token).await;
    // Released devices stay listed (and counted) until they are deleted.
    assert_eq!(status["device_count"], 1_000, "{status}");
    assert_eq!(status["next_sync_is_full"], false, "{status}");
    assert_eq!(
        time(&status["last_full_sync_at"]),
        time(&recovery["started_at"]),
        "{status}"
    );
    let refused = env.request_sync(&token, "full").await;
    assert_eq!(refused.status, 429, "{refused:?}");
    assert_eq!(refused.error(), "full_sync_cooldown");
    assert_eq!(
        time(&refused.body["retry_at"]),
        time(&recovery["started_at"]) + chrono::Duration::days(7)
    );
}

/// Reading the status is enough to record a stuck run abandoned: nobody
/// reads "running" about a run that lost its token.
#[tokio::test]
async fn the_status_read_records_a_stuck_run_abandoned_at_once() {
    let env = TestService::start().await;
    let (token, stuck, _) = stuck_first_sync(&env, 400).await;

    let status = env.sync_status(&token).await;
    assert_eq!(status["state"], "idle", "{status}");
    assert_eq!(status["last_outcome"], "abandoned", "{status}");
    assert_eq!(status["next_sync_is_full"], true, "{status}");
    assert_eq!(status["device_count"], 200, "{status}");
    let runs = env
        .call(
            Method::GET,
            &format!("/v1/tokens/{}/runs", token.token_id),
            &token.jwt,
            None,
        )
        .await;
    let run = runs.body["runs"]
        .as_array()
        .and_then(|runs| runs.iter().find(|r| r["run_id"] == stuck.as_str()))
        .cloned()
        .expect("the stuck run");
    assert_eq!(run["status"], "abandoned", "{run}");
    assert_eq!(run["estimated_seconds_left"], 0, "{run}");
    // The next sync, even a delta asked for by hand, is the owed full one.
    let next = env.request_sync(&token, "delta").await;
    assert_eq!(next.status, 202, "{next:?}");
    assert_eq!(next.body["kind"], "full", "{next:?}");
}

/// SQS delivers the jobs of a run twice at once: one walker moves the run,
/// the other finds the run walked and does nothing — no page fetched twice,
/// no batch numbered twice, every device once.
#[tokio::test]
async fn a_duplicate_delivery_of_a_sync_job_cannot_advance_the_run() {
    const DEVICES: usize = 3_000;
    let env = TestService::start().await;
    env.sim_post(
        "/_sim/config",
        json!({"limit_default": 500, "limit_maximum": 500}),
    )
    .await;
    // Half a second a page, so both deliveries overlap.
    env.sim_post("/_sim/rate", json!({"devices_per_minute": 60_000}))
        .await;
    env.service
        .runner
        .deliveries()
        .deliver_twice("SyncJobsQueue", 100);
    let token = env.create_token("acme", DEVICES).await;
    let run = env.wait_until_idle(&token, Duration::from_secs(120)).await;
    assert!(
        env.service.runner.deliveries().remaining("SyncJobsQueue") < 100,
        "no job was delivered twice"
    );
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["fetched"], DEVICES as u64, "{run}");
    assert_eq!(run["imported"], DEVICES as u64, "{run}");
    // Six pages of the snapshot, then the sync page that opens the cursor.
    assert_eq!(run["pages"], (DEVICES / 500 + 1) as u64, "{run}");
    let listed = env.all_devices(&token, "").await;
    assert_eq!(listed.len(), DEVICES);
    assert_eq!(
        serials(&listed),
        serials(&env.sim_devices(&token.server_uuid).await)
    );
    let stats = env.sim_stats().await;
    assert_eq!(
        stats["requests"]["/server/devices"],
        (DEVICES / 500) as u64,
        "a page was fetched twice: {stats}"
    );
    assert_eq!(stats["requests"]["/devices/sync"], 1, "{stats}");
}
