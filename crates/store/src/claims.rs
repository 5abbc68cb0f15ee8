//! Starting and finishing sync runs on the token item.
//!
//! A claim is ONE conditional `UpdateItem`: its condition asserts every
//! precondition the pure rule ([`adesync_core::sync::claim`]) relied on —
//! cooldown of the requested kind, no live lease, the large-token import
//! rule — and its update records the lease and the new timestamps. Two
//! callers can therefore never both win, whatever the number of Lambda
//! instances. When the condition fails, DynamoDB returns the item as it
//! was (`ReturnValuesOnConditionCheckFailure = ALL_OLD`); the pure rule run
//! on that item names the rule that refused and when to retry, or — when
//! the state changed under us in a way that still allows a claim (e.g. the
//! next sync must be a full recovery) — the claim is retried once more with
//! conditions matching what was read.

use std::collections::HashMap;

use adesync_core::fanout::ScanPosition;
use adesync_core::ids::{AccountId, RunId, TokenId};
use adesync_core::run::{ABANDONED_ERROR, RunStatus};
use adesync_core::scope::Scope;
use adesync_core::sync::{
    self, Claim, ImportInProgress, LARGE_TOKEN_DEVICES, Lease, MANUAL_COOLDOWN, Refusal, SyncKind,
    SyncRequest, SyncState, Trigger,
};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use chrono::{DateTime, Utc};

use crate::attrs::{self, Item};
use crate::{Claims, StoreError};

/// Token item attribute names of the sync state.
pub mod attr {
    pub const LEASE_RUN_ID: &str = "lease_run_id";
    pub const LEASE_UNTIL: &str = "lease_until";
    pub const LEASE_KIND: &str = "lease_kind";
    pub const LEASE_TRIGGER: &str = "lease_trigger";
    pub const LEASE_STARTED_AT: &str = "lease_started_at";
    pub const LAST_MANUAL_AT: &str = "last_manual_at";
    pub const LAST_FULL_AT: &str = "last_full_at";
    pub const LAST_DELTA_AT: &str = "last_delta_at";
    pub const NEXT_SYNC_FULL: &str = "next_sync_full";
    pub const IMPORT_RUN_ID: &str = "import_run_id";
    pub const IMPORT_UNTIL: &str = "import_until";
    pub const DEVICE_COUNT: &str = "device_count";
    pub const LAST_OUTCOME: &str = "last_outcome";
    pub const LAST_ERROR: &str = "last_error";
    pub const LAST_FINISHED_AT: &str = "last_finished_at";
}

/// What a run holds on the token while it goes: released together.
const LEASE_ATTRIBUTES: [&str; 7] = [
    attr::LEASE_RUN_ID,
    attr::LEASE_UNTIL,
    attr::LEASE_KIND,
    attr::LEASE_TRIGGER,
    attr::LEASE_STARTED_AT,
    attr::IMPORT_RUN_ID,
    attr::IMPORT_UNTIL,
];

/// Why a claim did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// A rule refused it; the refusal says which and when to retry.
    #[error(transparent)]
    Refused(Refusal),
    /// No such token in this account.
    #[error("no such token")]
    TokenNotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a run ended, as recorded on the token when its lease is released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    Succeeded,
    /// The run never started (its job could not be queued): the lease is
    /// released and nothing else is recorded.
    NotStarted,
    /// The run failed; the next sync of the token will be a full one.
    Failed {
        error: String,
    },
}

/// A granted claim and the token's sync state just before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub claim: Claim,
    /// The state the claim replaced (device count, the lapsed lease, …).
    pub previous: SyncState,
}

impl Claimed {
    /// The run whose lease had lapsed and was taken over by this claim.
    pub fn abandoned_run(&self) -> Option<&RunId> {
        self.previous.lease.as_ref().map(|lease| &lease.run_id)
    }
}

/// Attempts per claim: the first with no assumptions, at most two more
/// after re-reading a state that changed between attempts.
const CLAIM_ATTEMPTS: usize = 3;

