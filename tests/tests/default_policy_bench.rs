//! Measures what a default policy costs a 20,000-device first sync: the import's
//! duration with and without one, and the assignment that follows it (requests to
//! Apple, time until every device is assigned).
//!
//! Ignored by default (minutes of work); run it with
//! `cargo test -p adesync-tests --test default_policy_bench -- --ignored --nocapture`.
//! Figures go to docs/performance.md ("Default-policy assignment").

use std::time::{Duration, Instant};

use adesync_core::ids::TokenId;
use adesync_tests::TestService;
use adesync_tests::flows::CreatedToken;
use serde_json::{Value, json};

const DEVICES: usize = 20_000;
const ROUNDS: usize = 3;
const TIMEOUT: Duration = Duration::from_secs(900);

fn seconds(run: &Value, field: &str) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(run[field].as_str().unwrap_or_default())
        .unwrap_or_else(|_| panic!("run without {field}: {run}"))
}

struct Measured {
    import: Duration,
    assignment: Option<Duration>,
    requests: u64,
}

/// A token whose MDM server gets `DEVICES` devices after the token's own (empty) first
/// sync, then a full sync a week later: every device is new to the service.
async fn first_sync(env: &TestService, default_policy: bool) -> Measured {
    let token: CreatedToken = env.create_token("acme", 0).await;
    env.wait_until_idle(&token, TIMEOUT).await;
    if default_policy {
        let policy = env.new_policy(&token, "Default").await;
        assert_eq!(env.set_default_policy(&token, &policy).await.status, 200);
    }
    env.sim_post(
        &format!("/_sim/servers/{}/devices", token.server_uuid),
        json!({ "count": DEVICES }),
    )
    .await;
    env.advance(7 * 24 * 3600 + 60).await;
    let requests = env.sim_assign_requests().await;
    let sync = env.request_sync(&token, "full").await;
    assert_eq!(sync.status, 202, "{sync:?}");
    let run = env
        .wait_for_run(&token, sync.body["run_id"].as_str().unwrap(), TIMEOUT)
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["imported"], DEVICES as u64, "{run}");
    let closed = Instant::now();
    let import = (seconds(&run, "finished_at") - seconds(&run, "started_at"))
        .to_std()
        .unwrap_or_default();
    let assignment = if default_policy {
        let store = env.store();
        let token_id = TokenId::parse(&token.token_id).unwrap();
        let clock = env.service.runner.clock();
        loop {
            let now = adesync_core::clock::Clock::now(&*clock);
            if !store
                .devices
                .has_due_assignments(&token_id, now)
                .await
                .unwrap()
            {
                break;
            }
            assert!(closed.elapsed() < TIMEOUT, "assignment not done");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let elapsed = closed.elapsed();
        let devices = env.all_devices(&token, "").await;
        assert_eq!(devices.len(), DEVICES);
        assert!(
            devices
                .iter()
                .all(|d| d["assignment"]["status"] == "assigned"),
            "every device assigned"
        );
        Some(elapsed)
    } else {
        None
    };
    Measured {
        import,
        assignment,
        requests: env.sim_assign_requests().await - requests,
    }
}

#[tokio::test]
#[ignore = "a benchmark: minutes of work; run with --ignored --nocapture"]
async fn default_policy_assignment_of_a_20000_device_first_sync() {
    let mut without = Vec::new();
    let mut with = Vec::new();
    for round in 0..ROUNDS {
        // Alternate the order so warm-up favours neither.
        for default_policy in if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        } {
            let env = TestService::start().await;
            let measured = first_sync(&env, default_policy).await;
            println!(
                "round {round}, default policy {default_policy}: import {:.1} s, assignment {:?}, assign requests {}",
                measured.import.as_secs_f64(),
                measured
                    .assignment
                    .map(|d| format!("{:.1} s", d.as_secs_f64())),
                measured.requests
            );
            if default_policy {
                assert!(
                    measured.requests <= 20,
                    "{} assign requests",
                    measured.requests
                );
                with.push(measured);
            } else {
                assert_eq!(measured.requests, 0);
                without.push(measured);
            }
        }
    }
    let mean = |runs: &[Measured]| {
        runs.iter().map(|m| m.import.as_secs_f64()).sum::<f64>() / runs.len() as f64
    };
    let (base, policy) = (mean(&without), mean(&with));
    let slowdown = (policy - base) / base * 100.0;
    println!(
        "import of {DEVICES} devices: {base:.1} s without a default policy, {policy:.1} s with one ({slowdown:+.1} %); assignment after the run: {:.1} s; assign requests: {}",
        with.iter()
            .filter_map(|m| m.assignment)
            .map(|d| d.as_secs_f64())
            .sum::<f64>()
            / with.len() as f64,
        with.iter().map(|m| m.requests).max().unwrap_or(0)
    );
    assert!(
        slowdown <= 10.0,
        "the default policy slowed the import by {slowdown:.1} %"
    );
}
