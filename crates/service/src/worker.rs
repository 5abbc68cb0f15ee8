//! The sync worker: one step of a run, paging Apple and fanning devices out.
//!
//! A step first takes its run's walker slot (one conditional write that
//! also reads the token): a second delivery of the same job, or a stale
//! one, finds it taken and does nothing, so one walker at a time moves a
//! run. It then walks Apple's cursor ([`adesync_core::cursor::Walk`]) page
//! by page. For every page it sends the devices to the device-batches queue
//! and only once SQS accepted them saves the walk and the cursor — while it
//! holds the slot and the run holds the token's lease, which the save
//! renews: a run that keeps making progress keeps its token for as long as
//! Apple needs. A worker killed at any point therefore loses nothing: the
//! next step (SQS redelivers the job) replays at most the page whose
//! devices were sent but not yet recorded, with the same page size (saved
//! with the walk), and the importer is idempotent. Pages are sized to
//! Apple's pace ([`adesync_core::pace`]); one that times out is asked again
//! smaller. Before its deadline a step queues its own continuation. The run
//! ends with an end-of-run marker behind its last batch; the importer that
//! reads it closes the run.

use std::sync::Arc;

use adesync_apple::{AppleError, AppleSession, CallLimits, DevicePage, Route};
use adesync_core::clock::{Deadline, SharedClock};
use adesync_core::cursor::{Failure, Finish, Phase, Records, RestartReason, Step, Walk, Warning};
use adesync_core::device::{AppleAttributes, DeviceRecord, Observation, Version};
use adesync_core::ids::Serial;
use adesync_core::pace::{self, PageSize};
use adesync_core::run::messages::{BatchMessage, DeviceBatch, EndOfRun, RunOutcome, SyncJob};
use adesync_core::sync::{self, SyncKind};
use adesync_core::token::TokenStatus;
use adesync_queue::QueueError;
use adesync_queue::batches;
use adesync_store::StoreError;
use adesync_store::progress::{Progress, Walker, WalkerSlot, WorkerView};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::faults::{CrashPoint, Crashed, Faults};
use crate::session::SharedSession;
use crate::tokens;

/// Time kept in hand after a page's answer: sending its batches to SQS and
/// saving the walk. A page is only asked if its whole timeout and this fit
/// before the deadline.
pub const SEND_AND_SAVE: Duration = Duration::seconds(10);

