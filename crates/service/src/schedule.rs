//! The scheduler's passes over every token: every 12 hours a delta sync of
//! each; every hour a full sync of each token whose 7 days have passed (or
//! that owes one: its last full sync or delta failed or was abandoned), and
//! an assignment job for each token with profile assignments due. Every
//! page also records runs that made no progress for 15 minutes abandoned.
//!
//! A pass is cut into bounded pieces ([`adesync_core::fanout`]): the
//! schedule's invocation only queues the first page of each scan segment
//! ([`start_pass`]); the sync worker runs one page per message
//! ([`sweep_page`]) and queues the segment's next page, paced. Each start is
//! the same conditional claim a manual sync makes, so a page run twice (SQS
//! delivers twice, sometimes) or overlapping a running sync changes
//! nothing; a duplicate page doubles only the reading of the rest of its
//! segment.

use adesync_core::clock::Clock;
use adesync_core::fanout::SweepJob;
use adesync_core::fanout::{PassPlan, Sweep};
use adesync_core::sync::{self, SyncKind, SyncRequest, Trigger};
use adesync_core::token::ShownStatus;
use adesync_queue::{QueueError, Queues};
use adesync_store::claims::ScheduledToken;
use adesync_store::{Store, StoreError, Tokens};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;

use crate::start::{StartError, start_sync_after};

/// Tokens of one page handled at once.
const CONCURRENCY: usize = 16;

/// What the schedule's invocation did: queued the first page of each segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PassStarted {
    pub sweep: Sweep,
    pub plan: PassPlan,
}

/// What one page of a pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    pub tokens: usize,
    /// Syncs started, or assignment jobs queued.
    pub started: usize,
    /// Refused by a rule (a sync running, a cooldown, not due): normal.
    pub refused: usize,
    /// Skipped: the token is expired or Apple no longer accepts it.
    pub skipped: usize,
    pub failed: usize,
    /// Items of the tokens table that are not readable tokens (logged).
    pub malformed: usize,
    /// The segment's next page was queued.
    pub continued: bool,
}

/// Why a page must be retried (SQS redelivers it; it is idempotent).
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Starts a pass: queues the first page of each of `plan`'s segments,
/// staggered (on `clock`, which a local run may speed up).
pub async fn start_pass(
    queues: &Queues,
    clock: &dyn Clock,
    sweep: Sweep,
    plan: PassPlan,
) -> Result<PassStarted, QueueError> {
    let plan = plan.bounded();
    for segment in 0..plan.segments {
        let delay = real(clock, plan.first_page_delay(segment));
        queues
            .send_sweep_job(&SweepJob::first(sweep, plan, segment), delay)
            .await?;
    }
    tracing::info!(?sweep, segments = plan.segments, "pass started");
    Ok(PassStarted { sweep, plan })
}

/// Runs one page of a pass and queues the next page of its segment.
#[tracing::instrument(skip_all, fields(sweep = ?job.sweep, segment = job.segment, page = job.page))]
pub async fn sweep_page(
    store: &Store,
    queues: &Queues,
    events: &crate::announce::Announcer,
    clock: &dyn Clock,
    job: &SweepJob,
) -> Result<SweepReport, SweepError> {
    let plan = job.plan.bounded();
    let began = clock.now();
    let scan = store
        .claims
        .scan_tokens(job.segment, plan.segments, job.after.as_ref(), plan.page)
        .await?;
    let mut report = SweepReport {
        tokens: scan.tokens.len(),
        malformed: scan.malformed.len(),
        ..SweepReport::default()
    };
    for (key, why) in &scan.malformed {
        tracing::error!(item = %key, %why, "an item of the tokens table is not a readable token; skipped");
    }
    let now = clock.now();
    let outcomes: Vec<Outcome> = futures::stream::iter(scan.tokens.into_iter().enumerate())
        .map(|(position, token)| {
            let delay = real(clock, plan.start_offset(position));
            sweep_token(store, queues, events, job.sweep, token, now, delay)
        })
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
    if let Some(after) = scan.next {
        let spent = (clock.now() - began).to_std().unwrap_or_default();
        let delay = real(clock, plan.next_page_wait(report.started, spent));
        queues.send_sweep_job(&job.next(after), delay).await?;
        report.continued = true;
    }
    tracing::info!(?report, "sweep page done");
    Ok(report)
}

