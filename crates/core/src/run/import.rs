//! The pure decisions of importing a batch: which records call for a write,
//! and how a write moves the token's count of listed devices.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::device::{self, Decision, DeviceWrite, SerialRecords, Stored};
use crate::ids::Serial;

/// How writing `write` changes the number of listed devices.
pub fn listed_delta(
    stored: &HashMap<Serial, Stored>,
    write: &DeviceWrite,
    now: DateTime<Utc>,
) -> i64 {
    let before = stored
        .get(&write.device.serial)
        .is_some_and(|s| s.device.is_listed(now));
    i64::from(write.device.is_listed(now)) - i64::from(before)
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
