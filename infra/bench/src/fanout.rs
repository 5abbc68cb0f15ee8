//! `adesync-bench fanout`: one scheduler pass over a large fleet of tokens.
//!
//! Tokens are seeded straight into the store (each with its own simulated
//! MDM server and real, sealed credentials, spread over accounts of 2,000
//! tokens), the simulator answers at once, and the clock runs sped up. Two
//! passes are measured: the first syncs of the new fleet, then, 12 hours on,
//! the delta pass every token gets twice a day. For each: how long on the
//! clock until every token's sync was claimed and queued, the most syncs
//! started in one second of the clock (the pacing Apple sees), how many
//! invocations the pass's pages took and the longest of them against the
//! worker's timeout, and whether every run then succeeded.

use adesync_core::run::RunStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adesync_core::clock::Clock;
use adesync_core::fanout::PassPlan;
use adesync_core::ids::{AccountId, TokenId};
use adesync_local::emulators::LocalAws;
use adesync_local::tools::Workspace;
use adesync_local::{LocalService, ServiceOptions};
use adesync_secrets::Context;
use adesync_store::tokens::{NewToken, SealedSecrets};
use adesync_tokenfile::AccountKey;
use anyhow::{Context as _, Result, bail};
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};
use tracing::span;
use tracing_subscriber::layer::Context as LayerContext;
use tracing_subscriber::registry::LookupSpan;

use crate::report::{Row, Spread};
use crate::{bench_options, load_average};

/// Tokens seeded at once.
const SEED_CONCURRENCY: usize = 32;
/// The worker's timeout in template.yaml (seconds, on the clock).
const WORKER_TIMEOUT: f64 = 90.0;
/// A full page's share of the default pacing (100 starts at 5 a second per
/// segment): a page that takes longer slows its segment below the rate.
const PAGE_SHARE: f64 = 20.0;

/// How the benchmark is set up.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    pub tokens: usize,
    /// Tokens of each account (the product allows up to 2,000).
    pub tokens_per_account: usize,
    /// Devices of each token's MDM server.
    pub devices: usize,
    /// How many times faster than real time the clock runs.
    pub speed: f64,
    /// The pass's pacing (`SyncStartsPerSecond` in template.yaml).
    pub starts_per_second: u32,
    /// Concurrent invocations per standard-queue consumer.
    pub concurrency: usize,
    /// Run the syncs the passes start (a fleet this machine can sync at the
    /// pass's pace) rather than acknowledging them unrun.
    pub run_syncs: bool,
}

/// What one pass measured.
#[derive(Debug, Clone)]
struct Pass {
    name: &'static str,
    /// Fire → the last claim, on the clock.
    claimed_seconds: f64,
    /// Fire → the last run's end, on the clock.
    finished_seconds: f64,
    real_seconds: f64,
    runs: usize,
    /// Runs that succeeded (with `run_syncs`), or sync jobs delivered and
    /// acknowledged unrun.
    done: usize,
    /// Sync jobs delivered in the busiest second of the clock (unrun only):
    /// when Apple would have been called.
    busiest_second: Option<u64>,
    pages: usize,
    longest_page_seconds: f64,
    /// The worker's longest invocation of any kind (pages and sync steps).
    longest_worker_seconds: f64,
    killed: u64,
}