/// The real wait for `span` of `clock`.
fn real(clock: &dyn Clock, span: std::time::Duration) -> std::time::Duration {
    clock.real(chrono::Duration::from_std(span).unwrap_or(chrono::Duration::zero()))
}

enum Outcome {
    Started,
    Refused,
    Skipped,
    Failed,
}

async fn sweep_token(
    store: &Store,
    queues: &Queues,
    events: &crate::announce::Announcer,
    sweep: Sweep,
    token: ScheduledToken,
    now: DateTime<Utc>,
    delay: std::time::Duration,
) -> Outcome {
    // Every pass notices runs that made no progress for 15 minutes: they
    // are recorded abandoned now, not when the next sync happens to start.
    if let Some(lapsed) = sync::lapsed_lease(&token.state, now) {
        match crate::status::settle_lapsed(store, &token.account, &token.token, &lapsed.run_id, now)
            .await
        {
            Ok(true) => {
                tracing::info!(token = %token.token, run = %lapsed.run_id, "a stuck run was recorded abandoned");
                // Its sync.finished is owed in the outbox: out now.
                events.flush(&token.account, &token.token, now).await;
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(%error, token = %token.token, "a stuck run could not be recorded abandoned")
            }
        }
    }
    // Every pass reaches every token: the place for notices owed by time.
    if let Some(expires_at) = token.expires_at {
        announce_expiry(&store.tokens, events, &token, expires_at, now).await;
    }
    // Apple refuses an expired or invalidated token until it is renewed:
    // calling would only fail again. Terms not signed clears on its own
    // once accepted, so those tokens are still tried.
    let expired = token.expires_at.is_some_and(|at| at <= now);
    if expired || token.status == "token_invalid" {
        return Outcome::Skipped;
    }
    let kind = match sweep {
        Sweep::Assignments => {
            return match crate::assign::sweep_token(
                store,
                queues,
                &token.account,
                &token.token,
                now,
            )
            .await
            {
                Ok(true) => Outcome::Started,
                Ok(false) => Outcome::Refused,
                Err(error) => {
                    tracing::warn!(%error, token = %token.token, "assignment sweep failed for a token");
                    Outcome::Failed
                }
            };
        }
        Sweep::Full if !sync::full_sync_due(&token.state, now) => return Outcome::Refused,
        Sweep::Full => SyncKind::Full,
        Sweep::Delta => SyncKind::Delta,
    };
    let request = SyncRequest {
        trigger: Trigger::Scheduled,
        kind,
    };
    match start_sync_after(
        store,
        queues,
        &token.account,
        &token.token,
        request,
        now,
        delay,
    )
    .await
    {
        Ok(_) => Outcome::Started,
        Err(StartError::Refused { .. } | StartError::TokenNotFound) => Outcome::Refused,
        Err(error) => {
            tracing::warn!(%error, token = %token.token, "scheduled sync could not start");
            Outcome::Failed
        }
    }
}

/// `token.expiring` at 30, 7 and 1 days before the token expires, then
/// `token.status_changed` to `expired` once it has, once each: the claim is
/// one conditional write on the token, so the passes that see the token
/// (every hour) announce it once; then the event is published, or kept in
/// the outbox if the bus refuses.
async fn announce_expiry(
    store: &Tokens,
    events: &crate::announce::Announcer,
    token: &ScheduledToken,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) {
    let Some(days) = adesync_core::change::notice_due(expires_at, now) else {
        return;
    };
    if !events.enabled() {
        return;
    }
    match store
        .claim_expiry_notice(&token.account, &token.token, expires_at, days)
        .await
    {
        Ok(true) => {
            let event = if days == adesync_core::change::EXPIRED_NOTICE {
                adesync_events::Event::token_status_changed(
                    &token.account,
                    &token.token,
                    ShownStatus::Expired.as_str(),
                    now,
                )
            } else {
                adesync_events::Event::token_expiring(
                    &token.account,
                    &token.token,
                    expires_at,
                    days,
                    now,
                )
            };
            let key = format!("expiring#{}#{days}", expires_at.timestamp_millis());
            events
                .publish_or_keep(&token.token, &key, vec![event], now)
                .await;
            tracing::info!(token = %token.token, days, "token.expiring announced");
        }
        Ok(false) => {}
        Err(error) => {
            tracing::warn!(%error, token = %token.token, "the expiry notice waits for the next pass")
        }
    }
}