/// What the worker needs, built once per process.
pub struct Worker {
    pub adapters: crate::Adapters,
    pub clock: SharedClock,
    pub faults: Arc<Faults>,
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepEnd {
    /// The run's last page was handled; its end-of-run marker is queued.
    Finished,
    /// The deadline came near; the next step is queued.
    Continued,
    /// The run no longer holds the token (lease lapsed or taken over, or
    /// the token was deleted): nothing was done.
    Superseded,
    /// A later step of the run is walking: this stale delivery did nothing.
    Duplicate,
}

/// A step that must be retried (SQS redelivers the job).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("the token's credentials could not be read: {0}")]
    Credentials(String),
    #[error("the saved walk of the run is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error(transparent)]
    Crashed(#[from] Crashed),
    #[error("Apple's account details could not be read: {0}")]
    Apple(#[from] AppleError),
    /// Another invocation walks this step until its deadline: this job
    /// comes back after it (then that walker has moved on, or died).
    #[error("another invocation walks this step until {until}")]
    WalkerBusy { until: DateTime<Utc> },
}

impl WorkerError {
    /// When the failed job should be delivered again at the earliest.
    pub fn retry_at(&self) -> Option<DateTime<Utc>> {
        match self {
            WorkerError::WalkerBusy { until } => Some(*until),
            _ => None,
        }
    }
}

/// What a run remembers between steps besides the walk.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunState {
    /// When the snapshot being paged began: every snapshot record's version
    /// (set by the snapshot's first page).
    snapshot_at: Option<DateTime<Utc>>,
    /// Makes sequence numbers grow across runs too, so two changes Apple
    /// dates to the same second sort in the order they were fetched.
    seq_base: u64,
    /// Records seen so far: the next record's sequence number.
    records: u64,
    /// Records fetched from Apple (all pages, all phases).
    fetched: u64,
    /// The token had no devices when this run's snapshot began (the first
    /// sync of a token): every device it ends up with came from this
    /// snapshot, so the run's close has nothing to release. (The importer
    /// still reads before it creates: Apple may list a serial twice.)
    #[serde(default)]
    new_token: bool,
    warning: Option<String>,
    /// The page size, kept so a resumed position asks the same page.
    #[serde(default)]
    page: PageSize,
    /// The page maxima `/account` advertises for fetch and sync (read once
    /// per run).
    #[serde(default)]
    maxima: Option<(u32, u32)>,
}

impl RunState {
    fn maximum(&self, phase: Phase) -> u32 {
        let (fetch, sync) = self.maxima.unwrap_or((
            adesync_apple::FALLBACK_PAGE_LIMIT,
            adesync_apple::FALLBACK_PAGE_LIMIT,
        ));
        match phase {
            Phase::Fetch => fetch,
            Phase::Sync => sync,
        }
    }
}

impl Worker {
    /// Runs one step of `job`'s run, returning before `deadline`.
    #[tracing::instrument(skip(self, deadline), fields(token = %job.token_id, run = %job.run_id, step = job.step))]
    pub async fn run_step(
        &self,
        job: &SyncJob,
        deadline: &Deadline,
    ) -> Result<StepEnd, WorkerError> {
        let walker = crate::holder_id();
        let result = self.walk_step(job, deadline, &walker).await;
        if result.is_err() {
            // Its redelivery need not wait for this invocation's deadline.
            match self
                .adapters
                .store
                .runs
                .release_walker(&job.account_id, &job.token_id, &walker, self.clock.now())
                .await
            {
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "the failed step's walker slot stays taken until its deadline")
                }
            }
        }
        result
    }

    async fn walk_step(
        &self,
        job: &SyncJob,
        deadline: &Deadline,
        walker: &str,
    ) -> Result<StepEnd, WorkerError> {
        let now = self.clock.now();
        let walker = walker.to_owned();
        let slot = WalkerSlot {
            run: &job.run_id,
            step: job.step,
            walker: &walker,
            until: deadline.at(),
        };
        let view = match self.take_walker_slot(job, slot, now).await? {
            Ok(view) => view,
            Err(end) => return Ok(end),
        };
        let (mut walk, mut state, mut batch_seq) = self.resume_or_begin(job, &view, now).await?;
        let resumed = view.walk_of(&job.run_id).is_some();
        let mut import_until = (!resumed).then(|| sync::import_expires_at(now, view.device_count));

        let session = self.open_session(job).await?;
        let save = Saver {
            worker: self,
            job,
            walker: &walker,
        };

        // The next page is asked while the current one's devices are sent
        // and its walk saved: Apple's wait and ours overlap.
        let mut prefetched: Option<Asked> = None;
        let end = loop {
            if state.maxima.is_none() {
                state.maxima = page_maxima(&session).await;
            }
            let asked = match prefetched.take() {
                Some(asked) => asked,
                None => match self.ask(&session, &walk, &state, deadline).await {
                    Some(asked) => asked,
                    None => {
                        self.queue_continuation(job).await?;
                        tracing::info!(pages = walk.pages(), "deadline near; continuation queued");
                        break StepEnd::Continued;
                    }
                },
            };
            let now = self.clock.now();
            let Asked {
                limit,
                maximum,
                took,
                result,
            } = asked;

            if let Err(AppleError::Timeout) = &result
                && let Some(smaller) = state.page.timed_out(maximum, took)
            {
                tracing::warn!(
                    asked = limit,
                    next = smaller.limit(maximum),
                    waited_ms = took.num_milliseconds(),
                    "Apple did not answer a page in time; asking a smaller one"
                );
                state.page = smaller;
                // Saved before the smaller page is asked, so a worker that
                // resumes this position asks the same page (not progress:
                // the lease is not renewed).
                if !save
                    .walk(&walk, &state, batch_seq, 0, &mut import_until, false, now)
                    .await?
                {
                    break StepEnd::Superseded;
                }
                continue;
            }
            let records_kind = walk.records();
            let outcome = adesync_apple::walk::outcome(&result);
            let step = walk.clone().next(outcome);

            // The page's devices as batch messages, numbered on.
            let mut page_devices = 0;
            let mut messages = Vec::new();
            if let (Ok(page), Step::Request(_) | Step::Done(_)) = (&result, &step) {
                self.faults.check(CrashPoint::WorkerAfterFetch)?;
                page_devices = page.devices.len() as u64;
                state.page = state.page.answered(page.devices.len(), took, maximum);
                messages =
                    self.page_messages(job, page, records_kind, &mut state, batch_seq, now)?;
                batch_seq += messages.len() as u64;
            }
            state.fetched += page_devices;

            match step {
                Step::Request(next) => {
                    // Devices first: the position that covers them is saved
                    // only once SQS has accepted them.
                    let send_and_save = async {
                        self.send_page(&messages).await?;
                        save.walk(
                            &next,
                            &state,
                            batch_seq,
                            page_devices,
                            &mut import_until,
                            true,
                            now,
                        )
                        .await
                    };
                    let (saved, next_page) =
                        futures::join!(send_and_save, self.ask(&session, &next, &state, deadline));
                    if !saved? {
                        break StepEnd::Superseded;
                    }
                    self.faults.stall(CrashPoint::WorkerStallsAfterSave).await;
                    prefetched = next_page;
                    walk = next;
                }
                Step::Restart { walk: next, reason } => {
                    tracing::warn!(
                        ?reason,
                        "Apple refused the cursor; the run fetches every device again"
                    );
                    state.snapshot_at = None;
                    // Batches of the abandoned walk may still be queued:
                    // whether the token has devices is no longer known.
                    state.new_token = false;
                    state.warning = Some(restart_warning(reason).to_owned());
                    if !save
                        .walk(&next, &state, batch_seq, 0, &mut import_until, true, now)
                        .await?
                    {
                        break StepEnd::Superseded;
                    }
                    walk = next;
                }
                Step::Done(finish) => {
                    self.send_page(&messages).await?;
                    let fetched = Fetched {
                        walk: &walk,
                        state: &mut state,
                        batch_seq,
                        page_devices,
                        import_until: import_until.take(),
                    };
                    break self
                        .finish_fetch(job, &walker, fetched, finish, now)
                        .await?;
                }
                Step::Failed(failure) => {
                    break self
                        .fail_run(job, &walk, &state, batch_seq, failure, &result, now)
                        .await?;
                }
            }
        };

        session.keep_current().await;
        Ok(end)
    }

    /// A page's devices as device-batch messages numbered from `batch_seq`,
    /// each within SQS's size limit.
    fn page_messages(
        &self,
        job: &SyncJob,
        page: &DevicePage,
        records_kind: Records,
        state: &mut RunState,
        batch_seq: u64,
        now: DateTime<Utc>,
    ) -> Result<Vec<BatchMessage>, WorkerError> {
        let records = self.records(page, records_kind, state, now);
        let header = DeviceBatch {
            account_id: job.account_id.clone(),
            token_id: job.token_id.clone(),
            run_id: job.run_id.clone(),
            seq: batch_seq,
            snapshot: records_kind == Records::Snapshot,
            records: Vec::new(),
        };
        let batches = batches::split(header, records)?;
        Ok(batches.into_iter().map(BatchMessage::Devices).collect())
    }

    /// Queues the run's next step: this one's deadline is near.
    async fn queue_continuation(&self, job: &SyncJob) -> Result<(), WorkerError> {
        let next = SyncJob {
            step: job.step + 1,
            ..job.clone()
        };
        self.adapters
            .queues
            .send_sync_job(&next, std::time::Duration::ZERO)
            .await?;
        Ok(())
    }

    /// Takes the run's walker slot for this step; `Err` carries how the
    /// step ends without walking (the token or the run is gone, a later step
    /// walks). A live walker of the same step is an error: the job comes
    /// back after that walker's deadline.
    async fn take_walker_slot(
        &self,
        job: &SyncJob,
        slot: WalkerSlot<'_>,
        now: DateTime<Utc>,
    ) -> Result<Result<WorkerView, StepEnd>, WorkerError> {
        let end = match self
            .adapters
            .store
            .runs
            .claim_walker(&job.account_id, &job.token_id, slot, now)
            .await?
        {
            Walker::Walking(view) => return Ok(Ok(view)),
            Walker::TokenGone => {
                tracing::info!("the token no longer exists; dropping the sync job");
                StepEnd::Superseded
            }
            Walker::NotHeld => {
                tracing::info!(
                    "the run no longer holds the token (it ended, its lease lapsed or another run took over)"
                );
                StepEnd::Superseded
            }
            Walker::Stale => {
                tracing::info!("a later step of this run is walking; this stale job does nothing");
                StepEnd::Duplicate
            }
            Walker::Busy { until } => {
                tracing::warn!(
                    %until,
                    "another delivery of this sync job walks the run; this one comes back after that walker's deadline"
                );
                return Err(WorkerError::WalkerBusy { until });
            }
        };
        Ok(Err(end))
    }

    /// The walk where the run's last step saved it, or a new one: a full
    /// fetch from scratch, or a delta from the token's stored position.
    async fn resume_or_begin(
        &self,
        job: &SyncJob,
        view: &WorkerView,
        now: DateTime<Utc>,
    ) -> Result<(Walk, RunState, u64), WorkerError> {
        if let Some((walk, state)) = view.walk_of(&job.run_id) {
            return Ok((
                serde_json::from_str::<Walk>(walk)?,
                serde_json::from_str::<RunState>(state)?,
                view.batch_seq,
            ));
        }
        let walk = match job.kind {
            SyncKind::Full => Walk::full(),
            SyncKind::Delta => Walk::delta(view.position.as_ref()),
        };
        let new_token = walk.is_full()
            && !self
                .adapters
                .store
                .devices
                .token_has_devices(&job.token_id)
                .await?;
        let state = RunState {
            snapshot_at: None,
            seq_base: seq_base(now),
            records: 0,
            fetched: 0,
            new_token,
            warning: None,
            page: PageSize::default(),
            maxima: None,
        };
        Ok((walk, state, 0))
    }

    /// The token's Apple session, shared with every function through the
    /// token item (renewed by one caller at a time).
    async fn open_session(&self, job: &SyncJob) -> Result<AppleSession, WorkerError> {
        let (credentials, cached_session) = tokens::load_credentials(
            &self.adapters.store.tokens,
            &self.adapters.vault,
            &job.account_id,
            &job.token_id,
        )
        .await
        .map_err(|e| WorkerError::Credentials(e.to_string()))?;
        Ok(self
            .adapters
            .apple
            .session(job.token_id.as_str(), credentials, cached_session)
            .with_keeper(SharedSession::new(
                &self.adapters.store.tokens,
                &self.adapters.vault,
                self.clock.clone(),
                &job.account_id,
                &job.token_id,
            )))
    }

    /// The last page is sent: saves the final position (the token's cursor
    /// for the next run), then queues the end-of-run marker the importer
    /// closes the run on.
    async fn finish_fetch(
        &self,
        job: &SyncJob,
        walker: &str,
        fetched: Fetched<'_>,
        finish: Finish,
        now: DateTime<Utc>,
    ) -> Result<StepEnd, WorkerError> {
        let Fetched {
            walk,
            state,
            batch_seq,
            page_devices,
            import_until,
        } = fetched;
        let kind = if walk.is_full() {
            SyncKind::Full
        } else {
            SyncKind::Delta
        };
        if let Some(warning) = finish.warning {
            state.warning = Some(finish_warning(warning).to_owned());
        }
        let progress = Progress {
            run: &job.run_id,
            walker,
            kind,
            walk: &serde_json::to_string(walk)?,
            walk_state: &serde_json::to_string(&*state)?,
            position: &finish.position,
            batch_seq,
            fetched: page_devices,
            pages: 1,
            import_until,
            fetch_finished: true,
            renews_lease: true,
        };
        if !self
            .adapters
            .store
            .runs
            .save_progress(&job.account_id, &job.token_id, &progress, now)
            .await?
        {
            return Ok(StepEnd::Superseded);
        }
        // After every older run's records, before this run's. A new token's
        // devices all come from this snapshot: there is nothing to release,
        // and the close only counts.
        let sweep_at = (finish.full_snapshot && !state.new_token)
            .then(|| Version::for_snapshot(state.snapshot_at.unwrap_or(now), state.seq_base));
        self.end_run(
            job,
            kind,
            batch_seq,
            state,
            RunOutcome::Finished {
                sweep_at,
                warning: state.warning.clone(),
            },
        )
        .await?;
        tracing::info!(
            fetched = state.fetched,
            batches = batch_seq,
            kind = kind.as_str(),
            "run fetched every page"
        );
        Ok(StepEnd::Finished)
    }

    /// Apple's answer ended the run: the token's status records a refusal
    /// (terms not signed, token invalid), and the end-of-run marker carries
    /// the error in words for the administrator.
    #[allow(clippy::too_many_arguments)]
    async fn fail_run(
        &self,
        job: &SyncJob,
        walk: &Walk,
        state: &RunState,
        batch_seq: u64,
        failure: Failure,
        result: &Result<DevicePage, AppleError>,
        now: DateTime<Utc>,
    ) -> Result<StepEnd, WorkerError> {
        let error = failure_message(failure, result.as_ref().err());
        if let Err(apple) = result {
            self.record_token_status(job, apple, now).await;
        }
        tracing::warn!(%error, "run failed");
        let kind = if walk.is_full() {
            SyncKind::Full
        } else {
            job.kind
        };
        self.end_run(job, kind, batch_seq, state, RunOutcome::Failed { error })
            .await?;
        Ok(StepEnd::Finished)
    }

    /// Asks Apple for the page `walk` names, sized to the pace `state` has
    /// seen; None when its whole wait and the sending and saving after it
    /// no longer fit before `deadline`.
    async fn ask(
        &self,
        session: &AppleSession,
        walk: &Walk,
        state: &RunState,
        deadline: &Deadline,
    ) -> Option<Asked> {
        let maximum = state.maximum(walk.request().phase);
        let limit = state.page.limit(maximum);
        let timeout = state.page.timeout(maximum, self.page_timeout_cap());
        if !deadline.leaves(timeout + SEND_AND_SAVE) {
            return None;
        }
        let asked_at = self.clock.now();
        let limits = CallLimits {
            timeout: timeout.to_std().ok(),
            until: Some(deadline.at() - SEND_AND_SAVE),
            retry_timeouts: false,
        };
        let result = session.request_page(walk, Some(limit), limits).await;
        Some(Asked {
            limit,
            maximum,
            took: self.clock.now() - asked_at,
            result,
        })
    }

    /// Sends a page's batch messages (in two sends, so a fault test can
    /// stop the worker between them).
    async fn send_page(&self, messages: &[BatchMessage]) -> Result<(), WorkerError> {
        if messages.is_empty() {
            return Ok(());
        }
        let (first, rest) = messages.split_at(1);
        self.adapters.queues.send_batch_messages(first).await?;
        self.faults.check(CrashPoint::WorkerAfterPartialSend)?;
        self.adapters.queues.send_batch_messages(rest).await?;
        self.faults.check(CrashPoint::WorkerBeforeSave)?;
        Ok(())
    }

    /// The longest wait for a page: the client's configured request timeout.
    fn page_timeout_cap(&self) -> Duration {
        Duration::from_std(self.adapters.apple.config().request_timeout)
            .unwrap_or(pace::MAX_PAGE_TIMEOUT)
    }
}

