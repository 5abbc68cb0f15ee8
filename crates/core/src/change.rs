//! Which device changes the service announces as domain events.
//!
//! Pure: given a device as it was stored and as it is written, the change a
//! consumer cares about, if any. Writes that only move versions or
//! bookkeeping (a refresh, a tombstone's TTL) announce nothing, so an
//! unchanged re-sync publishes no device event.

use chrono::{DateTime, Utc};

use crate::device::{Device, DeviceState};

/// A change of a device consumers are told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChange {
    /// Listed now, not before: first seen, back after a release or an
    /// administrator's delete.
    Added,
    /// Still active; Apple's attributes (the profile status among them) differ.
    Changed,
    /// Apple released it.
    Released { by_replacement: bool },
}

impl DeviceChange {
    /// The event's `detail-type`.
    pub fn kind(self) -> &'static str {
        match self {
            DeviceChange::Added => "device.added",
            DeviceChange::Changed => "device.changed",
            DeviceChange::Released { .. } => "device.released",
        }
    }
}

/// What writing `after` over `before` changes for a consumer.
pub fn device_change(
    before: Option<&Device>,
    after: &Device,
    now: DateTime<Utc>,
) -> Option<DeviceChange> {
    let was_active = before.is_some_and(|d| d.state == DeviceState::Active && d.is_listed(now));
    match after.state {
        DeviceState::Active if !was_active => Some(DeviceChange::Added),
        DeviceState::Active => before
            .filter(|b| b.attributes != after.attributes)
            .map(|_| DeviceChange::Changed),
        DeviceState::RemovedFromApple if was_active => Some(DeviceChange::Released {
            by_replacement: after.released_by_replacement,
        }),
        // Hidden, deleted, or already released: nothing a consumer saw changes.
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{AppleAttributes, Management, Version};
    use crate::ids::Serial;

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn device(state: DeviceState, profile_status: &str) -> Device {
        Device {
            serial: Serial::parse("C02X").unwrap(),
            state,
            attributes: AppleAttributes {
                profile_status: Some(profile_status.into()),
                ..AppleAttributes::default()
            },
            version: Version::for_snapshot(at(), 0),
            attributes_version: None,
            removed_at: None,
            released_by_replacement: false,
            deletes_at: None,
            deleted_at: None,
            policy_id: None,
            management: Management::default(),
            first_seen_at: at(),
        }
    }

    #[test]
    fn each_change_a_consumer_sees_and_none_for_the_rest() {
        let active = device(DeviceState::Active, "empty");
        let assigned = device(DeviceState::Active, "assigned");
        let mut released = device(DeviceState::RemovedFromApple, "empty");
        let hidden = device(DeviceState::ReleasedBeforeSeen, "empty");
        let deleted = device(DeviceState::DeletedByAdmin, "empty");
        let change = |before: Option<&Device>, after: &Device| device_change(before, after, at());

        assert_eq!(change(None, &active), Some(DeviceChange::Added));
        assert_eq!(change(Some(&released), &active), Some(DeviceChange::Added));
        assert_eq!(change(Some(&deleted), &active), Some(DeviceChange::Added));
        assert_eq!(
            change(Some(&active), &assigned),
            Some(DeviceChange::Changed)
        );
        assert_eq!(
            change(Some(&active), &released),
            Some(DeviceChange::Released {
                by_replacement: false
            })
        );
        released.released_by_replacement = true;
        assert_eq!(
            change(Some(&assigned), &released),
            Some(DeviceChange::Released {
                by_replacement: true
            })
        );
        // A refresh (same content, newer version), a hidden device, a
        // release of what was never listed: no event.
        assert_eq!(change(Some(&active), &active), None);
        assert_eq!(change(None, &hidden), None);
        assert_eq!(change(None, &released), None);
        assert_eq!(change(Some(&released), &released), None);
    }
}

/// Days before a token's expiry at which `token.expiring` is announced,
/// once each.
pub const EXPIRY_NOTICES: [u32; 3] = [30, 7, 1];

/// The notice due for a token expiring at `expires_at`: the nearest of
/// [`EXPIRY_NOTICES`] that `now` has reached; `None` before 30 days are
/// left, and once the token has expired (that is a status change).
pub fn expiry_notice(expires_at: DateTime<Utc>, now: DateTime<Utc>) -> Option<u32> {
    let left = expires_at - now;
    if left <= chrono::Duration::zero() {
        return None;
    }
    EXPIRY_NOTICES
        .iter()
        .rev()
        .copied()
        .find(|days| left <= chrono::Duration::days(i64::from(*days)))
}

/// The notice "the token has expired", owed once like the others: its
/// days are 0, after the last of [`EXPIRY_NOTICES`]. It is announced as
/// `token.status_changed` to `expired` (the status is computed from the
/// expiry date, never stored).
pub const EXPIRED_NOTICE: u32 = 0;

/// The notice owed at `now` for a token expiring at `expires_at`: one of
/// [`EXPIRY_NOTICES`] before the expiry, [`EXPIRED_NOTICE`] from then on.
pub fn notice_due(expires_at: DateTime<Utc>, now: DateTime<Utc>) -> Option<u32> {
    if expires_at <= now {
        Some(EXPIRED_NOTICE)
    } else {
        expiry_notice(expires_at, now)
    }
}

#[cfg(test)]
mod expiry_tests {
    use super::*;

    #[test]
    fn a_notice_at_30_7_and_1_days_and_none_outside() {
        let expires = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let before = |days: i64, hours: i64| {
            expiry_notice(
                expires,
                expires - chrono::Duration::days(days) - chrono::Duration::hours(hours),
            )
        };
        assert_eq!(before(31, 0), None);
        assert_eq!(before(30, 1), None);
        assert_eq!(before(30, 0), Some(30));
        assert_eq!(before(8, 0), Some(30));
        assert_eq!(before(7, 0), Some(7));
        assert_eq!(before(2, 0), Some(7));
        assert_eq!(before(1, 0), Some(1));
        assert_eq!(before(0, 1), Some(1));
        assert_eq!(before(0, 0), None, "expired: a status change, not a notice");
        assert_eq!(before(-3, 0), None);
    }

    #[test]
    fn once_expired_the_owed_notice_is_the_expiry_itself() {
        let expires = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let at = |hours: i64| notice_due(expires, expires + chrono::Duration::hours(hours));
        assert_eq!(at(-1), Some(1));
        assert_eq!(at(0), Some(EXPIRED_NOTICE));
        assert_eq!(at(24 * 90), Some(EXPIRED_NOTICE));
        assert_eq!(
            notice_due(expires, expires - chrono::Duration::days(40)),
            None
        );
    }
}
