//! A run's progress: the worker's walk through Apple's cursor and the
//! importer's batch markers.
//!
//! One walker per run: a worker step first takes the run's walker slot
//! ([`Store::claim_walker`], one conditional write that also reads the
//! token), so a second delivery of the same job finds the slot taken and
//! does nothing. The walker saves its position only after the devices of a
//! page were accepted by SQS, and only while it holds the slot and its run
//! holds the token's lease: a worker whose lease lapsed and was taken over,
//! or a duplicate, cannot move the cursor. The importer marks each batch it
//! applied in the same transaction that counts it, so a redelivered batch
//! is never counted twice; the markers of a full sync also name the
//! serials its snapshot contained, which is what the end-of-run sweep
//! compares with.
//!
//! Each of those durable steps — a page saved, a batch marked — renews the
//! run's lease to 15 minutes from then, in the same write: a run is
//! abandoned only when it makes no progress for 15 minutes
//! ([`adesync_core::sync::LEASE`]).

use std::collections::{HashMap, HashSet};

use adesync_core::cursor::{Phase, Position};
use adesync_core::ids::{AccountId, RunId, Serial, TokenId};
use adesync_core::run::RunStatus;
use adesync_core::sync::{self, SyncKind};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
    Update,
};
use backon::Retryable;
use chrono::{DateTime, Utc};

use crate::attrs::{self, Item};
use crate::claims::{attr, sync_state_from_item};
use crate::error::retry_policy;
use crate::runs::{RUN_HISTORY, run_sk};
use crate::transact::{Refusal, transact};
use crate::{Db, Runs, StoreError};

/// Token item attributes of the worker's position.
pub mod progress_attr {
    /// The walk of the run in progress (JSON of `adesync_core::cursor::Walk`).
    pub const WALK: &str = "walk";
    /// The run the walk belongs to.
    pub const WALK_RUN_ID: &str = "walk_run_id";
    /// Run-specific worker state (JSON), e.g. the snapshot's start time.
    pub const WALK_STATE: &str = "walk_state";
    /// Where the next run starts: Apple's cursor and the endpoint to send it to.
    pub const CURSOR: &str = "cursor";
    pub const CURSOR_PHASE: &str = "cursor_phase";
    pub const CURSOR_SAVED_AT: &str = "cursor_saved_at";
    /// The next device batch number of the run in progress.
    pub const BATCH_SEQ: &str = "batch_seq";
    /// The walker slot: which run, which step, which invocation (a random
    /// id) walks it, and until when that invocation may live (its deadline).
    pub const WALKER_RUN: &str = "walker_run";
    pub const WALKER_STEP: &str = "walker_step";
    pub const WALKER_ID: &str = "walker_id";
    pub const WALKER_UNTIL: &str = "walker_until";
}
use progress_attr as p;

/// A device batch the importer applied, to mark.
#[derive(Debug, Clone, Copy)]
pub struct BatchMark<'a> {
    pub account: &'a AccountId,
    pub token: &'a TokenId,
    pub run: &'a RunId,
    pub seq: u64,
    /// Records it carried (counted once on the run).
    pub imported: u64,
    /// How the batch's writes changed the token's listed devices (added
    /// once, with the marker, to the token's `device_count`).
    pub listed_delta: i64,
    /// The serials of a full snapshot's batch, which the run's close must
    /// not release.
    pub snapshot_serials: Option<&'a [Serial]>,
}

/// What marking a batch imported did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marked {
    /// Marked and counted now.
    First,
    /// Marked before: a redelivery, not counted again.
    Again,
    /// The token was deleted: nothing marked.
    TokenGone,
}

/// What the worker needs from the token item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerView {
    pub lease_run_id: Option<RunId>,
    pub lease_until: Option<DateTime<Utc>>,
    /// The stored position, for a run that starts now.
    pub position: Option<Position>,
    /// The walk saved by an earlier step of `walk_run_id`.
    pub walk: Option<(RunId, String, String)>,
    pub batch_seq: u64,
    pub device_count: u64,
    pub next_sync_is_full: bool,
}

impl WorkerView {
    /// Whether `run` holds the token at `now`.
    pub fn held_by(&self, run: &RunId, now: DateTime<Utc>) -> bool {
        self.lease_run_id.as_ref() == Some(run) && self.lease_until.is_some_and(|u| now < u)
    }

