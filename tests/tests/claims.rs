//! Sync claims enforced by DynamoDB conditional writes, proven against
//! DynamoDB Local (AWS's own engine) — never against a map.

use adesync_core::ids::{AccountId, RunId, TokenId};
use adesync_core::run::RunStatus;
use adesync_core::sync::{
    self, FULL_COOLDOWN, LEASE, MANUAL_COOLDOWN, Refusal, SyncKind, SyncRequest, SyncState, Trigger,
};
use adesync_store::Store;
use adesync_store::claims::{ClaimError, RunEnd, attr};
use adesync_store::progress::{BatchMark, Marked, Progress, Walker, WalkerSlot};
use adesync_tests::TestService;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Duration, Utc};
use reqwest::Method;

const MANUAL_DELTA: SyncRequest = SyncRequest {
    trigger: Trigger::Manual,
    kind: SyncKind::Delta,
};
const MANUAL_FULL: SyncRequest = SyncRequest {
    trigger: Trigger::Manual,
    kind: SyncKind::Full,
};
const SCHEDULED_DELTA: SyncRequest = SyncRequest {
    trigger: Trigger::Scheduled,
    kind: SyncKind::Delta,
};
const SCHEDULED_FULL: SyncRequest = SyncRequest {
    trigger: Trigger::Scheduled,
    kind: SyncKind::Full,
};

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn acme() -> AccountId {
    AccountId::parse("acme").unwrap()
}

static ACME: std::sync::LazyLock<AccountId> = std::sync::LazyLock::new(acme);

async fn claim(
    store: &Store,
    token: &TokenId,
    request: SyncRequest,
    at: DateTime<Utc>,
) -> Result<adesync_core::sync::Claim, ClaimError> {
    store
        .claims
        .claim_sync(&acme(), token, request, at, RunId::new_at(at))
        .await
        .map(|claimed| claimed.claim)
}

