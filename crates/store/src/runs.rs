//! Run history: one item per sync run in the runs table.
//!
//! Progress counters (`fetched`, `imported`, batches) change only with
//! atomic `ADD` updates so concurrent importers never lose a count.

use adesync_core::ids::{AccountId, RunId, TokenId};
use adesync_core::run::{Progress, RunStatus};
use adesync_core::sync::{Claim, SyncKind};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::Update;
use chrono::{DateTime, Duration, Utc};

use crate::attrs::{self, Item};
use crate::{Runs, StoreError};

/// Run item attribute names.
pub mod run_attr {
    pub const RUN_ID: &str = "run_id";
    pub const ACCOUNT_ID: &str = "account_id";
    pub const KIND: &str = "kind";
    pub const TRIGGER: &str = "trigger";
    pub const RECOVERY: &str = "recovery";
    pub const STATUS: &str = "status";
    pub const STARTED_AT: &str = "started_at";
    pub const LEASE_EXPIRES_AT: &str = "lease_expires_at";
    pub const FETCHED: &str = "fetched";
    pub const IMPORTED: &str = "imported";
    pub const EXPIRES_AT: &str = "expires_at";
    pub const EXPECTED_DEVICES: &str = "expected_devices";
    pub const FETCH_FINISHED_AT: &str = "fetch_finished_at";
    pub const FINISHED_AT: &str = "finished_at";
    pub const PAGES: &str = "pages";
    pub const BATCHES_IMPORTED: &str = "batches_imported";
    pub const ERROR: &str = "error";
    pub const WARNING: &str = "warning";
}
use run_attr as r;

/// How long run history is kept (DynamoDB TTL deletes older runs).
pub const RUN_HISTORY: Duration = Duration::days(90);

/// Sort key of a run item.
pub fn run_sk(run: &RunId) -> String {
    format!("run#{run}")
}