    /// The walk and worker state an earlier step of `run` saved.
    pub fn walk_of(&self, run: &RunId) -> Option<(&str, &str)> {
        match &self.walk {
            Some((walk_run, walk, state)) if walk_run == run => {
                Some((walk.as_str(), state.as_str()))
            }
            _ => None,
        }
    }
}

/// The walker slot a worker step asks for.
#[derive(Debug, Clone, Copy)]
pub struct WalkerSlot<'a> {
    pub run: &'a RunId,
    /// The job's step: 0, then each continuation's number.
    pub step: u32,
    /// This invocation's own id: what its saves are conditional on.
    pub walker: &'a str,
    /// The invocation's deadline: past it, it is dead (Lambda killed it)
    /// and a redelivery of the same step may take the slot over.
    pub until: DateTime<Utc>,
}

/// What asking for the walker slot found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Walker {
    /// The slot is this invocation's; the token as the worker needs it.
    Walking(WorkerView),
    /// The run does not hold the token (its lease lapsed or another run
    /// took over, or it ended).
    NotHeld,
    /// Another invocation walks a later step: this delivery is stale.
    Stale,
    /// Another invocation walks this step until `until` (its deadline): a
    /// duplicate delivery, or a redelivery that came back before the
    /// invocation it replaces could have died.
    Busy { until: DateTime<Utc> },
    /// No such token.
    TokenGone,
}

/// One page's worth of progress to save.
#[derive(Debug, Clone)]
pub struct Progress<'a> {
    pub run: &'a RunId,
    /// The walker slot's id of the saving invocation.
    pub walker: &'a str,
    pub kind: SyncKind,
    /// JSON of the walk, positioned at the next request.
    pub walk: &'a str,
    /// JSON of the worker's run state.
    pub walk_state: &'a str,
    /// The position the next run should start from.
    pub position: &'a Position,
    pub batch_seq: u64,
    pub fetched: u64,
    pub pages: u64,
    /// Set on the first step: until when the import may block large tokens.
    pub import_until: Option<DateTime<Utc>>,
    /// Set on the last step: the run's fetch is over.
    pub fetch_finished: bool,
    /// A page was handled (progress): the lease runs 15 minutes from now.
    /// False for a save that only changes how the next page is asked.
    pub renews_lease: bool,
}

/// The token item as the worker needs it.
fn worker_view_from_item(item: &Item) -> Result<WorkerView, StoreError> {
    let state = sync_state_from_item(item)?;
    let position = match (
        attrs::get_s(item, p::CURSOR),
        attrs::get_s(item, p::CURSOR_PHASE),
    ) {
        (Some(cursor), Some(phase)) => Some(Position {
            phase: if phase == "fetch" {
                Phase::Fetch
            } else {
                Phase::Sync
            },
            cursor: Some(cursor.to_owned()),
        }),
        _ => None,
    };
    let walk = match (
        attrs::get_s(item, p::WALK_RUN_ID),
        attrs::get_s(item, p::WALK),
        attrs::get_s(item, p::WALK_STATE),
    ) {
        (Some(run), Some(walk), Some(walk_state)) => RunId::parse(run)
            .ok()
            .map(|run| (run, walk.to_owned(), walk_state.to_owned())),
        _ => None,
    };
    Ok(WorkerView {
        lease_run_id: state.lease.as_ref().map(|l| l.run_id.clone()),
        lease_until: state.lease.as_ref().map(|l| l.expires_at),
        position,
        walk,
        batch_seq: attrs::get_u64(item, p::BATCH_SEQ)?.unwrap_or(0),
        device_count: state.device_count,
        next_sync_is_full: state.next_sync_is_full,
    })
}

fn phase_text(phase: Phase) -> &'static str {
    match phase {
        Phase::Fetch => "fetch",
        Phase::Sync => "sync",
    }
}

/// A batch marker's sort key.
fn batch_sk(run: &RunId, seq: u64) -> String {
    format!("batch#{run}#{seq:010}")
}

