//! `adesync-bench apple-pace`: a full sync of a large token at Apple's real
//! pace (3,000 devices a minute, pages of up to 5,000 advertised), on a clock
//! sped up so that 67 minutes of Apple pass in a few real ones; then devices
//! released in Apple Business and the next full sync, which must find them.
//!
//! What it reports, per run: the run's duration on the service's clock
//! (the target: within 10 % of devices ÷ 3,000 minutes), the real duration,
//! the devices listed and counted, the releases found, and how long each
//! function ran per 1,000 devices (Lambda seconds, on the clock: Apple's
//! waits are counted as Lambda bills them; the functions' own compute is
//! magnified by the clock's speed, so the figure is an upper bound).

use adesync_core::run::RunStatus;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use adesync_cli::model::{DeviceFilter, SyncKind};
use adesync_local::demo::DemoClient;
use adesync_local::emulators::LocalAws;
use adesync_local::runner::InvocationTotals;
use adesync_local::tools::Workspace;
use adesync_local::{LocalService, ServiceOptions};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::report::{Row, Spread};
use crate::{APPLE_PER_MINUTE, bench_jwt, bench_options};

/// How one run of the benchmark is set up.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    pub devices: usize,
    /// How many times faster than real time the clock runs.
    pub speed: f64,
    /// Devices released in Apple between the two full syncs.
    pub releases: usize,
}

/// What one run measured.
#[derive(Debug, Clone)]
struct Measured {
    clock_minutes: f64,
    real_seconds: f64,
    listed: u64,
    counted: u64,
    pages: u64,
    releases_found: u64,
    /// Lambda seconds per 1,000 devices, by function, over the first sync.
    per_thousand: BTreeMap<String, f64>,
    killed: u64,
}

pub async fn apple_pace(
    aws: &LocalAws,
    workspace: &Workspace,
    setup: Setup,
    runs: usize,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let apple_minutes = setup.devices as f64 / APPLE_PER_MINUTE;
    println!(
        "apple pace: {} devices at 3,000/min ({apple_minutes:.1} min of Apple), clock ×{}, {} run(s)",
        setup.devices, setup.speed, runs
    );
    let mut measured = Vec::new();
    for run in 1..=runs {
        let m = one_run(aws, workspace, setup, run).await?;
        println!(
            "run {run}: {:.1} min on the clock ({:.1} s real), {} pages, {} listed, {} counted, {} of {} releases found, Lambda s per 1,000 devices {:?}{}",
            m.clock_minutes,
            m.real_seconds,
            m.pages,
            m.listed,
            m.counted,
            m.releases_found,
            setup.releases,
            m.per_thousand,
            if m.killed > 0 {
                format!(", {} invocations killed at their timeout", m.killed)
            } else {
                String::new()
            }
        );
        measured.push(m);
    }
    let spread =
        |f: &dyn Fn(&Measured) -> f64| Spread::of(&measured.iter().map(f).collect::<Vec<_>>());
    let devices = setup.devices;
    rows.push(Row::new(
        format!(
            "apple pace: full sync of {devices} devices, minutes on the clock (Apple alone: {apple_minutes:.1})"
        ),
        spread(&|m| m.clock_minutes),
    ));
    rows.push(
        Row::new(
            "apple pace: clock minutes ÷ (devices ÷ 3,000/min)",
            spread(&|m| m.clock_minutes / apple_minutes),
        )
        .target("≤ 1.10", |ratio| ratio <= 1.10)
        .worst(),
    );
    rows.push(Row::new(
        format!("apple pace: real seconds at clock ×{}", setup.speed),
        spread(&|m| m.real_seconds),
    ));
    rows.push(
        Row::new(
            "apple pace: devices listed and counted ÷ devices",
            spread(&|m| m.listed.min(m.counted) as f64 / devices as f64),
        )
        .target("= 1", |ratio| (ratio - 1.0).abs() < f64::EPSILON),
    );
    rows.push(
        Row::new(
            format!(
                "apple pace: releases found by the next full sync ÷ {}",
                setup.releases
            ),
            spread(&|m| m.releases_found as f64 / setup.releases.max(1) as f64),
        )
        .target("= 1", |ratio| (ratio - 1.0).abs() < f64::EPSILON),
    );
    let functions: Vec<String> = measured
        .first()
        .map(|m| m.per_thousand.keys().cloned().collect())
        .unwrap_or_default();
    for function in functions {
        rows.push(Row::new(
            format!("apple pace: {function} Lambda seconds per 1,000 devices (clock)"),
            spread(&|m| m.per_thousand.get(&function).copied().unwrap_or(0.0)),
        ));
    }
    Ok(())
}

