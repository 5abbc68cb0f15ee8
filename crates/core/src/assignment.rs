//! Assigning a policy's profile to devices in Apple, as pure rules.
//!
//! A device with a policy carries an [`Assignment`]: where the service stands with Apple
//! on giving that device the policy's profile. It is `pending` until Apple answered, then
//! what Apple said (docs/apple.md §4.7, §8):
//! - `SUCCESS` → [`AssignmentStatus::Assigned`];
//! - `NOT_ACCESSIBLE` → [`AssignmentStatus::NotAccessible`]: the device is not (or no
//!   longer) on the token's MDM server; not retried;
//! - `FAILED` → [`AssignmentStatus::Failed`], retried no sooner than [`FAILED_COOLDOWN`]
//!   (24 hours: what Apple asked of integrators hammering failed devices);
//! - `THROTTLED` → [`AssignmentStatus::Throttled`], retried after Apple's
//!   `retry_after_seconds`.
//!
//! [`Assignment::due_at`] says when the retry pass should take a device up again.
//!
//! The default policy: [`on_sync`] decides, for a device the importer is about to write,
//! whether it joins the token's default policy (newly synced devices — an `added`, a
//! snapshot record, a `modified` of an unknown serial — and devices whose Apple profile
//! status is `removed`), or, already holding a policy, must be assigned again.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

pub use crate::device::{Assignment, AssignmentStatus};
use crate::device::{Device, DeviceState};
use crate::ids::{AccountId, PolicyId, TokenId};

/// How long a device Apple answered `FAILED` for waits before the next try.
pub const FAILED_COOLDOWN: Duration = Duration::hours(24);
/// How long a `THROTTLED` device waits when Apple names no time (protocol < 10).
pub const THROTTLED_DEFAULT_WAIT: Duration = Duration::hours(1);
/// Serial numbers per assign request (Apple: "limit requests to 1000 devices at a time").
pub const MAX_SERIALS_PER_REQUEST: usize = 1_000;

/// Apple's answer for one device of an assign request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppleAnswer {
    Success,
    NotAccessible,
    Failed,
    /// With the request's `retry_after_seconds`, when Apple sent one.
    Throttled {
        retry_after_seconds: Option<u64>,
    },
}

/// The assignment Apple's `answer` about `profile_uuid` leaves a device in.
pub fn outcome(answer: AppleAnswer, profile_uuid: &str, now: DateTime<Utc>) -> Assignment {
    let (status, retry_at) = match answer {
        AppleAnswer::Success => (AssignmentStatus::Assigned, None),
        AppleAnswer::NotAccessible => (AssignmentStatus::NotAccessible, None),
        AppleAnswer::Failed => (AssignmentStatus::Failed, Some(later(now, FAILED_COOLDOWN))),
        AppleAnswer::Throttled {
            retry_after_seconds,
        } => {
            let wait = retry_after_seconds
                .and_then(|s| i64::try_from(s).ok())
                .map_or(THROTTLED_DEFAULT_WAIT, Duration::seconds);
            (AssignmentStatus::Throttled, Some(later(now, wait)))
        }
    };
    Assignment {
        status,
        at: now,
        profile_uuid: Some(profile_uuid.to_owned()),
        retry_at,
    }
}

/// `device` with Apple's answer recorded, if it still holds `policy` (an administrator
/// may have moved it meanwhile: then the answer is about a profile it no longer wants).
pub fn record(
    device: &Device,
    policy: &PolicyId,
    assignment: Assignment,
    now: DateTime<Utc>,
) -> Option<Device> {
    if device.policy_id.as_ref() != Some(policy) || !device.is_listed(now) {
        return None;
    }
    let mut next = device.clone();
    next.management.assignment = Some(assignment);
    Some(next)
}

/// `device` moved to `policy` and queued for assignment (an administrator's request).
pub fn assign(device: &Device, policy: &PolicyId, now: DateTime<Utc>) -> Device {
    let mut next = device.clone();
    next.policy_id = Some(policy.clone());
    next.management.assignment = Some(Assignment::pending(now));
    next
}

