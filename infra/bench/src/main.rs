//! `adesync-bench`: measures adesync on this machine's local AWS.
//!
//! ```text
//! cargo run --release -p adesync-bench -- e2e --devices 200000 --runs 3
//! ```
//! starts (or reuses, see `AWS_ENDPOINT_URL*`) the local AWS, the Apple
//! simulator unpaced and every function, creates a token for a simulated
//! MDM server with that many devices through the real API, and times its
//! first full sync from the moment the token is created (which queues the
//! sync) to the moment the importer closes the run. Each run uses fresh
//! tables. Figures: devices per minute, and the ratio to Apple's ~3,000.

use std::time::{Duration, Instant};

use adesync_local::demo::DemoClient;
use adesync_local::emulators::LocalAws;
use adesync_local::runner::{RunnerOptions, mint_jwt};
use adesync_local::template::Template;
use adesync_local::tools::Workspace;
use adesync_local::{LocalService, ServiceOptions};
use anyhow::{Result, bail};
use clap::{Parser, Subcommand};

mod ceiling;

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
    },
    /// End-to-end full sync: simulator → worker → SQS → importer → DynamoDB.
    E2e {
        #[arg(long, default_value_t = 200_000)]
        devices: usize,
        /// Repetitions (fresh tables each); min/median/max are reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::E2e { devices, runs } => e2e(devices, runs).await,
        Command::Ceiling { items, messages } => ceiling(items, messages).await,
    }
}

async fn ceiling(items: usize, messages: usize) -> Result<()> {
    let workspace = Workspace::locate()?;
    let aws = LocalAws::start(&workspace).await?;
    let clients = aws.endpoints.clients().await;
    let template = Template::load(&workspace.template_path())?;
    println!("{}", machine());
    println!(
        "DynamoDB ({items} device items each way, {} calls in flight):",
        adesync_store::devices::WRITE_CONCURRENCY
    );
    for rate in ceiling::dynamodb(&clients, &template, items).await? {
        println!(
            "  {:<52} {:>8.0} items/s = {:>9.0} devices/min",
            rate.what,
            rate.per_second,
            rate.per_second * 60.0
        );
    }
    let (send, receive) = ceiling::sqs(&clients, &template, messages).await?;
    println!("SQS FIFO, 240 KiB messages (~700 devices each), one group:");
    println!(
        "  send    {send:>8.1} messages/s = {:>9.0} devices/min",
        send * 700.0 * 60.0
    );
    println!(
        "  receive {receive:>8.1} messages/s = {:>9.0} devices/min",
        receive * 700.0 * 60.0
    );
    Ok(())
}

async fn e2e(devices: usize, runs: usize) -> Result<()> {
    let workspace = Workspace::locate()?;
    let aws = LocalAws::start(&workspace).await?;
    println!("{}", machine());
    println!("end-to-end full sync of {devices} devices, {runs} run(s)");
    let mut rates = Vec::new();
    for run in 1..=runs {
        let secret = "bench-secret";
        let service = LocalService::start(
            &workspace,
            aws.endpoints.clone(),
            ServiceOptions {
                stage: format!("b{}", &uuid::Uuid::new_v4().simple().to_string()[..10]),
                runner: RunnerOptions {
                    jwt_secret: secret.into(),
                    schedules: false,
                    ..RunnerOptions::default()
                },
                ..ServiceOptions::default()
            },
        )
        .await?;
        let jwt = mint_jwt(
            secret,
            "bench",
            "bench",
            &["admin"],
            Duration::from_secs(3600),
        )?;
        let client = DemoClient::new(service.runner.api_url(), service.sim.base_url(), jwt)?;
        let started = Instant::now();
        let (token, _) = client.create_token(devices).await?;
        let record = client.watch_sync(&token, devices as u64).await?;
        let elapsed = started.elapsed();
        if record["status"] != "succeeded" || record["imported"].as_u64() != Some(devices as u64) {
            bail!("run {run} did not import every device: {record}");
        }
        let per_minute = devices as f64 * 60.0 / elapsed.as_secs_f64();
        let at = |field: &str| {
            record[field]
                .as_str()
                .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
        };
        let stage = |from: &str, to: &str| match (at(from), at(to)) {
            (Some(a), Some(b)) => format!("{:.1} s", (b - a).num_milliseconds() as f64 / 1000.0),
            _ => "?".into(),
        };
        println!(
            "run {run}: {devices} devices in {:.1} s = {per_minute:.0} devices/min ({:.1}× Apple's 3,000/min); fetch {}, last import {} after the fetch",
            elapsed.as_secs_f64(),
            per_minute / 3_000.0,
            stage("started_at", "fetch_finished_at"),
            stage("fetch_finished_at", "finished_at"),
        );
        rates.push(per_minute);
        service.deployed.destroy(&service.clients).await?;
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    println!(
        "devices/min: min {:.0}, median {median:.0}, max {:.0} ({:.1}× Apple's 3,000/min at the median)",
        rates[0],
        rates[rates.len() - 1],
        median / 3_000.0
    );
    Ok(())
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