impl Claims {
    /// Claims a sync run of `token` for `request` at `now`.
    ///
    /// On success the token holds a lease for `run_id` until
    /// `now + 15 minutes` and the cooldown timestamps of the request's kind
    /// are set to `now`.
    pub async fn claim_sync(
        &self,
        account: &AccountId,
        token: &TokenId,
        request: SyncRequest,
        now: DateTime<Utc>,
        run_id: RunId,
    ) -> Result<Claimed, ClaimError> {
        self.claim_sync_in_scope(account, token, &Scope::All, request, now, run_id)
            .await
    }

    /// [`Store::claim_sync`] for a caller with `scope`: a token it does not
    /// see is [`ClaimError::TokenNotFound`], decided in the claim's own
    /// condition (the caller's role may not read the token first).
    pub async fn claim_sync_in_scope(
        &self,
        account: &AccountId,
        token: &TokenId,
        scope: &Scope,
        request: SyncRequest,
        now: DateTime<Utc>,
        run_id: RunId,
    ) -> Result<Claimed, ClaimError> {
        // Optimistic: assume nothing blocks. A failed condition tells us
        // the real state, which the pure rule then judges.
        let mut assumed = SyncState::default();
        for _ in 0..CLAIM_ATTEMPTS {
            let claim =
                sync::claim(&assumed, request, now, run_id.clone()).map_err(ClaimError::Refused)?;
            match self.write_claim(account, token, scope, &claim, now).await {
                Ok(previous) => {
                    let previous = sync_state_from_item(&previous)?;
                    // The condition held, so the claim stands; the item as it
                    // was also says whether the token is large.
                    let claim = Claim {
                        large_token: previous.device_count > LARGE_TOKEN_DEVICES,
                        ..claim
                    };
                    let claimed = Claimed { claim, previous };
                    if let Some(abandoned) = claimed.abandoned_run() {
                        tracing::info!(token = %token, abandoned_run = %abandoned, run = %claimed.claim.run_id,
                            "an abandoned run's lease had lapsed; the new run takes over");
                    }
                    return Ok(claimed);
                }
                Err(WriteClaimError::ConditionFailed(None)) => {
                    return Err(ClaimError::TokenNotFound);
                }
                Err(WriteClaimError::ConditionFailed(Some(item))) => {
                    let tags = attrs::get_string_set(&item, crate::tokens::attr::SCOPE_TAGS)?;
                    if !adesync_core::scope::visible(&tags, scope) {
                        return Err(ClaimError::TokenNotFound);
                    }
                    assumed = sync_state_from_item(&item)?;
                }
                Err(WriteClaimError::Store(error)) => return Err(error.into()),
            }
        }
        Err(StoreError::Malformed(format!(
            "token {token} kept changing during {CLAIM_ATTEMPTS} claim attempts"
        ))
        .into())
    }