impl Runs {
    /// Takes the walker slot of `slot.run` for `slot.step`: granted while
    /// the run holds a live lease and no other invocation walks this step
    /// (or a later one) — unless that invocation's deadline passed, which
    /// means Lambda killed it and this is SQS's redelivery. The same walker
    /// may take it again: DynamoDB can apply a write and still answer with
    /// an error (a throttle, a lost connection), and the retry must not find
    /// its own claim in the way. One write that
    /// also reads the token (the answer is the item as it now is).
    pub async fn claim_walker(
        &self,
        account: &AccountId,
        token: &TokenId,
        slot: WalkerSlot<'_>,
        now: DateTime<Utc>,
    ) -> Result<Walker, StoreError> {
        let result = self
            .update_token(account, token)
            .condition_expression(format!(
                "{lease} = :run AND {until} > :now AND (attribute_not_exists({wrun}) OR {wrun} <> :run OR {wstep} < :step OR ({wstep} = :step AND ({wuntil} <= :now OR {wid} = :walker)))",
                lease = attr::LEASE_RUN_ID,
                until = attr::LEASE_UNTIL,
                wrun = p::WALKER_RUN,
                wstep = p::WALKER_STEP,
                wuntil = p::WALKER_UNTIL,
                wid = p::WALKER_ID,
            ))
            .update_expression(format!(
                "SET {} = :run, {} = :step, {} = :walker, {} = :walker_until",
                p::WALKER_RUN,
                p::WALKER_STEP,
                p::WALKER_ID,
                p::WALKER_UNTIL
            ))
            .expression_attribute_values(":run", attrs::s(slot.run.as_str()))
            .expression_attribute_values(":step", attrs::n(slot.step))
            .expression_attribute_values(":walker", attrs::s(slot.walker))
            .expression_attribute_values(":walker_until", attrs::millis(slot.until))
            .expression_attribute_values(":now", attrs::millis(now))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => Ok(Walker::Walking(worker_view_from_item(
                &output.attributes.unwrap_or_default(),
            )?)),
            Err(error) => match error.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    let Some(item) = failed.item().filter(|i| !i.is_empty()) else {
                        return Ok(Walker::TokenGone);
                    };
                    let view = worker_view_from_item(item)?;
                    if !view.held_by(slot.run, now) {
                        return Ok(Walker::NotHeld);
                    }
                    let step = attrs::get_u64(item, p::WALKER_STEP)?.unwrap_or(0);
                    Ok(if step > u64::from(slot.step) {
                        Walker::Stale
                    } else {
                        Walker::Busy {
                            until: attrs::get_time(item, p::WALKER_UNTIL)?.unwrap_or(now),
                        }
                    })
                }
                _ => Err(StoreError::dynamo("UpdateItem(claim walker)", error)),
            },
        }
    }

    /// Gives up the walker slot of a step that failed, so its job's
    /// redelivery may walk at once rather than after the failed
    /// invocation's deadline. Conditional on the slot still being `walker`'s.
    pub async fn release_walker(
        &self,
        account: &AccountId,
        token: &TokenId,
        walker: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let result = self
            .update_token(account, token)
            .condition_expression(format!("{} = :walker", p::WALKER_ID))
            .update_expression(format!("SET {} = :now", p::WALKER_UNTIL))
            .expression_attribute_values(":walker", attrs::s(walker))
            .expression_attribute_values(":now", attrs::millis(now))
            .send()
            .await;
        crate::error::update_applied(result, "UpdateItem(release walker)")
    }

    /// Renews `run`'s lease to 15 minutes from `now`, if the run still holds
    /// a live one (a part of its close: progress too). Returns whether it did.
    pub async fn renew_lease(
        &self,
        account: &AccountId,
        token: &TokenId,
        run: &RunId,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let result = self
            .update_token(account, token)
            .condition_expression(format!(
                "{} = :run AND {} > :now",
                attr::LEASE_RUN_ID,
                attr::LEASE_UNTIL
            ))
            .update_expression(format!("SET {} = :renewed", attr::LEASE_UNTIL))
            .expression_attribute_values(":run", attrs::s(run.as_str()))
            .expression_attribute_values(":now", attrs::millis(now))
            .expression_attribute_values(":renewed", attrs::millis(sync::renewed_lease(now)))
            .send()
            .await;
        crate::error::update_applied(result, "UpdateItem(renew lease)")
    }

    /// Saves a page's progress: the walk and position on the token (only
    /// while `progress.run` holds the lease) and the counters on the run,
    /// in one transaction. Returns false when the run lost the token.
    pub async fn save_progress(
        &self,
        account: &AccountId,
        token: &TokenId,
        progress: &Progress<'_>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut sets = vec![
            format!("{} = :walk", p::WALK),
            format!("{} = :run", p::WALK_RUN_ID),
            format!("{} = :walk_state", p::WALK_STATE),
            format!("{} = :phase", p::CURSOR_PHASE),
            format!("{} = :now", p::CURSOR_SAVED_AT),
            format!("{} = :seq", p::BATCH_SEQ),
        ];
        let mut values: HashMap<String, AttributeValue> = HashMap::from([
            (":walk".into(), attrs::s(progress.walk)),
            (":walk_state".into(), attrs::s(progress.walk_state)),
            (":run".into(), attrs::s(progress.run.as_str())),
            (
                ":phase".into(),
                attrs::s(phase_text(progress.position.phase)),
            ),
            (":now".into(), attrs::millis(now)),
            (":seq".into(), attrs::n(progress.batch_seq)),
        ]);
        let mut removes = Vec::new();
        match &progress.position.cursor {
            // CURSOR is a DynamoDB reserved word: named through #cursor.
            Some(cursor) => {
                sets.push("#cursor = :cursor".to_owned());
                values.insert(":cursor".into(), attrs::s(cursor.as_str()));
            }
            None => removes.push("#cursor"),
        }
        if let Some(until) = progress.import_until {
            sets.push(format!("{} = :import_until", attr::IMPORT_UNTIL));
            values.insert(":import_until".into(), attrs::millis(until));
        }
        if progress.renews_lease {
            sets.push(format!("{} = :renewed", attr::LEASE_UNTIL));
            values.insert(":renewed".into(), attrs::millis(sync::renewed_lease(now)));
        }
        values.insert(":walker".into(), attrs::s(progress.walker));
        let mut expression = format!("SET {}", sets.join(", "));
        if !removes.is_empty() {
            expression.push_str(&format!(" REMOVE {}", removes.join(", ")));
        }
        let token_update = Update::builder()
            .table_name(&self.tables.tokens)
            .key("account_id", attrs::s(account.as_str()))
            .key("token_id", attrs::s(token.as_str()))
            .condition_expression(format!(
                "{} = :run AND {} > :now AND {} = :walker",
                attr::LEASE_RUN_ID,
                attr::LEASE_UNTIL,
                p::WALKER_ID
            ))
            .update_expression(expression)
            .expression_attribute_names("#cursor", p::CURSOR)
            .set_expression_attribute_values(Some(values))
            .build()
            .map_err(|e| StoreError::Malformed(e.to_string()))?;

        let mut run_sets = vec![
            "#status = :status".to_owned(),
            "#kind = :kind".to_owned(),
            "updated_at = :now".to_owned(),
        ];
        if progress.fetch_finished {
            run_sets.push("fetch_finished_at = :now".into());
        }
        let run_update = Update::builder()
            .table_name(&self.tables.runs)
            .key("token_id", attrs::s(token.as_str()))
            .key("sk", attrs::s(run_sk(progress.run)))
            .update_expression(format!(
                "SET {} ADD fetched :fetched, #pages :pages",
                run_sets.join(", ")
            ))
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#kind", "kind")
            .expression_attribute_names("#pages", "pages")
            .expression_attribute_values(
                ":status",
                attrs::s(if progress.fetch_finished {
                    RunStatus::Importing.as_str()
                } else {
                    RunStatus::Running.as_str()
                }),
            )
            .expression_attribute_values(":kind", attrs::s(progress.kind.as_str()))
            .expression_attribute_values(":now", attrs::millis(now))
            .expression_attribute_values(":fetched", attrs::n(progress.fetched))
            .expression_attribute_values(":pages", attrs::n(progress.pages))
            .build()
            .map_err(|e| StoreError::Malformed(e.to_string()))?;

        let items = vec![
            TransactWriteItem::builder().update(token_update).build(),
            TransactWriteItem::builder().update(run_update).build(),
        ];
        self.transact_conditionally("TransactWriteItems(save progress)", items)
            .await
            .map(|outcome| outcome.is_none())
    }

    /// Marks batch `seq` of `run` as imported and counts its records, once,
    /// in one transaction that also moves the token: its `device_count` by
    /// the batch's `listed_delta`, and — the batch is progress — its lease
    /// to 15 minutes from `now` while `run` holds a live one. A run that no
    /// longer holds its lease still gets its batch counted (a second
    /// transaction, only then), without renewing anything. The token must
    /// exist: the importer learns of a token deleted under it without
    /// another round trip.
    pub async fn mark_batch_imported(
        &self,
        batch: BatchMark<'_>,
        now: DateTime<Utc>,
    ) -> Result<Marked, StoreError> {
        let BatchMark {
            account,
            token,
            run,
            seq,
            imported,
            listed_delta,
            snapshot_serials,
        } = batch;
        let mut marker: Item = HashMap::from([
            ("token_id".to_owned(), attrs::s(token.as_str())),
            ("sk".to_owned(), attrs::s(batch_sk(run, seq))),
            ("imported".to_owned(), attrs::n(imported)),
            ("at".to_owned(), attrs::millis(now)),
            (
                "expires_at".to_owned(),
                attrs::ttl_seconds(now + RUN_HISTORY),
            ),
        ]);
        if let Some(serials) = snapshot_serials.filter(|s| !s.is_empty()) {
            // One string keeps the marker small: ~13 bytes per serial.
            let joined = serials
                .iter()
                .map(Serial::as_str)
                .collect::<Vec<_>>()
                .join(" ");
            marker.insert("serials".into(), attrs::s(joined));
        }
        let put = Put::builder()
            .table_name(&self.tables.runs)
            .set_item(Some(marker))
            .condition_expression("attribute_not_exists(sk)")
            .build()
            .map_err(|e| StoreError::Malformed(e.to_string()))?;
        let count = Update::builder()
            .table_name(&self.tables.runs)
            .key("token_id", attrs::s(token.as_str()))
            .key("sk", attrs::s(run_sk(run)))
            .update_expression("ADD imported :n, batches_imported :one SET updated_at = :now")
            .expression_attribute_values(":n", attrs::n(imported))
            .expression_attribute_values(":one", attrs::n(1))
            .expression_attribute_values(":now", attrs::millis(now))
            .build()
            .map_err(|e| StoreError::Malformed(e.to_string()))?;
        let marking = |token_item: TransactWriteItem| {
            vec![
                token_item,
                TransactWriteItem::builder().put(put.clone()).build(),
                TransactWriteItem::builder().update(count.clone()).build(),
            ]
        };
        let renewing = Update::builder()
            .table_name(&self.tables.tokens)
            .key("account_id", attrs::s(account.as_str()))
            .key("token_id", attrs::s(token.as_str()))
            .condition_expression(format!(
                "{} = :run AND {} > :now",
                attr::LEASE_RUN_ID,
                attr::LEASE_UNTIL
            ))
            .update_expression(format!(
                "SET {} = :renewed ADD {} :delta",
                attr::LEASE_UNTIL,
                attr::DEVICE_COUNT
            ))
            .expression_attribute_values(":run", attrs::s(run.as_str()))
            .expression_attribute_values(":now", attrs::millis(now))
            .expression_attribute_values(":renewed", attrs::millis(sync::renewed_lease(now)))
            .expression_attribute_values(":delta", attrs::n(listed_delta))
            .build()
            .map_err(|e| StoreError::Malformed(e.to_string()))?;
        let first = self
            .transact_conditionally(
                "TransactWriteItems(mark batch)",
                marking(TransactWriteItem::builder().update(renewing).build()),
            )
            .await?;
        let outcome = match first {
            // The run no longer holds a live lease (or the token is gone):
            // count the batch without renewing anything.
            Some(0) => {
                let counting = Update::builder()
                    .table_name(&self.tables.tokens)
                    .key("account_id", attrs::s(account.as_str()))
                    .key("token_id", attrs::s(token.as_str()))
                    .condition_expression("attribute_exists(token_id)")
                    .update_expression(format!("ADD {} :delta", attr::DEVICE_COUNT))
                    .expression_attribute_values(":delta", attrs::n(listed_delta))
                    .build()
                    .map_err(|e| StoreError::Malformed(e.to_string()))?;
                self.transact_conditionally(
                    "TransactWriteItems(mark batch of a run without its lease)",
                    marking(TransactWriteItem::builder().update(counting).build()),
                )
                .await?
            }
            other => other,
        };
        Ok(match outcome {
            None => Marked::First,
            Some(0) => Marked::TokenGone,
            Some(_) => Marked::Again,
        })
    }

    /// Whether a batch numbered `seq` or higher of `run` is already marked
    /// (this one redelivered, or a later one applied first).
    pub async fn batch_marked_after(
        &self,
        token: &TokenId,
        run: &RunId,
        seq: u64,
    ) -> Result<bool, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.tables.runs)
            .key_condition_expression("token_id = :token AND sk BETWEEN :first AND :last")
            .expression_attribute_values(":token", attrs::s(token.as_str()))
            .expression_attribute_values(":first", attrs::s(batch_sk(run, seq)))
            .expression_attribute_values(":last", attrs::s(format!("batch#{run}#~")))
            .projection_expression("sk")
            .limit(1)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("Query(later batch markers)", e))?;
        Ok(output.count() > 0)
    }

    /// How many batches of `run` are marked imported.
    pub async fn count_batch_markers(
        &self,
        token: &TokenId,
        run: &RunId,
    ) -> Result<u64, StoreError> {
        let mut count = 0;
        self.each_batch_marker(token, run, "sk", |_| count += 1)
            .await?;
        Ok(count)
    }

    /// The serials `run`'s snapshot batches contained that sort after
    /// `after` and up to `through`: what one part of the end-of-run sweep
    /// must not release. The markers hold every serial of the snapshot,
    /// but only this part's range is kept in memory.
    pub async fn snapshot_serials_between(
        &self,
        token: &TokenId,
        run: &RunId,
        after: Option<&Serial>,
        through: &Serial,
    ) -> Result<HashSet<Serial>, StoreError> {
        let mut serials = HashSet::new();
        let in_range = |s: &&str| after.is_none_or(|a| *s > a.as_str()) && *s <= through.as_str();
        self.each_batch_marker(token, run, "serials", |item| {
            if let Some(joined) = attrs::get_s(item, "serials") {
                serials.extend(
                    joined
                        .split(' ')
                        .filter(in_range)
                        .filter_map(|s| Serial::parse(s).ok()),
                );
            }
        })
        .await?;
        Ok(serials)
    }

    /// Calls `each` with every batch marker of `run` (its `projection`).
    async fn each_batch_marker(
        &self,
        token: &TokenId,
        run: &RunId,
        projection: &str,
        each: impl FnMut(&Item),
    ) -> Result<(), StoreError> {
        let prefix = format!("batch#{run}#");
        self.each_run_item(
            token,
            &prefix,
            Some(projection),
            "Query(batch markers)",
            each,
        )
        .await
    }

    /// Sets the token's device count (after a recount at the end of a run).
    pub async fn set_device_count(
        &self,
        account: &AccountId,
        token: &TokenId,
        count: u64,
    ) -> Result<(), StoreError> {
        let result = self
            .update_token(account, token)
            .condition_expression("attribute_exists(token_id)")
            .update_expression(format!("SET {} = :count", attr::DEVICE_COUNT))
            .expression_attribute_values(":count", attrs::n(count))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(StoreError::dynamo("UpdateItem(device count)", e)),
        }
    }

    /// Adds `delta` to the token's device count (an administrator's delete).
    /// Run ends recount exactly; between them this keeps the count from
    /// going stale, erring on the high side if it fails.
    pub async fn add_device_count(
        &self,
        account: &AccountId,
        token: &TokenId,
        delta: i64,
    ) -> Result<(), StoreError> {
        let result = self
            .update_token(account, token)
            .condition_expression("attribute_exists(token_id)")
            .update_expression(format!("ADD {} :delta", attr::DEVICE_COUNT))
            .expression_attribute_values(":delta", attrs::n(delta))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(StoreError::dynamo("UpdateItem(add device count)", e)),
        }
    }
}

