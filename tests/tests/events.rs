//! The sample events of events/ run through the real handlers, the way
//! Lambda runs them: an API Gateway (HTTP API, payload 2.0) request is read
//! by lambda_http and handed to the function's axum router with its JWT
//! authorizer context; SQS batches and schedule inputs go to the consumer
//! and scheduled handlers. The handlers use one test service's tables and
//! queues on the local emulators.
//!
//! Events name a sample token id and serial number; where a test needs a
//! real one, it substitutes the token and device it created.

use std::sync::Arc;
use std::time::Duration;

use adesync_local::runner::{Functions, functions};
use adesync_local::template::Template;
use adesync_local::tools::Workspace;
use adesync_service::faults::Faults;
use adesync_tests::TestService;
use adesync_tests::flows::CreatedToken;
use aws_lambda_events::sqs::SqsEvent;
use serde_json::Value;
use tower::ServiceExt;

/// The sample token id and serial number the events carry.
const SAMPLE_TOKEN: &str = "01JD8X3Q5V7N2M4K6P8R0T2W4Y";
const SAMPLE_SERIAL: &str = "C02ZX1ABCDEF";
/// The sample run id the SQS events carry.
const SAMPLE_RUN: &str = "01JD8X9B2C4D6E8F0G2H4J6K8M";

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

macro_rules! event {
    ($function:literal, $name:literal) => {
        (
            concat!($function, "/", $name),
            include_str!(concat!("../../events/", $function, "/", $name)),
        )
    };
}

/// The functions of `env`, built as each Lambda binary's `main` builds them.
fn lambda_functions(env: &TestService) -> Functions {
    functions(
        &env.service.config,
        &env.service.clients,
        Some(&env.service.aws_actions),
        env.service.runner.clock(),
        Arc::new(Faults::default()),
    )
    .expect("the functions build")
}

/// An HTTP function's answer: status, headers, JSON (or text) body.
struct Answer {
    status: u16,
    content_type: String,
    body: Value,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.status, self.content_type, self.body)
    }
}

/// What Lambda does with an API Gateway event: lambda_http reads it into
/// a request (with the authorizer context as an extension) and the
/// function's router answers.
async fn invoke_http(functions: &Functions, event: &str) -> Answer {
    let request = lambda_http::request::from_str(event).expect("an API Gateway v2 event");
    let response = functions
        .http
        .clone()
        .oneshot(request)
        .await
        .expect("the router answers");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 22)
        .await
        .expect("a body");
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Answer {
        status,
        content_type,
        body,
    }
}

fn with_ids(event: &str, token: &CreatedToken, serial: &str) -> String {
    event
        .replace(SAMPLE_TOKEN, &token.token_id)
        .replace(SAMPLE_SERIAL, serial)
}

