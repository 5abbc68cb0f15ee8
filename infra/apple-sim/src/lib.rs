//! An in-memory simulator of Apple's device assignment (ADE/DEP) web service
//! (`mdmenrollment.apple.com`) for one or many MDM servers, with a `/_sim/*` control API that
//! plays the Apple Business administrator and injects faults.
//!
//! The contract it follows is `docs/apple.md` (Apple routes); its control routes are
//! documented in `infra/apple-sim/README.md`.
//!
//! # Layout
//! - [`config`]: [`SimConfig`] and the run-time [`Behaviour`] knobs.
//! - `clock`: the simulator clock (real time, sped up and advanced by tests).
//! - `world/`: all state behind one lock — servers, devices, event logs, sessions, faults.
//! - `apple`: Apple's routes and the gate in front of them (faults, `User-Agent`, sessions).
//! - `control`: the `/_sim/*` routes.
//! - `oauth`: checking the OAuth 1.0a signature of `GET /session`.
//! - `cursor`: opaque, tamper-evident fetch/sync cursors.
//! - `device`: device records, their per-protocol-version JSON, generated devices.
//! - `error`: Apple's plain-text error tokens and the control API's JSON errors.

mod apple;
mod clock;
pub mod config;
mod control;
mod cursor;
mod device;
mod error;
mod oauth;
mod world;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::{Behaviour, SimConfig};

use world::World;

/// How long [`RunningSim::shutdown`] waits for open requests before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The simulator's shared state; clone it freely.
#[derive(Clone)]
pub struct SimState {
    world: Arc<Mutex<World>>,
}

impl SimState {
    /// Fails only on a `clock_speed` outside 1–10,000.
    pub fn new(config: &SimConfig) -> anyhow::Result<Self> {
        let world = World::new(config).context("the simulator clock")?;
        Ok(Self {
            world: Arc::new(Mutex::new(world)),
        })
    }

    /// Never held across an `.await`. A panic while holding it leaves consistent-enough data
    /// for a test double, so a poisoned lock is simply taken over.
    fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// All routes, Apple's and `/_sim/*`, over `state`.
pub fn router(state: SimState) -> Router {
    Router::new()
        .merge(apple::routes(state.clone()))
        .merge(control::routes())
        .with_state(state)
}

/// A simulator serving in the background of the current tokio runtime.
pub struct RunningSim {
    addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningSim {
    /// The address actually bound (the real port when port 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (a wildcard listen address is reached through loopback).
    pub fn base_url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    }

    /// Stops accepting connections and waits (briefly) for requests in flight.
    pub async fn shutdown(self) {
        // The receiver only disappears if the server already stopped.
        let _ = self.shutdown.send(());
        let mut task = self.task;
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(%error, "simulator stopped with an error"),
            Ok(Err(error)) => tracing::warn!(%error, "simulator task failed"),
            Err(_) => task.abort(),
        }
    }
}

/// Binds `config.addr` and serves the simulator until [`RunningSim::shutdown`].
pub async fn spawn(config: SimConfig) -> anyhow::Result<RunningSim> {
    let state = SimState::new(&config)?;
    let listener = TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("binding the Apple simulator to {}", config.addr))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let app = router(state);
    let (shutdown, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    tracing::info!(%addr, "Apple simulator listening");
    Ok(RunningSim {
        addr,
        shutdown,
        task,
    })
}