    /// Writes `claim` with the conditions that make it valid. Returns the
    /// token item as it was before.
    async fn write_claim(
        &self,
        account: &AccountId,
        token: &TokenId,
        scope: &Scope,
        claim: &Claim,
        now: DateTime<Utc>,
    ) -> Result<Item, WriteClaimError> {
        let mut values: HashMap<String, AttributeValue> = HashMap::from([
            (":now".into(), attrs::millis(now)),
            (":run".into(), attrs::s(claim.run_id.as_str())),
            (":until".into(), attrs::millis(claim.lease_expires_at)),
            (":kind".into(), attrs::s(claim.kind.as_str())),
            (":trigger".into(), attrs::s(claim.trigger.as_str())),
        ]);
        let mut conditions = vec![
            "attribute_exists(token_id)".to_owned(),
            format!(
                "(attribute_not_exists({until}) OR {until} <= :now)",
                until = attr::LEASE_UNTIL
            ),
        ];
        let mut sets = vec![
            format!("{} = :run", attr::LEASE_RUN_ID),
            format!("{} = :until", attr::LEASE_UNTIL),
            format!("{} = :kind", attr::LEASE_KIND),
            format!("{} = :trigger", attr::LEASE_TRIGGER),
            format!("{} = :now", attr::LEASE_STARTED_AT),
            format!("{} = :run", attr::IMPORT_RUN_ID),
        ];

        if claim.trigger == Trigger::Manual {
            values.insert(":manual_open".into(), attrs::millis(now - MANUAL_COOLDOWN));
            values.insert(":large".into(), attrs::n(LARGE_TOKEN_DEVICES));
            conditions.push(format!(
                "(attribute_not_exists({last}) OR {last} <= :manual_open)",
                last = attr::LAST_MANUAL_AT
            ));
            conditions.push(format!(
                "(attribute_not_exists({until}) OR {until} <= :now OR attribute_not_exists({count}) OR {count} <= :large)",
                until = attr::IMPORT_UNTIL,
                count = attr::DEVICE_COUNT
            ));
            sets.push(format!("{} = :now", attr::LAST_MANUAL_AT));
        }

        values.insert(":yes".into(), attrs::bool(true));
        match (claim.kind, claim.recovery) {
            (SyncKind::Full, true) => {
                conditions.push(format!("{} = :yes", attr::NEXT_SYNC_FULL));
            }
            (SyncKind::Full, false) => {
                values.insert(
                    ":full_open".into(),
                    attrs::millis(now - sync::FULL_COOLDOWN),
                );
                conditions.push(format!(
                    "(attribute_not_exists({last}) OR {last} <= :full_open)",
                    last = attr::LAST_FULL_AT
                ));
                conditions.push(format!(
                    "(attribute_not_exists({next}) OR {next} <> :yes)",
                    next = attr::NEXT_SYNC_FULL
                ));
            }
            (SyncKind::Delta, _) => {
                conditions.push(format!(
                    "(attribute_not_exists({next}) OR {next} <> :yes)",
                    next = attr::NEXT_SYNC_FULL
                ));
            }
        }
        sets.push(match claim.kind {
            // A full sync is owed until one completes (`finish_run` clears
            // it and records `last_full_at`): a full run that fails or is
            // abandoned is followed by a full one.
            SyncKind::Full => format!("{} = :yes", attr::NEXT_SYNC_FULL),
            SyncKind::Delta => format!("{} = :now", attr::LAST_DELTA_AT),
        });

        let mut update = self.update_token(account, token);
        if let Some((visible, scope_values)) = crate::tokens::scope_condition(scope) {
            conditions.push(visible);
            values.extend(scope_values);
            if scope.limited_to().is_some_and(|mine| !mine.is_empty()) {
                update = update
                    .expression_attribute_names("#scope_tags", crate::tokens::attr::SCOPE_TAGS);
            }
        }
        let result = update
            .condition_expression(conditions.join(" AND "))
            .update_expression(format!("SET {}", sets.join(", ")))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => Ok(output.attributes.unwrap_or_default()),
            Err(error) => match error.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    Err(WriteClaimError::ConditionFailed(
                        failed.item().cloned().filter(|i| !i.is_empty()),
                    ))
                }
                _ => Err(WriteClaimError::Store(StoreError::dynamo(
                    "UpdateItem(claim sync)",
                    error,
                ))),
            },
        }
    }

    /// Undoes a claim whose run never started (its job or record could not
    /// be written): releases the lease and puts the cooldown timestamps back
    /// as they were, so a failure of ours costs the administrator no
    /// cooldown. Conditional on the lease still being the claim's.
    pub async fn abandon_claim(
        &self,
        account: &AccountId,
        token: &TokenId,
        claimed: &Claimed,
    ) -> Result<bool, StoreError> {
        let claim = &claimed.claim;
        let mut sets = Vec::new();
        let mut removes = LEASE_ATTRIBUTES.to_vec();
        let mut values = HashMap::from([(":run".to_owned(), attrs::s(claim.run_id.as_str()))]);
        let mut restore = |name: &'static str, previous: Option<DateTime<Utc>>| match previous {
            Some(at) => {
                sets.push(format!("{name} = :{name}"));
                values.insert(format!(":{name}"), attrs::millis(at));
            }
            None => removes.push(name),
        };
        if claim.trigger == Trigger::Manual {
            restore(attr::LAST_MANUAL_AT, claimed.previous.last_manual_at);
        }
        if claim.kind == SyncKind::Full && !claimed.previous.next_sync_is_full {
            removes.push(attr::NEXT_SYNC_FULL);
        }
        let mut expression = String::new();
        if !sets.is_empty() {
            expression.push_str(&format!("SET {} ", sets.join(", ")));
        }
        expression.push_str(&format!("REMOVE {}", removes.join(", ")));
        let result = self
            .update_token(account, token)
            .condition_expression(format!("{} = :run", attr::LEASE_RUN_ID))
            .update_expression(expression)
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        crate::error::update_applied(result, "UpdateItem(abandon claim)")
    }

    /// Releases `run_id`'s lease on `token` and records how the run ended;
    /// a full run that succeeded (it `started_at`) becomes the last full
    /// sync, which the 7-day cooldown counts from.
    ///
    /// Conditional on the lease still being held by `run_id`: a run whose
    /// lease lapsed and was taken over must not release its successor.
    /// Returns false when the lease was no longer this run's.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_run(
        &self,
        account: &AccountId,
        token: &TokenId,
        run_id: &RunId,
        kind: SyncKind,
        started_at: DateTime<Utc>,
        end: &RunEnd,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut values = HashMap::from([
            (":run".to_owned(), attrs::s(run_id.as_str())),
            (":now".to_owned(), attrs::millis(now)),
        ]);
        let mut sets = vec![format!("{} = :now", attr::LAST_FINISHED_AT)];
        let mut removes = LEASE_ATTRIBUTES.to_vec();
        match end {
            RunEnd::Succeeded => {
                values.insert(":outcome".into(), attrs::s(RunStatus::Succeeded.as_str()));
                sets.push(format!("{} = :outcome", attr::LAST_OUTCOME));
                removes.push(attr::LAST_ERROR);
                if kind == SyncKind::Full {
                    // A completed full sync re-established the cursor and
                    // pays what was owed.
                    removes.push(attr::NEXT_SYNC_FULL);
                    values.insert(":started".into(), attrs::millis(started_at));
                    sets.push(format!("{} = :started", attr::LAST_FULL_AT));
                }
            }
            RunEnd::NotStarted => {}
            RunEnd::Failed { error } => {
                values.insert(":outcome".into(), attrs::s(RunStatus::Failed.as_str()));
                values.insert(":error".into(), attrs::s(error.as_str()));
                values.insert(":yes".into(), attrs::bool(true));
                sets.push(format!("{} = :outcome", attr::LAST_OUTCOME));
                sets.push(format!("{} = :error", attr::LAST_ERROR));
                sets.push(format!("{} = :yes", attr::NEXT_SYNC_FULL));
            }
        }
        let result = self
            .update_token(account, token)
            .condition_expression(format!("{} = :run", attr::LEASE_RUN_ID))
            .update_expression(format!(
                "SET {} REMOVE {}",
                sets.join(", "),
                removes.join(", ")
            ))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        crate::error::update_applied(result, "UpdateItem(finish run)")
    }

    /// Records that `run` made no progress for 15 minutes: its lease is
    /// released (only if it is still `run`'s and has lapsed at `now`) and its
    /// record says `abandoned`, in one transaction, so whoever notices first
    /// (the status read, the scheduler, the next claim) records it once. A
    /// full sync stays owed (`next_sync_full` was set when it was claimed).
    /// Returns false when there was nothing to settle.
    pub async fn settle_lapsed_run(
        &self,
        account: &AccountId,
        token: &TokenId,
        run: &RunId,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let release = Update::builder()
            .table_name(&self.tables.tokens)
            .key("account_id", attrs::s(account.as_str()))
            .key("token_id", attrs::s(token.as_str()))
            .condition_expression(format!(
                "{} = :run AND {} <= :now",
                attr::LEASE_RUN_ID,
                attr::LEASE_UNTIL
            ))
            .update_expression(format!(
                "SET {} = :outcome, {} = :error, {} = :now REMOVE {}",
                attr::LAST_OUTCOME,
                attr::LAST_ERROR,
                attr::LAST_FINISHED_AT,
                LEASE_ATTRIBUTES.join(", ")
            ))
            .expression_attribute_values(":run", attrs::s(run.as_str()))
            .expression_attribute_values(":now", attrs::millis(now))
            .expression_attribute_values(":outcome", attrs::s(RunStatus::Abandoned.as_str()))
            .expression_attribute_values(":error", attrs::s(ABANDONED_ERROR))
            .build()
            .map_err(|e| StoreError::Malformed(e.to_string()))?;
        let record = crate::runs::run_ended_update(
            &self.tables.runs,
            token,
            run,
            RunStatus::Abandoned,
            Some(ABANDONED_ERROR),
            now,
        )?;
        let settled = self
            .transact_conditionally(
                "TransactWriteItems(settle lapsed run)",
                vec![
                    TransactWriteItem::builder().update(release).build(),
                    TransactWriteItem::builder().update(record).build(),
                ],
            )
            .await?;
        match settled {
            None => {
                tracing::info!(token = %token, run = %run, "the run made no progress for 15 minutes: recorded abandoned");
                Ok(true)
            }
            // The lease moved on (renewed, released or taken over): nothing to do.
            Some(0) => Ok(false),
            // The record was already over: release the lease all the same.
            Some(_) => self.release_lapsed_lease(account, token, run, now).await,
        }
    }

    /// Releases a lapsed lease whose run's record is already over.
    async fn release_lapsed_lease(
        &self,
        account: &AccountId,
        token: &TokenId,
        run: &RunId,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let result = self
            .update_token(account, token)
            .condition_expression(format!(
                "{} = :run AND {} <= :now",
                attr::LEASE_RUN_ID,
                attr::LEASE_UNTIL
            ))
            .update_expression(format!("REMOVE {}", LEASE_ATTRIBUTES.join(", ")))
            .expression_attribute_values(":run", attrs::s(run.as_str()))
            .expression_attribute_values(":now", attrs::millis(now))
            .send()
            .await;
        crate::error::update_applied(result, "UpdateItem(release lapsed lease)")
    }

    /// Reads a token's sync state (None when the token does not exist).
    pub async fn sync_state(
        &self,
        account: &AccountId,
        token: &TokenId,
    ) -> Result<Option<SyncState>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.tables.tokens)
            .key("account_id", attrs::s(account.as_str()))
            .key("token_id", attrs::s(token.as_str()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem(token)", e))?;
        output.item().map(sync_state_from_item).transpose()
    }
}