/// When a sync job whose step failed (its record reported, not killed) is
/// delivered again: 30 s, doubling with each receive, at most 4 minutes —
/// so two or three passing failures in a row still leave the run inside
/// its 15-minute lease (the queue's own visibility timeout is 9 minutes).
pub fn redelivery_after(receives: u32) -> Duration {
    let doublings = receives.saturating_sub(1).min(3);
    Duration::seconds(30 << doublings)
}

/// A page asked of Apple: how, and what came back after how long.
struct Asked {
    limit: u32,
    maximum: u32,
    took: Duration,
    result: Result<DevicePage, AppleError>,
}

/// The largest fetch and sync pages Apple allows this token, once per run;
/// None when they cannot be read (the page call that follows meets the same
/// trouble and decides what it means for the run).
async fn page_maxima(session: &AppleSession) -> Option<(u32, u32)> {
    match (
        session.page_limit_for(Route::FetchDevices).await,
        session.page_limit_for(Route::SyncDevices).await,
    ) {
        (Ok(fetch), Ok(sync)) => Some((fetch, sync)),
        (Err(error), _) | (_, Err(error)) => {
            tracing::warn!(%error, "Apple's page sizes could not be read; using the documented maximum");
            None
        }
    }
}

/// Where the fetching stands when Apple's last page was sent.
struct Fetched<'a> {
    walk: &'a Walk,
    state: &'a mut RunState,
    batch_seq: u64,
    /// Devices on the last page.
    page_devices: u64,
    /// When the import is expected to end, to save with the first progress.
    import_until: Option<DateTime<Utc>>,
}

