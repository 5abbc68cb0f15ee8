//! The messages of a run's steps, as the domain sees them. The queue crate
//! encodes them (JSON bodies, size splitting, FIFO deduplication ids); what
//! they mean lives here.

use serde::{Deserialize, Serialize};

use crate::device::{DeviceRecord, Version};
use crate::ids::{AccountId, RunId, Serial, TokenId};
use crate::sync::{SyncKind, Trigger};

/// One step of a sync run. The first step is queued by whoever claimed the
/// run; a worker nearing its deadline queues the next one itself. The
/// cursor is NOT in the message: it lives on the token item, saved only
/// after the devices it covers were accepted by SQS, so a replayed or
/// stale job can never move it backwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncJob {
    pub account_id: AccountId,
    pub token_id: TokenId,
    pub run_id: RunId,
    pub kind: SyncKind,
    pub trigger: Trigger,
    /// 0 for the first step, then 1, 2, … for continuations.
    #[serde(default)]
    pub step: u32,
}

/// What travels on the device-batches queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BatchMessage {
    Devices(DeviceBatch),
    EndOfRun(EndOfRun),
}

/// Device records of one run, in Apple's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceBatch {
    pub account_id: AccountId,
    pub token_id: TokenId,
    pub run_id: RunId,
    /// The batch's number within its run, from 0.
    pub seq: u64,
    /// Records of a full snapshot (fetch), whose serials the sweep needs.
    pub snapshot: bool,
    pub records: Vec<DeviceRecord>,
}

/// Sent after a run's last batch: the importer that reads it closes the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndOfRun {
    pub account_id: AccountId,
    pub token_id: TokenId,
    pub run_id: RunId,
    /// The kind the run ended as (a delta may have become full).
    pub kind: SyncKind,
    /// Device batches the run sent.
    pub batches: u64,
    /// Device records the run fetched from Apple.
    pub fetched: u64,
    pub outcome: RunOutcome,
    /// Set on the markers the importer queues to itself when closing the
    /// run takes more than one part (see [`Closing`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closing: Option<Closing>,
}

/// How far closing a run has come. A large token's devices are swept and
/// counted in parts, each in its own invocation, so that no invocation
/// holds the whole token in memory or outlives the function's timeout;
/// each part queues the next one behind itself (same message group).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closing {
    /// The part this marker asks for, from 1 (the first marker is part 0).
    pub part: u32,
    /// Device batches missing when the close began (in the dead-letter
    /// queue): decided once, so every part sweeps, or not, alike.
    pub missing: u64,
    /// The last serial the parts before swept (none before the first part).
    pub after: Option<Serial>,
    /// Devices the parts before found listed.
    pub listed: u64,
    /// Devices the parts before released.
    pub released: u64,
}

/// How the fetching part of a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum RunOutcome {
    Finished {
        /// Set when the run saw a complete snapshot: devices of the token
        /// it did not see are released, as of this version.
        sweep_at: Option<Version>,
        /// Something to report although the run finished.
        warning: Option<String>,
    },
    Failed {
        /// What went wrong, in words for the administrator.
        error: String,
    },
}

impl BatchMessage {
    /// The token and run a message belongs to.
    pub fn ids(&self) -> (&TokenId, &RunId) {
        match self {
            BatchMessage::Devices(b) => (&b.token_id, &b.run_id),
            BatchMessage::EndOfRun(e) => (&e.token_id, &e.run_id),
        }
    }
}
