//! Every function of template.yaml on one machine.
//!
//! - The HTTP functions (api, sync-trigger) are served on one address as
//!   API Gateway would route them. Like API Gateway's JWT authorizer, the
//!   runner verifies the bearer token (HS256 with `ADESYNC_DEV_JWT_SECRET`)
//!   and hands the handlers the same request context — claims flattened to
//!   strings — so the handler code is the Lambda code.
//! - The SQS consumers are fed by pollers that receive real messages,
//!   build the SQS event Lambda would send, and delete only the records the
//!   handler did not report in `batchItemFailures`; failed ones become
//!   visible again after the queue's visibility timeout and, past
//!   `maxReceiveCount`, SQS moves them to the dead-letter queue as on AWS.
//! - Every invocation is killed at its function's timeout from
//!   template.yaml, as Lambda does: its messages are not deleted and come
//!   back after the visibility timeout.
//! - The schedules fire on the runner's clock, which `POST /_dev/clock`
//!   moves forward and speeds up: every rule about time reads that clock,
//!   and everything that waits — visibility timeouts, function timeouts,
//!   the Apple simulator's pacing (its clock is linked) — follows it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use adesync_core::clock::{Clock, Deadline, LocalClock, SharedClock};
use adesync_runtime::aws::Clients;
use adesync_runtime::{ApiError, Config};
use adesync_service::faults::Faults;
use anyhow::{Context, Result};
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::iam::AwsActions;
use crate::template::Deployed;

/// An SQS consumer function: the event Lambda would send and the deadline
/// of the invocation; an error fails the whole invocation (every record).
pub type Consumer = Arc<
    dyn Fn(SqsEvent, Deadline) -> BoxFuture<'static, Result<SqsBatchResponse, String>>
        + Send
        + Sync,
>;

/// A scheduled function: the EventBridge event's `detail`-less input.
pub type Scheduled = Arc<dyn Fn(Value) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// How the runner behaves.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    pub api_addr: SocketAddr,
    /// The HS256 secret of the development JWTs (random unless given).
    pub jwt_secret: String,
    /// Listen on an address other machines can reach. Off by default:
    /// whoever knows the development secret acts as any account.
    pub insecure_public: bool,
    /// Fire the template's schedules on the runner's clock.
    pub schedules: bool,
    /// How many times faster than real time the runner's clock starts
    /// (`POST /_dev/clock {"speed": N}` changes it later).
    pub clock_speed: f64,
    /// Concurrent invocations per SQS consumer (Lambda's scaling).
    pub concurrency: usize,
    /// Clocks moved together with the runner's (the Apple simulator's
    /// `POST /_sim/clock`): time passes for Apple too.
    pub linked_clocks: Vec<String>,
    /// Run only the pages of scheduled passes from the sync-jobs queue; the
    /// sync steps and assignment jobs they queue are acknowledged unrun and
    /// counted ([`Runner::jobs_not_run`]). For the fanout benchmark: it
    /// measures a pass's own work on a fleet whose syncs one machine could
    /// not run at the pass's pace.
    pub pass_pages_only: bool,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        Self {
            api_addr: "127.0.0.1:0"
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0))),
            jwt_secret: random_secret(),
            insecure_public: false,
            schedules: true,
            clock_speed: 1.0,
            concurrency: 4,
            linked_clocks: Vec::new(),
            pass_pages_only: false,
        }
    }
}

/// The functions the runner hosts, built from one configuration.
pub struct Functions {
    /// Every HTTP route, as API Gateway routes them (no timeouts: the
    /// handlers as Lambda runs them).
    pub http: Router,
    /// The same routes per function binary, for the runner to kill each at
    /// its own timeout.
    pub http_functions: Vec<(String, Router)>,
    /// queue logical id → consumer
    pub consumers: HashMap<String, Consumer>,
    /// function binary name → scheduled handler
    pub scheduled: HashMap<String, Scheduled>,
}

/// Builds the functions for `config` on `clock`: the same library code
/// each Lambda binary's `main` wires.
///
/// With `actions`, each function gets clients of its own that record its
/// AWS calls under its binary's name, for the IAM check.
pub fn functions(
    config: &Config,
    clients: &Clients,
    actions: Option<&AwsActions>,
    clock: SharedClock,
    faults: Arc<Faults>,
) -> Result<Functions> {
    let clients_of = |binary: &str| match actions {
        Some(actions) => actions.clients_for(clients, binary),
        None => clients.clone(),
    };
    let trigger = adesync_sync_trigger::routes(adesync_sync_trigger::SyncTrigger::new(
        config,
        &clients_of("sync-trigger"),
        clock.clone(),
    ));
    let api = adesync_api::routes(adesync_api::Api::new(
        config,
        &clients_of("api"),
        clock.clone(),
    )?);
    let http = Router::new().merge(trigger.clone()).merge(api.clone());

    let worker = adesync_sync_worker::worker(
        config,
        &clients_of("sync-worker"),
        clock.clone(),
        faults.clone(),
    )?;
    let importer = adesync_device_importer::importer(
        config,
        &clients_of("device-importer"),
        clock.clone(),
        faults,
    );
    let scheduler = adesync_sync_scheduler::scheduler(config, &clients_of("sync-scheduler"), clock);
    let mut consumers: HashMap<String, Consumer> = HashMap::new();
    consumers.insert(
        "SyncJobsQueue".into(),
        Arc::new(move |event, deadline| {
            let worker = worker.clone();
            Box::pin(async move {
                adesync_sync_worker::handle(&worker, event, deadline)
                    .await
                    .map_err(|e| e.to_string())
            })
        }),
    );
    consumers.insert(
        "DeviceBatchesQueue".into(),
        Arc::new(move |event, _deadline| {
            let importer = importer.clone();
            Box::pin(async move {
                adesync_device_importer::handle(&importer, event)
                    .await
                    .map_err(|e| e.to_string())
            })
        }),
    );
    let mut scheduled: HashMap<String, Scheduled> = HashMap::new();
    scheduled.insert(
        "sync-scheduler".into(),
        Arc::new(move |input| {
            let scheduler = scheduler.clone();
            Box::pin(async move {
                adesync_sync_scheduler::handle(&scheduler, input)
                    .await
                    .map(|_| ())
            })
        }),
    );
    Ok(Functions {
        http: adesync_runtime::http::service(http),
        http_functions: vec![("sync-trigger".into(), trigger), ("api".into(), api)],
        consumers,
        scheduled,
    })
}

