//! The events and their stable ids.

use adesync_core::change::DeviceChange;
use adesync_core::device::Device;
use adesync_core::ids::{AccountId, Serial, TokenId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One domain event: the entry's `Detail` is this, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The same change always gets the same id, whichever delivery or
    /// retry publishes it, so consumers can drop repeats.
    pub id: String,
    /// The entry's `detail-type` (`device.added`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// When the change happened (the service's clock).
    pub time: DateTime<Utc>,
    pub account_id: String,
    pub token_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceDetail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunDetail>,
    /// `device.deleted`: `admin` or `expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenDetail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment: Option<AssignmentDetail>,
}

/// `device.assigned`: Apple's answer to assigning the device's profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentDetail {
    pub policy_id: String,
    /// `assigned`, `not_accessible`, `failed` or `throttled`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_uuid: Option<String>,
    /// When a failed or throttled assignment is tried again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<DateTime<Utc>>,
}

/// `token.expiring`: the token's expiry and the notice's days.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenDetail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days_left: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// The device as the change left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceDetail {
    pub serial: String,
    pub state: String,
    /// The observation of Apple's the change comes from (sortable text):
    /// part of the id, and how a pending event is matched to the stored
    /// device before it is published again.
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_family: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_status: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub released_by_replacement: bool,
}

/// `sync.finished`: how a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunDetail {
    pub run_id: String,
    /// `full` or `delta`.
    pub kind: String,
    /// `succeeded`, `failed` or `abandoned`.
    pub outcome: String,
    pub fetched: u64,
    pub imported: u64,
    pub listed: u64,
    pub released: u64,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A short stable id: SHA-256 of the parts, 32 hex digits.
fn stable_id(parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hex::encode(&hash.finalize()[..16])
}

impl Event {
    /// `device.added`, `device.changed` or `device.released` for a write
    /// the import made. The id is the token, serial, kind and the Apple
    /// observation the write carries: the same change decided again (a
    /// redelivered batch) gets the same id.
    pub fn device(
        account: &AccountId,
        token: &TokenId,
        device: &Device,
        change: DeviceChange,
        now: DateTime<Utc>,
    ) -> Self {
        let kind = change.kind();
        let version = device.version.to_string();
        Self {
            id: stable_id(&[kind, token.as_str(), device.serial.as_str(), &version]),
            kind: kind.to_owned(),
            time: now,
            account_id: account.to_string(),
            token_id: token.to_string(),
            device: Some(DeviceDetail {
                serial: device.serial.to_string(),
                state: device.state.as_str().to_owned(),
                version,
                model: device.attributes.model.clone(),
                device_family: device.attributes.device_family.clone(),
                os: device.attributes.os.clone(),
                profile_status: device.attributes.profile_status.clone(),
                released_by_replacement: matches!(
                    change,
                    DeviceChange::Released {
                        by_replacement: true
                    }
                ),
            }),
            run: None,
            reason: None,
            token: None,
            assignment: None,
        }
    }

    /// `device.deleted`: an administrator deleted it (`admin`), or a
    /// released device reached its deletion date (`expired`). The id holds
    /// when it was deleted: a device deleted, back and deleted again
    /// announces both deletes.
    pub fn device_deleted(
        account: &AccountId,
        token: &TokenId,
        serial: &Serial,
        reason: &str,
        deleted_at: DateTime<Utc>,
    ) -> Self {
        let at = deleted_at.timestamp_millis().to_string();
        Self {
            id: stable_id(&["device.deleted", token.as_str(), serial.as_str(), &at]),
            kind: "device.deleted".into(),
            time: deleted_at,
            account_id: account.to_string(),
            token_id: token.to_string(),
            device: Some(DeviceDetail {
                serial: serial.to_string(),
                state: "deleted".into(),
                version: at,
                model: None,
                device_family: None,
                os: None,
                profile_status: None,
                released_by_replacement: false,
            }),
            run: None,
            reason: Some(reason.to_owned()),
            token: None,
            assignment: None,
        }
    }

