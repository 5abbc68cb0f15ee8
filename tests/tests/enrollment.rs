//! Enrollment end to end: re-enroll sequences, the licensing matrix, the device's
//! user, and the 15-minute SCEP challenge on the service's clock — a credential only
//! `admin` and `dem` receive, shown once and stored as its SHA-256.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use adesync_core::enrollment::ScepChallenge;
use adesync_service::enroll::challenge_digest;
use adesync_tests::TestService;
use adesync_tests::flows::CreatedToken;
use aws_sdk_dynamodb::types::AttributeValue;
use reqwest::Method;
use serde_json::{Value, json};

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

async fn enroll(
    env: &TestService,
    jwt: &str,
    serial: &str,
    user: Option<&str>,
) -> adesync_tests::Reply {
    let mut body = json!({ "serial": serial });
    if let Some(user) = user {
        body["user"] = json!(user);
    }
    env.call(Method::POST, "/v1/enrollments", jwt, Some(body))
        .await
}

async fn action(
    env: &TestService,
    token: &CreatedToken,
    serial: &str,
    action: &str,
) -> adesync_tests::Reply {
    env.call(
        Method::POST,
        &format!(
            "/v1/tokens/{}/devices/{serial}/actions/{action}",
            token.token_id
        ),
        &token.jwt,
        None,
    )
    .await
}

async fn license(env: &TestService, jwt: &str, path: &str, licensed: bool) {
    let reply = env
        .call(
            Method::PUT,
            path,
            jwt,
            Some(json!({ "licensed": licensed })),
        )
        .await;
    assert_eq!(reply.status, 200, "{path}: {reply:?}");
}

async fn set_user(
    env: &TestService,
    token: &CreatedToken,
    serial: &str,
    user: Option<&str>,
) -> Value {
    let reply = env
        .call(
            Method::PUT,
            &format!("/v1/tokens/{}/devices/{serial}/user", token.token_id),
            &token.jwt,
            Some(json!({ "user_id": user })),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body
}

/// The enrollment's item as DynamoDB holds it.
async fn stored_enrollment(env: &TestService, id: &str) -> HashMap<String, AttributeValue> {
    let store = env.store();
    store
        .client()
        .get_item()
        .table_name(&store.tables().accounts)
        .key("account_id", AttributeValue::S("acme".into()))
        .key("sk", AttributeValue::S(format!("enrollment#{id}")))
        .consistent_read(true)
        .send()
        .await
        .expect("GetItem(enrollment)")
        .item
        .unwrap_or_else(|| panic!("no item for enrollment {id}"))
}

/// The 32 bytes a challenge's hex stands for.
fn challenge_bytes(challenge: &str) -> Vec<u8> {
    (0..challenge.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&challenge[at..at + 2], 16).expect("a hex challenge"))
        .collect()
}

/// Every text and byte string of an attribute, however deeply nested.
fn attribute_contents(value: &AttributeValue, out: &mut Vec<Vec<u8>>) {
    match value {
        AttributeValue::S(text) | AttributeValue::N(text) => out.push(text.as_bytes().to_vec()),
        AttributeValue::B(blob) => out.push(blob.as_ref().to_vec()),
        AttributeValue::Ss(list) | AttributeValue::Ns(list) => {
            out.extend(list.iter().map(|t| t.as_bytes().to_vec()))
        }
        AttributeValue::Bs(list) => out.extend(list.iter().map(|b| b.as_ref().to_vec())),
        AttributeValue::L(list) => list.iter().for_each(|v| attribute_contents(v, out)),
        AttributeValue::M(map) => map.values().for_each(|v| attribute_contents(v, out)),
        _ => {}
    }
}

/// The item holds none of `challenges`: not as text (either case), not as the bytes
/// their hex stands for, under no attribute.
fn assert_holds_no_challenge(item: &HashMap<String, AttributeValue>, challenges: &[&str]) {
    let mut contents = Vec::new();
    for value in item.values() {
        attribute_contents(value, &mut contents);
    }
    for challenge in challenges {
        let forms = [
            challenge.as_bytes().to_vec(),
            challenge.to_uppercase().into_bytes(),
            challenge_bytes(challenge),
        ];
        for content in &contents {
            for form in &forms {
                assert!(
                    !content.windows(form.len()).any(|w| w == form.as_slice()),
                    "the stored enrollment holds a SCEP challenge: {item:?}"
                );
            }
        }
    }
}

