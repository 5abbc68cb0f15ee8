//! Scope tags (`docs/product.md` "Scope tags"), through the runner: a
//! caller whose JWT carries `adesync:scopes` sees and acts only on tokens
//! with one of those tags, and is answered exactly as another account for
//! every other token, on every token route of the route table
//! (`adesync_tests::routes`).

use std::collections::BTreeSet;

use adesync_tests::flows::CreatedToken;
use adesync_tests::routes::{Scope, routes, send};
use adesync_tests::{Reply, TestService};
use reqwest::Method;
use serde_json::{Value, json};

const APPLE_ID: &str = "admin@acme.test";

async fn patch_tags(env: &TestService, jwt: &str, token: &str, tags: Value) -> Reply {
    env.call(
        Method::PATCH,
        &format!("/v1/tokens/{token}"),
        jwt,
        Some(json!({ "scope_tags": tags })),
    )
    .await
}

/// A token of "acme" created through the real flow, then tagged `tags` by
/// an administrator without scopes.
async fn tagged_token(env: &TestService, tags: &[&str]) -> CreatedToken {
    let token = env.create_token("acme", 0).await;
    let tagged = patch_tags(env, &token.jwt, &token.token_id, json!(tags)).await;
    assert_eq!(tagged.status, 200, "{tagged:?}");
    token
}

async fn get(env: &TestService, jwt: &str, path: &str) -> Reply {
    env.call(Method::GET, path, jwt, None).await
}

/// Every page of `GET /v1/tokens?limit=<limit>` as `jwt` sees it: the ids
/// of each page, in order.
async fn pages(env: &TestService, jwt: &str, limit: u32) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/tokens?limit={limit}&cursor={c}"),
            None => format!("/v1/tokens?limit={limit}"),
        };
        let page = get(env, jwt, &path).await;
        assert_eq!(page.status, 200, "{page:?}");
        let ids: Vec<String> = page.body["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect();
        pages.push(ids);
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return pages,
        }
        assert!(pages.len() < 20, "the listing never ends: {pages:?}");
    }
}

fn ids(tokens: &[&CreatedToken]) -> BTreeSet<String> {
    tokens.iter().map(|t| t.token_id.clone()).collect()
}

fn listed(pages: &[Vec<String>]) -> BTreeSet<String> {
    pages.iter().flatten().cloned().collect()
}

/// The "must show": a scoped reader lists only tagged tokens, and a
/// scoped caller gets the other account's 404, body for body, on every
/// token route for tokens outside its scope (untagged or tagged otherwise).
#[tokio::test]
async fn a_scoped_caller_sees_only_its_tagged_tokens_and_404_on_every_route_of_the_others() {
    let env = TestService::start().await;
    let paris = tagged_token(&env, &["paris"]).await;
    let both = tagged_token(&env, &["lyon", "paris"]).await;
    let lyon = tagged_token(&env, &["lyon"]).await;
    let untagged = env.create_token("acme", 0).await;
    let everyone = env.jwt("acme", &["reader"]);
    let paris_reader = env.jwt_with_scopes("acme", &["reader"], &["paris"]);
    let lyon_reader = env.jwt_with_scopes("acme", &["reader"], &["lyon"]);

    // Listing: whole pages of what each sees, across pages of one.
    let all = ids(&[&paris, &both, &lyon, &untagged]);
    assert_eq!(listed(&pages(&env, &everyone, 100).await), all);
    for (jwt, expected) in [
        (&paris_reader, ids(&[&paris, &both])),
        (&lyon_reader, ids(&[&both, &lyon])),
    ] {
        assert_eq!(listed(&pages(&env, jwt, 100).await), expected);
        let one_by_one = pages(&env, jwt, 1).await;
        assert_eq!(
            one_by_one.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![1, 1],
            "full pages, and no empty page after the last: {one_by_one:?}"
        );
        assert_eq!(listed(&one_by_one), expected);
    }
    // Scope tags show on the token, sorted.
    let shown = get(
        &env,
        &paris_reader,
        &format!("/v1/tokens/{}", both.token_id),
    )
    .await;
    assert_eq!(shown.status, 200, "{shown:?}");
    assert_eq!(shown.body["scope_tags"], json!(["lyon", "paris"]));

    // Every token route: a scoped administrator (so writes reach the scope
    // check rather than stop at the role) is answered for the untagged and
    // the lyon token exactly as an administrator of another account.
    let paris_admin = format!(
        "Bearer {}",
        env.jwt_with_scopes("acme", &["admin"], &["paris"])
    );
    let paris_reader_auth = format!("Bearer {paris_reader}");
    let globex = format!("Bearer {}", env.jwt("globex", &["admin"]));
    for mut route in routes().into_iter().filter(|r| r.scope == Scope::Token) {
        if route.method == Method::PATCH && route.path == "/v1/tokens/{token}" {
            // Tags the caller may set, so only the token can refuse.
            route.body = Some(json!({"scope_tags": ["paris"]}));
        }
        if route.owner_succeeds && !route.write {
            let path = route.path_for(&paris.token_id);
            let mine = send(&env, &route, &path, Some(&paris_reader_auth)).await;
            assert!(
                (200..300).contains(&mine.status),
                "{}: a token in scope answers: {mine:?}",
                route.label()
            );
        }
        for hidden in [&untagged, &lyon] {
            let path = route.path_for(&hidden.token_id);
            let scoped = send(&env, &route, &path, Some(&paris_admin)).await;
            let other_account = send(&env, &route, &path, Some(&globex)).await;
            assert_eq!(scoped.status, 404, "{}: {scoped:?}", route.label());
            assert_eq!(
                scoped.body,
                other_account.body,
                "{}: the same answer as for another account's token",
                route.label()
            );
        }
    }

    // Nothing the scoped caller tried changed the hidden tokens.
    for (hidden, tags) in [(&untagged, json!([])), (&lyon, json!(["lyon"]))] {
        let still = env.token(hidden).await;
        assert_eq!(still.status, 200, "not deleted: {still:?}");
        assert_eq!(still.body["scope_tags"], tags, "not re-tagged");
        assert_eq!(still.body["renewed_at"], Value::Null, "not renewed");
        assert_eq!(still.body["last_manual_sync_at"], Value::Null, "not synced");
    }
}

