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

use adesync_core::change::device_change;
use adesync_core::clock::SharedClock;
use adesync_core::device::Stored;
use adesync_core::device::{self, Device, DeviceState, SerialRecords, Version};
use adesync_core::ids::{AccountId, PolicyId, Serial, TokenId};
use adesync_core::run::close::{self, Verdict};
use adesync_core::run::import::{Refreshes, decide_writes, listed_delta};
use adesync_core::run::messages::{BatchMessage, Closing, DeviceBatch, EndOfRun};
use adesync_core::token::TokenStatus;
use adesync_queue::Queues;
use adesync_store::claims::RunEnd;
use adesync_store::progress::{BatchMark, Marked};
use adesync_store::runs::RunRecord;
use adesync_store::{Store, StoreError};
use chrono::{DateTime, Utc};

use crate::announce::{Announcer, Owed, Pending};
use crate::faults::{CrashPoint, Crashed, Faults};

/// Rounds of re-reading devices an API request changed under us before
/// the batch is failed and retried by SQS.
const CONFLICT_ROUNDS: usize = 5;

/// What the importer needs, built once per process.
pub struct Importer {
    pub store: Store,
    pub clock: SharedClock,
    pub faults: Arc<Faults>,
    /// For the assignment job queued when a run closes, and the markers of
    /// a close's later parts.
    pub queues: Queues,
    /// Devices one invocation sweeps and counts when it closes a run.
    pub close_part_devices: usize,
    /// The domain events of the writes (crate::announce).
    pub events: Announcer,
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

/// What applying a batch's records wrote.
#[derive(Debug, Default)]
struct Converged {
    written: usize,
    /// Devices listed now that were not before, minus the reverse: the
    /// token's device count moves with the import, not only at the close.
    listed_delta: i64,
    /// The events of the writes that landed, and their outbox items.
    announced: Pending,
}

/// Where a batch's announcements are owed: its account and the outbox key
/// of this delivery (unique, so a redelivery never overwrites what an
/// earlier delivery owes).
struct Owing<'a> {
    account: &'a AccountId,
    key: String,
}

