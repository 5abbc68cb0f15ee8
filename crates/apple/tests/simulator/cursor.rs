//! Whole runs driven by `adesync_core::cursor` against the simulator, and each cursor error.

use adesync_apple::{AppleError, OpType};
use adesync_core::cursor::{Failure, Phase, Position, Walk, Warning};
use reqwest::Method;
use serde_json::json;

use crate::support::{drive, start, unique_serials};

const EIGHT_DAYS: i64 = 8 * 24 * 3600;

#[tokio::test]
async fn a_full_run_then_a_delta_receive_every_device_exactly_once() {
    let sim = start(1234).await;
    let session = sim.session();
    let mut added_mid_fetch = Vec::new();

    // Devices assigned while the snapshot is paged arrive in the sync round after it.
    let full = drive(&session, Walk::full(), 300, async |page| {
        if page == 2 {
            added_mid_fetch = sim.add_devices(5).await;
        }
    })
    .await
    .expect("the full run finishes");
    assert!(full.finish.full_snapshot, "{:?}", full.finish);
    assert!(!full.finish.became_full);
    assert_eq!(full.finish.warning, None);
    assert_eq!(full.finish.position.phase, Phase::Sync);
    assert_eq!(full.pages, 5 + 1, "five fetch pages and one sync page");

    let snapshot = unique_serials(&full.snapshot);
    assert_eq!(snapshot.len(), 1234);
    let changes = unique_serials(&full.changes);
    assert_eq!(
        changes,
        added_mid_fetch.iter().cloned().collect(),
        "the sync round brings exactly the devices added mid-fetch"
    );
    assert!(
        full.changes
            .iter()
            .all(|d| d.op_type == Some(OpType::Added))
    );
    assert!(snapshot.is_disjoint(&changes));
    let everything: std::collections::BTreeSet<String> =
        snapshot.union(&changes).cloned().collect();
    assert_eq!(everything, sim.serials().await);

    // Changes after the run: one added, one modified, one moved to another server.
    let added = sim.add_devices(1).await;
    let mut serials = snapshot.iter();
    let modified = serials.next().expect("devices exist").clone();
    let moved = serials.next().expect("devices exist").clone();
    let device = format!("/_sim/servers/{}/devices/{modified}", sim.server_uuid);
    sim.control(Method::PATCH, &device, json!({ "asset_tag": "TAG-1" }))
        .await;
    let other = sim
        .control(
            Method::POST,
            "/_sim/servers",
            json!({ "name": "other", "public_key_pem": crate::support::certificate_pem(), "devices": 0 }),
        )
        .await;
    let reassign = format!("/_sim/servers/{}/devices/{moved}/reassign", sim.server_uuid);
    sim.control(
        Method::POST,
        &reassign,
        json!({ "to_server_uuid": other["server_uuid"] }),
    )
    .await;

    let delta = drive(
        &session,
        Walk::delta(Some(&full.finish.position)),
        300,
        async |_| {},
    )
    .await
    .expect("the delta run finishes");
    assert!(!delta.finish.full_snapshot);
    assert!(!delta.finish.became_full);
    assert!(delta.snapshot.is_empty());
    let op = |serial: &str| {
        delta
            .changes
            .iter()
            .filter(|d| d.serial_number == serial)
            .map(|d| d.op_type)
            .collect::<Vec<_>>()
    };
    assert_eq!(op(&added[0]), [Some(OpType::Added)]);
    assert_eq!(op(&modified), [Some(OpType::Modified)]);
    assert_eq!(op(&moved), [Some(OpType::Deleted)]);
    assert_eq!(delta.changes.len(), 3);
    let asset_tag = delta
        .changes
        .iter()
        .find(|d| d.serial_number == modified)
        .and_then(|d| d.asset_tag.clone());
    assert_eq!(asset_tag.as_deref(), Some("TAG-1"));
}

#[tokio::test]
async fn an_expired_cursor_turns_the_delta_into_a_full_run() {
    let sim = start(40).await;
    let session = sim.session();
    let full = drive(&session, Walk::full(), 15, async |_| {})
        .await
        .expect("the full run finishes");
    let stored = full.finish.position;

    sim.control(
        Method::POST,
        "/_sim/clock",
        json!({ "advance_seconds": EIGHT_DAYS }),
    )
    .await;
    let cursor = stored.cursor.clone().expect("a cursor is stored");
    let error = session.sync_devices(&cursor, Some(15)).await.unwrap_err();
    assert!(matches!(error, AppleError::CursorExpired), "{error:?}");
    assert!(error.is_cursor() && !error.is_retryable());

    let delta = drive(&session, Walk::delta(Some(&stored)), 15, async |_| {})
        .await
        .expect("the delta restarts and finishes");
    assert_eq!(delta.restarts, 1);
    assert!(delta.finish.became_full, "the caller must treat it as full");
    assert!(delta.finish.full_snapshot, "and may sweep unseen devices");
    assert_eq!(unique_serials(&delta.snapshot), sim.serials().await);
}

