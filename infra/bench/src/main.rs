//! `adesync-bench`: measures adesync on this machine's local AWS.
//!
//! ```text
//! cargo build --release -p adesync-api -p adesync-sync-trigger -p adesync-sync-scheduler \
//!     -p adesync-sync-worker -p adesync-device-importer
//! cargo run --release -p adesync-bench -- all --devices 200000 --runs 3
//! ```
//! runs every measurement of docs/performance.md in one go and prints them
//! side by side with min/median/max over the runs; each also has its own
//! subcommand (`ceiling`, `e2e`, `resync`, `functions`). `apple-pace`
//! (not part of `all`: it lasts as long as Apple needs, divided by the
//! clock's speed) syncs at Apple's real pace. The local AWS is
//! started (or reused, see `AWS_ENDPOINT_URL*`) once; each run gets fresh
//! tables. The importer's CPU path is a criterion bench of its own:
//! `cargo bench -p adesync-service --bench importer`.

use adesync_core::run::RunStatus;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use adesync_local::demo::DemoClient;
use adesync_local::emulators::LocalAws;
use adesync_local::faults::CountDynamoWrites;
use adesync_local::runner::{RunnerOptions, mint_jwt};
use adesync_local::template::Template;
use adesync_local::tools::Workspace;
use adesync_local::{LocalService, ServiceOptions};
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

mod ceiling;
mod fanout;
mod functions;
mod lambda;
mod pace;
mod report;

use report::{Row, Spread};

/// The account every benchmark token belongs to.
pub const BENCH_ACCOUNT: &str = "bench";
/// Apple's delivery rate of devices, per minute, that the targets compare to.
const APPLE_PER_MINUTE: f64 = 3_000.0;