/// A batch that must be retried (SQS redelivers it; after the queue's
/// `maxReceiveCount` it goes to the dead-letter queue).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("could not queue the next part of the run's close: {0}")]
    Queue(#[from] adesync_queue::QueueError),
    #[error("{0} devices kept changing while this batch was applied")]
    Contended(usize),
    #[error(transparent)]
    Crashed(#[from] Crashed),
}

impl ImportError {
    /// Throttling, a lost connection, devices changing under us: worth
    /// trying again at once. A crash (a fault test's kill) never is.
    fn is_transient(&self) -> bool {
        match self {
            ImportError::Store(error) => error.is_transient(),
            ImportError::Queue(error) => error.is_transient(),
            ImportError::Contended(_) => true,
            ImportError::Crashed(_) => false,
        }
    }
}

impl Importer {
    /// Applies one message of the device-batches queue. Applying is
    /// idempotent, so a passing failure is retried here, in a few seconds:
    /// a failed FIFO record comes back only after the queue's visibility
    /// timeout, holds back its token's later batches meanwhile, and each
    /// hand-back costs one of its receives before the dead-letter queue.
    pub async fn apply(&self, message: &BatchMessage) -> Result<Applied, ImportError> {
        use backon::Retryable;
        (|| self.apply_once(message))
            .retry(
                backon::ExponentialBuilder::default()
                    .with_jitter()
                    .with_min_delay(std::time::Duration::from_millis(50))
                    .with_max_delay(std::time::Duration::from_secs(2))
                    .with_max_times(4),
            )
            .when(ImportError::is_transient)
            .notify(|error, after| {
                tracing::warn!(%error, ?after, "applying the batch failed for a passing reason; retrying")
            })
            .await
    }

    async fn apply_once(&self, message: &BatchMessage) -> Result<Applied, ImportError> {
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
        // What the batch needs to know, read at once: the run, whether a
        // later batch is marked, and the token's default policy. A running
        // run implies its token exists (deleting a token waits for its
        // import); the marking below checks it all the same.
        let started = std::time::Instant::now();
        let (run, later_marked, default) = futures::try_join!(
            self.store.runs.get_run(&batch.token_id, &batch.run_id),
            self.store
                .runs
                .batch_marked_after(&batch.token_id, &batch.run_id, batch.seq),
            self.store
                .policies
                .default_policy_id(&batch.account_id, &batch.token_id),
        )?;
        let run = match run {
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
        let refreshes = if run.batches_imported == batch.seq && !later_marked {
            Refreshes::Skip
        } else {
            tracing::warn!(
                marked = run.batches_imported,
                "batch out of order (or redelivered); writing unchanged devices too"
            );
            Refreshes::Write
        };
        let now = self.clock.now();
        let groups = device::group_by_serial(batch.records.clone());
        let serials: Vec<Serial> = groups.iter().map(|g| g.serial.clone()).collect();
        // Newly synced devices join the token's default policy in the same write.
        let owing = Owing {
            account: &batch.account_id,
            key: format!(
                "{}#{:08}#{:08x}",
                batch.run_id,
                batch.seq,
                rand::random::<u32>()
            ),
        };
        let Converged {
            written,
            listed_delta,
            announced,
        } = self
            .converge(
                &batch.token_id,
                groups,
                refreshes,
                default.as_ref(),
                &owing,
                now,
            )
            .await?;

        self.faults.check(CrashPoint::ImporterBeforeMark)?;
        let marked = self
            .store
            .runs
            .mark_batch_imported(
                BatchMark {
                    account: &batch.account_id,
                    token: &batch.token_id,
                    run: &batch.run_id,
                    seq: batch.seq,
                    imported: serials.len() as u64,
                    listed_delta,
                    snapshot_serials: batch.snapshot.then_some(serials.as_slice()),
                },
                now,
            )
            .await?;
        if marked == Marked::TokenGone {
            // A device written after the token was deleted would be
            // orphaned: the delete requires no running import, but an
            // import that outlived its estimate may still be draining.
            // Undo rather than orphan.
            tracing::warn!("the token was deleted while its batch was applied; undoing its writes");
            if written > 0 {
                self.store
                    .devices
                    .delete_devices(&batch.token_id, &serials)
                    .await?;
            }
            // Undone: nothing to announce.
            for key in &announced.keys {
                self.store.runs.delete_outbox(&batch.token_id, key).await?;
            }
            return Ok(Applied::default());
        }
        // The writes are durable and counted: announce them.
        self.events.publish(&batch.token_id, announced).await;
        let first_time = marked == Marked::First;
        tracing::info!(
            records = serials.len(),
            written,
            duplicate = !first_time,
            ms = started.elapsed().as_millis() as u64,
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
    /// what was written and how it moved the token's listed devices.
    async fn converge(
        &self,
        token: &TokenId,
        mut groups: Vec<SerialRecords>,
        refreshes: Refreshes,
        default: Option<&PolicyId>,
        owing: &Owing<'_>,
        now: DateTime<Utc>,
    ) -> Result<Converged, ImportError> {
        let mut converged = Converged::default();
        for round in 0..CONFLICT_ROUNDS {
            if groups.is_empty() {
                return Ok(converged);
            }
            let serials: Vec<Serial> = groups.iter().map(|g| g.serial.clone()).collect();
            let stored = self.store.devices.get_devices(token, &serials).await?;
            let mut writes = decide_writes(&groups, &stored, refreshes, now);
            let deltas: HashMap<Serial, i64> = writes
                .iter()
                .map(|write| {
                    (
                        write.device.serial.clone(),
                        listed_delta(&stored, write, now),
                    )
                })
                .collect();
            let moves = crate::assign::prepare_writes(
                &self.store.policies,
                token,
                default,
                &stored,
                &mut writes,
                now,
            )
            .await?;
            // What the writes will announce is owed before they are made.
            let changes: Vec<(Owed, Device)> = writes
                .iter()
                .filter_map(|write| {
                    let before = stored.get(&write.device.serial).map(|s| &s.device);
                    let change = device_change(before, &write.device, now)?;
                    Some((
                        Owed {
                            serial: write.device.serial.clone(),
                            change,
                            version: write.device.version,
                        },
                        write.device.clone(),
                    ))
                })
                .collect();
            let key = format!("{}#{round}", owing.key);
            let owed: Vec<Owed> = changes.iter().map(|(owed, _)| owed.clone()).collect();
            self.events.owe(token, &key, &owed, now).await?;
            // An armed crash point splits the writes: the first half lands.
            // Unarmed, the batch's writes go in one stream, with no wait
            // halfway for the slowest call of the first half.
            let outcome = if self.faults.remaining(CrashPoint::ImporterMidBatch) > 0 {
                let (first, rest) = split_half(writes);
                let mut outcome = self.store.devices.write_devices(token, first).await?;
                self.faults.check(CrashPoint::ImporterMidBatch)?;
                let second = self.store.devices.write_devices(token, rest).await?;
                outcome.written += second.written;
                outcome.conflicts.extend(second.conflicts);
                outcome
            } else {
                self.store.devices.write_devices(token, writes).await?
            };
            crate::assign::settle_counts(&self.store.policies, token, moves, &outcome.conflicts)
                .await?;
            converged.written += outcome.written;
            let conflicted: HashSet<Serial> = outcome.conflicts.into_iter().collect();
            if !changes.is_empty() {
                // A conflicted write did not land; its record is decided
                // again in the next round, with an announcement of its own.
                converged.announced.keys.push(key);
                converged.announced.events.extend(
                    changes
                        .iter()
                        .filter(|(owed, _)| !conflicted.contains(&owed.serial))
                        .map(|(owed, device)| {
                            adesync_events::Event::device(
                                owing.account,
                                token,
                                device,
                                owed.change,
                                now,
                            )
                        }),
                );
            }
            converged.listed_delta += deltas
                .iter()
                .filter(|(serial, _)| !conflicted.contains(*serial))
                .map(|(_, delta)| delta)
                .sum::<i64>();
            groups.retain(|g| conflicted.contains(&g.serial));
        }
        if groups.is_empty() {
            Ok(converged)
        } else {
            Err(ImportError::Contended(groups.len()))
        }
    }

    /// Closes a run once all its batches were applied (FIFO order puts this
    /// marker behind them), one part of the token's devices per marker:
    /// each part sweeps and counts up to `close_part_devices` devices, a
    /// page at a time, and queues the marker of the next part behind
    /// itself; the last part records the count and ends the run. A part
    /// that fails is redelivered and done again (its writes are
    /// conditional, and the next part's marker, deduplicated by SQS, is
    /// sent at most once).
    #[tracing::instrument(skip(self, end), fields(token = %end.token_id, run = %end.run_id, part = end.closing.as_ref().map_or(0, |c| c.part)))]
    async fn close_run(&self, end: &EndOfRun) -> Result<(), ImportError> {
        let started = std::time::Instant::now();
        let now = self.clock.now();
        let run = self.store.runs.get_run(&end.token_id, &end.run_id).await?;
        if run.as_ref().is_some_and(RunRecord::is_over) {
            tracing::info!("run already closed; ignoring a repeated end-of-run marker");
            // A close that crashed before it published finds its events here.
            self.events.flush(&end.account_id, &end.token_id, now).await;
            return Ok(());
        }
        let (run_started_at, run_imported) =
            run.map_or((now, 0), |run| (run.started_at, run.imported));
        let so_far = match &end.closing {
            Some(closing) => closing.clone(),
            None => {
                let markers = self
                    .store
                    .runs
                    .count_batch_markers(&end.token_id, &end.run_id)
                    .await?;
                Closing {
                    part: 0,
                    missing: end.batches.saturating_sub(markers),
                    after: None,
                    listed: 0,
                    released: 0,
                }
            }
        };
        let verdict = close::verdict(end, so_far.missing);
        let mut part = self.sweep_part(end, &so_far, verdict.sweep_at, now).await?;
        self.events
            .publish(&end.token_id, std::mem::take(&mut part.announced))
            .await;
        let tally = Closing {
            part: so_far.part + 1,
            missing: so_far.missing,
            after: part.through.clone().or(so_far.after),
            listed: so_far.listed + part.listed,
            released: so_far.released + part.released,
        };
        if part.full {
            // A part of the close is progress: the run keeps its token.
            self.store
                .runs
                .renew_lease(&end.account_id, &end.token_id, &end.run_id, now)
                .await?;
            let next = BatchMessage::EndOfRun(EndOfRun {
                closing: Some(tally.clone()),
                ..end.clone()
            });
            self.queues.send_batch_messages(&[next]).await?;
            self.faults.check(CrashPoint::ImporterAfterNextPart)?;
            tracing::info!(
                swept = part.devices,
                ms = started.elapsed().as_millis() as u64,
                listed = tally.listed,
                released = tally.released,
                "part of the run's close done; the next part is queued"
            );
            return Ok(());
        }
        self.finish_close(end, verdict, &tally, (run_started_at, run_imported), now)
            .await
    }

    /// The last part of a run's close: records the count, ends the run and
    /// releases the lease.
    async fn finish_close(
        &self,
        end: &EndOfRun,
        verdict: Verdict,
        tally: &Closing,
        (run_started_at, imported): (DateTime<Utc>, u64),
        now: DateTime<Utc>,
    ) -> Result<(), ImportError> {
        let Verdict {
            status,
            error,
            warning,
            ..
        } = verdict;
        // Owed before the run is recorded over, published after: a close
        // redelivered after a crash finds it (see crate::announce).
        let finished_key = format!("{}#finished", end.run_id);
        let finished = adesync_events::Event::sync_finished(
            &end.account_id,
            &end.token_id,
            adesync_events::RunDetail {
                run_id: end.run_id.to_string(),
                kind: end.kind.as_str().to_owned(),
                outcome: status.as_str().to_owned(),
                fetched: end.fetched,
                imported,
                listed: tally.listed,
                released: tally.released,
                duration_ms: u64::try_from((now - run_started_at).num_milliseconds()).unwrap_or(0),
                error: error.clone(),
            },
            now,
        );
        self.events
            .owe_events(&end.token_id, &finished_key, &[finished], now)
            .await?;
        // The token is brought up to date before the run record says the
        // run is over: a client that waits for the run (the CLI's --watch)
        // then reads the token's count and status as this run left them.
        self.store
            .runs
            .set_device_count(&end.account_id, &end.token_id, tally.listed)
            .await?;
        if error.is_none() {
            // Back to `ok` after Apple refused the token (terms, invalid).
            self.events
                .status_changed(
                    &end.account_id,
                    &end.token_id,
                    TokenStatus::Ok.as_str(),
                    now,
                )
                .await;
        }
        if error.is_none()
            && let Err(e) = self
                .store
                .tokens
                .set_token_status(&end.account_id, &end.token_id, TokenStatus::Ok, None, now)
                .await
        {
            tracing::warn!(error = %e, "could not clear the token's status after a successful sync");
        }
        let recorded = self
            .store
            .runs
            .record_run_closed(
                &end.token_id,
                &end.run_id,
                status,
                error.as_deref(),
                warning.as_deref(),
                now,
            )
            .await?;
        if !recorded {
            tracing::warn!("the run was recorded abandoned while it closed; its record stays so");
            self.store
                .runs
                .delete_outbox(&end.token_id, &finished_key)
                .await?;
        }
        let run_end = match &error {
            None => RunEnd::Succeeded,
            Some(error) => RunEnd::Failed {
                error: error.clone(),
            },
        };
        let lease_released = self
            .store
            .claims
            .finish_run(
                &end.account_id,
                &end.token_id,
                &end.run_id,
                end.kind,
                run_started_at,
                &run_end,
                now,
            )
            .await?;
        // Devices the run put into the default policy are assigned with Apple now.
        match crate::assign::queue_if_due(
            &self.store.devices,
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
        // sync.finished, and whatever earlier publishes left in the outbox.
        self.events.flush(&end.account_id, &end.token_id, now).await;
        if tally.released > 0 {
            tracing::info!(
                released = tally.released,
                "devices no longer in Apple Business marked removed"
            );
        }
        tracing::info!(
            status = status.as_str(),
            listed = tally.listed,
            parts = tally.part,
            lease_released,
            "run closed"
        );
        Ok(())
    }

    /// One part of a run's close: the next `close_part_devices` devices
    /// after `so_far.after`, read a page at a time. With `sweep_at` set
    /// (a complete snapshot), listed devices it did not contain are
    /// released; every device is counted.
    async fn sweep_part(
        &self,
        end: &EndOfRun,
        so_far: &Closing,
        sweep_at: Option<Version>,
        now: DateTime<Utc>,
    ) -> Result<Part, ImportError> {
        let token = &end.token_id;
        let after = so_far.after.as_ref();
        // A sweep needs the part's range first, to hold only that range of
        // the snapshot in memory; a count alone reads the devices once.
        let (through, in_range, seen) = match sweep_at {
            Some(_) => {
                let Some((through, in_range)) = self
                    .store
                    .devices
                    .serial_after(token, after, self.close_part_devices)
                    .await?
                else {
                    return Ok(Part::default());
                };
                let seen = self
                    .store
                    .runs
                    .snapshot_serials_between(token, &end.run_id, after, &through)
                    .await?;
                (Some(through), in_range, seen)
            }
            None => (None, 0, HashSet::new()),
        };
        let mut part = Part::default();
        let mut page_after = after.cloned();
        loop {
            let room = self.close_part_devices.saturating_sub(part.devices);
            let limit = u32::try_from(room).unwrap_or(u32::MAX).min(SWEEP_PAGE);
            let (page, next) = self
                .store
                .devices
                .device_summaries_page(token, page_after.as_ref(), through.as_ref(), limit)
                .await?;
            part.devices += page.len();
            if let Some(last) = page.last() {
                part.through = Some(last.serial.clone());
            }
            let triage = close::triage(&page, &seen, sweep_at, now);
            part.listed += triage.listed;
            if !triage.to_read.is_empty() {
                let devices = self
                    .store
                    .devices
                    .get_devices(token, &triage.to_read)
                    .await?
                    .into_values()
                    .collect();
                let swept = self.sweep_page(end, devices, &seen, sweep_at, now).await?;
                part.announced.extend(swept.announced);
                part.listed += swept.listed;
                part.released += swept.released;
            }
            match next {
                Some(next) if part.devices < self.close_part_devices => page_after = Some(next),
                Some(_) => {
                    part.full = true;
                    break;
                }
                None => break,
            }
        }
        if through.is_some() {
            // The range was a full part's worth of devices when it was
            // measured; it ends at `through` even if an API delete took its
            // last device since.
            part.full = in_range >= self.close_part_devices;
            part.through = through;
        }
        Ok(part)
    }

    /// `device.deleted` (reason `expired`) for the devices a close deleted
    /// past their deletion date; an administrator's delete was announced
    /// when it happened. Published at once, kept in the outbox if the bus
    /// refuses (the devices are gone: nothing could rebuild the events).
    async fn announce_expired(&self, end: &EndOfRun, deleted: &[Device], now: DateTime<Utc>) {
        let events: Vec<adesync_events::Event> = deleted
            .iter()
            .filter(|device| device.state != DeviceState::DeletedByAdmin)
            .map(|device| {
                adesync_events::Event::device_deleted(
                    &end.account_id,
                    &end.token_id,
                    &device.serial,
                    "expired",
                    device.deletes_at.unwrap_or(now),
                )
            })
            .collect();
        let key = format!("{}#expired#{:08x}", end.run_id, rand::random::<u32>());
        self.events
            .publish_or_keep(&end.token_id, &key, events, now)
            .await;
    }

    /// Sweeps and counts devices [`triage`] picked, re-reading those an
    /// API request changed meanwhile.
    async fn sweep_page(
        &self,
        end: &EndOfRun,
        page: Vec<Stored>,
        seen: &HashSet<Serial>,
        sweep_at: Option<Version>,
        now: DateTime<Utc>,
    ) -> Result<Swept, ImportError> {
        let token = &end.token_id;
        let mut swept = Swept::default();
        let mut devices = page;
        for _ in 0..CONFLICT_ROUNDS {
            // Devices past their deletion date go now, announced (the TTL
            // would remove them silently, and without their policy counts).
            let (kept, deleted) =
                crate::assign::drop_expired(&self.store, token, devices, now).await?;
            devices = kept;
            self.announce_expired(end, &deleted, now).await;
            let before: HashMap<Serial, Device> = devices
                .iter()
                .map(|s| (s.device.serial.clone(), s.device.clone()))
                .collect();
            let plan = close::plan_sweep(devices, seen, sweep_at, now);
            swept.listed += plan.listed;
            // Releases are owed before they are written, like a batch's changes.
            let changes: Vec<Owed> = plan
                .writes
                .iter()
                .filter_map(|write| {
                    Some(Owed {
                        serial: write.device.serial.clone(),
                        change: device_change(
                            before.get(&write.device.serial),
                            &write.device,
                            now,
                        )?,
                        version: write.device.version,
                    })
                })
                .collect();
            let key = format!("{}#sweep#{:08x}", end.run_id, rand::random::<u32>());
            self.events.owe(token, &key, &changes, now).await?;
            let outcome = self
                .store
                .devices
                .write_devices(token, plan.writes.clone())
                .await?;
            let conflicted: HashSet<Serial> = outcome.conflicts.into_iter().collect();
            if !changes.is_empty() {
                swept.announced.keys.push(key);
                let written: HashMap<&Serial, &Device> = plan
                    .writes
                    .iter()
                    .map(|w| (&w.device.serial, &w.device))
                    .collect();
                swept.announced.events.extend(
                    changes
                        .iter()
                        .filter(|owed| !conflicted.contains(&owed.serial))
                        .filter_map(|owed| {
                            Some(adesync_events::Event::device(
                                &end.account_id,
                                token,
                                written.get(&owed.serial)?,
                                owed.change,
                                now,
                            ))
                        }),
                );
            }
            for write in plan
                .writes
                .iter()
                .filter(|w| !conflicted.contains(&w.device.serial))
            {
                swept.released += 1;
                swept.listed += u64::from(write.device.is_listed(now));
            }
            if conflicted.is_empty() {
                return Ok(swept);
            }
            let serials: Vec<Serial> = conflicted.into_iter().collect();
            devices = self
                .store
                .devices
                .get_devices(token, &serials)
                .await?
                .into_values()
                .collect();
        }
        Err(ImportError::Contended(devices.len()))
    }
}

/// Devices summarised per query while closing a run: bounds the
/// importer's memory (DynamoDB ends a page sooner, at 1 MB of items read).
const SWEEP_PAGE: u32 = 2_000;

/// What one part of a close did.
#[derive(Debug, Default)]
struct Part {
    /// Devices in the part.
    devices: usize,
    /// The part had as many devices as a part holds: more may follow.
    full: bool,
    /// Its last serial.
    through: Option<Serial>,
    listed: u64,
    released: u64,
    /// The releases it wrote, to announce.
    announced: Pending,
}

/// What sweeping a page did.
#[derive(Debug, Default)]
struct Swept {
    listed: u64,
    released: u64,
    announced: Pending,
}

fn split_half<T>(mut items: Vec<T>) -> (Vec<T>, Vec<T>) {
    let rest = items.split_off(items.len() / 2);
    (items, rest)
}