#[tokio::test]
async fn an_invalid_cursor_is_refused_and_restarts_the_walk() {
    let sim = start(3).await;
    let session = sim.session();
    let error = session
        .fetch_devices(Some("bogus-cursor"), Some(10))
        .await
        .unwrap_err();
    assert!(matches!(error, AppleError::CursorInvalid), "{error:?}");

    let stored = Position {
        phase: Phase::Sync,
        cursor: Some("bogus-cursor".to_owned()),
    };
    let delta = drive(&session, Walk::delta(Some(&stored)), 10, async |_| {})
        .await
        .expect("the walk restarts from scratch");
    assert_eq!(delta.restarts, 1);
    assert!(delta.finish.full_snapshot);
    assert_eq!(unique_serials(&delta.snapshot), sim.serials().await);
}

#[tokio::test]
async fn an_exhausted_fetch_cursor_moves_on_to_sync() {
    let sim = start(3).await;
    let session = sim.session();
    let first = session
        .fetch_devices(None, Some(10))
        .await
        .expect("fetch answers");
    assert!(!first.more_to_follow);
    let error = session
        .fetch_devices(Some(&first.cursor), Some(10))
        .await
        .unwrap_err();
    assert!(matches!(error, AppleError::CursorExhausted), "{error:?}");

    // A run stored mid-fetch (nanodep's run-once mode) fetches, is told the snapshot is
    // exhausted, and syncs from the same cursor.
    let added = sim.add_devices(1).await;
    let stored = Position {
        phase: Phase::Fetch,
        cursor: Some(first.cursor.clone()),
    };
    let delta = drive(&session, Walk::delta(Some(&stored)), 10, async |_| {})
        .await
        .expect("the delta finishes");
    assert_eq!(delta.restarts, 0);
    assert!(!delta.finish.full_snapshot);
    assert_eq!(unique_serials(&delta.changes), added.into_iter().collect());
    assert_eq!(sim.requests("/devices/sync").await, 1);
}

#[tokio::test]
async fn sync_without_a_cursor_is_refused() {
    let sim = start(0).await;
    let error = sim.session().sync_devices("", Some(10)).await.unwrap_err();
    assert!(matches!(error, AppleError::CursorRequired), "{error:?}");
}

#[tokio::test]
async fn an_echoed_cursor_stops_the_round_and_keeps_the_cursor() {
    let sim = start(3).await;
    let session = sim.session();
    let full = drive(&session, Walk::full(), 10, async |_| {})
        .await
        .expect("the full run finishes");
    let stored = full.finish.position;
    let cursor = stored.cursor.clone().expect("a cursor is stored");

    // Apple's bug (micromdm#1016, nanodep#73): the sent cursor back, with more to follow.
    let echo = json!({ "cursor": cursor, "more_to_follow": true, "devices": [] });
    sim.fault(json!({ "route": "/devices/sync", "status": 200, "body": echo.to_string() }))
        .await;
    let syncs_before = sim.requests("/devices/sync").await;
    let delta = drive(&session, Walk::delta(Some(&stored)), 10, async |_| {})
        .await
        .expect("the round stops cleanly");
    assert_eq!(delta.finish.warning, Some(Warning::EchoedCursor));
    assert_eq!(delta.finish.position, stored, "kept, not reset");
    assert_eq!(delta.restarts, 0);
    assert_eq!(sim.requests("/devices/sync").await, syncs_before + 1);
}

#[tokio::test]
async fn a_walk_fails_with_the_apple_error_it_met() {
    let sim = start(3).await;
    let session = sim.session();
    let terms = format!("/_sim/servers/{}/terms", sim.server_uuid);
    sim.control(Method::POST, &terms, json!({ "signed": false }))
        .await;
    let failed = drive(&session, Walk::full(), 10, async |_| {})
        .await
        .unwrap_err();
    assert_eq!(failed.failure, Failure::Apple);
    assert!(
        matches!(failed.error, Some(AppleError::TermsNotSigned)),
        "{failed:?}"
    );
}
