//! `apple-sim`: serves the Apple device assignment simulator until Ctrl-C.

use std::net::SocketAddr;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Serve an in-memory simulator of Apple's device assignment (ADE/DEP) web service.
#[derive(Debug, Parser)]
#[command(name = "apple-sim", version)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "ADESYNC_SIM_ADDR", default_value = "127.0.0.1:3001")]
    addr: SocketAddr,
    /// Devices each new MDM server gets unless `POST /_sim/servers` says otherwise.
    #[arg(long, default_value_t = 0)]
    devices: usize,
    /// Seed for generated devices (same seed and calls, same serials).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// How many times faster than real time the simulator clock runs (1 to 10,000).
    #[arg(long, default_value_t = 1.0)]
    clock_speed: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let sim = apple_sim::spawn(apple_sim::SimConfig {
        addr: args.addr,
        seed: args.seed,
        default_device_count: args.devices,
        clock_speed: args.clock_speed,
        ..Default::default()
    })
    .await?;
    println!("apple-sim listening on {}", sim.base_url());
    tokio::signal::ctrl_c().await?;
    tracing::info!("Ctrl-C received, stopping");
    sim.shutdown().await;
    Ok(())
}
