//! A sync run's lifecycle and what can honestly be said about it while it goes.
//!
//! A run is `running` while the worker pages Apple, `importing` once the
//! last page was fetched, then `succeeded`, `failed` or `abandoned` (no
//! progress for 15 minutes: see [`crate::sync::LEASE`]). Its progress is
//! counted by two writers that never wait for each other: the worker adds
//! a page's devices to `fetched` once SQS accepted them, the importer adds
//! a batch's devices to `imported` once they are written. The importer can
//! therefore run ahead of the worker's count by one page; every imported
//! device was fetched, so [`Estimate::fetched`] shows the larger of the two.

pub mod close;
pub mod import;
pub mod messages;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::sync::{APPLE_DEVICES_PER_MINUTE, SyncKind};

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Paging Apple.
    Running,
    /// Every page fetched; the last batches and the close are being applied.
    Importing,
    Succeeded,
    Failed,
    /// It made no progress for 15 minutes and lost its token.
    Abandoned,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Importing => "importing",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Abandoned => "abandoned",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "running" => RunStatus::Running,
            "importing" => RunStatus::Importing,
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            "abandoned" => RunStatus::Abandoned,
            _ => return None,
        })
    }

    /// Whether the run has ended one way or another.
    pub fn is_over(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Abandoned
        )
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error recorded on a run that made no progress for 15 minutes.
pub const ABANDONED_ERROR: &str = "The sync made no progress for 15 minutes and was abandoned; the next sync starts over (a full sync if this one was full).";

/// What a run's record says about its progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub kind: SyncKind,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    pub fetch_finished_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Devices the token listed when the run started; None for a token
    /// never synced before (its size is not known until Apple says).
    pub expected: Option<u64>,
    pub fetched: u64,
    pub imported: u64,
}

/// What the status shows about a run's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    /// Devices fetched from Apple: never fewer than those imported.
    pub fetched: u64,
    /// Seconds until the run should be over: 0 once it is; None while the
    /// total is not known (a new token's first sync or a delta still
    /// fetching, or Apple sending more devices than the token had). Never
    /// 0 while work remains.
    pub seconds_left: Option<u64>,
    /// The rate the run has achieved, once it means something (10 seconds
    /// and 100 devices in).
    pub devices_per_minute: Option<u64>,
}

/// Below these a measured rate is noise: Apple's pace is assumed instead.
const MIN_MEASURED_SECONDS: f64 = 10.0;
const MIN_MEASURED_DEVICES: u64 = 100;