/// Saves a step's walk on behalf of its walker.
struct Saver<'a> {
    worker: &'a Worker,
    job: &'a SyncJob,
    walker: &'a str,
}

impl Saver<'_> {
    /// Saves the walk positioned at its next request; `progress` says
    /// whether this was a page (the lease is renewed) or only a change of
    /// page size. Returns false when the walker lost the run.
    #[allow(clippy::too_many_arguments)]
    async fn walk(
        &self,
        walk: &Walk,
        state: &RunState,
        batch_seq: u64,
        fetched: u64,
        import_until: &mut Option<DateTime<Utc>>,
        progress: bool,
        now: DateTime<Utc>,
    ) -> Result<bool, WorkerError> {
        let job = self.job;
        let kind = if walk.is_full() {
            SyncKind::Full
        } else {
            job.kind
        };
        let saved = Progress {
            run: &job.run_id,
            walker: self.walker,
            kind,
            walk: &serde_json::to_string(walk)?,
            walk_state: &serde_json::to_string(state)?,
            position: walk.request(),
            batch_seq,
            fetched,
            pages: u64::from(progress),
            import_until: import_until.take(),
            fetch_finished: false,
            renews_lease: progress,
        };
        let saved = self
            .worker
            .adapters
            .store
            .runs
            .save_progress(&job.account_id, &job.token_id, &saved, now)
            .await?;
        if !saved {
            tracing::warn!(
                "the run lost the token while fetching (or another walker took over); stopping without saving"
            );
        }
        Ok(saved)
    }
}

