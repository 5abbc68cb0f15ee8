//! Who may start a sync of a token, and when.
//!
//! The rules (docs/product.md "Sync"):
//! - a manual sync at most once every 15 minutes per token;
//! - a full sync at most once every 7 days per token, counted from the last
//!   full sync that completed;
//! - one sync at a time: a claimed run holds a 15-minute lease that each of
//!   its durable steps renews ([`renewed_lease`]); a run that makes no
//!   progress for 15 minutes is abandoned so the next sync may start;
//! - a full sync is owed from the moment one is claimed until one completes
//!   (`next_sync_is_full`): a full run that fails or is abandoned is
//!   followed by a full one at the next opportunity, and so is a failed
//!   delta (the cursor can no longer be trusted), whatever the 7-day rule
//!   says: that recovery is Apple's requirement, not a user's choice;
//! - above 200,000 devices, a manual sync is refused while the previous
//!   import still runs.
//!
//! [`claim`] is the rule as a pure function. The DynamoDB adapter enforces
//! the same rule with one conditional write whose condition asserts exactly
//! the preconditions [`claim`] relied on, and calls [`claim`] again on the
//! item returned by a failed condition to say which rule refused and when
//! to retry.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::RunId;

/// Minimum time between two manual syncs of a token.
pub const MANUAL_COOLDOWN: Duration = Duration::minutes(15);
/// Minimum time between two full syncs of a token.
pub const FULL_COOLDOWN: Duration = Duration::days(7);
/// How long a run may go without progress before it is abandoned.
pub const LEASE: Duration = Duration::minutes(15);
/// How often the scheduler runs a delta sync of every token.
pub const DELTA_INTERVAL: Duration = Duration::hours(12);
/// Above this many devices a token is "large": sync problems are likely.
pub const LARGE_TOKEN_DEVICES: u64 = 200_000;
/// Apple's delivery rate, used for estimates until a measured rate exists.
pub const APPLE_DEVICES_PER_MINUTE: u64 = 3_000;

/// What a sync fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncKind {
    /// Changes since the last cursor.
    Delta,
    /// The complete list of devices assigned to the MDM server.
    Full,
}

impl SyncKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncKind::Delta => "delta",
            SyncKind::Full => "full",
        }
    }
}

/// Who asked for a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// An administrator's "Sync" request (subject to the 15-minute cooldown).
    Manual,
    /// The 12-hour delta schedule or the 7-day full-sync sweep.
    Scheduled,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Scheduled => "scheduled",
        }
    }
}

/// A request to start a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncRequest {
    pub trigger: Trigger,
    pub kind: SyncKind,
}

/// The run currently holding a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub run_id: RunId,
    pub expires_at: DateTime<Utc>,
}

/// A run whose devices are still being imported after its fetch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportInProgress {
    pub run_id: RunId,
    /// When the estimate says the import should be over; past it the
    /// import no longer blocks, so a lost batch cannot block a token forever.
    pub expires_at: DateTime<Utc>,
}

/// The sync-related state stored on a token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncState {
    pub last_manual_at: Option<DateTime<Utc>>,
    /// When the last full sync that completed started.
    pub last_full_at: Option<DateTime<Utc>>,
    pub lease: Option<Lease>,
    /// A full sync is owed (one was claimed and has not completed, or a
    /// delta failed): the next sync of any kind is a full one.
    pub next_sync_is_full: bool,
    pub import: Option<ImportInProgress>,
    pub device_count: u64,
}

/// A granted sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub run_id: RunId,
    pub trigger: Trigger,
    /// The kind that will run; a delta becomes full while a full is owed.
    pub kind: SyncKind,
    /// True when this full sync recovers from a failed or abandoned run.
    pub recovery: bool,
    pub started_at: DateTime<Utc>,
    pub lease_expires_at: DateTime<Utc>,
    /// A still-importing large token (the caller warns about it).
    pub large_token: bool,
}

/// Why a sync may not start now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "a manual sync of this token ran less than 15 minutes ago; retry at {retry_at} (manual syncs are allowed once every 15 minutes)"
    )]
    ManualCooldown { retry_at: DateTime<Utc> },
    #[error(
        "a full sync of this token ran less than 7 days ago; retry at {retry_at} or request a delta sync (full syncs are allowed once every 7 days)"
    )]
    FullCooldown { retry_at: DateTime<Utc> },
    #[error(
        "sync {run_id} of this token is still running; wait for it to finish (it is abandoned if it makes no progress until {lease_expires_at})"
    )]
    SyncInProgress {
        run_id: RunId,
        lease_expires_at: DateTime<Utc>,
    },
    #[error(
        "this token has more than 200,000 devices and the import of sync {run_id} is still running (about {estimated_seconds} seconds at 3,000 devices per minute); retry when it completes, and consider splitting devices across tokens"
    )]
    LargeImportRunning {
        run_id: RunId,
        estimated_seconds: u64,
        retry_at: DateTime<Utc>,
    },
}