/// What the sync status of a token shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncView {
    pub state: SyncState,
    pub lease_started_at: Option<DateTime<Utc>>,
    pub last_delta_at: Option<DateTime<Utc>>,
    pub last_finished_at: Option<DateTime<Utc>>,
    pub last_outcome: Option<String>,
    pub last_error: Option<String>,
    /// The token's scope tags, sorted.
    pub scope_tags: Vec<String>,
}

impl SyncView {
    /// The run that holds the token or is still importing, if any.
    pub fn current_run(&self, now: DateTime<Utc>) -> Option<&RunId> {
        self.state
            .lease
            .as_ref()
            .filter(|lease| now < lease.expires_at)
            .map(|lease| &lease.run_id)
            .or_else(|| {
                self.state
                    .import
                    .as_ref()
                    .filter(|import| now < import.expires_at)
                    .map(|import| &import.run_id)
            })
    }
}

impl Claims {
    /// A token's sync status (None when the account has no such token).
    pub async fn sync_view(
        &self,
        account: &AccountId,
        token: &TokenId,
    ) -> Result<Option<SyncView>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.tables.tokens)
            .key("account_id", attrs::s(account.as_str()))
            .key("token_id", attrs::s(token.as_str()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem(token sync view)", e))?;
        let Some(item) = output.item() else {
            return Ok(None);
        };
        Ok(Some(SyncView {
            state: sync_state_from_item(item)?,
            lease_started_at: attrs::get_time(item, attr::LEASE_STARTED_AT)?,
            last_delta_at: attrs::get_time(item, attr::LAST_DELTA_AT)?,
            last_finished_at: attrs::get_time(item, attr::LAST_FINISHED_AT)?,
            last_outcome: attrs::get_s(item, attr::LAST_OUTCOME).map(str::to_owned),
            last_error: attrs::get_s(item, attr::LAST_ERROR).map(str::to_owned),
            scope_tags: attrs::get_string_set(item, crate::tokens::attr::SCOPE_TAGS)?,
        }))
    }
}

