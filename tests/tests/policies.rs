//! Enrollment policies end to end: their limits, validation, the default policy,
//! assignment with Apple (through the simulator) and its retries, and the token
//! delete rules they take part in.

use std::time::Duration;

use adesync_core::ids::{PolicyId, TokenId};
use adesync_tests::flows::CreatedToken;
use adesync_tests::policies::policy_body;
use adesync_tests::{TestOptions, TestService};
use reqwest::Method;
use serde_json::{Value, json};

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// A token seeded without Apple (for rules that never call Apple).
async fn seeded(env: &TestService, account: &str) -> CreatedToken {
    let token = env.seed_token(account).await;
    CreatedToken {
        token_id: token.to_string(),
        server_uuid: String::new(),
        jwt: env.jwt(account, &["admin"]),
    }
}

async fn token_json(env: &TestService, token: &CreatedToken) -> Value {
    let reply = env
        .call(
            Method::GET,
            &format!("/v1/tokens/{}", token.token_id),
            &token.jwt,
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body
}

async fn policies(env: &TestService, token: &CreatedToken) -> Vec<Value> {
    let reply = env
        .call(
            Method::GET,
            &format!("/v1/tokens/{}/policies", token.token_id),
            &token.jwt,
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body["policies"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn policies_are_created_shown_changed_and_deleted() {
    let env = TestService::start().await;
    let token = seeded(&env, "acme").await;
    let created = env
        .create_policy(
            &token,
            json!({
                "name": "Sales iPhones",
                "url": "https://mdm.acme.test/enroll",
                "is_supervised": true,
                "is_mdm_removable": false,
                "department": "Sales",
                "support_email_address": "help@acme.test",
                "skip_setup_items": ["AppleID", "Siri"],
                "user_affinity": true,
            }),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let policy = created.body["id"].as_str().unwrap().to_owned();
    // Named by `id` as every resource, and by `policy_id` (deprecated) for
    // the clients written before: the same id in every policy answer.
    let named_by_both = |answer: &Value| {
        assert_eq!(answer["id"], policy.as_str(), "{answer}");
        assert_eq!(answer["policy_id"], policy.as_str(), "{answer}");
    };
    named_by_both(&created.body);
    assert_eq!(created.body["name"], "Sales iPhones");
    assert_eq!(created.body["user_affinity"], true);
    assert_eq!(created.body["skip_setup_items"], json!(["AppleID", "Siri"]));
    assert_eq!(created.body["device_count"], 0);
    assert_eq!(created.body["is_default"], false);

    let shown = env.policy(&token, &policy).await;
    named_by_both(&shown);
    assert_eq!(shown["department"], "Sales");
    assert_eq!(token_json(&env, &token).await["policy_count"], 1);

    let patched = env
        .call(
            Method::PATCH,
            &format!("/v1/tokens/{}/policies/{policy}", token.token_id),
            &token.jwt,
            Some(json!({"name": "Sales", "department": null})),
        )
        .await;
    assert_eq!(patched.status, 200, "{patched:?}");
    named_by_both(&patched.body);
    assert_eq!(patched.body["name"], "Sales");
    assert_eq!(patched.body["department"], Value::Null);
    assert_eq!(patched.body["version"], 2);
    assert_eq!(patched.body["support_email_address"], "help@acme.test");

    let listed = policies(&env, &token).await;
    assert_eq!(listed.len(), 1);
    named_by_both(&listed[0]);
    assert_eq!(listed[0]["name"], "Sales");

    let path = format!("/v1/tokens/{}/policies/{policy}", token.token_id);
    let deleted = env.call(Method::DELETE, &path, &token.jwt, None).await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    assert_eq!(
        env.call(Method::GET, &path, &token.jwt, None).await.status,
        404
    );
    assert_eq!(
        env.call(Method::DELETE, &path, &token.jwt, None)
            .await
            .status,
        404
    );
    assert_eq!(token_json(&env, &token).await["policy_count"], 0);
    // With no policy left, the token can go.
    let gone = env
        .call(
            Method::DELETE,
            &format!("/v1/tokens/{}", token.token_id),
            &token.jwt,
            None,
        )
        .await;
    assert_eq!(gone.status, 204, "{gone:?}");
}

#[tokio::test]
async fn settings_are_validated_as_apple_does_and_refusals_change_nothing() {
    let env = TestService::start().await;
    let token = seeded(&env, "acme").await;
    let url = "https://mdm.acme.test/enroll";
    let cases: Vec<(&str, Value, &str)> = vec![
        ("no name", json!({"url": url}), "name"),
        ("a blank name", json!({"name": "  ", "url": url}), "name"),
        (
            "a name of 126 characters",
            json!({"name": "n".repeat(126), "url": url}),
            "name",
        ),
        ("no url", json!({"name": "x"}), "url"),
        (
            "an http url",
            json!({"name": "x", "url": "http://mdm.acme.test"}),
            "url",
        ),
        (
            "not a url",
            json!({"name": "x", "url": "mdm.acme.test"}),
            "url",
        ),
        (
            "a url of 2,001 characters",
            json!({"name": "x", "url": format!("https://mdm.acme.test/{}", "a".repeat(1980))}),
            "url",
        ),
        (
            "not removable without supervision",
            json!({"name": "x", "url": url, "is_mdm_removable": false}),
            "is_mdm_removable",
        ),
        (
            "a department of 126 characters",
            json!({"name": "x", "url": url, "department": "d".repeat(126)}),
            "department",
        ),
        (
            "an org magic of 257 characters",
            json!({"name": "x", "url": url, "org_magic": "m".repeat(257)}),
            "org_magic",
        ),
        (
            "a support phone of 51 characters",
            json!({"name": "x", "url": url, "support_phone_number": "1".repeat(51)}),
            "support_phone_number",
        ),
        (
            "a support e-mail that is not one",
            json!({"name": "x", "url": url, "support_email_address": "help desk"}),
            "support_email_address",
        ),
        (
            "an unknown Setup Assistant pane",
            json!({"name": "x", "url": url, "skip_setup_items": ["Siri", "MakeCoffee"]}),
            "skip_setup_items",
        ),
        (
            "a number for a name",
            json!({"name": 5, "url": url}),
            "name",
        ),
        (
            "a string for a flag",
            json!({"name": "x", "url": url, "is_supervised": "yes"}),
            "is_supervised",
        ),
        (
            "an unknown field",
            json!({"name": "x", "url": url, "profile_uuid": "X"}),
            "profile_uuid",
        ),
    ];
    for (what, body, field) in cases {
        let reply = env.create_policy(&token, body).await;
        assert_eq!(reply.status, 400, "{what}: {reply:?}");
        assert_eq!(reply.error(), "invalid_policy", "{what}");
        assert_eq!(reply.body["field"], field, "{what}: {reply:?}");
    }
    // A body that is not a JSON object at all.
    for body in [json!([]), json!("x"), Value::Null] {
        let reply = env.create_policy(&token, body).await;
        assert_eq!(reply.status, 400, "{reply:?}");
    }
    assert!(policies(&env, &token).await.is_empty());
    assert_eq!(token_json(&env, &token).await["policy_count"], 0);

    // A bad change leaves the policy as it was.
    let policy = env.new_policy(&token, "Kept").await;
    let path = format!("/v1/tokens/{}/policies/{policy}", token.token_id);
    for (body, field) in [
        (json!({"url": "ftp://x"}), "url"),
        (json!({"name": null}), "name"),
        (json!({"is_mdm_removable": false}), "is_mdm_removable"),
        (json!({"colour": "red"}), "colour"),
    ] {
        let reply = env.call(Method::PATCH, &path, &token.jwt, Some(body)).await;
        assert_eq!(reply.status, 400, "{reply:?}");
        assert_eq!(reply.body["field"], field);
    }
    let kept = env.policy(&token, &policy).await;
    assert_eq!(kept["name"], "Kept");
    assert_eq!(kept["version"], 1);

    // Unknown and malformed policy ids are 404s.
    for id in ["01ARZ3NDEKTSV4RRFFQ69G5FAV", "bad%20id"] {
        let path = format!("/v1/tokens/{}/policies/{id}", token.token_id);
        assert_eq!(
            env.call(Method::GET, &path, &token.jwt, None).await.status,
            404
        );
    }
    let unknown = env
        .set_default_policy(&token, "01ARZ3NDEKTSV4RRFFQ69G5FAV")
        .await;
    assert_eq!(unknown.status, 404, "{unknown:?}");
    assert_eq!(
        token_json(&env, &token).await["default_policy_id"],
        Value::Null
    );
}

#[tokio::test]
async fn a_token_holds_at_most_1000_policies_even_under_concurrent_creates() {
    let env = TestService::start().await;
    let token = seeded(&env, "acme").await;
    // 999 policies, a few at a time.
    let mut created = 0;
    while created < 999 {
        let batch = (999 - created).min(16);
        let replies = futures::future::join_all(
            (0..batch)
                .map(|n| env.create_policy(&token, policy_body(&format!("P{}", created + n)))),
        )
        .await;
        for reply in replies {
            assert_eq!(reply.status, 201, "{reply:?}");
        }
        created += batch;
    }
    assert_eq!(token_json(&env, &token).await["policy_count"], 999);

    // Eight creates race for the last place: exactly one wins.
    let racing = futures::future::join_all(
        (0..8).map(|n| env.create_policy(&token, policy_body(&format!("Racer {n}")))),
    )
    .await;
    let winners = racing.iter().filter(|r| r.status == 201).count();
    assert_eq!(winners, 1, "{racing:?}");
    for loser in racing.iter().filter(|r| r.status != 201) {
        assert_eq!(loser.status, 409, "{loser:?}");
        assert_eq!(loser.error(), "policy_limit_reached");
        assert_eq!(loser.body["limit"], 1000);
    }
    // The 1,000th exists; the 1,001st is refused.
    let after = env.create_policy(&token, policy_body("One too many")).await;
    assert_eq!(after.status, 409, "{after:?}");
    assert_eq!(after.error(), "policy_limit_reached");
    assert_eq!(token_json(&env, &token).await["policy_count"], 1000);
    assert_eq!(policies(&env, &token).await.len(), 1000);

    // Deleting one makes room for one.
    let victim = policies(&env, &token).await[0]["policy_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deleted = env
        .call(
            Method::DELETE,
            &format!("/v1/tokens/{}/policies/{victim}", token.token_id),
            &token.jwt,
            None,
        )
        .await;
    assert_eq!(deleted.status, 204);
    assert_eq!(
        env.create_policy(&token, policy_body("Again")).await.status,
        201
    );
    assert_eq!(token_json(&env, &token).await["policy_count"], 1000);
}

#[tokio::test]
async fn apples_answers_are_stored_and_retried_on_time() {
    let env = TestService::start().await;
    let token = env.create_token("acme", 5).await;
    env.wait_until_idle(&token, RUN_TIMEOUT).await;
    let serials = env.serials(&token).await;
    let [ok, failed, throttled, gone, idle] = [0, 1, 2, 3, 4].map(|i| serials[i].as_str());
    let outcome = |serial: &str, body: Value| {
        let path = format!(
            "/_sim/servers/{}/devices/{serial}/assign-outcome",
            token.server_uuid
        );
        let env = &env;
        async move { env.sim_post(&path, body).await }
    };
    outcome(failed, json!({"status": "FAILED"})).await;
    outcome(
        throttled,
        json!({"status": "THROTTLED", "retry_after_seconds": 7200}),
    )
    .await;
    outcome(gone, json!({"status": "NOT_ACCESSIBLE"})).await;

    let policy = env.new_policy(&token, "Retail").await;
    let requests_before = env.sim_assign_requests().await;
    let reply = env
        .assign(&token, &policy, &[ok, failed, throttled, gone])
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(env.sim_assign_requests().await - requests_before, 1);
    let result = |serial: &str| {
        reply.body["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["serial_number"] == serial)
            .cloned()
            .unwrap_or_else(|| panic!("no result for {serial}: {reply:?}"))
    };
    assert_eq!(result(ok)["result"], "assigned");
    assert_eq!(result(ok)["retry_after"], Value::Null);
    assert_eq!(result(gone)["result"], "not_accessible");
    assert_eq!(result(failed)["result"], "failed");
    let failed_wait = result(failed)["retry_after_seconds"].as_i64().unwrap();
    assert!((86_390..=86_400).contains(&failed_wait), "{failed_wait}");
    assert_eq!(result(throttled)["result"], "throttled");
    let throttled_wait = result(throttled)["retry_after_seconds"].as_i64().unwrap();
    assert!(
        (7_190..=7_200).contains(&throttled_wait),
        "{throttled_wait}"
    );
    assert!(result(throttled)["retry_after"].is_string());
    assert_eq!(reply.body["summary"]["assigned"], 1);

    // Stored on the devices, and counted on the policy.
    let profile = env.policy(&token, &policy).await["profile_uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    for (serial, status) in [
        (ok, "assigned"),
        (failed, "failed"),
        (throttled, "throttled"),
        (gone, "not_accessible"),
    ] {
        let device = env.device(&token, serial).await;
        assert_eq!(device["policy_id"], policy.as_str(), "{device}");
        assert_eq!(device["assignment"]["status"], status, "{device}");
    }
    assert_eq!(env.device(&token, idle).await["policy_id"], Value::Null);
    assert_eq!(env.policy(&token, &policy).await["device_count"], 4);
    assert_eq!(
        env.sim_device(&token.server_uuid, ok).await["profile_uuid"],
        profile.as_str()
    );

    // Just before the throttled device's time nothing is due.
    let store = env.store();
    let token_id = TokenId::parse(&token.token_id).unwrap();
    env.advance(7_200 - 30).await;
    let clock = env.service.runner.clock();
    assert!(
        !store
            .devices
            .has_due_assignments(&token_id, adesync_core::clock::Clock::now(&*clock))
            .await
            .unwrap()
    );
    // Once it passed, the hourly pass retries the throttled device only.
    env.advance(31).await;
    env.fire_assignment_sweep().await;
    env.wait_for_device(&token, throttled, "assigned", |d| {
        d["assignment"]["status"] == "assigned"
    })
    .await;
    // The failed device was not sent: its FAILED outcome in the simulator is used
    // up, so a second request would have assigned it. (Request counts would also
    // count the replays after Apple's session expired during the skipped hours.)
    assert_eq!(
        env.device(&token, failed).await["assignment"]["status"],
        "failed"
    );

    // The failed one waits its 24 hours.
    env.advance(86_400 - 7_200 - 60).await;
    assert!(
        !store
            .devices
            .has_due_assignments(&token_id, adesync_core::clock::Clock::now(&*clock))
            .await
            .unwrap()
    );
    env.advance(60).await;
    env.fire_assignment_sweep().await;
    env.wait_for_device(&token, failed, "assigned", |d| {
        d["assignment"]["status"] == "assigned"
    })
    .await;
    // Not accessible is final: never sent again (it would have been assigned now).
    assert_eq!(
        env.device(&token, gone).await["assignment"]["status"],
        "not_accessible"
    );
    env.advance(86_400).await;
    assert!(
        !store
            .devices
            .has_due_assignments(&token_id, adesync_core::clock::Clock::now(&*clock))
            .await
            .unwrap()
    );
}

/// Apple's schema marks `profile_uuid` optional in an assignment's answer:
/// an answer without it still records each device assigned to the profile
/// asked for, rather than failing the whole assignment.
#[tokio::test]
async fn an_assignment_answer_without_profile_uuid_still_records_each_device() {
    let env = TestService::start().await;
    let token = env.create_token("acme", 3).await;
    env.wait_until_idle(&token, RUN_TIMEOUT).await;
    env.sim_post("/_sim/config", json!({"assign_omits_profile_uuid": true}))
        .await;
    let serials = env.serials(&token).await;
    let chosen: Vec<&str> = serials.iter().take(2).map(String::as_str).collect();
    let policy = env.new_policy(&token, "Retail").await;
    let reply = env.assign(&token, &policy, &chosen).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["summary"]["assigned"], 2, "{reply:?}");
    let profile = env.policy(&token, &policy).await["profile_uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    for serial in chosen {
        let device = env.device(&token, serial).await;
        assert_eq!(device["assignment"]["status"], "assigned", "{device}");
        assert_eq!(
            env.sim_device(&token.server_uuid, serial).await["profile_uuid"],
            profile.as_str()
        );
    }
}

#[tokio::test]
async fn bad_assignment_requests_change_nothing() {
    let env = TestService::start().await;
    let token = env.create_token("acme", 3).await;
    env.wait_until_idle(&token, RUN_TIMEOUT).await;
    let serials = env.serials(&token).await;
    let policy = env.new_policy(&token, "Retail").await;
    let before = env.sim_assign_requests().await;
    let path = format!("/v1/tokens/{}/policies/{policy}/devices", token.token_id);
    for (body, status, code) in [
        (json!({"serials": []}), 400, "invalid_request"),
        (json!({"serials": ["not a serial"]}), 400, "invalid_request"),
        (json!({"serials": "C02"}), 400, "invalid_request"),
        (json!({"devices": [serials[0]]}), 400, "invalid_request"),
        (
            json!({"serials": [serials[0], "C02NOTMINE001"]}),
            400,
            "unknown_devices",
        ),
    ] {
        let reply = env
            .call(Method::POST, &path, &token.jwt, Some(body.clone()))
            .await;
        assert_eq!(reply.status, status, "{body}: {reply:?}");
        assert_eq!(reply.error(), code, "{body}");
    }
    // A device released from Apple Business (moved to another MDM server) cannot be.
    let other = env.create_token("globex", 0).await;
    env.wait_until_idle(&other, RUN_TIMEOUT).await;
    env.sim_post(
        &format!(
            "/_sim/servers/{}/devices/{}/reassign",
            token.server_uuid, serials[2]
        ),
        json!({"to_server_uuid": other.server_uuid}),
    )
    .await;
    let sync = env.request_sync(&token, "delta").await;
    assert_eq!(sync.status, 202, "{sync:?}");
    env.wait_for_run(&token, sync.body["run_id"].as_str().unwrap(), RUN_TIMEOUT)
        .await;
    assert_eq!(
        env.device(&token, &serials[2]).await["state"],
        "removed_from_apple"
    );
    let released = env
        .assign(&token, &policy, &[&serials[0], &serials[2]])
        .await;
    assert_eq!(released.status, 409, "{released:?}");
    assert_eq!(released.error(), "devices_released");
    assert_eq!(released.body["serials"], json!([serials[2]]));
    for serial in &serials {
        let device = env.device(&token, serial).await;
        assert_eq!(device["policy_id"], Value::Null, "{device}");
        assert_eq!(device["assignment"], Value::Null, "{device}");
    }
    assert_eq!(env.policy(&token, &policy).await["device_count"], 0);
    assert_eq!(env.sim_assign_requests().await, before);
    // Another policy id, or an unknown one, is not found.
    let unknown = env
        .assign(&token, "01ARZ3NDEKTSV4RRFFQ69G5FAV", &[serials[0].as_str()])
        .await;
    assert_eq!(unknown.status, 404, "{unknown:?}");
}

#[tokio::test]
async fn a_policy_holds_at_most_200000_devices() {
    let env = TestService::start().await;
    let token = env.create_token("acme", 4).await;
    env.wait_until_idle(&token, RUN_TIMEOUT).await;
    let serials = env.serials(&token).await;
    let policy = env.new_policy(&token, "Big").await;
    // 199,999 devices would take minutes to sync; the counter the limit reads is set
    // directly instead (the store's repair operation), as if they were there.
    let store = env.store();
    let token_id = TokenId::parse(&token.token_id).unwrap();
    let policy_id = PolicyId::parse(&policy).unwrap();
    store
        .policies
        .set_policy_device_count(&token_id, &policy_id, 199_998)
        .await
        .unwrap();

    // Three more would pass the limit: refused, nothing changes.
    let refused = env
        .assign(&token, &policy, &[&serials[0], &serials[1], &serials[2]])
        .await;
    assert_eq!(refused.status, 409, "{refused:?}");
    assert_eq!(refused.error(), "policy_device_limit_reached");
    assert_eq!(refused.body["limit"], 200_000);
    assert_eq!(refused.body["device_count"], 199_998);
    for serial in &serials[..3] {
        assert_eq!(env.device(&token, serial).await["policy_id"], Value::Null);
    }
    // Two reach it exactly (the 200,000th device is fine).
    let fits = env
        .assign(&token, &policy, &[&serials[0], &serials[1]])
        .await;
    assert_eq!(fits.status, 200, "{fits:?}");
    assert_eq!(env.policy(&token, &policy).await["device_count"], 200_000);
    // Re-assigning a device it already holds adds nothing, so it is allowed.
    let again = env.assign(&token, &policy, &[&serials[0]]).await;
    assert_eq!(again.status, 200, "{again:?}");
    // One more is refused.
    let over = env.assign(&token, &policy, &[&serials[3]]).await;
    assert_eq!(over.status, 409, "{over:?}");
    assert_eq!(over.error(), "policy_device_limit_reached");
    assert_eq!(
        env.device(&token, &serials[3]).await["policy_id"],
        Value::Null
    );
    assert_eq!(env.policy(&token, &policy).await["device_count"], 200_000);

    // Moving a device to another policy counts it out of this one, in the same write.
    let other = env.new_policy(&token, "Small").await;
    let moved = env.assign(&token, &other, &[&serials[0]]).await;
    assert_eq!(moved.status, 200, "{moved:?}");
    assert_eq!(env.policy(&token, &policy).await["device_count"], 199_999);
    assert_eq!(env.policy(&token, &other).await["device_count"], 1);
}

#[tokio::test]
async fn the_default_policy_takes_newly_synced_devices_and_blocks_deletes() {
    let env = TestService::start().await;
    let token = env.create_token("acme", 0).await;
    env.wait_until_idle(&token, RUN_TIMEOUT).await;
    let policy = env.new_policy(&token, "Default").await;
    let set = env.set_default_policy(&token, &policy).await;
    assert_eq!(set.status, 200, "{set:?}");
    assert_eq!(
        token_json(&env, &token).await["default_policy_id"],
        policy.as_str()
    );
    assert_eq!(env.policy(&token, &policy).await["is_default"], true);

    env.sim_post(
        &format!("/_sim/servers/{}/devices", token.server_uuid),
        json!({"count": 40}),
    )
    .await;
    let requests = env.sim_assign_requests().await;
    let sync = env.request_sync(&token, "delta").await;
    assert_eq!(sync.status, 202, "{sync:?}");
    env.wait_for_run(&token, sync.body["run_id"].as_str().unwrap(), RUN_TIMEOUT)
        .await;
    let devices = env
        .wait_for_devices(&token, "assigned", RUN_TIMEOUT, |d| {
            d["assignment"]["status"] == "assigned"
        })
        .await;
    assert_eq!(devices.len(), 40);
    assert!(devices.iter().all(|d| d["policy_id"] == policy.as_str()));
    assert_eq!(
        env.sim_assign_requests().await - requests,
        1,
        "40 devices in one request"
    );
    let profile = env.policy(&token, &policy).await["profile_uuid"].clone();
    let serial = devices[0]["serial_number"].as_str().unwrap().to_owned();
    assert_eq!(
        env.sim_device(&token.server_uuid, &serial).await["profile_uuid"],
        profile
    );
    assert_eq!(env.policy(&token, &policy).await["device_count"], 40);

    // The token cannot go: devices, default-policy devices and policies, with counts.
    let refused = env
        .call(
            Method::DELETE,
            &format!("/v1/tokens/{}", token.token_id),
            &token.jwt,
            None,
        )
        .await;
    assert_eq!(refused.status, 409, "{refused:?}");
    assert_eq!(refused.error(), "token_not_empty");
    assert_eq!(
        refused.body["conditions"],
        json!([
            {"condition": "devices_assigned", "count": 40},
            {"condition": "default_policy_devices", "count": 40},
            {"condition": "policies_exist", "count": 1},
        ])
    );
    // Nor the policy, while devices are assigned to it.
    let in_use = env
        .call(
            Method::DELETE,
            &format!("/v1/tokens/{}/policies/{policy}", token.token_id),
            &token.jwt,
            None,
        )
        .await;
    assert_eq!(in_use.status, 409, "{in_use:?}");
    assert_eq!(in_use.error(), "policy_in_use");
    assert_eq!(in_use.body["device_count"], 40);

    // Apple reports a device's profile removed: it is assigned again.
    env.sim_post(
        &format!(
            "/_sim/servers/{}/devices/{serial}/reassign",
            token.server_uuid
        ),
        json!({}),
    )
    .await;
    assert_eq!(
        env.sim_device(&token.server_uuid, &serial).await["profile_status"],
        "removed"
    );
    env.advance(15 * 60 + 1).await;
    let sync = env.request_sync(&token, "delta").await;
    assert_eq!(sync.status, 202, "{sync:?}");
    env.wait_for_run(&token, sync.body["run_id"].as_str().unwrap(), RUN_TIMEOUT)
        .await;
    let started = std::time::Instant::now();
    while env.sim_device(&token.server_uuid, &serial).await["profile_status"] != "assigned" {
        assert!(
            started.elapsed() < RUN_TIMEOUT,
            "the removed profile was not assigned again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(env.sim_assign_requests().await - requests, 2);
    assert_eq!(env.policy(&token, &policy).await["device_count"], 40);
}

#[tokio::test]
async fn a_changed_policy_gets_a_new_profile_and_its_devices_move_to_it() {
    let env = TestService::start().await;
    let token = env.create_token("acme", 6).await;
    env.wait_until_idle(&token, RUN_TIMEOUT).await;
    let serials = env.serials(&token).await;
    let refs: Vec<&str> = serials.iter().map(String::as_str).collect();
    let policy = env.new_policy(&token, "Before").await;
    assert_eq!(env.assign(&token, &policy, &refs).await.status, 200);
    let old = env.policy(&token, &policy).await["profile_uuid"].clone();
    assert!(old.is_string());
    let defines = env.sim_define_requests().await;

    // Only adesync reads user_affinity: the profile stays.
    let path = format!("/v1/tokens/{}/policies/{policy}", token.token_id);
    let reply = env
        .call(
            Method::PATCH,
            &path,
            &token.jwt,
            Some(json!({"user_affinity": true})),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["profile_uuid"], old);
    assert_eq!(reply.body["reassign_pending"], false);

    // Apple has no profile update: a new profile, and every device moves to it.
    let reply = env
        .call(
            Method::PATCH,
            &path,
            &token.jwt,
            Some(json!({"name": "After"})),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["profile_uuid"], Value::Null);
    assert_eq!(reply.body["reassign_pending"], true);
    let started = std::time::Instant::now();
    let new = loop {
        let shown = env.policy(&token, &policy).await;
        if shown["reassign_pending"] == false {
            break shown["profile_uuid"].clone();
        }
        assert!(
            started.elapsed() < RUN_TIMEOUT,
            "devices not moved: {shown}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(new.is_string() && new != old, "{new} vs {old}");
    assert_eq!(env.sim_define_requests().await - defines, 1);
    for serial in &serials {
        assert_eq!(
            env.sim_device(&token.server_uuid, serial).await["profile_uuid"],
            new
        );
        let device = env.device(&token, serial).await;
        assert_eq!(device["assignment"]["profile_uuid"], new, "{device}");
    }
}

/// SQS delivers the assignment job of a changed policy to two invocations
/// at once: one holds the token's assigner slot and talks to Apple, the
/// other comes back after it. One profile is defined (Apple's `POST
/// /profile` is not idempotent) and the devices are assigned once.
#[tokio::test]
async fn two_assignment_jobs_at_once_define_one_profile_and_assign_each_device_once() {
    // On a sped-up clock the refused delivery's wait (the holder's
    // 90-second deadline) takes 3 real seconds.
    let env = TestService::start_with(TestOptions {
        clock_speed: Some(30.0),
        ..TestOptions::default()
    })
    .await;
    let token = env.create_token("acme", 6).await;
    env.wait_until_idle(&token, RUN_TIMEOUT).await;
    let serials = env.serials(&token).await;
    let refs: Vec<&str> = serials.iter().map(String::as_str).collect();
    let policy = env.new_policy(&token, "Before").await;
    assert_eq!(env.assign(&token, &policy, &refs).await.status, 200);
    // Whatever the sync and the assignment queued is done.
    env.wait_for_sync_jobs(RUN_TIMEOUT).await;
    let defines = env.sim_define_requests().await;
    let assigns = env.sim_assign_requests().await;

    // The change queues the token's assignment job: delivered twice.
    env.service
        .runner
        .deliveries()
        .deliver_twice("SyncJobsQueue", 1);
    let path = format!("/v1/tokens/{}/policies/{policy}", token.token_id);
    let reply = env
        .call(
            Method::PATCH,
            &path,
            &token.jwt,
            Some(json!({"name": "After"})),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    env.wait_for_sync_jobs(RUN_TIMEOUT).await;
    assert_eq!(
        env.service.runner.deliveries().remaining("SyncJobsQueue"),
        0,
        "the job was delivered twice"
    );

    let shown = env.policy(&token, &policy).await;
    assert_eq!(shown["reassign_pending"], false, "{shown}");
    assert_eq!(
        env.sim_define_requests().await - defines,
        1,
        "one profile defined"
    );
    assert_eq!(
        env.sim_assign_requests().await - assigns,
        1,
        "the 6 devices assigned in one request, once"
    );
    for serial in &serials {
        assert_eq!(
            env.sim_device(&token.server_uuid, serial).await["profile_uuid"],
            shown["profile_uuid"]
        );
    }
    let busy = env
        .log_lines()
        .iter()
        .filter(|line| line.contains("another assignment job of this token runs until"))
        .count();
    assert!(busy >= 1, "the second delivery found the slot taken");
}

#[tokio::test]
async fn deleting_the_default_policy_clears_the_default() {
    let env = TestService::start().await;
    let token = seeded(&env, "acme").await;
    let policy = env.new_policy(&token, "Default").await;
    assert_eq!(env.set_default_policy(&token, &policy).await.status, 200);
    let deleted = env
        .call(
            Method::DELETE,
            &format!("/v1/tokens/{}/policies/{policy}", token.token_id),
            &token.jwt,
            None,
        )
        .await;
    assert_eq!(deleted.status, 204);
    let shown = token_json(&env, &token).await;
    assert_eq!(shown["default_policy_id"], Value::Null);
    assert_eq!(shown["policy_count"], 0);
    // A policy alone keeps the token.
    env.new_policy(&token, "Kept").await;
    let refused = env
        .call(
            Method::DELETE,
            &format!("/v1/tokens/{}", token.token_id),
            &token.jwt,
            None,
        )
        .await;
    assert_eq!(refused.status, 409);
    assert_eq!(
        refused.body["conditions"],
        json!([{"condition": "policies_exist", "count": 1}])
    );
}
