//! The sync worker: one step of a run, paging Apple and fanning devices out.
//!
//! A step walks Apple's cursor ([`adesync_core::cursor::Walk`]) page by
//! page. For every page it sends the devices to the device-batches queue
//! and only once SQS accepted them saves the walk and the cursor — while
//! the run still holds the token's lease. A worker killed at any point
//! therefore loses nothing: the next step (SQS redelivers the job) replays
//! at most the page whose devices were sent but not yet recorded, and the
//! importer is idempotent. Before its Lambda deadline a step queues its own
//! continuation. The run ends with an end-of-run marker behind its last
//! batch; the importer that reads it closes the run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use adesync_apple::{AppleClient, AppleError, DevicePage};
use adesync_core::clock::SharedClock;
use adesync_core::cursor::{Failure, Records, RestartReason, Step, Walk, Warning};
use adesync_core::device::{AppleAttributes, DeviceRecord, Observation, Version};
use adesync_core::ids::Serial;
use adesync_core::sync::{self, SyncKind};
use adesync_core::token::TokenStatus;
use adesync_queue::batches::{self, BatchMessage, DeviceBatch, EndOfRun, RunOutcome};
use adesync_queue::jobs::SyncJob;
use adesync_queue::{QueueError, Queues};
use adesync_secrets::Vault;
use adesync_store::progress::Progress;
use adesync_store::{Store, StoreError};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::faults::{CrashPoint, Crashed, Faults};
use crate::tokens;

/// Time kept in hand before the Lambda deadline: one slow Apple page plus
/// sending its devices must fit in it.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(75);

/// What the worker needs, built once per process.
pub struct Worker {
    pub store: Store,
    pub queues: Queues,
    pub vault: Vault,
    pub apple: AppleClient,
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
}

impl Worker {
    /// Runs one step of `job`'s run, returning before `deadline`.
    #[tracing::instrument(skip(self, deadline), fields(token = %job.token_id, run = %job.run_id, step = job.step))]
    pub async fn run_step(&self, job: &SyncJob, deadline: Instant) -> Result<StepEnd, WorkerError> {
        let now = self.clock.now();
        let Some(view) = self
            .store
            .worker_view(&job.account_id, &job.token_id)
            .await?
        else {
            tracing::info!("the token no longer exists; dropping the sync job");
            return Ok(StepEnd::Superseded);
        };
        if !view.held_by(&job.run_id, now) {
            tracing::info!(
                "the run no longer holds the token (its lease lapsed or another run took over)"
            );
            return Ok(StepEnd::Superseded);
        }

        let resumed = view.walk_of(&job.run_id).is_some();
        let (mut walk, mut state, mut batch_seq) = match view.walk_of(&job.run_id) {
            Some((walk, state)) => (
                serde_json::from_str::<Walk>(walk)?,
                serde_json::from_str::<RunState>(state)?,
                view.batch_seq,
            ),
            None => {
                let walk = match job.kind {
                    SyncKind::Full => Walk::full(),
                    SyncKind::Delta => Walk::delta(view.position.as_ref()),
                };
                let new_token =
                    walk.is_full() && !self.store.token_has_devices(&job.token_id).await?;
                let state = RunState {
                    snapshot_at: None,
                    seq_base: seq_base(now),
                    records: 0,
                    fetched: 0,
                    new_token,
                    warning: None,
                };
                (walk, state, 0)
            }
        };
        let mut import_until = (!resumed).then(|| sync::import_expires_at(now, view.device_count));

        let (credentials, cached_session) =
            tokens::load_credentials(&self.store, &self.vault, &job.account_id, &job.token_id)
                .await
                .map_err(|e| WorkerError::Credentials(e.to_string()))?;
        let cached = cached_session.clone();
        let session = self
            .apple
            .session(job.token_id.as_str(), credentials, cached_session);

        let end = loop {
            if Instant::now() + DEADLINE_MARGIN > deadline {
                let next = SyncJob {
                    step: job.step + 1,
                    ..job.clone()
                };
                self.queues.send_sync_job(&next).await?;
                tracing::info!(pages = walk.pages(), "deadline near; continuation queued");
                break StepEnd::Continued;
            }
            let records_kind = walk.records();
            let result = session.request_page(&walk, None).await;
            let outcome = adesync_apple::walk::outcome(&result);
            let step = walk.clone().next(outcome);
            let now = self.clock.now();

            // Devices first: the position that covers them is saved only
            // once SQS has accepted them.
            let mut page_devices = 0;
            if let (Ok(page), Step::Request(_) | Step::Done(_)) = (&result, &step) {
                self.faults.check(CrashPoint::WorkerAfterFetch)?;
                page_devices = page.devices.len() as u64;
                let records = self.records(page, records_kind, &mut state, now);
                let snapshot = records_kind == Records::Snapshot;
                let header = DeviceBatch {
                    account_id: job.account_id.clone(),
                    token_id: job.token_id.clone(),
                    run_id: job.run_id.clone(),
                    seq: batch_seq,
                    snapshot,
                    records: Vec::new(),
                };
                let batches = batches::split(header, records)?;
                batch_seq += batches.len() as u64;
                let messages: Vec<BatchMessage> =
                    batches.into_iter().map(BatchMessage::Devices).collect();
                let (first, rest) = messages.split_at(messages.len().min(1));
                self.queues.send_batch_messages(first).await?;
                self.faults.check(CrashPoint::WorkerAfterPartialSend)?;
                self.queues.send_batch_messages(rest).await?;
                self.faults.check(CrashPoint::WorkerBeforeSave)?;
            }
            state.fetched += page_devices;

            match step {
                Step::Request(next) => {
                    if !self
                        .save(
                            job,
                            &next,
                            &state,
                            batch_seq,
                            page_devices,
                            &mut import_until,
                            now,
                        )
                        .await?
                    {
                        break StepEnd::Superseded;
                    }
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
                    if !self
                        .save(job, &next, &state, batch_seq, 0, &mut import_until, now)
                        .await?
                    {
                        break StepEnd::Superseded;
                    }
                    walk = next;
                }
                Step::Done(finish) => {
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
                        kind,
                        walk: &serde_json::to_string(&walk)?,
                        walk_state: &serde_json::to_string(&state)?,
                        position: &finish.position,
                        batch_seq,
                        fetched: page_devices,
                        pages: 1,
                        import_until: import_until.take(),
                        fetch_finished: true,
                    };
                    if !self
                        .store
                        .save_progress(&job.account_id, &job.token_id, &progress, now)
                        .await?
                    {
                        break StepEnd::Superseded;
                    }
                    // After every older run's records, before this run's. A
                    // new token's devices all come from this snapshot: there
                    // is nothing to release, and the close only counts.
                    let sweep_at = (finish.full_snapshot && !state.new_token).then(|| {
                        Version::for_snapshot(state.snapshot_at.unwrap_or(now), state.seq_base)
                    });
                    self.end_run(
                        job,
                        kind,
                        batch_seq,
                        &state,
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
                    break StepEnd::Finished;
                }
                Step::Failed(failure) => {
                    let error = failure_message(failure, result.as_ref().err());
                    if let Err(apple) = &result {
                        self.record_token_status(job, apple, now).await;
                    }
                    tracing::warn!(%error, "run failed");
                    let kind = if walk.is_full() {
                        SyncKind::Full
                    } else {
                        job.kind
                    };
                    self.end_run(job, kind, batch_seq, &state, RunOutcome::Failed { error })
                        .await?;
                    break StepEnd::Finished;
                }
            }
        };

        if let Some(current) = session.current_auth_session()
            && cached.as_ref().map(secrecy::ExposeSecret::expose_secret)
                != Some(secrecy::ExposeSecret::expose_secret(&current))
            && let Err(error) = tokens::save_apple_session(
                &self.store,
                &self.vault,
                &job.account_id,
                &job.token_id,
                &current,
            )
            .await
        {
            // Only an optimisation: the next step authenticates again.
            tracing::warn!(%error, "could not keep Apple's session for the next step");
        }
        Ok(end)
    }