impl Refusal {
    /// The stable error code of the HTTP contract.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::ManualCooldown { .. } => "manual_sync_cooldown",
            Refusal::FullCooldown { .. } => "full_sync_cooldown",
            Refusal::SyncInProgress { .. } => "sync_in_progress",
            Refusal::LargeImportRunning { .. } => "large_import_running",
        }
    }

    /// The earliest moment the same request could succeed.
    pub fn retry_at(&self) -> DateTime<Utc> {
        match self {
            Refusal::ManualCooldown { retry_at }
            | Refusal::FullCooldown { retry_at }
            | Refusal::LargeImportRunning { retry_at, .. } => *retry_at,
            Refusal::SyncInProgress {
                lease_expires_at, ..
            } => *lease_expires_at,
        }
    }

    /// Whole seconds until [`Refusal::retry_at`], rounded up, at least 1.
    pub fn retry_after_seconds(&self, now: DateTime<Utc>) -> u64 {
        seconds_until(now, self.retry_at()).max(1)
    }
}

/// Seconds from `now` to `then`, rounded up; 0 when `then` has passed.
pub fn seconds_until(now: DateTime<Utc>, then: DateTime<Utc>) -> u64 {
    let millis = (then - now).num_milliseconds();
    if millis <= 0 {
        0
    } else {
        u64::try_from(millis).map_or(u64::MAX, |m| m.div_ceil(1000))
    }
}

/// Seconds Apple needs to deliver `devices` at its usual rate.
pub fn apple_delivery_seconds(devices: u64) -> u64 {
    (devices * 60).div_ceil(APPLE_DEVICES_PER_MINUTE)
}

/// Decides whether `request` may start a run now.
///
/// Cooldowns are checked first because they are the rule of the requested
/// kind; then the lease; then the large-token import rule.
pub fn claim(
    state: &SyncState,
    request: SyncRequest,
    now: DateTime<Utc>,
    run_id: RunId,
) -> Result<Claim, Refusal> {
    let recovery = state.next_sync_is_full;
    let kind = if recovery {
        SyncKind::Full
    } else {
        request.kind
    };

    let mut cooldowns = Vec::new();
    if request.trigger == Trigger::Manual
        && let Some(last) = state.last_manual_at
        && now < last + MANUAL_COOLDOWN
    {
        cooldowns.push(Refusal::ManualCooldown {
            retry_at: last + MANUAL_COOLDOWN,
        });
    }
    if kind == SyncKind::Full
        && !recovery
        && let Some(last) = state.last_full_at
        && now < last + FULL_COOLDOWN
    {
        cooldowns.push(Refusal::FullCooldown {
            retry_at: last + FULL_COOLDOWN,
        });
    }
    if let Some(latest) = cooldowns.into_iter().max_by_key(Refusal::retry_at) {
        return Err(latest);
    }

    if let Some(lease) = &state.lease
        && now < lease.expires_at
    {
        return Err(Refusal::SyncInProgress {
            run_id: lease.run_id.clone(),
            lease_expires_at: lease.expires_at,
        });
    }

    let large_token = state.device_count > LARGE_TOKEN_DEVICES;
    if request.trigger == Trigger::Manual
        && large_token
        && let Some(import) = &state.import
        && now < import.expires_at
    {
        return Err(Refusal::LargeImportRunning {
            run_id: import.run_id.clone(),
            estimated_seconds: apple_delivery_seconds(state.device_count),
            retry_at: import.expires_at,
        });
    }

    Ok(Claim {
        run_id,
        trigger: request.trigger,
        kind,
        recovery,
        started_at: now,
        lease_expires_at: now + LEASE,
        large_token,
    })
}

/// The devices a run starting on `previous` should expect: the token's
/// count, or None for a token never synced (its size is not known until
/// Apple says).
pub fn expected_devices(previous: &SyncState) -> Option<u64> {
    (previous.last_full_at.is_some() || previous.device_count > 0).then_some(previous.device_count)
}

/// Until when a run that made progress at `now` holds its token.
pub fn renewed_lease(now: DateTime<Utc>) -> DateTime<Utc> {
    now + LEASE
}

/// The lease whose run made no progress for 15 minutes, if any: that run
/// is abandoned, whoever notices first records it so.
pub fn lapsed_lease(state: &SyncState, now: DateTime<Utc>) -> Option<&Lease> {
    state.lease.as_ref().filter(|lease| lease.expires_at <= now)
}