#[tokio::test]
async fn api_gateway_requests_of_every_route_family_answer_as_the_contract_says() {
    let env = TestService::start().await;
    // The events act for account "acme" as an admin and DEM ("[admin dem]").
    let token = env.create_token("acme", 5).await;
    let run = env.wait_until_idle(&token, RUN_TIMEOUT).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let serial = env.all_devices(&token, "").await[0]["serial_number"]
        .as_str()
        .expect("a serial")
        .to_owned();
    let functions = lambda_functions(&env);

    let (_, health) = event!("api", "health.json");
    let answer = invoke_http(&functions, health).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["status"], "ok");

    let (_, key) = event!("api", "public-key.json");
    let answer = invoke_http(&functions, key).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.content_type, "application/x-pem-file");
    assert!(
        answer
            .body
            .as_str()
            .is_some_and(|pem| pem.contains("BEGIN CERTIFICATE")),
        "{answer:?}"
    );

    let (_, list) = event!("api", "tokens-list.json");
    let answer = invoke_http(&functions, list).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["tokens"][0]["id"], token.token_id.as_str());

    // Events whose ids name nothing in the account: 404, as for another account's.
    let (_, show) = event!("api", "tokens-show.json");
    assert_eq!(
        invoke_http(&functions, show).await.body["error"],
        "not_found"
    );

    let expectations: &[((&str, &str), u16, &str)] = &[
        (event!("api", "tokens-show.json"), 200, ""),
        (event!("api", "sync-status.json"), 200, ""),
        (event!("api", "runs.json"), 200, ""),
        (event!("api", "devices-list.json"), 200, ""),
        (event!("api", "devices-show.json"), 200, ""),
        (
            event!("api", "tokens-create-invalid-file.json"),
            400,
            "invalid_token_file",
        ),
        (
            event!("api", "tokens-renew-invalid-file.json"),
            400,
            "invalid_token_file",
        ),
        (
            event!("api", "tokens-delete-as-reader.json"),
            403,
            "forbidden",
        ),
        (event!("api", "devices-delete.json"), 200, ""),
        (event!("api", "tokens-delete.json"), 409, "token_not_empty"),
        (
            event!("sync-trigger", "sync-as-reader.json"),
            403,
            "forbidden",
        ),
        (event!("sync-trigger", "sync-delta.json"), 202, ""),
    ];
    for ((name, event), status, code) in expectations {
        let answer = invoke_http(&functions, &with_ids(event, &token, &serial)).await;
        assert_eq!(answer.status, *status, "{name}: {answer:?}");
        if !code.is_empty() {
            assert_eq!(answer.body["error"], *code, "{name}: {answer:?}");
        }
    }
    // What the 200s carry.
    let (_, devices) = event!("api", "devices-list.json");
    let answer = invoke_http(&functions, &with_ids(devices, &token, &serial)).await;
    assert_eq!(
        answer.body["devices"].as_array().map(Vec::len),
        Some(2),
        "limit=2 in the event's query: {answer:?}"
    );
    let (_, device) = event!("api", "devices-show.json");
    let answer = invoke_http(&functions, &with_ids(device, &token, &serial)).await;
    assert_eq!(
        answer.status, 404,
        "deleted by devices-delete.json: {answer:?}"
    );

    // Right after the manual delta sync: another one, of any kind, is refused.
    for (name, event) in [
        event!("sync-trigger", "sync-no-body.json"),
        event!("sync-trigger", "sync-full.json"),
    ] {
        let answer = invoke_http(&functions, &with_ids(event, &token, &serial)).await;
        assert!(
            matches!(answer.status, 409 | 429),
            "{name}: a refusal, got {answer:?}"
        );
        assert!(
            answer.body["retry_after_seconds"].as_u64().is_some(),
            "{name}: {answer:?}"
        );
    }
}

/// `event` with its JWT authorizer's roles claim set to `roles`, the string
/// API Gateway would deliver.
fn with_roles(event: &str, roles: &str) -> String {
    let mut event: Value = serde_json::from_str(event).expect("a JSON event");
    event["requestContext"]["authorizer"]["jwt"]["claims"]["adesync:roles"] = Value::from(roles);
    event.to_string()
}

