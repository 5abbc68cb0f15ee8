//! The token lifecycle end to end: the account key, creating a token from
//! the Apple simulator's token file, renewing it after Apple re-issued it,
//! the limits, and deleting it — through the runner, the simulator and the
//! local AWS.

use adesync_apple::{AppleClient, AppleConfig, AppleError, RetryPolicy};
use adesync_core::clock::Clock;
use adesync_core::ids::{AccountId, RunId, TokenId};
use adesync_core::sync::{SyncKind, SyncRequest, Trigger};
use adesync_secrets::{Context, Sealed, Vault, VaultError};
use adesync_service::session::SharedSession;
use adesync_service::tokens::load_credentials;
use adesync_store::accounts::{ACCOUNT_SK, server_sk};
use adesync_tests::{Reply, TestService};
use adesync_tokenfile::{AccountKey, ContentCipher, ServerToken};
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use futures::future::join_all;
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

const APPLE_ID: &str = "admin@acme.test";

fn acme() -> AccountId {
    AccountId::parse("acme").unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Every answer of a test, kept to check that none carries a secret.
#[derive(Default)]
struct Transcript(Vec<String>);

impl Transcript {
    fn keep(&mut self, reply: &Reply) {
        let headers: Vec<String> = reply
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v.as_bytes())))
            .collect();
        self.0.push(format!(
            "{}\n{}\n{}",
            reply.status,
            headers.join("\n"),
            reply.body
        ));
    }
}

struct Walk<'a> {
    env: &'a TestService,
    admin: String,
    seen: Transcript,
}

impl<'a> Walk<'a> {
    fn new(env: &'a TestService, account: &str) -> Self {
        Self {
            env,
            admin: env.jwt(account, &["admin"]),
            seen: Transcript::default(),
        }
    }

    async fn call(&mut self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let reply = self.env.call(method, path, &self.admin, body).await;
        self.seen.keep(&reply);
        reply
    }

    async fn public_key(&mut self) -> String {
        let reply = self.call(Method::GET, "/v1/public-key", None).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.header("content-type"), Some("application/x-pem-file"));
        let pem = reply.body.as_str().expect("a PEM body").to_owned();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
        pem
    }

    async fn create(&mut self, name: &str, apple_id: &str, token_file: &str) -> Reply {
        self.call(
            Method::POST,
            "/v1/tokens",
            Some(json!({"name": name, "apple_id": apple_id, "token_file": token_file})),
        )
        .await
    }

    async fn renew(&mut self, token: &str, apple_id: &str, token_file: &str) -> Reply {
        self.call(
            Method::PUT,
            &format!("/v1/tokens/{token}/renewal"),
            Some(json!({"apple_id": apple_id, "token_file": token_file})),
        )
        .await
    }
}

/// A simulated MDM server whose token file is encrypted to `pem`:
/// `(server_uuid, token_file as base64)`.
async fn sim_server(env: &TestService, pem: &str, name: &str) -> (String, String) {
    let response = env
        .http
        .post(env.sim("/_sim/servers"))
        .json(&json!({
            "name": name,
            "public_key_pem": pem,
            "org_name": "Acme Inc.",
            "admin_id": APPLE_ID,
            "devices": 0,
        }))
        .send()
        .await
        .expect("POST /_sim/servers");
    assert!(response.status().is_success(), "{response:?}");
    let server: Value = response.json().await.expect("a server");
    (
        server["server_uuid"].as_str().unwrap().to_owned(),
        server["token_file"].as_str().unwrap().to_owned(),
    )
}

/// Downloads the server's token again in "Apple Business": the old
/// credentials stop working. Returns the new file (base64).
async fn redownload(env: &TestService, server_uuid: &str) -> String {
    let response = env
        .http
        .post(env.sim(&format!("/_sim/servers/{server_uuid}/token")))
        .json(&json!({}))
        .send()
        .await
        .expect("POST /_sim/servers/{uuid}/token");
    assert!(response.status().is_success(), "{response:?}");
    let body: Value = response.json().await.unwrap();
    body["token_file"].as_str().unwrap().to_owned()
}

fn vault(env: &TestService) -> Vault {
    Vault::new(
        env.service.clients.kms.clone(),
        &env.service.config.kms_key_id,
    )
}

fn apple(env: &TestService) -> AppleClient {
    AppleClient::new(AppleConfig {
        base_url: env.sim(""),
        retry: RetryPolicy::none(),
        ..AppleConfig::default()
    })
    .unwrap()
}

fn service_now(env: &TestService) -> DateTime<Utc> {
    env.service.runner.clock().now()
}

async fn token_count(env: &TestService, account: &AccountId) -> u64 {
    env.store().accounts.token_count(account).await.unwrap()
}

