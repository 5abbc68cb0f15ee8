//! The sync-scheduler function: EventBridge schedules → passes over every token.
//!
//! The schedule's `Input` (template.yaml) names the pass: `{"sweep":
//! "delta"}` every 12 hours, `{"sweep": "full"}` hourly for tokens whose 7
//! days have passed, `{"sweep": "assignments"}` hourly. This invocation only
//! queues each scan segment's first page; the sync worker runs the pages
//! (`adesync_service::schedule`), so no fleet is too large for its timeout.

use std::sync::Arc;

use adesync_core::clock::SharedClock;
use adesync_core::fanout::{PassPlan, Sweep};
use adesync_queue::Queues;
use adesync_runtime::Config;
use adesync_runtime::aws::Clients;
use adesync_service::schedule::{PassStarted, start_pass};
use serde::Deserialize;

/// What the scheduler needs, built once per process.
pub struct Scheduler {
    queues: Queues,
    clock: SharedClock,
    plan: PassPlan,
}

/// The schedule's input.
#[derive(Debug, Deserialize)]
pub struct ScheduleInput {
    pub sweep: Sweep,
}

/// Builds the scheduler once per process.
pub fn scheduler(config: &Config, clients: &Clients, clock: SharedClock) -> Arc<Scheduler> {
    Arc::new(Scheduler {
        queues: clients.queues(config),
        clock,
        plan: config.pass_plan,
    })
}

/// Handles one scheduled invocation.
pub async fn handle(
    scheduler: &Scheduler,
    input: serde_json::Value,
) -> Result<PassStarted, String> {
    let input: ScheduleInput = serde_json::from_value(input).map_err(|e| {
        format!(
            "the schedule's input must be {{\"sweep\": \"delta\"|\"full\"|\"assignments\"}}: {e}"
        )
    })?;
    start_pass(
        &scheduler.queues,
        scheduler.clock.as_ref(),
        input.sweep,
        scheduler.plan,
    )
    .await
    .map_err(|e| e.to_string())
}
