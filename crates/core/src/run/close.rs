//! The pure decisions of closing a run: how it ends, which devices a page
//! of the close must read, and which of them it releases.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use crate::device::{self, Decision, Device, DeviceSummary, DeviceWrite, Stored, Version};
use crate::ids::Serial;
use crate::run::RunStatus;
use crate::run::messages::{EndOfRun, RunOutcome};

/// How a run ends, decided from how its fetching ended and how many of its
/// batches are missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub status: RunStatus,
    pub error: Option<String>,
    pub warning: Option<String>,
    /// Release the devices the snapshot did not contain, as of this version.
    pub sweep_at: Option<Version>,
}

/// See [`Verdict`]. A complete snapshot tells which devices are no longer
/// assigned; an incomplete one must not release devices whose batch was lost.
pub fn verdict(end: &EndOfRun, missing: u64) -> Verdict {
    match &end.outcome {
        RunOutcome::Failed { error } => Verdict {
            status: RunStatus::Failed,
            error: Some(error.clone()),
            warning: None,
            sweep_at: None,
        },
        RunOutcome::Finished { .. } if missing > 0 => Verdict {
            status: RunStatus::Failed,
            error: Some(format!(
                "{missing} of {} device batches could not be imported and are in the dead-letter queue; devices in them may be out of date until the next sync.",
                end.batches
            )),
            warning: None,
            sweep_at: None,
        },
        RunOutcome::Finished { warning, sweep_at } => Verdict {
            status: RunStatus::Succeeded,
            error: None,
            warning: warning.clone(),
            sweep_at: *sweep_at,
        },
    }
}

/// Which devices of a page a close must read in full, and how many of
/// the others are listed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Triage {
    pub to_read: Vec<Serial>,
    pub listed: u64,
}

/// Sorts a page of summaries: a device is read in full when the close may
/// write it — listed but absent from a complete snapshot (`seen`, with
/// `sweep_at` set: released), or past its deletion date (deleted by the
/// close, with its policy count if a policy counts it, and announced —
/// DynamoDB's TTL would remove it silently, days later, and without its
/// count). Every other listed device is only counted, so closing a run
/// reads no device item it leaves alone.
pub fn triage(
    page: &[DeviceSummary],
    seen: &HashSet<Serial>,
    sweep_at: Option<Version>,
    now: DateTime<Utc>,
) -> Triage {
    let mut triage = Triage::default();
    for summary in page {
        let listed = device::listed(summary.state, summary.deletes_at, now);
        let expired = device::expired(summary.deletes_at, now);
        let unseen = sweep_at.is_some() && listed && !seen.contains(&summary.serial);
        if expired || unseen {
            triage.to_read.push(summary.serial.clone());
        } else {
            triage.listed += u64::from(listed);
        }
    }
    triage
}

/// What a page of a close writes, and how many of the devices it leaves
/// unwritten are listed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SweepPlan {
    pub writes: Vec<DeviceWrite>,
    pub listed: u64,
}

/// The releases a page of stored devices calls for: with `sweep_at` set,
/// every listed device the snapshot did not contain (`seen`) is released as
/// of that version; every device left as it is and listed is counted.
pub fn plan_sweep(
    devices: Vec<Stored>,
    seen: &HashSet<Serial>,
    sweep_at: Option<Version>,
    now: DateTime<Utc>,
) -> SweepPlan {
    let mut plan = SweepPlan::default();
    for Stored { device, revision } in devices {
        let released = sweep_at
            .filter(|_| device.is_listed(now) && !seen.contains(&device.serial))
            .and_then(|at| release(&device, at, now));
        match released {
            Some(released) => plan.writes.push(DeviceWrite {
                device: released,
                expected: Some(revision),
            }),
            None => plan.listed += u64::from(device.is_listed(now)),
        }
    }
    plan
}