#[tokio::test]
async fn api_gateway_events_with_near_miss_roles_are_forbidden_on_every_function() {
    let env = TestService::start().await;
    let token = env.create_token("acme", 0).await;
    let run = env.wait_until_idle(&token, RUN_TIMEOUT).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let functions = lambda_functions(&env);

    for (name, event) in [
        event!("api", "tokens-delete-as-near-miss-admin.json"),
        event!("sync-trigger", "sync-as-near-miss-admin.json"),
    ] {
        let answer = invoke_http(&functions, &with_ids(event, &token, SAMPLE_SERIAL)).await;
        assert_eq!(answer.status, 403, "{name}: {answer:?}");
        assert_eq!(answer.body["error"], "forbidden", "{name}: {answer:?}");
    }

    // The claim as API Gateway delivers it: a flattened array, a JSON array
    // in a string, or one role; each a near miss of admin, dem or reader.
    let near_misses = [
        "[Admin]",
        "[administrator]",
        "[admin ]",
        "[ admin]",
        "[admin  dem]",
        "[ADMIN dem]",
        "[Dem]",
        "[Reader]",
        "[readers]",
        "[admin,dem]",
        "[admin\tdem]",
        "[admin superuser]",
        r#"["Admin"]"#,
        r#"["admin "]"#,
        r#"["admin", "Admin"]"#,
        "Admin",
        "admin ",
        " admin",
        "admin,dem",
        "admin dem",
        "",
    ];
    for (name, event) in [
        event!("api", "tokens-list.json"),
        event!("api", "tokens-delete.json"),
        event!("sync-trigger", "sync-delta.json"),
    ] {
        for roles in near_misses {
            let event = with_roles(&with_ids(event, &token, SAMPLE_SERIAL), roles);
            let answer = invoke_http(&functions, &event).await;
            assert_eq!(answer.status, 403, "{name} with {roles:?}: {answer:?}");
            assert_eq!(answer.body["error"], "forbidden", "{name} with {roles:?}");
        }
    }
    let still = env.token(&token).await;
    assert_eq!(still.status, 200, "not deleted: {still:?}");
    assert_eq!(still.body["last_manual_sync_at"], Value::Null, "nor synced");

    // The exact roles, in every shape, pass the same events.
    let (_, list) = event!("api", "tokens-list.json");
    for roles in ["[reader]", r#"["reader"]"#, "reader", "[reader dem]"] {
        let answer = invoke_http(&functions, &with_roles(list, roles)).await;
        assert_eq!(answer.status, 200, "{roles:?}: {answer:?}");
        assert_eq!(answer.body["tokens"][0]["id"], token.token_id.as_str());
    }
    let (_, sync) = event!("sync-trigger", "sync-delta.json");
    let answer = invoke_http(
        &functions,
        &with_roles(&with_ids(sync, &token, SAMPLE_SERIAL), "admin"),
    )
    .await;
    assert_eq!(answer.status, 202, "{answer:?}");
}

/// `event` with a body over the functions' 256 KiB cap, its
/// `content-length` header declaring it or (as a client streaming it would)
/// absent.
fn with_oversized_body(event: &str, declared: bool) -> String {
    let mut event: Value = serde_json::from_str(event).expect("a JSON event");
    let body =
        serde_json::json!({"kind": "full", "token_file": "A".repeat(300 * 1024)}).to_string();
    let headers = event["headers"].as_object_mut().expect("headers");
    headers.remove("content-length");
    if declared {
        headers.insert("content-length".into(), Value::from(body.len().to_string()));
    }
    event["body"] = Value::from(body);
    event.to_string()
}

#[tokio::test]
async fn oversized_bodies_in_api_gateway_events_are_the_contracts_413_on_every_function() {
    let env = TestService::start().await;
    let token = env.create_token("acme", 0).await;
    let run = env.wait_until_idle(&token, RUN_TIMEOUT).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let functions = lambda_functions(&env);
    for (name, event) in [
        event!("sync-trigger", "sync-delta.json"),
        event!("api", "tokens-create-invalid-file.json"),
        event!("api", "tokens-renew-invalid-file.json"),
    ] {
        for declared in [true, false] {
            let event = with_oversized_body(&with_ids(event, &token, SAMPLE_SERIAL), declared);
            let answer = invoke_http(&functions, &event).await;
            let what = format!("{name} (length declared: {declared})");
            assert_eq!(answer.status, 413, "{what}: {answer:?}");
            assert_eq!(answer.content_type, "application/json", "{what}");
            assert_eq!(answer.body["error"], "body_too_large", "{what}: {answer:?}");
            assert!(answer.body["message"].is_string(), "{what}: {answer:?}");
        }
    }
    let still = env.token(&token).await;
    assert_eq!(
        still.body["last_manual_sync_at"],
        Value::Null,
        "no sync started"
    );
    assert_eq!(still.body["renewed_at"], Value::Null, "nor a renewal");
}

#[tokio::test]
async fn every_schedule_of_the_template_has_its_event_and_the_scheduler_runs_it() {
    let env = TestService::start().await;
    let functions = lambda_functions(&env);
    let scheduler = &functions.scheduled["sync-scheduler"];
    let samples: Vec<Value> = [
        event!("sync-scheduler", "delta-every-12-hours.json"),
        event!("sync-scheduler", "full-sync-sweep.json"),
        event!("sync-scheduler", "assignment-retries.json"),
    ]
    .iter()
    .map(|(name, text)| serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}")))
    .collect();

    let template = Template::load(&Workspace::locate().unwrap().template_path()).unwrap();
    let inputs: Vec<&Value> = template
        .functions
        .iter()
        .flat_map(|f| f.schedules.iter().map(|s| &s.input))
        .collect();
    assert_eq!(inputs.len(), samples.len(), "one sample per schedule");
    for input in inputs {
        assert!(
            samples.contains(input),
            "events/sync-scheduler has no sample of the schedule input {input}"
        );
    }
    for sample in samples {
        scheduler(sample.clone())
            .await
            .unwrap_or_else(|e| panic!("{sample}: {e}"));
    }
    assert!(
        scheduler(serde_json::json!({"sweep": "weekly"}))
            .await
            .is_err(),
        "an input no schedule sends is an error, not a silent success"
    );
}

