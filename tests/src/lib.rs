//! The end-to-end test harness.
//!
//! Every test starts its own adesync — its own tables and queues (a unique
//! stage name), its own Apple simulator and functions on free ports — on
//! the ONE local AWS of the test run, so tests run in parallel without
//! seeing each other. The local AWS comes from the standard
//! `AWS_ENDPOINT_URL*` variables that `adesync-local test` sets; without
//! them a test fails at once, saying how to run it. Nothing is skipped.

use std::time::Duration;

use adesync_core::ids::{AccountId, TokenId};
use adesync_local::emulators::Endpoints;
use adesync_local::runner::{RunnerOptions, mint_jwt};
use adesync_local::tools::Workspace;
use adesync_local::{LocalService, ServiceOptions};
use adesync_queue::Queues;
use adesync_store::Store;
use adesync_store::tokens::NewToken;
use serde_json::Value;

pub mod flows;
pub mod logs;
pub mod policies;
pub mod routes;

pub use adesync_local;

const JWT_SECRET: &str = "adesync-test-secret";

/// How to get a local AWS for the tests.
pub const HOW_TO_RUN: &str = "No local AWS for the tests: AWS_ENDPOINT_URL_DYNAMODB, AWS_ENDPOINT_URL_SQS and AWS_ENDPOINT_URL_KMS (or AWS_ENDPOINT_URL) are not set. Run every test with `cargo run -p adesync-local -- test`, or start the emulators with `cargo run -p adesync-local -- aws`, export the variables it prints, then run `cargo test`.";

/// The local AWS of this test run.
pub fn endpoints() -> Endpoints {
    Endpoints::from_env().unwrap_or_else(|| panic!("{HOW_TO_RUN}"))
}

/// Options of a test service.
#[derive(Debug, Clone, Default)]
pub struct TestOptions {
    /// Fire the template's schedules on the runner's clock.
    pub schedules: bool,
    /// Devices a new simulated MDM server starts with.
    pub sim_devices: usize,
    /// Answer every Nth DynamoDB request of the functions with a throttle.
    pub throttle_dynamodb_every: Option<u64>,
    /// Devices per part of a run's close (default [`CLOSE_PART_DEVICES`]).
    pub close_part_devices: Option<usize>,
    /// How many times faster than real time the service's clock (and the
    /// Apple simulator's) runs; 1 when unset. Everything that waits follows
    /// it: visibility timeouts, function timeouts, Apple's pace, leases.
    pub clock_speed: Option<f64>,
    /// Further settings of the functions (variable, value).
    pub environment: Vec<(&'static str, &'static str)>,
}

/// Devices per part of a run's close in tests: small, so that every test
/// with more devices closes its runs in several parts, as a large token does.
pub const CLOSE_PART_DEVICES: usize = 1_000;

/// The functions' settings in a test: at real speed Apple calls give up
/// fast, so failure paths run in seconds; on a sped-up clock the real
/// settings already take little real time, and shorter ones would be shorter
/// than a debug build's own latency.
fn environment(options: &TestOptions) -> std::collections::HashMap<String, String> {
    let mut environment = std::collections::HashMap::from([(
        "ADESYNC_CLOSE_PART_DEVICES".to_owned(),
        options
            .close_part_devices
            .unwrap_or(CLOSE_PART_DEVICES)
            .to_string(),
    )]);
    if options.clock_speed.is_none_or(|speed| speed <= 1.0) {
        environment.insert(
            "ADESYNC_APPLE_RETRY_DEADLINE_SECONDS".to_owned(),
            "4".to_owned(),
        );
        environment.insert(
            "ADESYNC_APPLE_REQUEST_TIMEOUT_SECONDS".to_owned(),
            "2".to_owned(),
        );
    }
    for (name, value) in &options.environment {
        environment.insert((*name).to_owned(), (*value).to_owned());
    }
    environment
}

/// One test's adesync.
pub struct TestService {
    pub service: LocalService,
    pub http: reqwest::Client,
    log_mark: usize,
}

