//! The device importer: applies device batches, closes runs.
//!
//! Batches of one token arrive in order (FIFO group per token), at least
//! once. For each batch the importer reads the stored devices, asks
//! `adesync_core::device` what each record changes, writes only what
//! changed — conditionally on each item's revision, re-reading the few an
//! API request changed meanwhile — and then marks the batch, which counts
//! it exactly once. The end-of-run marker behind a run's last batch closes
//! the run: a complete full sync releases the devices its snapshot did not
//! contain, the token's device count is recounted, and the lease released.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use adesync_core::clock::SharedClock;
use adesync_core::device::{self, Decision, Device, SerialRecords, Version};
use adesync_core::ids::{PolicyId, Serial, TokenId};
use adesync_core::token::TokenStatus;
use adesync_queue::Queues;
use adesync_queue::batches::{BatchMessage, DeviceBatch, EndOfRun, RunOutcome};
use adesync_store::claims::RunEnd;
use adesync_store::devices::{DeviceWrite, Stored};
use adesync_store::{Store, StoreError};
use chrono::{DateTime, Utc};

use crate::faults::{CrashPoint, Crashed, Faults};

/// Rounds of re-reading devices an API request changed under us before
/// the batch is failed and retried by SQS.
const CONFLICT_ROUNDS: usize = 5;

/// What the importer needs, built once per process.
pub struct Importer {
    pub store: Store,
    pub clock: SharedClock,
    pub faults: Arc<Faults>,
    /// For the assignment job queued when a run closes.
    pub queues: Queues,
}

/// What a batch did (for logs and tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub records: usize,
    pub written: usize,
    /// A redelivered batch: applied again (a no-op) but not counted again.
    pub duplicate: bool,
    /// The batch belongs to a run that is already closed (a redrive from the
    /// dead-letter queue): dropped, see [`Importer::apply`].
    pub dropped: bool,
}

/// Whether records that only move a device's version may go unwritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refreshes {
    /// Every earlier batch of the run was applied: no older change of these
    /// devices can still arrive, so an unchanged device costs no write.
    Skip,
    /// An earlier batch is still missing (delivered out of order): write
    /// them, so the late, older batch cannot undo a newer observation.
    Write,
}

/// A batch that must be retried (SQS redelivers it; after the queue's
/// `maxReceiveCount` it goes to the dead-letter queue).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0} devices kept changing while this batch was applied")]
    Contended(usize),
    #[error(transparent)]
    Crashed(#[from] Crashed),
}

impl Importer {
    /// Applies one message of the device-batches queue.
    pub async fn apply(&self, message: &BatchMessage) -> Result<Applied, ImportError> {
        match message {
            BatchMessage::Devices(batch) => self.apply_batch(batch).await,
            BatchMessage::EndOfRun(end) => {
                self.close_run(end).await?;
                Ok(Applied::default())
            }
        }
    }

    /// A batch of a run that is already closed is dropped: the run closed
    /// without it (it was in the dead-letter queue), so the run failed and
    /// the token's next sync was a full one, whose snapshot supersedes it.
    #[tracing::instrument(skip(self, batch), fields(token = %batch.token_id, run = %batch.run_id, seq = batch.seq))]
    async fn apply_batch(&self, batch: &DeviceBatch) -> Result<Applied, ImportError> {
        // A running run implies its token exists: deleting a token waits
        // for its import. (Writes are re-checked below all the same.)
        let run = match self.store.get_run(&batch.token_id, &batch.run_id).await? {
            Some(run) if !run.is_over() => run,
            _ => {
                tracing::warn!("the batch's run is closed (or unknown); dropping the late batch");
                return Ok(Applied {
                    dropped: true,
                    ..Applied::default()
                });
            }
        };
        // In order: every earlier batch is marked and no later one is.
        let in_order = run.batches_imported == batch.seq
            && !self
                .store
                .batch_marked_after(&batch.token_id, &batch.run_id, batch.seq)
                .await?;
        let refreshes = if in_order {
            Refreshes::Skip
        } else {
            tracing::warn!(
                marked = run.batches_imported,
                "batch out of order (or redelivered); writing unchanged devices too"
            );
            Refreshes::Write
        };
        let now = self.clock.now();
        // Newly synced devices join the token's default policy in the same write.
        let default = self
            .store
            .default_policy_id(&batch.account_id, &batch.token_id)
            .await?;
        let groups = device::group_by_serial(batch.records.clone());
        let serials: Vec<Serial> = groups.iter().map(|g| g.serial.clone()).collect();
        let written = self
            .converge(&batch.token_id, groups, refreshes, default.as_ref(), now)
            .await?;

        // A device written after the token was deleted would be orphaned:
        // the delete requires no running import, but an import that outlived
        // its estimate may still be draining. Undo rather than orphan.
        if written > 0
            && !self
                .store
                .token_exists(&batch.account_id, &batch.token_id)
                .await?
        {
            self.store.delete_devices(&batch.token_id, &serials).await?;
            return Ok(Applied::default());
        }

        self.faults.check(CrashPoint::ImporterBeforeMark)?;
        let snapshot = batch.snapshot.then_some(serials.as_slice());
        let first_time = self
            .store
            .mark_batch_imported(
                &batch.token_id,
                &batch.run_id,
                batch.seq,
                serials.len() as u64,
                snapshot,
                now,
            )
            .await?;
        tracing::info!(
            records = serials.len(),
            written,
            duplicate = !first_time,
            "batch applied"
        );
        Ok(Applied {
            records: serials.len(),
            written,
            duplicate: !first_time,
            dropped: false,
        })
    }