/// See [`Estimate`]. While fetching, what is left is paced by Apple (the
/// measured fetch rate, or 3,000 devices per minute until measured); once
/// fetched, by the import (the measured import rate).
pub fn estimate(progress: &Progress, now: DateTime<Utc>) -> Estimate {
    let fetched = progress.fetched.max(progress.imported);
    let end = progress.finished_at.unwrap_or(now);
    let elapsed = ((end - progress.started_at).num_milliseconds().max(0) as f64) / 1000.0;
    let fetching = progress.fetch_finished_at.is_none() && !progress.status.is_over();
    let counted = if fetching { fetched } else { progress.imported };
    let measured = (elapsed >= MIN_MEASURED_SECONDS && counted >= MIN_MEASURED_DEVICES)
        .then(|| counted as f64 / elapsed);
    let devices_per_minute = measured.map(|per_second| (per_second * 60.0).round() as u64);
    let per_second = measured.unwrap_or(APPLE_DEVICES_PER_MINUTE as f64 / 60.0);

    let remaining = if progress.status.is_over() {
        Some(0)
    } else if !fetching {
        Some(fetched.saturating_sub(progress.imported))
    } else {
        match (progress.kind, progress.expected) {
            (SyncKind::Full, Some(expected)) if expected > fetched => {
                Some(expected - progress.imported.min(expected))
            }
            _ => None,
        }
    };
    let seconds_left = remaining.map(|devices| {
        if progress.status.is_over() {
            0
        } else {
            // A run that is not over has work left, if only its close.
            ((devices as f64 / per_second).ceil() as u64).max(1)
        }
    });
    Estimate {
        fetched,
        seconds_left,
        devices_per_minute,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn full(
        expected: Option<u64>,
        fetched: u64,
        imported: u64,
        seconds: i64,
    ) -> (Progress, DateTime<Utc>) {
        (
            Progress {
                kind: SyncKind::Full,
                status: RunStatus::Running,
                started_at: t0(),
                fetch_finished_at: None,
                finished_at: None,
                expected,
                fetched,
                imported,
            },
            t0() + Duration::seconds(seconds),
        )
    }

    #[test]
    fn statuses_read_back_and_say_whether_the_run_is_over() {
        for status in [
            RunStatus::Running,
            RunStatus::Importing,
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Abandoned,
        ] {
            assert_eq!(RunStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(RunStatus::parse("stuck"), None);
        assert!(!RunStatus::Importing.is_over());
        assert!(RunStatus::Abandoned.is_over());
    }

    #[test]
    fn a_new_tokens_first_sync_has_no_estimate_until_apple_has_said_all() {
        let (run, now) = full(None, 44_000, 43_000, 900);
        let estimate = estimate(&run, now);
        assert_eq!(estimate.seconds_left, None, "never a confident 0");
        // 44,000 in 900 s.
        assert_eq!(estimate.devices_per_minute, Some(2_933));
    }

    #[test]
    fn a_known_token_is_estimated_from_its_last_count_at_the_measured_pace() {
        // 200,000 devices last time; 30,000 fetched in 10 minutes = 3,000/min.
        let (run, now) = full(Some(200_000), 30_000, 29_000, 600);
        let estimate = estimate(&run, now);
        assert_eq!(estimate.devices_per_minute, Some(3_000));
        // 171,000 still to import at 50 per second.
        assert_eq!(estimate.seconds_left, Some(3_420));

        // Before a rate is measured, Apple's 3,000 per minute.
        let (early, now) = full(Some(6_000), 0, 0, 2);
        assert_eq!(super::estimate(&early, now).seconds_left, Some(120));
        assert_eq!(super::estimate(&early, now).devices_per_minute, None);
    }

    #[test]
    fn a_token_that_grew_past_its_last_count_has_no_estimate_while_fetching() {
        let (run, now) = full(Some(1_000), 1_500, 1_200, 60);
        assert_eq!(estimate(&run, now).seconds_left, None);
    }

    #[test]
    fn imported_ahead_of_fetched_shows_as_fetched() {
        let (run, now) = full(Some(50_000), 44_000, 45_000, 900);
        let estimate = estimate(&run, now);
        assert_eq!(estimate.fetched, 45_000);
        assert!(estimate.seconds_left.is_some_and(|s| s > 0));
    }

    #[test]
    fn after_the_fetch_what_is_left_is_the_import_and_never_zero_until_the_run_ends() {
        let (mut run, now) = full(None, 10_000, 9_000, 100);
        run.status = RunStatus::Importing;
        run.fetch_finished_at = Some(now);
        // 9,000 imported in 100 s = 90/s; 1,000 left.
        assert_eq!(estimate(&run, now).seconds_left, Some(12));
        run.imported = 10_000;
        assert_eq!(
            estimate(&run, now).seconds_left,
            Some(1),
            "the close is left"
        );
        run.status = RunStatus::Succeeded;
        run.finished_at = Some(now);
        let over = estimate(&run, now + Duration::hours(1));
        assert_eq!(over.seconds_left, Some(0));
        assert_eq!(
            over.devices_per_minute,
            Some(6_000),
            "over the run's own duration"
        );
    }

    #[test]
    fn a_delta_has_no_estimate_until_its_pages_are_in() {
        let (mut run, now) = full(Some(5_000), 20, 20, 30);
        run.kind = SyncKind::Delta;
        assert_eq!(estimate(&run, now).seconds_left, None);
    }
}
