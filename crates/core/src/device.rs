//! What the device importer writes for each device record Apple sends, as pure functions.
//!
//! The sync worker pages Apple and sends device records through SQS: *snapshot* records
//! from a full fetch ("assigned now") and *change* records from a delta sync (`added`,
//! `modified`, `deleted`, each with an `op_date`). Batches arrive at least once and in
//! any order, and Apple itself repeats serials. The importer reads the stored device,
//! asks [`decide_all`] what to write, and writes it conditionally. The final state must
//! be as if each change arrived once, in order (docs/product.md "Device lifecycle").
//!
//! # Layout
//! - [`Version`]: the total order of observations of one device, and its sortable text.
//! - [`DeviceRecord`], [`Observation`], [`AppleAttributes`]: one record as the worker sends it.
//! - [`Device`], [`DeviceState`]: what is stored per serial number; [`Management`]: its
//!   MDM side (profile assignment, enrollment state, user), which sync carries over.
//! - [`decide`] / [`decide_all`] → [`Decision`]: what one record / one batch changes.
//! - [`group_by_serial`]: a batch split per device, for one read and one write each.
//! - [`release`]: the end-of-full-sync sweep of devices the snapshot did not contain.
//! - [`admin_delete`]: an administrator's delete, leaving a hidden tombstone.
//! - [`deletion_date`]: when a released device disappears (30–45 days, spread per serial).
//!
//! # Why the result does not depend on delivery order
//! A stored device is a small set of *last-writer-wins registers*, each keeping the
//! newest observation of one kind, so applying a set of records gives the same device
//! whatever the order and however often each record is applied:
//! - `version` and `removed_at`: the newest observation. It decides between active and
//!   removed: an `added`/`modified`/snapshot record means assigned, a `deleted` record
//!   (or a full sync that did not see the device) means released.
//! - `attributes` and `attributes_version`: the newest record that carried attributes. A
//!   `deleted` record may carry only the serial, so a newer bare `deleted` must not make
//!   an older record's attributes stale.
//! - the hidden states remember what a late, older record may still change:
//!   [`DeviceState::ReleasedBeforeSeen`] (Apple said `deleted` before we saw the device;
//!   an older `added` arriving later must not resurrect it as active, but does make it a
//!   visible removed device) and [`DeviceState::DeletedByAdmin`] (changes after the delete
//!   are kept, hidden, until an assignment after the delete revives the device).
//!
//! So a record older than the stored version is not always a no-op: it may still fill in
//! attributes or reveal a hidden release. Both are what applying it in order would do.
//!
//! # Concurrency (for the store)
//! Two importers, or an importer and the API (policy assignment, admin delete), may read
//! the same item. Each write must therefore be conditioned on the item being unchanged
//! since it was read, with a revision counter the store keeps and every writer bumps.
//! [`Version`] alone is not enough: filling in attributes, revealing a hidden release and
//! assigning a policy all change an item without moving its version.
//!
//! # Unchanged devices
//! A record that moves only the version is a [`Decision::Refresh`]. Under at-least-once,
//! out-of-order delivery it must be written: skipping it leaves the stored version behind,
//! and an older change still in flight would then apply although a newer observation
//! already superseded it (test `skipping_refreshes_loses_a_change_when_records_arrive_out_of_order`).
//! Skipping is safe only if every record of a device reaches [`decide_all`] in version
//! order apart from redeliveries (property `in_order_delivery_may_skip_refreshes`), e.g. a
//! FIFO queue per token fed with versions that increase along Apple's stream — and then
//! the full-sync sweep must learn which devices a snapshot contained from the run, not
//! from the devices' versions (see [`release`]).
//!
//! # Lifetimes
//! Removed devices (and hidden releases) expire [`deletion_date`] after removal and
//! tombstones [`TOMBSTONE_LIFETIME`] after the delete, through a DynamoDB TTL on
//! `deletes_at`. TTL deletion lags by up to days, so an item past `deletes_at` counts as
//! absent here: the outcome does not depend on when DynamoDB got round to it.
//! Order-independence therefore holds while the item exists: a record delivered after
//! its device's item expired (at least 30 days on; SQS keeps a message at most 14) is
//! taken as news.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::enrollment::{DeviceAction, EnrollmentState};
use crate::ids::{PolicyId, Serial, UserId};

/// The shortest time a device released from Apple Business stays listed as removed.
pub const REMOVED_LIFETIME_MIN: Duration = Duration::days(30);
/// The longest time a device released from Apple Business stays listed as removed.
pub const REMOVED_LIFETIME_MAX: Duration = Duration::days(45);
/// How long an administrator's delete is remembered (the hidden tombstone's lifetime).
///
/// While the tombstone exists, records observed before the delete are ignored; once it
/// expires, such a record would bring the device back. It must outlive every record
/// that can still be in flight: SQS keeps a message at most 14 days, a dead-letter
/// redrive can add up to 14 more, and a delta's cursor may be up to 7 days old, so a
/// change made before the delete can surface about 35 days after it. 60 days leaves a
/// margin. Keeping it longer would only cost storage: a device still assigned to the
/// token comes back with the weekly full sync anyway.
pub const TOMBSTONE_LIFETIME: Duration = Duration::days(60);

/// Seconds over which [`deletion_date`] spreads removals (45 − 30 days).
const REMOVAL_SPREAD_SECONDS: u64 = 15 * 24 * 60 * 60;

/// The position of one observation of a device in a total order: when it was observed
/// (milliseconds), then the worker's sequence number.
///
/// Its text form, `"0001700000000000-00000000000000000042"` (16 digits of milliseconds
/// since 1970, `-`, 20 digits of sequence), sorts as text in the same order as the
/// versions, so the store can compare it in DynamoDB conditions and keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Version {
    // Field order is the comparison order (derived `Ord`).
    millis: u64,
    seq: u64,
}

impl Version {
    /// The version of a change record (`/devices/sync`): Apple's `op_date`.
    ///
    /// `seq` is the record's position within the worker's run (page index × page size +
    /// index within the page), so that of two records of one run with the same `op_date`
    /// the later one in Apple's stream wins.
    pub fn for_change(op_date: DateTime<Utc>, seq: u64) -> Self {
        Self::at(op_date, seq)
    }

    /// The version of a snapshot record (`/server/devices`).
    ///
    /// `fetched_at` is when the run's fetch *began*, the same for every page of the
    /// snapshot (the run stores it), not when the page arrived: Apple's snapshot is "the
    /// devices assigned at the time of the request", and a change Apple reports after it
    /// (the sync round that follows the fetch) must sort after it. `seq` as in
    /// [`Version::for_change`]. The full-sync sweep uses `for_snapshot(fetched_at, 0)`,
    /// which sorts before every record of the snapshot and after everything earlier.
    ///
    /// Prefer Apple's clock for `fetched_at` (the response's `Date`) when available, so
    /// snapshot and change versions come from one clock.
    pub fn for_snapshot(fetched_at: DateTime<Utc>, seq: u64) -> Self {
        Self::at(fetched_at, seq)
    }

    /// When the observation was made (millisecond precision).
    pub fn observed_at(&self) -> DateTime<Utc> {
        i64::try_from(self.millis)
            .ok()
            .and_then(DateTime::from_timestamp_millis)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// The worker's sequence number of the observation.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    fn at(at: DateTime<Utc>, seq: u64) -> Self {
        // Apple's dates are all after 1970; an earlier one sorts first instead of failing.
        let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
        Self { millis, seq }
    }

    /// After every observation made at or before `at`.
    fn closing(at: DateTime<Utc>) -> Self {
        Self::at(at, u64::MAX)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016}-{:020}", self.millis, self.seq)
    }
}

/// Text that is not a [`Version`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a device version is 16 digits of milliseconds since 1970, '-', then 20 digits of sequence (like 0001700000000000-00000000000000000042)"
)]
pub struct InvalidVersion;

impl FromStr for Version {
    type Err = InvalidVersion;

    fn from_str(text: &str) -> Result<Self, InvalidVersion> {
        let (millis, seq) = text.split_once('-').ok_or(InvalidVersion)?;
        let digits =
            |part: &str, len: usize| part.len() == len && part.bytes().all(|b| b.is_ascii_digit());
        if !digits(millis, 16) || !digits(seq, 20) {
            return Err(InvalidVersion);
        }
        let version = Self {
            millis: millis.parse().map_err(|_| InvalidVersion)?,
            seq: seq.parse().map_err(|_| InvalidVersion)?,
        };
        // Only instants chrono can represent, so `observed_at` is exact.
        i64::try_from(version.millis)
            .ok()
            .and_then(DateTime::from_timestamp_millis)
            .ok_or(InvalidVersion)?;
        Ok(version)
    }
}