impl Worker {
    async fn end_run(
        &self,
        job: &SyncJob,
        kind: SyncKind,
        batches: u64,
        state: &RunState,
        outcome: RunOutcome,
    ) -> Result<(), WorkerError> {
        let end = BatchMessage::EndOfRun(EndOfRun {
            account_id: job.account_id.clone(),
            token_id: job.token_id.clone(),
            run_id: job.run_id.clone(),
            kind,
            batches,
            fetched: state.fetched,
            outcome,
            closing: None,
        });
        self.adapters.queues.send_batch_messages(&[end]).await?;
        Ok(())
    }

    /// Token-level consequences of Apple's refusals: the administrator must
    /// act. The status's own message says what to do.
    async fn record_token_status(&self, job: &SyncJob, error: &AppleError, now: DateTime<Utc>) {
        let persistent =
            matches!(error, AppleError::Refused { .. }) && self.refused_before(job).await;
        let status = match error {
            AppleError::TermsNotSigned => TokenStatus::TermsNotSigned,
            AppleError::TokenInvalid | AppleError::AccessDenied => TokenStatus::TokenInvalid,
            AppleError::Refused { .. } if persistent => TokenStatus::TokenInvalid,
            _ => return,
        };
        self.adapters
            .events
            .status_changed(&job.account_id, &job.token_id, status.as_str(), now)
            .await;
        if let Err(e) = self
            .adapters
            .store
            .tokens
            .set_token_status(&job.account_id, &job.token_id, status, None, now)
            .await
        {
            tracing::warn!(error = %e, "could not record the token's status");
        }
    }

