//! Cold init and peak RSS of each release function binary.
//!
//! Every binary runs as Lambda runs it (see [`crate::lambda`]) against the
//! local AWS and the Apple simulator:
//! - the sync worker and the device importer carry two real full syncs of
//!   `devices` devices, a new token's first and then an unchanged re-sync
//!   (whose close sweeps): the worker fetches them from the simulator and
//!   queues the device batches (the largest an SQS message holds), and the
//!   importer gets them as Lambda would, as many per event as the
//!   template's `BatchSize` says (1);
//! - the API, the sync trigger and the scheduler handle their sample events
//!   (`events/<function>/`), which read the tables.
//!
//! Cold init is timed in fresh processes handed a sample event, one per
//! round; peak RSS is the largest `VmHWM` a process reached.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use adesync_core::ids::{AccountId, TokenId};
use adesync_core::sync::{SyncKind, SyncRequest, Trigger};
use adesync_local::LocalService;
use adesync_local::demo::DemoClient;
use adesync_local::emulators::Endpoints;
use adesync_local::template::Deployed;
use adesync_local::tools::Workspace;
use anyhow::{Context, Result, bail, ensure};
use aws_sdk_sqs::types::MessageSystemAttributeName;
use axum::body::Bytes;

use crate::lambda::FunctionProcess;

/// The function binaries, as functions/*/Cargo.toml names them.
pub const BINARIES: [&str; 5] = [
    "api",
    "sync-trigger",
    "sync-scheduler",
    "sync-worker",
    "device-importer",
];

/// The sample event each binary's cold start is timed with.
fn sample_event(binary: &str) -> &'static str {
    match binary {
        "api" => "tokens-list.json",
        "sync-trigger" => "sync-delta.json",
        // Not a sweep: that would start syncs of the benchmark's tokens.
        "sync-scheduler" => "assignment-retries.json",
        "sync-worker" => "sync-job.json",
        _ => "device-batches-with-poison.json",
    }
}

/// One binary's figures over all rounds.
#[derive(Debug, Default, Clone)]
pub struct FunctionFigures {
    pub binary: String,
    /// Spawn → first `GET …/invocation/next`, per round.
    pub cold_init: Vec<Duration>,
    /// Peak RSS per round, KiB.
    pub peak_rss_kib: Vec<u64>,
    /// What the peak RSS was measured on.
    pub load: String,
    /// The longest single invocation per round, for the functions that
    /// carry the full sync (each must end inside the function's timeout).
    pub longest_invocation: Vec<Duration>,
    /// The function's timeout in template.yaml.
    pub timeout: Duration,
}

/// Where the release binaries are: next to this (release) benchmark.
pub fn release_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("the benchmark has no directory")?;
    for binary in BINARIES {
        let path = dir.join(binary);
        if !path.exists() {
            bail!(
                "{} is missing: build the functions first with `cargo build --release -p adesync-api -p adesync-sync-trigger -p adesync-sync-scheduler -p adesync-sync-worker -p adesync-device-importer`",
                path.display()
            );
        }
    }
    if !dir.ends_with("release") {
        bail!(
            "run the benchmark from a release build (`cargo run --release -p adesync-bench`): cold init of debug binaries says nothing"
        );
    }
    Ok(dir.to_owned())
}

