//! A function binary run the way Lambda runs it: its own process, talking
//! to a Runtime API (here a tiny local one) for its events.
//!
//! Lambda's cold start ends when the runtime asks for its first event
//! (`GET /2018-06-01/runtime/invocation/next`): that request's arrival is
//! "ready", timed from just before the process is spawned. Peak RSS is the
//! kernel's high-water mark of the process (`VmHWM`), read after it has
//! handled its events and before it is stopped.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{mpsc, oneshot};

/// What the function answered for one event.
#[derive(Debug)]
pub struct Answer {
    /// False when the function reported an error (`…/error`).
    pub ok: bool,
    pub body: Bytes,
}

struct Shared {
    ready: Mutex<Option<oneshot::Sender<Instant>>>,
    events: tokio::sync::Mutex<mpsc::Receiver<(String, Bytes)>>,
    answers: Mutex<HashMap<String, oneshot::Sender<Answer>>>,
    init_error: Mutex<Option<String>>,
    deadline: Duration,
    arn: String,
}

/// A function process and its Runtime API.
pub struct FunctionProcess {
    name: String,
    child: tokio::process::Child,
    spawned: Instant,
    ready: Option<oneshot::Receiver<Instant>>,
    events: mpsc::Sender<(String, Bytes)>,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
    invocations: u64,
}

impl FunctionProcess {
    /// Starts `binary` with only `environment` (plus the Runtime API's
    /// address and the variables Lambda sets): nothing from this process
    /// leaks in, and with credentials and region given the SDK never goes
    /// to the network while starting. Its output goes to `log`.
    pub async fn spawn(
        binary: &Path,
        environment: &HashMap<String, String>,
        timeout: Duration,
        memory_mb: u32,
        log: &Path,
    ) -> Result<Self> {
        let name = binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (events_tx, events_rx) = mpsc::channel(16);
        let shared = Arc::new(Shared {
            ready: Mutex::new(Some(ready_tx)),
            events: tokio::sync::Mutex::new(events_rx),
            answers: Mutex::new(HashMap::new()),
            init_error: Mutex::new(None),
            deadline: timeout,
            arn: format!("arn:aws:lambda:us-east-1:123456789012:function:adesync-bench-{name}"),
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let log = std::fs::File::create(log)
            .with_context(|| format!("cannot write {}", log.display()))?;
        let mut command = tokio::process::Command::new(binary);
        command
            .env_clear()
            .envs(environment)
            .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", format!("adesync-bench-{name}"))
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mb.to_string())
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            // Quiet, as logging costs time; ADESYNC_BENCH_FUNCTION_LOG (a
            // RUST_LOG filter) shows what the functions do, in their logs.
            .env(
                "RUST_LOG",
                std::env::var("ADESYNC_BENCH_FUNCTION_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let spawned = Instant::now();
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        Ok(Self {
            name,
            child,
            spawned,
            ready: Some(ready_rx),
            events: events_tx,
            shared,
            server,
            invocations: 0,
        })
    }

    /// Waits until the function asks for its first event; returns the cold
    /// init (spawn → that request).
    pub async fn ready(&mut self) -> Result<Duration> {
        let ready = self.ready.take().context("ready() was already awaited")?;
        tokio::select! {
            at = ready => Ok(at? - self.spawned),
            status = self.child.wait() => {
                let init = self.shared.init_error.lock().ok().and_then(|e| e.clone());
                bail!("{} exited before asking for an event ({:?}): {}", self.name, status?, init.unwrap_or_default())
            }
            () = tokio::time::sleep(Duration::from_secs(30)) => bail!("{} was not ready within 30 s", self.name),
        }
    }

    /// Hands the function one event and waits for its answer.
    pub async fn invoke(&mut self, event: Bytes) -> Result<Answer> {
        self.invocations += 1;
        let id = format!("bench-{}-{}", self.name, self.invocations);
        let (tx, rx) = oneshot::channel();
        self.shared
            .answers
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .insert(id.clone(), tx);
        self.events
            .send((id, event))
            .await
            .context("the runtime API stopped")?;
        tokio::select! {
            answer = rx => Ok(answer?),
            status = self.child.wait() => bail!("{} exited during an invocation: {:?}", self.name, status?),
            () = tokio::time::sleep(self.shared.deadline + Duration::from_secs(5)) => bail!("{} did not answer within its timeout", self.name),
        }
    }

    /// The process's peak resident set so far, in KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> Result<u64> {
        let pid = self.child.id().context("the process has exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .context("no VmHWM in /proc/<pid>/status")
    }

    /// Stops the process (Lambda freezes and later kills it the same way).
    pub async fn stop(mut self) -> Result<()> {
        self.child.kill().await?;
        self.server.abort();
        Ok(())
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    let now = Instant::now();
    if let Some(ready) = shared.ready.lock().ok().and_then(|mut r| r.take()) {
        let _ = ready.send(now);
    }
    // Like Lambda, the request waits until there is an event.
    let Some((id, event)) = shared.events.lock().await.recv().await else {
        return std::future::pending().await;
    };
    let deadline = chrono::Utc::now().timestamp_millis() + shared.deadline.as_millis() as i64;
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    set("lambda-runtime-aws-request-id", id);
    set("lambda-runtime-deadline-ms", deadline.to_string());
    set("lambda-runtime-invoked-function-arn", shared.arn.clone());
    set(
        "lambda-runtime-trace-id",
        "Root=1-00000000-000000000000000000000000;Sampled=0".into(),
    );
    set("content-type", "application/json".into());
    (StatusCode::OK, headers, event).into_response()
}

fn answer(shared: &Shared, id: &str, ok: bool, body: Bytes) -> StatusCode {
    let waiting = shared.answers.lock().ok().and_then(|mut a| a.remove(id));
    match waiting {
        Some(tx) => {
            let _ = tx.send(Answer { ok, body });
            StatusCode::ACCEPTED
        }
        None => StatusCode::NOT_FOUND,
    }
}

async fn response(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    answer(&shared, &id, true, body)
}

async fn error(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    answer(&shared, &id, false, body)
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    if let Ok(mut e) = shared.init_error.lock() {
        *e = Some(String::from_utf8_lossy(&body).into_owned());
    }
    StatusCode::ACCEPTED
}