/// A token as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledToken {
    pub account: AccountId,
    pub token: TokenId,
    pub state: SyncState,
    /// `ok`, `terms_not_signed` or `token_invalid`.
    pub status: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// One page of a scan segment of the tokens table.
#[derive(Debug, Default)]
pub struct TokenScan {
    pub tokens: Vec<ScheduledToken>,
    /// Items that could not be read as tokens: `(account_id/token_id, why)`.
    pub malformed: Vec<(String, String)>,
    /// Where the segment goes on; None when it is done.
    pub next: Option<ScanPosition>,
}

impl Claims {
    /// Up to `limit` tokens of scan segment `segment` of `segments`, after
    /// `after`. An item that is not a readable token is reported in
    /// `malformed`, never fails the page.
    pub async fn scan_tokens(
        &self,
        segment: u32,
        segments: u32,
        after: Option<&ScanPosition>,
        limit: u32,
    ) -> Result<TokenScan, StoreError> {
        let start = after.map(|at| {
            Item::from([
                ("account_id".to_owned(), attrs::s(&at.account_id)),
                ("token_id".to_owned(), attrs::s(&at.token_id)),
            ])
        });
        let output = self
            .client
            .scan()
            .table_name(&self.tables.tokens)
            .segment(i32::try_from(segment).unwrap_or(i32::MAX))
            .total_segments(i32::try_from(segments.max(1)).unwrap_or(i32::MAX))
            .set_exclusive_start_key(start)
            .limit(i32::try_from(limit.max(1)).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("Scan(tokens)", e))?;
        let mut scan = TokenScan::default();
        for item in output.items() {
            match scheduled_token(item) {
                Ok(token) => scan.tokens.push(token),
                Err(why) => scan.malformed.push((
                    format!(
                        "{}/{}",
                        attrs::get_s(item, "account_id").unwrap_or("?"),
                        attrs::get_s(item, "token_id").unwrap_or("?")
                    ),
                    why,
                )),
            }
        }
        scan.next = output
            .last_evaluated_key
            .filter(|key| !key.is_empty())
            .map(|key| ScanPosition {
                account_id: attrs::get_s(&key, "account_id")
                    .unwrap_or_default()
                    .to_owned(),
                token_id: attrs::get_s(&key, "token_id")
                    .unwrap_or_default()
                    .to_owned(),
            });
        Ok(scan)
    }
}