impl TryFrom<String> for Version {
    type Error = InvalidVersion;
    fn try_from(text: String) -> Result<Self, InvalidVersion> {
        text.parse()
    }
}

impl From<Version> for String {
    fn from(version: Version) -> String {
        version.to_string()
    }
}

/// What a record says about a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Observation {
    /// A fetch (full snapshot) record: the device is assigned to the MDM server now.
    Snapshot,
    /// `op_type: added`: assigned to the MDM server.
    Added,
    /// `op_type: modified`: changed. Also how a move from another MDM server often
    /// arrives, so for an unknown serial it is an addition (docs/apple.md §7).
    Modified,
    /// `op_type: deleted`: moved to another MDM server (released).
    Deleted,
}

impl Observation {
    /// Whether the record shows the device assigned to the token.
    fn assigns(self) -> bool {
        self != Observation::Deleted
    }

    /// Whether the record may bring back a device an administrator deleted: a new
    /// assignment or a full sync, never a mere change (docs/product.md: a deleted device
    /// "reappears on the next full sync").
    fn revives(self) -> bool {
        matches!(self, Observation::Added | Observation::Snapshot)
    }
}

/// Apple's attributes of a device, as Apple sent them (docs/apple.md §4.4).
///
/// Plain text on purpose: the service shows them and compares them, it does not
/// interpret them, and a value a newer protocol adds must not be lost on the way.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppleAttributes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_family: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_assign_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_push_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_assigned_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_assigned_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mdm_migration_deadline: Option<String>,
}

impl AppleAttributes {
    /// True when Apple sent none of them (a `deleted` record often carries only the serial).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// One device record as the worker sends it to the importer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub serial: Serial,
    pub observation: Observation,
    pub version: Version,
    /// Empty when Apple sent only the serial; the stored attributes are then kept.
    #[serde(default, skip_serializing_if = "AppleAttributes::is_empty")]
    pub attributes: AppleAttributes,
    /// On a `deleted` record: Apple released the device because another replaced it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub released_by_replacement: bool,
}

impl DeviceRecord {
    fn carries_attributes(&self) -> bool {
        !self.attributes.is_empty()
    }
}

/// Where a device stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    /// Assigned to the token's MDM server in Apple Business.
    Active,
    /// Released from Apple Business; listed as such until [`Device::deletes_at`].
    RemovedFromApple,
    /// Hidden: Apple reported the device released before any record that assigned it
    /// reached us. Kept until [`Device::deletes_at`] so an older assigning record that
    /// arrives late makes it a (visible) removed device instead of an active one.
    ReleasedBeforeSeen,
    /// Hidden tombstone of an administrator's delete: the API never shows it. It keeps
    /// changes observed after the delete so that a later-arriving assignment made after
    /// the delete revives the device in its newest state.
    DeletedByAdmin,
}

impl DeviceState {
    /// Whether the API lists devices in this state.
    pub fn is_listed(self) -> bool {
        matches!(self, DeviceState::Active | DeviceState::RemovedFromApple)
    }

    /// The state's stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Active => "active",
            DeviceState::RemovedFromApple => "removed_from_apple",
            DeviceState::ReleasedBeforeSeen => "released_before_seen",
            DeviceState::DeletedByAdmin => "deleted_by_admin",
        }
    }
}

/// Whether a device deleted at `deletes_at` is past its TTL (DynamoDB may
/// not have removed the item yet).
pub fn expired(deletes_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    deletes_at.is_some_and(|at| at <= now)
}

/// Whether the API shows a device in `state`, deleted at `deletes_at`, now.
pub fn listed(state: DeviceState, deletes_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    state.is_listed() && !expired(deletes_at, now)
}

/// A device of a token, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub serial: Serial,
    pub state: DeviceState,
    /// Apple's attributes from the newest record that carried any.
    pub attributes: AppleAttributes,
    /// The newest observation applied: records at or before it change no state.
    pub version: Version,
    /// Records at or before it cannot replace the attributes: the record they came from
    /// (or the delete the device came back from); `None` if no record carried any.
    pub attributes_version: Option<Version>,
    /// When Apple released the device (removed and hidden-release states). On a
    /// tombstone: set when the newest observation after the delete was a release.
    pub removed_at: Option<DateTime<Utc>>,
    /// The release at `removed_at` was Apple's because another device replaced this one
    /// (only a `deleted` sync record says so; a full sync's sweep cannot tell).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub released_by_replacement: bool,
    /// When the item expires (DynamoDB TTL): [`deletion_date`] for released devices,
    /// [`TOMBSTONE_LIFETIME`] after the delete for tombstones, never for active ones.
    pub deletes_at: Option<DateTime<Utc>>,
    /// When an administrator deleted it (tombstones only).
    pub deleted_at: Option<DateTime<Utc>>,
    /// The enrollment policy assigned by the service. Sync keeps it as is; a delete
    /// clears it (the device left management), so it does not count against the policy.
    pub policy_id: Option<PolicyId>,
    /// What the MDM side knows besides Apple's view. Sync carries it over unchanged;
    /// an administrator's delete clears it with the policy.
    pub management: Management,
    /// When the service first stored it (or brought it back after an admin delete).
    pub first_seen_at: DateTime<Utc>,
}

// The profile assignment is part of the device's MDM side; the rules that
// move it live in `crate::assignment`.

/// Where a device's profile assignment stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssignmentStatus {
    /// Not yet sent to Apple (or Apple could not be reached): the next pass sends it.
    Pending,
    /// Apple assigned the profile.
    Assigned,
    /// Apple says the device is not on this MDM server.
    NotAccessible,
    /// Apple failed for this device; retried after [`crate::assignment::FAILED_COOLDOWN`].
    Failed,
    /// Apple's assignment cooldown; retried after `retry_after_seconds`.
    Throttled,
}

impl AssignmentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AssignmentStatus::Pending => "pending",
            AssignmentStatus::Assigned => "assigned",
            AssignmentStatus::NotAccessible => "not_accessible",
            AssignmentStatus::Failed => "failed",
            AssignmentStatus::Throttled => "throttled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "pending" => AssignmentStatus::Pending,
            "assigned" => AssignmentStatus::Assigned,
            "not_accessible" => AssignmentStatus::NotAccessible,
            "failed" => AssignmentStatus::Failed,
            "throttled" => AssignmentStatus::Throttled,
            _ => return None,
        })
    }
}

/// A device's profile assignment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub status: AssignmentStatus,
    /// When the status was set.
    pub at: DateTime<Utc>,
    /// The Apple profile the last answer was about (`None` while pending).
    pub profile_uuid: Option<String>,
    /// When a failed or throttled assignment may be tried again.
    pub retry_at: Option<DateTime<Utc>>,
}

impl Assignment {
    /// To be sent to Apple.
    pub fn pending(now: DateTime<Utc>) -> Self {
        Self {
            status: AssignmentStatus::Pending,
            at: now,
            profile_uuid: None,
            retry_at: None,
        }
    }

    /// When the retry pass takes the device up (`None`: nothing left to do).
    pub fn due_at(&self) -> Option<DateTime<Utc>> {
        match self.status {
            AssignmentStatus::Pending => Some(self.at),
            AssignmentStatus::Failed | AssignmentStatus::Throttled => {
                Some(self.retry_at.unwrap_or(self.at))
            }
            AssignmentStatus::Assigned | AssignmentStatus::NotAccessible => None,
        }
    }

    /// Whether the device should be sent to Apple at `now`.
    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        self.due_at().is_some_and(|at| at <= now)
    }

    /// Whether Apple asked us to wait before assigning this device again.
    pub fn cooling_down(&self, now: DateTime<Utc>) -> bool {
        matches!(
            self.status,
            AssignmentStatus::Failed | AssignmentStatus::Throttled
        ) && self.retry_at.is_some_and(|at| at > now)
    }
}

/// The MDM side of a device: its profile assignment in Apple, its enrollment state and
/// its user. The importer never decides these; it writes them back as it read them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Management {
    /// Where assigning its policy's profile in Apple stands (`None`: no policy, or a
    /// policy given before assignments were tracked).
    pub assignment: Option<Assignment>,
    /// Whether it enrolled, and what re-enroll actions did since.
    pub enrollment: EnrollmentState,
    /// The last re-enroll action recorded, and when the enrollment state last changed.
    pub last_action: Option<DeviceAction>,
    pub enrollment_changed_at: Option<DateTime<Utc>>,
    /// The user associated with the device (licensing: a licensed user covers it).
    pub user_id: Option<UserId>,
}