/// A caller without the claim sees all of its account; changing a token's
/// tags (`PATCH`) moves it in and out of a scoped caller's sight.
#[tokio::test]
async fn patch_changes_who_sees_the_token() {
    let env = TestService::start().await;
    let token = env.create_token("acme", 0).await;
    let path = format!("/v1/tokens/{}", token.token_id);
    let paris_reader = env.jwt_with_scopes("acme", &["reader"], &["paris"]);
    let paris_admin = env.jwt_with_scopes("acme", &["admin"], &["paris"]);

    let new = env.token(&token).await;
    assert_eq!(new.body["scope_tags"], json!([]), "untagged by default");
    assert_eq!(get(&env, &paris_reader, &path).await.status, 404);

    let tagged = patch_tags(
        &env,
        &token.jwt,
        &token.token_id,
        json!(["paris", "eu:west"]),
    )
    .await;
    assert_eq!(tagged.status, 200, "{tagged:?}");
    assert_eq!(tagged.body["id"], token.token_id.as_str());
    assert_eq!(tagged.body["scope_tags"], json!(["eu:west", "paris"]));
    let seen = get(&env, &paris_reader, &path).await;
    assert_eq!(seen.status, 200, "{seen:?}");
    assert_eq!(seen.body["scope_tags"], json!(["eu:west", "paris"]));
    let listed = get(&env, &paris_reader, "/v1/tokens").await;
    assert_eq!(
        listed.body["tokens"][0]["scope_tags"],
        json!(["eu:west", "paris"])
    );

    // A scoped administrator may not set tags that hide the token from itself.
    let hiding = patch_tags(&env, &paris_admin, &token.token_id, json!(["lyon"])).await;
    assert_eq!(hiding.status, 403, "{hiding:?}");
    assert_eq!(hiding.error(), "forbidden");
    assert!(
        hiding.body["message"].as_str().unwrap().contains("paris"),
        "{hiding:?}"
    );
    // Only administrators change tags.
    let dem = env.jwt("acme", &["dem"]);
    let by_dem = patch_tags(&env, &dem, &token.token_id, json!(["lyon"])).await;
    assert_eq!(by_dem.status, 403, "{by_dem:?}");
    assert_eq!(
        env.token(&token).await.body["scope_tags"],
        json!(["eu:west", "paris"])
    );

    // Moved out of paris: gone for the paris reader, shown to everyone else.
    let moved = patch_tags(&env, &token.jwt, &token.token_id, json!(["lyon"])).await;
    assert_eq!(moved.status, 200, "{moved:?}");
    assert_eq!(get(&env, &paris_reader, &path).await.status, 404);
    let listed = get(&env, &paris_reader, "/v1/tokens").await;
    assert_eq!(listed.body["tokens"], json!([]), "{listed:?}");
    let everyone = env.jwt("acme", &["reader"]);
    assert_eq!(get(&env, &everyone, &path).await.status, 200);
    // And a scoped administrator cannot reach it to bring it back.
    let back = patch_tags(&env, &paris_admin, &token.token_id, json!(["paris"])).await;
    assert_eq!(back.status, 404, "{back:?}");
    // Emptied: untagged again.
    let cleared = patch_tags(&env, &token.jwt, &token.token_id, json!([])).await;
    assert_eq!(cleared.body["scope_tags"], json!([]), "{cleared:?}");
}