impl Drop for TestService {
    /// No test may end with a secret in the logs — of this test or of any
    /// other running alongside it.
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let leaked = logs::secrets_since(self.log_mark);
        assert!(
            leaked.is_empty(),
            "secrets were logged:\n{}",
            leaked.join("\n")
        );
        self.check_aws_calls();
    }
}

impl TestService {
    /// No test may make an AWS call its function's role in template.yaml
    /// does not grant: the local AWS enforces no IAM, AWS would deny it.
    /// With `ADESYNC_IAM_RECORD_DIR` set (`adesync-local reliability`), the
    /// calls are also written there, for the report of unused grants.
    fn check_aws_calls(&self) {
        let calls = self.service.aws_calls();
        if let Some(dir) = std::env::var_os(adesync_local::iam::RECORD_DIR) {
            let path =
                std::path::Path::new(&dir).join(format!("{}.json", self.service.deployed.stage));
            let written = std::fs::create_dir_all(&dir).and_then(|()| {
                std::fs::write(&path, serde_json::to_vec(&calls).unwrap_or_default())
            });
            if let Err(error) = written {
                panic!("cannot record the AWS calls in {}: {error}", path.display());
            }
        }
        let workspace = Workspace::locate().expect("the adesync checkout");
        let denied = self
            .service
            .denied_aws_calls(&workspace)
            .unwrap_or_else(|e| panic!("cannot read the grants of template.yaml: {e:#}"));
        assert!(
            denied.is_empty(),
            "calls IAM would deny on AWS:\n{}",
            denied.join("\n")
        );
    }

    pub async fn start() -> Self {
        Self::start_with(TestOptions::default()).await
    }

    pub async fn start_with(options: TestOptions) -> Self {
        // Every log line is kept (and shown with `RUST_LOG=info cargo test
        // -- --nocapture`); dropping the service checks none holds a secret.
        logs::capture();
        let log_mark = logs::mark();
        let workspace = Workspace::locate().expect("the adesync checkout");
        let stage = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let service = LocalService::start(
            &workspace,
            endpoints(),
            ServiceOptions {
                stage,
                runner: RunnerOptions {
                    jwt_secret: JWT_SECRET.into(),
                    schedules: options.schedules,
                    clock_speed: options.clock_speed.unwrap_or(1.0),
                    ..RunnerOptions::default()
                },
                sim_devices: options.sim_devices,
                throttle_dynamodb: options
                    .throttle_dynamodb_every
                    .map(adesync_local::faults::ThrottleDynamo::every),
                environment: environment(&options),
                ..ServiceOptions::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("the local service did not start: {e:#}\n{HOW_TO_RUN}"));
        Self {
            service,
            log_mark,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("an HTTP client"),
        }
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}{path}", self.service.runner.api_url())
    }

    pub fn sim(&self, path: &str) -> String {
        format!("{}{path}", self.service.sim.base_url())
    }

    /// Log lines of the test process since this service started.
    pub fn log_lines(&self) -> Vec<String> {
        logs::lines_since(self.log_mark)
    }

    pub fn store(&self) -> Store {
        self.service.clients.store(&self.service.config)
    }

    pub fn queues(&self) -> Queues {
        self.service.clients.queues(&self.service.config)
    }

    /// A bearer token of `account` with `roles`.
    pub fn jwt(&self, account: &str, roles: &[&str]) -> String {
        mint_jwt(
            JWT_SECRET,
            "test-user",
            account,
            roles,
            Duration::from_secs(3600),
        )
        .expect("a JWT")
    }

    /// A bearer token of `account` with `roles`, limited to the scope tags
    /// `scopes` (the `adesync:scopes` claim, as a JSON array).
    pub fn jwt_with_scopes(&self, account: &str, roles: &[&str], scopes: &[&str]) -> String {
        adesync_cli::dev_token::mint_scoped(
            JWT_SECRET,
            "test-user",
            account,
            roles,
            Some(scopes),
            Duration::from_secs(3600),
            chrono::Utc::now(),
        )
        .expect("a JWT")
    }

