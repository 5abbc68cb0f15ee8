//! One `TransactWriteItems` call and what its refusal means.
//!
//! Every rule enforced by a transaction (the token and policy limits, the
//! token delete rules, the default policy) reads the same way: which of the
//! request's conditions failed, in request order. This module turns the SDK's
//! error into exactly that, so each caller only maps indexes to its own
//! refusals.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{CancellationReason, TransactWriteItem};

use crate::StoreError;
use crate::attrs::Item;

/// Why a transaction wrote nothing.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// At least one condition failed; the reasons are in request order.
    Conditions(Cancelled),
    /// Anything else: a conflict with a concurrent transaction (transient,
    /// retry), throttling, transport. Nothing was written either way.
    Store(StoreError),
}

/// The cancellation reasons of a transaction refused by its conditions.
#[derive(Debug)]
pub(crate) struct Cancelled(Vec<CancellationReason>);

impl Cancelled {
    /// Whether the condition of the `index`th request item failed.
    pub(crate) fn failed(&self, index: usize) -> bool {
        self.0.get(index).and_then(CancellationReason::code) == Some("ConditionalCheckFailed")
    }

    /// The first request item whose condition failed.
    pub(crate) fn first_failed(&self) -> Option<usize> {
        (0..self.0.len()).find(|&index| self.failed(index))
    }

    /// The item as it was when the `index`th condition failed (the request
    /// item asked for `ReturnValuesOnConditionCheckFailure`), if any.
    pub(crate) fn item(&self, index: usize) -> Option<&Item> {
        self.0
            .get(index)
            .and_then(CancellationReason::item)
            .filter(|item| !item.is_empty())
    }
}

/// Sends one transaction named `what` (for errors and logs).
pub(crate) async fn transact(
    client: &Client,
    what: &'static str,
    items: Vec<TransactWriteItem>,
) -> Result<(), Refusal> {
    let error = match client
        .transact_write_items()
        .set_transact_items(Some(items))
        .send()
        .await
    {
        Ok(_) => return Ok(()),
        Err(error) => error,
    };
    if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
        error.as_service_error()
    {
        let reasons = Cancelled(cancelled.cancellation_reasons().to_vec());
        return Err(if reasons.first_failed().is_some() {
            Refusal::Conditions(reasons)
        } else {
            // Cancelled for a conflict with a concurrent transaction, not by
            // a rule: worth another try.
            Refusal::Store(StoreError::Unprocessed(what))
        });
    }
    Err(Refusal::Store(StoreError::dynamo(what, error)))
}