/// The SHA-256 the item keeps, as bytes.
fn stored_digest(item: &HashMap<String, AttributeValue>) -> Vec<u8> {
    match item.get("scep_challenge_sha256") {
        Some(AttributeValue::B(blob)) => blob.as_ref().to_vec(),
        other => panic!("no challenge digest in the item: {other:?}"),
    }
}

fn digest_of(challenge: &str) -> Vec<u8> {
    challenge_digest(&ScepChallenge::new(challenge.to_owned()))
        .as_bytes()
        .to_vec()
}

/// An answer's time, to the millisecond the store keeps.
fn millis(time: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(time.as_str().expect("a time"))
        .expect("an RFC 3339 time")
        .timestamp_millis()
}

fn challenge_of(reply: &adesync_tests::Reply) -> String {
    let challenge = reply.body["scep_challenge"]
        .as_str()
        .unwrap_or_else(|| panic!("no SCEP challenge in {reply:?}"));
    assert_eq!(challenge.len(), 64, "{challenge}");
    challenge.to_owned()
}

/// A token with `devices` devices, all assigned to one policy without user affinity,
/// and every device licensed (so licensing is not what these tests meet).
async fn ready(env: &TestService, devices: usize) -> (CreatedToken, String, Vec<String>) {
    let token = env.create_token("acme", devices).await;
    env.wait_until_idle(&token, RUN_TIMEOUT).await;
    let serials = env.serials(&token).await;
    let policy = env.new_policy(&token, "Staff").await;
    let refs: Vec<&str> = serials.iter().map(String::as_str).collect();
    assert_eq!(env.assign(&token, &policy, &refs).await.status, 200);
    for serial in &serials {
        license(
            env,
            &token.jwt,
            &format!("/v1/licenses/devices/{serial}"),
            true,
        )
        .await;
    }
    (token, policy, serials)
}

#[tokio::test]
async fn an_enrolled_device_enrolls_again_only_after_a_wipe_or_a_retire_and_reset() {
    let env = TestService::start().await;
    let (token, policy, serials) = ready(&env, 2).await;
    let serial = serials[0].as_str();

    // Nothing to wipe, retire or reset before the device enrolled.
    for name in ["wipe", "retire", "factory-reset"] {
        let reply = action(&env, &token, serial, name).await;
        assert_eq!(reply.status, 409, "{name}: {reply:?}");
        assert_eq!(reply.error(), "invalid_state");
        assert_eq!(reply.body["enrollment_state"], "not_enrolled");
    }
    let unknown = action(&env, &token, serial, "erase").await;
    assert_eq!(unknown.status, 404, "{unknown:?}");

    let first = enroll(&env, &token.jwt, serial, None).await;
    assert_eq!(first.status, 201, "{first:?}");
    assert_eq!(first.body["policy"]["policy_id"], policy.as_str());
    assert_eq!(first.body["device"]["enrollment_state"], "enrolled");
    // Activated: it cannot enroll with ADE again.
    let again = enroll(&env, &token.jwt, serial, None).await;
    assert_eq!(again.status, 409, "{again:?}");
    assert_eq!(again.error(), "device_not_wiped");
    // A factory reset must follow a retire.
    let reset = action(&env, &token, serial, "factory-reset").await;
    assert_eq!(reset.status, 409, "{reset:?}");
    assert_eq!(reset.error(), "invalid_state");

    // Retire: pending reset, still not allowed to enroll; wiping it is too late.
    let retired = action(&env, &token, serial, "retire").await;
    assert_eq!(retired.status, 202, "{retired:?}");
    assert_eq!(retired.body["state"], "pending_reset");
    assert_eq!(retired.body["enrollment_state"], "pending_reset");
    assert_eq!(retired.body["last_action"], "retire");
    assert_eq!(env.device(&token, serial).await["state"], "pending_reset");
    let listed = env.all_devices(&token, "&state=pending_reset").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let blocked = enroll(&env, &token.jwt, serial, None).await;
    assert_eq!(blocked.error(), "device_not_wiped", "{blocked:?}");
    for name in ["wipe", "retire"] {
        let reply = action(&env, &token, serial, name).await;
        assert_eq!(reply.status, 409, "{name} after retire: {reply:?}");
        assert_eq!(reply.body["enrollment_state"], "pending_reset");
    }
    let reset = action(&env, &token, serial, "factory-reset").await;
    assert_eq!(reset.status, 202, "{reset:?}");
    assert_eq!(reset.body["enrollment_state"], "wiped");
    assert_eq!(reset.body["state"], "active");

    // A policy may be assigned after the reset, before the device activates again.
    let other = env.new_policy(&token, "Kiosk").await;
    let moved = env.assign(&token, &other, &[serial]).await;
    assert_eq!(moved.status, 200, "{moved:?}");
    let second = enroll(&env, &token.jwt, serial, None).await;
    assert_eq!(second.status, 201, "{second:?}");
    assert_eq!(second.body["policy"]["policy_id"], other.as_str());
    assert_ne!(second.body["scep_challenge"], first.body["scep_challenge"]);

    // A wipe alone lets it enroll again, too.
    let wiped = action(&env, &token, serial, "wipe").await;
    assert_eq!(wiped.status, 202, "{wiped:?}");
    assert_eq!(wiped.body["enrollment_state"], "wiped");
    assert_eq!(enroll(&env, &token.jwt, serial, None).await.status, 201);

    // The other device was never touched.
    assert_eq!(
        env.device(&token, &serials[1]).await["enrollment_state"],
        "not_enrolled"
    );
}