/// Bad tags are a 400 naming the problem, on `PATCH`, create and renewal,
/// and change nothing.
#[tokio::test]
async fn invalid_tags_are_refused_and_change_nothing() {
    let env = TestService::start().await;
    let token = tagged_token(&env, &["paris"]).await;
    let many: Vec<String> = (0..51).map(|i| format!("t{i}")).collect();
    let long = "a".repeat(65);
    let cases = [
        (json!(many), "at most 50"),
        (json!(["paris", ""]), "must not be empty"),
        (json!([long]), "longer than 64"),
        (json!(["paris lyon"]), "may contain only"),
        (json!(["Zürich"]), "may contain only"),
        (json!(["a/b"]), "may contain only"),
        (json!(["paris", "lyon", "paris"]), "listed twice"),
        (json!("paris"), "scope_tags"),
        (json!([1]), "scope_tags"),
        (json!(null), "scope_tags"),
    ];
    for (tags, problem) in &cases {
        let reply = patch_tags(&env, &token.jwt, &token.token_id, tags.clone()).await;
        assert_eq!(reply.status, 400, "{tags}: {reply:?}");
        assert_eq!(reply.error(), "invalid_request", "{tags}");
        let message = reply.body["message"].as_str().unwrap();
        assert!(message.contains(problem), "{tags}: {message}");
    }
    for body in [json!({}), json!({"scope_tags": ["x"], "name": "y"})] {
        let reply = env
            .call(
                Method::PATCH,
                &format!("/v1/tokens/{}", token.token_id),
                &token.jwt,
                Some(body.clone()),
            )
            .await;
        assert_eq!(reply.status, 400, "{body}: {reply:?}");
    }
    // Create and renewal check the tags before anything else happens.
    let server = new_server(&env, &token.jwt).await;
    for (tags, problem) in &cases[..7] {
        let created = env
            .call(
                Method::POST,
                "/v1/tokens",
                &token.jwt,
                Some(json!({"name": "Bad", "apple_id": APPLE_ID, "token_file": server.1, "scope_tags": tags})),
            )
            .await;
        assert_eq!(created.status, 400, "{tags}: {created:?}");
        assert!(
            created.body["message"].as_str().unwrap().contains(problem),
            "{created:?}"
        );
        let renewed = env
            .call(
                Method::PUT,
                &format!("/v1/tokens/{}/renewal", token.token_id),
                &token.jwt,
                Some(json!({"apple_id": APPLE_ID, "token_file": "AAAA", "scope_tags": tags})),
            )
            .await;
        assert_eq!(renewed.status, 400, "{tags}: {renewed:?}");
        assert!(
            renewed.body["message"].as_str().unwrap().contains(problem),
            "{renewed:?}"
        );
    }
    let still = env.token(&token).await;
    assert_eq!(still.body["scope_tags"], json!(["paris"]));
    assert_eq!(still.body["renewed_at"], Value::Null);
    let listed = get(&env, &token.jwt, "/v1/tokens").await;
    assert_eq!(
        listed.body["tokens"].as_array().unwrap().len(),
        1,
        "no token created: {listed:?}"
    );
}

