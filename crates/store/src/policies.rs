//! Enrollment policy items, and the counters that enforce the policy limits.
//!
//! - Creating a policy is ONE `TransactWriteItems`: the token's `policy_count` goes up
//!   by one only while below 1,000, and the policy is put if absent. Deleting one is
//!   one transaction too: the policy goes only while its `device_count` is 0, with the
//!   token's count (and its default, if it was the default).
//! - A policy's `device_count` changes in the same transaction as the devices' policy
//!   whenever an administrator moves devices ([`Store::write_devices_counted`]): the
//!   200,000 limit is a condition on the count. The importer, which must not slow down,
//!   reserves room for a batch with one conditional `ADD` before writing it and gives
//!   back what it did not write ([`Store::reserve_policy_devices`]); a crash in between
//!   leaves the count high, never low, so the limit and the delete rules still hold.
//!
//! The policy's settings are stored as their JSON (`settings`), with `version` bumped on
//! every change; `profile_uuid` and `profile_version` say which settings Apple's profile
//! carries (Apple has no update: changed settings need a new profile).

use std::collections::{BTreeMap, HashMap};

use adesync_core::ids::{AccountId, PolicyId, Serial, TokenId};
use adesync_core::policy::{
    MAX_DEVICES_PER_POLICY, MAX_POLICIES_PER_TOKEN, PolicyRecord, PolicySettings,
};
use aws_sdk_dynamodb::types::{
    ConditionCheck, Delete, Put, ReturnValue, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem, Update,
};
use backon::Retryable;
use chrono::{DateTime, Utc};

use crate::attrs::{self, Item};
use adesync_core::device::DeviceWrite;

use crate::devices::MAX_TRANSACTION_ITEMS;
use crate::error::{build_error, retry_policy};
use crate::tokens::attr as token_attr;
use crate::transact::{Refusal, transact};
use crate::{Policies, StoreError};

/// Policy item attribute names.
pub mod attr {
    pub const SETTINGS: &str = "settings";
    pub const VERSION: &str = "version";
    pub const DEVICE_COUNT: &str = "device_count";
    pub const CREATED_AT: &str = "created_at";
    pub const UPDATED_AT: &str = "updated_at";
    pub const PROFILE_UUID: &str = "profile_uuid";
    pub const PROFILE_VERSION: &str = "profile_version";
    pub const PROFILE_ERROR: &str = "profile_error";
    /// Set when the settings changed: the policy's devices move to the new profile.
    pub const REASSIGN_PENDING: &str = "reassign_pending";
    /// How far that move got (the last serial done, in the `by-policy` index's order).
    pub const REASSIGN_AFTER: &str = "reassign_after";
}