#[tokio::test]
async fn enrollment_finds_the_device_only_in_the_callers_account() {
    let env = TestService::start().await;
    let (token, _policy, serials) = ready(&env, 1).await;
    let unknown = enroll(&env, &token.jwt, "C02NOSUCHDEV1", None).await;
    assert_eq!(unknown.status, 404, "{unknown:?}");
    assert_eq!(unknown.error(), "device_not_assigned");
    // Another account cannot enroll (or learn of) acme's device.
    let globex = env.jwt("globex", &["admin"]);
    let other = enroll(&env, &globex, &serials[0], None).await;
    assert_eq!(other.status, 404, "{other:?}");
    assert_eq!(other.error(), "device_not_assigned");
    // A device without a policy has no profile to enroll with.
    let bare = env.create_token("acme", 1).await;
    env.wait_until_idle(&bare, RUN_TIMEOUT).await;
    let bare_serial = env.serials(&bare).await.remove(0);
    let no_policy = enroll(&env, &token.jwt, &bare_serial, None).await;
    assert_eq!(no_policy.status, 409, "{no_policy:?}");
    assert_eq!(no_policy.error(), "policy_not_assigned");
    // Bad bodies.
    for body in [
        json!({}),
        json!({"serial": "a b"}),
        json!({"serial": "C02", "user": "x y"}),
    ] {
        let reply = env
            .call(
                Method::POST,
                "/v1/enrollments",
                &token.jwt,
                Some(body.clone()),
            )
            .await;
        assert_eq!(reply.status, 400, "{body}: {reply:?}");
    }
    assert_eq!(
        env.device(&token, &serials[0]).await["enrollment_state"],
        "not_enrolled"
    );
}