impl Device {
    /// Whether the item is past its TTL (DynamoDB may not have removed it yet).
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        expired(self.deletes_at, now)
    }

    /// Whether the API shows it now.
    pub fn is_listed(&self, now: DateTime<Utc>) -> bool {
        listed(self.state, self.deletes_at, now)
    }

    /// Everything but the bookkeeping of versions is the same.
    pub fn same_content(&self, other: &Device) -> bool {
        // Destructured so that a new field must be considered here.
        let Device {
            serial,
            state,
            attributes,
            version: _,
            attributes_version: _,
            removed_at,
            released_by_replacement,
            deletes_at,
            deleted_at,
            policy_id,
            management,
            first_seen_at,
        } = self;
        *serial == other.serial
            && *state == other.state
            && *attributes == other.attributes
            && *removed_at == other.removed_at
            && *released_by_replacement == other.released_by_replacement
            && *deletes_at == other.deletes_at
            && *deleted_at == other.deleted_at
            && *policy_id == other.policy_id
            && *management == other.management
            && *first_seen_at == other.first_seen_at
    }

    /// Records at or before this are from before the administrator's delete.
    fn tombstone_barrier(&self) -> Version {
        self.deleted_at.map_or(self.version, Version::closing)
    }

    /// Active or removed, from the newest observation.
    fn listed_state(&self) -> DeviceState {
        if self.removed_at.is_some() {
            DeviceState::RemovedFromApple
        } else {
            DeviceState::Active
        }
    }

    fn lifetime_end(&self) -> Option<DateTime<Utc>> {
        match self.state {
            DeviceState::Active => None,
            DeviceState::RemovedFromApple | DeviceState::ReleasedBeforeSeen => self
                .removed_at
                .map(|removed_at| deletion_date(&self.serial, removed_at)),
            DeviceState::DeletedByAdmin => self
                .deleted_at
                .map(|deleted_at| later(deleted_at, TOMBSTONE_LIFETIME)),
        }
    }
}

/// What to store for a record, a batch or a sweep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Store this device: it differs from the stored one.
    Write(Device),
    /// Store this device: only its versions moved. See the module docs ("Unchanged
    /// devices") before skipping such a write.
    Refresh(Device),
    /// Store nothing.
    Skip(SkipReason),
}

impl Decision {
    /// The device to store, if any.
    pub fn into_write(self) -> Option<Device> {
        match self {
            Decision::Write(device) | Decision::Refresh(device) => Some(device),
            Decision::Skip(_) => None,
        }
    }
}

/// Why nothing is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// Nothing newer than what is stored (a duplicate, or superseded).
    Stale,
    /// Observed before an administrator deleted the device.
    Tombstoned,
    /// The stored item is past its deletion date (its TTL removes it).
    Expired,
    /// The record is about another serial number than the stored device.
    OtherDevice,
}

/// What one record changes on the stored device (`None`: no item with that serial).
///
/// See the module docs for the rules; in short: the newest observation decides active
/// or removed, the newest record with attributes decides the attributes, an unknown
/// serial's `deleted` leaves a hidden trace, and an administrator's delete is undone
/// only by an `added` or snapshot record observed after it.
pub fn decide(current: Option<&Device>, record: &DeviceRecord, now: DateTime<Utc>) -> Decision {
    match current {
        Some(device) if device.serial != record.serial => Decision::Skip(SkipReason::OtherDevice),
        Some(device) if !device.is_expired(now) => observe(device, record, now),
        _ => Decision::Write(first_sight(record, now)),
    }
}

/// What a batch of records of one device changes, as one write.
///
/// Records are applied in version order; of two records with the same version the later
/// one in `records` wins. The result is a [`Decision::Write`] if any record changed the
/// device, a [`Decision::Refresh`] if records only moved its versions.
pub fn decide_all(
    current: Option<&Device>,
    records: &[DeviceRecord],
    now: DateTime<Utc>,
) -> Decision {
    let mut ordered: Vec<(usize, &DeviceRecord)> = records.iter().enumerate().collect();
    ordered.sort_by_key(|(index, record)| (record.version, Reverse(*index)));

    let mut device = current.cloned();
    let (mut wrote, mut refreshed, mut skipped) = (false, false, None);
    for (_, record) in ordered {
        match decide(device.as_ref(), record, now) {
            Decision::Write(next) => {
                wrote = true;
                device = Some(next);
            }
            Decision::Refresh(next) => {
                refreshed = true;
                device = Some(next);
            }
            Decision::Skip(reason) => {
                skipped.get_or_insert(reason);
            }
        }
    }
    match device {
        Some(device) if wrote => Decision::Write(device),
        Some(device) if refreshed => Decision::Refresh(device),
        _ => Decision::Skip(skipped.unwrap_or(SkipReason::Stale)),
    }
}

/// The records of one device within a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SerialRecords {
    pub serial: Serial,
    /// In the batch's order.
    pub records: Vec<DeviceRecord>,
}

/// Splits a batch per device, serials in the order they first appear, so the importer
/// reads and writes each device once ([`decide_all`]).
///
/// Nothing is dropped: an older record of a device can still matter (its attributes when
/// the newest is a bare `deleted`, or its assignment when the newest only modifies a
/// tombstoned device), and [`decide_all`] already ignores duplicates.
pub fn group_by_serial(records: Vec<DeviceRecord>) -> Vec<SerialRecords> {
    let mut groups: Vec<SerialRecords> = Vec::new();
    let mut positions: HashMap<Serial, usize> = HashMap::new();
    for record in records {
        match positions
            .get(&record.serial)
            .and_then(|&at| groups.get_mut(at))
        {
            Some(group) => group.records.push(record),
            None => {
                positions.insert(record.serial.clone(), groups.len());
                groups.push(SerialRecords {
                    serial: record.serial.clone(),
                    records: vec![record],
                });
            }
        }
    }
    groups
}

/// The full-sync sweep of a device its snapshot did not contain: Apple released it.
///
/// `swept_at` is `Version::for_snapshot(fetched_at, 0)` of the run. An active device
/// becomes removed from Apple Business at that time. A device observed at or after it is
/// left alone (an assignment the snapshot could not show yet). A device already removed
/// keeps its removal date (otherwise each weekly sweep would postpone its deletion); its
/// version still moves to the sweep (a [`Decision::Refresh`]) so an older assignment
/// arriving late cannot make it active again. On a tombstone the release is kept hidden.
///
/// Call it only for devices the snapshot did not contain. When every snapshot record was
/// written (refreshes included), that is exactly the devices whose version is older than
/// `swept_at`, so calling it for every device of the token is then also correct.
pub fn release(current: &Device, swept_at: Version, now: DateTime<Utc>) -> Decision {
    if current.is_expired(now) {
        return Decision::Skip(SkipReason::Expired);
    }
    if swept_at <= current.version {
        return Decision::Skip(SkipReason::Stale);
    }
    let mut next = current.clone();
    next.version = swept_at;
    match current.state {
        DeviceState::Active => {
            next.state = DeviceState::RemovedFromApple;
            next.removed_at = Some(swept_at.observed_at());
            next.released_by_replacement = false;
        }
        DeviceState::RemovedFromApple | DeviceState::ReleasedBeforeSeen => {}
        DeviceState::DeletedByAdmin => {
            next.removed_at.get_or_insert(swept_at.observed_at());
        }
    }
    next.deletes_at = next.lifetime_end();
    classify(current, next)
}

/// Why an administrator may not delete a device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminDeleteError {
    /// The device is not listed (never synced, already deleted, or expired).
    #[error("device {serial} is not in this token's device list")]
    NotFound { serial: Serial },
}

/// The `state` an administrator sees: Apple's, except that an active device
/// retired and waiting for its factory reset shows `pending_reset`.
pub fn shown_state(device: &Device) -> &'static str {
    match (device.state, device.management.enrollment) {
        (DeviceState::Active, EnrollmentState::PendingReset) => "pending_reset",
        (state, _) => state.as_str(),
    }
}

