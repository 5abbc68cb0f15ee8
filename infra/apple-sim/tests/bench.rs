//! Fetch throughput of 200,000 devices on one server. Ignored by default; run with
//! `cargo test --release -p apple-sim --test bench -- --ignored --nocapture`.

mod common;

use std::time::Instant;

use anyhow::{Context, Result, bail};
use common::Sim;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::json;

const DEVICES: usize = 200_000;

/// Only what paging needs; device records are skipped without building values.
#[derive(Deserialize)]
struct Page {
    devices: Vec<IgnoredAny>,
    cursor: String,
    more_to_follow: bool,
}

async fn fetch_all(sim: &Sim, session: &str, limit: u64) -> Result<usize> {
    let mut cursor: Option<String> = None;
    let mut total = 0;
    loop {
        let mut body = json!({ "limit": limit });
        if let Some(cursor) = &cursor {
            body["cursor"] = json!(cursor);
        }
        let reply = sim
            .apple(Method::POST, "/server/devices", session, Some(body))
            .await?;
        if reply.status != StatusCode::OK {
            bail!("fetch answered {}: {}", reply.status, reply.body);
        }
        let page: Page = serde_json::from_str(&reply.body).context("page")?;
        total += page.devices.len();
        cursor = Some(page.cursor);
        if !page.more_to_follow {
            return Ok(total);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --release -- --ignored"]
async fn fetch_200k_devices() -> Result<()> {
    let sim = Sim::start().await?;
    let started = Instant::now();
    let server = sim.create_server("bench", DEVICES).await?;
    println!("created {DEVICES} devices in {:?}", started.elapsed());
    let session = sim.session(&server).await?;
    for limit in [1000, 5000] {
        let started = Instant::now();
        let fetched = fetch_all(&sim, &session, limit).await?;
        let elapsed = started.elapsed();
        let rate = fetched as f64 / elapsed.as_secs_f64();
        println!("limit {limit}: {fetched} devices in {elapsed:?} = {rate:.0} devices/s");
        assert_eq!(fetched, DEVICES);
        if cfg!(not(debug_assertions)) {
            assert!(rate > 100_000.0, "{rate:.0} devices/s");
        }
    }
    Ok(())
}
