//! The scheduler's sweeps: every 12 hours a delta sync of every token; every
//! hour a full sync of each token whose 7 days have passed (or that owes
//! one: its last full sync or delta failed or was abandoned); every pass
//! records runs that made no progress for 15 minutes abandoned; every hour an assignment job for each token with profile
//! assignments due (see [`crate::assign::sweep`]). Each start is the same conditional claim a manual sync
//! makes, so a sweep overlapping a running sync changes nothing.

use adesync_core::sync::{self, SyncKind, SyncRequest, Trigger};
use adesync_queue::Queues;
use adesync_store::claims::ScheduledToken;
use adesync_store::{Store, StoreError};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::start::{StartError, start_sync};

/// Tokens claimed at once by a sweep.
const CONCURRENCY: usize = 16;

/// Which sweep an EventBridge schedule asks for (its `Input`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sweep {
    /// Delta sync of every token.
    Delta,
    /// Full sync of tokens whose 7 days have passed.
    Full,
    /// Retries of profile assignments (enrollment policies).
    Assignments,
}

/// What a sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    pub tokens: usize,
    pub started: usize,
    /// Refused by a rule (a sync running, a cooldown): normal.
    pub refused: usize,
    /// Skipped: the token is expired or Apple no longer accepts it.
    pub skipped: usize,
    pub failed: usize,
}

/// Runs `sweep` over every token of every account.
pub async fn run_sweep(
    store: &Store,
    queues: &Queues,
    sweep: Sweep,
    now: DateTime<Utc>,
) -> Result<SweepReport, StoreError> {
    let mut report = SweepReport::default();
    if sweep == Sweep::Assignments {
        let assignments = crate::assign::sweep(store, queues, now).await?;
        report.tokens = assignments.tokens;
        report.started = assignments.queued;
        report.skipped = assignments.skipped;
        report.failed = assignments.failed;
        return Ok(report);
    }
    let mut after = None;
    loop {
        let (tokens, next) = store.scan_tokens(after).await?;
        report.tokens += tokens.len();
        let outcomes: Vec<Outcome> = futures::stream::iter(tokens)
            .map(|token| start_one(store, queues, sweep, token, now))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for outcome in outcomes {
            match outcome {
                Outcome::Started => report.started += 1,
                Outcome::Refused => report.refused += 1,
                Outcome::Skipped => report.skipped += 1,
                Outcome::Failed => report.failed += 1,
            }
        }
        match next {
            Some(key) => after = Some(key),
            None => break,
        }
    }
    tracing::info!(?sweep, ?report, "sweep done");
    Ok(report)
}

enum Outcome {
    Started,
    Refused,
    Skipped,
    Failed,
}

async fn start_one(
    store: &Store,
    queues: &Queues,
    sweep: Sweep,
    token: ScheduledToken,
    now: DateTime<Utc>,
) -> Outcome {
    // Apple refuses an expired or invalidated token until it is renewed:
    // calling would only fail again. Terms not signed clears on its own
    // once accepted, so those tokens are still tried.
    // Every pass notices runs that made no progress for 15 minutes: they
    // are recorded abandoned now, not when the next sync happens to start.
    if let Some(lapsed) = sync::lapsed_lease(&token.state, now) {
        match crate::status::settle_lapsed(store, &token.account, &token.token, &lapsed.run_id, now)
            .await
        {
            Ok(true) => {
                tracing::info!(token = %token.token, run = %lapsed.run_id, "a stuck run was recorded abandoned")
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(%error, token = %token.token, "a stuck run could not be recorded abandoned")
            }
        }
    }
    let expired = token.expires_at.is_some_and(|at| at <= now);
    if expired || token.status == "token_invalid" {
        return Outcome::Skipped;
    }
    let kind = match sweep {
        Sweep::Full if !sync::full_sync_due(&token.state, now) => return Outcome::Refused,
        Sweep::Full => SyncKind::Full,
        _ => SyncKind::Delta,
    };
    let request = SyncRequest {
        trigger: Trigger::Scheduled,
        kind,
    };
    match start_sync(store, queues, &token.account, &token.token, request, now).await {
        Ok(_) => Outcome::Started,
        Err(StartError::Refused { .. } | StartError::TokenNotFound) => Outcome::Refused,
        Err(error) => {
            tracing::warn!(%error, token = %token.token, "scheduled sync could not start");
            Outcome::Failed
        }
    }
}