fn refusal(result: Result<adesync_core::sync::Claim, ClaimError>) -> Refusal {
    match result {
        Err(ClaimError::Refused(refusal)) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn manual_cooldown_refuses_until_15_minutes_have_passed() {
    let env = TestService::start().await;
    let store = env.store();
    let token = env.seed_token("acme").await;

    let first = claim(&store, &token, MANUAL_DELTA, t0()).await.unwrap();
    assert_eq!(first.lease_expires_at, t0() + LEASE);

    let at_14_59 = t0() + Duration::seconds(14 * 60 + 59);
    let refused = refusal(claim(&store, &token, MANUAL_DELTA, at_14_59).await);
    assert_eq!(
        refused,
        Refusal::ManualCooldown {
            retry_at: t0() + MANUAL_COOLDOWN
        }
    );
    assert_eq!(refused.retry_after_seconds(at_14_59), 1);

    // At 15:00 both the cooldown and the first run's lease have lapsed.
    let second = claim(&store, &token, MANUAL_DELTA, t0() + MANUAL_COOLDOWN)
        .await
        .unwrap();
    assert_ne!(second.run_id, first.run_id);
}

#[tokio::test]
async fn full_cooldown_refuses_until_7_days_have_passed() {
    let env = TestService::start().await;
    let store = env.store();
    let token = env.seed_token("acme").await;

    let first = claim(&store, &token, SCHEDULED_FULL, t0()).await.unwrap();
    assert!(
        store
            .claims
            .finish_run(
                &acme(),
                &token,
                &first.run_id,
                SyncKind::Full,
                first.started_at,
                &RunEnd::Succeeded,
                t0() + Duration::minutes(5)
            )
            .await
            .unwrap()
    );

    let almost = t0() + Duration::days(7) - Duration::minutes(1);
    for request in [MANUAL_FULL, SCHEDULED_FULL] {
        let refused = refusal(claim(&store, &token, request, almost).await);
        assert_eq!(
            refused,
            Refusal::FullCooldown {
                retry_at: t0() + FULL_COOLDOWN
            }
        );
        assert_eq!(refused.retry_after_seconds(almost), 60);
    }
    // A delta is not held back by the weekly rule.
    let delta = claim(&store, &token, MANUAL_DELTA, almost).await.unwrap();
    assert_eq!(delta.kind, SyncKind::Delta);
    store
        .claims
        .finish_run(
            &acme(),
            &token,
            &delta.run_id,
            SyncKind::Delta,
            delta.started_at,
            &RunEnd::Succeeded,
            almost,
        )
        .await
        .unwrap();

    let full = claim(&store, &token, SCHEDULED_FULL, t0() + FULL_COOLDOWN)
        .await
        .unwrap();
    assert_eq!(full.kind, SyncKind::Full);
}

#[tokio::test]
async fn one_sync_at_a_time_and_an_abandoned_lease_lets_the_next_one_in() {
    let env = TestService::start().await;
    let store = env.store();
    let token = env.seed_token("acme").await;

    let first = claim(&store, &token, SCHEDULED_DELTA, t0()).await.unwrap();
    let at_14_59 = t0() + Duration::seconds(14 * 60 + 59);
    assert_eq!(
        refusal(claim(&store, &token, SCHEDULED_DELTA, at_14_59).await),
        Refusal::SyncInProgress {
            run_id: first.run_id.clone(),
            lease_expires_at: t0() + LEASE
        }
    );
    // A manual request has no cooldown yet, so the lease is what refuses it.
    assert_eq!(
        refusal(claim(&store, &token, MANUAL_DELTA, at_14_59).await).code(),
        "sync_in_progress"
    );

    let at_15_01 = t0() + Duration::seconds(15 * 60 + 1);
    let claimed = store
        .claims
        .claim_sync(
            &acme(),
            &token,
            SCHEDULED_DELTA,
            at_15_01,
            RunId::new_at(at_15_01),
        )
        .await
        .unwrap();
    assert_eq!(claimed.abandoned_run(), Some(&first.run_id));

    // The abandoned run can no longer release its successor's lease.
    let released = store
        .claims
        .finish_run(
            &acme(),
            &token,
            &first.run_id,
            SyncKind::Delta,
            first.started_at,
            &RunEnd::Succeeded,
            at_15_01,
        )
        .await
        .unwrap();
    assert!(!released, "a superseded run released the lease");
    assert_eq!(
        refusal(
            claim(
                &store,
                &token,
                SCHEDULED_DELTA,
                at_15_01 + Duration::seconds(1)
            )
            .await
        )
        .code(),
        "sync_in_progress"
    );

    // Its owner releases it; the next sync may start at once.
    assert!(
        store
            .claims
            .finish_run(
                &acme(),
                &token,
                &claimed.claim.run_id,
                SyncKind::Delta,
                claimed.claim.started_at,
                &RunEnd::Succeeded,
                at_15_01 + Duration::seconds(2)
            )
            .await
            .unwrap()
    );
    claim(
        &store,
        &token,
        SCHEDULED_DELTA,
        at_15_01 + Duration::seconds(3),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_failed_delta_makes_the_next_sync_a_full_recovery() {
    let env = TestService::start().await;
    let store = env.store();
    let token = env.seed_token("acme").await;

    let full = claim(&store, &token, SCHEDULED_FULL, t0()).await.unwrap();
    store
        .claims
        .finish_run(
            &acme(),
            &token,
            &full.run_id,
            SyncKind::Full,
            full.started_at,
            &RunEnd::Succeeded,
            t0(),
        )
        .await
        .unwrap();
    let at = t0() + Duration::hours(12);
    let delta = claim(&store, &token, SCHEDULED_DELTA, at).await.unwrap();
    store
        .claims
        .finish_run(
            &acme(),
            &token,
            &delta.run_id,
            SyncKind::Delta,
            delta.started_at,
            &RunEnd::Failed {
                error: "Apple answered 503".into(),
            },
            at,
        )
        .await
        .unwrap();

    let next = claim(&store, &token, SCHEDULED_DELTA, at + Duration::hours(12))
        .await
        .unwrap();
    assert_eq!(
        next.kind,
        SyncKind::Full,
        "the next sync after a failed delta is full"
    );
    assert!(next.recovery);
    store
        .claims
        .finish_run(
            &acme(),
            &token,
            &next.run_id,
            SyncKind::Full,
            next.started_at,
            &RunEnd::Succeeded,
            at + Duration::hours(13),
        )
        .await
        .unwrap();
    let after = claim(&store, &token, SCHEDULED_DELTA, at + Duration::hours(24))
        .await
        .unwrap();
    assert_eq!(
        after.kind,
        SyncKind::Delta,
        "a completed full sync ends the recovery"
    );
}

#[tokio::test]
async fn unknown_and_foreign_tokens_are_not_found() {
    let env = TestService::start().await;
    let store = env.store();
    let token = env.seed_token("acme").await;
    let missing = TokenId::parse("does-not-exist").unwrap();
    assert!(matches!(
        claim(&store, &missing, MANUAL_DELTA, t0()).await,
        Err(ClaimError::TokenNotFound)
    ));
    let other = AccountId::parse("globex").unwrap();
    assert!(matches!(
        store
            .claims
            .claim_sync(&other, &token, MANUAL_DELTA, t0(), RunId::new_at(t0()))
            .await,
        Err(ClaimError::TokenNotFound)
    ));
}

/// Writes `state` onto the token item as the service stores it.
async fn write_state(env: &TestService, token: &TokenId, state: &SyncState) {
    let mut update = Vec::new();
    let mut remove = Vec::new();
    let mut values = std::collections::HashMap::new();
    let mut set = |name: &str, value: Option<AttributeValue>| match value {
        Some(v) => {
            update.push(format!("{name} = :{name}"));
            values.insert(format!(":{name}"), v);
        }
        None => remove.push(name.to_owned()),
    };
    let ms =
        |t: Option<DateTime<Utc>>| t.map(|t| AttributeValue::N(t.timestamp_millis().to_string()));
    set(attr::LAST_MANUAL_AT, ms(state.last_manual_at));
    set(attr::LAST_FULL_AT, ms(state.last_full_at));
    set(
        attr::LEASE_RUN_ID,
        state
            .lease
            .as_ref()
            .map(|l| AttributeValue::S(l.run_id.to_string())),
    );
    set(
        attr::LEASE_UNTIL,
        ms(state.lease.as_ref().map(|l| l.expires_at)),
    );
    set(
        attr::NEXT_SYNC_FULL,
        state
            .next_sync_is_full
            .then_some(AttributeValue::Bool(true)),
    );
    set(
        attr::IMPORT_RUN_ID,
        state
            .import
            .as_ref()
            .map(|i| AttributeValue::S(i.run_id.to_string())),
    );
    set(
        attr::IMPORT_UNTIL,
        ms(state.import.as_ref().map(|i| i.expires_at)),
    );
    set(
        attr::DEVICE_COUNT,
        Some(AttributeValue::N(state.device_count.to_string())),
    );
    let mut expression = format!("SET {}", update.join(", "));
    if !remove.is_empty() {
        expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
    }
    env.service
        .clients
        .dynamodb
        .update_item()
        .table_name(&env.service.config.tables.tokens)
        .key("account_id", AttributeValue::S("acme".into()))
        .key("token_id", AttributeValue::S(token.to_string()))
        .update_expression(expression)
        .set_expression_attribute_values(Some(values))
        .send()
        .await
        .expect("write state");
}

/// The conditional write and the pure rule must agree on every state: the
/// condition is the rule's enforcement, the rule its explanation.
#[tokio::test]
async fn the_conditional_write_agrees_with_the_pure_rule_on_generated_states() {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let env = TestService::start().await;
    let store = env.store();
    let token = env.seed_token("acme").await;

    let minutes = |max: i64| (0..max).prop_map(Duration::minutes);
    let when = prop_oneof![
        Just(None),
        minutes(60).prop_map(|d| Some(t0() - d)),
        minutes(8 * 24 * 60).prop_map(|d| Some(t0() - d)),
    ];
    let lease = prop_oneof![
        Just(None),
        (-30i64..30).prop_map(|m| Some(t0() + Duration::minutes(m)))
    ];
    let import = prop_oneof![
        Just(None),
        (-30i64..90).prop_map(|m| Some(t0() + Duration::minutes(m)))
    ];
    let count = prop_oneof![Just(0u64), Just(200_000u64), Just(200_001u64)];
    let request = prop_oneof![
        Just(MANUAL_DELTA),
        Just(MANUAL_FULL),
        Just(SCHEDULED_DELTA),
        Just(SCHEDULED_FULL)
    ];
    let strategy = (
        when.clone(),
        when,
        lease,
        any::<bool>(),
        import,
        count,
        request,
    );

    let mut runner = TestRunner::deterministic();
    let mut granted = 0;
    let mut refused = std::collections::HashSet::new();
    for case in 0..150 {
        let (last_manual_at, last_full_at, lease, next_full, import, device_count, request) =
            strategy.new_tree(&mut runner).unwrap().current();
        let state = SyncState {
            last_manual_at,
            last_full_at,
            lease: lease.map(|expires_at| sync::Lease {
                run_id: RunId::parse("held").unwrap(),
                expires_at,
            }),
            next_sync_is_full: next_full,
            import: import.map(|expires_at| sync::ImportInProgress {
                run_id: RunId::parse("importing").unwrap(),
                expires_at,
            }),
            device_count,
        };
        write_state(&env, &token, &state).await;
        let run = RunId::parse(&format!("case{case}")).unwrap();
        let expected = sync::claim(&state, request, t0(), run.clone());
        let actual = store
            .claims
            .claim_sync(&acme(), &token, request, t0(), run)
            .await
            .map(|c| c.claim);
        match (&expected, &actual) {
            (Ok(e), Ok(a)) => {
                assert_eq!(e, a, "case {case}: {state:?} {request:?}");
                granted += 1;
            }
            (Err(e), Err(ClaimError::Refused(a))) => {
                assert_eq!(e, a, "case {case}: {state:?} {request:?}");
                refused.insert(e.code());
            }
            _ => panic!(
                "case {case}: rule says {expected:?}, DynamoDB says {actual:?} for {state:?} {request:?}"
            ),
        }
    }
    // The generated states must exercise every outcome, or this proves little.
    assert!(granted > 10, "only {granted} claims granted");
    assert_eq!(refused.len(), 4, "refusals seen: {refused:?}");
}

#[tokio::test]
async fn a_hundred_parallel_manual_syncs_start_exactly_one_run() {
    let env = TestService::start().await;
    let token = env.seed_token("acme").await;
    let jwt = env.jwt("acme", &["admin"]);
    let path = format!("/v1/tokens/{token}/sync");
    let replies = futures::future::join_all((0..100).map(|_| {
        env.call(
            Method::POST,
            &path,
            &jwt,
            Some(serde_json::json!({"kind": "delta"})),
        )
    }))
    .await;
    let accepted: Vec<_> = replies.iter().filter(|r| r.status == 202).collect();
    assert_eq!(
        accepted.len(),
        1,
        "statuses: {:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for reply in replies.iter().filter(|r| r.status != 202) {
        assert!(
            matches!(
                (reply.status, reply.error()),
                (429, "manual_sync_cooldown") | (409, "sync_in_progress")
            ),
            "unexpected refusal {reply:?}"
        );
        let retry_after: u64 = reply.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=900).contains(&retry_after), "{retry_after}");
    }
}

#[tokio::test]
async fn sync_requests_through_the_api_follow_the_rules_on_the_services_clock() {
    let env = TestService::start().await;
    let token = env.seed_token("acme").await;
    let admin = env.jwt("acme", &["admin"]);
    let path = format!("/v1/tokens/{token}/sync");

    let first = env.call(Method::POST, &path, &admin, None).await;
    assert_eq!(first.status, 202, "{first:?}");
    assert_eq!(first.body["kind"], "delta");
    assert!(first.body["run_id"].is_string());
    assert!(first.body["estimated_seconds"].as_u64().unwrap() > 0);

    let again = env.call(Method::POST, &path, &admin, None).await;
    assert_eq!(again.status, 429);
    assert_eq!(again.error(), "manual_sync_cooldown");
    let retry_after: u64 = again.header("retry-after").unwrap().parse().unwrap();
    assert!((895..=900).contains(&retry_after), "{retry_after}");
    assert_eq!(again.body["retry_after_seconds"], retry_after);

    env.advance(15 * 60).await;
    let full = env
        .call(
            Method::POST,
            &path,
            &admin,
            Some(serde_json::json!({"kind": "full"})),
        )
        .await;
    assert_eq!(full.status, 202, "{full:?}");
    assert_eq!(full.body["kind"], "full");
    // The seeded token has no credentials, so its runs never complete: the
    // full one completes here, as the importer would record it. (A full
    // sync that does not complete leaves the next one owed, cooldown or
    // not: tests/long_runs.rs.)
    let store = env.store();
    let run_id = RunId::parse(full.body["run_id"].as_str().unwrap()).unwrap();
    let record = store.runs.get_run(&token, &run_id).await.unwrap().unwrap();
    let now = adesync_core::clock::Clock::now(&*env.service.runner.clock());
    assert!(
        store
            .claims
            .finish_run(
                &acme(),
                &token,
                &run_id,
                SyncKind::Full,
                record.started_at,
                &RunEnd::Succeeded,
                now,
            )
            .await
            .unwrap()
    );

    env.advance(15 * 60).await;
    let early_full = env
        .call(
            Method::POST,
            &path,
            &admin,
            Some(serde_json::json!({"kind": "full"})),
        )
        .await;
    assert_eq!(early_full.status, 429);
    assert_eq!(early_full.error(), "full_sync_cooldown");
    let retry_after: u64 = early_full.header("retry-after").unwrap().parse().unwrap();
    assert!(
        retry_after > 6 * 24 * 3600 && retry_after <= 7 * 24 * 3600 - 15 * 60,
        "{retry_after}"
    );

    // A scheduled run holds the token: a manual request meets the lease.
    let now = adesync_core::clock::Clock::now(&*env.service.runner.clock());
    let scheduled = store
        .claims
        .claim_sync(&acme(), &token, SCHEDULED_DELTA, now, RunId::new_at(now))
        .await
        .unwrap();
    env.advance(15 * 60).await;
    let busy = env.call(Method::POST, &path, &admin, None).await;
    // 15 minutes later the scheduled lease has lapsed too: granted.
    assert_eq!(busy.status, 202, "{busy:?}");
    let _ = scheduled;
}

#[tokio::test]
async fn a_sync_in_progress_answers_409_with_the_run_and_its_lease() {
    let env = TestService::start().await;
    let token = env.seed_token("acme").await;
    let admin = env.jwt("acme", &["admin"]);
    let now = adesync_core::clock::Clock::now(&*env.service.runner.clock());
    let scheduled = env
        .store()
        .claims
        .claim_sync(&acme(), &token, SCHEDULED_DELTA, now, RunId::new_at(now))
        .await
        .unwrap();
    let busy = env
        .call(
            Method::POST,
            &format!("/v1/tokens/{token}/sync"),
            &admin,
            None,
        )
        .await;
    assert_eq!(busy.status, 409, "{busy:?}");
    assert_eq!(busy.error(), "sync_in_progress");
    assert_eq!(busy.body["run_id"], scheduled.claim.run_id.to_string());
    assert!(busy.body["lease_expires_at"].is_string());
    assert!(busy.header("retry-after").is_some());
}

#[tokio::test]
async fn bad_sync_requests_are_refused_and_change_nothing() {
    let env = TestService::start().await;
    let token = env.seed_token("acme").await;
    let admin = env.jwt("acme", &["admin"]);
    let path = format!("/v1/tokens/{token}/sync");
    for body in [
        serde_json::json!({"kind": "weekly"}),
        serde_json::json!({"kind": 7}),
        serde_json::json!({"knd": "full"}),
        serde_json::json!(["full"]),
    ] {
        let reply = env
            .call(Method::POST, &path, &admin, Some(body.clone()))
            .await;
        assert_eq!(reply.status, 400, "{body}: {reply:?}");
        assert_eq!(reply.error(), "invalid_request");
    }
    let reader = env.jwt("acme", &["reader"]);
    assert_eq!(
        env.call(Method::POST, &path, &reader, None).await.status,
        403
    );
    let other = env.jwt("globex", &["admin"]);
    assert_eq!(
        env.call(Method::POST, &path, &other, None).await.status,
        404
    );
    let unauthenticated = env.http.post(env.api(&path)).send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401);
    // None of the above started anything: the first real request is granted.
    assert_eq!(
        env.call(Method::POST, &path, &admin, None).await.status,
        202
    );
}

#[tokio::test]
async fn an_abandoned_claim_gives_back_the_lease_and_the_cooldowns() {
    let env = TestService::start().await;
    let store = env.store();
    let token = env.seed_token("acme").await;
    let claimed = store
        .claims
        .claim_sync(&acme(), &token, MANUAL_FULL, t0(), RunId::new_at(t0()))
        .await
        .unwrap();
    assert!(
        store
            .claims
            .abandon_claim(&acme(), &token, &claimed)
            .await
            .unwrap()
    );
    // Neither the lease nor the 15-minute and 7-day cooldowns hold it back.
    let again = claim(&store, &token, MANUAL_FULL, t0() + Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(again.kind, SyncKind::Full);
    // Undoing a claim that is no longer the token's changes nothing.
    assert!(
        !store
            .claims
            .abandon_claim(&acme(), &token, &claimed)
            .await
            .unwrap()
    );
    assert_eq!(
        refusal(claim(&store, &token, MANUAL_DELTA, t0() + Duration::seconds(2)).await).code(),
        "manual_sync_cooldown"
    );
}

/// The device count of `token` as stored.
async fn device_count(store: &Store, token: &TokenId) -> u64 {
    store
        .claims
        .sync_state(&acme(), token)
        .await
        .unwrap()
        .unwrap()
        .device_count
}

/// The lease of `token` as stored.
async fn lease_until(store: &Store, token: &TokenId) -> Option<DateTime<Utc>> {
    store
        .claims
        .sync_state(&acme(), token)
        .await
        .unwrap()
        .unwrap()
        .lease
        .map(|lease| lease.expires_at)
}

fn page_saved<'a>(
    run: &'a RunId,
    walker: &'a str,
    position: &'a adesync_core::cursor::Position,
) -> Progress<'a> {
    Progress {
        run,
        walker,
        kind: SyncKind::Delta,
        walk: "{}",
        walk_state: "{}",
        position,
        batch_seq: 1,
        fetched: 10,
        pages: 1,
        import_until: None,
        fetch_finished: false,
        renews_lease: true,
    }
}