impl Runs {
    /// Records the start of a claimed run, with the devices the token
    /// listed then (`expected`: None for a token never synced, whose size is
    /// not known until Apple says). Idempotent: recording the same run twice
    /// keeps the first record.
    pub async fn record_run_started(
        &self,
        account: &AccountId,
        token: &TokenId,
        claim: &Claim,
        expected: Option<u64>,
    ) -> Result<(), StoreError> {
        let mut item: Item = [
            ("token_id", attrs::s(token.as_str())),
            ("sk", attrs::s(run_sk(&claim.run_id))),
            (r::RUN_ID, attrs::s(claim.run_id.as_str())),
            (r::ACCOUNT_ID, attrs::s(account.as_str())),
            (r::KIND, attrs::s(claim.kind.as_str())),
            (r::TRIGGER, attrs::s(claim.trigger.as_str())),
            (r::RECOVERY, attrs::bool(claim.recovery)),
            (r::STATUS, attrs::s(RunStatus::Running.as_str())),
            (r::STARTED_AT, attrs::millis(claim.started_at)),
            (r::LEASE_EXPIRES_AT, attrs::millis(claim.lease_expires_at)),
            (r::FETCHED, attrs::n(0)),
            (r::IMPORTED, attrs::n(0)),
            (
                r::EXPIRES_AT,
                attrs::ttl_seconds(claim.started_at + RUN_HISTORY),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        if let Some(expected) = expected {
            item.insert(r::EXPECTED_DEVICES.into(), attrs::n(expected));
        }
        let result = self
            .client
            .put_item()
            .table_name(&self.tables.runs)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(sk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(PutItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(StoreError::dynamo("PutItem(run)", e)),
        }
    }

    /// Marks a run that never got going as ended (`failed`, or
    /// `abandoned` by a claim that took its lapsed lease over), unless its
    /// record already says it is over. Returns whether it was marked.
    pub async fn record_run_ended(
        &self,
        token: &TokenId,
        run: &RunId,
        status: RunStatus,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let update = run_ended_update(&self.tables.runs, token, run, status, error, now)?;
        let result = self
            .client
            .update_item()
            .set_table_name(Some(update.table_name))
            .set_key(Some(update.key))
            .set_condition_expression(update.condition_expression)
            .update_expression(update.update_expression)
            .set_expression_attribute_names(update.expression_attribute_names)
            .set_expression_attribute_values(update.expression_attribute_values)
            .send()
            .await;
        crate::error::update_applied(result, "UpdateItem(run ended)")
    }
}

/// The update that ends a run's record with `status`, conditional on the
/// record existing and not being over yet (a transaction's item, or
/// [`Store::record_run_ended`]'s).
pub(crate) fn run_ended_update(
    table: &str,
    token: &TokenId,
    run: &RunId,
    status: RunStatus,
    error: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Update, StoreError> {
    let mut update = Update::builder()
        .table_name(table)
        .key("token_id", attrs::s(token.as_str()))
        .key("sk", attrs::s(run_sk(run)))
        .condition_expression("#status IN (:running, :importing)")
        .expression_attribute_names("#status", r::STATUS)
        .expression_attribute_values(":status", attrs::s(status.as_str()))
        .expression_attribute_values(":running", attrs::s(RunStatus::Running.as_str()))
        .expression_attribute_values(":importing", attrs::s(RunStatus::Importing.as_str()))
        .expression_attribute_values(":now", attrs::millis(now));
    update = match error {
        Some(error) => update
            .update_expression(format!(
                "SET #status = :status, {} = :now, #error = :error",
                r::FINISHED_AT
            ))
            .expression_attribute_names("#error", r::ERROR)
            .expression_attribute_values(":error", attrs::s(error)),
        None => {
            update.update_expression(format!("SET #status = :status, {} = :now", r::FINISHED_AT))
        }
    };
    update
        .build()
        .map_err(|e| StoreError::Malformed(e.to_string()))
}

/// A run as the status API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    pub run_id: RunId,
    pub kind: SyncKind,
    pub trigger: String,
    pub recovery: bool,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    /// Devices the token listed when the run started (None: never synced).
    pub expected: Option<u64>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub fetch_finished_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub pages: u64,
    pub fetched: u64,
    pub imported: u64,
    pub batches_imported: u64,
    pub error: Option<String>,
    pub warning: Option<String>,
}

impl RunRecord {
    /// Whether the run has ended one way or another.
    pub fn is_over(&self) -> bool {
        self.status.is_over()
    }

    /// What the record says about the run's progress.
    pub fn progress(&self) -> Progress {
        Progress {
            kind: self.kind,
            status: self.status,
            started_at: self.started_at,
            fetch_finished_at: self.fetch_finished_at,
            finished_at: self.finished_at,
            expected: self.expected,
            fetched: self.fetched,
            imported: self.imported,
        }
    }
}

fn run_from_item(item: &Item) -> Result<RunRecord, StoreError> {
    let text = |name: &str| attrs::get_s(item, name).map(str::to_owned);
    Ok(RunRecord {
        run_id: text(r::RUN_ID)
            .and_then(|r| RunId::parse(&r).ok())
            .ok_or_else(|| StoreError::Malformed("run without a run id".into()))?,
        kind: match attrs::get_s(item, r::KIND) {
            Some("full") => SyncKind::Full,
            _ => SyncKind::Delta,
        },
        trigger: text(r::TRIGGER).unwrap_or_default(),
        recovery: attrs::get_bool(item, r::RECOVERY),
        status: attrs::get_s(item, r::STATUS)
            .and_then(RunStatus::parse)
            .ok_or_else(|| StoreError::Malformed("run without a known status".into()))?,
        started_at: attrs::get_time(item, r::STARTED_AT)?.unwrap_or(DateTime::UNIX_EPOCH),
        expected: attrs::get_u64(item, r::EXPECTED_DEVICES)?,
        lease_expires_at: attrs::get_time(item, r::LEASE_EXPIRES_AT)?,
        fetch_finished_at: attrs::get_time(item, r::FETCH_FINISHED_AT)?,
        finished_at: attrs::get_time(item, r::FINISHED_AT)?,
        pages: attrs::get_u64(item, r::PAGES)?.unwrap_or(0),
        fetched: attrs::get_u64(item, r::FETCHED)?.unwrap_or(0),
        imported: attrs::get_u64(item, r::IMPORTED)?.unwrap_or(0),
        batches_imported: attrs::get_u64(item, r::BATCHES_IMPORTED)?.unwrap_or(0),
        error: text(r::ERROR),
        warning: text(r::WARNING),
    })
}

impl Runs {
    /// One run of a token.
    pub async fn get_run(
        &self,
        token: &TokenId,
        run: &RunId,
    ) -> Result<Option<RunRecord>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.tables.runs)
            .key("token_id", attrs::s(token.as_str()))
            .key("sk", attrs::s(run_sk(run)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem(run)", e))?;
        output.item().map(run_from_item).transpose()
    }

    /// The most recent runs of a token, newest first.
    pub async fn recent_runs(
        &self,
        token: &TokenId,
        limit: u32,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.tables.runs)
            .key_condition_expression("token_id = :token AND begins_with(sk, :prefix)")
            .expression_attribute_values(":token", attrs::s(token.as_str()))
            .expression_attribute_values(":prefix", attrs::s("run#"))
            .scan_index_forward(false)
            .limit(i32::try_from(limit).unwrap_or(100))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("Query(runs)", e))?;
        output.items().iter().map(run_from_item).collect()
    }

    /// Records how a run ended, with a warning worth showing, if any —
    /// unless its record already says it is over (it was recorded abandoned
    /// meanwhile). Returns whether it was recorded.
    pub async fn record_run_closed(
        &self,
        token: &TokenId,
        run: &RunId,
        status: RunStatus,
        error: Option<&str>,
        warning: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let finished = format!("{} = :now", r::FINISHED_AT);
        let warning_set = format!("{} = :warning", r::WARNING);
        let mut sets = vec!["#status = :status", finished.as_str()];
        let mut update = self
            .client
            .update_item()
            .table_name(&self.tables.runs)
            .key("token_id", attrs::s(token.as_str()))
            .key("sk", attrs::s(run_sk(run)))
            .condition_expression("#status IN (:running, :importing)")
            .expression_attribute_names("#status", r::STATUS)
            .expression_attribute_values(":status", attrs::s(status.as_str()))
            .expression_attribute_values(":running", attrs::s(RunStatus::Running.as_str()))
            .expression_attribute_values(":importing", attrs::s(RunStatus::Importing.as_str()))
            .expression_attribute_values(":now", attrs::millis(now));
        if let Some(error) = error {
            sets.push("#error = :error");
            update = update
                .expression_attribute_names("#error", r::ERROR)
                .expression_attribute_values(":error", attrs::s(error));
        }
        if let Some(warning) = warning {
            sets.push(warning_set.as_str());
            update = update.expression_attribute_values(":warning", attrs::s(warning));
        }
        crate::error::update_applied(
            update
                .update_expression(format!("SET {}", sets.join(", ")))
                .send()
                .await,
            "UpdateItem(run closed)",
        )
    }
}