pub async fn fanout(
    aws: &LocalAws,
    workspace: &Workspace,
    setup: Setup,
    pages: PageSpans,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let plan = PassPlan {
        starts_per_second: setup.starts_per_second,
        ..PassPlan::default()
    };
    println!(
        "fanout: {} tokens of {} devices, {} starts/s over {} segments of {}-token pages, clock ×{}, {} pollers per queue",
        setup.tokens,
        setup.devices,
        plan.starts_per_second,
        plan.segments,
        plan.page,
        setup.speed,
        setup.concurrency,
    );
    let mut options: ServiceOptions = bench_options("bench-secret", false);
    options.runner.clock_speed = setup.speed;
    options.runner.concurrency = setup.concurrency;
    options.runner.pass_pages_only = !setup.run_syncs;
    options.sim_devices = setup.devices;
    options.environment.insert(
        adesync_runtime::config::var::SYNC_STARTS_PER_SECOND.into(),
        plan.starts_per_second.to_string(),
    );
    let service = LocalService::start(workspace, aws.endpoints.clone(), options).await?;

    let seeding = Instant::now();
    seed(&service, setup).await?;
    println!(
        "seeded {} tokens in {:.1} s (simulated servers, opened token files, sealed credentials, counted on their accounts)",
        setup.tokens,
        seeding.elapsed().as_secs_f64()
    );

    // Unrun, the first pass's runs hold their leases until they lapse: a
    // second pass would measure recovering them, not a delta pass.
    let names: &[&'static str] = if setup.run_syncs {
        &["first syncs of the new fleet", "delta pass 12 hours on"]
    } else {
        &["delta pass over the fleet"]
    };
    // A parallel scan's segments split the table by partition key (the
    // account), so an account's tokens all fall in one segment; the pass
    // takes as long as its largest segment at its share of the rate.
    let segments = segment_sizes(&service, plan).await?;
    let largest = segments.iter().copied().max().unwrap_or(0);
    let expected = largest as f64 * f64::from(plan.segments) / f64::from(plan.starts_per_second);
    println!(
        "tokens per scan segment: {segments:?}; the largest at its share of the rate: {expected:.0} s"
    );
    let mut passes = Vec::new();
    for &name in names {
        if !passes.is_empty() {
            advance_clock(&service, 12 * 3600).await?;
        }
        let pass = one_pass(&service, setup, name, &pages, expected).await?;
        println!(
            "{name}: every token claimed and queued {:.0} s after the pass began (clock; {:.1} s real), all jobs done at {:.0} s; {} of {} {}; busiest clock second {:?} deliveries; {} page invocations, the longest {:.2} s of the worker's {WORKER_TIMEOUT} s; the worker's longest invocation {:.2} s; {} killed; load {}",
            pass.claimed_seconds,
            pass.real_seconds,
            pass.finished_seconds,
            pass.done,
            pass.runs,
            if setup.run_syncs {
                "runs succeeded"
            } else {
                "sync jobs delivered (not run)"
            },
            pass.busiest_second,
            pass.pages,
            pass.longest_page_seconds,
            pass.longest_worker_seconds,
            pass.killed,
            load_average(),
        );
        if pass.runs != setup.tokens {
            bail!(
                "{name}: {} runs for {} tokens: the pass did not reach every token once",
                pass.runs,
                setup.tokens
            );
        }
        passes.push(pass);
    }
    service.deployed.destroy(&service.clients).await?;

    let tokens = setup.tokens as f64;
    for pass in &passes {
        let one = |v: f64| Spread::of(&[v]);
        let name = pass.name;
        rows.push(Row::new(
            format!("fanout, {name}: clock s until every token is claimed and queued (pacing alone: {expected:.0})"),
            one(pass.claimed_seconds),
        ));
        rows.push(
            Row::new(
                format!("fanout, {name}: that ÷ the pacing's {expected:.0} s"),
                one(pass.claimed_seconds / expected),
            )
            .target("≤ 1.10", |ratio| ratio <= 1.10),
        );
        let done = if setup.run_syncs {
            "every run is over"
        } else {
            "every sync job is delivered"
        };
        rows.push(Row::new(
            format!("fanout, {name}: clock s until {done}"),
            one(pass.finished_seconds),
        ));
        // Each token claimed exactly once, whatever SQS delivered twice.
        rows.push(
            Row::new(
                format!("fanout, {name}: runs claimed ÷ tokens"),
                one(pass.runs as f64 / tokens),
            )
            .target("= 1", |ratio| (ratio - 1.0).abs() < f64::EPSILON),
        );
        if setup.run_syncs {
            rows.push(
                Row::new(
                    format!("fanout, {name}: runs succeeded ÷ tokens"),
                    one(pass.done as f64 / tokens),
                )
                .target("= 1", |ratio| (ratio - 1.0).abs() < f64::EPSILON),
            );
        } else {
            rows.push(Row::new(
                format!("fanout, {name}: sync jobs delivered (SQS's second deliveries included)"),
                one(pass.done as f64),
            ));
        }
        if let Some(busiest) = pass.busiest_second {
            rows.push(Row::new(
                format!(
                    "fanout, {name}: sync jobs delivered in the busiest clock second (pacing {}/s)",
                    plan.starts_per_second
                ),
                one(busiest as f64),
            ));
        }
        rows.push(Row::new(
            format!("fanout, {name}: page invocations"),
            one(pass.pages as f64),
        ));
        rows.push(
            Row::new(
                format!("fanout, {name}: longest page, clock s (worker timeout {WORKER_TIMEOUT})"),
                one(pass.longest_page_seconds),
            )
            .target("< 20 (its share of the pacing)", |s| s < PAGE_SHARE),
        );
    }
    Ok(())
}