    /// Reads, decides and writes until every record is applied; returns
    /// the number of items written.
    async fn converge(
        &self,
        token: &TokenId,
        mut groups: Vec<SerialRecords>,
        refreshes: Refreshes,
        default: Option<&PolicyId>,
        now: DateTime<Utc>,
    ) -> Result<usize, ImportError> {
        let mut written = 0;
        for _ in 0..CONFLICT_ROUNDS {
            if groups.is_empty() {
                return Ok(written);
            }
            let serials: Vec<Serial> = groups.iter().map(|g| g.serial.clone()).collect();
            let stored = self.store.get_devices(token, &serials).await?;
            let mut writes = decide_writes(&groups, &stored, refreshes, now);
            let moves = crate::assign::prepare_writes(
                &self.store,
                token,
                default,
                &stored,
                &mut writes,
                now,
            )
            .await?;
            // The crash point splits the writes: the first half lands.
            let (first, rest) = split_half(writes);
            let mut outcome = self.store.write_devices(token, first).await?;
            self.faults.check(CrashPoint::ImporterMidBatch)?;
            let second = self.store.write_devices(token, rest).await?;
            outcome.written += second.written;
            outcome.conflicts.extend(second.conflicts);
            crate::assign::settle_counts(&self.store, token, moves, &outcome.conflicts).await?;
            written += outcome.written;
            let conflicted: HashSet<Serial> = outcome.conflicts.into_iter().collect();
            groups.retain(|g| conflicted.contains(&g.serial));
        }
        if groups.is_empty() {
            Ok(written)
        } else {
            Err(ImportError::Contended(groups.len()))
        }
    }

    /// Closes a run once all its batches were applied (FIFO order puts this
    /// marker behind them).
    #[tracing::instrument(skip(self, end), fields(token = %end.token_id, run = %end.run_id))]
    async fn close_run(&self, end: &EndOfRun) -> Result<(), ImportError> {
        let now = self.clock.now();
        if let Some(run) = self.store.get_run(&end.token_id, &end.run_id).await?
            && run.is_over()
        {
            tracing::info!("run already closed; ignoring a repeated end-of-run marker");
            return Ok(());
        }
        let (markers, seen) = self.store.run_markers(&end.token_id, &end.run_id).await?;
        let missing = end.batches.saturating_sub(markers);

        let (status, error, warning) = match &end.outcome {
            RunOutcome::Failed { error } => ("failed", Some(error.clone()), None),
            RunOutcome::Finished { .. } if missing > 0 => (
                "failed",
                Some(format!(
                    "{missing} of {} device batches could not be imported and are in the dead-letter queue; devices in them may be out of date until the next sync.",
                    end.batches
                )),
                None,
            ),
            RunOutcome::Finished { warning, .. } => ("succeeded", None, warning.clone()),
        };

        // A complete snapshot tells which devices are no longer assigned; an
        // incomplete one must not release devices whose batch was lost.
        let sweep_at = match &end.outcome {
            RunOutcome::Finished {
                sweep_at: Some(at), ..
            } if missing == 0 => Some(*at),
            _ => None,
        };
        let listed = self
            .sweep_and_count(&end.token_id, sweep_at, &seen, now)
            .await?;
        self.store
            .set_device_count(&end.account_id, &end.token_id, listed)
            .await?;

        self.store
            .record_run_closed(
                &end.token_id,
                &end.run_id,
                status,
                error.as_deref(),
                warning.as_deref(),
                now,
            )
            .await?;
        let run_end = match &error {
            None => RunEnd::Succeeded,
            Some(error) => RunEnd::Failed {
                error: error.clone(),
            },
        };
        let released = self
            .store
            .finish_run(
                &end.account_id,
                &end.token_id,
                &end.run_id,
                end.kind,
                &run_end,
                now,
            )
            .await?;
        if error.is_none()
            && let Err(e) = self
                .store
                .set_token_status(&end.account_id, &end.token_id, TokenStatus::Ok, None, now)
                .await
        {
            tracing::warn!(error = %e, "could not clear the token's status after a successful sync");
        }
        // Devices the run put into the default policy are assigned with Apple now.
        match crate::assign::queue_if_due(
            &self.store,
            &self.queues,
            &end.account_id,
            &end.token_id,
            now,
        )
        .await
        {
            Ok(queued) => tracing::debug!(queued, "assignment job checked"),
            Err(error) => {
                tracing::warn!(%error, "the assignment job waits for the hourly sweep")
            }
        }
        tracing::info!(status, listed, released, "run closed");
        Ok(())
    }