/// Sets counters on the account item directly (the limit test starts at 1,999).
async fn set_token_count(env: &TestService, account: &AccountId, count: u64) {
    env.service
        .clients
        .dynamodb
        .update_item()
        .table_name(&env.service.config.tables.accounts)
        .key("account_id", AttributeValue::S(account.to_string()))
        .key("sk", AttributeValue::S(ACCOUNT_SK.into()))
        .update_expression("SET token_count = :n")
        .expression_attribute_values(":n", AttributeValue::N(count.to_string()))
        .send()
        .await
        .unwrap();
}

/// Sets the token's device and policy counters and its default policy
/// directly on the items. Devices and policies are imported and created by
/// other parts of the service (issues of their own); here only their counts
/// matter, and these are the attributes those parts maintain.
async fn set_contents(
    env: &TestService,
    account: &AccountId,
    token: &str,
    devices: u64,
    policies: u64,
    default_policy: Option<(&str, u64)>,
) {
    let tables = &env.service.config.tables;
    let dynamodb = &env.service.clients.dynamodb;
    let mut update = dynamodb
        .update_item()
        .table_name(&tables.tokens)
        .key("account_id", AttributeValue::S(account.to_string()))
        .key("token_id", AttributeValue::S(token.into()))
        .expression_attribute_values(":d", AttributeValue::N(devices.to_string()))
        .expression_attribute_values(":p", AttributeValue::N(policies.to_string()));
    update = match default_policy {
        Some((policy, policy_devices)) => {
            dynamodb
                .put_item()
                .table_name(&tables.policies)
                .item("token_id", AttributeValue::S(token.into()))
                .item("policy_id", AttributeValue::S(policy.into()))
                .item("is_default", AttributeValue::Bool(true))
                .item(
                    "device_count",
                    AttributeValue::N(policy_devices.to_string()),
                )
                .send()
                .await
                .unwrap();
            update
                .update_expression(
                    "SET device_count = :d, policy_count = :p, default_policy_id = :dp",
                )
                .expression_attribute_values(":dp", AttributeValue::S(policy.into()))
        }
        None => update
            .update_expression("SET device_count = :d, policy_count = :p REMOVE default_policy_id"),
    };
    update.send().await.unwrap();
}

async fn item_exists(env: &TestService, table: &str, key: [(&str, String); 2]) -> bool {
    let mut get = env
        .service
        .clients
        .dynamodb
        .get_item()
        .table_name(table)
        .consistent_read(true);
    for (name, value) in key {
        get = get.key(name, AttributeValue::S(value));
    }
    get.send().await.unwrap().item().is_some()
}

