//! Domain events read off the stage's EventBridge bus, as a consumer
//! reads them: a rule on the bus with an SQS queue as its target (moto).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use adesync_local::bus::EventTap;
use adesync_service::faults::CrashPoint;
use adesync_tests::{TestService, flows::CreatedToken};
use reqwest::Method;
use serde_json::Value;

const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// The events of a finished step are on the queue well within this.
const QUIET: Duration = Duration::from_secs(2);

async fn tap(env: &TestService) -> EventTap {
    let bus = env
        .service
        .deployed
        .bus_name("EventBus")
        .expect("the stage's bus");
    EventTap::start(
        &env.service.clients,
        bus,
        &format!("{}-tap", env.service.deployed.stage),
    )
    .await
    .expect("a rule and a queue on the bus")
}

/// A token of "acme" with `devices` devices, its first full sync done, seen
/// by a tap on the bus that started before it: the tap and the events the
/// first sync published.
async fn synced_with_tap(
    env: &TestService,
    devices: usize,
) -> (EventTap, CreatedToken, Vec<Value>) {
    let tap = tap(env).await;
    let token = env.create_token("acme", devices).await;
    env.wait_until_idle(&token, RUN_TIMEOUT).await;
    let first = tap.drain(QUIET).await.unwrap();
    (tap, token, first)
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["detail-type"] == kind).collect()
}

fn device_events(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| {
            e["detail-type"]
                .as_str()
                .is_some_and(|k| k.starts_with("device."))
        })
        .collect()
}

