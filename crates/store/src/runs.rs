//! Run history: one item per sync run in the runs table.
//!
//! Progress counters (`fetched`, `imported`, batches) change only with
//! atomic `ADD` updates so concurrent importers never lose a count.

use adesync_core::ids::{AccountId, RunId, TokenId};
use adesync_core::sync::Claim;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use chrono::{DateTime, Duration, Utc};

use crate::attrs::{self, Item};
use crate::{Store, StoreError};

/// How long run history is kept (DynamoDB TTL deletes older runs).
pub const RUN_HISTORY: Duration = Duration::days(90);

/// Sort key of a run item.
pub fn run_sk(run: &RunId) -> String {
    format!("run#{run}")
}

impl Store {
    /// Records the start of a claimed run. Idempotent: recording the same
    /// run twice keeps the first record.
    pub async fn record_run_started(
        &self,
        account: &AccountId,
        token: &TokenId,
        claim: &Claim,
    ) -> Result<(), StoreError> {
        let item: Item = [
            ("token_id", attrs::s(token.as_str())),
            ("sk", attrs::s(run_sk(&claim.run_id))),
            ("run_id", attrs::s(claim.run_id.as_str())),
            ("account_id", attrs::s(account.as_str())),
            ("kind", attrs::s(claim.kind.as_str())),
            ("trigger", attrs::s(claim.trigger.as_str())),
            ("recovery", attrs::bool(claim.recovery)),
            ("status", attrs::s("running")),
            ("started_at", attrs::millis(claim.started_at)),
            ("lease_expires_at", attrs::millis(claim.lease_expires_at)),
            ("fetched", attrs::n(0)),
            ("imported", attrs::n(0)),
            (
                "expires_at",
                attrs::ttl_seconds(claim.started_at + RUN_HISTORY),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
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

    /// Marks a run as ended (`succeeded`, `failed`, `abandoned`).
    pub async fn record_run_ended(
        &self,
        token: &TokenId,
        run: &RunId,
        status: &str,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.tables.runs)
            .key("token_id", attrs::s(token.as_str()))
            .key("sk", attrs::s(run_sk(run)))
            .condition_expression("attribute_exists(sk)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", attrs::s(status))
            .expression_attribute_values(":now", attrs::millis(now));
        update = match error {
            Some(error) => update
                .update_expression("SET #status = :status, finished_at = :now, #error = :error")
                .expression_attribute_names("#error", "error")
                .expression_attribute_values(":error", attrs::s(error)),
            None => update.update_expression("SET #status = :status, finished_at = :now"),
        };
        update
            .send()
            .await
            .map_err(|e| StoreError::dynamo("UpdateItem(run ended)", e))?;
        Ok(())
    }
}