/// When the import of a run that starts `now` on a token of `device_count`
/// devices may still be running: the lease plus Apple's delivery time.
pub fn import_expires_at(now: DateTime<Utc>, device_count: u64) -> DateTime<Utc> {
    let delivery = i64::try_from(apple_delivery_seconds(device_count)).unwrap_or(i64::MAX / 2);
    now + LEASE + Duration::seconds(delivery)
}

/// When the next manual sync is allowed (None: now).
pub fn next_manual_sync_at(state: &SyncState, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    state
        .last_manual_at
        .map(|last| last + MANUAL_COOLDOWN)
        .filter(|at| *at > now)
}

/// When the next full sync is allowed (None: now).
pub fn next_full_sync_at(state: &SyncState, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if state.next_sync_is_full {
        return None;
    }
    state
        .last_full_at
        .map(|last| last + FULL_COOLDOWN)
        .filter(|at| *at > now)
}

/// Whether the weekly sweep should queue a full sync of this token.
pub fn full_sync_due(state: &SyncState, now: DateTime<Utc>) -> bool {
    state.next_sync_is_full || next_full_sync_at(state, now).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn run(n: u8) -> RunId {
        RunId::parse(&format!("run{n}")).unwrap()
    }

    const MANUAL_DELTA: SyncRequest = SyncRequest {
        trigger: Trigger::Manual,
        kind: SyncKind::Delta,
    };
    const MANUAL_FULL: SyncRequest = SyncRequest {
        trigger: Trigger::Manual,
        kind: SyncKind::Full,
    };
    const SCHEDULED_DELTA: SyncRequest = SyncRequest {
        trigger: Trigger::Scheduled,
        kind: SyncKind::Delta,
    };
    const SCHEDULED_FULL: SyncRequest = SyncRequest {
        trigger: Trigger::Scheduled,
        kind: SyncKind::Full,
    };

    fn after_manual(at: DateTime<Utc>) -> SyncState {
        SyncState {
            last_manual_at: Some(at),
            ..SyncState::default()
        }
    }

    #[test]
    fn first_sync_of_a_new_token_is_granted_with_a_15_minute_lease() {
        let claim = claim(&SyncState::default(), MANUAL_FULL, t0(), run(1)).unwrap();
        assert_eq!(claim.kind, SyncKind::Full);
        assert_eq!(claim.lease_expires_at, t0() + Duration::minutes(15));
        assert!(!claim.recovery);
    }

    #[test]
    fn manual_cooldown_boundary_is_15_minutes() {
        let state = after_manual(t0());
        let at_14_59 = t0() + Duration::minutes(14) + Duration::seconds(59);
        let refusal = claim(&state, MANUAL_DELTA, at_14_59, run(2)).unwrap_err();
        assert_eq!(
            refusal,
            Refusal::ManualCooldown {
                retry_at: t0() + Duration::minutes(15)
            }
        );
        assert_eq!(refusal.retry_after_seconds(at_14_59), 1);
        assert_eq!(refusal.code(), "manual_sync_cooldown");

        let at_15_00 = t0() + Duration::minutes(15);
        assert!(claim(&state, MANUAL_DELTA, at_15_00, run(2)).is_ok());
    }

    #[test]
    fn manual_cooldown_does_not_hold_back_scheduled_syncs() {
        let state = after_manual(t0());
        assert!(claim(&state, SCHEDULED_DELTA, t0() + Duration::minutes(1), run(2)).is_ok());
    }

    #[test]
    fn full_cooldown_boundary_is_7_days() {
        let state = SyncState {
            last_full_at: Some(t0()),
            ..SyncState::default()
        };
        let just_before = t0() + Duration::days(6) + Duration::hours(23) + Duration::minutes(59);
        for request in [MANUAL_FULL, SCHEDULED_FULL] {
            let refusal = claim(&state, request, just_before, run(2)).unwrap_err();
            assert_eq!(
                refusal,
                Refusal::FullCooldown {
                    retry_at: t0() + Duration::days(7)
                }
            );
            assert_eq!(refusal.retry_after_seconds(just_before), 60);
            assert!(claim(&state, request, t0() + Duration::days(7), run(2)).is_ok());
        }
        // A delta is not a full sync and is not held back.
        assert!(claim(&state, MANUAL_DELTA, just_before, run(2)).is_ok());
    }

    #[test]
    fn the_later_of_two_cooldowns_is_reported() {
        let state = SyncState {
            last_manual_at: Some(t0()),
            last_full_at: Some(t0()),
            ..SyncState::default()
        };
        let refusal = claim(&state, MANUAL_FULL, t0() + Duration::minutes(1), run(2)).unwrap_err();
        assert_eq!(refusal.code(), "full_sync_cooldown");
    }

    #[test]
    fn lease_boundary_is_15_minutes() {
        let state = SyncState {
            lease: Some(Lease {
                run_id: run(1),
                expires_at: t0() + LEASE,
            }),
            ..SyncState::default()
        };
        let at_14_59 = t0() + Duration::minutes(14) + Duration::seconds(59);
        let refusal = claim(&state, SCHEDULED_DELTA, at_14_59, run(2)).unwrap_err();
        assert_eq!(
            refusal,
            Refusal::SyncInProgress {
                run_id: run(1),
                lease_expires_at: t0() + LEASE
            }
        );
        assert_eq!(refusal.retry_after_seconds(at_14_59), 1);

        let at_15_01 = t0() + Duration::minutes(15) + Duration::seconds(1);
        let granted = claim(&state, SCHEDULED_DELTA, at_15_01, run(2)).unwrap();
        assert_eq!(granted.run_id, run(2));
    }

    #[test]
    fn a_failed_delta_makes_the_next_sync_a_full_one_despite_the_weekly_rule() {
        let state = SyncState {
            last_full_at: Some(t0()),
            next_sync_is_full: true,
            ..SyncState::default()
        };
        let now = t0() + Duration::hours(12);
        for request in [SCHEDULED_DELTA, MANUAL_DELTA, MANUAL_FULL] {
            let granted = claim(&state, request, now, run(2)).unwrap();
            assert_eq!(granted.kind, SyncKind::Full);
            assert!(granted.recovery);
        }
        assert!(full_sync_due(&state, now));
        assert_eq!(next_full_sync_at(&state, now), None);
    }

    #[test]
    fn large_token_manual_sync_waits_for_the_running_import() {
        let state = SyncState {
            device_count: 250_000,
            import: Some(ImportInProgress {
                run_id: run(1),
                expires_at: t0() + Duration::hours(2),
            }),
            ..SyncState::default()
        };
        let now = t0() + Duration::minutes(30);
        let refusal = claim(&state, MANUAL_DELTA, now, run(2)).unwrap_err();
        assert_eq!(
            refusal,
            Refusal::LargeImportRunning {
                run_id: run(1),
                estimated_seconds: 5_000,
                retry_at: t0() + Duration::hours(2),
            }
        );
        // Scheduled syncs and small tokens are not held back by an import.
        assert!(claim(&state, SCHEDULED_DELTA, now, run(2)).is_ok());
        let small = SyncState {
            device_count: 200_000,
            ..state.clone()
        };
        assert!(claim(&small, MANUAL_DELTA, now, run(2)).is_ok());
        // An import that outlived its estimate no longer blocks.
        assert!(claim(&state, MANUAL_DELTA, t0() + Duration::hours(2), run(2)).is_ok());
    }

    #[test]
    fn estimates_use_3000_devices_per_minute() {
        assert_eq!(apple_delivery_seconds(3_000), 60);
        assert_eq!(apple_delivery_seconds(200_000), 4_000);
        assert_eq!(apple_delivery_seconds(1), 1);
        assert_eq!(
            import_expires_at(t0(), 3_000),
            t0() + LEASE + Duration::seconds(60)
        );
    }

    #[test]
    fn a_lease_is_renewed_for_15_minutes_from_the_progress_and_lapses_after() {
        let state = SyncState {
            lease: Some(Lease {
                run_id: run(1),
                expires_at: renewed_lease(t0()),
            }),
            ..SyncState::default()
        };
        assert_eq!(renewed_lease(t0()), t0() + Duration::minutes(15));
        assert_eq!(lapsed_lease(&state, t0() + Duration::minutes(14)), None);
        assert_eq!(
            lapsed_lease(&state, t0() + Duration::minutes(15)).map(|l| &l.run_id),
            Some(&run(1))
        );
        assert_eq!(lapsed_lease(&SyncState::default(), t0()), None);
    }

    #[test]
    fn next_allowed_times_are_reported_until_they_pass() {
        let state = SyncState {
            last_manual_at: Some(t0()),
            last_full_at: Some(t0()),
            ..SyncState::default()
        };
        let now = t0() + Duration::minutes(1);
        assert_eq!(
            next_manual_sync_at(&state, now),
            Some(t0() + MANUAL_COOLDOWN)
        );
        assert_eq!(next_full_sync_at(&state, now), Some(t0() + FULL_COOLDOWN));
        assert!(!full_sync_due(&state, now));
        assert!(full_sync_due(&state, t0() + FULL_COOLDOWN));
    }
}