/// The running functions.
pub struct Runner {
    api_addr: SocketAddr,
    clock: Arc<LocalClock>,
    faults: Arc<Faults>,
    deliveries: Arc<DeliveryFaults>,
    invocations: Arc<Invocations>,
    jobs_not_run: Arc<NotRun>,
    tasks: Vec<JoinHandle<()>>,
    scheduled: HashMap<String, Scheduled>,
    deployed: Deployed,
}

/// Jobs of the sync-jobs queue delivered and acknowledged unrun, by the
/// second of the runner's clock they were delivered in.
#[derive(Debug, Default)]
pub struct NotRun {
    per_second: std::sync::Mutex<std::collections::BTreeMap<i64, u64>>,
}

impl NotRun {
    fn add(&self, at: chrono::DateTime<chrono::Utc>, jobs: u64) {
        if jobs > 0
            && let Ok(mut seen) = self.per_second.lock()
        {
            *seen.entry(at.timestamp()).or_default() += jobs;
        }
    }

    /// Jobs delivered at or after `since`, in all and in the busiest second.
    pub fn since(&self, since: chrono::DateTime<chrono::Utc>) -> (u64, u64) {
        let Ok(seen) = self.per_second.lock() else {
            return (0, 0);
        };
        seen.range(since.timestamp()..)
            .fold((0, 0), |(all, busiest), (_, n)| (all + n, busiest.max(*n)))
    }
}

/// `worker` for the pages of passes only: every other job of the sync-jobs
/// queue is acknowledged without running, and counted in `not_run`.
fn pass_pages_only(worker: Consumer, not_run: Arc<NotRun>, clock: Arc<LocalClock>) -> Consumer {
    Arc::new(move |mut event: SqsEvent, deadline| {
        let before = event.records.len();
        event.records.retain(|record| {
            let body = record.body.as_deref().unwrap_or_default();
            matches!(
                adesync_queue::jobs::Job::decode(body),
                Ok(adesync_queue::jobs::Job::Sweep(_))
            )
        });
        not_run.add(clock.now(), (before - event.records.len()) as u64);
        let worker = worker.clone();
        Box::pin(async move {
            if event.records.is_empty() {
                return Ok(SqsBatchResponse::default());
            }
            worker(event, deadline).await
        })
    })
}

/// How long the hosted functions ran: what Lambda would bill.
#[derive(Debug, Default)]
pub struct Invocations {
    /// function binary → totals
    totals: std::sync::Mutex<HashMap<String, InvocationTotals>>,
}

/// One function's invocations so far.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct InvocationTotals {
    pub count: u64,
    /// On the runner's clock: what Lambda bills for waits (Apple's pace,
    /// SQS) at any speed; compute is magnified by the clock's speed.
    pub clock_seconds: f64,
    /// In real time on this machine.
    pub real_seconds: f64,
    /// The longest single invocation, on the runner's clock.
    pub longest_clock_seconds: f64,
    /// Invocations killed at their function's timeout.
    pub killed: u64,
}

impl Invocations {
    fn record(&self, function: &str, clock: chrono::Duration, real: Duration, killed: bool) {
        if let Ok(mut totals) = self.totals.lock() {
            let entry = totals.entry(function.to_owned()).or_default();
            let seconds = clock.num_milliseconds() as f64 / 1000.0;
            entry.count += 1;
            entry.clock_seconds += seconds;
            entry.longest_clock_seconds = entry.longest_clock_seconds.max(seconds);
            entry.real_seconds += real.as_secs_f64();
            entry.killed += u64::from(killed);
        }
    }

