//! What the API answers, as typed values.
//!
//! Each type names the fields the CLI shows and keeps every other field the
//! API sends in `extra`, so `--json` output is the API's answer whole, and
//! a field the API adds later reaches scripts without a CLI release.
//! Optional fields are `Option`: the API sends `null` for "not yet" (no
//! sync so far, no policy assigned).

use adesync_core::run::RunStatus;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Fields the API sent that the CLI does not name.
pub type Extra = Map<String, Value>;

/// A sync kind an administrator may request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncKind {
    /// Only the changes since the last sync.
    Delta,
    /// The complete device list (at most once every 7 days).
    Full,
}

/// An enrollment program token (`GET /v1/tokens/{token_id}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Token {
    pub id: String,
    pub name: String,
    pub apple_id: String,
    #[serde(default)]
    pub server_name: Option<String>,
    #[serde(default)]
    pub org_name: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub days_left: i64,
    pub expiring_soon: bool,
    /// `ok`, `terms_not_signed`, `token_invalid` or `expired`.
    pub status: String,
    #[serde(default)]
    pub status_message: Option<String>,
    #[serde(default)]
    pub device_count: u64,
    #[serde(default)]
    pub policy_count: u64,
    #[serde(default)]
    pub default_policy_id: Option<String>,
    #[serde(default)]
    pub last_full_sync_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_delta_sync_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_manual_sync_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub sync_running: bool,
    /// Only on creation: whether the first full sync was queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_sync: Option<FirstSync>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// The first full sync a new token starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FirstSync {
    pub queued: bool,
    #[serde(default)]
    pub run_id: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A page of `GET /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenPage {
    pub tokens: Vec<Token>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// The answer to a sync request (`202`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncStarted {
    pub run_id: String,
    pub kind: SyncKind,
    pub estimated_seconds: u64,
    #[serde(default)]
    pub warnings: Vec<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One sync run (`GET …/runs`, and the running one in `GET …/sync`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub run_id: String,
    /// `full` or `delta`.
    pub kind: String,
    /// Who started it: `manual`, `schedule`, `token_created`, …
    #[serde(default)]
    pub trigger: Option<String>,
    /// `running`, `importing`, `succeeded`, `failed` or `abandoned`.
    pub status: String,
    pub started_at: DateTime<Utc>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    /// When fetching from Apple ended; `fetched` is the run's total from then on.
    #[serde(default)]
    pub fetch_finished_at: Option<DateTime<Utc>>,
    /// Pages fetched from Apple.
    #[serde(default)]
    pub pages: u64,
    #[serde(default)]
    pub fetched: u64,
    #[serde(default)]
    pub imported: u64,
    /// `None`: not known yet (a first sync still fetching, a delta whose
    /// size Apple has not told). Never read it as 0: see [`Run::seconds_left`].
    #[serde(default)]
    pub estimated_seconds_left: Option<u64>,
    /// Devices the token listed when the run started (`None`: never synced).
    #[serde(default)]
    pub expected_devices: Option<u64>,
    /// The rate the run has achieved, once the API has measured one.
    #[serde(default)]
    pub devices_per_minute: Option<u64>,
    /// While the run is going: when it is abandoned unless it makes progress.
    #[serde(default)]
    pub lease_expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub warning: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Run {
    /// Whether the run has ended, one way or another.
    pub fn is_over(&self) -> bool {
        self.run_status().is_some_and(RunStatus::is_over)
    }

    /// The run's status, if this CLI knows it (a newer API may add one).
    pub fn run_status(&self) -> Option<RunStatus> {
        RunStatus::parse(&self.status)
    }

    /// Whether the run ended as `status`.
    pub fn ended(&self, status: RunStatus) -> bool {
        self.run_status() == Some(status)
    }

    /// The API's estimate of the time left, while the run is going.
    ///
    /// APIs before `null` was allowed answered 0 when they could not tell
    /// (e.g. a fetch that had not caught up with the import), and a run
    /// still going has not 0 seconds left, so 0 counts as unknown too.
    pub fn seconds_left(&self) -> Option<u64> {
        self.estimated_seconds_left
            .filter(|left| *left > 0 && !self.is_over())
    }

    /// How long it ran, once it has finished.
    pub fn duration(&self) -> Option<std::time::Duration> {
        let finished = self.finished_at?;
        (finished - self.started_at).to_std().ok()
    }
}

/// `GET /v1/tokens/{token_id}/runs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunList {
    pub runs: Vec<Run>,
}