/// An administrator's delete: the tombstone to store in place of `current`.
///
/// The tombstone hides the device and ignores every record observed up to the delete;
/// changes after it are kept hidden; an `added` or snapshot record observed after it
/// brings the device back ("it reappears on the next full sync": unassign it in Apple
/// Business first to keep it away). The policy is cleared with the rest of the MDM side
/// ([`Management`]: the device left management), and the tombstone expires
/// [`TOMBSTONE_LIFETIME`] later.
pub fn admin_delete(current: &Device, now: DateTime<Utc>) -> Result<Device, AdminDeleteError> {
    if !current.is_listed(now) {
        return Err(AdminDeleteError::NotFound {
            serial: current.serial.clone(),
        });
    }
    // Not before the newest observation we hold, even if Apple's clock runs ahead of
    // ours: nothing known at the time of the delete may revive the device.
    let deleted_at = now.max(current.version.observed_at());
    let mut tombstone = current.clone();
    tombstone.state = DeviceState::DeletedByAdmin;
    tombstone.version = Version::closing(deleted_at);
    tombstone.removed_at = None;
    tombstone.released_by_replacement = false;
    tombstone.deleted_at = Some(deleted_at);
    tombstone.policy_id = None;
    tombstone.management = Management::default();
    tombstone.deletes_at = tombstone.lifetime_end();
    Ok(tombstone)
}

/// When a device released at `removed_at` is deleted: 30 to 45 days later.
///
/// The offset within those 15 days comes from a stable hash of the serial, so a mass
/// release does not expire in one second and recomputing gives the same date.
pub fn deletion_date(serial: &Serial, removed_at: DateTime<Utc>) -> DateTime<Utc> {
    let offset = fnv1a(serial.as_str().as_bytes()) % (REMOVAL_SPREAD_SECONDS + 1);
    let offset = Duration::seconds(i64::try_from(offset).unwrap_or(0));
    later(removed_at, REMOVED_LIFETIME_MIN + offset)
}

/// 64-bit FNV-1a: tiny, stable across builds and platforms (std's hasher is seeded per
/// process, so it cannot pin a date).
fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

fn later(at: DateTime<Utc>, by: Duration) -> DateTime<Utc> {
    at.checked_add_signed(by)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A device the service does not hold yet (or whose item expired).
fn first_sight(record: &DeviceRecord, now: DateTime<Utc>) -> Device {
    let released = record.observation == Observation::Deleted;
    let mut device = Device {
        serial: record.serial.clone(),
        // Apple reports the release of a device we never saw: nothing to list, but
        // remembered so an older assignment arriving late is not taken as current.
        state: if released {
            DeviceState::ReleasedBeforeSeen
        } else {
            DeviceState::Active
        },
        attributes: record.attributes.clone(),
        attributes_version: record.carries_attributes().then_some(record.version),
        version: record.version,
        removed_at: released.then(|| record.version.observed_at()),
        released_by_replacement: released && record.released_by_replacement,
        deletes_at: None,
        deleted_at: None,
        policy_id: None,
        management: Management::default(),
        first_seen_at: now,
    };
    device.deletes_at = device.lifetime_end();
    device
}

/// One record applied to a stored, unexpired device of the same serial.
fn observe(current: &Device, record: &DeviceRecord, now: DateTime<Utc>) -> Decision {
    if current.state == DeviceState::DeletedByAdmin && record.version <= current.tombstone_barrier()
    {
        return Decision::Skip(SkipReason::Tombstoned);
    }
    let mut next = current.clone();
    if record.carries_attributes()
        && current
            .attributes_version
            .is_none_or(|seen| record.version > seen)
    {
        next.attributes = record.attributes.clone();
        next.attributes_version = Some(record.version);
    }
    if record.version > current.version {
        next.version = record.version;
        let released = record.observation == Observation::Deleted;
        next.removed_at = released.then(|| record.version.observed_at());
        next.released_by_replacement = released && record.released_by_replacement;
    }
    next.state = match current.state {
        DeviceState::Active | DeviceState::RemovedFromApple => next.listed_state(),
        DeviceState::ReleasedBeforeSeen if record.observation.assigns() => next.listed_state(),
        DeviceState::DeletedByAdmin if record.observation.revives() => {
            // A new assignment after the delete: the device comes back as newly synced.
            // Records from before the delete stay unable to touch it, attributes included
            // (the reviving record may have carried none).
            next.attributes_version = next
                .attributes_version
                .max(Some(current.tombstone_barrier()));
            next.deleted_at = None;
            next.policy_id = None;
            next.management = Management::default();
            next.first_seen_at = now;
            next.listed_state()
        }
        hidden => hidden,
    };
    next.deletes_at = next.lifetime_end();
    classify(current, next)
}

fn classify(current: &Device, next: Device) -> Decision {
    if next == *current {
        Decision::Skip(SkipReason::Stale)
    } else if next.same_content(current) {
        Decision::Refresh(next)
    } else {
        Decision::Write(next)
    }
}

/// A stored device with the revision it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub device: Device,
    pub revision: u64,
}

/// What closing a run needs to know of a stored device: whether it is
/// listed, and whether the TTL must be done by hand (see
/// the store's `delete_counted_devices`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSummary {
    pub serial: Serial,
    pub state: DeviceState,
    pub deletes_at: Option<chrono::DateTime<chrono::Utc>>,
    /// A policy counts it.
    pub counted: bool,
}