    /// The totals of every function that ran, by binary name.
    pub fn totals(&self) -> HashMap<String, InvocationTotals> {
        self.totals.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

/// Deliveries the runner makes twice on purpose, as SQS sometimes does.
#[derive(Debug, Default)]
pub struct DeliveryFaults {
    /// queue logical id → messages still to deliver twice
    twice: std::sync::Mutex<HashMap<String, u32>>,
}

impl DeliveryFaults {
    /// The next `times` messages received from `queue` (a logical id of
    /// template.yaml, e.g. `SyncJobsQueue`) are handed to two invocations at
    /// once, as when SQS delivers one message to two pollers.
    pub fn deliver_twice(&self, queue: &str, times: u32) {
        if let Ok(mut twice) = self.twice.lock() {
            twice.insert(queue.to_owned(), times);
        }
    }

    /// Messages of `queue` still to be delivered twice.
    pub fn remaining(&self, queue: &str) -> u32 {
        self.twice
            .lock()
            .map(|twice| twice.get(queue).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    fn take(&self, queue: &str) -> bool {
        let Ok(mut twice) = self.twice.lock() else {
            return false;
        };
        match twice.get_mut(queue) {
            Some(left) if *left > 0 => {
                *left -= 1;
                true
            }
            _ => false,
        }
    }
}

#[derive(Clone)]
struct ServerState {
    jwt_secret: Arc<String>,
    clock: Arc<LocalClock>,
    scheduled: Arc<HashMap<String, Scheduled>>,
    schedule_inputs: Arc<Vec<(String, Value)>>,
    linked_clocks: Arc<Vec<String>>,
}

impl Runner {
    /// Starts every function of `deployed` with the resolved `config`.
    pub async fn start(
        deployed: Deployed,
        config: &Config,
        clients: &Clients,
        actions: Option<&AwsActions>,
        options: RunnerOptions,
    ) -> Result<Self> {
        only_loopback(options.api_addr, options.insecure_public)?;
        let clock = Arc::new(LocalClock::new());
        clock
            .set_speed(options.clock_speed)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let faults = Arc::new(Faults::default());
        let deliveries = Arc::new(DeliveryFaults::default());
        let invocations = Arc::new(Invocations::default());
        let mut functions = functions(config, clients, actions, clock.clone(), faults.clone())?;
        let jobs_not_run = Arc::new(NotRun::default());
        if options.pass_pages_only
            && let Some(worker) = functions.consumers.remove("SyncJobsQueue")
        {
            functions.consumers.insert(
                "SyncJobsQueue".into(),
                pass_pages_only(worker, jobs_not_run.clone(), clock.clone()),
            );
        }
        let mut tasks = Vec::new();

        for function in &deployed.template.functions {
            for (queue, batch_size) in &function.queue_events {
                let Some(consumer) = functions.consumers.get(queue) else {
                    continue;
                };
                let url = deployed.queue_url(queue)?.to_owned();
                let definition = deployed
                    .template
                    .queues
                    .iter()
                    .find(|q| q.logical_id == *queue)
                    .with_context(|| format!("template.yaml defines no queue {queue}"))?;
                let redrive = definition
                    .redrive
                    .clone()
                    .map(|(dlq, max)| deployed.queue_url(&dlq).map(|url| (url.to_owned(), max)))
                    .transpose()?;
                // Lambda hands a FIFO queue's message group to one invocation
                // at a time. moto keeps groups apart for sequential receives
                // but not for concurrent long polls, so a FIFO queue gets one
                // poller (its events still carry several groups at once).
                let fifo = definition
                    .attributes
                    .get("FifoQueue")
                    .is_some_and(|f| f == "true");
                let visibility = definition
                    .attributes
                    .get("VisibilityTimeout")
                    .and_then(|v| v.parse().ok())
                    .map_or(Duration::from_secs(30), Duration::from_secs);
                let pollers = if fifo { 1 } else { options.concurrency.max(1) };
                let source = Source {
                    logical_id: queue.clone(),
                    function: function.binary.clone(),
                    invocations: invocations.clone(),
                    queue_url: url,
                    fifo,
                    redrive,
                    batch_size: *batch_size,
                    timeout: function.timeout,
                    visibility,
                    clock: clock.clone(),
                    deliveries: deliveries.clone(),
                };
                for _ in 0..pollers {
                    tasks.push(tokio::spawn(poll(
                        clients.sqs.clone(),
                        source.clone(),
                        consumer.clone(),
                    )));
                }
            }
        }

        let timeout_of = |binary: &str| {
            deployed
                .template
                .functions
                .iter()
                .find(|f| f.binary == binary)
                .map(|f| f.timeout)
        };
        let mut scheduled: HashMap<String, Scheduled> = HashMap::new();
        for (binary, handler) in &functions.scheduled {
            let handler = match timeout_of(binary) {
                Some(timeout) => killed_at_timeout(handler.clone(), clock.clone(), timeout),
                None => handler.clone(),
            };
            scheduled.insert(binary.clone(), handler);
        }
        let schedule_inputs: Vec<(String, Value)> = deployed
            .template
            .functions
            .iter()
            .flat_map(|f| {
                f.schedules
                    .iter()
                    .map(move |s| (f.binary.clone(), s.input.clone()))
            })
            .collect();
        if options.schedules {
            for function in &deployed.template.functions {
                let Some(handler) = scheduled.get(&function.binary) else {
                    continue;
                };
                for schedule in &function.schedules {
                    tasks.push(tokio::spawn(fire_on_clock(
                        clock.clone(),
                        schedule.every,
                        schedule.input.clone(),
                        handler.clone(),
                    )));
                }
            }
        }

        let state = ServerState {
            jwt_secret: Arc::new(options.jwt_secret.clone()),
            clock: clock.clone(),
            scheduled: Arc::new(scheduled.clone()),
            schedule_inputs: Arc::new(schedule_inputs),
            linked_clocks: Arc::new(options.linked_clocks.clone()),
        };
        // The console's files, outside the JWT check (`Auth: NONE` on AWS).
        let dev = dev_routes(state.clone()).merge(crate::console::routes());
        let mut http = Router::new();
        for (binary, routes) in &functions.http_functions {
            let routes = match timeout_of(binary) {
                Some(timeout) => routes.clone().layer(middleware::from_fn_with_state(
                    (clock.clone(), timeout),
                    answer_within,
                )),
                None => routes.clone(),
            };
            http = http.merge(routes);
        }
        let app = Router::new().merge(dev).merge(
            adesync_runtime::http::service(http)
                .layer(middleware::from_fn_with_state(state, authorize)),
        );
        let listener = tokio::net::TcpListener::bind(options.api_addr)
            .await
            .with_context(|| format!("cannot listen on {}", options.api_addr))?;
        let api_addr = listener.local_addr()?;
        tasks.push(tokio::spawn(async move {
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "the local API server stopped");
            }
        }));
        Ok(Self {
            api_addr,
            clock,
            faults,
            deliveries,
            invocations,
            jobs_not_run,
            tasks,
            scheduled,
            deployed,
        })
    }

    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The clock every function of this runner reads.
    pub fn clock(&self) -> Arc<LocalClock> {
        self.clock.clone()
    }

    /// The crash points of the hosted worker and importer (fault tests).
    pub fn faults(&self) -> Arc<Faults> {
        self.faults.clone()
    }

    /// Deliveries made twice on purpose (fault tests).
    pub fn deliveries(&self) -> Arc<DeliveryFaults> {
        self.deliveries.clone()
    }

    /// How long the SQS consumers ran so far (the benchmark's Lambda seconds).
    pub fn invocations(&self) -> Arc<Invocations> {
        self.invocations.clone()
    }

    pub fn deployed(&self) -> &Deployed {
        &self.deployed
    }

    /// Jobs acknowledged unrun under [`RunnerOptions::pass_pages_only`].
    pub fn jobs_not_run(&self) -> &NotRun {
        &self.jobs_not_run
    }

    /// Runs a scheduled function now with `input` (as EventBridge would).
    pub async fn fire(&self, binary: &str, input: Value) -> Result<()> {
        let handler = self
            .scheduled
            .get(binary)
            .with_context(|| format!("no scheduled function {binary}"))?;
        let (started, started_real) = (self.clock.now(), std::time::Instant::now());
        let answer = handler(input).await;
        self.invocations.record(
            binary,
            self.clock.now() - started,
            started_real.elapsed(),
            answer
                .as_ref()
                .is_err_and(|e| e.starts_with(KILLED_SCHEDULED)),
        );
        answer.map_err(anyhow::Error::msg)
    }

    /// Stops every function (also done on drop).
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A fresh secret for the development JWTs of one run: two random v4 UUIDs,
/// 244 random bits, as 64 hex digits.
pub fn random_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Refuses an address other machines could reach unless `insecure_public`:
/// the runner's tokens are development tokens and its control routes take
/// no token at all.
pub fn only_loopback(addr: SocketAddr, insecure_public: bool) -> Result<()> {
    if addr.ip().to_canonical().is_loopback() || insecure_public {
        return Ok(());
    }
    anyhow::bail!(
        "refusing to listen on {addr}: the local runner is for this machine (whoever reaches it with the development secret acts as any account). Listen on 127.0.0.1, or pass --insecure-public if others must reach it and you accept that."
    )
}

/// Refuses a simulator address other machines could reach, whatever the
/// API does: the simulator's control routes create servers, mint token
/// files and inject faults without any token.
pub fn simulator_on_loopback(addr: SocketAddr) -> Result<()> {
    if addr.ip().to_canonical().is_loopback() {
        return Ok(());
    }
    anyhow::bail!(
        "refusing to run the Apple simulator on {addr}: its /_sim routes take no token, so it listens only on this machine. Give it a loopback address (127.0.0.1)."
    )
}

/// The runner's control routes (`/_dev/*`): the clock and the schedules.
/// They take no token, so they answer only requests from this machine,
/// even when the API listens publicly.
fn dev_routes(state: ServerState) -> Router {
    Router::new()
        .route("/_dev/clock", get(get_clock).post(set_clock))
        .route("/_dev/schedule", post(fire_schedule))
        .with_state(state)
        .layer(middleware::from_fn(from_this_machine))
}

async fn from_this_machine(request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    match peer {
        // A dual-stack listener sees local IPv4 callers as ::ffff:127.0.0.1.
        Some(peer) if peer.ip().to_canonical().is_loopback() => next.run(request).await,
        _ => ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "The runner's /_dev routes answer only requests from this machine (loopback).",
        )
        .into_response(),
    }
}

/// Claims of a development JWT (one definition, shared with `adesync dev-token`).
pub use adesync_cli::dev_token::{DevClaims, LOCAL_AUDIENCE, LOCAL_ISSUER};

/// Mints an HS256 JWT that the local runner accepts (the same minting as
/// `adesync dev-token`).
pub fn mint_jwt(
    secret: &str,
    sub: &str,
    account: &str,
    roles: &[&str],
    ttl: Duration,
) -> Result<String> {
    Ok(adesync_cli::dev_token::mint(
        secret,
        sub,
        account,
        roles,
        ttl,
        chrono::Utc::now(),
    )?)
}

/// What API Gateway's JWT authorizer does: verify, then pass the claims
/// (flattened to strings) in the request context.
async fn authorize(State(state): State<ServerState>, mut request: Request, next: Next) -> Response {
    if request.uri().path() == "/v1/health" {
        return next.run(request).await;
    }
    let Some(token) = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
    else {
        return ApiError::unauthorized(
            "This request carries no access token; send `Authorization: Bearer <JWT>`.",
        )
        .into_response();
    };
    // As API Gateway's JWT authorizer: signature, expiry, the issuer and
    // the audience the deployment names.
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_issuer(&[adesync_cli::dev_token::LOCAL_ISSUER]);
    validation.set_audience(&[adesync_cli::dev_token::LOCAL_AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    // API Gateway refuses a token before its `nbf` too.
    validation.validate_nbf = true;
    let claims = match jsonwebtoken::decode::<serde_json::Map<String, Value>>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(state.jwt_secret.as_bytes()),
        &validation,
    ) {
        Ok(data) => data.claims,
        Err(_) => {
            return ApiError::unauthorized(format!(
                "The access token is invalid, expired, or not for this API (the local runner accepts tokens signed with this run's secret, issued by `{}` for the audience `{}`); mint one with `adesync dev-token` and retry.",
                adesync_cli::dev_token::LOCAL_ISSUER,
                adesync_cli::dev_token::LOCAL_AUDIENCE,
            ))
            .into_response();
        }
    };
    let flattened: serde_json::Map<String, Value> = claims
        .into_iter()
        .map(|(k, v)| (k, Value::String(flatten_claim(&v))))
        .collect();
    let now = state.clock.now();
    let context = json!({
        "routeKey": "$default",
        "accountId": "000000000000",
        "stage": "$default",
        "requestId": uuid::Uuid::new_v4().to_string(),
        "apiId": "local",
        "domainName": "localhost",
        "time": now.to_rfc2822(),
        "timeEpoch": now.timestamp_millis(),
        "http": {
            "method": request.method().as_str(),
            "path": request.uri().path(),
            "protocol": "HTTP/1.1",
            "sourceIp": "127.0.0.1",
            "userAgent": "adesync-local"
        },
        "authorizer": {"jwt": {"claims": flattened, "scopes": null}}
    });
    match serde_json::from_value(context) {
        Ok(context) => {
            request
                .extensions_mut()
                .insert(lambda_http::request::RequestContext::ApiGatewayV2(context));
            next.run(request).await
        }
        Err(error) => ApiError::internal(&error).into_response(),
    }
}

/// API Gateway passes every claim as a string; arrays become `[a b]`.
fn flatten_claim(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(flatten_claim)
                .collect::<Vec<_>>()
                .join(" ")
        ),
        other => other.to_string(),
    }
}

async fn get_clock(State(state): State<ServerState>) -> Json<Value> {
    Json(clock_json(&state.clock))
}

fn clock_json(clock: &LocalClock) -> Value {
    json!({
        "now": clock.now().to_rfc3339(),
        "offset_seconds": clock.offset().num_seconds(),
        "speed": clock.speed(),
    })
}

/// `POST /_dev/clock`: move the clock forward, change its speed, or both.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockChange {
    advance_seconds: Option<i64>,
    speed: Option<f64>,
}