/// A new simulated MDM server for the account of `jwt`: (server uuid,
/// token file).
async fn new_server(env: &TestService, jwt: &str) -> (String, String) {
    let pem = env.public_key(jwt).await;
    let server: Value = env
        .http
        .post(env.sim("/_sim/servers"))
        .json(&json!({
            "name": "Scoped MDM server",
            "public_key_pem": pem,
            "org_name": "Acme Inc.",
            "admin_id": APPLE_ID,
            "devices": 0,
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        server["server_uuid"].as_str().unwrap().to_owned(),
        server["token_file"].as_str().unwrap().to_owned(),
    )
}

async fn redownload(env: &TestService, server_uuid: &str) -> String {
    let body: Value = env
        .http
        .post(env.sim(&format!("/_sim/servers/{server_uuid}/token")))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["token_file"].as_str().unwrap().to_owned()
}

/// A renewal may set the tags (and keeps them when it sends none); a
/// scoped administrator's new token carries its tags, and it may not
/// create one it would not see.
#[tokio::test]
async fn renewal_and_creation_by_a_scoped_administrator() {
    let env = TestService::start().await;
    let token = tagged_token(&env, &["paris"]).await;
    let renew = |file: String, tags: Option<Value>| {
        let mut body = json!({"apple_id": APPLE_ID, "token_file": file});
        if let Some(tags) = tags {
            body["scope_tags"] = tags;
        }
        body
    };
    let file = redownload(&env, &token.server_uuid).await;
    let kept = env
        .call(
            Method::PUT,
            &format!("/v1/tokens/{}/renewal", token.token_id),
            &token.jwt,
            Some(renew(file, None)),
        )
        .await;
    assert_eq!(kept.status, 200, "{kept:?}");
    assert_eq!(kept.body["scope_tags"], json!(["paris"]), "kept");
    let file = redownload(&env, &token.server_uuid).await;
    let retagged = env
        .call(
            Method::PUT,
            &format!("/v1/tokens/{}/renewal", token.token_id),
            &token.jwt,
            Some(renew(file, Some(json!(["lyon", "paris"])))),
        )
        .await;
    assert_eq!(retagged.status, 200, "{retagged:?}");
    assert_eq!(retagged.body["scope_tags"], json!(["lyon", "paris"]));
    assert!(retagged.body["renewed_at"].is_string());
    // A scoped administrator renewing to tags it would not see is refused.
    let lyon_admin = env.jwt_with_scopes("acme", &["admin"], &["lyon"]);
    let file = redownload(&env, &token.server_uuid).await;
    let hiding = env
        .call(
            Method::PUT,
            &format!("/v1/tokens/{}/renewal", token.token_id),
            &lyon_admin,
            Some(renew(file, Some(json!(["paris"])))),
        )
        .await;
    assert_eq!(hiding.status, 403, "{hiding:?}");
    assert_eq!(
        env.token(&token).await.body["scope_tags"],
        json!(["lyon", "paris"])
    );

    // Creating: without tags, the scoped creator's own; with tags, one of
    // them must be the creator's.
    let (_, file) = new_server(&env, &lyon_admin).await;
    let create = |file: &str, tags: Option<Value>| {
        let mut body = json!({"name": "Lyon", "apple_id": APPLE_ID, "token_file": file});
        if let Some(tags) = tags {
            body["scope_tags"] = tags;
        }
        body
    };
    let outside = env
        .call(
            Method::POST,
            "/v1/tokens",
            &lyon_admin,
            Some(create(&file, Some(json!(["paris"])))),
        )
        .await;
    assert_eq!(outside.status, 403, "{outside:?}");
    assert_eq!(outside.error(), "forbidden");
    let created = env
        .call(
            Method::POST,
            "/v1/tokens",
            &lyon_admin,
            Some(create(&file, None)),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.body["scope_tags"], json!(["lyon"]));
    let (_, file) = new_server(&env, &lyon_admin).await;
    let given = env
        .call(
            Method::POST,
            "/v1/tokens",
            &lyon_admin,
            Some(create(&file, Some(json!(["lyon", "site-7"])))),
        )
        .await;
    assert_eq!(given.status, 201, "{given:?}");
    assert_eq!(given.body["scope_tags"], json!(["lyon", "site-7"]));
    let listed = get(&env, &lyon_admin, "/v1/tokens").await;
    assert_eq!(
        listed.body["tokens"].as_array().unwrap().len(),
        3,
        "{listed:?}"
    );
}

/// A scopes claim that is present but does not read (a near miss, an empty
/// list) sees no token, rather than falling back to the whole account.
#[tokio::test]
async fn a_scopes_claim_that_does_not_read_sees_nothing() {
    let env = TestService::start().await;
    let token = tagged_token(&env, &["paris"]).await;
    let path = format!("/v1/tokens/{}", token.token_id);
    // (`["paris lyon"]` is not among them: API Gateway flattens it to
    // `[paris lyon]`, two tags, as it does `["admin dem"]` for roles; tags
    // have no spaces, so only a misconfigured identity provider sends it.)
    for scopes in [&["paris "][..], &["Paris"], &["paris", "a/b"], &[]] {
        let jwt = env.jwt_with_scopes("acme", &["admin"], scopes);
        let listed = get(&env, &jwt, "/v1/tokens").await;
        assert_eq!(listed.status, 200, "{scopes:?}: {listed:?}");
        assert_eq!(listed.body["tokens"], json!([]), "{scopes:?}");
        assert_eq!(get(&env, &jwt, &path).await.status, 404, "{scopes:?}");
    }
    let control = env.jwt_with_scopes("acme", &["reader"], &["paris"]);
    assert_eq!(get(&env, &control, &path).await.status, 200);
}
