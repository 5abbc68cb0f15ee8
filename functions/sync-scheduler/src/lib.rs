//! The sync-scheduler function: EventBridge schedules → sweeps.
//!
//! The schedule's `Input` (template.yaml) names the sweep:
//! `{"sweep": "delta"}` every 12 hours, `{"sweep": "full"}` hourly for
//! tokens whose 7 days have passed.

use std::sync::Arc;

use adesync_core::clock::SharedClock;
use adesync_queue::Queues;
use adesync_runtime::Config;
use adesync_runtime::aws::Clients;
use adesync_service::schedule::{Sweep, SweepReport, run_sweep};
use adesync_store::Store;
use serde::Deserialize;

/// What the scheduler needs, built once per process.
pub struct Scheduler {
    store: Store,
    queues: Queues,
    clock: SharedClock,
}

/// The schedule's input.
#[derive(Debug, Deserialize)]
pub struct ScheduleInput {
    pub sweep: Sweep,
}

/// Builds the scheduler once per process.
pub fn scheduler(config: &Config, clients: &Clients, clock: SharedClock) -> Arc<Scheduler> {
    Arc::new(Scheduler {
        store: clients.store(config),
        queues: clients.queues(config),
        clock,
    })
}

/// Handles one scheduled invocation.
pub async fn handle(
    scheduler: &Scheduler,
    input: serde_json::Value,
) -> Result<SweepReport, String> {
    let input: ScheduleInput = serde_json::from_value(input).map_err(|e| {
        format!(
            "the schedule's input must be {{\"sweep\": \"delta\"|\"full\"|\"assignments\"}}: {e}"
        )
    })?;
    run_sweep(
        &scheduler.store,
        &scheduler.queues,
        input.sweep,
        scheduler.clock.now(),
    )
    .await
    .map_err(|e| e.to_string())
}
