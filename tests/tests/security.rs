//! Authentication, roles, account isolation and hostile input on every
//! route the service serves, through the runner (which verifies JWTs as API
//! Gateway's authorizer does).
//!
//! [`routes`] is the table of routes: add a row when a route is added, and
//! every check below covers it.

use adesync_core::ids::AccountId;
use adesync_local::runner::{LOCAL_AUDIENCE, LOCAL_ISSUER, mint_jwt};
use adesync_tests::flows::CreatedToken;
use adesync_tests::routes::{Scope, routes, send};
use adesync_tests::{Reply, TestService};
use reqwest::Method;
use serde_json::{Value, json};

/// The secret the test harness signs JWTs with (`adesync_tests`). The
/// first check of [`no_token_bad_token_or_expired_token_is_401_everywhere`]
/// proves it is still the right one, so an expired token is refused for
/// being expired, not for its signature.
const HARNESS_JWT_SECRET: &str = "adesync-test-secret";

/// Every refusal is the contract's JSON error.
fn assert_error_body(reply: &Reply, context: &str) {
    assert!(
        reply.body["error"].is_string() && reply.body["message"].is_string(),
        "{context}: not an error body: {reply:?}"
    );
}

/// A token of "acme" created through the real flow, and its account's count.
async fn acme_token(env: &TestService) -> CreatedToken {
    env.create_token("acme", 0).await
}