/// One walker per run: the step that holds the slot saves its pages and each
/// save renews the lease to 15 minutes from then; a duplicate delivery of the
/// same step, a stale step and a run that lost its lease can neither save
/// nor renew anything.
#[tokio::test]
async fn only_the_walker_holding_the_slot_saves_a_page_and_renews_the_lease() {
    let env = TestService::start().await;
    let store = env.store();
    let token = env.seed_token("acme").await;
    let run = claim(&store, &token, SCHEDULED_DELTA, t0()).await.unwrap();
    let run_id = run.run_id.clone();
    let slot = |step: u32, walker: &'static str, at: DateTime<Utc>| WalkerSlot {
        run: &run.run_id,
        step,
        walker,
        until: at + Duration::seconds(90),
    };
    let position = adesync_core::cursor::Position {
        phase: adesync_core::cursor::Phase::Sync,
        cursor: Some("c1".into()),
    };

    let first = store
        .runs
        .claim_walker(&acme(), &token, slot(0, "walker-a", t0()), t0())
        .await
        .unwrap();
    assert!(matches!(first, Walker::Walking(_)), "{first:?}");
    // The same job delivered again while the first walks: refused until the
    // first one's deadline.
    let second = store
        .runs
        .claim_walker(
            &acme(),
            &token,
            slot(0, "walker-b", t0()),
            t0() + Duration::seconds(1),
        )
        .await
        .unwrap();
    assert_eq!(
        second,
        Walker::Busy {
            until: t0() + Duration::seconds(90)
        }
    );
    let at_10 = t0() + Duration::minutes(10);
    assert!(
        !store
            .runs
            .save_progress(
                &acme(),
                &token,
                &page_saved(&run_id, "walker-b", &position),
                at_10
            )
            .await
            .unwrap(),
        "a walker without the slot saved a page"
    );
    assert_eq!(lease_until(&store, &token).await, Some(t0() + LEASE));
    assert!(
        store
            .runs
            .save_progress(
                &acme(),
                &token,
                &page_saved(&run_id, "walker-a", &position),
                at_10
            )
            .await
            .unwrap()
    );
    assert_eq!(
        lease_until(&store, &token).await,
        Some(at_10 + LEASE),
        "a saved page renews the lease"
    );

    // The next step takes the slot over; the previous one can no longer save,
    // and its job delivered again is stale.
    let at_11 = t0() + Duration::minutes(11);
    let next = store
        .runs
        .claim_walker(&acme(), &token, slot(1, "walker-c", at_11), at_11)
        .await
        .unwrap();
    assert!(matches!(next, Walker::Walking(_)), "{next:?}");
    assert!(
        !store
            .runs
            .save_progress(
                &acme(),
                &token,
                &page_saved(&run_id, "walker-a", &position),
                at_11
            )
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .runs
            .claim_walker(&acme(), &token, slot(0, "walker-d", at_11), at_11)
            .await
            .unwrap(),
        Walker::Stale
    );

    // No progress for 15 minutes: the lease lapses; nothing renews it.
    let lapsed = at_10 + LEASE + Duration::seconds(1);
    assert_eq!(
        store
            .runs
            .claim_walker(&acme(), &token, slot(2, "walker-e", lapsed), lapsed)
            .await
            .unwrap(),
        Walker::NotHeld
    );
    assert!(
        !store
            .runs
            .save_progress(
                &acme(),
                &token,
                &page_saved(&run_id, "walker-c", &position),
                lapsed
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .runs
            .renew_lease(&acme(), &token, &run_id, lapsed)
            .await
            .unwrap()
    );
    assert_eq!(lease_until(&store, &token).await, Some(at_10 + LEASE));
}