#[tokio::test]
async fn the_scep_challenge_lasts_15_minutes() {
    let env = TestService::start().await;
    let (token, _policy, serials) = ready(&env, 1).await;
    let enrolled = enroll(&env, &token.jwt, &serials[0], None).await;
    assert_eq!(enrolled.status, 201, "{enrolled:?}");
    let id = enrolled.body["id"].as_str().unwrap().to_owned();
    // `enrollment_id` (deprecated) names it too, for earlier clients.
    assert_eq!(enrolled.body["enrollment_id"], id.as_str());
    let challenge = enrolled.body["scep_challenge"].as_str().unwrap().to_owned();
    assert!(challenge.len() >= 32, "{challenge}");
    let created =
        chrono::DateTime::parse_from_rfc3339(enrolled.body["created_at"].as_str().unwrap())
            .unwrap();
    let expires = chrono::DateTime::parse_from_rfc3339(
        enrolled.body["challenge_expires_at"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!((expires - created).num_milliseconds(), 15 * 60 * 1000);

    let profile = format!("/v1/enrollments/{id}/profile");
    let download = env.call(Method::GET, &profile, &token.jwt, None).await;
    assert_eq!(download.status, 200, "{download:?}");
    // A download issues a new challenge, valid until the enrollment's 15 minutes end.
    let downloaded = challenge_of(&download);
    assert_ne!(downloaded, challenge);
    assert_eq!(
        millis(&download.body["challenge_expires_at"]),
        expires.timestamp_millis()
    );
    assert_eq!(download.body["serial_number"], serials[0].as_str());
    assert_eq!(download.body["downloads"], 1);
    assert_eq!(download.body["id"], id.as_str());
    assert_eq!(download.body["enrollment_id"], id.as_str());
    // Another account may not see it.
    let globex = env.jwt("globex", &["admin"]);
    let hidden = env.call(Method::GET, &profile, &globex, None).await;
    assert_eq!(hidden.status, 404, "{hidden:?}");

    // At 14:59 the profile downloads again. (The service's clock keeps running
    // underneath: move it to 14:59 after the enrollment, counting what already passed.)
    let clock = env.service.runner.clock();
    let elapsed = adesync_core::clock::Clock::now(&*clock) - created.with_timezone(&chrono::Utc);
    assert!(elapsed < chrono::Duration::seconds(30), "{elapsed}");
    env.advance(14 * 60 + 59 - elapsed.num_seconds()).await;
    let late = env.call(Method::GET, &profile, &token.jwt, None).await;
    assert_eq!(late.status, 200, "at 14:59: {late:?}");
    let last = challenge_of(&late);
    assert!(last != challenge && last != downloaded, "{last}");
    assert_eq!(
        millis(&late.body["challenge_expires_at"]),
        expires.timestamp_millis()
    );
    // At 15:01 the SCEP server refuses it, and the device must be reset.
    env.advance(2).await;
    let expired = env.call(Method::GET, &profile, &token.jwt, None).await;
    assert_eq!(expired.status, 410, "at 15:01: {expired:?}");
    assert_eq!(expired.error(), "scep_challenge_expired");
    let message = expired.body["message"].as_str().unwrap();
    assert!(
        message.starts_with("The SCEP server returned an invalid response."),
        "{message}"
    );
    assert!(message.contains("factory reset"), "{message}");
    for shown in [&challenge, &downloaded, &last] {
        assert!(!expired.body.to_string().contains(shown.as_str()));
    }

    // Unknown ids are not found; a day-old id of ours is an expired challenge.
    let unknown = env
        .call(
            Method::GET,
            "/v1/enrollments/not-an-enrollment/profile",
            &token.jwt,
            None,
        )
        .await;
    assert_eq!(unknown.status, 404, "{unknown:?}");
}

#[tokio::test]
async fn only_an_admin_or_a_dem_receives_a_scep_challenge() {
    let env = TestService::start().await;
    let (_token, _policy, serials) = ready(&env, 1).await;
    let reader = env.jwt("acme", &["reader"]);
    let dem = env.jwt("acme", &["dem"]);
    let admin = env.jwt("acme", &["admin"]);

    let refused = enroll(&env, &reader, &serials[0], None).await;
    assert_eq!(refused.status, 403, "{refused:?}");
    // The Device Enrollment Manager enrolls the device and receives its challenge.
    let enrolled = enroll(&env, &dem, &serials[0], None).await;
    assert_eq!(enrolled.status, 201, "{enrolled:?}");
    let first = challenge_of(&enrolled);
    let id = enrolled.body["enrollment_id"].as_str().unwrap().to_owned();
    let profile = format!("/v1/enrollments/{id}/profile");

    // A reader may not download the profile: it carries a challenge.
    let denied = env.call(Method::GET, &profile, &reader, None).await;
    assert_eq!(denied.status, 403, "{denied:?}");
    assert_eq!(denied.error(), "forbidden");
    let message = denied.body["message"].as_str().unwrap();
    assert!(
        message.contains("SCEP challenge")
            && message.contains("(admin)")
            && message.contains("(dem)"),
        "{message}"
    );
    assert!(denied.body.get("scep_challenge").is_none(), "{denied:?}");
    assert!(!denied.body.to_string().contains(&first), "{denied:?}");
    // Refused, it changed nothing: the enrollment's challenge still holds, uncounted.
    let item = stored_enrollment(&env, &id).await;
    assert_eq!(stored_digest(&item), digest_of(&first));
    assert_eq!(item["downloads"], AttributeValue::N("0".into()));

    // A dem and an admin download it, each receiving a challenge of its own.
    let by_dem = env.call(Method::GET, &profile, &dem, None).await;
    assert_eq!(by_dem.status, 200, "{by_dem:?}");
    let dem_challenge = challenge_of(&by_dem);
    let by_admin = env.call(Method::GET, &profile, &admin, None).await;
    assert_eq!(by_admin.status, 200, "{by_admin:?}");
    let admin_challenge = challenge_of(&by_admin);
    assert_eq!(by_admin.body["downloads"], 2);
    let shown = BTreeSet::from([&first, &dem_challenge, &admin_challenge]);
    assert_eq!(shown.len(), 3, "a challenge was shown twice");
    // Another account's admin learns nothing.
    let globex = env.jwt("globex", &["admin"]);
    let hidden = env.call(Method::GET, &profile, &globex, None).await;
    assert_eq!(hidden.status, 404, "{hidden:?}");
}

#[tokio::test]
async fn a_scep_challenge_is_shown_once_and_only_its_sha256_is_stored() {
    let env = TestService::start().await;
    let (token, _policy, serials) = ready(&env, 1).await;
    let enrolled = enroll(&env, &token.jwt, &serials[0], None).await;
    assert_eq!(enrolled.status, 201, "{enrolled:?}");
    let id = enrolled.body["enrollment_id"].as_str().unwrap().to_owned();
    let mut answers = vec![enrolled.body.to_string()];
    let mut challenges = vec![challenge_of(&enrolled)];

    let item = stored_enrollment(&env, &id).await;
    assert_holds_no_challenge(&item, &[&challenges[0]]);
    assert_eq!(stored_digest(&item), digest_of(&challenges[0]));

    // Each download shows a new challenge; the stored digest follows it, so the one
    // before no longer holds, and no stored form gives any of them back.
    let profile = format!("/v1/enrollments/{id}/profile");
    for download in 1..=3 {
        let reply = env.call(Method::GET, &profile, &token.jwt, None).await;
        assert_eq!(reply.status, 200, "download {download}: {reply:?}");
        assert_eq!(reply.body["downloads"], download);
        answers.push(reply.body.to_string());
        challenges.push(challenge_of(&reply));
        let item = stored_enrollment(&env, &id).await;
        let all: Vec<&str> = challenges.iter().map(String::as_str).collect();
        assert_holds_no_challenge(&item, &all);
        assert_eq!(stored_digest(&item), digest_of(challenges.last().unwrap()));
        for earlier in &challenges[..challenges.len() - 1] {
            assert_ne!(stored_digest(&item), digest_of(earlier));
        }
    }
    // Shown once: every challenge is in exactly one answer.
    for challenge in &challenges {
        let shown = answers
            .iter()
            .filter(|a| a.contains(challenge.as_str()))
            .count();
        assert_eq!(shown, 1, "a challenge was in {shown} answers");
    }
}

#[tokio::test]
async fn downloads_at_the_same_moment_each_get_a_challenge_and_the_last_holds() {
    const DOWNLOADS: usize = 8;
    let env = TestService::start().await;
    let (token, _policy, serials) = ready(&env, 1).await;
    let enrolled = enroll(&env, &token.jwt, &serials[0], None).await;
    assert_eq!(enrolled.status, 201, "{enrolled:?}");
    let id = enrolled.body["enrollment_id"].as_str().unwrap().to_owned();
    let first = challenge_of(&enrolled);
    let profile = format!("/v1/enrollments/{id}/profile");

    let replies = futures::future::join_all(
        (0..DOWNLOADS).map(|_| env.call(Method::GET, &profile, &token.jwt, None)),
    )
    .await;
    // Each download is one atomic step in DynamoDB's order: counted once, with a
    // challenge of its own, and the one counted last is the one stored.
    let mut by_count = HashMap::new();
    for reply in &replies {
        assert_eq!(reply.status, 200, "{reply:?}");
        let count = reply.body["downloads"].as_u64().unwrap();
        assert!(
            by_count.insert(count, challenge_of(reply)).is_none(),
            "two downloads counted as {count}"
        );
    }
    let counts: BTreeSet<u64> = by_count.keys().copied().collect();
    assert_eq!(counts, (1..=DOWNLOADS as u64).collect());
    let distinct: BTreeSet<&String> = by_count.values().chain([&first]).collect();
    assert_eq!(distinct.len(), DOWNLOADS + 1, "a challenge was shown twice");

    let item = stored_enrollment(&env, &id).await;
    let all: Vec<&str> = distinct.iter().map(|c| c.as_str()).collect();
    assert_holds_no_challenge(&item, &all);
    assert_eq!(item["downloads"], AttributeValue::N(DOWNLOADS.to_string()));
    let holding: Vec<&&String> = distinct
        .iter()
        .filter(|c| digest_of(c) == stored_digest(&item))
        .collect();
    assert_eq!(holding, [&&by_count[&(DOWNLOADS as u64)]]);
}

#[tokio::test]
async fn the_licensing_matrix_through_the_api() {
    // affinity × enrolling user × device license × associated user; a user is
    // none, unlicensed ("u") or licensed ("l"). Expected outcomes written out.
    const ROWS: [(bool, &str, bool, &str, Option<&str>); 36] = [
        (true, "-", false, "-", Some("user_license")),
        (true, "-", false, "u", Some("user_license")),
        (true, "-", false, "l", None),
        (true, "-", true, "-", Some("user_license")),
        (true, "-", true, "u", Some("user_license")),
        (true, "-", true, "l", None),
        (true, "u", false, "-", Some("user_license")),
        (true, "u", false, "u", Some("user_license")),
        (true, "u", false, "l", Some("user_license")),
        (true, "u", true, "-", Some("user_license")),
        (true, "u", true, "u", Some("user_license")),
        (true, "u", true, "l", Some("user_license")),
        (true, "l", false, "-", None),
        (true, "l", false, "u", None),
        (true, "l", false, "l", None),
        (true, "l", true, "-", None),
        (true, "l", true, "u", None),
        (true, "l", true, "l", None),
        (false, "-", false, "-", Some("device_license")),
        (false, "-", false, "u", Some("device_license")),
        (false, "-", false, "l", None),
        (false, "-", true, "-", None),
        (false, "-", true, "u", None),
        (false, "-", true, "l", None),
        (false, "u", false, "-", Some("device_license")),
        (false, "u", false, "u", Some("device_license")),
        (false, "u", false, "l", None),
        (false, "u", true, "-", None),
        (false, "u", true, "u", None),
        (false, "u", true, "l", None),
        (false, "l", false, "-", Some("device_license")),
        (false, "l", false, "u", Some("device_license")),
        (false, "l", false, "l", None),
        (false, "l", true, "-", None),
        (false, "l", true, "u", None),
        (false, "l", true, "l", None),
    ];
    let env = TestService::start().await;
    let token = env.create_token("acme", ROWS.len()).await;
    env.wait_until_idle(&token, RUN_TIMEOUT).await;
    let serials = env.serials(&token).await;
    let with_affinity = env.new_policy(&token, "Personal").await;
    let patched = env
        .call(
            Method::PATCH,
            &format!("/v1/tokens/{}/policies/{with_affinity}", token.token_id),
            &token.jwt,
            Some(json!({"user_affinity": true})),
        )
        .await;
    assert_eq!(patched.status, 200);
    let without = env.new_policy(&token, "Shared").await;
    license(&env, &token.jwt, "/v1/licenses/users/licensed.user", true).await;
    license(&env, &token.jwt, "/v1/licenses/users/unlicensed.user", true).await;
    // A withdrawn license counts as none.
    license(
        &env,
        &token.jwt,
        "/v1/licenses/users/unlicensed.user",
        false,
    )
    .await;
    let user = |code: &str| match code {
        "u" => Some("unlicensed.user"),
        "l" => Some("licensed.user"),
        _ => None,
    };

    for ((affinity, enrolling, device_licensed, associated, expected), serial) in
        ROWS.iter().zip(&serials)
    {
        let policy = if *affinity { &with_affinity } else { &without };
        assert_eq!(env.assign(&token, policy, &[serial]).await.status, 200);
        license(
            &env,
            &token.jwt,
            &format!("/v1/licenses/devices/{serial}"),
            *device_licensed,
        )
        .await;
        let shown = set_user(&env, &token, serial, user(associated)).await;
        assert_eq!(shown["user_id"], json!(user(associated)));
        let reply = enroll(&env, &token.jwt, serial, user(enrolling)).await;
        let row = format!(
            "affinity {affinity}, user {enrolling}, device licensed {device_licensed}, associated {associated}"
        );
        match expected {
            None => assert_eq!(reply.status, 201, "{row}: {reply:?}"),
            Some(needs) => {
                assert_eq!(reply.status, 402, "{row}: {reply:?}");
                assert_eq!(reply.error(), "license_required", "{row}");
                assert_eq!(reply.body["needs"], *needs, "{row}");
                // Refused: the device did not enroll.
                assert_eq!(
                    env.device(&token, serial).await["enrollment_state"],
                    "not_enrolled",
                    "{row}"
                );
            }
        }
    }
    // Licensing a refused device lets it enroll.
    let (_, _, _, _, expected) = ROWS[18];
    assert_eq!(expected, Some("device_license"));
    license(
        &env,
        &token.jwt,
        &format!("/v1/licenses/devices/{}", serials[18]),
        true,
    )
    .await;
    assert_eq!(
        enroll(&env, &token.jwt, &serials[18], None).await.status,
        201
    );
    // Bad license requests are refused.
    for (path, body) in [
        ("/v1/licenses/users/a%20b", json!({"licensed": true})),
        (
            "/v1/licenses/devices/not%20a%20serial",
            json!({"licensed": true}),
        ),
        ("/v1/licenses/users/ada", json!({"licensed": "yes"})),
        ("/v1/licenses/users/ada", json!({})),
    ] {
        let reply = env.call(Method::PUT, path, &token.jwt, Some(body)).await;
        assert_eq!(reply.status, 400, "{path}: {reply:?}");
    }
}

/// Scope tags reach enrollment too: a caller limited to other tags neither
/// enrolls a device of the token nor downloads its enrollments' profiles,
/// and is answered as for another account's device or enrollment.
#[tokio::test]
async fn a_scoped_caller_enrolls_and_downloads_only_for_the_tokens_it_sees() {
    let env = TestService::start().await;
    let (token, _policy, serials) = ready(&env, 1).await;
    let serial = serials[0].as_str();
    let tagged = env
        .call(
            Method::PATCH,
            &format!("/v1/tokens/{}", token.token_id),
            &token.jwt,
            Some(json!({ "scope_tags": ["paris"] })),
        )
        .await;
    assert_eq!(tagged.status, 200, "{tagged:?}");
    let lyon = env.jwt_with_scopes("acme", &["dem"], &["lyon"]);
    let paris = env.jwt_with_scopes("acme", &["dem"], &["paris"]);
    let globex = env.jwt("globex", &["dem"]);

    let outside = enroll(&env, &lyon, serial, None).await;
    let foreign = enroll(&env, &globex, serial, None).await;
    assert_eq!(outside.status, 404, "{outside:?}");
    assert_eq!(outside.body, foreign.body, "answered as another account");
    assert_eq!(outside.error(), "device_not_assigned");

    // Refused before anything was written: the device still enrolls.
    let enrolled = enroll(&env, &paris, serial, None).await;
    assert_eq!(enrolled.status, 201, "{enrolled:?}");
    let id = enrolled.body["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/enrollments/{id}/profile");

    let hidden = env.call(Method::GET, &path, &lyon, None).await;
    let foreign = env.call(Method::GET, &path, &globex, None).await;
    assert_eq!(hidden.status, 404, "{hidden:?}");
    assert_eq!(hidden.body, foreign.body, "answered as another account");
    let shown = env.call(Method::GET, &path, &paris, None).await;
    assert_eq!(shown.status, 200, "{shown:?}");
    assert_eq!(
        shown.body["downloads"], 1,
        "the refused download counted none: {shown:?}"
    );
}