/// Seeds `setup.tokens` tokens, each with its own simulated MDM server and
/// its credentials sealed as the API would seal them.
async fn seed(service: &LocalService, setup: Setup) -> Result<()> {
    let now = service.runner.clock().now();
    let key = Arc::new(AccountKey::generate("adesync-bench fanout", now, 365)?);
    let http = reqwest::Client::new();
    let sim = service.sim.base_url();
    let store = service.clients.store(&service.config);
    let vault = service.clients.vault(&service.config);
    let done = std::sync::atomic::AtomicUsize::new(0);
    futures::stream::iter(0..setup.tokens)
        .map(|i| {
            let (key, http, sim, store, vault, done) =
                (key.clone(), &http, &sim, &store, &vault, &done);
            async move {
                let server: Value = http
                    .post(format!("{sim}/_sim/servers"))
                    .json(&json!({
                        "name": format!("Fanout server {i}"),
                        "public_key_pem": key.certificate_pem(),
                        "devices": setup.devices,
                    }))
                    .send()
                    .await?
                    .error_for_status()
                    .context("creating a simulated MDM server")?
                    .json()
                    .await?;
                let file = base64::engine::general_purpose::STANDARD
                    .decode(server["token_file"].as_str().unwrap_or_default())
                    .context("the simulator's token file is not base64")?;
                let credentials = adesync_tokenfile::open(&file, &key, now)?;
                let account =
                    AccountId::parse(&format!("fanout-{}", i / setup.tokens_per_account))?;
                let token = TokenId::new_at(now);
                let sealed = vault
                    .seal(
                        secrecy::ExposeSecret::expose_secret(&credentials.to_json_bytes()),
                        &Context::token_credentials(account.as_str(), token.as_str()),
                    )
                    .await?;
                store
                    .tokens
                    .create_token(
                        &NewToken {
                            account,
                            token,
                            name: format!("Fanout token {i}"),
                            apple_id: "bench@example.com".into(),
                            server_name: format!("Fanout server {i}"),
                            server_uuid: server["server_uuid"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned(),
                            org_name: None,
                            admin_id: None,
                            token_expires_at: credentials.access_token_expiry,
                            created_at: now,
                            scope_tags: Vec::new(),
                        },
                        &SealedSecrets {
                            credentials: Some(sealed.to_bytes()),
                            session: None,
                        },
                    )
                    .await?;
                let seeded = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if seeded % 2_000 == 0 {
                    println!("  seeded {seeded} of {} tokens", setup.tokens);
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(SEED_CONCURRENCY)
        .try_collect::<()>()
        .await
}

async fn one_pass(
    service: &LocalService,
    setup: Setup,
    name: &'static str,
    pages: &PageSpans,
    expected: f64,
) -> Result<Pass> {
    let clock = service.runner.clock();
    let began = clock.now();
    let real = Instant::now();
    pages.reset();
    let before = service.runner.invocations().totals();
    service
        .runner
        .fire("sync-scheduler", json!({ "sweep": "delta" }))
        .await?;
    // Generous: the pacing alone, three times over, plus two real minutes.
    let give_up = Duration::from_secs_f64(3.0 * expected / setup.speed + 120.0);
    let mut last_delivery = None;
    // Unrun, the runner counts deliveries for free; the runs table is
    // scanned only when they are all in (a scan of thousands of runs every
    // few seconds would take DynamoDB Local from the pass it measures).
    let runs = loop {
        let (claimed, done) = if setup.run_syncs {
            let runs = runs_since(service, began).await?;
            let over = runs.iter().filter(|r| r.finished.is_some()).count();
            (runs.len(), over)
        } else {
            let delivered = usize::try_from(service.runner.jobs_not_run().since(began).0)?;
            (delivered, delivered)
        };
        if !setup.run_syncs && done >= setup.tokens && last_delivery.is_none() {
            last_delivery = Some(clock.now());
        }
        println!(
            "  {name}: {claimed} of {} tokens {}, {done} {} ({:.0} s on the clock)",
            setup.tokens,
            if setup.run_syncs {
                "claimed"
            } else {
                "claimed and delivered"
            },
            if setup.run_syncs {
                "runs over"
            } else {
                "sync jobs delivered"
            },
            (clock.now() - began).num_milliseconds() as f64 / 1000.0
        );
        if claimed >= setup.tokens && done >= claimed {
            break runs_since(service, began).await?;
        }
        if real.elapsed() > give_up {
            bail!(
                "{name}: after {:.0} s real, {claimed} of {} tokens claimed and {done} done",
                real.elapsed().as_secs_f64(),
                setup.tokens
            );
        }
        tokio::time::sleep(Duration::from_secs(if setup.run_syncs { 10 } else { 5 })).await;
    };
    let seconds = |at: DateTime<Utc>| (at - began).num_milliseconds() as f64 / 1000.0;
    let claimed_seconds = runs.iter().map(|r| seconds(r.started)).fold(0.0, f64::max);
    let finished_seconds = match last_delivery {
        // Seen at the poll after it happened: within one poll's span.
        Some(at) => seconds(at),
        None => runs
            .iter()
            .filter_map(|r| r.finished.map(seconds))
            .fold(0.0, f64::max),
    };
    let after = service.runner.invocations().totals();
    let worker = after.get("sync-worker").copied().unwrap_or_default();
    let killed = after.values().map(|t| t.killed).sum::<u64>()
        - before.values().map(|t| t.killed).sum::<u64>();
    let (count, longest_real) = pages.taken();
    Ok(Pass {
        name,
        claimed_seconds,
        finished_seconds,
        real_seconds: real.elapsed().as_secs_f64(),
        runs: runs.len(),
        done: if setup.run_syncs {
            runs.iter()
                .filter(|r| r.status == Some(RunStatus::Succeeded))
                .count()
        } else {
            usize::try_from(service.runner.jobs_not_run().since(began).0)?
        },
        // When the sync jobs became deliverable: with them run, Apple's
        // calls follow at once; unrun, the runner saw each delivery.
        busiest_second: if setup.run_syncs {
            None
        } else {
            Some(service.runner.jobs_not_run().since(began).1)
        },
        pages: count,
        // A page's own work is magnified by the clock's speed, as Lambda
        // would bill it at this pace: an upper bound.
        longest_page_seconds: longest_real.as_secs_f64() * clock.speed(),
        longest_worker_seconds: worker.longest_clock_seconds,
        killed,
    })
}

/// A run of the runs table, as far as the benchmark reads it.
struct RunSeen {
    started: DateTime<Utc>,
    finished: Option<DateTime<Utc>>,
    status: Option<RunStatus>,
}

/// Every run started at or after `since` (one scan of the runs table).
async fn runs_since(service: &LocalService, since: DateTime<Utc>) -> Result<Vec<RunSeen>> {
    let table = &service.deployed.tables["RunsTable"];
    let millis = |item: &std::collections::HashMap<String, AttributeValue>, name: &str| {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<i64>().ok())
            .and_then(DateTime::from_timestamp_millis)
    };
    let items: Vec<_> = service
        .clients
        .dynamodb
        .scan()
        .table_name(table)
        .filter_expression("started_at >= :since")
        .expression_attribute_values(
            ":since",
            AttributeValue::N(since.timestamp_millis().to_string()),
        )
        .projection_expression("started_at, finished_at, #status")
        .expression_attribute_names("#status", "status")
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .context("scanning the runs table")?;
    Ok(items
        .iter()
        .filter_map(|item| {
            Some(RunSeen {
                started: millis(item, "started_at")?,
                finished: millis(item, "finished_at"),
                status: item
                    .get("status")
                    .and_then(|v| v.as_s().ok())
                    .and_then(|s| RunStatus::parse(s)),
            })
        })
        .collect())
}

/// How many tokens each scan segment of `plan` holds.
async fn segment_sizes(service: &LocalService, plan: PassPlan) -> Result<Vec<usize>> {
    let store = service.clients.store(&service.config);
    let mut sizes = Vec::new();
    for segment in 0..plan.segments {
        let (mut size, mut after) = (0, None);
        loop {
            let scan = store
                .claims
                .scan_tokens(segment, plan.segments, after.as_ref(), 1_000)
                .await?;
            size += scan.tokens.len();
            match scan.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        sizes.push(size);
    }
    Ok(sizes)
}

async fn advance_clock(service: &LocalService, seconds: u64) -> Result<()> {
    reqwest::Client::new()
        .post(format!("{}/_dev/clock", service.runner.api_url()))
        .json(&json!({ "advance_seconds": seconds }))
        .send()
        .await?
        .error_for_status()
        .context("the clock did not move")?;
    Ok(())
}

/// Times every page of a pass (the service's `sweep_page` span) as it ends.
#[derive(Clone, Default)]
pub struct PageSpans {
    seen: Arc<Mutex<(usize, Duration)>>,
}

impl PageSpans {
    fn reset(&self) {
        if let Ok(mut seen) = self.seen.lock() {
            *seen = (0, Duration::ZERO);
        }
    }

    /// Pages ended since the last reset, and the longest of them (real time).
    fn taken(&self) -> (usize, Duration) {
        self.seen.lock().map(|s| *s).unwrap_or_default()
    }
}

/// When a page's span began.
struct Began(Instant);

impl<S> tracing_subscriber::Layer<S> for PageSpans
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: LayerContext<'_, S>) {
        if attrs.metadata().name() == "sweep_page"
            && let Some(span) = ctx.span(id)
        {
            span.extensions_mut().insert(Began(Instant::now()));
        }
    }

    fn on_close(&self, id: span::Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(took) = span.extensions().get::<Began>().map(|b| b.0.elapsed()) else {
            return;
        };
        if let Ok(mut seen) = self.seen.lock() {
            seen.0 += 1;
            seen.1 = seen.1.max(took);
        }
    }
}