/// What a response must never contain: OAuth values as the simulator makes
/// them (`CK_`/`CS_`/`AT_`/`AS_` + hex), key material, the uploaded files.
fn assert_no_secrets(transcript: &Transcript, token_files: &[String]) {
    for text in &transcript.0 {
        for prefix in ["CK_", "CS_", "AT_", "AS_"] {
            for (at, _) in text.match_indices(prefix) {
                let hex = text[at + prefix.len()..]
                    .chars()
                    .take_while(char::is_ascii_hexdigit)
                    .count();
                assert!(hex < 8, "an OAuth value ({prefix}…) in an answer: {text}");
            }
        }
        assert!(
            !text.contains("PRIVATE KEY"),
            "key material in an answer: {text}"
        );
        for file in token_files {
            // Any 64-character piece of an uploaded file would be a leak.
            for piece in file.as_bytes().chunks(64).filter(|c| c.len() == 64) {
                let piece = std::str::from_utf8(piece).unwrap();
                assert!(
                    !text.contains(piece),
                    "part of a token file in an answer: {text}"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_token_is_created_renewed_and_deleted_without_a_secret_in_any_answer() {
    adesync_tests::logs::capture();
    let log_mark = adesync_tests::logs::mark();
    let env = TestService::start().await;
    let account = acme();
    let store = env.store();
    let mut walk = Walk::new(&env, "acme");
    let mut files = Vec::new();

    // The key pair is made once: every download is the same certificate.
    let pem = walk.public_key().await;
    assert_eq!(walk.public_key().await, pem);

    // Apple Business encrypts the server's token file to that certificate.
    let (server, file) = sim_server(&env, &pem, "Paris MDM").await;
    files.push(file.clone());
    let created = walk.create("  Paris office ", APPLE_ID, &file).await;
    assert_eq!(created.status, 201, "{created:?}");
    let token = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created.header("location"),
        Some(format!("/v1/tokens/{token}").as_str())
    );
    let body = &created.body;
    assert_eq!(body["name"], "Paris office");
    assert_eq!(body["apple_id"], APPLE_ID);
    assert_eq!(body["server_name"], "Paris MDM");
    assert_eq!(body["server_uuid"], server.as_str());
    assert_eq!(body["org_name"], "Acme Inc.");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["status_message"], Value::Null);
    assert_eq!(body["expiring_soon"], false);
    let days_left = body["days_left"].as_u64().unwrap();
    assert!((364..=366).contains(&days_left), "days_left {days_left}");
    let expires_at: DateTime<Utc> = body["expires_at"].as_str().unwrap().parse().unwrap();
    let expected = service_now(&env) + Duration::days(365);
    assert!(
        (expires_at - expected).num_minutes().abs() < 5,
        "{expires_at}"
    );
    assert_eq!(body["device_count"], 0);
    assert_eq!(body["policy_count"], 0);
    assert_eq!(body["default_policy_id"], Value::Null);
    assert_eq!(body["renewed_at"], Value::Null);
    assert!(body["created_at"].is_string());

    // The first full sync was queued: a claimed run, recorded in the runs table.
    assert_eq!(body["first_sync"]["queued"], true, "{body}");
    let run = RunId::parse(body["first_sync"]["run_id"].as_str().unwrap()).unwrap();
    // Claimed, not completed: the full sync is owed until it completes, and
    // the 7-day cooldown will count from then.
    assert!(body["last_full_sync_at"].is_null(), "{body}");
    let state = store
        .claims
        .sync_state(&account, &TokenId::parse(&token).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(state.last_full_at.is_none());
    assert!(state.next_sync_is_full);
    assert_eq!(
        state.lease.map(|lease| lease.run_id),
        Some(run.clone()),
        "the first run holds the token"
    );
    assert!(
        item_exists(
            &env,
            &env.service.config.tables.runs,
            [("token_id", token.clone()), ("sk", format!("run#{run}"))]
        )
        .await,
        "the first run is recorded"
    );
    assert_eq!(token_count(&env, &account).await, 1);

    let listed = walk.call(Method::GET, "/v1/tokens", None).await;
    assert_eq!(listed.status, 200);
    let tokens = listed.body["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0]["id"], token.as_str());
    let shown = walk
        .call(Method::GET, &format!("/v1/tokens/{token}"), None)
        .await;
    assert_eq!(shown.status, 200);
    assert_eq!(shown.body["server_uuid"], server.as_str());

    // The same Apple MDM server cannot be linked twice.
    let twice = walk.create("Paris again", APPLE_ID, &file).await;
    assert_eq!(twice.status, 409, "{twice:?}");
    assert_eq!(twice.error(), "token_exists");
    assert_eq!(twice.body["token_id"], token.as_str());
    assert_eq!(token_count(&env, &account).await, 1);

    // The first full sync runs to its end before the token is re-downloaded.
    let created_token = adesync_tests::flows::CreatedToken {
        token_id: token.clone(),
        server_uuid: server.clone(),
        jwt: env.jwt("acme", &["admin"]),
    };
    let first = env
        .wait_for_run(
            &created_token,
            run.as_str(),
            std::time::Duration::from_secs(60),
        )
        .await;
    assert_eq!(first["status"], "succeeded", "{first}");

    // An administrator downloads the token again in Apple Business: the
    // credentials in use stop working at once.
    let renewed_file = redownload(&env, &server).await;
    files.push(renewed_file.clone());
    let token_id = TokenId::parse(&token).unwrap();
    let (old, cached) = load_credentials(&store.tokens, &vault(&env), &account, &token_id)
        .await
        .unwrap();
    let refused = apple(&env)
        .session(&token, old, cached)
        .account()
        .await
        .unwrap_err();
    assert!(matches!(refused, AppleError::TokenInvalid), "{refused:?}");
    // The next sync meets that refusal; the worker records it on the token.
    let sync = env.request_sync(&created_token, "delta").await;
    assert_eq!(sync.status, 202, "{sync:?}");
    let failed = env
        .wait_for_run(
            &created_token,
            sync.body["run_id"].as_str().unwrap(),
            std::time::Duration::from_secs(60),
        )
        .await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let invalid = walk
        .call(Method::GET, &format!("/v1/tokens/{token}"), None)
        .await;
    assert_eq!(invalid.body["status"], "token_invalid");
    let message = invalid.body["status_message"].as_str().unwrap();
    assert!(
        message.contains("Renew") && message.contains("downloaded again"),
        "{message}"
    );

    // Renewal needs the Apple ID that created the token…
    let wrong_id = walk.renew(&token, "someone@acme.test", &renewed_file).await;
    assert_eq!(wrong_id.status, 409, "{wrong_id:?}");
    assert_eq!(wrong_id.error(), "apple_id_mismatch");
    // …and a file of the same MDM server.
    let (_other_server, other_file) = sim_server(&env, &pem, "Lyon MDM").await;
    files.push(other_file.clone());
    let other = walk.renew(&token, APPLE_ID, &other_file).await;
    assert_eq!(other.status, 409, "{other:?}");
    assert_eq!(other.error(), "different_server");
    let unchanged = walk
        .call(Method::GET, &format!("/v1/tokens/{token}"), None)
        .await;
    assert_eq!(unchanged.body["status"], "token_invalid");
    assert_eq!(unchanged.body["renewed_at"], Value::Null);

    // Apple IDs compare without case.
    let renewed = walk.renew(&token, "ADMIN@Acme.test", &renewed_file).await;
    assert_eq!(renewed.status, 200, "{renewed:?}");
    assert_eq!(renewed.body["id"], token.as_str());
    assert_eq!(renewed.body["status"], "ok");
    assert_eq!(renewed.body["status_message"], Value::Null);
    assert_eq!(renewed.body["apple_id"], APPLE_ID);
    assert!(renewed.body["renewed_at"].is_string());
    assert_eq!(renewed.body["created_at"], body["created_at"]);
    let (new, cached) = load_credentials(&store.tokens, &vault(&env), &account, &token_id)
        .await
        .unwrap();
    assert!(cached.is_some(), "the renewal keeps Apple's new session");
    let details = apple(&env)
        .session(&token, new, None)
        .account()
        .await
        .unwrap();
    assert_eq!(details.server_uuid, server);

    // Deleting is refused while devices or policies belong to the token,
    // naming every failing condition with its count.
    set_contents(&env, &account, &token, 3, 2, Some(("default-1", 1))).await;
    let full = walk
        .call(Method::DELETE, &format!("/v1/tokens/{token}"), None)
        .await;
    assert_eq!(full.status, 409, "{full:?}");
    assert_eq!(full.error(), "token_not_empty");
    assert_eq!(
        full.body["conditions"],
        json!([
            {"condition": "devices_assigned", "count": 3},
            {"condition": "default_policy_devices", "count": 1},
            {"condition": "policies_exist", "count": 2},
        ])
    );
    set_contents(&env, &account, &token, 0, 1, None).await;
    let policies = walk
        .call(Method::DELETE, &format!("/v1/tokens/{token}"), None)
        .await;
    assert_eq!(policies.status, 409, "{policies:?}");
    assert_eq!(
        policies.body["conditions"],
        json!([{"condition": "policies_exist", "count": 1}])
    );
    assert_eq!(token_count(&env, &account).await, 1);

    // Empty, and past any sync still holding it: deleted with its server link.
    set_contents(&env, &account, &token, 0, 0, None).await;
    env.advance(16 * 60).await;
    let deleted = walk
        .call(Method::DELETE, &format!("/v1/tokens/{token}"), None)
        .await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    let gone = walk
        .call(Method::GET, &format!("/v1/tokens/{token}"), None)
        .await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.error(), "not_found");
    assert_eq!(token_count(&env, &account).await, 0);
    assert!(
        !item_exists(
            &env,
            &env.service.config.tables.accounts,
            [
                ("account_id", account.to_string()),
                ("sk", server_sk(&server))
            ]
        )
        .await
    );
    let again = walk
        .call(Method::DELETE, &format!("/v1/tokens/{token}"), None)
        .await;
    assert_eq!(again.status, 404);

    // The server may be linked again, with its current file.
    let relinked = walk.create("Paris office", APPLE_ID, &renewed_file).await;
    assert_eq!(relinked.status, 201, "{relinked:?}");
    assert_ne!(relinked.body["id"], token.as_str());

    assert_no_secrets(&walk.seen, &files);
    let logged = adesync_tests::logs::lines_since(log_mark);
    assert!(
        logged.iter().any(|line| line.contains("token created")),
        "the service's logs are captured"
    );
    assert_no_secrets(&Transcript(logged), &files);
}

#[tokio::test]
async fn a_token_is_not_deleted_while_a_sync_holds_it() {
    let env = TestService::start().await;
    let account = acme();
    let store = env.store();
    let admin = env.jwt("acme", &["admin"]);
    let token = env.seed_token("acme").await;
    assert_eq!(token_count(&env, &account).await, 1);

    let claimed = store
        .claims
        .claim_sync(
            &account,
            &token,
            SyncRequest {
                trigger: Trigger::Manual,
                kind: SyncKind::Delta,
            },
            service_now(&env),
            RunId::new_at(service_now(&env)),
        )
        .await
        .unwrap();
    let path = format!("/v1/tokens/{token}");
    let busy = env.call(Method::DELETE, &path, &admin, None).await;
    assert_eq!(busy.status, 409, "{busy:?}");
    assert_eq!(busy.error(), "sync_in_progress");
    assert_eq!(busy.body["run_id"], claimed.claim.run_id.as_str());
    assert!(busy.body["lease_expires_at"].is_string());
    assert_eq!(token_count(&env, &account).await, 1);

    // A lease older than 15 minutes belongs to an abandoned run.
    env.advance(16 * 60).await;
    let deleted = env.call(Method::DELETE, &path, &admin, None).await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    assert_eq!(token_count(&env, &account).await, 0);
}

#[tokio::test]
async fn at_most_2000_tokens_even_when_five_are_created_at_once() {
    let env = TestService::start().await;
    let account = acme();
    let mut walk = Walk::new(&env, "acme");
    let pem = walk.public_key().await;
    let mut files = Vec::new();
    for i in 0..6 {
        files.push(sim_server(&env, &pem, &format!("Server {i}")).await.1);
    }
    // 1,999 tokens already (the counter is what the rule reads).
    set_token_count(&env, &account, 1_999).await;

    let admin = walk.admin.clone();
    let replies = join_all(files[..5].iter().enumerate().map(|(i, file)| {
        let env = &env;
        let admin = &admin;
        async move {
            env.call(
                Method::POST,
                "/v1/tokens",
                admin,
                Some(
                    json!({"name": format!("Token {i}"), "apple_id": APPLE_ID, "token_file": file}),
                ),
            )
            .await
        }
    }))
    .await;
    let created = replies.iter().filter(|r| r.status == 201).count();
    let refused: Vec<&Reply> = replies.iter().filter(|r| r.status != 201).collect();
    assert_eq!(created, 1, "{replies:?}");
    assert_eq!(refused.len(), 4);
    for reply in refused {
        assert_eq!(reply.status, 409, "{reply:?}");
        assert_eq!(reply.error(), "token_limit_reached");
        assert_eq!(reply.body["limit"], 2000);
    }
    assert_eq!(token_count(&env, &account).await, 2_000);
    let listed = walk.call(Method::GET, "/v1/tokens", None).await;
    assert_eq!(listed.body["tokens"].as_array().unwrap().len(), 1);

    // At 2,000 every further token is refused.
    let sixth = walk.create("Token 6", APPLE_ID, &files[5]).await;
    assert_eq!(sixth.status, 409, "{sixth:?}");
    assert_eq!(sixth.error(), "token_limit_reached");
    assert_eq!(token_count(&env, &account).await, 2_000);
}

/// A token file sealed here, as Apple Business would, with the given expiry.
fn sealed_file(pem: &str, expiry: DateTime<Utc>) -> String {
    let token = ServerToken {
        consumer_key: SecretString::from("CK_0123456789abcdef0123456789abcdef"),
        consumer_secret: SecretString::from("CS_0123456789abcdef0123456789abcdef"),
        access_token: SecretString::from("AT_0123456789abcdef0123456789abcdef"),
        access_secret: SecretString::from("AS_0123456789abcdef0123456789abcdef"),
        access_token_expiry: expiry,
    };
    b64(&adesync_tokenfile::seal(&token, pem, ContentCipher::Aes256Cbc).unwrap())
}

#[tokio::test]
async fn refused_token_files_store_nothing() {
    let env = TestService::start().await;
    let account = acme();
    let mut walk = Walk::new(&env, "acme");
    let mut files = Vec::new();

    // No key yet: no file can be for this account.
    let stranger = AccountKey::generate("someone else", Utc::now(), 30).unwrap();
    let (_, strangers_file) = sim_server(&env, &stranger.certificate_pem(), "Elsewhere").await;
    files.push(strangers_file.clone());
    let no_key = walk.create("T", APPLE_ID, &strangers_file).await;
    assert_eq!(no_key.status, 400, "{no_key:?}");
    assert_eq!(no_key.error(), "invalid_token_file");
    assert!(
        no_key.body["message"]
            .as_str()
            .unwrap()
            .contains("GET /v1/public-key")
    );

    let pem = walk.public_key().await;
    // A file for another key.
    let wrong_key = walk.create("T", APPLE_ID, &strangers_file).await;
    assert_eq!(wrong_key.status, 400, "{wrong_key:?}");
    assert_eq!(wrong_key.error(), "invalid_token_file");
    assert!(
        wrong_key.body["message"]
            .as_str()
            .unwrap()
            .contains("encrypted for another public key, or it is damaged"),
        "{wrong_key:?}"
    );
    // Not a token file at all, and not even base64.
    let not_a_file = walk.create("T", APPLE_ID, &b64(b"hello, I am a PDF")).await;
    assert_eq!(not_a_file.status, 400, "{not_a_file:?}");
    assert_eq!(not_a_file.error(), "invalid_token_file");
    let garbage = walk.create("T", APPLE_ID, "!!not base64!!").await;
    assert_eq!(garbage.status, 400, "{garbage:?}");
    assert_eq!(garbage.error(), "invalid_request");
    // An expired file.
    let expired_file = sealed_file(&pem, Utc::now() - Duration::days(1));
    files.push(expired_file.clone());
    let expired = walk.create("T", APPLE_ID, &expired_file).await;
    assert_eq!(expired.status, 400, "{expired:?}");
    assert_eq!(expired.error(), "token_expired");
    assert!(expired.body["expired_at"].is_string());

    // Apple refuses a file that was downloaded again since.
    let (server, replaced_file) = sim_server(&env, &pem, "Replaced").await;
    files.push(replaced_file.clone());
    files.push(redownload(&env, &server).await);
    let replaced = walk.create("T", APPLE_ID, &replaced_file).await;
    assert_eq!(replaced.status, 422, "{replaced:?}");
    assert_eq!(replaced.error(), "apple_rejected_token");
    assert_eq!(replaced.body["reason"], "token_invalid");
    // …and every token of an organisation that has not accepted new terms.
    let (server, unsigned_file) = sim_server(&env, &pem, "Unsigned").await;
    files.push(unsigned_file.clone());
    let terms = env
        .http
        .post(env.sim(&format!("/_sim/servers/{server}/terms")))
        .json(&json!({"signed": false}))
        .send()
        .await
        .unwrap();
    assert!(terms.status().is_success());
    let unsigned = walk.create("T", APPLE_ID, &unsigned_file).await;
    assert_eq!(unsigned.status, 422, "{unsigned:?}");
    assert_eq!(unsigned.error(), "apple_rejected_token");
    assert_eq!(unsigned.body["reason"], "terms_not_signed");
    assert!(unsigned.body["message"].as_str().unwrap().contains("terms"));

    // A file the simulator issued is expired once the service's clock is
    // past its expiry (a year of the simulator's clock).
    let (_, fresh_file) = sim_server(&env, &pem, "Fresh").await;
    files.push(fresh_file.clone());
    env.advance(366 * 24 * 3600).await;
    let late = walk.create("T", APPLE_ID, &fresh_file).await;
    assert_eq!(late.status, 400, "{late:?}");
    assert_eq!(late.error(), "token_expired");

    let listed = walk.call(Method::GET, "/v1/tokens", None).await;
    assert_eq!(listed.body["tokens"], json!([]));
    assert_eq!(token_count(&env, &account).await, 0);
    assert_no_secrets(&walk.seen, &files);
}

#[tokio::test]
async fn a_certificate_near_expiry_is_reissued_for_the_same_key() {
    let env = TestService::start().await;
    let mut walk = Walk::new(&env, "acme");
    let first = walk.public_key().await;

    // Past the point where a certificate could lapse within a token year.
    env.advance(400 * 24 * 3600).await;
    let second = walk.public_key().await;
    assert_ne!(second, first, "a new certificate");
    assert_eq!(walk.public_key().await, second, "re-issued once");

    // Token files encrypted to either certificate open with the one key.
    // (The simulator's clock moves too, so its tokens are not expired for
    // the service.)
    let sim_clock = env
        .http
        .post(env.sim("/_sim/clock"))
        .json(&json!({"advance_seconds": 400 * 24 * 3600}))
        .send()
        .await
        .unwrap();
    assert!(sim_clock.status().is_success());
    for (i, pem) in [&first, &second].into_iter().enumerate() {
        let (_, file) = sim_server(&env, pem, &format!("Server {i}")).await;
        let created = walk.create(&format!("Token {i}"), APPLE_ID, &file).await;
        assert_eq!(created.status, 201, "certificate {i}: {created:?}");
    }
}

#[tokio::test]
async fn concurrent_first_downloads_share_one_key_pair() {
    let env = TestService::start().await;
    let jwt = env.jwt("acme", &["reader"]);
    let replies =
        join_all((0..5).map(|_| env.call(Method::GET, "/v1/public-key", &jwt, None))).await;
    let first = &replies[0];
    assert_eq!(first.status, 200, "{first:?}");
    for reply in &replies {
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.body, first.body,
            "every caller got the one certificate"
        );
    }
    let other = env
        .call(
            Method::GET,
            "/v1/public-key",
            &env.jwt("globex", &["admin"]),
            None,
        )
        .await;
    assert_eq!(other.status, 200);
    assert_ne!(other.body, first.body, "each account has its own key");
}

#[tokio::test]
async fn apple_sessions_are_kept_sealed_for_the_sync_worker() {
    let env = TestService::start().await;
    let account = acme();
    let store = env.store();
    let vault = vault(&env);
    let mut walk = Walk::new(&env, "acme");
    let pem = walk.public_key().await;
    let (_, file) = sim_server(&env, &pem, "Paris MDM").await;
    let created = walk.create("Paris", APPLE_ID, &file).await;
    assert_eq!(created.status, 201, "{created:?}");
    let token = TokenId::parse(created.body["id"].as_str().unwrap()).unwrap();

    // Creating the token kept the session Apple gave while checking it.
    let (credentials, from_create) = load_credentials(&store.tokens, &vault, &account, &token)
        .await
        .unwrap();
    assert!(from_create.is_some());
    apple(&env)
        .session(token.as_str(), credentials, from_create)
        .account()
        .await
        .unwrap();

    let session = SecretString::from("sess-0123456789");
    let system_clock: adesync_core::clock::SharedClock =
        std::sync::Arc::new(adesync_core::clock::SystemClock);
    assert!(
        SharedSession::new(
            &store.tokens,
            &vault,
            system_clock.clone(),
            &account,
            &token
        )
        .keep(&session)
        .await
        .unwrap()
    );
    let (_, loaded) = load_credentials(&store.tokens, &vault, &account, &token)
        .await
        .unwrap();
    assert_eq!(loaded.unwrap().expose_secret(), "sess-0123456789");

    // At rest it is sealed, bound to its purpose: the token's credentials'
    // context does not open it.
    let secrets = store
        .tokens
        .token_secrets(&account, &token)
        .await
        .unwrap()
        .unwrap();
    let sealed = secrets.session.unwrap();
    assert!(!String::from_utf8_lossy(&sealed).contains("sess-0123456789"));
    let wrong = vault
        .open(
            &Sealed::from_bytes(&sealed).unwrap(),
            &Context::token_credentials(account.as_str(), token.as_str()),
        )
        .await;
    assert!(matches!(wrong, Err(VaultError::Tampered)), "{wrong:?}");

    // Another account's identifiers find nothing.
    let globex = AccountId::parse("globex").unwrap();
    assert!(
        !SharedSession::new(&store.tokens, &vault, system_clock, &globex, &token)
            .keep(&session)
            .await
            .unwrap()
    );
    assert!(
        load_credentials(&store.tokens, &vault, &globex, &token)
            .await
            .is_err()
    );
}

/// What hangs on a token, as the API shows it: its counts and default
/// policy, each policy with its devices, each device with its policy.
async fn estate(env: &TestService, token: &adesync_tests::flows::CreatedToken) -> Value {
    let path = format!("/v1/tokens/{}", token.token_id);
    let shown = env.call(Method::GET, &path, &token.jwt, None).await;
    assert_eq!(shown.status, 200, "{shown:?}");
    let listed = env
        .call(Method::GET, &format!("{path}/policies"), &token.jwt, None)
        .await;
    assert_eq!(listed.status, 200, "{listed:?}");
    let mut policies: Vec<Value> = listed.body["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            json!({
                "id": p["id"], "name": p["name"], "device_count": p["device_count"],
                "is_default": p["is_default"], "version": p["version"],
                "profile_uuid": p["profile_uuid"],
            })
        })
        .collect();
    policies.sort_by_key(|p| p["id"].to_string());
    let devices: Vec<Value> = env
        .all_devices(token, "")
        .await
        .iter()
        .map(|d| {
            json!({
                "serial_number": d["serial_number"], "state": d["state"],
                "policy_id": d["policy_id"], "assignment": d["assignment"]["status"],
            })
        })
        .collect();
    json!({
        "id": shown.body["id"],
        "device_count": shown.body["device_count"],
        "policy_count": shown.body["policy_count"],
        "default_policy_id": shown.body["default_policy_id"],
        "policies": policies,
        "devices": devices,
    })
}