fn release(device: &Device, sweep_at: Version, now: DateTime<Utc>) -> Option<Device> {
    match device::release(device, sweep_at, now) {
        Decision::Write(released) => Some(released),
        Decision::Refresh(_) | Decision::Skip(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{AppleAttributes, DeviceState, Management};
    use crate::ids::{AccountId, RunId, TokenId};
    use crate::sync::SyncKind;

    fn at(days: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap() + chrono::Duration::days(days)
    }

    fn stored(serial: &str, state: DeviceState, revision: u64) -> Stored {
        Stored {
            device: Device {
                serial: Serial::parse(serial).unwrap(),
                state,
                attributes: AppleAttributes::default(),
                version: Version::for_snapshot(at(0), 0),
                attributes_version: None,
                removed_at: None,
                released_by_replacement: false,
                deletes_at: None,
                deleted_at: None,
                policy_id: None,
                management: Management::default(),
                first_seen_at: at(0),
            },
            revision,
        }
    }

    fn serials(list: &[&str]) -> HashSet<Serial> {
        list.iter().map(|s| Serial::parse(s).unwrap()).collect()
    }

    #[test]
    fn a_full_sync_releases_the_listed_devices_its_snapshot_did_not_contain() {
        let page = vec![
            stored("SEEN1", DeviceState::Active, 3),
            stored("GONE1", DeviceState::Active, 5),
            stored("GONE2", DeviceState::DeletedByAdmin, 2),
        ];
        let sweep_at = Version::for_snapshot(at(7), 0);
        let plan = plan_sweep(page, &serials(&["SEEN1"]), Some(sweep_at), at(7));

        assert_eq!(plan.writes.len(), 1, "{plan:?}");
        let write = &plan.writes[0];
        assert_eq!(write.device.serial.as_str(), "GONE1");
        assert_eq!(write.device.state, DeviceState::RemovedFromApple);
        assert_eq!(write.expected, Some(5), "conditional on the revision read");
        // SEEN1 is counted as it is; the admin-deleted device is not listed.
        assert_eq!(plan.listed, 1);
    }

    #[test]
    fn without_a_complete_snapshot_devices_are_only_counted() {
        let page = vec![
            stored("ONE", DeviceState::Active, 1),
            stored("TWO", DeviceState::RemovedFromApple, 1),
            stored("THREE", DeviceState::DeletedByAdmin, 1),
        ];
        let plan = plan_sweep(page, &HashSet::new(), None, at(7));
        assert!(plan.writes.is_empty());
        assert_eq!(plan.listed, 2);
    }

    fn summary(
        serial: &str,
        state: DeviceState,
        deletes_at: Option<i64>,
        counted: bool,
    ) -> DeviceSummary {
        DeviceSummary {
            serial: Serial::parse(serial).unwrap(),
            state,
            deletes_at: deletes_at.map(at),
            counted,
        }
    }

    #[test]
    fn a_close_reads_in_full_only_the_devices_it_may_write() {
        let page = vec![
            summary("SEEN1", DeviceState::Active, None, true),
            summary("GONE1", DeviceState::Active, None, false),
            // Expired while a policy counts it: deleted with its count.
            summary("OLD1", DeviceState::RemovedFromApple, Some(6), true),
            // Expired, uncounted: deleted by the close too, not listed.
            summary("OLD2", DeviceState::DeletedByAdmin, Some(6), false),
            // Deleted, not expired: not listed, nothing to do.
            summary("DEL1", DeviceState::DeletedByAdmin, Some(30), true),
            summary("REM1", DeviceState::RemovedFromApple, Some(30), false),
        ];
        let sweep_at = Some(Version::for_snapshot(at(7), 0));
        let full = triage(&page, &serials(&["SEEN1"]), sweep_at, at(7));
        let read: Vec<&str> = full.to_read.iter().map(Serial::as_str).collect();
        // REM1 is listed and unseen, so it is read too (release leaves it be).
        assert_eq!(read, ["GONE1", "OLD1", "OLD2", "REM1"]);
        assert_eq!(full.listed, 1, "SEEN1");

        let count_only = triage(&page, &HashSet::new(), None, at(7));
        let read: Vec<&str> = count_only.to_read.iter().map(Serial::as_str).collect();
        assert_eq!(read, ["OLD1", "OLD2"]);
        assert_eq!(count_only.listed, 3, "SEEN1, GONE1, REM1");
    }

    fn end(outcome: RunOutcome) -> EndOfRun {
        EndOfRun {
            account_id: AccountId::parse("a").unwrap(),
            token_id: TokenId::parse("t").unwrap(),
            run_id: RunId::parse("r").unwrap(),
            kind: SyncKind::Full,
            batches: 40,
            fetched: 20_000,
            outcome,
            closing: None,
        }
    }

    #[test]
    fn a_run_with_batches_in_the_dead_letter_queue_fails_and_releases_nothing() {
        let finished = end(RunOutcome::Finished {
            sweep_at: Some(Version::for_snapshot(at(7), 0)),
            warning: None,
        });
        let complete = verdict(&finished, 0);
        assert_eq!(complete.status, RunStatus::Succeeded);
        assert!(complete.sweep_at.is_some());

        let incomplete = verdict(&finished, 2);
        assert_eq!(incomplete.status, RunStatus::Failed);
        assert_eq!(incomplete.sweep_at, None);
        assert!(
            incomplete
                .error
                .as_deref()
                .unwrap()
                .starts_with("2 of 40 device batches"),
            "{incomplete:?}"
        );

        let failed = verdict(
            &end(RunOutcome::Failed {
                error: "Apple answered 503".into(),
            }),
            0,
        );
        assert_eq!(failed.status, RunStatus::Failed);
        assert_eq!(failed.sweep_at, None);
    }
}
