//! Requests racing each other: the conditional writes decide, and whatever
//! the interleaving, nothing is half done.

use std::time::Duration;

use adesync_tests::TestService;
use adesync_tests::flows::CreatedToken;
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use reqwest::Method;
use serde_json::json;

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Device items stored for `token`, listed or not.
async fn device_items(env: &TestService, token: &str) -> i32 {
    env.service
        .clients
        .dynamodb
        .query()
        .table_name(&env.service.config.tables.devices)
        .key_condition_expression("token_id = :t")
        .expression_attribute_values(":t", AttributeValue::S(token.to_owned()))
        .select(aws_sdk_dynamodb::types::Select::Count)
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .count()
}

async fn token_exists(env: &TestService, token: &CreatedToken) -> bool {
    let reply = env
        .call(
            Method::GET,
            &format!("/v1/tokens/{}", token.token_id),
            &token.jwt,
            None,
        )
        .await;
    match reply.status {
        200 => true,
        404 => false,
        other => panic!("GET token answered {other}: {reply:?}"),
    }
}

#[tokio::test]
async fn renewal_racing_deletion_leaves_either_a_renewed_token_or_none() {
    let env = TestService::start().await;
    let mut deleted = 0;
    for round in 0..8 {
        let token = env.create_token("acme", 0).await;
        env.wait_until_idle(&token, RUN_TIMEOUT).await;
        let file = env
            .sim_post(
                &format!("/_sim/servers/{}/token", token.server_uuid),
                json!({}),
            )
            .await["token_file"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            base64::engine::general_purpose::STANDARD
                .decode(&file)
                .is_ok()
        );
        let renewal_path = format!("/v1/tokens/{}/renewal", token.token_id);
        let token_path = format!("/v1/tokens/{}", token.token_id);
        let renew = env.call(
            Method::PUT,
            &renewal_path,
            &token.jwt,
            Some(json!({"apple_id": "admin@acme.test", "token_file": file})),
        );
        let delete = env.call(Method::DELETE, &token_path, &token.jwt, None);
        let (renew, delete) = tokio::join!(renew, delete);
        assert!(
            matches!(renew.status, 200 | 404 | 409),
            "round {round}: renewal answered {renew:?}"
        );
        assert!(
            matches!(delete.status, 204 | 409),
            "round {round}: {delete:?}"
        );
        let exists = token_exists(&env, &token).await;
        assert_eq!(
            exists,
            delete.status != 204,
            "round {round}: {renew:?} {delete:?}"
        );
        if delete.status == 204 {
            // Whichever committed first, the deletion is final: a renewal
            // cannot recreate the token (its write requires it to exist).
            deleted += 1;
        }
    }
    // Every deletion gave its slot back: the account counts what is left.
    let listed = env
        .call(
            Method::GET,
            "/v1/tokens",
            &env.jwt("acme", &["admin"]),
            None,
        )
        .await;
    let left = listed.body["tokens"].as_array().unwrap().len();
    assert_eq!(left, 8 - deleted);
}

#[tokio::test]
async fn deletion_racing_an_import_never_orphans_a_device() {
    let env = TestService::start().await;
    for round in 0..4 {
        let token = env.create_token("acme", 0).await;
        env.wait_until_idle(&token, RUN_TIMEOUT).await;
        env.sim_post(
            &format!("/_sim/servers/{}/devices", token.server_uuid),
            json!({"count": 1500}),
        )
        .await;
        env.advance(15 * 60).await;
        let sync = env.request_sync(&token, "delta");
        let deletes = async {
            let mut statuses = Vec::new();
            for _ in 0..20 {
                let reply = env
                    .call(
                        Method::DELETE,
                        &format!("/v1/tokens/{}", token.token_id),
                        &token.jwt,
                        None,
                    )
                    .await;
                statuses.push(reply.status);
                if reply.status == 204 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            statuses
        };
        let (sync, statuses) = tokio::join!(sync, deletes);
        if sync.status == 202 {
            // The sync started: wait for it before judging.
            let _ = tokio::time::timeout(RUN_TIMEOUT, async {
                while token_exists(&env, &token).await
                    && env.sync_status(&token).await["state"] == "running"
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await;
        }
        let exists = token_exists(&env, &token).await;
        let items = device_items(&env, &token.token_id).await;
        if exists {
            assert!(!statuses.contains(&204), "round {round}");
        } else {
            assert!(statuses.contains(&204), "round {round}");
            assert_eq!(
                items, 0,
                "round {round}: a deleted token left {items} device items"
            );
        }
    }
}