async fn set_clock(
    State(state): State<ServerState>,
    body: Result<Json<ClockChange>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(change) = body.map_err(|rejection| {
        ApiError::bad_request(
            "invalid_request",
            format!(
                "The body must be {{\"advance_seconds\": seconds}} and/or {{\"speed\": N}} with N from 1 to {} ({rejection}).",
                adesync_core::clock::MAX_SPEED
            ),
        )
    })?;
    if change.advance_seconds.is_none() && change.speed.is_none() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "Give advance_seconds, speed, or both.",
        ));
    }
    if change.advance_seconds.is_some_and(|s| s < 0) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "advance_seconds must be zero or more: the clock only moves forward.",
        ));
    }
    if let Some(speed) = change.speed
        && !(1.0..=adesync_core::clock::MAX_SPEED).contains(&speed)
    {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!(
                "speed must be a number from 1 to {}: how many times faster than real time the clock runs.",
                adesync_core::clock::MAX_SPEED
            ),
        ));
    }
    // The linked clocks (the Apple simulator's) move first: if one cannot,
    // ours stays as it was and the caller hears why.
    let mut linked = serde_json::Map::new();
    if let Some(seconds) = change.advance_seconds {
        linked.insert("advance_seconds".into(), json!(seconds));
    }
    if let Some(speed) = change.speed {
        linked.insert("speed".into(), json!(speed));
    }
    let http = reqwest::Client::new();
    for url in state.linked_clocks.iter() {
        let moved = http
            .post(url)
            .json(&linked)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        if let Err(error) = moved {
            return Err(ApiError::internal(&format!(
                "the linked clock {url} did not change: {error}"
            )));
        }
    }
    if let Some(seconds) = change.advance_seconds {
        state.clock.advance(chrono::Duration::seconds(seconds));
    }
    if let Some(speed) = change.speed {
        state
            .clock
            .set_speed(speed)
            .map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))?;
    }
    Ok(Json(clock_json(&state.clock)))
}