/// `GET /v1/tokens/{token_id}/sync`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncStatus {
    /// `idle` or `running`.
    pub state: String,
    #[serde(default)]
    pub run: Option<Run>,
    #[serde(default)]
    pub device_count: u64,
    #[serde(default)]
    pub last_full_sync_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_delta_sync_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_manual_sync_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_outcome: Option<String>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub next_manual_sync_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub next_full_sync_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub next_sync_is_full: bool,
    #[serde(default)]
    pub warnings: Vec<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A device of a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Device {
    pub serial_number: String,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub os: Option<String>,
    #[serde(default)]
    pub device_family: Option<String>,
    #[serde(default)]
    pub profile_status: Option<String>,
    #[serde(default)]
    pub policy_id: Option<String>,
    /// `active`, `removed_from_apple`, …
    pub state: String,
    #[serde(default)]
    pub removed_at: Option<DateTime<Utc>>,
    /// Apple released it because another device replaced it.
    #[serde(default)]
    pub released_by_replacement: bool,
    #[serde(default)]
    pub deletes_at: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A page of `GET /v1/tokens/{token_id}/devices`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevicePage {
    pub devices: Vec<Device>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// Filters of a device listing.
#[derive(Debug, Clone, Default)]
pub struct DeviceFilter {
    /// `active` or `removed_from_apple`.
    pub state: Option<String>,
    pub policy_id: Option<String>,
}

/// The answer to a device deletion.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceDeleted {
    pub serial_number: String,
    pub warning: String,
    #[serde(flatten)]
    pub extra: Extra,
}

/// An enrollment policy (its settings stay in `extra`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Policy {
    /// Read from `policy_id`, which every server sends (deprecated but kept),
    /// not `id`, which servers older than `id` lack; `id` stays in `extra`.
    pub policy_id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub is_default: bool,
    #[serde(default)]
    pub device_count: u64,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A page of `GET /v1/tokens/{token_id}/policies`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyPage {
    pub policies: Vec<Policy>,
    #[serde(default)]
    pub default_policy_id: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// The per-serial outcome of a policy assignment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AssignmentResult {
    pub serial_number: String,
    /// `assigned`, `pending` (accepted, sent to Apple shortly),
    /// `not_accessible`, `failed` or `throttled`.
    pub result: String,
    /// When a `failed` or `throttled` serial may be sent again.
    #[serde(default)]
    pub retry_after: Option<DateTime<Utc>>,
    #[serde(default)]
    pub retry_after_seconds: Option<u64>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl AssignmentResult {
    /// The device has the policy, or will shortly without anyone acting.
    pub fn is_done(&self) -> bool {
        matches!(self.result.as_str(), "assigned" | "pending")
    }

    /// `failed` and `throttled` serials may be sent again later.
    pub fn may_retry(&self) -> bool {
        matches!(self.result.as_str(), "failed" | "throttled")
    }
}

/// `POST /v1/tokens/{token_id}/policies/{policy_id}/devices`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Assignment {
    pub results: Vec<AssignmentResult>,
    /// Something Apple said that concerns the whole request.
    #[serde(default)]
    pub warning: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(json: Value) -> Run {
        serde_json::from_value(json).expect("a run")
    }

    #[test]
    fn a_run_with_nulls_reads_them_as_not_known() {
        let going = run(serde_json::json!({
            "run_id": "r1", "kind": "full", "trigger": "token_created", "status": "running",
            "started_at": "2030-01-01T00:00:00Z", "finished_at": null, "fetch_finished_at": null,
            "pages": 3, "fetched": 3000, "imported": 2000,
            "estimated_seconds_left": null, "expected_devices": null,
            "devices_per_minute": null, "lease_expires_at": "2030-01-01T00:15:00Z",
            "recovery": false,
        }));
        assert_eq!(going.estimated_seconds_left, None);
        assert_eq!(going.seconds_left(), None);
        assert_eq!(going.expected_devices, None);
        assert_eq!(going.devices_per_minute, None);
        assert_eq!(going.pages, 3);
        assert_eq!(
            going.lease_expires_at.map(|t| t.to_rfc3339()),
            Some("2030-01-01T00:15:00+00:00".to_owned())
        );
        // Scripts reading `--json` still see the API's null, and the
        // fields the CLI does not name.
        let again = serde_json::to_value(&going).expect("JSON");
        assert_eq!(again["estimated_seconds_left"], Value::Null);
        assert_eq!(again["recovery"], false);
    }

    #[test]
    fn a_run_from_an_older_api_still_reads() {
        let old = run(serde_json::json!({
            "run_id": "r2", "kind": "delta", "status": "importing",
            "started_at": "2030-01-01T00:00:00Z",
            "fetched": 500, "imported": 100, "estimated_seconds_left": 8,
        }));
        assert_eq!(old.estimated_seconds_left, Some(8));
        assert_eq!(old.seconds_left(), Some(8));
        assert_eq!(old.pages, 0);
        assert_eq!(old.expected_devices, None);
        assert_eq!(old.devices_per_minute, None);
        assert_eq!(old.lease_expires_at, None);
    }

    #[test]
    fn zero_seconds_left_is_not_an_estimate_while_the_run_goes() {
        let fetching = run(serde_json::json!({
            "run_id": "r3", "kind": "full", "status": "running",
            "started_at": "2030-01-01T00:00:00Z",
            "fetched": 100, "imported": 100, "estimated_seconds_left": 0,
        }));
        assert_eq!(fetching.seconds_left(), None);
        let done = run(serde_json::json!({
            "run_id": "r4", "kind": "full", "status": "succeeded",
            "started_at": "2030-01-01T00:00:00Z", "finished_at": "2030-01-01T00:01:00Z",
            "fetched": 100, "imported": 100, "estimated_seconds_left": 30,
        }));
        assert_eq!(done.seconds_left(), None, "an ended run has no time left");
    }
}