/// Renewing keeps the token's id, its devices and its policies with their
/// devices and the default (docs/product.md "Token lifecycle" 3), and the
/// next sync, made with the renewed credentials, keeps them too.
#[tokio::test]
async fn a_renewed_token_keeps_its_devices_and_policies() {
    let env = TestService::start().await;
    let token = env.create_token("acme", 6).await;
    let first = env
        .wait_until_idle(&token, std::time::Duration::from_secs(120))
        .await;
    assert_eq!(first["status"], "succeeded", "{first}");
    let serials = env.serials(&token).await;
    let staff = env.new_policy(&token, "Staff").await;
    let lab = env.new_policy(&token, "Lab").await;
    let to_staff = env
        .assign(&token, &staff, &[&serials[0], &serials[1], &serials[2]])
        .await;
    assert_eq!(to_staff.body["summary"]["assigned"], 3, "{to_staff:?}");
    let to_lab = env.assign(&token, &lab, &[&serials[3]]).await;
    assert_eq!(to_lab.body["summary"]["assigned"], 1, "{to_lab:?}");
    assert_eq!(env.set_default_policy(&token, &lab).await.status, 200);
    let before = estate(&env, &token).await;
    assert_eq!(before["device_count"], 6, "{before}");
    assert_eq!(before["policy_count"], 2, "{before}");
    assert_eq!(before["default_policy_id"], lab.as_str(), "{before}");
    let count_of = |estate: &Value, policy: &str| {
        estate["policies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == policy)
            .map(|p| p["device_count"].clone())
    };
    assert_eq!(count_of(&before, &staff), Some(json!(3)), "{before}");
    assert_eq!(count_of(&before, &lab), Some(json!(1)), "{before}");

    // The file is downloaded again in Apple Business and uploaded.
    let renewed_file = redownload(&env, &token.server_uuid).await;
    let renewed = env
        .call(
            Method::PUT,
            &format!("/v1/tokens/{}/renewal", token.token_id),
            &token.jwt,
            Some(json!({"apple_id": APPLE_ID, "token_file": renewed_file})),
        )
        .await;
    assert_eq!(renewed.status, 200, "{renewed:?}");
    assert!(renewed.body["renewed_at"].is_string(), "{renewed:?}");
    assert_eq!(estate(&env, &token).await, before, "kept by the renewal");

    // The renewed credentials sync, and nothing is lost on the way.
    let sync = env.request_sync(&token, "delta").await;
    assert_eq!(sync.status, 202, "{sync:?}");
    let run = env
        .wait_for_run(
            &token,
            sync.body["id"].as_str().unwrap(),
            std::time::Duration::from_secs(120),
        )
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(estate(&env, &token).await, before, "kept by the next sync");
}

/// The token as its own answer and the listing show it, which must agree.
async fn token_views(env: &TestService, token: &adesync_tests::flows::CreatedToken) -> Value {
    let shown = env
        .call(
            Method::GET,
            &format!("/v1/tokens/{}", token.token_id),
            &token.jwt,
            None,
        )
        .await;
    assert_eq!(shown.status, 200, "{shown:?}");
    let listed = env.call(Method::GET, "/v1/tokens", &token.jwt, None).await;
    assert_eq!(listed.status, 200, "{listed:?}");
    let in_list = listed.body["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == token.token_id.as_str())
        .cloned()
        .expect("the token in the listing");
    for field in [
        "expires_at",
        "days_left",
        "expiring_soon",
        "status",
        "status_message",
    ] {
        assert_eq!(
            shown.body[field], in_list[field],
            "{field}: {shown:?} {in_list}"
        );
    }
    shown.body
}

/// A stored token is flagged `expiring_soon` when 30 days or less are left,
/// and shown `expired` from its expiry on (docs/product.md "Token lifecycle"
/// 4), in its answer and in the listing, as the service's clock moves.
#[tokio::test]
async fn a_stored_token_is_flagged_expiring_soon_then_shown_expired() {
    let env = TestService::start().await;
    let token = env.create_token("acme", 0).await;
    env.wait_until_idle(&token, std::time::Duration::from_secs(60))
        .await;
    let fresh = token_views(&env, &token).await;
    assert_eq!(fresh["expiring_soon"], false, "{fresh}");
    let expires_at: DateTime<Utc> = fresh["expires_at"].as_str().unwrap().parse().unwrap();
    let to_expiry = (expires_at - service_now(&env)).num_seconds();

    // 30 days and an hour left: 31 days by the rounding up, not flagged.
    env.advance(to_expiry - 30 * 86_400 - 3_600).await;
    let before = token_views(&env, &token).await;
    assert_eq!(before["days_left"], 31, "{before}");
    assert_eq!(before["expiring_soon"], false, "{before}");
    assert_eq!(before["status"], "ok", "{before}");

    // Two hours on, 30 days less an hour: flagged, and still working.
    env.advance(2 * 3_600).await;
    let soon = token_views(&env, &token).await;
    assert_eq!(soon["days_left"], 30, "{soon}");
    assert_eq!(soon["expiring_soon"], true, "{soon}");
    assert_eq!(soon["status"], "ok", "{soon}");
    assert_eq!(soon["status_message"], Value::Null, "{soon}");

    // Past the expiry (an hour ago): expired, whatever the last sync said.
    env.advance(30 * 86_400).await;
    let expired = token_views(&env, &token).await;
    assert_eq!(expired["status"], "expired", "{expired}");
    assert_eq!(expired["expiring_soon"], false, "{expired}");
    assert_eq!(expired["days_left"], 0, "{expired}");
    let message = expired["status_message"].as_str().unwrap();
    assert!(
        message.contains("expired on") && message.contains("renew"),
        "{message}"
    );
    assert_eq!(expired["expires_at"], fresh["expires_at"], "{expired}");
}