/// What the importer writes for a synced device, given the token's default policy.
///
/// `before` is the stored device (`None`: never seen), `after` what the sync decided to
/// write. The device joins `default` when it is active and has no policy, and it is newly
/// synced (new to the list: first seen, assigned back after a release, revived after an
/// administrator's delete) or Apple now reports its profile `removed`. A device that
/// already holds a policy is queued again in those same cases: Apple cleared its profile.
/// A device whose assignment is already pending is left alone.
pub fn on_sync(
    before: Option<&Device>,
    mut after: Device,
    default: Option<&PolicyId>,
    now: DateTime<Utc>,
) -> Device {
    if after.state != DeviceState::Active {
        return after;
    }
    let newly_listed = before.is_none_or(|b| b.state != DeviceState::Active || b.is_expired(now));
    let profile_removed = |d: &Device| d.attributes.profile_status.as_deref() == Some("removed");
    let removed_now =
        profile_removed(&after) && (newly_listed || before.is_none_or(|b| !profile_removed(b)));
    if !(newly_listed || removed_now) {
        return after;
    }
    let already_pending = after
        .management
        .assignment
        .as_ref()
        .is_some_and(|a| a.status == AssignmentStatus::Pending);
    match (&after.policy_id, default) {
        (None, Some(default)) => after = assign(&after, default, now),
        (Some(_), _) if !already_pending => {
            after.management.assignment = Some(Assignment::pending(now));
        }
        _ => {}
    }
    after
}

fn later(at: DateTime<Utc>, by: Duration) -> DateTime<Utc> {
    at.checked_add_signed(by)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Assign a token's due profile assignments with Apple: define profiles of changed
/// policies, move their devices to the new profiles, then send every pending or
/// due-for-retry device in requests of at most 1,000 serials. Which devices is read
/// from the devices' state, not from the message, so a repeated job does nothing twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignJob {
    /// Always `"assign"`: tells this job from a [`SyncJob`].
    pub job: AssignTag,
    pub account_id: AccountId,
    pub token_id: TokenId,
    /// 0 for the first step; a step nearing its deadline queues the next one.
    #[serde(default)]
    pub step: u32,
}

/// The tag of an [`AssignJob`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssignTag {
    #[default]
    Assign,
}