/// Why a policy was not created.
#[derive(Debug, thiserror::Error)]
pub enum CreatePolicyError {
    #[error("the token already has {MAX_POLICIES_PER_TOKEN} enrollment policies")]
    LimitReached,
    #[error("no such token")]
    TokenNotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a policy was not deleted.
#[derive(Debug, thiserror::Error)]
pub enum DeletePolicyError {
    #[error("no such policy")]
    NotFound,
    /// Devices are assigned to it.
    #[error("{device_count} devices are assigned to the policy")]
    InUse { device_count: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a token's default policy was not set.
#[derive(Debug, thiserror::Error)]
pub enum DefaultPolicyError {
    #[error("no such policy")]
    PolicyNotFound,
    #[error("no such token")]
    TokenNotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A device write that may move the device from one policy to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountedWrite {
    pub write: DeviceWrite,
    /// The policy the stored item counts in (`write.device.policy_id` is the new one).
    pub from: Option<PolicyId>,
}

/// What [`Store::write_devices_counted`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CountedOutcome {
    pub written: usize,
    /// Devices changed since they were read: read and decide again.
    pub conflicts: Vec<Serial>,
    /// Devices not written because their new policy is full (or was deleted).
    pub refused: Vec<Serial>,
}

impl Policies {
    fn policy_key(
        &self,
        token: &TokenId,
        policy: &PolicyId,
    ) -> [(String, aws_sdk_dynamodb::types::AttributeValue); 2] {
        [
            ("token_id".to_owned(), attrs::s(token.as_str())),
            ("policy_id".to_owned(), attrs::s(policy.as_str())),
        ]
    }

    /// Creates a policy: one transaction that counts it on the token (refused at
    /// [`MAX_POLICIES_PER_TOKEN`]) and puts it.
    pub async fn create_policy(
        &self,
        account: &AccountId,
        token: &TokenId,
        policy: &PolicyId,
        settings: &PolicySettings,
        now: DateTime<Utc>,
    ) -> Result<PolicyRecord, CreatePolicyError> {
        let json = serde_json::to_string(settings)
            .map_err(|e| StoreError::Malformed(format!("policy settings: {e}")))?;
        let count = Update::builder()
            .table_name(&self.tables.tokens)
            .key("account_id", attrs::s(account.as_str()))
            .key("token_id", attrs::s(token.as_str()))
            .update_expression("ADD #count :one")
            .condition_expression(
                "attribute_exists(token_id) AND (attribute_not_exists(#count) OR #count < :limit)",
            )
            .expression_attribute_names("#count", token_attr::POLICY_COUNT)
            .expression_attribute_values(":one", attrs::n(1))
            .expression_attribute_values(":limit", attrs::n(MAX_POLICIES_PER_TOKEN))
            .build()
            .map_err(build_error)?;
        let item: Item = [
            ("token_id", attrs::s(token.as_str())),
            ("policy_id", attrs::s(policy.as_str())),
            (attr::SETTINGS, attrs::s(json)),
            (attr::VERSION, attrs::n(1)),
            (attr::DEVICE_COUNT, attrs::n(0)),
            (attr::CREATED_AT, attrs::millis(now)),
            (attr::UPDATED_AT, attrs::millis(now)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let record = policy_from_item(&item)?;
        let put = Put::builder()
            .table_name(&self.tables.policies)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(policy_id)")
            .build()
            .map_err(build_error)?;
        let items = vec![
            TransactWriteItem::builder().update(count).build(),
            TransactWriteItem::builder().put(put).build(),
        ];
        let attempt = || async {
            let reasons = match transact(
                &self.client,
                "TransactWriteItems(create policy)",
                items.clone(),
            )
            .await
            {
                Ok(()) => return Ok(()),
                Err(Refusal::Store(error)) => return Err(error.into()),
                Err(Refusal::Conditions(reasons)) => reasons,
            };
            if reasons.failed(0) {
                return Err(if self.tokens().token_exists(account, token).await? {
                    CreatePolicyError::LimitReached
                } else {
                    CreatePolicyError::TokenNotFound
                });
            }
            Err(StoreError::Malformed(format!("policy id {policy} was already taken")).into())
        };
        attempt
            .retry(retry_policy())
            .when(|e| matches!(e, CreatePolicyError::Store(e) if e.is_transient()))
            .await?;
        Ok(record)
    }

    /// One policy of a token (None: no such policy).
    pub async fn policy(
        &self,
        token: &TokenId,
        policy: &PolicyId,
    ) -> Result<Option<PolicyRecord>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.tables.policies)
            .set_key(Some(self.policy_key(token, policy).into_iter().collect()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem(policy)", e))?;
        output.item().map(policy_from_item).transpose()
    }

    /// Every policy of a token (at most 1,000), in id order.
    pub async fn list_policies(&self, token: &TokenId) -> Result<Vec<PolicyRecord>, StoreError> {
        let mut all = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.tables.policies)
                .key_condition_expression("token_id = :token")
                .expression_attribute_values(":token", attrs::s(token.as_str()))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| StoreError::dynamo("Query(policies)", e))?;
            for item in output.items() {
                all.push(policy_from_item(item)?);
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(all),
            }
        }
    }

    /// Replaces a policy's settings if it is still at `expected_version`. When the
    /// profile Apple holds no longer matches (`new_profile`), the profile is forgotten
    /// and the policy's devices are queued to move to the new one.
    ///
    /// Returns the updated policy, or None when it changed or vanished meanwhile.
    pub async fn update_policy(
        &self,
        token: &TokenId,
        policy: &PolicyId,
        expected_version: u64,
        settings: &PolicySettings,
        new_profile: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<PolicyRecord>, StoreError> {
        let json = serde_json::to_string(settings)
            .map_err(|e| StoreError::Malformed(format!("policy settings: {e}")))?;
        let mut expression =
            "SET #settings = :settings, #version = :next, #updated = :now".to_owned();
        let mut update = self
            .client
            .update_item()
            .table_name(&self.tables.policies)
            .set_key(Some(self.policy_key(token, policy).into_iter().collect()))
            .condition_expression("attribute_exists(policy_id) AND #version = :expected")
            .expression_attribute_names("#settings", attr::SETTINGS)
            .expression_attribute_names("#version", attr::VERSION)
            .expression_attribute_names("#updated", attr::UPDATED_AT)
            .expression_attribute_values(":settings", attrs::s(json))
            .expression_attribute_values(":expected", attrs::n(expected_version))
            .expression_attribute_values(":next", attrs::n(expected_version + 1))
            .expression_attribute_values(":now", attrs::millis(now));
        if new_profile {
            expression.push_str(
                ", #reassign = :yes REMOVE #uuid, #profile_version, #after, #profile_error",
            );
            update = update
                .expression_attribute_names("#reassign", attr::REASSIGN_PENDING)
                .expression_attribute_names("#uuid", attr::PROFILE_UUID)
                .expression_attribute_names("#profile_version", attr::PROFILE_VERSION)
                .expression_attribute_names("#after", attr::REASSIGN_AFTER)
                .expression_attribute_names("#profile_error", attr::PROFILE_ERROR)
                .expression_attribute_values(":yes", attrs::bool(true));
        } else {
            // The profile Apple holds still fits: it now stands for the new version.
            expression.push_str(", #profile_version = :next_if_defined");
            update = update
                .expression_attribute_names("#profile_version", attr::PROFILE_VERSION)
                .expression_attribute_values(":next_if_defined", attrs::n(expected_version + 1));
        }
        let result = update
            .update_expression(expression)
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => output.attributes().map(policy_from_item).transpose(),
            Err(error) if crate::error::is_condition_failed(&error) => Ok(None),
            Err(error) => Err(StoreError::dynamo("UpdateItem(policy)", error)),
        }
    }

    /// Deletes a policy no device is assigned to: one transaction with the token's
    /// `policy_count` (and its default, if it was the default).
    pub async fn delete_policy(
        &self,
        account: &AccountId,
        token: &TokenId,
        policy: &PolicyId,
    ) -> Result<(), DeletePolicyError> {
        let attempt = || async {
            let Some(record) = self.tokens().token(account, token).await? else {
                return Err(DeletePolicyError::NotFound);
            };
            let is_default = record.default_policy_id.as_ref() == Some(policy);
            let delete = Delete::builder()
                .table_name(&self.tables.policies)
                .set_key(Some(self.policy_key(token, policy).into_iter().collect()))
                .condition_expression(
                    "attribute_exists(policy_id) AND (attribute_not_exists(#devices) OR #devices <= :zero)",
                )
                .expression_attribute_names("#devices", attr::DEVICE_COUNT)
                .expression_attribute_values(":zero", attrs::n(0))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .build()
                .map_err(build_error)?;
            let mut count = Update::builder()
                .table_name(&self.tables.tokens)
                .key("account_id", attrs::s(account.as_str()))
                .key("token_id", attrs::s(token.as_str()))
                .expression_attribute_names("#count", token_attr::POLICY_COUNT)
                .expression_attribute_names("#default", token_attr::DEFAULT_POLICY_ID)
                .expression_attribute_values(":minus_one", attrs::n(-1))
                .expression_attribute_values(":zero", attrs::n(0))
                .expression_attribute_values(":policy", attrs::s(policy.as_str()));
            count = if is_default {
                count
                    .update_expression("ADD #count :minus_one REMOVE #default")
                    .condition_expression("#count > :zero AND #default = :policy")
            } else {
                count.update_expression("ADD #count :minus_one").condition_expression(
                    "#count > :zero AND (attribute_not_exists(#default) OR #default <> :policy)",
                )
            };
            let items = vec![
                TransactWriteItem::builder().delete(delete).build(),
                TransactWriteItem::builder()
                    .update(count.build().map_err(build_error)?)
                    .build(),
            ];
            let reasons =
                match transact(&self.client, "TransactWriteItems(delete policy)", items).await {
                    Ok(()) => return Ok(()),
                    Err(Refusal::Store(error)) => return Err(error.into()),
                    Err(Refusal::Conditions(reasons)) => reasons,
                };
            if reasons.failed(0) {
                return Err(match reasons.item(0) {
                    None => DeletePolicyError::NotFound,
                    Some(item) => DeletePolicyError::InUse {
                        device_count: policy_from_item(item)?.device_count,
                    },
                });
            }
            // The token's default changed between the read and the write:
            // read again and retry.
            Err(StoreError::Unprocessed("TransactWriteItems(delete policy)").into())
        };
        attempt
            .retry(retry_policy())
            .when(|e| matches!(e, DeletePolicyError::Store(e) if e.is_transient()))
            .await
    }

    /// Makes `policy` the token's default (None: no default), provided it exists.
    pub async fn set_default_policy(
        &self,
        account: &AccountId,
        token: &TokenId,
        policy: Option<&PolicyId>,
    ) -> Result<(), DefaultPolicyError> {
        let mut update = Update::builder()
            .table_name(&self.tables.tokens)
            .key("account_id", attrs::s(account.as_str()))
            .key("token_id", attrs::s(token.as_str()))
            .condition_expression("attribute_exists(token_id)")
            .expression_attribute_names("#default", token_attr::DEFAULT_POLICY_ID);
        update = match policy {
            Some(policy) => update
                .update_expression("SET #default = :policy")
                .expression_attribute_values(":policy", attrs::s(policy.as_str())),
            None => update.update_expression("REMOVE #default"),
        };
        let mut items = vec![
            TransactWriteItem::builder()
                .update(update.build().map_err(build_error)?)
                .build(),
        ];
        if let Some(policy) = policy {
            let check = ConditionCheck::builder()
                .table_name(&self.tables.policies)
                .set_key(Some(self.policy_key(token, policy).into_iter().collect()))
                .condition_expression("attribute_exists(policy_id)")
                .build()
                .map_err(build_error)?;
            items.push(TransactWriteItem::builder().condition_check(check).build());
        }
        let attempt = || async {
            let reasons = match transact(
                &self.client,
                "TransactWriteItems(default policy)",
                items.clone(),
            )
            .await
            {
                Ok(()) => return Ok(()),
                Err(Refusal::Store(error)) => return Err(error.into()),
                Err(Refusal::Conditions(reasons)) => reasons,
            };
            Err(if reasons.failed(0) {
                DefaultPolicyError::TokenNotFound
            } else {
                DefaultPolicyError::PolicyNotFound
            })
        };
        attempt
            .retry(retry_policy())
            .when(|e| matches!(e, DefaultPolicyError::Store(e) if e.is_transient()))
            .await
    }

    /// The token's default policy, if it has one (None also when there is no token).
    pub async fn default_policy_id(
        &self,
        account: &AccountId,
        token: &TokenId,
    ) -> Result<Option<PolicyId>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.tables.tokens)
            .key("account_id", attrs::s(account.as_str()))
            .key("token_id", attrs::s(token.as_str()))
            .projection_expression("#default")
            .expression_attribute_names("#default", token_attr::DEFAULT_POLICY_ID)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem(default policy)", e))?;
        Ok(output
            .item()
            .and_then(|item| attrs::get_s(item, token_attr::DEFAULT_POLICY_ID))
            .and_then(|id| PolicyId::parse(id).ok()))
    }

