//! docs/openapi.yaml is true to the service:
//! - it documents exactly the routes the functions serve (their route
//!   lists are what their routers are built from, so a route added in code
//!   and not in the document fails here, and so does a documented route
//!   that is gone);
//! - real answers match it: a walk through every documented operation, on
//!   a token created and synced through the real flow, validates each
//!   answer's status and body against the document's schemas (JSON Schema
//!   2020-12, OpenAPI 3.1's dialect). Response schemas list their fields as
//!   `required` (checked below for every success answer), so a documented
//!   field that disappears fails too;
//! - the request bodies the walk sends are checked against the documented
//!   request schemas: an accepted body must match them, and a body the
//!   service refuses as malformed must not, so the documented limits are
//!   the ones the code enforces.
//!
//! Documenting a new route: add its entry to docs/openapi.yaml (build its
//! router with `adesync_runtime::routes::Routes`, so it is listed) and a
//! step to `walk` below that gets a 2xx answer from it.

use std::collections::BTreeSet;
use std::time::Duration;

use adesync_tests::TestService;
use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};

const METHODS: [&str; 5] = ["get", "put", "post", "patch", "delete"];

fn document() -> Value {
    let path = adesync_local::tools::Workspace::locate()
        .expect("the checkout")
        .root()
        .join("docs/openapi.yaml");
    let text = std::fs::read_to_string(&path).expect("docs/openapi.yaml");
    serde_yaml_ng::from_str(&text).expect("docs/openapi.yaml is YAML")
}

/// (METHOD, path template) of every documented operation.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect()
}

#[test]
fn the_document_lists_exactly_the_routes_the_functions_serve() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let served: BTreeSet<(String, String)> = adesync_api::route_list()
        .into_iter()
        .chain(adesync_sync_trigger::route_list())
        .map(|(method, path)| (method.to_string(), path.to_owned()))
        .collect();
    let documented = documented(&doc);
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let gone: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && gone.is_empty(),
        "served but not in docs/openapi.yaml: {undocumented:?}\nin docs/openapi.yaml but not served: {gone:?}"
    );
    // Every operation names its answers, and every error answer is the
    // contract's error body.
    for (method, path) in &documented {
        let operation = &doc["paths"][path][method.to_lowercase()];
        let responses = operation["responses"].as_object().expect("responses");
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{method} {path} has no success answer"
        );
        for (status, response) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                let text = resolve(&doc, response).to_string();
                assert!(
                    text.contains("#/components/schemas/Error"),
                    "{method} {path} {status} is not the error body"
                );
            }
        }
    }
}

#[test]
fn api_gateway_routes_each_sync_trigger_route_to_its_function() {
    // The api function takes `ANY /v1/{proxy+}`; a route another function
    // serves needs its own HttpApi event, or API Gateway sends it to api.
    let root = adesync_local::tools::Workspace::locate().expect("the checkout");
    let text = std::fs::read_to_string(root.template_path()).expect("template.yaml");
    let template: Value = serde_yaml_ng::from_str(&text).expect("template.yaml is YAML");
    let events = template["Resources"]["SyncTriggerFunction"]["Properties"]["Events"]
        .as_object()
        .expect("SyncTriggerFunction events");
    let routed: BTreeSet<(String, String)> = events
        .values()
        .filter(|e| e["Type"] == "HttpApi")
        .filter_map(|e| {
            let p = &e["Properties"];
            Some((
                p["Method"].as_str()?.to_uppercase(),
                p["Path"].as_str()?.to_owned(),
            ))
        })
        .collect();
    for (method, path) in adesync_sync_trigger::route_list() {
        assert!(
            routed.contains(&(method.to_string(), path.to_owned())),
            "template.yaml routes no {method} {path} to SyncTriggerFunction"
        );
    }
}