    /// Whether the token's runs before this one also failed on refusals
    /// without a reason, [`PERSISTENT_REFUSALS`] runs in all: a passing
    /// fault at Apple's edge clears within a run or two; refusals that
    /// outlast that many runs (hours apart when scheduled) are taken as
    /// Apple's word that the token is no longer accepted.
    async fn refused_before(&self, job: &SyncJob) -> bool {
        let earlier = PERSISTENT_REFUSALS - 1;
        let Ok(runs) = self
            .adapters
            .store
            .runs
            .recent_runs(
                &job.token_id,
                u32::try_from(PERSISTENT_REFUSALS).unwrap_or(3),
            )
            .await
        else {
            return false;
        };
        let refused: Vec<bool> = runs
            .iter()
            .filter(|run| run.run_id != job.run_id)
            .take(earlier)
            .map(|run| {
                run.status == adesync_core::run::RunStatus::Failed
                    && run
                        .error
                        .as_deref()
                        .is_some_and(|e| e.contains(adesync_apple::REFUSED_WITHOUT_A_REASON))
            })
            .collect();
        refused.len() == earlier && refused.iter().all(|r| *r)
    }

    /// The page's devices as records for the importer, numbered in order.
    fn records(
        &self,
        page: &DevicePage,
        kind: Records,
        state: &mut RunState,
        now: DateTime<Utc>,
    ) -> Vec<DeviceRecord> {
        let mut records = Vec::with_capacity(page.devices.len());
        let snapshot_at = match kind {
            Records::Snapshot => *state.snapshot_at.get_or_insert_with(|| snapshot_time(now)),
            Records::Changes => now,
        };
        let unreadable: Vec<&adesync_apple::Device> = page.with_unreadable_fields().collect();
        if let Some(first) = unreadable.first() {
            tracing::warn!(
                devices = unreadable.len(),
                serial = %first.serial_number,
                fields = ?first.unreadable,
                "Apple sent fields that could not be read; the devices are imported without them"
            );
            state
                .warning
                .get_or_insert_with(|| unreadable_warning(&first.unreadable));
        }
        for device in &page.devices {
            let Ok(serial) = Serial::parse(&device.serial_number) else {
                tracing::warn!("Apple sent a device with an unusable serial number; skipped");
                continue;
            };
            let seq = state.seq_base + state.records.min(SEQ_PER_RUN - 1);
            state.records += 1;
            let (observation, version) = match (kind, device.op_type) {
                // A fetch record that says deleted (zentral has seen it) is a release.
                (Records::Snapshot, Some(adesync_apple::OpType::Deleted)) => (
                    Observation::Deleted,
                    Version::for_snapshot(snapshot_at, seq),
                ),
                (Records::Snapshot, _) => (
                    Observation::Snapshot,
                    Version::for_snapshot(snapshot_at, seq),
                ),
                (Records::Changes, op) => {
                    let observation = match op {
                        Some(adesync_apple::OpType::Added) => Observation::Added,
                        Some(adesync_apple::OpType::Deleted) => Observation::Deleted,
                        // `modified`, and anything newer Apple may invent.
                        _ => Observation::Modified,
                    };
                    let at = device.op_date.or(page.fetched_until).unwrap_or(now);
                    (observation, Version::for_change(at, seq))
                }
            };
            records.push(DeviceRecord {
                serial,
                observation,
                version,
                attributes: attributes(device),
                released_by_replacement: observation == Observation::Deleted
                    && device.released_by_replacement == Some(true),
            });
        }
        records
    }
}

