//! Starting a sync run.

use adesync_core::ids::{AccountId, RunId, TokenId};
use adesync_core::run::messages::SyncJob;
use adesync_core::run::{self, ABANDONED_ERROR, Estimate, RunStatus};
use adesync_core::scope::Scope;
use adesync_core::sync::{self, Claim, Refusal, SyncKind, SyncRequest};
use adesync_queue::{QueueError, Queues};
use adesync_store::claims::ClaimError;
use adesync_store::{Runs, Store, StoreError};
use chrono::{DateTime, Utc};

/// A run that was claimed, recorded and queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub claim: Claim,
    /// Seconds Apple needs to deliver this run's devices at 3,000 per minute.
    pub estimated_seconds: u64,
    /// Plain-language warnings for the administrator.
    pub warnings: Vec<String>,
}

/// Why a run did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A rule refused it; for a sync in progress, `running` says how far
    /// that run is (None when its record could not be read).
    #[error("{refusal}")]
    Refused {
        refusal: Refusal,
        running: Option<Estimate>,
    },
    #[error("no such token")]
    TokenNotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Warning shown for tokens above the per-token device limit.
pub const LARGE_TOKEN_WARNING: &str = "This token has more than 200,000 devices: sync problems are likely. Split the devices across several MDM servers (tokens) in Apple Business.";

/// What an administrator's Sync needs, for a function that only starts
/// runs (the sync-trigger): the token's claim, the run's record, the queue.
#[derive(Clone)]
pub struct Starter {
    pub store: Store,
    pub queues: Queues,
}

impl Starter {
    /// [`start_sync_in_scope`].
    pub async fn start_in_scope(
        &self,
        account: &AccountId,
        scope: &Scope,
        token: &TokenId,
        request: SyncRequest,
        now: DateTime<Utc>,
    ) -> Result<Started, StartError> {
        start_sync_in_scope(
            &self.store,
            &self.queues,
            account,
            scope,
            token,
            request,
            now,
        )
        .await
    }
}

/// Claims a run of `token` for `request`, records it and queues its first
/// step. If the job cannot be queued the lease is released at once so the
/// token is not blocked for 15 minutes by a run that never started.
pub async fn start_sync(
    store: &Store,
    queues: &Queues,
    account: &AccountId,
    token: &TokenId,
    request: SyncRequest,
    now: DateTime<Utc>,
) -> Result<Started, StartError> {
    start_sync_after(
        store,
        queues,
        account,
        token,
        request,
        now,
        std::time::Duration::ZERO,
    )
    .await
}

/// [`start_sync`] for a caller limited to `scope`: a token it does not see
/// is [`StartError::TokenNotFound`], as another account's.
pub async fn start_sync_in_scope(
    store: &Store,
    queues: &Queues,
    account: &AccountId,
    scope: &Scope,
    token: &TokenId,
    request: SyncRequest,
    now: DateTime<Utc>,
) -> Result<Started, StartError> {
    start(
        store,
        queues,
        account,
        scope,
        token,
        request,
        now,
        std::time::Duration::ZERO,
    )
    .await
}