/// A device to write, conditional on what was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceWrite {
    pub device: Device,
    /// The revision read (`None`: no item was there).
    pub expected: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERIAL: &str = "C02T0HL0GGC0";

    /// Seconds after a fixed instant.
    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    /// When the importer runs: after every record, well before any deletion date.
    fn now() -> DateTime<Utc> {
        t(3_600)
    }

    fn v(seconds: i64, seq: u64) -> Version {
        Version::for_change(t(seconds), seq)
    }

    fn serial(text: &str) -> Serial {
        Serial::parse(text).unwrap()
    }

    fn attrs(model: &str) -> AppleAttributes {
        AppleAttributes {
            model: Some(model.to_owned()),
            os: Some("iOS".to_owned()),
            ..AppleAttributes::default()
        }
    }

    fn rec(
        observation: Observation,
        version: Version,
        attributes: AppleAttributes,
    ) -> DeviceRecord {
        DeviceRecord {
            serial: serial(SERIAL),
            observation,
            version,
            attributes,
            released_by_replacement: false,
        }
    }

    fn added(seconds: i64, model: &str) -> DeviceRecord {
        rec(Observation::Added, v(seconds, 0), attrs(model))
    }

    fn modified(seconds: i64, model: &str) -> DeviceRecord {
        rec(Observation::Modified, v(seconds, 0), attrs(model))
    }

    fn snapshot(seconds: i64, model: &str) -> DeviceRecord {
        rec(Observation::Snapshot, v(seconds, 0), attrs(model))
    }

    /// A `deleted` record carrying only the serial.
    fn deleted(seconds: i64) -> DeviceRecord {
        rec(
            Observation::Deleted,
            v(seconds, 0),
            AppleAttributes::default(),
        )
    }

    /// Applies records one at a time, storing every write (refreshes included).
    fn apply(start: Option<Device>, records: &[DeviceRecord]) -> Option<Device> {
        records.iter().fold(start, |device, record| {
            decide(device.as_ref(), record, now())
                .into_write()
                .or(device)
        })
    }

    fn stored(records: &[DeviceRecord]) -> Device {
        apply(None, records).expect("records create the device")
    }

    fn write(decision: Decision) -> Device {
        match decision {
            Decision::Write(device) => device,
            other => panic!("expected a write, got {other:?}"),
        }
    }

    fn days(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
        (to - from).num_seconds() as f64 / 86_400.0
    }

    // Rule 1: a record applies only if strictly newer.

    #[test]
    fn a_record_applies_only_if_strictly_newer() {
        let current = stored(&[rec(Observation::Added, v(100, 5), attrs("A"))]);
        let cases = [
            (v(100, 5), false, "same version: a duplicate"),
            (v(100, 4), false, "same millisecond, earlier in the run"),
            (v(99, 9), false, "earlier op_date"),
            (v(100, 6), true, "same millisecond, later in the run"),
            (v(101, 0), true, "later op_date"),
        ];
        for (version, applies, why) in cases {
            for (observation, state) in [
                (Observation::Modified, DeviceState::Active),
                (Observation::Deleted, DeviceState::RemovedFromApple),
            ] {
                let decision = decide(
                    Some(&current),
                    &rec(observation, version, attrs("B")),
                    now(),
                );
                if applies {
                    let device = write(decision);
                    assert_eq!(device.state, state, "{why}, {observation:?}");
                    assert_eq!(device.attributes, attrs("B"), "{why}, {observation:?}");
                    assert_eq!(device.version, version, "{why}, {observation:?}");
                } else {
                    assert_eq!(
                        decision,
                        Decision::Skip(SkipReason::Stale),
                        "{why}, {observation:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn duplicates_and_reordering_converge_to_the_newest() {
        let in_order = stored(&[added(1, "A"), modified(2, "B"), modified(3, "C")]);
        let shuffled = stored(&[
            modified(3, "C"),
            added(1, "A"),
            modified(3, "C"),
            modified(2, "B"),
            added(1, "A"),
        ]);
        assert_eq!(shuffled, in_order);
        assert_eq!(in_order.attributes, attrs("C"));
    }

    // Rule 2: unknown serials.

    #[test]
    fn an_assigning_record_of_an_unknown_serial_creates_an_active_device() {
        for observation in [
            Observation::Snapshot,
            Observation::Added,
            // A move from another MDM server often arrives as `modified`.
            Observation::Modified,
        ] {
            let device = write(decide(None, &rec(observation, v(5, 1), attrs("A")), now()));
            assert_eq!(device.state, DeviceState::Active, "{observation:?}");
            assert_eq!(device.serial, serial(SERIAL));
            assert_eq!(device.attributes, attrs("A"));
            assert_eq!(device.version, v(5, 1));
            assert_eq!(device.first_seen_at, now());
            assert_eq!(
                (device.removed_at, device.deletes_at, device.deleted_at),
                (None, None, None)
            );
            assert_eq!(device.policy_id, None);
        }
    }

    #[test]
    fn a_deleted_record_of_an_unknown_serial_leaves_only_a_hidden_trace() {
        let trace = write(decide(None, &deleted(5), now()));
        assert_eq!(trace.state, DeviceState::ReleasedBeforeSeen);
        assert!(!trace.is_listed(now()));
        assert_eq!(trace.removed_at, Some(t(5)));
        assert_eq!(trace.deletes_at, Some(deletion_date(&trace.serial, t(5))));
    }

    #[test]
    fn the_trace_stops_an_older_assignment_from_resurrecting_the_device() {
        // In order: added at 1, released at 2: a removed device with the attributes of 1.
        let in_order = stored(&[added(1, "A"), deleted(2)]);
        assert_eq!(in_order.state, DeviceState::RemovedFromApple);
        // The release overtakes the addition: same result, not an active device.
        let overtaken = stored(&[deleted(2), added(1, "A")]);
        assert_eq!(overtaken, in_order);
        // A newer assignment after the trace is a device assigned back.
        let back = stored(&[deleted(2), added(3, "A")]);
        assert_eq!(back.state, DeviceState::Active);
        assert_eq!(back.deletes_at, None);
    }

    // Rule 3: released to another server.

    #[test]
    fn deleted_marks_the_device_removed_with_a_deletion_date() {
        let current = stored(&[added(1, "A")]);
        let device = write(decide(Some(&current), &deleted(600), now()));
        assert_eq!(device.state, DeviceState::RemovedFromApple);
        assert!(device.is_listed(now()));
        assert_eq!(device.removed_at, Some(t(600)));
        let deletes_at = device.deletes_at.unwrap();
        assert_eq!(deletes_at, deletion_date(&device.serial, t(600)));
        let after = days(t(600), deletes_at);
        assert!((30.0..=45.0).contains(&after), "{after} days");
        assert!(device.is_expired(deletes_at));
        assert!(!device.is_expired(deletes_at - Duration::seconds(1)));
    }

    #[test]
    fn deletion_dates_are_stable_and_spread_per_serial() {
        // FNV-1a's published test vectors: the hash, hence the dates, never drift.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);

        let removed_at = t(0);
        let first = deletion_date(&serial("C02T0HL0GGC0"), removed_at);
        assert_eq!(deletion_date(&serial("C02T0HL0GGC0"), removed_at), first);

        let offsets: Vec<i64> = (0..1_000)
            .map(|n| {
                (deletion_date(&serial(&format!("F9FXK{n:07}")), removed_at) - removed_at)
                    .num_seconds()
            })
            .collect();
        let distinct: std::collections::HashSet<_> = offsets.iter().collect();
        assert!(
            distinct.len() > 990,
            "{} distinct dates of 1000",
            distinct.len()
        );
        let (min, max) = (offsets.iter().min().unwrap(), offsets.iter().max().unwrap());
        // A mass release spreads over (nearly) the whole 15 days.
        assert!(*min < Duration::days(31).num_seconds(), "{min}");
        assert!(*max > Duration::days(44).num_seconds(), "{max}");
    }

    // Rule 4: assigned back.

    #[test]
    fn a_removed_device_seen_again_is_active() {
        let removed = stored(&[added(1, "A"), deleted(2)]);
        for record in [added(3, "A"), modified(3, "A"), snapshot(3, "A")] {
            let device = write(decide(Some(&removed), &record, now()));
            assert_eq!(device.state, DeviceState::Active, "{record:?}");
            assert_eq!((device.removed_at, device.deletes_at), (None, None));
            assert_eq!(device.first_seen_at, removed.first_seen_at);
        }
    }

    #[test]
    fn sync_keeps_the_policy() {
        let mut current = stored(&[added(1, "A")]);
        current.policy_id = Some(PolicyId::parse("p1").unwrap());
        for record in [modified(2, "B"), deleted(2), snapshot(2, "A")] {
            let device = decide(Some(&current), &record, now()).into_write().unwrap();
            assert_eq!(device.policy_id, current.policy_id, "{record:?}");
        }
    }

    fn managed() -> Management {
        Management {
            assignment: Some(Assignment::pending(t(0))),
            enrollment: EnrollmentState::Enrolled,
            last_action: Some(DeviceAction::Wipe),
            enrollment_changed_at: Some(t(0)),
            user_id: Some(UserId::parse("ada@example.com").unwrap()),
        }
    }

    #[test]
    fn sync_keeps_the_management_side() {
        let mut current = stored(&[added(1, "A")]);
        current.policy_id = Some(PolicyId::parse("p1").unwrap());
        current.management = managed();
        for record in [
            modified(2, "B"),
            deleted(2),
            snapshot(2, "A"),
            added(2, "C"),
        ] {
            let device = decide(Some(&current), &record, now()).into_write().unwrap();
            assert_eq!(device.management, managed(), "{record:?}");
        }
        let swept = release(&current, v(5, 0), now()).into_write().unwrap();
        assert_eq!(swept.state, DeviceState::RemovedFromApple);
        assert_eq!(swept.management, managed());
        assert_eq!(swept.policy_id, current.policy_id);
    }

    #[test]
    fn the_management_side_is_content_not_bookkeeping() {
        let current = stored(&[added(1, "A")]);
        let mut other = current.clone();
        other.management.user_id = Some(UserId::parse("bob").unwrap());
        assert!(!current.same_content(&other));
        // A record that only moves the version stays a refresh with it set.
        let mut managed_device = current.clone();
        managed_device.management = managed();
        assert!(matches!(
            decide(Some(&managed_device), &added(2, "A"), now()),
            Decision::Refresh(device) if device.management == managed()
        ));
    }

    // Rule 5: an administrator's delete.

    fn tombstone_at(seconds: i64) -> Device {
        let mut device = stored(&[added(1, "A")]);
        device.policy_id = Some(PolicyId::parse("p1").unwrap());
        device.management = managed();
        admin_delete(&device, t(seconds)).unwrap()
    }

    #[test]
    fn admin_delete_leaves_a_hidden_tombstone() {
        let tombstone = tombstone_at(100);
        assert_eq!(tombstone.state, DeviceState::DeletedByAdmin);
        assert!(!tombstone.is_listed(t(100)));
        assert_eq!(tombstone.serial, serial(SERIAL));
        assert_eq!(tombstone.deleted_at, Some(t(100)));
        assert_eq!(tombstone.deletes_at, Some(t(100) + TOMBSTONE_LIFETIME));
        assert_eq!(tombstone.policy_id, None);
        assert_eq!(tombstone.management, Management::default());
        assert!(tombstone.version > v(100, u64::MAX - 1));
        // A removed device may be deleted before its date, too.
        let removed = stored(&[added(1, "A"), deleted(2)]);
        assert!(admin_delete(&removed, t(100)).is_ok());
    }

    #[test]
    fn admin_delete_refuses_devices_the_api_does_not_list() {
        let expired = stored(&[added(1, "A"), deleted(2)]);
        let hidden = [
            (tombstone_at(100), t(200)),
            (stored(&[deleted(5)]), now()),
            (expired.clone(), expired.deletes_at.unwrap()),
        ];
        for (device, at) in hidden {
            assert_eq!(
                admin_delete(&device, at),
                Err(AdminDeleteError::NotFound {
                    serial: serial(SERIAL)
                }),
                "{device:?}"
            );
        }
    }

    #[test]
    fn records_observed_before_the_delete_are_ignored() {
        let tombstone = tombstone_at(100);
        for record in [
            snapshot(99, "B"),
            added(100, "B"),
            rec(Observation::Added, v(100, u64::MAX - 1), attrs("B")),
            modified(50, "B"),
            deleted(100),
        ] {
            assert_eq!(
                decide(Some(&tombstone), &record, now()),
                Decision::Skip(SkipReason::Tombstoned),
                "{record:?}"
            );
        }
    }

    #[test]
    fn modified_and_deleted_never_revive_a_tombstone() {
        let tombstone = tombstone_at(100);
        let after = apply(
            Some(tombstone),
            &[modified(101, "B"), deleted(102), modified(103, "C")],
        )
        .unwrap();
        assert_eq!(after.state, DeviceState::DeletedByAdmin);
        assert!(!after.is_listed(now()));
        assert_eq!(after.deletes_at, Some(t(100) + TOMBSTONE_LIFETIME));
    }

    #[test]
    fn added_after_the_delete_revives_the_device_as_newly_synced() {
        let tombstone = tombstone_at(100);
        let device = write(decide(Some(&tombstone), &added(101, "B"), now()));
        assert_eq!(device.state, DeviceState::Active);
        assert_eq!(device.attributes, attrs("B"));
        assert_eq!((device.deleted_at, device.deletes_at), (None, None));
        assert_eq!(device.policy_id, None);
        assert_eq!(device.management, Management::default());
        assert_eq!(device.first_seen_at, now());
    }

    #[test]
    fn the_next_full_sync_brings_a_deleted_device_back() {
        let tombstone = tombstone_at(100);
        // A full sync that began before the delete does not; the next one does.
        assert_eq!(
            decide(Some(&tombstone), &snapshot(90, "A"), now()),
            Decision::Skip(SkipReason::Tombstoned)
        );
        let device = write(decide(Some(&tombstone), &snapshot(200, "A"), now()));
        assert_eq!(device.state, DeviceState::Active);
    }

    #[test]
    fn changes_after_the_delete_survive_an_older_revival_arriving_late() {
        let tombstone = tombstone_at(100);
        // In order: assigned again at 101, released at 102.
        let in_order = apply(Some(tombstone.clone()), &[added(101, "B"), deleted(102)]).unwrap();
        assert_eq!(in_order.state, DeviceState::RemovedFromApple);
        assert_eq!(in_order.removed_at, Some(t(102)));
        // The release arrives first: it is kept hidden, then applied on revival.
        let late = apply(Some(tombstone), &[deleted(102), added(101, "B")]).unwrap();
        assert_eq!(late, in_order);
    }

    #[test]
    fn a_revived_device_still_ignores_records_from_before_the_delete() {
        // Revived by a full sync whose record carried no attributes.
        let bare = rec(Observation::Snapshot, v(200, 0), AppleAttributes::default());
        let revived = write(decide(Some(&tombstone_at(100)), &bare, now()));
        assert_eq!(revived.state, DeviceState::Active);
        assert_eq!(revived.attributes, attrs("A"));
        // A change from before the delete, delivered late, changes nothing.
        assert_eq!(
            decide(Some(&revived), &modified(50, "B"), now()),
            Decision::Skip(SkipReason::Stale)
        );
    }

    #[test]
    fn a_delete_is_not_undone_by_observations_apple_dated_ahead_of_our_clock() {
        // Apple's op_date is ahead of the importer's clock at the time of the delete.
        let device = stored(&[added(500, "A")]);
        let tombstone = admin_delete(&device, t(100)).unwrap();
        assert_eq!(
            decide(Some(&tombstone), &added(500, "A"), now()),
            Decision::Skip(SkipReason::Tombstoned)
        );
    }

    // Rule 6: unchanged devices.

    #[test]
    fn a_newer_record_that_changes_nothing_is_a_refresh() {
        let current = stored(&[added(1, "A")]);
        let Decision::Refresh(device) = decide(Some(&current), &snapshot(2, "A"), now()) else {
            panic!("expected a refresh");
        };
        assert!(device.same_content(&current));
        assert_eq!(device.version, v(2, 0));
        assert_eq!(device.attributes_version, Some(v(2, 0)));
        // A changed attribute is a write.
        assert!(matches!(
            decide(Some(&current), &snapshot(2, "B"), now()),
            Decision::Write(_)
        ));
    }

    #[test]
    fn skipping_refreshes_loses_a_change_when_records_arrive_out_of_order() {
        // Active "A" at 1; Apple then reports: released at 2, assigned back unchanged at 3.
        let start = stored(&[added(1, "A")]);
        let late = deleted(2);
        let back = added(3, "A");
        // Writing every decision: the late release is stale, the device stays active.
        let written = apply(Some(start.clone()), &[back.clone(), late.clone()]).unwrap();
        assert_eq!(written.state, DeviceState::Active);
        // Skipping the refresh leaves version 1 stored, and the late release applies.
        let after_back = match decide(Some(&start), &back, now()) {
            Decision::Refresh(_) => start.clone(),
            other => panic!("expected a refresh, got {other:?}"),
        };
        let skipped = write(decide(Some(&after_back), &late, now()));
        assert_eq!(skipped.state, DeviceState::RemovedFromApple);
    }

    // Rule 7: the full-sync sweep.

    #[test]
    fn release_removes_an_active_device_the_full_sync_did_not_see() {
        let current = stored(&[added(1, "A")]);
        let swept_at = Version::for_snapshot(t(50), 0);
        let device = write(release(&current, swept_at, now()));
        assert_eq!(device.state, DeviceState::RemovedFromApple);
        assert_eq!(device.version, swept_at);
        assert_eq!(device.removed_at, Some(t(50)));
        assert_eq!(
            device.deletes_at,
            Some(deletion_date(&device.serial, t(50)))
        );
        assert_eq!(device.attributes, attrs("A"));
        // An older change arriving afterwards does not make it active again (it only
        // brings its newer attributes, as it would have in order).
        let late = write(decide(Some(&device), &modified(40, "B"), now()));
        assert_eq!(late.state, DeviceState::RemovedFromApple);
        assert_eq!(late.removed_at, Some(t(50)));
        assert_eq!(late.attributes, attrs("B"));
    }

    #[test]
    fn release_leaves_devices_observed_after_the_sweep_began() {
        let swept_at = Version::for_snapshot(t(50), 0);
        for device in [
            // Contained in the snapshot.
            stored(&[rec(Observation::Snapshot, swept_at, attrs("A"))]),
            stored(&[rec(
                Observation::Snapshot,
                Version::for_snapshot(t(50), 7),
                attrs("A"),
            )]),
            // Assigned while the snapshot was paged.
            stored(&[added(51, "A")]),
            // Deleted by an administrator after the sweep began.
            tombstone_at(60),
        ] {
            assert_eq!(
                release(&device, swept_at, now()),
                Decision::Skip(SkipReason::Stale),
                "{device:?}"
            );
        }
    }

    #[test]
    fn release_keeps_the_removal_date_of_a_removed_device() {
        let swept_at = Version::for_snapshot(t(50), 0);
        for removed in [stored(&[added(1, "A"), deleted(2)]), stored(&[deleted(2)])] {
            let Decision::Refresh(device) = release(&removed, swept_at, now()) else {
                panic!("expected a refresh of {removed:?}");
            };
            assert!(device.same_content(&removed));
            assert_eq!(device.removed_at, Some(t(2)));
            assert_eq!(device.version, swept_at);
        }
    }

    #[test]
    fn a_release_by_replacement_is_remembered_until_the_device_returns() {
        let by_replacement = DeviceRecord {
            released_by_replacement: true,
            ..deleted(2)
        };
        let removed = stored(&[added(1, "A"), by_replacement.clone()]);
        assert_eq!(removed.state, DeviceState::RemovedFromApple);
        assert!(removed.released_by_replacement);
        assert!(stored(&[by_replacement]).released_by_replacement);
        // A plain `deleted` record (a move to another MDM server) does not say so.
        assert!(!stored(&[added(1, "A"), deleted(2)]).released_by_replacement);
        // The weekly sweep keeps the reason with the removal date.
        let Decision::Refresh(swept) = release(&removed, Version::for_snapshot(t(50), 0), now())
        else {
            panic!("expected a refresh");
        };
        assert!(swept.released_by_replacement);
        // Assigned again: active, and the old release no longer describes it.
        let back = write(decide(Some(&swept), &added(60, "A"), now()));
        assert_eq!(back.state, DeviceState::Active);
        assert!(!back.released_by_replacement);
    }

    #[test]
    fn release_of_a_tombstone_stays_hidden_until_a_revival() {
        let tombstone = tombstone_at(10);
        let released = release(&tombstone, Version::for_snapshot(t(50), 0), now())
            .into_write()
            .unwrap();
        assert_eq!(released.state, DeviceState::DeletedByAdmin);
        assert_eq!(released.deletes_at, tombstone.deletes_at);
        // Assigned again at 20 (reported late), absent from the snapshot of 50: removed.
        let revived = write(decide(Some(&released), &added(20, "B"), now()));
        assert_eq!(revived.state, DeviceState::RemovedFromApple);
        assert_eq!(revived.removed_at, Some(t(50)));
    }

    #[test]
    fn release_skips_an_expired_item() {
        let removed = stored(&[added(1, "A"), deleted(2)]);
        let at = removed.deletes_at.unwrap();
        assert_eq!(
            release(&removed, Version::for_snapshot(at, 0), at),
            Decision::Skip(SkipReason::Expired)
        );
    }

    // Rule 8: batches.

    #[test]
    fn group_by_serial_keeps_the_first_seen_order_of_serials() {
        let of = |text: &str, seconds: i64| DeviceRecord {
            serial: serial(text),
            ..added(seconds, "A")
        };
        let groups = group_by_serial(vec![
            of("B", 1),
            of("A", 2),
            of("B", 3),
            of("C", 4),
            of("A", 5),
        ]);
        let shape: Vec<(&str, Vec<Version>)> = groups
            .iter()
            .map(|group| {
                let versions = group.records.iter().map(|r| r.version).collect();
                (group.serial.as_str(), versions)
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                ("B", vec![v(1, 0), v(3, 0)]),
                ("A", vec![v(2, 0), v(5, 0)]),
                ("C", vec![v(4, 0)]),
            ]
        );
        assert!(group_by_serial(Vec::new()).is_empty());
    }

    #[test]
    fn decide_all_applies_a_batch_as_if_in_order() {
        let batch = [
            modified(3, "C"),
            added(1, "A"),
            deleted(2),
            modified(3, "C"),
        ];
        let device = write(decide_all(None, &batch, now()));
        assert_eq!(
            device,
            stored(&[added(1, "A"), deleted(2), modified(3, "C")])
        );
        // Two records with one version: the later one in the batch wins.
        let tie = [
            rec(Observation::Modified, v(4, 0), attrs("X")),
            rec(Observation::Modified, v(4, 0), attrs("Y")),
        ];
        let device = write(decide_all(Some(&device), &tie, now()));
        assert_eq!(device.attributes, attrs("Y"));
        // A batch that changes nothing.
        assert_eq!(
            decide_all(Some(&device), &tie, now()),
            Decision::Skip(SkipReason::Stale)
        );
        assert_eq!(
            decide_all(Some(&device), &[], now()),
            Decision::Skip(SkipReason::Stale)
        );
        assert!(matches!(
            decide_all(Some(&device), &[snapshot(5, "Y")], now()),
            Decision::Refresh(_)
        ));
    }

    // Rule 9: bare `deleted` records.

    #[test]
    fn a_bare_deleted_record_keeps_the_stored_attributes() {
        let current = stored(&[added(1, "A")]);
        let device = write(decide(Some(&current), &deleted(2), now()));
        assert_eq!(device.attributes, attrs("A"));
        assert_eq!(device.attributes_version, Some(v(1, 0)));
        // One that carries attributes replaces them.
        let with = rec(Observation::Deleted, v(2, 0), attrs("Z"));
        assert_eq!(
            write(decide(Some(&current), &with, now())).attributes,
            attrs("Z")
        );
    }

    #[test]
    fn an_older_record_fills_in_attributes_a_newer_bare_delete_lacked() {
        let in_order = stored(&[added(1, "A"), modified(2, "B"), deleted(3)]);
        assert_eq!(in_order.attributes, attrs("B"));
        let late = stored(&[added(1, "A"), deleted(3), modified(2, "B")]);
        assert_eq!(late, in_order);
        assert_eq!(late.state, DeviceState::RemovedFromApple);
    }

    // Edges.

    #[test]
    fn an_expired_item_counts_as_absent() {
        let removed = stored(&[added(1, "A"), deleted(2)]);
        let after = removed.deletes_at.unwrap();
        let device = write(decide(Some(&removed), &modified(1, "A"), after));
        assert_eq!(device.state, DeviceState::Active);
        assert_eq!(device.first_seen_at, after);
    }

    #[test]
    fn a_record_of_another_serial_is_refused() {
        let current = stored(&[added(1, "A")]);
        let other = DeviceRecord {
            serial: serial("OTHER"),
            ..modified(2, "B")
        };
        assert_eq!(
            decide(Some(&current), &other, now()),
            Decision::Skip(SkipReason::OtherDevice)
        );
    }

    // Versions.

    #[test]
    fn version_text_is_fixed_width_and_round_trips() {
        let version = Version::for_change(
            DateTime::from_timestamp_millis(1_700_000_000_000).unwrap(),
            42,
        );
        assert_eq!(version.to_string(), "0001700000000000-00000000000000000042");
        assert_eq!(version.to_string().parse::<Version>(), Ok(version));
        assert_eq!(version.observed_at().timestamp_millis(), 1_700_000_000_000);
        assert_eq!(version.seq(), 42);
        let json = serde_json::to_string(&version).unwrap();
        assert_eq!(json, "\"0001700000000000-00000000000000000042\"");
        assert_eq!(serde_json::from_str::<Version>(&json).unwrap(), version);
        // Sub-millisecond precision is dropped, not rounded up.
        let precise = t(0) + Duration::microseconds(999);
        assert_eq!(Version::for_change(precise, 0), v(0, 0));
        // Before 1970 sorts first rather than failing.
        assert_eq!(
            Version::for_change(DateTime::UNIX_EPOCH - Duration::days(1), 3).to_string(),
            "0000000000000000-00000000000000000003"
        );
    }

    #[test]
    fn version_text_rejects_anything_else() {
        for bad in [
            "",
            "-",
            "0001700000000000",
            "0001700000000000-0000000000000000042",
            "001700000000000-00000000000000000042",
            "0001700000000000-00000000000000000042 ",
            "+001700000000000-00000000000000000042",
            "0001700000000000-+0000000000000000042",
            "0001700000000000_00000000000000000042",
            "000170000000000a-00000000000000000042",
            // Beyond u64.
            "0001700000000000-99999999999999999999",
            // Beyond what a date can hold.
            "9999999999999999-00000000000000000000",
        ] {
            assert_eq!(bad.parse::<Version>(), Err(InvalidVersion), "{bad:?}");
        }
        assert!(serde_json::from_str::<Version>("\"x\"").is_err());
    }

    #[test]
    fn records_travel_as_json() {
        let record = deleted(5);
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"serial": SERIAL, "observation": "deleted", "version": v(5, 0).to_string()})
        );
        assert_eq!(
            serde_json::from_value::<DeviceRecord>(json).unwrap(),
            record
        );
        let full = added(5, "A");
        let back: DeviceRecord =
            serde_json::from_str(&serde_json::to_string(&full).unwrap()).unwrap();
        assert_eq!(back, full);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use proptest::sample::Index;

        fn observation() -> impl Strategy<Value = Observation> {
            prop_oneof![
                Just(Observation::Snapshot),
                Just(Observation::Added),
                Just(Observation::Modified),
                Just(Observation::Deleted),
            ]
        }

        /// Few distinct values, so unchanged records (refreshes) are common.
        fn attributes() -> impl Strategy<Value = AppleAttributes> {
            prop_oneof![
                Just(AppleAttributes::default()),
                Just(attrs("A")),
                Just(attrs("B")),
                Just(attrs("C")),
            ]
        }

        /// Records of one device within a minute, many sharing a millisecond.
        fn record() -> impl Strategy<Value = DeviceRecord> {
            (observation(), 0i64..30, 0u64..3, attributes()).prop_map(
                |(observation, seconds, seq, attributes)| {
                    rec(observation, v(seconds, seq), attributes)
                },
            )
        }

        /// Distinct versions: the worker never gives two different records one version.
        fn records(max: usize) -> impl Strategy<Value = Vec<DeviceRecord>> {
            proptest::collection::vec(record(), 1..=max).prop_map(|records| {
                let mut seen = std::collections::HashSet::new();
                records
                    .into_iter()
                    .filter(|record| seen.insert(record.version))
                    .collect()
            })
        }

        /// What is stored before the records under test: nothing, or what earlier
        /// records (applied in order) left, possibly deleted by an administrator.
        fn start() -> impl Strategy<Value = Option<Device>> {
            (records(4), any::<bool>(), proptest::option::of(0i64..30)).prop_map(
                |(earlier, nothing, delete_at)| {
                    if nothing {
                        return None;
                    }
                    let mut sorted = earlier;
                    sorted.sort_by_key(|record| record.version);
                    let device = apply(None, &sorted)?;
                    match delete_at {
                        Some(seconds) => Some(admin_delete(&device, t(seconds)).unwrap_or(device)),
                        None => Some(device),
                    }
                },
            )
        }

        fn in_version_order(start: Option<Device>, records: &[DeviceRecord]) -> Option<Device> {
            let mut sorted = records.to_vec();
            sorted.sort_by_key(|record| record.version);
            apply(start, &sorted)
        }

        /// Each record once, in an order given by `keys`, plus the `extra` redeliveries.
        fn deliveries(
            records: &[DeviceRecord],
            keys: &[u16],
            extra: &[(Index, u16)],
        ) -> Vec<DeviceRecord> {
            let mut keyed: Vec<(u16, &DeviceRecord)> = records
                .iter()
                .zip(keys.iter().copied().chain(std::iter::repeat(0)))
                .map(|(record, key)| (key, record))
                .collect();
            keyed.extend(extra.iter().map(|(index, key)| (*key, index.get(records))));
            keyed.sort_by_key(|(key, _)| *key);
            keyed
                .into_iter()
                .map(|(_, record)| record.clone())
                .collect()
        }

        proptest! {
            /// (a) Any order, any duplicates, record by record: the device ends as if each
            /// record had arrived once, in version order.
            #[test]
            fn any_order_with_duplicates_converges(
                start in start(),
                records in records(8),
                keys in proptest::collection::vec(any::<u16>(), 8),
                extra in proptest::collection::vec((any::<Index>(), any::<u16>()), 0..8),
            ) {
                let expected = in_version_order(start.clone(), &records);
                let delivered = deliveries(&records, &keys, &extra);
                prop_assert_eq!(apply(start, &delivered), expected);
            }

            /// (a) The same when the records arrive in batches applied with `decide_all`.
            #[test]
            fn any_batching_converges(
                start in start(),
                records in records(8),
                keys in proptest::collection::vec(any::<u16>(), 8),
                extra in proptest::collection::vec((any::<Index>(), any::<u16>()), 0..8),
                sizes in proptest::collection::vec(1usize..4, 1..16),
            ) {
                let expected = in_version_order(start.clone(), &records);
                let delivered = deliveries(&records, &keys, &extra);
                let mut device = start;
                let mut rest = delivered.as_slice();
                for size in sizes.iter().cycle() {
                    if rest.is_empty() {
                        break;
                    }
                    let (batch, tail) = rest.split_at((*size).min(rest.len()));
                    device = decide_all(device.as_ref(), batch, now()).into_write().or(device);
                    rest = tail;
                }
                prop_assert_eq!(device, expected);
            }

            /// The rules stated directly, for a serial the service did not hold: the newest
            /// record decides active or released, the newest record with attributes decides
            /// the attributes, and a serial only ever reported released stays hidden.
            #[test]
            fn the_newest_observations_decide(
                records in records(8),
                keys in proptest::collection::vec(any::<u16>(), 8),
            ) {
                let device = apply(None, &deliveries(&records, &keys, &[])).unwrap();
                let newest = records.iter().max_by_key(|r| r.version).unwrap();
                let newest_attributes = records
                    .iter()
                    .filter(|r| !r.attributes.is_empty())
                    .max_by_key(|r| r.version)
                    .map(|r| r.attributes.clone())
                    .unwrap_or_default();
                let ever_assigned = records.iter().any(|r| r.observation != Observation::Deleted);
                let state = match (newest.observation, ever_assigned) {
                    (Observation::Deleted, false) => DeviceState::ReleasedBeforeSeen,
                    (Observation::Deleted, true) => DeviceState::RemovedFromApple,
                    _ => DeviceState::Active,
                };
                prop_assert_eq!(device.state, state);
                prop_assert_eq!(device.version, newest.version);
                prop_assert_eq!(device.attributes, newest_attributes);
                let removed_at = (newest.observation == Observation::Deleted)
                    .then(|| newest.version.observed_at());
                prop_assert_eq!(device.removed_at, removed_at);
            }

            /// When every record reaches the importer in version order apart from
            /// redeliveries (of single records or whole batches), skipping refreshes
            /// keeps the content right; only the stored version lags.
            #[test]
            fn in_order_delivery_may_skip_refreshes(
                start in start(),
                records in records(8),
                sizes in proptest::collection::vec(1usize..4, 1..16),
                redeliveries in proptest::collection::vec((any::<Index>(), any::<Index>(), any::<bool>()), 0..8),
            ) {
                let expected = in_version_order(start.clone(), &records);
                let mut sorted = records;
                sorted.sort_by_key(|record| record.version);
                let mut batches: Vec<Vec<DeviceRecord>> = Vec::new();
                let mut rest = sorted.as_slice();
                for size in sizes.iter().cycle() {
                    if rest.is_empty() {
                        break;
                    }
                    let (batch, tail) = rest.split_at((*size).min(rest.len()));
                    batches.push(batch.to_vec());
                    rest = tail;
                }
                let mut device = start;
                for (position, batch) in batches.iter().enumerate() {
                    let mut deliveries = vec![batch.clone()];
                    for (after, which, whole) in &redeliveries {
                        if after.index(batches.len()) != position {
                            continue;
                        }
                        let earlier = &batches[which.index(position + 1)];
                        deliveries.push(if *whole {
                            earlier.clone()
                        } else {
                            vec![which.get(earlier).clone()]
                        });
                    }
                    for delivery in deliveries {
                        if let Decision::Write(next) = decide_all(device.as_ref(), &delivery, now()) {
                            device = Some(next);
                        }
                    }
                }
                match (&device, &expected) {
                    (Some(device), Some(expected)) => prop_assert!(
                        device.same_content(expected),
                        "{:?}\n!=\n{:?}", device, expected
                    ),
                    _ => prop_assert_eq!(device, expected),
                }
            }

            /// Sync never touches the MDM side: whatever the records and their order, a
            /// device keeps its assignment, enrollment state and user (only an
            /// administrator's delete, not modelled here, clears them).
            #[test]
            fn sync_carries_the_management_side_over(
                start in start(),
                records in records(8),
                keys in proptest::collection::vec(any::<u16>(), 8),
                extra in proptest::collection::vec((any::<Index>(), any::<u16>()), 0..8),
            ) {
                let Some(mut start) = start else { return Ok(()) };
                prop_assume!(start.state != DeviceState::DeletedByAdmin);
                start.management = managed();
                let delivered = deliveries(&records, &keys, &extra);
                let device = apply(Some(start), &delivered).unwrap();
                prop_assert_eq!(&device.management, &managed());
                let swept = release(&device, v(40, 0), now()).into_write().unwrap_or(device);
                prop_assert_eq!(swept.management, managed());
            }

            /// (b) A released device is deleted 30 to 45 days later, whatever its serial.
            #[test]
            fn deletion_date_is_30_to_45_days_later(
                text in "[A-Z0-9]{1,64}",
                millis in 0i64..4_102_444_800_000,
            ) {
                let removed_at = DateTime::from_timestamp_millis(millis).unwrap();
                let deletes_at = deletion_date(&serial(&text), removed_at);
                prop_assert!(deletes_at >= removed_at + REMOVED_LIFETIME_MIN);
                prop_assert!(deletes_at <= removed_at + REMOVED_LIFETIME_MAX);
            }

            /// Version text sorts like versions, so DynamoDB can compare it.
            #[test]
            fn version_text_sorts_like_versions(
                a in (0i64..8_000_000_000_000_000, any::<u64>()),
                b in (0i64..8_000_000_000_000_000, any::<u64>()),
            ) {
                let version = |(millis, seq): (i64, u64)| {
                    Version::for_change(DateTime::from_timestamp_millis(millis).unwrap(), seq)
                };
                let (a, b) = (version(a), version(b));
                prop_assert_eq!(a.cmp(&b), a.to_string().cmp(&b.to_string()));
                prop_assert_eq!(a.to_string().parse::<Version>(), Ok(a));
            }
        }
    }
}