    /// Records the Apple profile defined for `version` of a policy. Returns false when
    /// the settings changed meanwhile, or a profile for this version was recorded first
    /// (then use that one: re-read the policy).
    pub async fn set_policy_profile(
        &self,
        token: &TokenId,
        policy: &PolicyId,
        version: u64,
        profile_uuid: &str,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.policies)
            .set_key(Some(self.policy_key(token, policy).into_iter().collect()))
            .condition_expression(
                "#version = :version AND (attribute_not_exists(#uuid) OR attribute_not_exists(#pv) OR #pv <> :version)",
            )
            .update_expression("SET #uuid = :uuid, #pv = :version REMOVE #error")
            .expression_attribute_names("#version", attr::VERSION)
            .expression_attribute_names("#uuid", attr::PROFILE_UUID)
            .expression_attribute_names("#pv", attr::PROFILE_VERSION)
            .expression_attribute_names("#error", attr::PROFILE_ERROR)
            .expression_attribute_values(":version", attrs::n(version))
            .expression_attribute_values(":uuid", attrs::s(profile_uuid))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(error) if crate::error::is_condition_failed(&error) => Ok(false),
            Err(error) => Err(StoreError::dynamo("UpdateItem(policy profile)", error)),
        }
    }

    /// Records why Apple refused to define the policy's profile (for the administrator).
    pub async fn set_policy_profile_error(
        &self,
        token: &TokenId,
        policy: &PolicyId,
        version: u64,
        message: &str,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.policies)
            .set_key(Some(self.policy_key(token, policy).into_iter().collect()))
            .condition_expression("#version = :version")
            .update_expression("SET #error = :message")
            .expression_attribute_names("#version", attr::VERSION)
            .expression_attribute_names("#error", attr::PROFILE_ERROR)
            .expression_attribute_values(":version", attrs::n(version))
            .expression_attribute_values(":message", attrs::s(message))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if crate::error::is_condition_failed(&error) => Ok(()),
            Err(error) => Err(StoreError::dynamo(
                "UpdateItem(policy profile error)",
                error,
            )),
        }
    }

    /// Saves how far moving a changed policy's devices to its new profile got; `done`
    /// ends the move. Ignored when the settings changed again meanwhile (a new move
    /// starts over). Returns false in that case.
    pub async fn save_reassign_progress(
        &self,
        token: &TokenId,
        policy: &PolicyId,
        version: u64,
        after: Option<&Serial>,
        done: bool,
    ) -> Result<bool, StoreError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.tables.policies)
            .set_key(Some(self.policy_key(token, policy).into_iter().collect()))
            .condition_expression("#version = :version")
            .expression_attribute_names("#version", attr::VERSION)
            .expression_attribute_names("#pending", attr::REASSIGN_PENDING)
            .expression_attribute_names("#after", attr::REASSIGN_AFTER)
            .expression_attribute_values(":version", attrs::n(version));
        update = match (done, after) {
            (true, _) => update.update_expression("REMOVE #pending, #after"),
            (false, Some(after)) => update
                .update_expression("SET #after = :after")
                .expression_attribute_values(":after", attrs::s(after.as_str())),
            (false, None) => update.update_expression("REMOVE #after"),
        };
        match update.send().await {
            Ok(_) => Ok(true),
            Err(error) if crate::error::is_condition_failed(&error) => Ok(false),
            Err(error) => Err(StoreError::dynamo("UpdateItem(reassign progress)", error)),
        }
    }

    /// Reserves room for `count` more devices in a policy: one conditional `ADD`,
    /// refused (false) when the policy is gone or would pass
    /// [`MAX_DEVICES_PER_POLICY`]. Give back what is not used with
    /// [`Store::add_policy_devices`].
    pub async fn reserve_policy_devices(
        &self,
        token: &TokenId,
        policy: &PolicyId,
        count: u64,
    ) -> Result<bool, StoreError> {
        if count == 0 {
            return Ok(true);
        }
        let room = MAX_DEVICES_PER_POLICY.saturating_sub(count);
        let attempt = || async {
            let result = self
                .client
                .update_item()
                .table_name(&self.tables.policies)
                .set_key(Some(self.policy_key(token, policy).into_iter().collect()))
                .condition_expression(
                    "attribute_exists(policy_id) AND (attribute_not_exists(#count) OR #count <= :room)",
                )
                .update_expression("ADD #count :count")
                .expression_attribute_names("#count", attr::DEVICE_COUNT)
                .expression_attribute_values(":room", attrs::n(room))
                .expression_attribute_values(":count", attrs::n(count))
                .send()
                .await;
            match result {
                Ok(_) => Ok(true),
                Err(error) if crate::error::is_condition_failed(&error) => Ok(false),
                Err(error) => Err(StoreError::dynamo(
                    "UpdateItem(reserve policy devices)",
                    error,
                )),
            }
        };
        attempt
            .retry(retry_policy())
            .when(StoreError::is_transient)
            .await
    }

    /// Adds `delta` (negative: removes) to a policy's device count; nothing if the
    /// policy is gone.
    pub async fn add_policy_devices(
        &self,
        token: &TokenId,
        policy: &PolicyId,
        delta: i64,
    ) -> Result<(), StoreError> {
        if delta == 0 {
            return Ok(());
        }
        let attempt = || async {
            let result = self
                .client
                .update_item()
                .table_name(&self.tables.policies)
                .set_key(Some(self.policy_key(token, policy).into_iter().collect()))
                .condition_expression("attribute_exists(policy_id)")
                .update_expression("ADD #count :delta")
                .expression_attribute_names("#count", attr::DEVICE_COUNT)
                .expression_attribute_values(":delta", attrs::n(delta))
                .send()
                .await;
            match result {
                Ok(_) => Ok(()),
                Err(error) if crate::error::is_condition_failed(&error) => Ok(()),
                Err(error) => Err(StoreError::dynamo("UpdateItem(policy device count)", error)),
            }
        };
        attempt
            .retry(retry_policy())
            .when(StoreError::is_transient)
            .await
    }

    /// Sets a policy's device count outright: for repairs and for tests that need a
    /// policy at its limit without 200,000 devices.
    pub async fn set_policy_device_count(
        &self,
        token: &TokenId,
        policy: &PolicyId,
        count: u64,
    ) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.tables.policies)
            .set_key(Some(self.policy_key(token, policy).into_iter().collect()))
            .condition_expression("attribute_exists(policy_id)")
            .update_expression("SET #count = :count")
            .expression_attribute_names("#count", attr::DEVICE_COUNT)
            .expression_attribute_values(":count", attrs::n(count))
            .send()
            .await
            .map_err(|e| StoreError::dynamo("UpdateItem(set policy device count)", e))?;
        Ok(())
    }

    /// Writes devices whose policy may change, each transaction carrying the policy
    /// counters of its devices: `+n` on the new policy (refused past
    /// [`MAX_DEVICES_PER_POLICY`] or when the policy is gone), `-n` on the old one.
    /// Devices changed since they were read come back in `conflicts`; devices whose
    /// new policy refused them in `refused`. Transactions run one after another, so
    /// a full policy stops the rest.
    pub async fn write_devices_counted(
        &self,
        token: &TokenId,
        writes: Vec<CountedWrite>,
    ) -> Result<CountedOutcome, StoreError> {
        let mut outcome = CountedOutcome::default();
        let mut rest = writes;
        while !rest.is_empty() {
            let chunk = take_chunk(&mut rest);
            let written = self.write_counted_chunk(token, chunk, &mut outcome).await?;
            outcome.written += written;
            if !outcome.refused.is_empty() {
                outcome
                    .refused
                    .extend(rest.drain(..).map(|w| w.write.device.serial));
            }
        }
        Ok(outcome)
    }

    async fn write_counted_chunk(
        &self,
        token: &TokenId,
        mut chunk: Vec<CountedWrite>,
        outcome: &mut CountedOutcome,
    ) -> Result<usize, StoreError> {
        for _ in 0..10 {
            if chunk.is_empty() {
                return Ok(0);
            }
            let deltas = deltas(&chunk);
            let mut items = Vec::with_capacity(chunk.len() + deltas.len());
            for counted in &chunk {
                items.push(self.conditional_put(token, &counted.write)?);
            }
            let counters: Vec<(&PolicyId, i64)> = deltas.iter().map(|(p, d)| (*p, *d)).collect();
            for (policy, delta) in &counters {
                let mut update = Update::builder()
                    .table_name(&self.tables.policies)
                    .set_key(Some(self.policy_key(token, policy).into_iter().collect()))
                    .update_expression("ADD #count :delta")
                    .expression_attribute_names("#count", attr::DEVICE_COUNT)
                    .expression_attribute_values(":delta", attrs::n(*delta));
                update = if *delta > 0 {
                    let room = MAX_DEVICES_PER_POLICY.saturating_sub(delta.unsigned_abs());
                    update
                        .condition_expression(
                            "attribute_exists(policy_id) AND (attribute_not_exists(#count) OR #count <= :room)",
                        )
                        .expression_attribute_values(":room", attrs::n(room))
                } else {
                    update.condition_expression("attribute_exists(policy_id)")
                };
                items.push(
                    TransactWriteItem::builder()
                        .update(update.build().map_err(build_error)?)
                        .build(),
                );
            }
            let reasons = match transact(
                &self.client,
                "TransactWriteItems(devices with counts)",
                items,
            )
            .await
            {
                Ok(()) => return Ok(chunk.len()),
                Err(Refusal::Store(error)) if error.is_transient() => {
                    // Throttled, or a conflict with a concurrent transaction:
                    // nothing was written.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
                Err(Refusal::Store(error)) => return Err(error),
                Err(Refusal::Conditions(reasons)) => reasons,
            };
            let devices = chunk.len();
            let full: Vec<&PolicyId> = counters
                .iter()
                .enumerate()
                .filter(|(index, (_, delta))| *delta > 0 && reasons.failed(devices + index))
                .map(|(_, (policy, _))| *policy)
                .collect();
            if let Some((_, (policy, _))) = counters
                .iter()
                .enumerate()
                .find(|(index, (_, delta))| *delta < 0 && reasons.failed(devices + index))
            {
                return Err(StoreError::Malformed(format!(
                    "devices of token {token} count in policy {policy}, which does not exist"
                )));
            }
            if !full.is_empty() {
                let full: Vec<PolicyId> = full.into_iter().cloned().collect();
                let (refused, keep): (Vec<CountedWrite>, Vec<CountedWrite>) =
                    chunk.into_iter().partition(|c| {
                        c.write
                            .device
                            .policy_id
                            .as_ref()
                            .is_some_and(|p| full.contains(p) && c.from.as_ref() != Some(p))
                    });
                outcome
                    .refused
                    .extend(refused.into_iter().map(|c| c.write.device.serial));
                chunk = keep;
                continue;
            }
            // Only device conditions are left: those devices changed since
            // they were read.
            let (conflicts, keep): (Vec<_>, Vec<_>) = chunk
                .into_iter()
                .enumerate()
                .partition(|(index, _)| reasons.failed(*index));
            outcome.conflicts.extend(
                conflicts
                    .into_iter()
                    .map(|(_, counted)| counted.write.device.serial),
            );
            chunk = keep.into_iter().map(|(_, counted)| counted).collect();
        }
        Err(StoreError::Unprocessed(
            "TransactWriteItems(devices with counts)",
        ))
    }

    /// Devices assigned to a policy of a token (0 when it has no such policy).
    pub async fn policy_device_count(
        &self,
        token: &TokenId,
        policy: &PolicyId,
    ) -> Result<u64, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.tables.policies)
            .key("token_id", attrs::s(token.as_str()))
            .key("policy_id", attrs::s(policy.as_str()))
            .projection_expression(attr::DEVICE_COUNT)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem(policy)", e))?;
        match output.item() {
            Some(item) => Ok(attrs::get_u64(item, attr::DEVICE_COUNT)?.unwrap_or(0)),
            None => Ok(0),
        }
    }

    /// Deletes devices past their deletion date that still count in a policy, each
    /// with its count, provided they are unchanged since read (`revision`). Returns
    /// the ones deleted.
    pub async fn delete_counted_devices(
        &self,
        token: &TokenId,
        devices: &[(Serial, u64, PolicyId)],
    ) -> Result<Vec<Serial>, StoreError> {
        let mut deleted = Vec::new();
        for (serial, revision, policy) in devices {
            let delete = Delete::builder()
                .table_name(&self.tables.devices)
                .key("token_id", attrs::s(token.as_str()))
                .key("serial", attrs::s(serial.as_str()))
                .condition_expression("revision = :revision")
                .expression_attribute_values(":revision", attrs::n(*revision))
                .build()
                .map_err(build_error)?;
            let count = Update::builder()
                .table_name(&self.tables.policies)
                .set_key(Some(self.policy_key(token, policy).into_iter().collect()))
                .update_expression("ADD #count :minus_one")
                .condition_expression("attribute_exists(policy_id)")
                .expression_attribute_names("#count", attr::DEVICE_COUNT)
                .expression_attribute_values(":minus_one", attrs::n(-1))
                .build()
                .map_err(build_error)?;
            let items = vec![
                TransactWriteItem::builder().delete(delete).build(),
                TransactWriteItem::builder().update(count).build(),
            ];
            // A failed condition: changed meanwhile (the next sweep looks again), or
            // its policy is gone.
            if self
                .transact_conditionally("TransactWriteItems(delete expired device)", items)
                .await?
                .is_none()
            {
                deleted.push(serial.clone());
            }
        }
        Ok(deleted)
    }
}