async fn token_count(env: &TestService, account: &str) -> u64 {
    env.store()
        .accounts
        .token_count(&AccountId::parse(account).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn another_accounts_objects_are_not_found_on_every_route() {
    let env = TestService::start().await;
    let token = acme_token(&env).await;
    let acme_pem = env
        .call(Method::GET, "/v1/public-key", &token.jwt, None)
        .await;
    let globex = format!("Bearer {}", env.jwt("globex", &["admin"]));
    let acme = format!("Bearer {}", token.jwt);

    for route in routes().iter().filter(|r| r.scope == Scope::Token) {
        let path = route.path_for(&token.token_id);
        if route.owner_succeeds {
            let owner = send(&env, route, &path, Some(&acme)).await;
            assert!(
                (200..300).contains(&owner.status),
                "{}: the owner should succeed: {owner:?}",
                route.label()
            );
        }
        let other = send(&env, route, &path, Some(&globex)).await;
        assert_eq!(other.status, 404, "{}: {other:?}", route.label());
        assert_eq!(other.error(), "not_found", "{}", route.label());
        assert_error_body(&other, &route.label());
    }

    // Account routes answer for the caller's own account only.
    let globex_jwt = env.jwt("globex", &["admin"]);
    let own_pem = env
        .call(Method::GET, "/v1/public-key", &globex_jwt, None)
        .await;
    assert_eq!(own_pem.status, 200);
    assert_ne!(
        own_pem.body, acme_pem.body,
        "globex gets its own certificate"
    );
    let listed = env.call(Method::GET, "/v1/tokens", &globex_jwt, None).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["tokens"], json!([]));

    // Nothing the other account tried changed acme's token.
    let still = env.token(&token).await;
    assert_eq!(still.status, 200);
    assert_eq!(still.body["renewed_at"], Value::Null);
    assert_eq!(still.body["last_manual_sync_at"], Value::Null);
    assert_eq!(token_count(&env, "acme").await, 1);
    assert_eq!(token_count(&env, "globex").await, 0);
}

#[tokio::test]
async fn readers_may_read_but_every_write_is_forbidden() {
    let env = TestService::start().await;
    let token = acme_token(&env).await;
    let reader = format!("Bearer {}", env.jwt("acme", &["reader"]));
    let nobody = format!("Bearer {}", env.jwt("acme", &["superuser"]));

    for route in routes() {
        let path = route.path_for(&token.token_id);
        let reply = send(&env, &route, &path, Some(&reader)).await;
        if route.write {
            assert_eq!(reply.status, 403, "{}: {reply:?}", route.label());
            assert_eq!(reply.error(), "forbidden");
            assert_error_body(&reply, &route.label());
        } else if route.owner_succeeds {
            assert!(
                (200..300).contains(&reply.status),
                "{}: {reply:?}",
                route.label()
            );
        }
        // A token without any adesync role may do nothing at all.
        let none = send(&env, &route, &path, Some(&nobody)).await;
        assert_eq!(
            none.status,
            403,
            "{} without a role: {none:?}",
            route.label()
        );
    }

    let still = env.token(&token).await;
    assert_eq!(still.status, 200, "the reader deleted nothing");
    assert_eq!(still.body["last_manual_sync_at"], Value::Null, "nor synced");
    assert_eq!(token_count(&env, "acme").await, 1, "nor created a token");
}

#[tokio::test]
async fn no_token_bad_token_or_expired_token_is_401_everywhere() {
    let env = TestService::start().await;
    let token = acme_token(&env).await;

    // The harness's secret is the one copied here: a fresh token signed
    // with it is accepted.
    let valid = mint_jwt(
        HARNESS_JWT_SECRET,
        "u1",
        "acme",
        &["admin"],
        std::time::Duration::from_secs(600),
    )
    .unwrap();
    let control = env.call(Method::GET, "/v1/tokens", &valid, None).await;
    assert_eq!(control.status, 200, "{control:?}");

    let forged = mint_jwt(
        "not-the-secret",
        "u1",
        "acme",
        &["admin"],
        std::time::Duration::from_secs(600),
    )
    .unwrap();
    let now = chrono::Utc::now().timestamp();
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({
            "sub": "u1",
            "adesync:account": "acme",
            "adesync:roles": ["admin"],
            "iat": now - 7200,
            "exp": now - 3600,
            "iss": LOCAL_ISSUER,
            "aud": LOCAL_AUDIENCE,
        }),
        &jsonwebtoken::EncodingKey::from_secret(HARNESS_JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let unsigned_account = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "u1", "adesync:roles": ["admin"], "iat": now, "exp": now + 600, "iss": LOCAL_ISSUER, "aud": LOCAL_AUDIENCE}),
        &jsonwebtoken::EncodingKey::from_secret(HARNESS_JWT_SECRET.as_bytes()),
    )
    .unwrap();
    // Signed with the right secret, but not what the authorizer accepts.
    let claims_signed = |claims: Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(HARNESS_JWT_SECRET.as_bytes()),
        )
        .unwrap()
    };
    let acme = |iss: Option<&str>, aud: Option<&str>| {
        let mut claims = json!({"sub": "u1", "adesync:account": "acme", "adesync:roles": ["admin"], "iat": now, "exp": now + 600});
        if let Some(iss) = iss {
            claims["iss"] = json!(iss);
        }
        if let Some(aud) = aud {
            claims["aud"] = json!(aud);
        }
        claims_signed(claims)
    };
    let other_issuer = acme(Some("https://idp.example.com"), Some(LOCAL_AUDIENCE));
    let other_audience = acme(Some(LOCAL_ISSUER), Some("another-api"));
    let no_issuer = acme(None, Some(LOCAL_AUDIENCE));
    let no_audience = acme(Some(LOCAL_ISSUER), None);
    let refused_credentials = [
        ("no Authorization header", None),
        ("another issuer", Some(format!("Bearer {other_issuer}"))),
        ("another audience", Some(format!("Bearer {other_audience}"))),
        ("no issuer", Some(format!("Bearer {no_issuer}"))),
        ("no audience", Some(format!("Bearer {no_audience}"))),
        ("a forged signature", Some(format!("Bearer {forged}"))),
        ("an expired token", Some(format!("Bearer {expired}"))),
        (
            "a token without an account",
            Some(format!("Bearer {unsigned_account}")),
        ),
        ("garbage", Some("Bearer not.a.jwt".to_owned())),
        ("another scheme", Some(format!("Basic {valid}"))),
        ("an empty bearer", Some("Bearer ".to_owned())),
    ];
    for route in routes() {
        let path = route.path_for(&token.token_id);
        for (what, auth) in &refused_credentials {
            let reply = send(&env, &route, &path, auth.as_deref()).await;
            assert_eq!(
                reply.status,
                401,
                "{} with {what}: {reply:?}",
                route.label()
            );
            assert_error_body(&reply, &route.label());
        }
    }
    assert_eq!(token_count(&env, "acme").await, 1);
}