impl AssignJob {
    pub fn new(account_id: AccountId, token_id: TokenId) -> Self {
        Self {
            job: AssignTag::Assign,
            account_id,
            token_id,
            step: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{AppleAttributes, DeviceRecord, Observation, Version, decide};
    use crate::ids::Serial;

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    fn policy(id: &str) -> PolicyId {
        PolicyId::parse(id).unwrap()
    }

    fn record_of(observation: Observation, seconds: i64, profile_status: &str) -> DeviceRecord {
        DeviceRecord {
            serial: Serial::parse("C02T0HL0GGC0").unwrap(),
            observation,
            version: Version::for_change(t(seconds), 0),
            attributes: AppleAttributes {
                model: Some("iPhone".into()),
                profile_status: Some(profile_status.into()),
                ..AppleAttributes::default()
            },
            released_by_replacement: false,
        }
    }

    fn synced(before: Option<&Device>, record: &DeviceRecord) -> Device {
        decide(before, record, t(1_000)).into_write().unwrap()
    }

    #[test]
    fn outcomes_follow_apples_answers() {
        let now = t(0);
        let ok = outcome(AppleAnswer::Success, "P1", now);
        assert_eq!(ok.status, AssignmentStatus::Assigned);
        assert_eq!(ok.due_at(), None);
        assert_eq!(ok.profile_uuid.as_deref(), Some("P1"));
        let gone = outcome(AppleAnswer::NotAccessible, "P1", now);
        assert_eq!(gone.status, AssignmentStatus::NotAccessible);
        assert_eq!(gone.due_at(), None);
        let failed = outcome(AppleAnswer::Failed, "P1", now);
        assert_eq!(failed.retry_at, Some(now + Duration::hours(24)));
        assert!(!failed.is_due(now + Duration::hours(24) - Duration::seconds(1)));
        assert!(failed.is_due(now + Duration::hours(24)));
        assert!(failed.cooling_down(now + Duration::hours(23)));
        let throttled = outcome(
            AppleAnswer::Throttled {
                retry_after_seconds: Some(7_200),
            },
            "P1",
            now,
        );
        assert_eq!(throttled.retry_at, Some(now + Duration::seconds(7_200)));
        let unnamed = outcome(
            AppleAnswer::Throttled {
                retry_after_seconds: None,
            },
            "P1",
            now,
        );
        assert_eq!(unnamed.retry_at, Some(now + THROTTLED_DEFAULT_WAIT));
        assert!(Assignment::pending(now).is_due(now));
        for status in [
            AssignmentStatus::Pending,
            AssignmentStatus::Assigned,
            AssignmentStatus::NotAccessible,
            AssignmentStatus::Failed,
            AssignmentStatus::Throttled,
        ] {
            assert_eq!(AssignmentStatus::parse(status.as_str()), Some(status));
        }
    }

    #[test]
    fn newly_synced_devices_join_the_default_policy() {
        let default = policy("default");
        for observation in [
            Observation::Added,
            Observation::Snapshot,
            Observation::Modified,
        ] {
            let after = synced(None, &record_of(observation, 1, "empty"));
            let device = on_sync(None, after, Some(&default), t(1_000));
            assert_eq!(device.policy_id, Some(default.clone()), "{observation:?}");
            assert_eq!(
                device.management.assignment,
                Some(Assignment::pending(t(1_000)))
            );
        }
        // Without a default policy nothing is assigned.
        let after = synced(None, &record_of(Observation::Added, 1, "empty"));
        assert_eq!(on_sync(None, after.clone(), None, t(1_000)), after);
    }

    #[test]
    fn known_devices_join_only_when_apple_removed_their_profile() {
        let default = policy("default");
        let known = synced(None, &record_of(Observation::Added, 1, "empty"));
        let changed = synced(
            Some(&known),
            &record_of(Observation::Modified, 2, "assigned"),
        );
        assert_eq!(
            on_sync(Some(&known), changed.clone(), Some(&default), t(1_000)),
            changed
        );
        let removed = synced(
            Some(&known),
            &record_of(Observation::Modified, 2, "removed"),
        );
        let device = on_sync(Some(&known), removed, Some(&default), t(1_000));
        assert_eq!(device.policy_id, Some(default.clone()));
        // A device that already holds a policy is queued again for it.
        let mut held = known.clone();
        held.policy_id = Some(policy("other"));
        held.management.assignment = Some(outcome(AppleAnswer::Success, "P", t(0)));
        let removed = synced(Some(&held), &record_of(Observation::Modified, 3, "removed"));
        let device = on_sync(Some(&held), removed, Some(&default), t(1_000));
        assert_eq!(device.policy_id, Some(policy("other")));
        assert_eq!(
            device.management.assignment.map(|a| a.status),
            Some(AssignmentStatus::Pending)
        );
        // Still removed on the next record: nothing new to do.
        let mut stays = held.clone();
        stays.attributes.profile_status = Some("removed".into());
        let again = synced(
            Some(&stays),
            &record_of(Observation::Modified, 4, "removed"),
        );
        assert_eq!(
            on_sync(Some(&stays), again.clone(), Some(&default), t(1_000)),
            again
        );
    }

    #[test]
    fn a_device_assigned_back_after_a_release_is_queued_again() {
        let default = policy("default");
        let mut known = synced(None, &record_of(Observation::Added, 1, "assigned"));
        known.policy_id = Some(policy("p1"));
        let released = synced(
            Some(&known),
            &record_of(Observation::Deleted, 2, "assigned"),
        );
        assert_eq!(released.state, DeviceState::RemovedFromApple);
        assert_eq!(
            on_sync(Some(&known), released.clone(), Some(&default), t(1_000)),
            released,
            "a released device is not assigned"
        );
        let back = synced(Some(&released), &record_of(Observation::Added, 3, "empty"));
        let device = on_sync(Some(&released), back, Some(&default), t(1_000));
        assert_eq!(device.policy_id, Some(policy("p1")), "it keeps its policy");
        assert_eq!(
            device.management.assignment.map(|a| a.status),
            Some(AssignmentStatus::Pending)
        );
    }

    #[test]
    fn answers_are_recorded_only_while_the_device_holds_the_policy() {
        let device = assign(
            &synced(None, &record_of(Observation::Added, 1, "empty")),
            &policy("p1"),
            t(0),
        );
        let answer = outcome(AppleAnswer::Success, "P", t(5));
        let recorded = record(&device, &policy("p1"), answer.clone(), t(5)).unwrap();
        assert_eq!(recorded.management.assignment, Some(answer.clone()));
        assert_eq!(recorded.policy_id, Some(policy("p1")));
        assert_eq!(record(&device, &policy("p2"), answer, t(5)), None);
    }
}