pub async fn measure(
    workspace: &Workspace,
    endpoints: &Endpoints,
    devices: usize,
    runs: usize,
) -> Result<Vec<FunctionFigures>> {
    let binaries = release_dir()?;
    let secret = "bench-secret";
    // The service in this process only creates the tokens (through the real
    // API, which runs each token's first, empty sync); then it stops, so
    // that every later event is handled by the binaries alone.
    let service = LocalService::start(
        workspace,
        endpoints.clone(),
        crate::bench_options(secret, false),
    )
    .await?;
    let client = DemoClient::new(
        service.runner.api_url(),
        service.sim.base_url(),
        crate::bench_jwt(secret)?,
    )?;
    let mut tokens = Vec::new();
    for _ in 0..runs {
        let (token, server) = client
            .create_token(0)
            .await
            .context("creating a token through the API")?;
        client
            .watch_sync(&token, 0)
            .await
            .context("following the token's first sync")?;
        tokens.push((token, server));
    }
    let LocalService {
        runner,
        sim,
        deployed,
        clients,
        config,
        ..
    } = service;
    runner.shutdown();
    // The runner's pollers may have left a long poll (1 s) open in moto: a
    // job queued before it ends would go to a poller that is gone and stay
    // invisible for the queue's visibility timeout.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut environment = deployed.environment(&HashMap::from([(
        "AppleBaseUrl".to_owned(),
        sim.base_url(),
    )]))?;
    environment.extend(
        endpoints
            .env_vars()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v)),
    );
    let store = clients.store(&config);
    let queues = clients.queues(&config);
    let logs = std::env::temp_dir();
    let mut figures: HashMap<&str, FunctionFigures> = BINARIES
        .iter()
        .map(|b| {
            (
                *b,
                FunctionFigures {
                    binary: (*b).to_owned(),
                    load: format!("sample event events/{b}/{}", sample_event(b)),
                    timeout: deployed
                        .template
                        .function(b)
                        .map_or(Duration::from_secs(30), |f| f.timeout),
                    ..FunctionFigures::default()
                },
            )
        })
        .collect();
    let spawn = |binary: &str| {
        let function = deployed.template.function(binary);
        let timeout = function.map_or(Duration::from_secs(30), |f| f.timeout);
        let memory = if binary == "sync-worker" { 512 } else { 256 };
        let log = logs.join(format!("adesync-bench-{binary}.log"));
        let path = binaries.join(binary);
        let environment = environment.clone();
        async move { FunctionProcess::spawn(&path, &environment, timeout, memory, &log).await }
    };

    // Two full syncs per token, carried by the worker and importer binaries:
    // the first (a new token's: its close only counts), then the same,
    // unchanged fleet again (its close sweeps: the snapshot's serials are
    // read part by part).
    let mut resync: HashMap<&str, FunctionFigures> = ["sync-worker", "device-importer"]
        .into_iter()
        .map(|b| {
            (
                b,
                FunctionFigures {
                    binary: b.to_owned(),
                    load: format!("an unchanged re-sync of {devices} devices (its close sweeps)"),
                    timeout: figures[b].timeout,
                    ..FunctionFigures::default()
                },
            )
        })
        .collect();
    for (round, (token, server)) in tokens.iter().enumerate() {
        let added = reqwest::Client::new()
            .post(format!("{}/_sim/servers/{server}/devices", sim.base_url()))
            .json(&serde_json::json!({ "count": devices }))
            .send()
            .await
            .context("adding devices in the simulator")?;
        ensure!(
            added.status().is_success(),
            "the simulator did not add devices"
        );
        let token = TokenId::parse(token)?;
        let account = AccountId::parse(crate::BENCH_ACCOUNT)?;
        // The token's first full sync ran moments ago; each claim is made
        // as of days on, past the 7-day full-sync cooldown.
        for (days, figures) in [(8, &mut figures), (17, &mut resync)] {
            let started = adesync_service::start::start_sync(
                &store,
                &queues,
                &account,
                &token,
                SyncRequest {
                    trigger: Trigger::Manual,
                    kind: SyncKind::Full,
                },
                chrono::Utc::now() + chrono::Duration::days(days),
            )
            .await
            .map_err(|e| anyhow::anyhow!("could not start the full sync: {e}"))?;
            let run = started.claim.run_id;
            let (store_ref, token_ref, run_ref) = (&store, &token, &run);
            for (binary, queue) in [
                ("sync-worker", "SyncJobsQueue"),
                ("device-importer", "DeviceBatchesQueue"),
            ] {
                let mut process = spawn(binary).await?;
                process.ready().await?;
                let fetching = binary == "sync-worker";
                let longest = drain(
                    &clients,
                    &deployed,
                    queue,
                    &mut process,
                    move || async move {
                        Ok(store_ref
                            .runs
                            .get_run(token_ref, run_ref)
                            .await?
                            .is_some_and(|r| {
                                r.is_over() || (fetching && r.fetch_finished_at.is_some())
                            }))
                    },
                )
                .await?;
                let f = figures.get_mut(binary).context("binary")?;
                f.peak_rss_kib.push(process.peak_rss_kib()?);
                f.longest_invocation.push(longest);
                process.stop().await?;
            }
            let record = store
                .runs
                .get_run(&token, &run)
                .await?
                .context("the run vanished")?;
            ensure!(
                record.status == adesync_core::run::RunStatus::Succeeded
                    && record.imported == devices as u64,
                "round {}: the binaries' full sync ended {} with {} of {devices} devices imported",
                round + 1,
                record.status,
                record.imported
            );
        }
    }
    for binary in ["sync-worker", "device-importer"] {
        if let Some(f) = figures.get_mut(binary) {
            f.load = format!("a new token's first full sync of {devices} devices");
        }
    }

    // Cold init, in fresh processes; the light functions' RSS with it.
    for _ in 0..runs {
        for binary in BINARIES {
            let event = std::fs::read(
                workspace
                    .root()
                    .join("events")
                    .join(binary)
                    .join(sample_event(binary)),
            )?;
            let mut process = spawn(binary).await?;
            let cold = process.ready().await?;
            process.invoke(Bytes::from(event)).await?;
            let rss = process.peak_rss_kib()?;
            process.stop().await?;
            let f = figures.get_mut(binary).context("binary")?;
            f.cold_init.push(cold);
            if !matches!(binary, "sync-worker" | "device-importer") {
                f.peak_rss_kib.push(rss);
            }
        }
    }
    deployed.destroy(&clients).await?;
    let mut all: Vec<FunctionFigures> = BINARIES.iter().filter_map(|b| figures.remove(b)).collect();
    all.extend(
        ["sync-worker", "device-importer"]
            .iter()
            .filter_map(|b| resync.remove(b)),
    );
    Ok(all)
}