impl Db {
    /// Runs a transaction whose conditions may legitimately fail. Returns
    /// `Some(index)` of the first item whose condition failed, `None` on
    /// success; transient failures (conflicts, throttling) are retried.
    pub(crate) async fn transact_conditionally(
        &self,
        operation: &'static str,
        items: Vec<TransactWriteItem>,
    ) -> Result<Option<usize>, StoreError> {
        let attempt = || async {
            match transact(&self.client, operation, items.clone()).await {
                Ok(()) => Ok(None),
                Err(Refusal::Conditions(reasons)) => Ok(reasons.first_failed()),
                Err(Refusal::Store(error)) => Err(error),
            }
        };
        attempt
            .retry(retry_policy())
            .when(StoreError::is_transient)
            .await
    }

    /// Calls `each` with every item of the token in the runs table whose sort
    /// key starts with `prefix` (read consistently, page by page).
    pub(crate) async fn each_run_item(
        &self,
        token: &TokenId,
        prefix: &str,
        projection: Option<&str>,
        operation: &'static str,
        mut each: impl FnMut(&Item),
    ) -> Result<(), StoreError> {
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.tables.runs)
                .key_condition_expression("token_id = :token AND begins_with(sk, :prefix)")
                .expression_attribute_values(":token", attrs::s(token.as_str()))
                .expression_attribute_values(":prefix", attrs::s(prefix))
                .set_projection_expression(projection.map(str::to_owned))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| StoreError::dynamo(operation, e))?;
            output.items().iter().for_each(&mut each);
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(()),
            }
        }
    }
}