fn serial(event: &Value) -> String {
    event["detail"]["device"]["serial"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn sim_serials(env: &TestService, token: &CreatedToken) -> HashSet<String> {
    env.sim_devices(&token.server_uuid)
        .await
        .iter()
        .map(|d| d["serial_number"].as_str().unwrap().to_owned())
        .collect()
}

/// Moves the simulator's `index`-th device of `token` to another MDM server
/// and runs the delta that releases it; returns its serial.
async fn moved_by_a_delta(env: &TestService, token: &CreatedToken, index: usize) -> String {
    let moved = env.sim_devices(&token.server_uuid).await[index]["serial_number"]
        .as_str()
        .unwrap()
        .to_owned();
    env.move_to_another_server(token, &moved).await;
    env.advance(15 * 60).await;
    let reply = env.request_sync(token, "delta").await;
    assert_eq!(reply.status, 202, "{reply:?}");
    env.wait_until_idle(token, RUN_TIMEOUT).await;
    moved
}

#[tokio::test]
async fn the_first_sync_announces_each_device_once_and_an_unchanged_resync_nothing() {
    let env = TestService::start().await;
    let (tap, token, first) = synced_with_tap(&env, 30).await;

    let added = of_kind(&first, "device.added");
    let mut per_serial: HashMap<String, usize> = HashMap::new();
    for event in &added {
        *per_serial.entry(serial(event)).or_default() += 1;
        assert_eq!(event["source"], "adesync");
        assert_eq!(event["detail"]["token_id"], token.token_id.as_str());
        assert_eq!(event["detail"]["device"]["state"], "active");
    }
    assert_eq!(
        per_serial.keys().cloned().collect::<HashSet<_>>(),
        sim_serials(&env, &token).await,
        "one device.added per device"
    );
    assert!(per_serial.values().all(|n| *n == 1), "{per_serial:?}");
    assert_eq!(device_events(&first).len(), 30, "nothing but the additions");
    let finished = of_kind(&first, "sync.finished");
    assert_eq!(finished.len(), 1, "{first:#?}");
    let run = &finished[0]["detail"]["run"];
    assert_eq!(
        (run["kind"].as_str(), run["outcome"].as_str()),
        (Some("full"), Some("succeeded"))
    );
    assert_eq!(
        (run["imported"].as_u64(), run["listed"].as_u64()),
        (Some(30), Some(30))
    );

    // A full re-sync a week later: Apple has nothing new.
    env.advance(7 * 24 * 3600).await;
    let reply = env.request_sync(&token, "full").await;
    assert_eq!(reply.status, 202, "{reply:?}");
    let rerun = env.wait_until_idle(&token, RUN_TIMEOUT).await;
    assert_eq!(rerun["kind"], "full", "{rerun}");
    let again = tap.drain(QUIET).await.unwrap();
    assert_eq!(
        device_events(&again),
        Vec::<&Value>::new(),
        "an unchanged re-sync announces no device"
    );
    assert_eq!(of_kind(&again, "sync.finished").len(), 1, "{again:#?}");
    tap.stop().await;
}

#[tokio::test]
async fn a_release_and_an_admin_delete_are_announced() {
    let env = TestService::start().await;
    let (tap, token, _) = synced_with_tap(&env, 6).await;

    // Moved to another server: the next delta says `deleted`.
    let moved = moved_by_a_delta(&env, &token, 1).await;
    let events = tap.drain(QUIET).await.unwrap();
    let devices = device_events(&events);
    assert_eq!(devices.len(), 1, "{events:#?}");
    assert_eq!(devices[0]["detail-type"], "device.released");
    assert_eq!(serial(devices[0]), moved);
    assert_eq!(
        devices[0]["detail"]["device"]["state"],
        "removed_from_apple"
    );

    // Released in Apple Business: the next full sync's sweep releases it.
    let released = env.release_in_apple(&token, 0).await;
    env.advance(7 * 24 * 3600).await;
    let reply = env.request_sync(&token, "full").await;
    assert_eq!(reply.status, 202, "{reply:?}");
    env.wait_until_idle(&token, RUN_TIMEOUT).await;
    let events = tap.drain(QUIET).await.unwrap();
    let devices = device_events(&events);
    assert_eq!(devices.len(), 1, "{events:#?}");
    assert_eq!(devices[0]["detail-type"], "device.released");
    assert_eq!(serial(devices[0]), released);

    let deleted = sim_serials(&env, &token)
        .await
        .into_iter()
        .find(|s| *s != released)
        .unwrap();
    let reply = env
        .call(
            Method::DELETE,
            &format!("/v1/tokens/{}/devices/{deleted}", token.token_id),
            &token.jwt,
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let events = tap.drain(QUIET).await.unwrap();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["detail-type"], "device.deleted");
    assert_eq!(serial(&events[0]), deleted);
    assert_eq!(events[0]["detail"]["reason"], "admin");
    tap.stop().await;
}

#[tokio::test]
async fn a_changed_device_and_apples_assignment_answers_are_announced() {
    let env = TestService::start().await;
    let (tap, token, _) = synced_with_tap(&env, 4).await;
    let serials = env.serials(&token).await;
    let [renamed, ok, failed] = [0, 1, 2].map(|i| serials[i].clone());

    // Apple's attributes change: the next delta announces exactly that device.
    env.sim_patch(
        &format!("/_sim/servers/{}/devices/{renamed}", token.server_uuid),
        serde_json::json!({"asset_tag": "front-desk"}),
    )
    .await;
    env.advance(15 * 60).await;
    let reply = env.request_sync(&token, "delta").await;
    assert_eq!(reply.status, 202, "{reply:?}");
    env.wait_until_idle(&token, RUN_TIMEOUT).await;
    let events = tap.drain(QUIET).await.unwrap();
    let devices = device_events(&events);
    assert_eq!(devices.len(), 1, "{events:#?}");
    assert_eq!(devices[0]["detail-type"], "device.changed");
    assert_eq!(serial(devices[0]), renamed);
    assert_eq!(devices[0]["detail"]["device"]["state"], "active");

    // Apple's answer per serial to an assignment: one event each.
    env.sim_post(
        &format!(
            "/_sim/servers/{}/devices/{failed}/assign-outcome",
            token.server_uuid
        ),
        serde_json::json!({"status": "FAILED"}),
    )
    .await;
    let policy = env.new_policy(&token, "Front desk").await;
    let reply = env.assign(&token, &policy, &[&ok, &failed]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let events = tap.drain(QUIET).await.unwrap();
    let assigned = of_kind(&events, "device.assigned");
    assert_eq!(assigned.len(), 2, "{events:#?}");
    let answer = |serial_number: &str| {
        assigned
            .iter()
            .find(|e| serial(e) == serial_number)
            .map(|e| e["detail"]["assignment"].clone())
            .unwrap_or_else(|| panic!("no device.assigned for {serial_number}: {events:#?}"))
    };
    let ok_answer = answer(&ok);
    assert_eq!(ok_answer["status"], "assigned", "{ok_answer}");
    assert_eq!(ok_answer["policy_id"], policy.as_str(), "{ok_answer}");
    assert!(ok_answer["profile_uuid"].is_string(), "{ok_answer}");
    let failed_answer = answer(&failed);
    assert_eq!(failed_answer["status"], "failed", "{failed_answer}");
    assert!(failed_answer["retry_at"].is_string(), "{failed_answer}");
    assert_ne!(
        assigned[0]["detail"]["id"], assigned[1]["detail"]["id"],
        "each answer has its own id"
    );
    tap.stop().await;
}

/// A run that stops making progress never closes, yet its end is
/// announced: the scheduled pass that records it abandoned publishes its
/// `sync.finished` at once.
#[tokio::test]
async fn a_stuck_run_recorded_abandoned_by_a_pass_is_announced_finished() {
    let env = TestService::start().await;
    let tap = tap(&env).await;
    env.sim_post(
        "/_sim/config",
        serde_json::json!({"limit_default": 100, "limit_maximum": 100}),
    )
    .await;
    let faults = env.service.runner.faults();
    faults.arm(CrashPoint::WorkerStallsAfterSave, 1);
    let token = env.create_token("acme", 300).await;
    let waiting = std::time::Instant::now();
    let stuck = loop {
        let status = env.sync_status(&token).await;
        if status["run"]["imported"].as_u64().unwrap_or(0) >= 100
            && faults.remaining(CrashPoint::WorkerStallsAfterSave) == 0
        {
            break status["run"]["run_id"].as_str().unwrap().to_owned();
        }
        assert!(
            waiting.elapsed() < Duration::from_secs(60),
            "the first page never came: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let before = tap.drain(QUIET).await.unwrap();
    assert!(of_kind(&before, "sync.finished").is_empty(), "{before:#?}");

    // No progress for 16 minutes; the hourly pass notices.
    env.advance(16 * 60).await;
    env.service
        .runner
        .fire("sync-scheduler", serde_json::json!({"sweep": "full"}))
        .await
        .expect("the full-sync pass");
    // The pass runs through the sync-jobs queue: read until it has spoken.
    let mut events = Vec::new();
    let waiting = std::time::Instant::now();
    let finished = loop {
        events.extend(tap.drain(QUIET).await.unwrap());
        let finished: Vec<&Value> = of_kind(&events, "sync.finished")
            .into_iter()
            .filter(|e| e["detail"]["run"]["run_id"] == stuck.as_str())
            .collect();
        if !finished.is_empty() || waiting.elapsed() > Duration::from_secs(30) {
            break finished.into_iter().cloned().collect::<Vec<Value>>();
        }
    };
    assert_eq!(finished.len(), 1, "{events:#?}");
    let run = &finished[0]["detail"]["run"];
    assert_eq!(run["outcome"], "abandoned", "{run}");
    assert_eq!(run["kind"], "full", "{run}");
    assert!(run["imported"].as_u64().unwrap_or(0) >= 100, "{run}");
    assert!(
        run["error"]
            .as_str()
            .is_some_and(|e| e.contains("no progress for 15 minutes")),
        "{run}"
    );
    tap.stop().await;
}

/// A released device is deleted once its deletion date passes: the next
/// close deletes it and announces it (DynamoDB's TTL would remove it
/// silently, days later).
#[tokio::test]
async fn a_released_device_past_its_deletion_date_is_deleted_and_announced() {
    let env = TestService::start().await;
    let (tap, token, _) = synced_with_tap(&env, 3).await;
    let moved = moved_by_a_delta(&env, &token, 0).await;
    let events = tap.drain(QUIET).await.unwrap();
    assert_eq!(of_kind(&events, "device.released").len(), 1, "{events:#?}");
    assert_eq!(of_kind(&events, "device.deleted").len(), 0, "{events:#?}");

    // Past the longest lifetime of a released device (45 days).
    env.advance(46 * 24 * 3600).await;
    assert_eq!(env.request_sync(&token, "delta").await.status, 202);
    env.wait_until_idle(&token, RUN_TIMEOUT).await;
    let events = tap.drain(QUIET).await.unwrap();
    let deleted = of_kind(&events, "device.deleted");
    assert_eq!(deleted.len(), 1, "{events:#?}");
    assert_eq!(serial(deleted[0]), moved);
    assert_eq!(deleted[0]["detail"]["reason"], "expired");
    let gone = env
        .call(
            Method::GET,
            &format!("/v1/tokens/{}/devices/{moved}", token.token_id),
            &token.jwt,
            None,
        )
        .await;
    assert_eq!(gone.status, 404, "{gone:?}");

    // The next close finds nothing more to delete or announce.
    env.advance(15 * 60).await;
    assert_eq!(env.request_sync(&token, "delta").await.status, 202);
    env.wait_until_idle(&token, RUN_TIMEOUT).await;
    let events = tap.drain(QUIET).await.unwrap();
    assert_eq!(device_events(&events), Vec::<&Value>::new(), "{events:#?}");
    tap.stop().await;
}

#[tokio::test]
async fn while_the_bus_refuses_the_import_goes_on_and_the_events_arrive_with_the_next_close() {
    let env = TestService::start().await;
    let tap = tap(&env).await;
    let faults = env.service.runner.faults();
    faults.arm(CrashPoint::BusRefuses, 10_000);
    let token = env.create_token("acme", 12).await;
    let run = env.wait_until_idle(&token, RUN_TIMEOUT).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        env.all_devices(&token, "").await.len(),
        12,
        "the changes are kept"
    );
    assert_eq!(tap.drain(QUIET).await.unwrap(), Vec::<Value>::new());
    let refused = 10_000 - faults.remaining(CrashPoint::BusRefuses);
    assert!(
        refused >= 2,
        "the batch's and the close's publishes were refused: {refused}"
    );

    // The bus is back; the token's next run's close publishes what is owed.
    faults.arm(CrashPoint::BusRefuses, 0);
    env.advance(15 * 60).await;
    let reply = env.request_sync(&token, "delta").await;
    assert_eq!(reply.status, 202, "{reply:?}");
    env.wait_until_idle(&token, RUN_TIMEOUT).await;
    let events = tap.drain(QUIET).await.unwrap();
    let added: HashSet<String> = of_kind(&events, "device.added")
        .into_iter()
        .map(serial)
        .collect();
    assert_eq!(added, sim_serials(&env, &token).await, "{events:#?}");
    assert_eq!(
        of_kind(&events, "sync.finished").len(),
        2,
        "both runs: {events:#?}"
    );
    tap.stop().await;
}

#[tokio::test]
async fn a_token_is_announced_expiring_once_at_30_and_7_days_then_expired_then_renewed() {
    let env = TestService::start().await;
    let (tap, token, _) = synced_with_tap(&env, 2).await;
    let shown = env.token(&token).await;
    let expires_at: chrono::DateTime<chrono::Utc> = shown.body["expires_at"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{shown:?}"));
    let now: chrono::DateTime<chrono::Utc> = env
        .http
        .get(env.api("/_dev/clock"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["now"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    let expiring = |events: &[Value]| -> Vec<Value> {
        of_kind(events, "token.expiring")
            .into_iter()
            .cloned()
            .collect()
    };
    // 31 days before: nothing yet.
    env.advance((expires_at - now - chrono::Duration::days(31)).num_seconds())
        .await;
    env.sweep("delta").await;
    assert_eq!(
        expiring(&tap.drain(QUIET).await.unwrap()),
        Vec::<Value>::new()
    );
    // 30 days before (and an hour): one notice, however many passes see it.
    env.advance(chrono::Duration::hours(25).num_seconds()).await;
    env.sweep("delta").await;
    env.sweep("assignments").await;
    let events = tap.drain(QUIET).await.unwrap();
    let notices = expiring(&events);
    assert_eq!(notices.len(), 1, "{events:#?}");
    assert_eq!(notices[0]["detail"]["token_id"], token.token_id.as_str());
    assert_eq!(notices[0]["detail"]["token"]["days_left"], 30);
    env.sweep("delta").await;
    assert_eq!(
        expiring(&tap.drain(QUIET).await.unwrap()),
        Vec::<Value>::new()
    );
    // 7 days before: the next notice, once.
    env.advance(chrono::Duration::days(23).num_seconds()).await;
    env.sweep("delta").await;
    env.sweep("delta").await;
    let notices = expiring(&tap.drain(QUIET).await.unwrap());
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0]["detail"]["token"]["days_left"], 7);

    // Past its expiry (the 1-day notice is skipped by the jump): the status
    // changes to `expired`, announced once however many passes see it.
    let status_changes = |events: &[Value]| -> Vec<String> {
        of_kind(events, "token.status_changed")
            .into_iter()
            .map(|e| {
                e["detail"]["token"]["status"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect()
    };
    env.advance(chrono::Duration::days(8).num_seconds()).await;
    env.sweep("delta").await;
    env.sweep("assignments").await;
    let events = tap.drain(QUIET).await.unwrap();
    assert_eq!(status_changes(&events), ["expired"], "{events:#?}");
    assert_eq!(expiring(&events), Vec::<Value>::new(), "{events:#?}");
    env.sweep("delta").await;
    assert_eq!(
        status_changes(&tap.drain(QUIET).await.unwrap()),
        Vec::<String>::new()
    );

    // Renewed with a newly downloaded file: back to `ok`.
    let response = env
        .http
        .post(env.sim(&format!("/_sim/servers/{}/token", token.server_uuid)))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{response:?}");
    let file: Value = response.json().await.unwrap();
    let renewed = env
        .call(
            Method::PUT,
            &format!("/v1/tokens/{}/renewal", token.token_id),
            &token.jwt,
            Some(serde_json::json!({
                "apple_id": "admin@acme.test",
                "token_file": file["token_file"],
            })),
        )
        .await;
    assert_eq!(renewed.status, 200, "{renewed:?}");
    assert_eq!(renewed.body["status"], "ok", "{renewed:?}");
    let events = tap.drain(QUIET).await.unwrap();
    assert_eq!(status_changes(&events), ["ok"], "{events:#?}");
    tap.stop().await;
}

#[tokio::test]
async fn a_token_refused_for_unsigned_terms_and_back_is_announced_each_time() {
    let env = TestService::start().await;
    let (tap, token, first) = synced_with_tap(&env, 3).await;
    assert_eq!(
        of_kind(&first, "token.status_changed"),
        Vec::<&Value>::new(),
        "a new token is ok: no change"
    );

    let terms = format!("/_sim/servers/{}/terms", token.server_uuid);
    env.sim_post(&terms, serde_json::json!({"signed": false}))
        .await;
    env.advance(15 * 60).await;
    let reply = env.request_sync(&token, "delta").await;
    assert_eq!(reply.status, 202, "{reply:?}");
    env.wait_until_idle(&token, RUN_TIMEOUT).await;
    let refused = tap.drain(QUIET).await.unwrap();
    let changes = of_kind(&refused, "token.status_changed");
    assert_eq!(changes.len(), 1, "{refused:#?}");
    assert_eq!(changes[0]["detail"]["token"]["status"], "terms_not_signed");

    env.sim_post(&terms, serde_json::json!({"signed": true}))
        .await;
    env.advance(15 * 60).await;
    let reply = env.request_sync(&token, "delta").await;
    assert_eq!(reply.status, 202, "{reply:?}");
    env.wait_until_idle(&token, RUN_TIMEOUT).await;
    let back = tap.drain(QUIET).await.unwrap();
    let changes = of_kind(&back, "token.status_changed");
    assert_eq!(changes.len(), 1, "{back:#?}");
    assert_eq!(changes[0]["detail"]["token"]["status"], "ok");
    tap.stop().await;
}