/// Feeds a queue's messages to `function` as Lambda's event source mapping
/// does (the template's batch size, failed records left for a retry) until
/// the queue is empty and `done` says the work is over; returns the
/// longest invocation.
async fn drain<F, Fut>(
    clients: &adesync_runtime::aws::Clients,
    deployed: &Deployed,
    queue: &str,
    function: &mut FunctionProcess,
    done: F,
) -> Result<Duration>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let url = deployed.queue_url(queue)?.to_owned();
    let batch = deployed
        .template
        .functions
        .iter()
        .flat_map(|f| f.queue_events.iter())
        .find(|(q, _)| q == queue)
        .map_or(1, |(_, size)| *size);
    let arn = format!("arn:aws:sqs:us-east-1:123456789012:{queue}");
    let give_up = std::time::Instant::now() + Duration::from_secs(1800);
    let mut longest = Duration::ZERO;
    loop {
        ensure!(
            std::time::Instant::now() < give_up,
            "{queue} did not drain in 30 minutes"
        );
        let received = clients
            .sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(i32::try_from(batch)?)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await?;
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            if done().await? {
                return Ok(longest);
            }
            continue;
        }
        eprintln!("  {queue}: {} message(s) to the function", messages.len());
        let event = adesync_local::runner::sqs_event(&messages, &arn);
        let started = std::time::Instant::now();
        let answer = function
            .invoke(Bytes::from(serde_json::to_vec(&event)?))
            .await?;
        longest = longest.max(started.elapsed());
        ensure!(
            answer.ok,
            "the function failed: {}",
            String::from_utf8_lossy(&answer.body)
        );
        let failed: Vec<String> = serde_json::from_slice::<serde_json::Value>(&answer.body)
            .ok()
            .and_then(|v| v["batchItemFailures"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_owned))
            .collect();
        for message in &messages {
            if failed
                .iter()
                .any(|f| Some(f.as_str()) == message.message_id())
            {
                // Retried soon, as the local runner does, rather than after
                // the queue's visibility timeout of minutes.
                clients
                    .sqs
                    .change_message_visibility()
                    .queue_url(&url)
                    .receipt_handle(message.receipt_handle().unwrap_or_default())
                    .visibility_timeout(1)
                    .send()
                    .await?;
                continue;
            }
            clients
                .sqs
                .delete_message()
                .queue_url(&url)
                .receipt_handle(message.receipt_handle().unwrap_or_default())
                .send()
                .await?;
        }
    }
}