    #[allow(clippy::too_many_arguments)]
    async fn save(
        &self,
        job: &SyncJob,
        walk: &Walk,
        state: &RunState,
        batch_seq: u64,
        fetched: u64,
        import_until: &mut Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<bool, WorkerError> {
        let kind = if walk.is_full() {
            SyncKind::Full
        } else {
            job.kind
        };
        let progress = Progress {
            run: &job.run_id,
            kind,
            walk: &serde_json::to_string(walk)?,
            walk_state: &serde_json::to_string(state)?,
            position: walk.request(),
            batch_seq,
            fetched,
            pages: 1,
            import_until: import_until.take(),
            fetch_finished: false,
        };
        let saved = self
            .store
            .save_progress(&job.account_id, &job.token_id, &progress, now)
            .await?;
        if !saved {
            tracing::warn!("the run lost the token while fetching; stopping without saving");
        }
        Ok(saved)
    }

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
        self.queues.send_batch_messages(&[end]).await?;
        Ok(())
    }

    /// Token-level consequences of Apple's refusals: the administrator must
    /// act. The status's own message says what to do.
    async fn record_token_status(&self, job: &SyncJob, error: &AppleError, now: DateTime<Utc>) {
        let status = match error {
            AppleError::TermsNotSigned => TokenStatus::TermsNotSigned,
            AppleError::TokenInvalid | AppleError::AccessDenied => TokenStatus::TokenInvalid,
            _ => return,
        };
        if let Err(e) = self
            .store
            .set_token_status(&job.account_id, &job.token_id, status, None, now)
            .await
        {
            tracing::warn!(error = %e, "could not record the token's status");
        }
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
            });
        }
        records
    }
}

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

fn finish_warning(warning: Warning) -> &'static str {
    match warning {
        Warning::EchoedCursor => {
            "Apple returned the same cursor it was sent while saying more devices follow; the sync stopped there and the next one continues from it."
        }
        Warning::ExhaustedOnSync => {
            "Apple reported the cursor exhausted during a delta sync; the next sync continues from it."
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