#[tokio::test]
async fn hostile_token_ids_name_no_token() {
    let env = TestService::start().await;
    let token = acme_token(&env).await;
    let admin = format!("Bearer {}", token.jwt);
    let hostile = [
        "..%2F..%2Fetc%2Fpasswd",
        "%2E%2E",
        "%C3%A9t%C3%A9",
        "%E2%80%AEtoken",
        "a%00b",
        "a%0Ab",
        "a%20b",
        "%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        "'%20OR%20'1'%3D'1",
        &"A".repeat(65),
        &format!("{}%2F", token.token_id),
    ];
    for route in routes().iter().filter(|r| r.scope == Scope::Token) {
        for id in hostile {
            let reply = send(&env, route, &route.path_for(id), Some(&admin)).await;
            assert_eq!(reply.status, 404, "{} with {id}: {reply:?}", route.label());
            assert_error_body(&reply, &route.label());
        }
    }
    let still = env.token(&token).await;
    assert_eq!(still.status, 200);
    assert_eq!(token_count(&env, "acme").await, 1);
}

async fn send_raw(
    env: &TestService,
    method: Method,
    path: &str,
    jwt: &str,
    body: Vec<u8>,
) -> Reply {
    let response = env
        .http
        .request(method, env.api(path))
        .bearer_auth(jwt)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the API answers");
    Reply::from(response).await
}