/// The policy counter changes of a chunk: +1 on each new policy, -1 on each old one.
fn deltas(chunk: &[CountedWrite]) -> BTreeMap<&PolicyId, i64> {
    let mut deltas: BTreeMap<&PolicyId, i64> = BTreeMap::new();
    for counted in chunk {
        let to = counted.write.device.policy_id.as_ref();
        let from = counted.from.as_ref();
        if to == from {
            continue;
        }
        if let Some(to) = to {
            *deltas.entry(to).or_default() += 1;
        }
        if let Some(from) = from {
            *deltas.entry(from).or_default() -= 1;
        }
    }
    deltas.retain(|_, delta| *delta != 0);
    deltas
}

/// The next writes that fit one transaction with their counters.
fn take_chunk(rest: &mut Vec<CountedWrite>) -> Vec<CountedWrite> {
    let mut policies: HashMap<PolicyId, ()> = HashMap::new();
    let mut taken = 0;
    for counted in rest.iter() {
        let mut added = 0;
        for policy in [&counted.from, &counted.write.device.policy_id]
            .into_iter()
            .flatten()
        {
            if !policies.contains_key(policy) {
                added += 1;
            }
        }
        if taken + 1 + policies.len() + added > MAX_TRANSACTION_ITEMS {
            break;
        }
        for policy in [&counted.from, &counted.write.device.policy_id]
            .into_iter()
            .flatten()
        {
            policies.insert(policy.clone(), ());
        }
        taken += 1;
    }
    rest.drain(..taken.max(1)).collect()
}