/// Sets the runner's clock (and the linked Apple simulator's) from code:
/// the same change `POST /_dev/clock` makes.
pub async fn set_linked_speed(clock: &LocalClock, linked: &[String], speed: f64) -> Result<()> {
    let http = reqwest::Client::new();
    for url in linked {
        http.post(url)
            .json(&json!({ "speed": speed }))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("the linked clock {url} did not change speed"))?;
    }
    clock.set_speed(speed).map_err(|e| anyhow::anyhow!("{e}"))
}

#[derive(Deserialize)]
struct Fire {
    /// The schedule's input (e.g. `{"sweep": "delta"}`).
    input: Value,
}

async fn fire_schedule(
    State(state): State<ServerState>,
    Json(body): Json<Fire>,
) -> Result<StatusCode, ApiError> {
    let Some((binary, _)) = state
        .schedule_inputs
        .iter()
        .find(|(_, input)| *input == body.input)
    else {
        return Err(ApiError::bad_request(
            "unknown_schedule",
            "No schedule in template.yaml has that input.",
        ));
    };
    let handler = state
        .scheduled
        .get(binary)
        .ok_or_else(|| ApiError::bad_request("unknown_schedule", "That function is not hosted."))?;
    handler(body.input)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Fires `handler` every `every` of the runner's clock.
async fn fire_on_clock(clock: Arc<LocalClock>, every: Duration, input: Value, handler: Scheduled) {
    let every = chrono::Duration::from_std(every).unwrap_or(chrono::Duration::hours(1));
    let mut next = clock.now() + every;
    loop {
        sleep_until(&clock, next).await;
        let now = clock.now();
        // Like EventBridge after downtime: one invocation, not a backlog.
        while next <= now {
            next += every;
        }
        if let Err(error) = handler(input.clone()).await {
            tracing::warn!(%error, %input, "scheduled invocation failed");
        }
    }
}

/// Sleeps until `at` on `clock`, following its speed and jumps: checks
/// at least every 50 ms of real time.
async fn sleep_until(clock: &LocalClock, at: chrono::DateTime<chrono::Utc>) {
    loop {
        let left = at - clock.now();
        if left <= chrono::Duration::zero() {
            return;
        }
        tokio::time::sleep(clock.real(left).min(Duration::from_millis(50))).await;
    }
}

/// What Lambda does at a function's timeout: the invocation is stopped
/// wherever it is. `None` when it was killed. The timeout runs in real time
/// at the clock's speed when the invocation began: moving the clock forward
/// skips time between events, it does not age invocations already running
/// (the function sees its deadline passed on the clock, and wraps up).
async fn within<T>(
    clock: &LocalClock,
    timeout: Duration,
    invocation: impl std::future::Future<Output = T>,
) -> Option<T> {
    let real = timeout.div_f64(clock.speed().max(1.0));
    tokio::time::timeout(real, invocation).await.ok()
}

/// How a scheduled invocation's error begins when Lambda killed it.
const KILLED_SCHEDULED: &str = "the scheduled invocation was killed";

/// A scheduled handler that Lambda kills at `timeout`.
fn killed_at_timeout(handler: Scheduled, clock: Arc<LocalClock>, timeout: Duration) -> Scheduled {
    Arc::new(move |input| {
        let handler = handler.clone();
        let clock = clock.clone();
        Box::pin(async move {
            within(&clock, timeout, handler(input))
                .await
                .unwrap_or_else(|| {
                    Err(format!(
                        "{KILLED_SCHEDULED} at its {}-second timeout",
                        timeout.as_secs()
                    ))
                })
        })
    })
}

/// An HTTP function killed at its timeout answers as API Gateway does
/// when its integration times out.
async fn answer_within(
    State((clock, timeout)): State<(Arc<LocalClock>, Duration)>,
    request: Request,
    next: Next,
) -> Response {
    match within(&clock, timeout, next.run(request)).await {
        Some(response) => response,
        None => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "The function did not answer within its {}-second timeout; retry the request.",
                timeout.as_secs()
            ),
        )
        .into_response(),
    }
}