#[derive(Parser)]
#[command(about = "Benchmarks of adesync on this machine's local AWS")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// What the local DynamoDB and SQS do with the simplest client at the
    /// importer's parallelism: the ceiling the pipeline is measured against.
    Ceiling {
        #[arg(long, default_value_t = 20_000)]
        items: usize,
        #[arg(long, default_value_t = 200)]
        messages: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// End-to-end full sync: simulator → worker → SQS → importer → DynamoDB.
    E2e {
        #[arg(long, default_value_t = 200_000)]
        devices: usize,
        /// Repetitions (fresh tables each); min/median/max are reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// A full sync, then 7 days on a full sync of the unchanged fleet,
    /// counting every DynamoDB write request the functions make during it.
    Resync {
        #[arg(long, default_value_t = 200_000)]
        devices: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Cold init and peak RSS of each release function binary, the worker
    /// and importer carrying a full sync of `devices` devices.
    Functions {
        #[arg(long, default_value_t = 200_000)]
        devices: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// A full sync at Apple's real pace (3,000 devices/min, pages of up to
    /// 5,000 advertised) on a sped-up clock, then releases found by the next
    /// full sync: the run's duration on the clock against devices ÷ 3,000,
    /// counts, and the functions' Lambda seconds per 1,000 devices.
    ApplePace {
        #[arg(long, default_value_t = 200_000)]
        devices: usize,
        /// How many times faster than real time the clock runs. Every
        /// function's timeout shrinks with it: at ×10 the importer has 6 real
        /// seconds per batch or part of a close.
        #[arg(long, default_value_t = 10.0)]
        speed: f64,
        /// Devices released in Apple before the second full sync.
        #[arg(long, default_value_t = 2_000)]
        releases: usize,
        #[arg(long, default_value_t = 1)]
        runs: usize,
    },
    /// One scheduler pass over a fleet of tokens seeded straight into the
    /// store (the simulator unpaced, the clock sped up): the first syncs of
    /// the new fleet, then the delta pass 12 hours on. How long until every
    /// token's sync is claimed and queued, against the pacing; invocations
    /// the pages took and the longest against the worker's timeout.
    Fanout {
        #[arg(long, default_value_t = 20_000)]
        tokens: usize,
        /// Tokens of each account (up to 2,000): a scan segment holds whole
        /// accounts, so few large accounts balance the segments worse.
        #[arg(long, default_value_t = 200)]
        tokens_per_account: usize,
        /// Devices of each token's MDM server.
        #[arg(long, default_value_t = 2)]
        devices: usize,
        /// How many times faster than real time the clock runs. A page's
        /// own work is magnified by it: at ×5 a page of 100 claims that
        /// takes 2 s here stands for 10 s of its 20-second share.
        #[arg(long, default_value_t = 5.0)]
        speed: f64,
        /// The pass's pacing (template.yaml's SyncStartsPerSecond).
        #[arg(long, default_value_t = 20)]
        starts_per_second: u32,
        /// Concurrent invocations per standard-queue consumer (the local
        /// stand-in for the sync worker's MaximumConcurrency).
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Also run the syncs the pass starts (and a second, delta pass 12
        /// hours on); by default they are acknowledged unrun, as one
        /// machine cannot sync thousands of tokens at the pass's pace.
        #[arg(long)]
        run_syncs: bool,
    },
    /// All of the above but apple-pace and fanout, side by side.
    All {
        #[arg(long, default_value_t = 200_000)]
        devices: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long, default_value_t = 20_000)]
        items: usize,
        #[arg(long, default_value_t = 200)]
        messages: usize,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let command = Cli::parse().command;
    // The fanout benchmark times the pass's pages from their spans; the
    // functions' own logs are opt-in.
    let pages = fanout::PageSpans::default();
    {
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        let logs = std::env::var_os("RUST_LOG").is_some().then(|| {
            tracing_subscriber::fmt::layer()
                .with_target(false)
                .with_filter(tracing_subscriber::EnvFilter::from_default_env())
        });
        tracing_subscriber::registry()
            .with(pages.clone())
            .with(logs)
            .try_init()
            .ok();
    }
    let workspace = Workspace::locate()?;
    // Checked before anything starts: a debug build's figures say nothing.
    if matches!(command, Command::Functions { .. } | Command::All { .. }) {
        functions::release_dir()?;
    }
    let aws = LocalAws::start(&workspace).await?;
    println!("{}", machine());
    let mut rows = Vec::new();
    let mut loads = vec![load_average()];
    match command {
        Command::Ceiling {
            items,
            messages,
            runs,
        } => {
            ceilings(&aws, &workspace, items, messages, runs, &mut rows).await?;
        }
        Command::E2e { devices, runs } => {
            syncs(&aws, &workspace, devices, runs, false, None, &mut rows).await?;
        }
        Command::Resync { devices, runs } => {
            syncs(&aws, &workspace, devices, runs, true, None, &mut rows).await?;
        }
        Command::Functions { devices, runs } => {
            function_rows(&aws, &workspace, devices, runs, &mut rows).await?;
        }
        Command::ApplePace {
            devices,
            speed,
            releases,
            runs,
        } => {
            let setup = pace::Setup {
                devices,
                speed,
                releases,
            };
            pace::apple_pace(&aws, &workspace, setup, runs, &mut rows).await?;
        }
        Command::Fanout {
            tokens,
            tokens_per_account,
            devices,
            speed,
            starts_per_second,
            concurrency,
            run_syncs,
        } => {
            let setup = fanout::Setup {
                tokens,
                tokens_per_account: tokens_per_account.clamp(1, 2_000),
                devices,
                speed,
                starts_per_second,
                concurrency,
                run_syncs,
            };
            fanout::fanout(&aws, &workspace, setup, pages, &mut rows).await?;
        }
        Command::All {
            devices,
            runs,
            items,
            messages,
        } => {
            let ceiling = ceilings(&aws, &workspace, items, messages, runs, &mut rows).await?;
            loads.push(load_average());
            syncs(
                &aws,
                &workspace,
                devices,
                runs,
                true,
                Some(ceiling),
                &mut rows,
            )
            .await?;
            loads.push(load_average());
            // The figures measured so far are printed even if this phase fails.
            if let Err(error) = function_rows(&aws, &workspace, devices, runs, &mut rows).await {
                print_table(&loads, &rows);
                return Err(error.context("the function binaries' phase failed"));
            }
        }
    }
    loads.push(load_average());
    print_table(&loads, &rows);
    Ok(())
}

fn print_table(loads: &[String], rows: &[Row]) {
    println!();
    println!(
        "load average (1 min) at each phase boundary: {}",
        loads.join(", ")
    );
    print!("{}", report::table(rows));
}

/// The ceilings, `runs` times; returns the pipeline's ceiling in devices
/// per minute (median): the slowest of DynamoDB's batched writes, SQS sends
/// and SQS receives, since every device passes through all three.
async fn ceilings(
    aws: &LocalAws,
    workspace: &Workspace,
    items: usize,
    messages: usize,
    runs: usize,
    rows: &mut Vec<Row>,
) -> Result<f64> {
    let clients = aws.endpoints.clients().await;
    let template = Template::load(&workspace.template_path())?;
    let mut dynamo: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let (mut sends, mut receives) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        for rate in ceiling::dynamodb(&clients, &template, items).await? {
            println!(
                "ceiling run {run}: {:<50} {:>8.0} items/s",
                rate.what, rate.per_second
            );
            dynamo
                .entry(rate.what)
                .or_default()
                .push(rate.per_second * 60.0);
        }
        let (send, receive) = ceiling::sqs(&clients, &template, messages).await?;
        println!("ceiling run {run}: SQS FIFO 240 KiB send {send:.1}/s, receive {receive:.1}/s");
        sends.push(send * ceiling::DEVICES_PER_MESSAGE * 60.0);
        receives.push(receive * ceiling::DEVICES_PER_MESSAGE * 60.0);
    }
    let concurrency = adesync_store::devices::WRITE_CONCURRENCY;
    for (what, per_minute) in &dynamo {
        rows.push(Row::new(
            format!("ceiling: DynamoDB {what}, {concurrency} in flight (devices/min)"),
            Spread::of(per_minute),
        ));
    }
    rows.push(Row::new(
        "ceiling: SQS FIFO send, 240 KiB messages (devices/min)",
        Spread::of(&sends),
    ));
    rows.push(Row::new(
        "ceiling: SQS FIFO receive+delete (devices/min)",
        Spread::of(&receives),
    ));
    let batched = dynamo
        .get(ceiling::BATCH_WRITE)
        .map(|r| Spread::of(r).median)
        .context("no BatchWriteItem ceiling")?;
    Ok(batched
        .min(Spread::of(&sends).median)
        .min(Spread::of(&receives).median))
}

pub fn bench_options(secret: &str, schedules: bool) -> ServiceOptions {
    let mut environment = std::collections::HashMap::new();
    // The same figures without the domain events, to see what they cost
    // (docs/performance.md, "Domain events").
    if std::env::var_os("ADESYNC_BENCH_NO_EVENTS").is_some() {
        environment.insert("ADESYNC_EVENT_BUS_NAME".to_owned(), String::new());
    }
    ServiceOptions {
        stage: format!("b{}", &uuid::Uuid::new_v4().simple().to_string()[..10]),
        runner: RunnerOptions {
            jwt_secret: secret.into(),
            schedules,
            ..RunnerOptions::default()
        },
        environment,
        ..ServiceOptions::default()
    }
}

pub fn bench_jwt(secret: &str) -> Result<String> {
    mint_jwt(
        secret,
        "bench",
        BENCH_ACCOUNT,
        &["admin"],
        Duration::from_secs(3600),
    )
}

/// Full syncs of `devices` devices, `runs` times (fresh tables each), and
/// with `resync` a full sync of the same, unchanged fleet 7 days later.
async fn syncs(
    aws: &LocalAws,
    workspace: &Workspace,
    devices: usize,
    runs: usize,
    resync: bool,
    ceiling: Option<f64>,
    rows: &mut Vec<Row>,
) -> Result<()> {
    println!("full sync of {devices} devices, {runs} run(s)");
    let mut first = Vec::new();
    let mut again = Vec::new();
    let mut per_device = Vec::new();
    let mut device_writes = Vec::new();
    let mut bookkeeping = Vec::new();
    for run in 1..=runs {
        let secret = "bench-secret";
        let writes = CountDynamoWrites::default();
        let service = LocalService::start_counting(
            workspace,
            aws.endpoints.clone(),
            bench_options(secret, false),
            Some(writes.clone()),
        )
        .await?;
        let client = DemoClient::new(
            service.runner.api_url(),
            service.sim.base_url(),
            bench_jwt(secret)?,
        )?;
        let started = Instant::now();
        let (token, _) = client.create_token(devices).await?;
        let record = client.watch_sync(&token, devices as u64).await?;
        let elapsed = started.elapsed();
        check_run(run, devices, &record)?;
        // The run's own span, claim → close: what the pipeline took. The
        // wall time around it adds the simulator generating the MDM server's
        // devices and encrypting its token, which is not adesync's work.
        let seconds = run_seconds(&record)?;
        let per_minute = devices as f64 * 60.0 / seconds;
        println!(
            "run {run}: first full sync of {devices} devices: run {seconds:.1} s = {per_minute:.0} devices/min (fetch {}, last import {} after the fetch; {:.1} s wall time with the simulator's setup)",
            stage(&record, "started_at", "fetch_finished_at"),
            stage(&record, "fetch_finished_at", "finished_at"),
            elapsed.as_secs_f64(),
        );
        first.push(per_minute);

        if resync {
            // 7 days on (Apple's clock too), the full-sync cooldown is over.
            reqwest::Client::new()
                .post(format!("{}/_dev/clock", service.runner.api_url()))
                .json(&serde_json::json!({ "advance_seconds": 7 * 24 * 3600 }))
                .send()
                .await?
                .error_for_status()
                .context("the clock did not move")?;
            writes.start();
            let started = Instant::now();
            client
                .client()
                .start_sync(&token, adesync_cli::model::SyncKind::Full)
                .await?;
            let record = client.watch_sync(&token, devices as u64).await?;
            let elapsed = started.elapsed();
            let counts = writes.stop();
            let seconds = run_seconds(&record)?;
            check_run(run, devices, &record)?;
            if record["kind"] != "full" {
                bail!("run {run}: the re-sync was not a full sync: {record}");
            }
            let devices_table = &service.deployed.tables["DevicesTable"];
            let on_devices = counts.get(devices_table).copied().unwrap_or(0);
            let total: u64 = counts.values().sum();
            let names: BTreeMap<&str, u64> = service
                .deployed
                .tables
                .iter()
                .map(|(id, name)| (id.as_str(), counts.get(name).copied().unwrap_or(0)))
                .collect();
            let per_minute = devices as f64 * 60.0 / seconds;
            println!(
                "run {run}: unchanged re-sync: run {seconds:.1} s = {per_minute:.0} devices/min ({:.1} s wall time); {total} write requests = {:.4}/device (by table: {names:?})",
                elapsed.as_secs_f64(),
                total as f64 / devices as f64
            );
            again.push(per_minute);
            per_device.push(total as f64 / devices as f64);
            device_writes.push(on_devices as f64 / devices as f64);
            bookkeeping.push((total - on_devices) as f64 / devices as f64);
        }
        service.deployed.destroy(&service.clients).await?;
    }
    let e2e = Spread::of(&first);
    rows.push(Row::new(
        format!("e2e: full sync of {devices} devices, run claim → close (devices/min)"),
        e2e.clone(),
    ));
    if let Some(ceiling) = ceiling {
        rows.push(
            Row::new(
                "e2e ÷ pipeline ceiling (median ceiling)",
                e2e.map(|v| v / ceiling),
            )
            .target("≥ 0.80", |median| median >= 0.80),
        );
    }
    rows.push(
        Row::new("e2e ÷ Apple's 3,000/min", e2e.map(|v| v / APPLE_PER_MINUTE))
            .target("≥ 20", |median| median >= 20.0),
    );
    if resync {
        rows.push(Row::new(
            "re-sync of the unchanged fleet (devices/min)",
            Spread::of(&again),
        ));
        rows.push(
            Row::new(
                "re-sync: DynamoDB write requests per device, all",
                Spread::of(&per_device),
            )
            .target("≤ 0.05", |value| value <= 0.05)
            .worst(),
        );
        rows.push(Row::new(
            "re-sync: … of which device items",
            Spread::of(&device_writes),
        ));
        rows.push(Row::new(
            "re-sync: … of which runs, markers, tokens, claims",
            Spread::of(&bookkeeping),
        ));
    }
    Ok(())
}

async fn function_rows(
    aws: &LocalAws,
    workspace: &Workspace,
    devices: usize,
    runs: usize,
    rows: &mut Vec<Row>,
) -> Result<()> {
    println!(
        "function binaries: {runs} cold start(s) each, worker and importer carrying {devices} devices"
    );
    for f in functions::measure(workspace, &aws.endpoints, devices, runs).await? {
        let cold: Vec<f64> = f
            .cold_init
            .iter()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        let rss: Vec<f64> = f.peak_rss_kib.iter().map(|k| *k as f64 / 1024.0).collect();
        if !cold.is_empty() {
            rows.push(
                // Judged on the median: one start slowed by the machine's other
                // work says little about the binary (the max is shown all the same).
                Row::new(format!("{}: cold init (ms)", f.binary), Spread::of(&cold))
                    .target("< 30", |median| median < 30.0),
            );
        }
        rows.push(
            Row::new(
                format!("{}: peak RSS (MiB), {}", f.binary, f.load),
                Spread::of(&rss),
            )
            .target("< 32", |median| median < 32.0)
            .worst(),
        );
        if !f.longest_invocation.is_empty() {
            let longest: Vec<f64> = f
                .longest_invocation
                .iter()
                .map(Duration::as_secs_f64)
                .collect();
            let timeout = f.timeout.as_secs_f64();
            // The binary answering at all already proves it ended inside the
            // timeout (the Runtime API gives up then); this shows the margin.
            rows.push(Row::new(
                format!(
                    "{}: longest invocation (s), {}; timeout {timeout} s",
                    f.binary, f.load
                ),
                Spread::of(&longest),
            ));
        }
    }
    Ok(())
}

fn check_run(run: usize, devices: usize, record: &serde_json::Value) -> Result<()> {
    if record["status"] != RunStatus::Succeeded.as_str()
        || record["imported"].as_u64() != Some(devices as u64)
    {
        bail!("run {run} did not import every device: {record}");
    }
    Ok(())
}

/// A run's `started_at` → `finished_at`, in seconds.
fn run_seconds(record: &serde_json::Value) -> Result<f64> {
    let at = |field: &str| {
        record[field]
            .as_str()
            .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
            .with_context(|| format!("the run has no {field}: {record}"))
    };
    Ok((at("finished_at")? - at("started_at")?).num_milliseconds() as f64 / 1000.0)
}

fn stage(record: &serde_json::Value, from: &str, to: &str) -> String {
    let at = |field: &str| {
        record[field]
            .as_str()
            .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
    };
    match (at(from), at(to)) {
        (Some(a), Some(b)) => format!("{:.1} s", (b - a).num_milliseconds() as f64 / 1000.0),
        _ => "?".into(),
    }
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// The machine the figures come from.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or_else(|| "?".into(), |kb| format!("{} GiB", kb / 1024 / 1024));
    format!(
        "machine: {cpu}, {cores} cores, {memory}, {}",
        chrono::Utc::now().format("%Y-%m-%d")
    )
}