    /// Inserts a token directly: counted and linked like a created one,
    /// but without credentials (for tests of rules that never call Apple).
    pub async fn seed_token(&self, account: &str) -> TokenId {
        let now = chrono::Utc::now();
        let token = TokenId::new_at(now);
        let inserted = self
            .store()
            .tokens
            .insert_token(&NewToken {
                account: AccountId::parse(account).expect("account id"),
                token: token.clone(),
                name: "Seeded token".into(),
                apple_id: "seeded@example.com".into(),
                server_name: "Seeded MDM server".into(),
                server_uuid: uuid::Uuid::new_v4().to_string(),
                org_name: None,
                admin_id: None,
                token_expires_at: now + chrono::Duration::days(365),
                created_at: now,
                scope_tags: Vec::new(),
            })
            .await
            .expect("insert token");
        assert!(inserted);
        token
    }

    /// Runs a scheduled pass now (`"delta"`, `"full"` or `"assignments"`),
    /// as EventBridge would, and waits until its pages and everything they
    /// queued on the sync-jobs queue (sync steps, assignment jobs) are done.
    pub async fn sweep(&self, sweep: &str) {
        self.service
            .runner
            .fire("sync-scheduler", serde_json::json!({ "sweep": sweep }))
            .await
            .unwrap_or_else(|e| panic!("the {sweep} pass did not start: {e:#}"));
        self.wait_for_sync_jobs(Duration::from_secs(120)).await;
    }

    /// Waits until the sync-jobs queue holds nothing: no message waiting,
    /// delayed or in flight, seen three times in a row (a step queues its
    /// continuation before its own message is deleted, so a walk in
    /// progress never reads as empty).
    pub async fn wait_for_sync_jobs(&self, timeout: Duration) {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let url = &self.service.deployed.queues["SyncJobsQueue"];
        let started = std::time::Instant::now();
        let mut empty = 0;
        loop {
            let answer = self
                .service
                .clients
                .sqs
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(A::ApproximateNumberOfMessages)
                .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
                .attribute_names(A::ApproximateNumberOfMessagesDelayed)
                .send()
                .await
                .expect("GetQueueAttributes(sync-jobs)");
            let waiting: u64 = answer
                .attributes()
                .map(|a| a.values().filter_map(|v| v.parse::<u64>().ok()).sum())
                .unwrap_or(0);
            empty = if waiting == 0 { empty + 1 } else { 0 };
            if empty >= 3 {
                return;
            }
            assert!(
                started.elapsed() < timeout,
                "the sync-jobs queue still holds {waiting} message(s) after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The bodies waiting in queue `logical_id` (a dead-letter queue), up to 10.
    pub async fn queued_bodies(&self, logical_id: &str) -> Vec<String> {
        let received = self
            .service
            .clients
            .sqs
            .receive_message()
            .queue_url(&self.service.deployed.queues[logical_id])
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap_or_else(|e| panic!("ReceiveMessage({logical_id}): {e}"));
        received
            .messages()
            .iter()
            .filter_map(|m| m.body().map(str::to_owned))
            .collect()
    }

    /// Moves the service's clock forward (the runner's rules read it).
    pub async fn advance(&self, seconds: i64) {
        let response = self
            .http
            .post(self.api("/_dev/clock"))
            .json(&serde_json::json!({ "advance_seconds": seconds }))
            .send()
            .await
            .expect("POST /_dev/clock");
        assert!(response.status().is_success(), "clock not advanced");
    }

    /// Sends `method path` with `account`'s admin identity and a JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        jwt: &str,
        body: Option<Value>,
    ) -> Reply {
        let mut request = self.http.request(method, self.api(path)).bearer_auth(jwt);
        if let Some(body) = body {
            request = request.json(&body);
        }
        Reply::from(request.send().await.expect("the API answers")).await
    }
}

/// An API answer, read fully.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub async fn from(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("a body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Self {
            status,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The error code of an error answer.
    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }
}