fn chrono_span(timeout: Duration) -> chrono::Duration {
    chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::seconds(30))
}

/// One SQS event source: a queue and how Lambda consumes it.
#[derive(Debug, Clone)]
struct Source {
    logical_id: String,
    /// The consuming function's binary.
    function: String,
    invocations: Arc<Invocations>,
    queue_url: String,
    fifo: bool,
    /// The dead-letter queue and the queue's `maxReceiveCount`.
    redrive: Option<(String, u32)>,
    batch_size: u32,
    /// The consuming function's timeout (template.yaml).
    timeout: Duration,
    /// The queue's visibility timeout (template.yaml).
    visibility: Duration,
    clock: Arc<LocalClock>,
    deliveries: Arc<DeliveryFaults>,
}

impl Source {
    /// The visibility timeout in real seconds at the clock's speed now
    /// (SQS counts whole seconds; at least one).
    fn visibility_seconds(&self) -> i32 {
        let real = self.visibility.div_f64(self.clock.speed().max(1.0));
        i32::try_from(real.as_secs_f64().ceil() as u64)
            .unwrap_or(i32::MAX)
            .max(1)
    }
}

/// Delivers messages of one queue to `consumer` as Lambda's event source
/// mapping does: only records not reported in `batchItemFailures` are
/// deleted; failed ones, and those of an invocation killed at its timeout,
/// come back after the queue's visibility timeout, and after the queue's
/// `maxReceiveCount` receives they move to its dead-letter queue.
async fn poll(sqs: aws_sdk_sqs::Client, source: Source, consumer: Consumer) {
    let arn = format!(
        "arn:aws:sqs:local:000000000000:{}",
        source.queue_url.rsplit('/').next().unwrap_or("")
    );
    loop {
        let received = sqs
            .receive_message()
            .queue_url(&source.queue_url)
            .max_number_of_messages(i32::try_from(source.batch_size.clamp(1, 10)).unwrap_or(10))
            .visibility_timeout(source.visibility_seconds())
            .wait_time_seconds(1)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await;
        let messages = match received {
            Ok(output) => output.messages.unwrap_or_default(),
            Err(error) => {
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&error), "receive failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        if source.fifo {
            deliver_fifo(&sqs, &source, &arn, messages, &consumer).await;
        } else {
            deliver(&sqs, &source, &arn, messages, &consumer).await;
        }
    }
}