/// Reads a policy item.
fn policy_from_item(item: &Item) -> Result<PolicyRecord, StoreError> {
    let text = |name: &str| {
        attrs::get_s(item, name)
            .ok_or_else(|| StoreError::Malformed(format!("a policy without {name}")))
    };
    let token =
        TokenId::parse(text("token_id")?).map_err(|e| StoreError::Malformed(e.to_string()))?;
    let policy =
        PolicyId::parse(text("policy_id")?).map_err(|e| StoreError::Malformed(e.to_string()))?;
    let settings = serde_json::from_str(text(attr::SETTINGS)?)
        .map_err(|e| StoreError::Malformed(format!("policy settings: {e}")))?;
    let time = |name: &str| {
        attrs::get_time(item, name)?
            .ok_or_else(|| StoreError::Malformed(format!("a policy without {name}")))
    };
    Ok(PolicyRecord {
        token,
        policy,
        settings,
        version: attrs::get_u64(item, attr::VERSION)?.unwrap_or(1),
        device_count: attrs::get_i64(item, attr::DEVICE_COUNT)?
            .unwrap_or(0)
            .max(0)
            .unsigned_abs(),
        created_at: time(attr::CREATED_AT)?,
        updated_at: time(attr::UPDATED_AT)?,
        profile_uuid: attrs::get_s(item, attr::PROFILE_UUID).map(str::to_owned),
        profile_version: attrs::get_u64(item, attr::PROFILE_VERSION)?,
        profile_error: attrs::get_s(item, attr::PROFILE_ERROR).map(str::to_owned),
        reassign_pending: attrs::get_bool(item, attr::REASSIGN_PENDING),
        reassign_after: attrs::get_s(item, attr::REASSIGN_AFTER)
            .and_then(|s| Serial::parse(s).ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use adesync_core::device::{Device, DeviceState, Management, Version};

    fn device(serial: &str, policy: Option<&str>) -> Device {
        Device {
            serial: Serial::parse(serial).unwrap(),
            state: DeviceState::Active,
            attributes: Default::default(),
            version: Version::for_change(DateTime::UNIX_EPOCH, 0),
            attributes_version: None,
            removed_at: None,
            released_by_replacement: false,
            deletes_at: None,
            deleted_at: None,
            policy_id: policy.map(|p| PolicyId::parse(p).unwrap()),
            management: Management::default(),
            first_seen_at: DateTime::UNIX_EPOCH,
        }
    }

    fn counted(serial: &str, from: Option<&str>, to: Option<&str>) -> CountedWrite {
        CountedWrite {
            write: DeviceWrite {
                device: device(serial, to),
                expected: Some(1),
            },
            from: from.map(|p| PolicyId::parse(p).unwrap()),
        }
    }

    #[test]
    fn counters_follow_the_moves() {
        let chunk = vec![
            counted("A", None, Some("p1")),
            counted("B", Some("p2"), Some("p1")),
            counted("C", Some("p1"), Some("p1")),
            counted("D", Some("p2"), None),
        ];
        let deltas = deltas(&chunk);
        let p = |id: &str| PolicyId::parse(id).unwrap();
        assert_eq!(deltas.get(&p("p1")), Some(&2));
        assert_eq!(deltas.get(&p("p2")), Some(&-2));
        assert_eq!(deltas.len(), 2);
    }

    #[test]
    fn chunks_leave_room_for_their_counters() {
        let mut writes: Vec<CountedWrite> = (0..250)
            .map(|n| {
                counted(
                    &format!("S{n:04}"),
                    Some(&format!("old{}", n % 3)),
                    Some("p1"),
                )
            })
            .collect();
        let mut sizes = Vec::new();
        while !writes.is_empty() {
            let chunk = take_chunk(&mut writes);
            let policies = deltas(&chunk).len();
            assert!(chunk.len() + policies <= MAX_TRANSACTION_ITEMS);
            sizes.push(chunk.len());
        }
        assert_eq!(sizes.iter().sum::<usize>(), 250);
        assert_eq!(sizes[0], MAX_TRANSACTION_ITEMS - 4);
    }
}