/// A batch imported is progress: marking it renews the lease and moves the
/// token's device count, once; a run without its lease still gets its batch
/// counted, without renewing. A run stuck for 15 minutes is recorded
/// abandoned once, by whoever notices first.
#[tokio::test]
async fn a_marked_batch_renews_the_lease_and_a_lapsed_run_is_settled_once() {
    let env = TestService::start().await;
    let store = env.store();
    let token = env.seed_token("acme").await;
    let claimed = store
        .claims
        .claim_sync(&acme(), &token, SCHEDULED_FULL, t0(), RunId::new_at(t0()))
        .await
        .unwrap();
    let run = claimed.claim.run_id.clone();
    store
        .runs
        .record_run_started(&acme(), &token, &claimed.claim, None)
        .await
        .unwrap();
    let mark = |seq: u64, delta: i64| BatchMark {
        account: &ACME,
        token: &token,
        run: &run,
        seq,
        imported: 100,
        listed_delta: delta,
        snapshot_serials: None,
    };
    let at_14 = t0() + Duration::minutes(14);
    assert_eq!(
        store
            .runs
            .mark_batch_imported(mark(0, 100), at_14)
            .await
            .unwrap(),
        Marked::First
    );
    assert_eq!(lease_until(&store, &token).await, Some(at_14 + LEASE));
    // The same batch again: neither counted nor renewing.
    let at_20 = t0() + Duration::minutes(20);
    assert_eq!(
        store
            .runs
            .mark_batch_imported(mark(0, 100), at_20)
            .await
            .unwrap(),
        Marked::Again
    );
    assert_eq!(lease_until(&store, &token).await, Some(at_14 + LEASE));
    assert_eq!(device_count(&store, &token).await, 100);

    // 15 minutes without progress: a late batch is counted, renews nothing.
    let lapsed = at_14 + LEASE + Duration::minutes(1);
    assert_eq!(
        store
            .runs
            .mark_batch_imported(mark(1, 40), lapsed)
            .await
            .unwrap(),
        Marked::First
    );
    assert_eq!(device_count(&store, &token).await, 140);
    assert_eq!(lease_until(&store, &token).await, Some(at_14 + LEASE));

    assert!(
        store
            .claims
            .settle_lapsed_run(&acme(), &token, &run, lapsed)
            .await
            .unwrap()
    );
    assert!(
        !store
            .claims
            .settle_lapsed_run(&acme(), &token, &run, lapsed)
            .await
            .unwrap(),
        "settled twice"
    );
    let record = store.runs.get_run(&token, &run).await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Abandoned);
    assert_eq!(record.finished_at, Some(lapsed));
    let state = store
        .claims
        .sync_state(&acme(), &token)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.lease, None, "the token is free");
    assert!(
        state.next_sync_is_full,
        "the abandoned full sync is still owed"
    );
    // The next sync, whatever is asked, is the owed full one, cooldown or not.
    let next = claim(&store, &token, MANUAL_DELTA, lapsed).await.unwrap();
    assert_eq!(next.kind, SyncKind::Full);
    assert!(next.recovery);
}