    /// Releases devices a complete snapshot did not contain (when
    /// `sweep_at` is set) and returns how many devices the token now lists.
    async fn sweep_and_count(
        &self,
        token: &TokenId,
        sweep_at: Option<Version>,
        seen: &HashSet<Serial>,
        now: DateTime<Utc>,
    ) -> Result<u64, ImportError> {
        for _ in 0..CONFLICT_ROUNDS {
            let devices = self.store.all_devices(token).await?;
            // Expired devices the TTL must not delete (they count in a policy) go now.
            let devices =
                crate::assign::drop_expired_counted(&self.store, token, devices, now).await?;
            let mut listed: HashMap<Serial, bool> = devices
                .iter()
                .map(|s| (s.device.serial.clone(), s.device.is_listed(now)))
                .collect();
            let Some(sweep_at) = sweep_at else {
                return Ok(listed.values().filter(|l| **l).count() as u64);
            };
            let writes: Vec<DeviceWrite> = devices
                .into_iter()
                .filter(|s| s.device.is_listed(now) && !seen.contains(&s.device.serial))
                .filter_map(|Stored { device, revision }| {
                    release(&device, sweep_at, now).map(|released| DeviceWrite {
                        device: released,
                        expected: Some(revision),
                    })
                })
                .collect();
            for write in &writes {
                listed.insert(write.device.serial.clone(), write.device.is_listed(now));
            }
            let released = writes.len();
            let outcome = self.store.write_devices(token, writes).await?;
            if outcome.conflicts.is_empty() {
                if released > 0 {
                    tracing::info!(
                        released,
                        "devices no longer in Apple Business marked removed"
                    );
                }
                return Ok(listed.values().filter(|l| **l).count() as u64);
            }
        }
        Err(ImportError::Contended(0))
    }
}

/// The writes a batch's records call for, given the stored devices: the
/// importer's CPU path between reading and writing (benchmarked on its own
/// in `benches/importer.rs`).
pub fn decide_writes(
    groups: &[SerialRecords],
    stored: &HashMap<Serial, Stored>,
    refreshes: Refreshes,
    now: DateTime<Utc>,
) -> Vec<DeviceWrite> {
    groups
        .iter()
        .filter_map(|group| {
            let current = stored.get(&group.serial);
            // See `Refreshes`: a record that only moves the version is
            // written only when an older batch may still arrive.
            match device::decide_all(current.map(|s| &s.device), &group.records, now) {
                Decision::Write(device) => Some(DeviceWrite {
                    device,
                    expected: current.map(|s| s.revision),
                }),
                Decision::Refresh(device) if refreshes == Refreshes::Write => Some(DeviceWrite {
                    device,
                    expected: current.map(|s| s.revision),
                }),
                Decision::Refresh(_) | Decision::Skip(_) => None,
            }
        })
        .collect()
}

fn split_half<T>(mut items: Vec<T>) -> (Vec<T>, Vec<T>) {
    let rest = items.split_off(items.len() / 2);
    (items, rest)
}

fn release(device: &Device, sweep_at: Version, now: DateTime<Utc>) -> Option<Device> {
    match device::release(device, sweep_at, now) {
        Decision::Write(released) => Some(released),
        Decision::Refresh(_) | Decision::Skip(_) => None,
    }
}