async fn one_run(
    aws: &LocalAws,
    workspace: &Workspace,
    setup: Setup,
    run: usize,
) -> Result<Measured> {
    let secret = "bench-secret";
    let mut options: ServiceOptions = bench_options(secret, false);
    options.runner.clock_speed = setup.speed;
    let service = LocalService::start(workspace, aws.endpoints.clone(), options).await?;
    let sim = service.sim.base_url();
    let http = reqwest::Client::new();
    post(
        &http,
        &format!("{sim}/_sim/rate"),
        json!({"devices_per_minute": adesync_core::sync::APPLE_DEVICES_PER_MINUTE}),
    )
    .await?;
    let client = DemoClient::new(service.runner.api_url(), sim.clone(), bench_jwt(secret)?)?;

    let real = Instant::now();
    let (token, server) = client.create_token(setup.devices).await?;
    let record = client.watch_sync(&token, setup.devices as u64).await?;
    let real_seconds = real.elapsed().as_secs_f64();
    if record["status"] != RunStatus::Succeeded.as_str()
        || record["imported"].as_u64() != Some(setup.devices as u64)
    {
        bail!("run {run}: the first full sync did not import every device: {record}");
    }
    let clock_minutes = crate::run_seconds(&record)? / 60.0;
    let totals = service.runner.invocations().totals();
    let per_thousand = per_thousand(&totals, setup.devices);
    let killed = totals.values().map(|t| t.killed).sum();
    let listed = client
        .client()
        .all_devices(&token, &DeviceFilter::default())
        .await?;
    let counted = client.client().sync_status(&token).await?.device_count;

    // Apple releases some devices (no event, as Apple does); the next full
    // sync, 7 days on, must find every one.
    let serials: Vec<String> = listed
        .iter()
        .step_by((setup.devices / setup.releases.max(1)).max(1))
        .take(setup.releases)
        .map(|d| d.serial_number.clone())
        .collect();
    let listed = listed.len() as u64;
    for serial in &serials {
        post(
            &http,
            &format!("{sim}/_sim/servers/{server}/devices/{serial}/release"),
            json!({}),
        )
        .await?;
    }
    post(
        &http,
        &format!("{}/_dev/clock", service.runner.api_url()),
        json!({"advance_seconds": 7 * 24 * 3600}),
    )
    .await?;
    client.client().start_sync(&token, SyncKind::Full).await?;
    let again = client.watch_sync(&token, setup.devices as u64).await?;
    if again["status"] != RunStatus::Succeeded.as_str() || again["kind"] != "full" {
        bail!("run {run}: the second full sync did not succeed: {again}");
    }
    let removed = DeviceFilter {
        state: Some("removed_from_apple".into()),
        ..DeviceFilter::default()
    };
    let found: Vec<String> = client
        .client()
        .all_devices(&token, &removed)
        .await?
        .into_iter()
        .map(|d| d.serial_number)
        .collect();
    let releases_found = serials.iter().filter(|s| found.contains(s)).count() as u64;
    service.deployed.destroy(&service.clients).await?;
    Ok(Measured {
        clock_minutes,
        real_seconds,
        listed,
        counted,
        pages: record["pages"].as_u64().unwrap_or(0),
        releases_found,
        per_thousand,
        killed,
    })
}

fn per_thousand(
    totals: &std::collections::HashMap<String, InvocationTotals>,
    devices: usize,
) -> BTreeMap<String, f64> {
    totals
        .iter()
        .map(|(function, t)| {
            let per = t.clock_seconds * 1000.0 / devices.max(1) as f64;
            (function.clone(), (per * 100.0).round() / 100.0)
        })
        .collect()
}

async fn post(http: &reqwest::Client, url: &str, body: Value) -> Result<()> {
    http.post(url)
        .json(&body)
        .timeout(Duration::from_secs(60))
        .send()
        .await?
        .error_for_status()
        .with_context(|| format!("POST {url}"))?;
    Ok(())
}