/// Runs in a row that must fail on Apple's refusals without a reason
/// before the token is marked invalid (this run and the two before it).
pub const PERSISTENT_REFUSALS: usize = 3;

/// Records numbered per run before the numbers of the next run begin.
const SEQ_PER_RUN: u64 = 1 << 22;

/// The first sequence number of a run starting at `now`: runs start at
/// least milliseconds apart, so their numbers never overlap.
fn seq_base(now: DateTime<Utc>) -> u64 {
    u64::try_from(now.timestamp_millis()).unwrap_or(0) << 22
}

/// A snapshot's version time, from the moment its first page arrived.
/// Apple dates changes to the second: a change dated in that second (or
/// later) may have happened after the snapshot was taken, so the snapshot
/// sorts just before that second; a change dated earlier is already in the
/// snapshot and sorts before it. (Our clock and Apple's are both NTP time;
/// a skew of more than a second would blur that boundary.)
fn snapshot_time(first_page_at: DateTime<Utc>) -> DateTime<Utc> {
    let second = first_page_at.timestamp();
    DateTime::from_timestamp(second, 0).unwrap_or(first_page_at) - chrono::Duration::milliseconds(1)
}

fn time(at: Option<DateTime<Utc>>) -> Option<String> {
    at.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// Apple's fields as text, as the service stores and shows them.
fn attributes(device: &adesync_apple::Device) -> AppleAttributes {
    AppleAttributes {
        model: device.model.clone(),
        description: device.description.clone(),
        color: device.color.clone(),
        asset_tag: device.asset_tag.clone(),
        os: device.os.clone(),
        device_family: device.device_family.clone(),
        profile_status: device.profile_status.map(|s| {
            match s {
                adesync_apple::ProfileStatus::Empty => "empty",
                adesync_apple::ProfileStatus::Assigned => "assigned",
                adesync_apple::ProfileStatus::Pushed => "pushed",
                adesync_apple::ProfileStatus::Removed => "removed",
                adesync_apple::ProfileStatus::Unknown => "unknown",
            }
            .to_owned()
        }),
        profile_uuid: device.profile_uuid.clone(),
        profile_assign_time: time(device.profile_assign_time),
        profile_push_time: time(device.profile_push_time),
        device_assigned_by: device.device_assigned_by.clone(),
        device_assigned_date: time(device.device_assigned_date),
        mdm_migration_deadline: time(device.mdm_migration_deadline),
    }
}

fn restart_warning(reason: RestartReason) -> &'static str {
    match reason {
        RestartReason::NoCursor => {
            "There was no cursor to continue from, so this sync fetched every device."
        }
        RestartReason::Expired => {
            "Apple's cursor had expired (older than 7 days), so this sync fetched every device."
        }
        RestartReason::Invalid => {
            "Apple did not recognise the stored cursor, so this sync fetched every device."
        }
        RestartReason::Required => "Apple asked for a cursor, so this sync fetched every device.",
    }
}