#[tokio::test]
async fn bad_bodies_are_refused_with_nothing_stored() {
    let env = TestService::start().await;
    let token = acme_token(&env).await;
    let jwt = &token.jwt;
    let good_file = "AAAA";
    let secretish = "CK_0123456789abcdef0123456789abcdef";
    let create_bodies: Vec<(&str, Vec<u8>)> = vec![
        ("malformed JSON", b"{\"name\": \"x\",".to_vec()),
        ("not JSON", b"name=x&apple_id=y".to_vec()),
        ("an array", b"[\"x\", \"admin@acme.test\", \"AAAA\"]".to_vec()),
        ("null", b"null".to_vec()),
        ("empty", Vec::new()),
        (
            "a number for a string",
            json!({"name": 5, "apple_id": "admin@acme.test", "token_file": good_file}).to_string().into_bytes(),
        ),
        (
            "an unknown field",
            json!({"name": "x", "apple_id": "admin@acme.test", "token_file": good_file, "account_id": secretish})
                .to_string()
                .into_bytes(),
        ),
        (
            "a missing field",
            json!({"name": "x", "apple_id": "admin@acme.test"}).to_string().into_bytes(),
        ),
        (
            "a name too long",
            json!({"name": "é".repeat(129), "apple_id": "admin@acme.test", "token_file": good_file})
                .to_string()
                .into_bytes(),
        ),
        (
            "a control character in the name",
            json!({"name": "Paris\u{0}\u{1b}[31m", "apple_id": "admin@acme.test", "token_file": good_file})
                .to_string()
                .into_bytes(),
        ),
        (
            "a blank name",
            json!({"name": " \t ", "apple_id": "admin@acme.test", "token_file": good_file}).to_string().into_bytes(),
        ),
        (
            "an Apple ID that is not an e-mail address",
            json!({"name": "x", "apple_id": "../../etc", "token_file": good_file}).to_string().into_bytes(),
        ),
        (
            "a token file that is not base64",
            json!({"name": "x", "apple_id": "admin@acme.test", "token_file": format!("{secretish}!*")})
                .to_string()
                .into_bytes(),
        ),
        (
            "invalid UTF-8",
            b"{\"name\": \"\xff\xfe\", \"apple_id\": \"admin@acme.test\", \"token_file\": \"AAAA\"}".to_vec(),
        ),
    ];
    for (what, body) in create_bodies {
        let reply = send_raw(&env, Method::POST, "/v1/tokens", jwt, body).await;
        assert_eq!(reply.status, 400, "{what}: {reply:?}");
        assert_eq!(reply.error(), "invalid_request", "{what}");
        assert_error_body(&reply, what);
        assert!(
            !reply.body.to_string().contains(secretish),
            "{what} echoed: {reply:?}"
        );
    }

    // Far over the 256 KiB cap: refused before it is read.
    let huge =
        json!({"name": "x", "apple_id": "admin@acme.test", "token_file": "A".repeat(300 * 1024)});
    let reply = send_raw(
        &env,
        Method::POST,
        "/v1/tokens",
        jwt,
        huge.to_string().into_bytes(),
    )
    .await;
    assert_eq!(reply.status, 413, "{reply:?}");
    assert_error_body(&reply, "a 300 KiB body");
    let renewal = format!("/v1/tokens/{}/renewal", token.token_id);
    let reply = send_raw(
        &env,
        Method::PUT,
        &renewal,
        jwt,
        huge.to_string().into_bytes(),
    )
    .await;
    assert_eq!(reply.status, 413, "{reply:?}");

    let renew_bodies: Vec<(&str, Vec<u8>)> = vec![
        ("malformed JSON", b"{".to_vec()),
        (
            "an unknown field",
            json!({"apple_id": "admin@acme.test", "token_file": good_file, "name": "x"})
                .to_string()
                .into_bytes(),
        ),
        (
            "a missing file",
            json!({"apple_id": "admin@acme.test"})
                .to_string()
                .into_bytes(),
        ),
        (
            "an Apple ID that is not an e-mail address",
            json!({"apple_id": "admin", "token_file": good_file})
                .to_string()
                .into_bytes(),
        ),
        (
            "a token file that is not base64",
            json!({"apple_id": "admin@acme.test", "token_file": "%%%"})
                .to_string()
                .into_bytes(),
        ),
    ];
    for (what, body) in renew_bodies {
        let reply = send_raw(&env, Method::PUT, &renewal, jwt, body).await;
        assert_eq!(reply.status, 400, "renewal with {what}: {reply:?}");
        assert_eq!(reply.error(), "invalid_request", "{what}");
    }
    // Base64 of something that is not a token file: the file is refused, saying why.
    let not_a_file = send_raw(
        &env,
        Method::PUT,
        &renewal,
        jwt,
        json!({"apple_id": "admin@acme.test", "token_file": "aGVsbG8gd29ybGQ="})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(not_a_file.status, 400, "{not_a_file:?}");
    assert_eq!(not_a_file.error(), "invalid_token_file");

    // Nothing was stored or changed.
    let listed = env.call(Method::GET, "/v1/tokens", jwt, None).await;
    let tokens = listed.body["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 1, "{listed:?}");
    assert_eq!(tokens[0]["renewed_at"], Value::Null);
    assert_eq!(token_count(&env, "acme").await, 1);
}

#[tokio::test]
async fn token_ids_that_are_not_utf8_name_no_token() {
    // Percent-encoded bytes that decode to no text at all: a path
    // extractor's own rejection would answer 400 in plain text, outside
    // the contract; every route must answer its JSON 404 instead.
    let env = TestService::start().await;
    let token = acme_token(&env).await;
    let admin = format!("Bearer {}", token.jwt);
    for route in routes().iter().filter(|r| r.scope == Scope::Token) {
        for id in ["%FF%FE", "%C3", "ok%80"] {
            let reply = send(&env, route, &route.path_for(id), Some(&admin)).await;
            assert_eq!(reply.status, 404, "{} with {id}: {reply:?}", route.label());
            assert_error_body(&reply, &route.label());
        }
    }
}

/// Status, content type and body of an answer as sent, to compare answers
/// byte for byte.
async fn exact_answer(
    env: &TestService,
    method: Method,
    path: &str,
    jwt: &str,
    body: &Value,
) -> (u16, String, String) {
    let response = env
        .http
        .request(method, env.api(path))
        .bearer_auth(jwt)
        .json(body)
        .send()
        .await
        .expect("the API answers");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = response.bytes().await.expect("a body").to_vec();
    let body = String::from_utf8(bytes).expect("a text body");
    (status, content_type, body)
}

/// The binary CMS inside a token file as the simulated Apple Business
/// hands it out (base64 of S/MIME text); the service reads it as it is.
fn cms_of(token_file_base64: &str) -> Vec<u8> {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::STANDARD;
    let file = engine.decode(token_file_base64).expect("base64");
    let text = String::from_utf8(file).expect("S/MIME text");
    let (_, body) = text.split_once("\r\n\r\n").expect("S/MIME headers");
    engine
        .decode(body.split_whitespace().collect::<String>())
        .expect("base64 CMS")
}

/// Where the RSA-encrypted content key of a CMS for a 2048-bit key starts:
/// the first 256-byte OCTET STRING (the recipient comes before the content).
fn encrypted_key_at(cms: &[u8]) -> usize {
    cms.windows(4)
        .position(|w| w == [0x04, 0x82, 0x01, 0x00])
        .expect("a 256-byte encrypted key")
        + 4
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Token files broken at every step past the envelope's structure: a
/// writer who could tell these answers apart would have a padding oracle on
/// the account's private key and on the token's secrets.
#[tokio::test]
async fn token_files_that_do_not_open_get_one_answer_and_store_nothing() {
    use adesync_tokenfile::{AccountKey, ContentCipher, ServerToken};
    use secrecy::SecretString;

    let env = TestService::start().await;
    let admin = env.jwt("acme", &["admin"]);
    let pem = env.public_key(&admin).await;
    let sim_file = |pem: String, name: &'static str| {
        let env = &env;
        async move {
            let server: Value = env
                .http
                .post(env.sim("/_sim/servers"))
                .json(&json!({
                    "name": name,
                    "public_key_pem": pem,
                    "org_name": "Acme Inc.",
                    "admin_id": "admin@acme.test",
                    "devices": 0,
                }))
                .send()
                .await
                .expect("POST /_sim/servers")
                .json()
                .await
                .expect("a server");
            server["token_file"]
                .as_str()
                .expect("a token file")
                .to_owned()
        }
    };
    let good = sim_file(pem.clone(), "Acme MDM server").await;
    let stranger = AccountKey::generate("someone else", chrono::Utc::now(), 30).unwrap();
    let strangers = sim_file(stranger.certificate_pem(), "Elsewhere").await;
    let another_for_us = sim_file(pem.clone(), "Another MDM server").await;

    let cms = cms_of(&good);
    let key_at = encrypted_key_at(&cms);
    let mut key_changed = cms.clone();
    key_changed[key_at + 100] ^= 0x01;
    // Another file's content key: valid RSA padding and the right length,
    // but not this content's key.
    let mut key_swapped = cms.clone();
    let other = cms_of(&another_for_us);
    let other_at = encrypted_key_at(&other);
    key_swapped[key_at..key_at + 256].copy_from_slice(&other[other_at..other_at + 256]);
    // A 16-byte content key (AES-128) where the content says AES-256.
    let token = ServerToken {
        consumer_key: SecretString::from("CK_0123456789abcdef0123456789abcdef"),
        consumer_secret: SecretString::from("CS_0123456789abcdef0123456789abcdef"),
        access_token: SecretString::from("AT_0123456789abcdef0123456789abcdef"),
        access_secret: SecretString::from("AS_0123456789abcdef0123456789abcdef"),
        access_token_expiry: chrono::Utc::now() + chrono::Duration::days(300),
    };
    let aes128 = adesync_tokenfile::seal(&token, &pem, ContentCipher::Aes128Cbc).unwrap();
    let mut short_key = cms_of(&b64(&aes128));
    let aes128_oid = [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x02];
    let oid_at = short_key
        .windows(aes128_oid.len())
        .position(|w| w == aes128_oid)
        .expect("the AES-128-CBC identifier");
    short_key[oid_at + aes128_oid.len() - 1] = 0x2a; // AES-256-CBC
    // The ciphertext ends the CMS: change the last block's padding, or a
    // block of the JSON.
    let mut padding_changed = cms.clone();
    let at = padding_changed.len() - 17;
    padding_changed[at] ^= 0x01;
    let mut block_changed = cms.clone();
    let at = block_changed.len() - 100;
    block_changed[at] ^= 0x80;
    // Sealed to this account's key, but not a whole token.
    let no_secret = ServerToken {
        access_secret: SecretString::from(""),
        ..token.clone()
    };
    let no_secret = adesync_tokenfile::seal(&no_secret, &pem, ContentCipher::Aes256Cbc).unwrap();

    let cases = [
        ("a file for another key", strangers),
        ("an encrypted key with a byte changed", b64(&key_changed)),
        ("another file's content key", b64(&key_swapped)),
        ("a content key of the wrong length", b64(&short_key)),
        ("the content's padding changed", b64(&padding_changed)),
        ("a block of the content changed", b64(&block_changed)),
        ("a token without its access secret", b64(&no_secret)),
    ];

    let mut answers = Vec::new();
    for (what, file) in &cases {
        let body = json!({"name": "T", "apple_id": "admin@acme.test", "token_file": file});
        let answer = exact_answer(&env, Method::POST, "/v1/tokens", &admin, &body).await;
        answers.push((format!("create with {what}"), answer));
    }
    assert_eq!(token_count(&env, "acme").await, 0, "nothing was created");

    // The untouched file opens: the refusals were the changes'.
    let created = env
        .call(
            Method::POST,
            "/v1/tokens",
            &admin,
            Some(json!({"name": "T", "apple_id": "admin@acme.test", "token_file": good})),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let token_id = created.body["id"].as_str().expect("an id").to_owned();
    let renewal = format!("/v1/tokens/{token_id}/renewal");
    for (what, file) in &cases {
        let body = json!({"apple_id": "admin@acme.test", "token_file": file});
        let answer = exact_answer(&env, Method::PUT, &renewal, &admin, &body).await;
        answers.push((format!("renew with {what}"), answer));
    }

    let (_, first) = &answers[0];
    for (what, answer) in &answers {
        assert_eq!(answer, first, "{what}");
    }
    let first_body: Value = serde_json::from_str(&first.2).expect("a JSON body");
    assert_eq!(first.0, 400, "{first_body}");
    assert_eq!(first_body["error"], "invalid_token_file", "{first_body}");
    assert!(
        first_body["message"]
            .as_str()
            .unwrap()
            .contains("GET /v1/public-key"),
        "the one answer says what to do: {first_body}"
    );
    let still = env
        .call(Method::GET, &format!("/v1/tokens/{token_id}"), &admin, None)
        .await;
    assert_eq!(still.body["renewed_at"], Value::Null, "nothing was renewed");
    assert_eq!(token_count(&env, "acme").await, 1);
}

/// A bearer token as the harness signs them, for account "acme", whose
/// roles claim is `roles` exactly (any JSON value).
fn jwt_with_roles(roles: &Value) -> String {
    let now = chrono::Utc::now().timestamp();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({
            "sub": "u1",
            "adesync:account": "acme",
            "adesync:roles": roles,
            "iat": now,
            "exp": now + 600,
            "iss": LOCAL_ISSUER,
            "aud": LOCAL_AUDIENCE,
        }),
        &jsonwebtoken::EncodingKey::from_secret(HARNESS_JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn near_miss_roles_grant_nothing_on_every_route() {
    let env = TestService::start().await;
    let token = acme_token(&env).await;
    // Each reaches the function as the runner (and API Gateway) flattens
    // it: `["admin "]` as `[admin ]`.
    let near_misses = [
        json!(["Admin"]),
        json!(["administrator"]),
        json!(["admin "]),
        json!([" admin"]),
        json!(["admin\t"]),
        json!(["ADMIN", "dem"]),
        json!(["Dem"]),
        json!(["Reader"]),
        json!(["readers"]),
        json!(["admin", "Admin"]),
        json!(["admin,dem"]),
        json!([]),
        json!("Admin"),
        json!("administrator"),
        json!("admin "),
        json!("[Admin]"),
        json!("[admin ]"),
        json!("admin,dem"),
        json!("admin dem"),
        json!(""),
        json!(true),
        json!({"admin": true}),
    ];
    for roles in &near_misses {
        let auth = format!("Bearer {}", jwt_with_roles(roles));
        for route in routes() {
            let path = route.path_for(&token.token_id);
            let reply = send(&env, &route, &path, Some(&auth)).await;
            assert_eq!(
                reply.status,
                403,
                "{} with roles {roles}: {reply:?}",
                route.label()
            );
            assert_eq!(reply.error(), "forbidden", "{} with {roles}", route.label());
        }
    }
    let still = env.token(&token).await;
    assert_eq!(still.status, 200, "nothing deleted the token");
    assert_eq!(still.body["last_manual_sync_at"], Value::Null, "nor synced");
    assert_eq!(token_count(&env, "acme").await, 1, "nor created a token");

    // The exact names, in every shape the claim may take, do grant.
    for roles in [
        json!(["reader"]),
        json!("reader"),
        json!("[reader]"),
        json!(r#"["reader"]"#),
    ] {
        let reply = env
            .call(Method::GET, "/v1/tokens", &jwt_with_roles(&roles), None)
            .await;
        assert_eq!(reply.status, 200, "roles {roles}: {reply:?}");
    }
    let sync = env
        .call(
            Method::POST,
            &format!("/v1/tokens/{}/sync", token.token_id),
            &jwt_with_roles(&json!("admin")),
            Some(json!({"kind": "delta"})),
        )
        .await;
    assert!(
        matches!(sync.status, 202 | 409),
        "admin may start a sync (or find the first one running): {sync:?}"
    );
    assert_ne!(sync.error(), "forbidden");
}

#[tokio::test]
async fn an_oversized_body_is_the_contracts_413_on_every_route_and_changes_nothing() {
    let env = TestService::start().await;
    let token = acme_token(&env).await;
    let admin = format!("Bearer {}", token.jwt);
    let oversized = json!({
        "name": "x",
        "apple_id": "admin@acme.test",
        "kind": "full",
        "token_file": "A".repeat(300 * 1024),
    })
    .to_string();
    // Every route of both functions, one that exists for no method, and a
    // method no route takes.
    let mut requests: Vec<(Method, String)> = routes()
        .iter()
        .map(|route| (route.method.clone(), route.path_for(&token.token_id)))
        .collect();
    requests.push((Method::POST, "/v1/nowhere".to_owned()));
    requests.push((Method::PATCH, format!("/v1/tokens/{}/sync", token.token_id)));
    for (method, path) in requests {
        let response = env
            .http
            .request(method.clone(), env.api(&path))
            .header("authorization", &admin)
            .header("content-type", "application/json")
            .body(oversized.clone())
            .send()
            .await
            .expect("the API answers");
        let reply = Reply::from(response).await;
        let label = format!("{method} {path}");
        assert_eq!(reply.status, 413, "{label}: {reply:?}");
        assert_eq!(
            reply.header("content-type"),
            Some("application/json"),
            "{label}: {reply:?}"
        );
        assert_eq!(reply.error(), "body_too_large", "{label}: {reply:?}");
        assert_error_body(&reply, &label);
        assert!(
            !reply.body.to_string().contains("AAAAAAAA"),
            "{label} quoted the body"
        );
    }

    let still = env.token(&token).await;
    assert_eq!(still.status, 200, "the token was not deleted: {still:?}");
    assert_eq!(still.body["renewed_at"], Value::Null, "nor renewed");
    assert_eq!(still.body["last_manual_sync_at"], Value::Null, "nor synced");
    let policies = env
        .call(
            Method::GET,
            &format!("/v1/tokens/{}/policies", token.token_id),
            &token.jwt,
            None,
        )
        .await;
    assert_eq!(policies.status, 200, "{policies:?}");
    assert_eq!(
        policies.body["policies"].as_array().map(Vec::len),
        Some(0),
        "no policy was created: {policies:?}"
    );
    assert_eq!(token_count(&env, "acme").await, 1, "nor a token");
}