    /// `device.assigned`: Apple answered for the device's profile (as
    /// recorded on `device`). The id holds the profile, the answer and when
    /// it came: a retry that Apple answers again is a new event, a repeated
    /// publication of the same answer is not.
    pub fn device_assigned(
        account: &AccountId,
        token: &TokenId,
        device: &Device,
        now: DateTime<Utc>,
    ) -> Option<Self> {
        let assignment = device.management.assignment.as_ref()?;
        let policy = device.policy_id.as_ref()?;
        let at = assignment.at.timestamp_millis().to_string();
        let status = assignment.status.as_str();
        let profile = assignment.profile_uuid.as_deref().unwrap_or("");
        let mut event = Self::device(account, token, device, DeviceChange::Changed, now);
        event.id = stable_id(&[
            "device.assigned",
            token.as_str(),
            device.serial.as_str(),
            profile,
            status,
            &at,
        ]);
        event.kind = "device.assigned".into();
        event.assignment = Some(AssignmentDetail {
            policy_id: policy.to_string(),
            status: status.to_owned(),
            profile_uuid: assignment.profile_uuid.clone(),
            retry_at: assignment.retry_at,
        });
        Some(event)
    }

    /// `token.expiring`: `days` (30, 7 or 1) before `expires_at`; the id
    /// names both, so a renewed token's notices are new events.
    pub fn token_expiring(
        account: &AccountId,
        token: &TokenId,
        expires_at: DateTime<Utc>,
        days: u32,
        now: DateTime<Utc>,
    ) -> Self {
        let at = expires_at.timestamp_millis().to_string();
        Self {
            id: stable_id(&["token.expiring", token.as_str(), &at, &days.to_string()]),
            kind: "token.expiring".into(),
            time: now,
            account_id: account.to_string(),
            token_id: token.to_string(),
            device: None,
            run: None,
            reason: None,
            token: Some(TokenDetail {
                expires_at: Some(expires_at),
                days_left: Some(days),
                status: None,
            }),
            assignment: None,
        }
    }

    /// `token.status_changed`: the token's status became `status`
    /// (`terms_not_signed`, `token_invalid`, `expired`, `ok`) at `at`.
    pub fn token_status_changed(
        account: &AccountId,
        token: &TokenId,
        status: &str,
        at: DateTime<Utc>,
    ) -> Self {
        let when = at.timestamp_millis().to_string();
        Self {
            id: stable_id(&["token.status_changed", token.as_str(), status, &when]),
            kind: "token.status_changed".into(),
            time: at,
            account_id: account.to_string(),
            token_id: token.to_string(),
            device: None,
            run: None,
            reason: None,
            token: Some(TokenDetail {
                expires_at: None,
                days_left: None,
                status: Some(status.to_owned()),
            }),
            assignment: None,
        }
    }

    /// `sync.finished`: one per run, its id the run's.
    pub fn sync_finished(
        account: &AccountId,
        token: &TokenId,
        run: RunDetail,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: stable_id(&["sync.finished", token.as_str(), &run.run_id]),
            kind: "sync.finished".into(),
            time: now,
            account_id: account.to_string(),
            token_id: token.to_string(),
            device: None,
            run: Some(run),
            reason: None,
            token: None,
            assignment: None,
        }
    }

    /// The entry's `Detail`.
    pub fn detail(&self) -> String {
        // A struct of strings, numbers and options always encodes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adesync_core::device::{AppleAttributes, DeviceState, Management, Version};

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    fn device(version: Version) -> Device {
        Device {
            serial: Serial::parse("C02X").unwrap(),
            state: DeviceState::Active,
            attributes: AppleAttributes::default(),
            version,
            attributes_version: None,
            removed_at: None,
            released_by_replacement: false,
            deletes_at: None,
            deleted_at: None,
            policy_id: None,
            management: Management::default(),
            first_seen_at: at(0),
        }
    }

    #[test]
    fn the_same_change_has_the_same_id_and_another_change_another() {
        let account = AccountId::parse("acct").unwrap();
        let token = TokenId::parse("tok").unwrap();
        let v1 = device(Version::for_snapshot(at(0), 1));
        let v2 = device(Version::for_snapshot(at(60), 1));
        let added = |d: &Device, now| Event::device(&account, &token, d, DeviceChange::Added, now);

        // Decided again later (a redelivery): same id, whatever the clock.
        assert_eq!(added(&v1, at(1)).id, added(&v1, at(500)).id);
        assert_ne!(added(&v1, at(1)).id, added(&v2, at(1)).id);
        let changed = Event::device(&account, &token, &v1, DeviceChange::Changed, at(1));
        assert_ne!(added(&v1, at(1)).id, changed.id);

        let detail: serde_json::Value = serde_json::from_str(&added(&v1, at(1)).detail()).unwrap();
        assert_eq!(detail["type"], "device.added");
        assert_eq!(detail["device"]["serial"], "C02X");
        assert_eq!(detail["token_id"], "tok");
        let back: Event = serde_json::from_value(detail).unwrap();
        assert_eq!(back, added(&v1, at(1)));
    }
}