/// A tokens-table item as the scheduler needs it, or why it cannot be.
fn scheduled_token(item: &Item) -> Result<ScheduledToken, String> {
    let account = AccountId::parse(attrs::get_s(item, "account_id").unwrap_or_default())
        .map_err(|e| format!("account id: {e}"))?;
    let token = TokenId::parse(attrs::get_s(item, "token_id").unwrap_or_default())
        .map_err(|e| format!("token id: {e}"))?;
    Ok(ScheduledToken {
        account,
        token,
        state: sync_state_from_item(item).map_err(|e| e.to_string())?,
        status: attrs::get_s(item, "status").unwrap_or("ok").to_owned(),
        expires_at: attrs::get_time(item, "token_expires_at").map_err(|e| e.to_string())?,
    })
}

enum WriteClaimError {
    ConditionFailed(Option<Item>),
    Store(StoreError),
}

impl From<StoreError> for WriteClaimError {
    fn from(error: StoreError) -> Self {
        WriteClaimError::Store(error)
    }
}

/// The sync state stored on a token item.
pub fn sync_state_from_item(item: &Item) -> Result<SyncState, StoreError> {
    let lease = match (
        attrs::get_s(item, attr::LEASE_RUN_ID),
        attrs::get_time(item, attr::LEASE_UNTIL)?,
    ) {
        (Some(run), Some(until)) => Some(Lease {
            run_id: parse_run(run)?,
            expires_at: until,
        }),
        _ => None,
    };
    let import = match (
        attrs::get_s(item, attr::IMPORT_RUN_ID),
        attrs::get_time(item, attr::IMPORT_UNTIL)?,
    ) {
        (Some(run), Some(until)) => Some(ImportInProgress {
            run_id: parse_run(run)?,
            expires_at: until,
        }),
        _ => None,
    };
    Ok(SyncState {
        last_manual_at: attrs::get_time(item, attr::LAST_MANUAL_AT)?,
        last_full_at: attrs::get_time(item, attr::LAST_FULL_AT)?,
        lease,
        next_sync_is_full: attrs::get_bool(item, attr::NEXT_SYNC_FULL),
        import,
        device_count: attrs::get_u64(item, attr::DEVICE_COUNT)?.unwrap_or(0),
    })
}

fn parse_run(text: &str) -> Result<RunId, StoreError> {
    RunId::parse(text).map_err(|e| StoreError::Malformed(e.to_string()))
}