/// [`start_sync`] with the first step queued to run after `delay` (real
/// time): a scheduled pass spreads a page's starts over its pacing, so
/// Apple does not get a page's worth of tokens in one second. The lease
/// runs from the claim; the delay is a few seconds of its 15 minutes.
pub async fn start_sync_after(
    store: &Store,
    queues: &Queues,
    account: &AccountId,
    token: &TokenId,
    request: SyncRequest,
    now: DateTime<Utc>,
    delay: std::time::Duration,
) -> Result<Started, StartError> {
    start(
        store,
        queues,
        account,
        &Scope::All,
        token,
        request,
        now,
        delay,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn start(
    store: &Store,
    queues: &Queues,
    account: &AccountId,
    scope: &Scope,
    token: &TokenId,
    request: SyncRequest,
    now: DateTime<Utc>,
    delay: std::time::Duration,
) -> Result<Started, StartError> {
    let claimed = match store
        .claims
        .claim_sync_in_scope(account, token, scope, request, now, RunId::new_at(now))
        .await
    {
        Ok(claimed) => claimed,
        Err(ClaimError::Refused(refusal)) => {
            let running = match &refusal {
                Refusal::SyncInProgress { run_id, .. } => {
                    running_estimate(&store.runs, token, run_id, now).await
                }
                _ => None,
            };
            return Err(StartError::Refused { refusal, running });
        }
        Err(ClaimError::TokenNotFound) => return Err(StartError::TokenNotFound),
        Err(ClaimError::Store(e)) => return Err(StartError::Store(e)),
    };
    let claim = claimed.claim.clone();
    if let Some(abandoned) = claimed.abandoned_run() {
        // History only: the lease rule was already enforced by the claim.
        if let Err(error) = store
            .runs
            .record_run_ended(
                token,
                abandoned,
                RunStatus::Abandoned,
                Some(ABANDONED_ERROR),
                now,
            )
            .await
        {
            tracing::warn!(%error, run = %abandoned, "could not mark the abandoned run");
        } else {
            // Published by this new run's close, which flushes the outbox.
            crate::announce::owe_abandoned(&store.runs, account, token, abandoned, now).await;
        }
    }
    // A run that cannot be recorded or queued never starts: undo the claim
    // (lease and cooldowns) so our failure blocks nobody.
    let job = SyncJob {
        account_id: account.clone(),
        token_id: token.clone(),
        run_id: claim.run_id.clone(),
        kind: claim.kind,
        trigger: claim.trigger,
        step: 0,
    };
    let expected = sync::expected_devices(&claimed.previous);
    let queued = match store
        .runs
        .record_run_started(account, token, &claim, expected)
        .await
    {
        Ok(()) => queues
            .send_sync_job(&job, delay)
            .await
            .map_err(StartError::from),
        Err(error) => Err(StartError::from(error)),
    };
    if let Err(error) = queued {
        tracing::error!(%error, run = %claim.run_id, "the sync could not be started; undoing its claim");
        if let Err(undo) = store.claims.abandon_claim(account, token, &claimed).await {
            tracing::error!(error = %undo, "the claim could not be undone; its lease lapses in 15 minutes");
        }
        let _ = store
            .runs
            .record_run_ended(
                token,
                &claim.run_id,
                RunStatus::Failed,
                Some("The sync could not be started; nothing was fetched. Retry it."),
                now,
            )
            .await;
        return Err(error);
    }

    let device_count = claimed.previous.device_count;
    // A delta carries only changes, and even an empty run takes a few
    // round trips to Apple: a minute is the floor of every estimate.
    let estimated_seconds = match claim.kind {
        SyncKind::Full => sync::apple_delivery_seconds(device_count),
        SyncKind::Delta => sync::apple_delivery_seconds(device_count / 100),
    }
    .max(60);
    let mut warnings = Vec::new();
    if claim.large_token {
        warnings.push(LARGE_TOKEN_WARNING.to_owned());
    }
    if claim.recovery {
        warnings.push(
            "The previous sync failed, so this sync is a full sync: it fetches every device again."
                .to_owned(),
        );
    }
    tracing::info!(token = %token, run = %claim.run_id, kind = claim.kind.as_str(),
        trigger = claim.trigger.as_str(), "sync started");
    Ok(Started {
        claim,
        estimated_seconds,
        warnings,
    })
}

/// How far the run holding a token is, for the refusal of another sync.
async fn running_estimate(
    store: &Runs,
    token: &TokenId,
    run_id: &RunId,
    now: DateTime<Utc>,
) -> Option<Estimate> {
    match store.get_run(token, run_id).await {
        Ok(Some(record)) => Some(run::estimate(&record.progress(), now)),
        Ok(None) => None,
        Err(error) => {
            tracing::warn!(%error, run = %run_id, "the running sync's progress could not be read");
            None
        }
    }
}