fn sqs_event(text: &str) -> SqsEvent {
    serde_json::from_str(text).expect("an SQS event")
}

fn failed_ids(response: &aws_lambda_events::sqs::SqsBatchResponse) -> Vec<&str> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect()
}

#[tokio::test]
async fn consumers_report_only_the_poison_record_of_a_batch() {
    let env = TestService::start().await;
    // The events are redeliveries of a finished run: a job, a device batch
    // and its end-of-run marker arriving late, as SQS's at-least-once
    // delivery allows. They name the sample token and run; point them at
    // a real token's finished first sync.
    let token = env.create_token("acme", 5).await;
    let run = env.wait_until_idle(&token, RUN_TIMEOUT).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let run_id = run["run_id"].as_str().expect("run id");
    let late = |text: &str| {
        text.replace(SAMPLE_TOKEN, &token.token_id)
            .replace(SAMPLE_RUN, run_id)
    };
    let functions = lambda_functions(&env);
    let clock: adesync_core::clock::SharedClock = env.service.runner.clock();
    let deadline =
        || adesync_core::clock::Deadline::after(clock.clone(), chrono::Duration::seconds(60));

    // sync-jobs: the finished run's job is done (dropped: the run no longer
    // holds the token); the unreadable one fails alone and goes back to
    // the queue (then to the dead-letter queue).
    let (_, jobs) = event!("sync-worker", "sync-jobs-with-poison.json");
    let event = sqs_event(&late(jobs));
    let poison = event.records[1].message_id.clone().unwrap_or_default();
    let response = functions.consumers["SyncJobsQueue"](event, deadline())
        .await
        .expect("every record has an id");
    assert_eq!(failed_ids(&response), [poison.as_str()]);
    let (_, job) = event!("sync-worker", "sync-job.json");
    let response = functions.consumers["SyncJobsQueue"](sqs_event(&late(job)), deadline())
        .await
        .expect("every record has an id");
    assert!(failed_ids(&response).is_empty(), "{response:?}");
    // A page of a scheduled pass (the assignment pass: nothing is due).
    let (_, page) = event!("sync-worker", "sweep-page.json");
    let response = functions.consumers["SyncJobsQueue"](sqs_event(page), deadline())
        .await
        .expect("every record has an id");
    assert!(failed_ids(&response).is_empty(), "{response:?}");

    // device-batches (FIFO): the closed run's late batch and repeated end
    // marker are dropped; the poison record (its own message group) is set
    // aside in the dead-letter queue at once, so nothing fails.
    let (_, batches) = event!("device-importer", "device-batches-with-poison.json");
    let event = sqs_event(&late(batches));
    assert!(
        event.records.iter().all(|r| {
            [
                "MessageGroupId",
                "MessageDeduplicationId",
                "ApproximateReceiveCount",
            ]
            .iter()
            .all(|a| r.attributes.contains_key(*a))
        }),
        "FIFO records carry their group, deduplication id and receive count"
    );
    let poison = event.records[2].body.clone().unwrap_or_default();
    let response = functions.consumers["DeviceBatchesQueue"](event, deadline())
        .await
        .expect("every record has an id");
    assert!(failed_ids(&response).is_empty(), "{response:?}");
    let bodies = env.queued_bodies("DeviceBatchesDeadLetterQueue").await;
    assert_eq!(
        bodies,
        [poison.as_str()],
        "the poison record waits in the dead-letter queue"
    );
    let devices = env.all_devices(&token, "").await;
    assert_eq!(devices.len(), 5, "the late batch changed nothing");
}