/// The assigner slot: one assignment job per token talks to Apple; its
/// holder may take it again (a retried write), anyone may once the holder's
/// deadline passed, and a released slot is free at once.
#[tokio::test]
async fn one_assigner_per_token_until_its_deadline_or_release() {
    use adesync_store::assignments::AssignerSlot;
    let env = TestService::start().await;
    let store = env.store();
    let token = env.seed_token("acme").await;
    let deadline = t0() + Duration::seconds(90);

    let first = store
        .claims
        .claim_assigner(&acme(), &token, "first", deadline, t0())
        .await
        .unwrap();
    assert_eq!(first, AssignerSlot::Taken);
    let second = store
        .claims
        .claim_assigner(&acme(), &token, "second", deadline, t0())
        .await
        .unwrap();
    assert_eq!(second, AssignerSlot::Busy { until: deadline });
    // DynamoDB applied the first claim but answered with an error: its retry.
    assert_eq!(
        store
            .claims
            .claim_assigner(&acme(), &token, "first", deadline, t0())
            .await
            .unwrap(),
        AssignerSlot::Taken
    );
    // Killed at its deadline: the slot is free after it.
    assert_eq!(
        store
            .claims
            .claim_assigner(
                &acme(),
                &token,
                "second",
                deadline + Duration::seconds(90),
                deadline
            )
            .await
            .unwrap(),
        AssignerSlot::Taken
    );
    // Only the holder releases it; then anyone takes it at once.
    store
        .claims
        .release_assigner(&acme(), &token, "first")
        .await
        .unwrap();
    assert!(matches!(
        store
            .claims
            .claim_assigner(&acme(), &token, "third", deadline, deadline)
            .await
            .unwrap(),
        AssignerSlot::Busy { .. }
    ));
    store
        .claims
        .release_assigner(&acme(), &token, "second")
        .await
        .unwrap();
    assert_eq!(
        store
            .claims
            .claim_assigner(&acme(), &token, "third", deadline, deadline)
            .await
            .unwrap(),
        AssignerSlot::Taken
    );
    // A token that does not exist has no slot to take.
    let gone = TokenId::parse("01NOSUCHTOKEN0000000000000").unwrap();
    assert_eq!(
        store
            .claims
            .claim_assigner(&acme(), &gone, "first", deadline, t0())
            .await
            .unwrap(),
        AssignerSlot::TokenGone
    );
}