/// Standard queue: failed records stay invisible until their visibility
/// timeout ends; SQS's redrive policy moves them to the dead-letter queue.
async fn deliver(
    sqs: &aws_sdk_sqs::Client,
    source: &Source,
    arn: &str,
    messages: Vec<aws_sdk_sqs::types::Message>,
    consumer: &Consumer,
) {
    let failed = if source.deliveries.take(&source.logical_id) {
        // SQS at least once: the same message in two invocations at once.
        tracing::warn!(queue = %source.logical_id, "delivering a message twice (fault)");
        let (first, second) = tokio::join!(
            invoke(consumer, source, arn, &messages),
            invoke(consumer, source, arn, &messages)
        );
        first.union(&second).cloned().collect()
    } else {
        invoke(consumer, source, arn, &messages).await
    };
    for message in &messages {
        let (Some(id), Some(receipt)) = (message.message_id(), message.receipt_handle()) else {
            continue;
        };
        if failed.contains(id) {
            continue;
        }
        if let Err(error) = delete(sqs, &source.queue_url, receipt).await {
            tracing::warn!(%error, message_id = %id, "could not delete a message");
        }
    }
}

/// FIFO queue: Lambda keeps a message group blocked while its failed
/// records wait out their visibility timeout, so they are retried here, in
/// order, after that timeout while still in flight (moto loses a group's
/// order when visibility is changed), and moved to the dead-letter queue
/// after `maxReceiveCount` attempts, as SQS's redrive would.
async fn deliver_fifo(
    sqs: &aws_sdk_sqs::Client,
    source: &Source,
    arn: &str,
    mut pending: Vec<aws_sdk_sqs::types::Message>,
    consumer: &Consumer,
) {
    let max_receives = source.redrive.as_ref().map_or(u32::MAX, |(_, max)| *max);
    loop {
        let failed = invoke(consumer, source, arn, &pending).await;
        let mut retry = Vec::new();
        for mut message in pending {
            let (Some(id), Some(receipt)) = (
                message.message_id().map(str::to_owned),
                message.receipt_handle().map(str::to_owned),
            ) else {
                continue;
            };
            if !failed.contains(&id) {
                if let Err(error) = delete(sqs, &source.queue_url, &receipt).await {
                    tracing::warn!(%error, message_id = %id, "could not delete a message");
                }
                continue;
            }
            let receives = receive_count(&message) + 1;
            if receives > max_receives {
                if let Some((dlq, _)) = &source.redrive {
                    dead_letter(sqs, source, dlq, &message, &receipt).await;
                }
                continue;
            }
            set_receive_count(&mut message, receives);
            retry.push(message);
        }
        if retry.is_empty() {
            return;
        }
        // Keep them in flight while they wait: extend their visibility, then
        // wait the queue's visibility timeout on the runner's clock.
        for message in &retry {
            if let Some(receipt) = message.receipt_handle() {
                let _ = sqs
                    .change_message_visibility()
                    .queue_url(&source.queue_url)
                    .receipt_handle(receipt)
                    .visibility_timeout(source.visibility_seconds().saturating_mul(2))
                    .send()
                    .await;
            }
        }
        let visible_again = source.clock.now() + chrono_span(source.visibility);
        sleep_until(&source.clock, visible_again).await;
        pending = retry;
    }
}

/// Runs the consumer on `messages` until its function's timeout (on the
/// runner's clock); returns the ids it reported failed — every id when it
/// was killed.
async fn invoke(
    consumer: &Consumer,
    source: &Source,
    arn: &str,
    messages: &[aws_sdk_sqs::types::Message],
) -> std::collections::HashSet<String> {
    let shared: SharedClock = source.clock.clone();
    let deadline = Deadline::after(shared, chrono_span(source.timeout));
    let invocation = consumer(sqs_event(messages, arn), deadline.clone());
    let (started, started_real) = (source.clock.now(), std::time::Instant::now());
    let answer = within(&source.clock, source.timeout, invocation).await;
    source.invocations.record(
        &source.function,
        source.clock.now() - started,
        started_real.elapsed(),
        answer.is_none(),
    );
    match answer {
        Some(Ok(response)) => response
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect(),
        Some(Err(error)) => {
            tracing::warn!(queue = %source.logical_id, %error, "the invocation failed; its messages come back after the visibility timeout");
            messages
                .iter()
                .filter_map(|m| m.message_id().map(str::to_owned))
                .collect()
        }
        None => {
            tracing::warn!(
                queue = %source.logical_id,
                timeout_seconds = source.timeout.as_secs(),
                "the invocation was killed at its function's timeout; its messages come back after the visibility timeout"
            );
            messages
                .iter()
                .filter_map(|m| m.message_id().map(str::to_owned))
                .collect()
        }
    }
}

fn receive_count(message: &aws_sdk_sqs::types::Message) -> u32 {
    message
        .attributes()
        .and_then(|a| {
            a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
        })
        .and_then(|c| c.parse().ok())
        .unwrap_or(1)
}