/// The documented fields of success answers are `required`, so the walk's
/// validation fails when one disappears from an answer. A field the service
/// leaves out when it is unset (a policy's optional Apple settings) is named
/// in the schema's `x-absent-when-unset` instead, which must name documented,
/// non-required fields.
#[test]
fn every_field_of_a_success_answer_is_required_or_declared_absent_when_unset() {
    let doc = document();
    let mut problems = Vec::new();
    for (method, path) in documented(&doc) {
        let operation = &doc["paths"][&path][method.to_lowercase()];
        for (status, response) in operation["responses"].as_object().expect("responses") {
            if !status.starts_with('2') {
                continue;
            }
            for media in resolve(&doc, response)["content"]
                .as_object()
                .into_iter()
                .flat_map(|c| c.values())
            {
                let at = format!("{method} {path} {status}");
                fields_required(&doc, &media["schema"], &at, 0, &mut problems);
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The schema `schema` and its `allOf` parts, references followed.
fn schema_parts<'a>(doc: &'a Value, schema: &'a Value) -> Vec<&'a Value> {
    let schema = resolve(doc, schema);
    let mut parts = vec![schema];
    for part in schema["allOf"].as_array().into_iter().flatten() {
        parts.extend(schema_parts(doc, part));
    }
    parts
}

fn names(value: &Value) -> BTreeSet<&str> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// Collects the properties of `schema` (and of the schemas inside it) that are
/// neither required nor declared absent when unset.
fn fields_required(
    doc: &Value,
    schema: &Value,
    at: &str,
    depth: usize,
    problems: &mut Vec<String>,
) {
    assert!(depth < 32, "{at}: schemas nest too deep (a cycle?)");
    let parts = schema_parts(doc, schema);
    // `allOf` parts describe one object: a property of one part may be
    // required by another.
    let mut properties = serde_json::Map::new();
    let mut required = BTreeSet::new();
    let mut absent = BTreeSet::new();
    for part in &parts {
        if let Some(own) = part["properties"].as_object() {
            properties.extend(own.clone());
        }
        required.extend(names(&part["required"]));
        absent.extend(names(&part["x-absent-when-unset"]));
    }
    for name in properties.keys() {
        if !required.contains(name.as_str()) && !absent.contains(name.as_str()) {
            problems.push(format!(
                "{at}: {name} is neither required nor x-absent-when-unset"
            ));
        }
    }
    for name in &absent {
        if !properties.contains_key(*name) || required.contains(name) {
            problems.push(format!(
                "{at}: x-absent-when-unset names {name}, which is not an optional documented field"
            ));
        }
    }
    for (name, property) in &properties {
        fields_required(doc, property, &format!("{at} .{name}"), depth + 1, problems);
    }
    for part in &parts {
        for branch in ["oneOf", "anyOf"]
            .iter()
            .flat_map(|k| part[*k].as_array().into_iter().flatten())
        {
            fields_required(doc, branch, at, depth + 1, problems);
        }
        if part.get("items").is_some() {
            fields_required(doc, &part["items"], &format!("{at}[]"), depth + 1, problems);
        }
    }
}

/// Follows a `$ref` to `#/components/...`.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str() {
        Some(reference) => {
            let pointer = reference.trim_start_matches('#');
            doc.pointer(pointer)
                .unwrap_or_else(|| panic!("dangling $ref {reference}"))
        }
        None => value,
    }
}

/// Validates answers against the document.
struct Checker {
    doc: Value,
    /// Operations that answered 2xx during the walk.
    succeeded: BTreeSet<(String, String)>,
}

impl Checker {
    /// Where `value` breaks `schema` (a schema of the document), in words.
    fn errors(&self, schema: &Value, value: &Value, what: &str) -> Vec<String> {
        let mut schema = schema.clone();
        // Internal references resolve against the document's components.
        schema["components"] = self.doc["components"].clone();
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&schema)
            .unwrap_or_else(|e| panic!("{what} schema: {e}"));
        validator
            .iter_errors(value)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect()
    }

    /// Checks a request body the walk sent against the documented request
    /// schema: a body the service accepted must match it, and a body it
    /// refused as malformed (`invalid_request`, `invalid_policy`) must not.
    fn check_request(
        &self,
        method: &Method,
        template: &str,
        body: &Value,
        reply: &adesync_tests::Reply,
    ) {
        let operation = &self.doc["paths"][template][method.as_str().to_lowercase()];
        let schema =
            &resolve(&self.doc, &operation["requestBody"])["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{method} {template} takes a body the document does not describe: {body}"
        );
        let errors = self.errors(schema, body, &format!("{method} {template} request"));
        let malformed = reply.status == 400
            && matches!(
                reply.body["error"].as_str(),
                Some("invalid_request" | "invalid_policy")
            );
        if reply.status < 300 {
            assert!(
                errors.is_empty(),
                "{method} {template} accepted a body docs/openapi.yaml refuses:\n  {}\nbody: {body}",
                errors.join("\n  ")
            );
        } else if malformed {
            assert!(
                !errors.is_empty(),
                "{method} {template} refused a body docs/openapi.yaml accepts ({}): {body}",
                reply.body
            );
        }
    }

    fn check(&mut self, method: &Method, template: &str, reply: &adesync_tests::Reply) {
        let key = (method.to_string(), template.to_owned());
        let operation = &self.doc["paths"][template][method.as_str().to_lowercase()];
        assert!(
            operation.is_object(),
            "{method} {template} is not in docs/openapi.yaml"
        );
        let status = reply.status.to_string();
        let response = operation["responses"]
            .get(&status)
            .map(|r| resolve(&self.doc, r))
            .unwrap_or_else(|| {
                panic!(
                    "{method} {template} answered {status}, not documented: {}",
                    reply.body
                )
            });
        for header in response["headers"]
            .as_object()
            .into_iter()
            .flat_map(|h| h.keys())
        {
            assert!(
                reply.header(header).is_some(),
                "{method} {template} {status} lacks the documented {header} header"
            );
        }
        match response["content"].as_object() {
            None => assert!(
                reply.body.is_null(),
                "{method} {template} {status} has a body the document does not: {}",
                reply.body
            ),
            Some(content) => {
                let (media, body) = content.iter().next().expect("a media type");
                let answered = reply.header("content-type").unwrap_or_default();
                assert!(
                    answered.starts_with(media.as_str()),
                    "{method} {template} {status}: content type {answered}, documented {media}"
                );
                let errors = self.errors(
                    &body["schema"],
                    &reply.body,
                    &format!("{method} {template} {status}"),
                );
                assert!(
                    errors.is_empty(),
                    "{method} {template} {status} does not match docs/openapi.yaml:\n  {}\nbody: {}",
                    errors.join("\n  "),
                    reply.body
                );
            }
        }
        if reply.status < 300 {
            self.succeeded.insert(key);
        }
    }
}

/// A whole adesync, walked through every documented operation.
struct Walk {
    env: TestService,
    admin: String,
    checker: Checker,
}

impl Walk {
    /// Calls `method path` (a concrete path of `template`) and checks the
    /// answer is `expected` and matches the document.
    async fn step(
        &mut self,
        method: Method,
        template: &str,
        path: &str,
        jwt: Option<&str>,
        body: Option<Value>,
        expected: u16,
    ) -> Value {
        let sent = body.clone();
        let reply = match jwt {
            Some(jwt) => self.env.call(method.clone(), path, jwt, body).await,
            None => {
                let mut request = self.env.http.request(method.clone(), self.env.api(path));
                if let Some(body) = body {
                    request = request.json(&body);
                }
                adesync_tests::Reply::from(request.send().await.expect("an answer")).await
            }
        };
        assert_eq!(reply.status, expected, "{method} {path}: {reply:?}");
        self.checker.check(&method, template, &reply);
        if let Some(sent) = &sent {
            self.checker.check_request(&method, template, sent, &reply);
        }
        reply.body
    }

    async fn admin(
        &mut self,
        method: Method,
        template: &str,
        path: &str,
        body: Option<Value>,
        expected: u16,
    ) -> Value {
        let jwt = self.admin.clone();
        self.step(method, template, path, Some(&jwt), body, expected)
            .await
    }

    /// A simulated MDM server with `devices` devices, encrypted to the
    /// account's key; its uuid and its token file (base64).
    async fn server(&self, pem: &str, name: &str, devices: usize) -> (String, String) {
        let server = self
            .env
            .sim_post(
                "/_sim/servers",
                json!({"name": name, "public_key_pem": pem, "admin_id": "admin@acme.test", "devices": devices}),
            )
            .await;
        (
            server["server_uuid"].as_str().expect("uuid").to_owned(),
            server["token_file"]
                .as_str()
                .expect("token file")
                .to_owned(),
        )
    }
}

#[tokio::test]
async fn real_answers_of_every_documented_operation_match_the_document() {
    let env = TestService::start().await;
    let admin = env.jwt("acme", &["admin"]);
    let reader = env.jwt("acme", &["reader"]);
    let doc = document();
    let mut walk = Walk {
        env,
        admin,
        checker: Checker {
            doc,
            succeeded: BTreeSet::new(),
        },
    };
    let run_timeout = Duration::from_secs(120);

    walk.step(Method::GET, "/v1/health", "/v1/health", None, None, 200)
        .await;
    walk.step(Method::GET, "/v1/tokens", "/v1/tokens", None, None, 401)
        .await;
    let pem = walk
        .admin(Method::GET, "/v1/public-key", "/v1/public-key", None, 200)
        .await;
    let pem = pem.as_str().expect("a PEM").to_owned();

    // Tokens: created, refused twice, listed and shown.
    let (server_uuid, token_file) = walk.server(&pem, "Acme MDM server", 30).await;
    let upload =
        json!({"name": "Acme devices", "apple_id": "admin@acme.test", "token_file": token_file});
    let created = walk
        .admin(
            Method::POST,
            "/v1/tokens",
            "/v1/tokens",
            Some(upload.clone()),
            201,
        )
        .await;
    let id = created["id"].as_str().expect("token id").to_owned();
    walk.admin(Method::POST, "/v1/tokens", "/v1/tokens", Some(upload), 409)
        .await;
    let not_a_token = base64::engine::general_purpose::STANDARD.encode(b"not a token file");
    walk.admin(
        Method::POST,
        "/v1/tokens",
        "/v1/tokens",
        Some(json!({"name": "x", "apple_id": "a@b.c", "token_file": not_a_token})),
        400,
    )
    .await;
    let token = adesync_tests::flows::CreatedToken {
        token_id: id.clone(),
        server_uuid: server_uuid.clone(),
        jwt: walk.admin.clone(),
    };
    walk.env.wait_until_idle(&token, run_timeout).await;

    let tokens = &format!("/v1/tokens/{id}");
    walk.admin(Method::GET, "/v1/tokens", "/v1/tokens?limit=10", None, 200)
        .await;
    walk.admin(Method::GET, "/v1/tokens/{token_id}", tokens, None, 200)
        .await;
    walk.admin(
        Method::GET,
        "/v1/tokens/{token_id}",
        "/v1/tokens/01JD8X3Q5V7N2M4K6P8R0T2W4Y",
        None,
        404,
    )
    .await;

    // Sync status and history, devices.
    let sync = &format!("/v1/tokens/{id}/sync");
    walk.admin(Method::GET, "/v1/tokens/{token_id}/sync", sync, None, 200)
        .await;
    walk.admin(
        Method::GET,
        "/v1/tokens/{token_id}/runs",
        &format!("/v1/tokens/{id}/runs?limit=5"),
        None,
        200,
    )
    .await;
    let page = walk
        .admin(
            Method::GET,
            "/v1/tokens/{token_id}/devices",
            &format!("/v1/tokens/{id}/devices?limit=5&state=active"),
            None,
            200,
        )
        .await;
    assert!(page["next_cursor"].is_string(), "30 devices, pages of 5");
    walk.admin(
        Method::GET,
        "/v1/tokens/{token_id}/devices",
        &format!("/v1/tokens/{id}/devices?cursor=%20bad"),
        None,
        400,
    )
    .await;
    let serial = page["devices"][0]["serial_number"]
        .as_str()
        .expect("a serial")
        .to_owned();
    let device = &format!("/v1/tokens/{id}/devices/{serial}");
    let one = "/v1/tokens/{token_id}/devices/{serial}";
    walk.admin(Method::GET, one, device, None, 200).await;
    walk.admin(Method::DELETE, one, device, None, 200).await;
    walk.admin(Method::GET, one, device, None, 404).await;

    // Manual syncs: accepted, then refused while running or cooling down.
    let started = walk
        .admin(
            Method::POST,
            "/v1/tokens/{token_id}/sync",
            sync,
            Some(json!({"kind": "delta"})),
            202,
        )
        .await;
    walk.admin(Method::GET, "/v1/tokens/{token_id}/sync", sync, None, 200)
        .await;
    walk.env
        .wait_for_run(
            &token,
            started["run_id"].as_str().expect("run id"),
            run_timeout,
        )
        .await;
    walk.admin(
        Method::POST,
        "/v1/tokens/{token_id}/sync",
        sync,
        Some(json!({"kind": "delta"})),
        429,
    )
    .await;
    walk.step(
        Method::POST,
        "/v1/tokens/{token_id}/sync",
        sync,
        Some(&reader),
        None,
        403,
    )
    .await;

    // Renewal: refused with the wrong Apple ID, done with the right one.
    let renewed = walk
        .env
        .sim_post(&format!("/_sim/servers/{server_uuid}/token"), json!({}))
        .await;
    let renewal = &format!("/v1/tokens/{id}/renewal");
    let file = renewed["token_file"].as_str().expect("token file");
    walk.admin(
        Method::PUT,
        "/v1/tokens/{token_id}/renewal",
        renewal,
        Some(json!({"apple_id": "other@acme.test", "token_file": file})),
        409,
    )
    .await;
    walk.admin(
        Method::PUT,
        "/v1/tokens/{token_id}/renewal",
        renewal,
        Some(json!({"apple_id": "admin@acme.test", "token_file": file})),
        200,
    )
    .await;

    // Scope tags: refused when invalid, replaced when valid.
    let token_path = &format!("/v1/tokens/{id}");
    walk.admin(
        Method::PATCH,
        "/v1/tokens/{token_id}",
        token_path,
        Some(json!({"scope_tags": ["paris", "paris"]})),
        400,
    )
    .await;
    walk.admin(
        Method::PATCH,
        "/v1/tokens/{token_id}",
        token_path,
        Some(json!({"scope_tags": ["paris"]})),
        200,
    )
    .await;

    // Deletion: refused while the token has devices; done for an empty one.
    walk.step(
        Method::DELETE,
        "/v1/tokens/{token_id}",
        tokens,
        Some(&reader),
        None,
        403,
    )
    .await;
    let refused = walk
        .admin(Method::DELETE, "/v1/tokens/{token_id}", tokens, None, 409)
        .await;
    assert_eq!(refused["error"], "token_not_empty", "{refused}");
    let (empty_uuid, empty_file) = walk.server(&pem, "Empty MDM server", 0).await;
    let empty = walk
        .admin(
            Method::POST,
            "/v1/tokens",
            "/v1/tokens",
            Some(json!({"name": "Empty", "apple_id": "admin@acme.test", "token_file": empty_file})),
            201,
        )
        .await;
    let empty = adesync_tests::flows::CreatedToken {
        token_id: empty["id"].as_str().expect("id").to_owned(),
        server_uuid: empty_uuid,
        jwt: walk.admin.clone(),
    };
    walk.env.wait_until_idle(&empty, run_timeout).await;
    walk.admin(
        Method::DELETE,
        "/v1/tokens/{token_id}",
        &format!("/v1/tokens/{}", empty.token_id),
        None,
        204,
    )
    .await;

    // Enrollment policies: refused at Apple's name limit, created, listed,
    // shown and changed.
    let policies = &format!("/v1/tokens/{id}/policies");
    let collection = "/v1/tokens/{token_id}/policies";
    let refused = walk
        .admin(
            Method::POST,
            collection,
            policies,
            Some(json!({"name": "n".repeat(126), "url": "https://mdm.acme.test/enroll"})),
            400,
        )
        .await;
    assert_eq!(refused["field"], "name", "{refused}");
    let staff = walk
        .admin(
            Method::POST,
            collection,
            policies,
            Some(json!({
                "name": "n".repeat(125),
                "url": "https://mdm.acme.test/enroll",
                "is_supervised": true,
                "department": "IT",
                "skip_setup_items": ["Siri", "TOS"],
            })),
            201,
        )
        .await;
    let staff = staff["policy_id"].as_str().expect("policy id").to_owned();
    let kiosk = walk
        .admin(
            Method::POST,
            collection,
            policies,
            Some(adesync_tests::policies::policy_body("Kiosk")),
            201,
        )
        .await;
    let kiosk = kiosk["policy_id"].as_str().expect("policy id").to_owned();
    walk.admin(Method::GET, collection, policies, None, 200)
        .await;
    let policy = "/v1/tokens/{token_id}/policies/{policy_id}";
    let staff_path = &format!("{policies}/{staff}");
    walk.admin(Method::GET, policy, staff_path, None, 200).await;
    walk.admin(
        Method::GET,
        policy,
        &format!("{policies}/01JD8X3Q5V7N2M4K6P8R0T2W4Y"),
        None,
        404,
    )
    .await;
    let changed = walk
        .admin(
            Method::PATCH,
            policy,
            staff_path,
            Some(json!({"department": null, "support_email_address": "help@acme.test"})),
            200,
        )
        .await;
    assert!(changed.get("department").is_none(), "{changed}");
    walk.admin(
        Method::PATCH,
        policy,
        staff_path,
        Some(json!({"name": null})),
        400,
    )
    .await;

    // Assignment: two devices of the token, then a serial that is none.
    let assign = "/v1/tokens/{token_id}/policies/{policy_id}/devices";
    let devices: Vec<String> = page["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .skip(1)
        .take(2)
        .map(|d| d["serial_number"].as_str().expect("serial").to_owned())
        .collect();
    let [first, second] = [&devices[0], &devices[1]];
    let report = walk
        .admin(
            Method::POST,
            assign,
            &format!("{staff_path}/devices"),
            Some(json!({ "serials": &devices })),
            200,
        )
        .await;
    assert_eq!(report["device_count"], 2, "{report}");
    walk.admin(
        Method::POST,
        assign,
        &format!("{staff_path}/devices"),
        Some(json!({"serials": ["NOSUCHDEVICE1"]})),
        400,
    )
    .await;
    walk.admin(Method::DELETE, policy, staff_path, None, 409)
        .await;
    walk.admin(
        Method::DELETE,
        policy,
        &format!("{policies}/{kiosk}"),
        None,
        204,
    )
    .await;

    // The first device gets a licensed user and a license and enrolls; the
    // second, unlicensed, is refused.
    walk.admin(
        Method::PUT,
        "/v1/tokens/{token_id}/devices/{serial}/user",
        &format!("/v1/tokens/{id}/devices/{first}/user"),
        Some(json!({"user_id": "ada@acme.test"})),
        200,
    )
    .await;
    walk.admin(
        Method::PUT,
        "/v1/licenses/users/{user_id}",
        "/v1/licenses/users/ada@acme.test",
        Some(json!({"licensed": true})),
        200,
    )
    .await;
    walk.admin(
        Method::PUT,
        "/v1/licenses/users/{user_id}",
        "/v1/licenses/users/ada@acme.test",
        Some(json!({"licensed": "yes"})),
        400,
    )
    .await;
    walk.admin(
        Method::PUT,
        "/v1/licenses/devices/{serial}",
        &format!("/v1/licenses/devices/{first}"),
        Some(json!({"licensed": true})),
        200,
    )
    .await;
    let enrollments = "/v1/enrollments";
    let refused = walk
        .admin(
            Method::POST,
            enrollments,
            enrollments,
            Some(json!({ "serial": second })),
            402,
        )
        .await;
    assert_eq!(refused["needs"], "device_license", "{refused}");
    walk.admin(
        Method::POST,
        enrollments,
        enrollments,
        Some(json!({"serial": "NOSUCHDEVICE1"})),
        404,
    )
    .await;
    let enrolled = walk
        .admin(
            Method::POST,
            enrollments,
            enrollments,
            Some(json!({ "serial": first })),
            201,
        )
        .await;
    walk.admin(
        Method::POST,
        enrollments,
        enrollments,
        Some(json!({ "serial": first })),
        409,
    )
    .await;
    let profile = "/v1/enrollments/{enrollment_id}/profile";
    let profile_path = &format!(
        "/v1/enrollments/{}/profile",
        enrolled["enrollment_id"].as_str().expect("enrollment id")
    );
    walk.admin(Method::GET, profile, profile_path, None, 200)
        .await;

    // Re-enroll actions: refused in the wrong state, then a wipe.
    let action = "/v1/tokens/{token_id}/devices/{serial}/actions/{action}";
    let actions = &format!("/v1/tokens/{id}/devices/{first}/actions");
    walk.admin(
        Method::POST,
        action,
        &format!("{actions}/factory-reset"),
        None,
        409,
    )
    .await;
    walk.admin(Method::POST, action, &format!("{actions}/erase"), None, 404)
        .await;
    let wiped = walk
        .admin(Method::POST, action, &format!("{actions}/wipe"), None, 202)
        .await;
    assert_eq!(wiped["enrollment_state"], "wiped", "{wiped}");

    // The default policy: an unknown id is not found; the staff policy is.
    let default = "/v1/tokens/{token_id}/default-policy";
    let default_path = &format!("/v1/tokens/{id}/default-policy");
    walk.admin(
        Method::PUT,
        default,
        default_path,
        Some(json!({"policy_id": "01JD8X3Q5V7N2M4K6P8R0T2W4Y"})),
        404,
    )
    .await;
    walk.admin(
        Method::PUT,
        default,
        default_path,
        Some(json!({ "policy_id": staff })),
        200,
    )
    .await;

    // 15 minutes on, the SCEP challenge has expired.
    walk.env.advance(16 * 60).await;
    walk.admin(Method::GET, profile, profile_path, None, 410)
        .await;

    let not_walked: Vec<_> = documented(&walk.checker.doc)
        .difference(&walk.checker.succeeded)
        .cloned()
        .collect();
    assert!(
        not_walked.is_empty(),
        "documented operations the walk never got a success from (add a step): {not_walked:?}"
    );
}

/// The accounts table's sort keys of `account`, as DynamoDB holds them.
async fn account_items(env: &TestService, account: &str) -> BTreeSet<String> {
    let store = env.store();
    let page = store
        .client()
        .query()
        .table_name(&store.tables().accounts)
        .key_condition_expression("account_id = :a")
        .expression_attribute_values(
            ":a",
            aws_sdk_dynamodb::types::AttributeValue::S(account.into()),
        )
        .consistent_read(true)
        .send()
        .await
        .expect("Query(accounts)");
    page.items()
        .iter()
        .filter_map(|item| item.get("sk")?.as_s().ok().cloned())
        .collect()
}

/// The schemathesis run of only invalid requests once changed the accounts
/// table: the request was `PUT /v1/licenses/users/<the JWT's sub>
/// {"licensed": true}`, a value schemathesis took from the JWT, so a valid
/// request and a real grant. The path ids had no pattern in the document,
/// so they could not be negated either. Here: the document and the code
/// agree on which ids are well-formed, a path id both refuse changes
/// nothing, and the request the fuzzing sent is valid by the document and
/// granted.
#[tokio::test]
async fn path_ids_are_refused_alike_by_the_document_and_the_api() {
    let env = TestService::start().await;
    let admin = env.jwt("acme", &["admin"]);
    let doc = document();
    let checker = Checker {
        doc: doc.clone(),
        succeeded: BTreeSet::new(),
    };
    let parameter =
        |name: &str| resolve(&doc, &doc["components"]["parameters"][name])["schema"].clone();
    let enrollment_id =
        doc["paths"]["/v1/enrollments/{enrollment_id}/profile"]["parameters"][0]["schema"].clone();
    let user_id = doc["paths"]["/v1/licenses/users/{user_id}"]["parameters"][0]["schema"].clone();
    // What ids.rs refuses (a '.', a '-' in a serial, too long) and accepts.
    for (what, schema, refused, accepted) in [
        (
            "token_id",
            parameter("TokenId"),
            vec!["a.b", "a b", &"x".repeat(65)],
            "01JD8X3Q5V7N2M4K6P8R0T2W4Y",
        ),
        (
            "serial",
            parameter("Serial"),
            vec!["C02-X1", "0.0", &"X".repeat(65)],
            "C02X1234ABCD",
        ),
        (
            "policy_id",
            parameter("PolicyId"),
            vec!["a.b", "é"],
            "01JD8X3Q5V7N2M4K6P8R0T2W4Y",
        ),
        (
            "enrollment_id",
            enrollment_id,
            vec!["a.b", "a/b"],
            "01JD8X3Q5V7N2M4K6P8R0T2W4Y",
        ),
    ] {
        for value in refused {
            assert!(
                !checker.errors(&schema, &json!(value), what).is_empty(),
                "the document accepts {what} {value:?}, which the code refuses"
            );
        }
        assert_eq!(
            checker.errors(&schema, &json!(accepted), what),
            Vec::<String>::new()
        );
    }

    let before = account_items(&env, "acme").await;
    let reply = env
        .call(
            Method::PUT,
            "/v1/licenses/devices/C02-X1",
            &admin,
            Some(json!({"licensed": true})),
        )
        .await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(reply.body["error"], "invalid_request", "{reply:?}");
    let reply = env.call(Method::GET, "/v1/tokens/a.b", &admin, None).await;
    assert_eq!(reply.status, 404, "{reply:?}");
    assert_eq!(
        account_items(&env, "acme").await,
        before,
        "a refused id wrote"
    );

    // The fuzzing's request: valid by the document, so a real grant.
    let body = json!({"licensed": true});
    assert_eq!(
        checker.errors(&user_id, &json!("test-user"), "user_id"),
        Vec::<String>::new()
    );
    let license = &doc["paths"]["/v1/licenses/users/{user_id}"]["put"]["requestBody"]["content"]["application/json"]
        ["schema"];
    assert_eq!(
        checker.errors(license, &body, "License"),
        Vec::<String>::new()
    );
    let reply = env
        .call(
            Method::PUT,
            "/v1/licenses/users/test-user",
            &admin,
            Some(body),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let after = account_items(&env, "acme").await;
    assert_eq!(
        after.difference(&before).collect::<Vec<_>>(),
        ["license#user#test-user"]
    );
}