/// One caller at a time renews a token's Apple session: the claim names
/// the session it replaces, so a caller whose stale session another already
/// replaced takes the new one instead of asking Apple again.
#[tokio::test]
async fn one_renewal_of_a_tokens_apple_session_at_a_time() {
    use adesync_store::sessions::SessionRenewal;
    let env = TestService::start().await;
    let store = env.store();
    let token = env.seed_token("acme").await;
    let until = t0() + Duration::seconds(30);
    let claim = |stale: Option<&'static str>, who: &'static str, now: DateTime<Utc>| {
        let store = store.clone();
        let token = token.clone();
        async move {
            store
                .tokens
                .claim_session_renewal(
                    &acme(),
                    &token,
                    stale,
                    who,
                    now + Duration::seconds(30),
                    now,
                )
                .await
                .unwrap()
        }
    };

    // No session yet: the first caller renews, the second waits for it.
    assert_eq!(claim(None, "worker", t0()).await, SessionRenewal::Granted);
    assert_eq!(
        claim(None, "api", t0()).await,
        SessionRenewal::Busy { until }
    );
    // The renewer shares what Apple gave it; the waiter finds it.
    assert!(
        store
            .tokens
            .share_session(&acme(), &token, b"sealed-s1", "fp-s1", "worker", t0())
            .await
            .unwrap()
    );
    assert_eq!(
        claim(None, "api", t0()).await,
        SessionRenewal::Replaced {
            sealed: b"sealed-s1".to_vec()
        }
    );
    // s1 refused later: a caller with an older stale session takes s1,
    // a caller holding s1 renews.
    assert_eq!(
        claim(Some("fp-s0"), "scheduler", t0()).await,
        SessionRenewal::Replaced {
            sealed: b"sealed-s1".to_vec()
        }
    );
    assert_eq!(
        claim(Some("fp-s1"), "api", t0()).await,
        SessionRenewal::Granted
    );
    // While it renews, nobody else may share a session (a rotated one)…
    assert!(
        !store
            .tokens
            .share_session(&acme(), &token, b"sealed-x", "fp-x", "worker", t0())
            .await
            .unwrap()
    );
    // …and a renewer that died holds the others back only until its claim ends.
    assert!(matches!(
        claim(Some("fp-s1"), "worker", t0()).await,
        SessionRenewal::Busy { .. }
    ));
    assert_eq!(
        claim(Some("fp-s1"), "worker", until).await,
        SessionRenewal::Granted
    );
    // Another account's identifiers find no token.
    assert_eq!(
        store
            .tokens
            .claim_session_renewal(
                &AccountId::parse("globex").unwrap(),
                &token,
                None,
                "x",
                until,
                t0()
            )
            .await
            .unwrap(),
        SessionRenewal::TokenGone
    );
}