fn set_receive_count(message: &mut aws_sdk_sqs::types::Message, count: u32) {
    let mut attributes = message.attributes().cloned().unwrap_or_default();
    attributes.insert(
        aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount,
        count.to_string(),
    );
    message.attributes = Some(attributes);
}

async fn delete(sqs: &aws_sdk_sqs::Client, queue_url: &str, receipt: &str) -> Result<(), String> {
    sqs.delete_message()
        .queue_url(queue_url)
        .receipt_handle(receipt)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn dead_letter(
    sqs: &aws_sdk_sqs::Client,
    source: &Source,
    dlq: &str,
    message: &aws_sdk_sqs::types::Message,
    receipt: &str,
) {
    let group = message
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId))
        .cloned()
        .unwrap_or_default();
    let sent = sqs
        .send_message()
        .queue_url(dlq)
        .message_body(message.body().unwrap_or_default())
        .message_group_id(group)
        .message_deduplication_id(message.message_id().unwrap_or_default())
        .set_message_attributes(message.message_attributes().cloned())
        .send()
        .await;
    match sent {
        Ok(_) => {
            tracing::warn!(message_id = ?message.message_id(), "message moved to the dead-letter queue after its last receive");
            if let Err(error) = delete(sqs, &source.queue_url, receipt).await {
                tracing::warn!(%error, "could not delete a dead-lettered message");
            }
        }
        Err(error) => {
            tracing::warn!(error = %error, "could not move a message to the dead-letter queue")
        }
    }
}

/// The SQS event Lambda builds from received messages (also the benchmark's,
/// which hands them to the function binaries).
pub fn sqs_event(messages: &[aws_sdk_sqs::types::Message], arn: &str) -> SqsEvent {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let attributes: serde_json::Map<String, Value> = m
                .attributes()
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| (k.as_str().to_owned(), Value::String(v.clone())))
                        .collect()
                })
                .unwrap_or_default();
            let message_attributes: serde_json::Map<String, Value> = m
                .message_attributes()
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                json!({
                                    "stringValue": v.string_value(),
                                    "dataType": v.data_type(),
                                    "stringListValues": [],
                                    "binaryListValues": []
                                }),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body(),
                "attributes": attributes,
                "messageAttributes": message_attributes,
                "md5OfBody": m.md5_of_body(),
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    fn state() -> ServerState {
        ServerState {
            jwt_secret: Arc::new(random_secret()),
            clock: Arc::new(LocalClock::new()),
            scheduled: Arc::new(HashMap::new()),
            schedule_inputs: Arc::new(Vec::new()),
            linked_clocks: Arc::new(Vec::new()),
        }
    }

    async fn clock_status(peer: Option<&str>) -> StatusCode {
        let mut request = Request::builder()
            .uri("/_dev/clock")
            .body(axum::body::Body::empty())
            .unwrap_or_default();
        if let Some(peer) = peer {
            let peer: SocketAddr = peer.parse().unwrap_or_else(|e| panic!("{peer}: {e}"));
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
        }
        match dev_routes(state()).oneshot(request).await {
            Ok(response) => response.status(),
            Err(never) => match never {},
        }
    }

    #[tokio::test]
    async fn the_control_routes_answer_only_this_machine() {
        assert_eq!(clock_status(Some("127.0.0.1:5000")).await, StatusCode::OK);
        assert_eq!(clock_status(Some("[::1]:5000")).await, StatusCode::OK);
        assert_eq!(
            clock_status(Some("192.168.1.20:5000")).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            clock_status(Some("[2001:db8::1]:5000")).await,
            StatusCode::FORBIDDEN
        );
        // A local IPv4 caller on a dual-stack listener.
        assert_eq!(
            clock_status(Some("[::ffff:127.0.0.1]:5000")).await,
            StatusCode::OK
        );
        assert_eq!(
            clock_status(Some("[::ffff:10.0.0.7]:5000")).await,
            StatusCode::FORBIDDEN
        );
        // No peer known: refused, not assumed local.
        assert_eq!(clock_status(None).await, StatusCode::FORBIDDEN);
    }

    #[test]
    fn only_loopback_addresses_unless_told_otherwise() {
        let addr = |text: &str| text.parse::<SocketAddr>().unwrap_or_else(|e| panic!("{e}"));
        assert!(only_loopback(addr("127.0.0.1:3000"), false).is_ok());
        assert!(only_loopback(addr("[::1]:3000"), false).is_ok());
        for public in ["0.0.0.0:3000", "10.1.2.3:3000", "[::]:3000"] {
            let error = only_loopback(addr(public), false)
                .err()
                .unwrap_or_else(|| panic!("{public} was accepted"));
            assert!(error.to_string().contains("--insecure-public"), "{error}");
            assert!(only_loopback(addr(public), true).is_ok());
        }
    }

    #[test]
    fn the_simulator_stays_on_this_machine() {
        let addr = |text: &str| text.parse::<SocketAddr>().unwrap_or_else(|e| panic!("{e}"));
        assert!(simulator_on_loopback(addr("127.0.0.1:3001")).is_ok());
        let error = simulator_on_loopback(addr("0.0.0.0:3001"))
            .err()
            .unwrap_or_else(|| panic!("a public simulator was accepted"));
        assert!(error.to_string().contains("/_sim"), "{error}");
    }

    #[test]
    fn every_run_has_its_own_long_secret() {
        let (a, b) = (random_secret(), random_secret());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(
            RunnerOptions::default().jwt_secret,
            RunnerOptions::default().jwt_secret
        );
    }
}