fn unreadable_warning(fields: &[String]) -> String {
    format!(
        "Apple sent devices with a value that could not be read ({}); they were imported without it.",
        fields.join(", ")
    )
}

fn finish_warning(warning: Warning) -> &'static str {
    match warning {
        Warning::EchoedCursor => {
            "Apple returned the same cursor it was sent while saying more devices follow; the sync stopped there and the next one continues from it."
        }
        Warning::EchoedFetchCursor => {
            "Apple returned the same cursor it was sent while listing the devices, saying more follow; the sync stopped there, released nothing, and the next sync lists every device afresh."
        }
        Warning::ExhaustedOnSync => {
            "Apple reported the cursor exhausted during a delta sync; the next sync continues from it."
        }
        Warning::ExhaustedMidFetch => {
            "Apple reported the cursor exhausted before the list of devices was complete; the sync stopped there, released nothing, and the next sync lists every device afresh."
        }
    }
}

/// The run's error in words for the administrator (no secrets: Apple
/// errors never carry any).
fn failure_message(failure: Failure, error: Option<&AppleError>) -> String {
    match (failure, error) {
        (Failure::Apple, Some(error)) => format!("Apple: {error}"),
        (Failure::Apple, None) => "Apple's answer could not be used.".to_owned(),
        (Failure::RestartLimit { .. }, _) => "Apple refused the cursor again after a full restart; the next sync starts from scratch.".to_owned(),
        (Failure::PageBudget { pages }, _) => format!("Apple kept saying more devices follow after {pages} pages; the sync stopped to avoid looping."),
        (Failure::Contract { .. }, _) => "Apple answered something its API does not allow at this point; the next sync starts from scratch.".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_step_comes_back_sooner_than_the_lease_lapses() {
        let waits: Vec<i64> = (1..=6).map(|n| redelivery_after(n).num_seconds()).collect();
        assert_eq!(waits, [30, 60, 120, 240, 240, 240]);
        // Five receives (the queue's maxReceiveCount) take four waits: 7.5
        // minutes, inside the run's 15-minute lease.
        assert_eq!(waits[..4].iter().sum::<i64>(), 450);
        assert!(waits[..4].iter().sum::<i64>() * 1_000 < sync::LEASE.num_milliseconds());
    }
}
