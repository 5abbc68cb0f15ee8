//! Device items.
//!
//! Every write is conditional on the item's `revision`, a counter only this
//! module bumps: the importer and the API (an administrator's delete, a
//! policy assignment) may read the same device at once, and the loser of a
//! race must re-read and decide again rather than overwrite. Which device
//! to write is never decided here: that is `adesync_core::device`.
//!
//! DynamoDB limits shape the calls: `BatchGetItem` reads at most 100 keys,
//! `TransactWriteItems` writes at most 100 items, and both may hand back
//! unprocessed work under load, which is retried with backoff.

use std::collections::HashMap;
use std::sync::Mutex;

use adesync_core::device::{AppleAttributes, Device, DeviceState, Version};
use adesync_core::ids::{PolicyId, Serial, TokenId};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    DeleteRequest, KeysAndAttributes, Put, TransactWriteItem, WriteRequest,
};
use backon::Retryable;
use chrono::DateTime;
use futures::{StreamExt, TryStreamExt};

use crate::attrs::{self, Item};
use crate::error::retry_policy;
use crate::{Store, StoreError};

/// Keys per `BatchGetItem` (DynamoDB's limit).
pub const MAX_BATCH_GET: usize = 100;
/// Items per `TransactWriteItems` (DynamoDB's limit).
pub const MAX_TRANSACTION_ITEMS: usize = 100;
/// Requests per `BatchWriteItem` (DynamoDB's limit).
pub const MAX_BATCH_WRITE: usize = 25;
/// Concurrent requests one batch of devices may have in flight.
pub const WRITE_CONCURRENCY: usize = 8;

/// A stored device with the revision it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub device: Device,
    pub revision: u64,
}

/// A device to write, conditional on what was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceWrite {
    pub device: Device,
    /// The revision read (`None`: no item was there).
    pub expected: Option<u64>,
}

/// The outcome of writing a set of devices.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Written {
    /// Devices written.
    pub written: usize,
    /// Devices changed by someone else since they were read: re-read and decide again.
    pub conflicts: Vec<Serial>,
}

/// The sort key of a device's policy in the `by-policy` index.
pub fn policy_key(token: &TokenId, policy: &PolicyId) -> String {
    format!("{token}#{policy}")
}

fn text(attributes: &AppleAttributes) -> [(&'static str, &Option<String>); 13] {
    [
        ("model", &attributes.model),
        ("description", &attributes.description),
        ("color", &attributes.color),
        ("asset_tag", &attributes.asset_tag),
        ("os", &attributes.os),
        ("device_family", &attributes.device_family),
        ("profile_status", &attributes.profile_status),
        ("profile_uuid", &attributes.profile_uuid),
        ("profile_assign_time", &attributes.profile_assign_time),
        ("profile_push_time", &attributes.profile_push_time),
        ("device_assigned_by", &attributes.device_assigned_by),
        ("device_assigned_date", &attributes.device_assigned_date),
        ("mdm_migration_deadline", &attributes.mdm_migration_deadline),
    ]
}

/// The item of `device` at `revision`.
pub fn device_item(token: &TokenId, device: &Device, revision: u64) -> Item {
    let mut item: Item = HashMap::from([
        ("token_id".to_owned(), attrs::s(token.as_str())),
        ("serial".to_owned(), attrs::s(device.serial.as_str())),
        ("state".to_owned(), attrs::s(device.state.as_str())),
        ("version".to_owned(), attrs::s(device.version.to_string())),
        ("revision".to_owned(), attrs::n(revision)),
        (
            "first_seen_at".to_owned(),
            attrs::millis(device.first_seen_at),
        ),
    ]);
    for (name, value) in text(&device.attributes) {
        if let Some(value) = value {
            item.insert(name.to_owned(), attrs::s(value.as_str()));
        }
    }
    if let Some(version) = device.attributes_version {
        item.insert("attributes_version".into(), attrs::s(version.to_string()));
    }
    for (name, at) in [
        ("removed_at", device.removed_at),
        ("deletes_at", device.deletes_at),
        ("deleted_at", device.deleted_at),
    ] {
        if let Some(at) = at {
            item.insert(name.into(), attrs::millis(at));
        }
    }
    if let Some(at) = device.deletes_at {
        item.insert("expires_at".into(), attrs::ttl_seconds(at));
    }
    if let Some(policy) = &device.policy_id {
        item.insert("policy_id".into(), attrs::s(policy.as_str()));
        item.insert("policy_key".into(), attrs::s(policy_key(token, policy)));
    }
    item
}

fn state_from(text: &str) -> Result<DeviceState, StoreError> {
    Ok(match text {
        "active" => DeviceState::Active,
        "removed_from_apple" => DeviceState::RemovedFromApple,
        "released_before_seen" => DeviceState::ReleasedBeforeSeen,
        "deleted_by_admin" => DeviceState::DeletedByAdmin,
        other => {
            return Err(StoreError::Malformed(format!(
                "unknown device state {other}"
            )));
        }
    })
}

fn version_from(item: &Item, name: &str) -> Result<Option<Version>, StoreError> {
    attrs::get_s(item, name)
        .map(|v| {
            v.parse()
                .map_err(|_| StoreError::Malformed(format!("{name} is not a version")))
        })
        .transpose()
}

/// Reads a device item.
pub fn device_from_item(item: &Item) -> Result<Stored, StoreError> {
    let get = |name: &str| attrs::get_s(item, name).map(str::to_owned);
    let serial = get("serial")
        .and_then(|s| Serial::parse(&s).ok())
        .ok_or_else(|| StoreError::Malformed("device without a valid serial".into()))?;
    let device = Device {
        serial,
        state: state_from(attrs::get_s(item, "state").unwrap_or_default())?,
        attributes: AppleAttributes {
            model: get("model"),
            description: get("description"),
            color: get("color"),
            asset_tag: get("asset_tag"),
            os: get("os"),
            device_family: get("device_family"),
            profile_status: get("profile_status"),
            profile_uuid: get("profile_uuid"),
            profile_assign_time: get("profile_assign_time"),
            profile_push_time: get("profile_push_time"),
            device_assigned_by: get("device_assigned_by"),
            device_assigned_date: get("device_assigned_date"),
            mdm_migration_deadline: get("mdm_migration_deadline"),
        },
        version: version_from(item, "version")?
            .ok_or_else(|| StoreError::Malformed("device without a version".into()))?,
        attributes_version: version_from(item, "attributes_version")?,
        removed_at: attrs::get_time(item, "removed_at")?,
        deletes_at: attrs::get_time(item, "deletes_at")?,
        deleted_at: attrs::get_time(item, "deleted_at")?,
        policy_id: get("policy_id").and_then(|p| PolicyId::parse(&p).ok()),
        first_seen_at: attrs::get_time(item, "first_seen_at")?.unwrap_or(DateTime::UNIX_EPOCH),
    };
    Ok(Stored {
        device,
        revision: attrs::get_u64(item, "revision")?.unwrap_or(0),
    })
}

impl Store {
    /// Reads the stored devices among `serials` (absent ones are left out).
    pub async fn get_devices(
        &self,
        token: &TokenId,
        serials: &[Serial],
    ) -> Result<HashMap<Serial, Stored>, StoreError> {
        let chunks: Vec<Vec<Serial>> = serials
            .chunks(MAX_BATCH_GET)
            .map(<[Serial]>::to_vec)
            .collect();
        let found: Vec<Vec<Stored>> = futures::stream::iter(chunks)
            .map(|chunk| self.get_device_chunk(token, chunk))
            .buffer_unordered(WRITE_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(found
            .into_iter()
            .flatten()
            .map(|stored| (stored.device.serial.clone(), stored))
            .collect())
    }

    async fn get_device_chunk(
        &self,
        token: &TokenId,
        serials: Vec<Serial>,
    ) -> Result<Vec<Stored>, StoreError> {
        let keys: Vec<Item> = serials
            .iter()
            .map(|serial| {
                HashMap::from([
                    ("token_id".to_owned(), attrs::s(token.as_str())),
                    ("serial".to_owned(), attrs::s(serial.as_str())),
                ])
            })
            .collect();
        let pending = Mutex::new(
            KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .map_err(|e| StoreError::Malformed(e.to_string()))?,
        );
        let found = Mutex::new(Vec::new());
        // Under load DynamoDB hands back part of the keys unread; ask again
        // for those only, backing off.
        let round = || async {
            let request = pending.lock().map_err(poisoned)?.clone();
            let output = self
                .client
                .batch_get_item()
                .request_items(&self.tables.devices, request)
                .send()
                .await
                .map_err(|e| StoreError::dynamo("BatchGetItem(devices)", e))?;
            if let Some(items) = output
                .responses
                .as_ref()
                .and_then(|r| r.get(&self.tables.devices))
            {
                let mut found = found.lock().map_err(poisoned)?;
                for item in items {
                    found.push(device_from_item(item)?);
                }
            }
            match output
                .unprocessed_keys
                .and_then(|mut u| u.remove(&self.tables.devices))
            {
                Some(rest) if !rest.keys().is_empty() => {
                    *pending.lock().map_err(poisoned)? = rest;
                    Err(StoreError::Unprocessed("BatchGetItem(devices)"))
                }
                _ => Ok(()),
            }
        };
        round
            .retry(retry_policy())
            .when(StoreError::is_transient)
            .await?;
        found.into_inner().map_err(poisoned)
    }

    /// Writes `writes`, each conditional on the revision it was read at, in
    /// transactions of up to 100 devices run in parallel. A device changed
    /// since it was read is returned in [`Written::conflicts`] (the rest of
    /// its transaction is written on the next try).
    pub async fn write_devices(
        &self,
        token: &TokenId,
        writes: Vec<DeviceWrite>,
    ) -> Result<Written, StoreError> {
        let chunks: Vec<Vec<DeviceWrite>> = writes
            .chunks(MAX_TRANSACTION_ITEMS)
            .map(<[DeviceWrite]>::to_vec)
            .collect();
        let results: Vec<Written> = futures::stream::iter(chunks)
            .map(|chunk| self.write_chunk(token, chunk))
            .buffer_unordered(WRITE_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(results.into_iter().fold(Written::default(), |mut all, w| {
            all.written += w.written;
            all.conflicts.extend(w.conflicts);
            all
        }))
    }

    async fn write_chunk(
        &self,
        token: &TokenId,
        chunk: Vec<DeviceWrite>,
    ) -> Result<Written, StoreError> {
        let pending = Mutex::new(chunk);
        let conflicts = Mutex::new(Vec::new());
        let round = || async {
            let items: Vec<TransactWriteItem> = pending
                .lock()
                .map_err(poisoned)?
                .iter()
                .map(|write| self.conditional_put(token, write))
                .collect::<Result<_, _>>()?;
            if items.is_empty() {
                return Ok(0);
            }
            let count = items.len();
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items))
                .send()
                .await;
            let error = match result {
                Ok(_) => return Ok(count),
                Err(error) => error,
            };
            if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
                error.as_service_error()
            {
                // Reasons are in request order. A failed condition names a
                // device someone else changed; nothing was written, so drop
                // those and retry the rest.
                let reasons = cancelled.cancellation_reasons();
                let mut pending = pending.lock().map_err(poisoned)?;
                let mut conflicts = conflicts.lock().map_err(poisoned)?;
                let mut keep = Vec::with_capacity(pending.len());
                for (index, write) in pending.drain(..).enumerate() {
                    match reasons.get(index).and_then(|r| r.code()) {
                        Some("ConditionalCheckFailed") => conflicts.push(write.device.serial),
                        _ => keep.push(write),
                    }
                }
                *pending = keep;
                return Err(StoreError::Unprocessed("TransactWriteItems(devices)"));
            }
            Err(StoreError::dynamo("TransactWriteItems(devices)", error))
        };
        let written = round
            .retry(retry_policy())
            .when(StoreError::is_transient)
            .await?;
        Ok(Written {
            written,
            conflicts: conflicts.into_inner().map_err(poisoned)?,
        })
    }

    fn conditional_put(
        &self,
        token: &TokenId,
        write: &DeviceWrite,
    ) -> Result<TransactWriteItem, StoreError> {
        let revision = write.expected.map_or(1, |r| r + 1);
        let mut put = Put::builder()
            .table_name(&self.tables.devices)
            .set_item(Some(device_item(token, &write.device, revision)));
        put = match write.expected {
            None => put.condition_expression("attribute_not_exists(serial)"),
            Some(expected) => put
                .condition_expression("revision = :expected")
                .expression_attribute_values(":expected", attrs::n(expected)),
        };
        Ok(TransactWriteItem::builder()
            .put(
                put.build()
                    .map_err(|e| StoreError::Malformed(e.to_string()))?,
            )
            .build())
    }

    /// One device (None when there is no item).
    pub async fn get_device(
        &self,
        token: &TokenId,
        serial: &Serial,
    ) -> Result<Option<Stored>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.tables.devices)
            .key("token_id", attrs::s(token.as_str()))
            .key("serial", attrs::s(serial.as_str()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem(device)", e))?;
        output.item().map(device_from_item).transpose()
    }

    /// A page of a token's devices in serial order, starting after `after`.
    pub async fn list_devices(
        &self,
        token: &TokenId,
        after: Option<&Serial>,
        limit: u32,
    ) -> Result<(Vec<Stored>, Option<Serial>), StoreError> {
        let mut query = self
            .client
            .query()
            .table_name(&self.tables.devices)
            .key_condition_expression("token_id = :token")
            .expression_attribute_values(":token", attrs::s(token.as_str()))
            .limit(i32::try_from(limit).unwrap_or(i32::MAX));
        if let Some(after) = after {
            query = query
                .exclusive_start_key("token_id", attrs::s(token.as_str()))
                .exclusive_start_key("serial", attrs::s(after.as_str()));
        }
        let output = query
            .send()
            .await
            .map_err(|e| StoreError::dynamo("Query(devices)", e))?;
        let devices = output
            .items()
            .iter()
            .map(device_from_item)
            .collect::<Result<Vec<_>, _>>()?;
        let next = output
            .last_evaluated_key()
            .and_then(|key| attrs::get_s(key, "serial"))
            .and_then(|s| Serial::parse(s).ok());
        Ok((devices, next))
    }

    /// A page of the serials assigned to `policy` (the `by-policy` index),
    /// after `after`.
    pub async fn list_policy_serials(
        &self,
        token: &TokenId,
        policy: &PolicyId,
        after: Option<&Serial>,
        limit: u32,
    ) -> Result<(Vec<Serial>, Option<Serial>), StoreError> {
        let key = policy_key(token, policy);
        let mut query = self
            .client
            .query()
            .table_name(&self.tables.devices)
            .index_name("by-policy")
            .key_condition_expression("policy_key = :key")
            .expression_attribute_values(":key", attrs::s(key.as_str()))
            .limit(i32::try_from(limit).unwrap_or(i32::MAX));
        if let Some(after) = after {
            query = query
                .exclusive_start_key("policy_key", attrs::s(key.as_str()))
                .exclusive_start_key("token_id", attrs::s(token.as_str()))
                .exclusive_start_key("serial", attrs::s(after.as_str()));
        }
        let output = query
            .send()
            .await
            .map_err(|e| StoreError::dynamo("Query(devices by policy)", e))?;
        let serials = output
            .items()
            .iter()
            .filter_map(|item| Serial::parse(attrs::get_s(item, "serial")?).ok())
            .collect();
        let next = output
            .last_evaluated_key()
            .and_then(|key| attrs::get_s(key, "serial"))
            .and_then(|s| Serial::parse(s).ok());
        Ok((serials, next))
    }

    /// Deletes device items outright (undoing writes for a deleted token).
    pub async fn delete_devices(
        &self,
        token: &TokenId,
        serials: &[Serial],
    ) -> Result<(), StoreError> {
        for chunk in serials.chunks(MAX_BATCH_WRITE) {
            let requests: Vec<WriteRequest> = chunk
                .iter()
                .map(|serial| {
                    let delete = DeleteRequest::builder()
                        .key("token_id", attrs::s(token.as_str()))
                        .key("serial", attrs::s(serial.as_str()))
                        .build()
                        .map_err(|e| StoreError::Malformed(e.to_string()))?;
                    Ok(WriteRequest::builder().delete_request(delete).build())
                })
                .collect::<Result<_, StoreError>>()?;
            let pending = Mutex::new(requests);
            let round = || async {
                let requests = pending.lock().map_err(poisoned)?.clone();
                let output = self
                    .client
                    .batch_write_item()
                    .request_items(&self.tables.devices, requests)
                    .send()
                    .await
                    .map_err(|e| StoreError::dynamo("BatchWriteItem(delete devices)", e))?;
                match output
                    .unprocessed_items
                    .and_then(|mut u| u.remove(&self.tables.devices))
                {
                    Some(rest) if !rest.is_empty() => {
                        *pending.lock().map_err(poisoned)? = rest;
                        Err(StoreError::Unprocessed("BatchWriteItem(delete devices)"))
                    }
                    _ => Ok(()),
                }
            };
            round
                .retry(retry_policy())
                .when(StoreError::is_transient)
                .await?;
        }
        Ok(())
    }

    /// Every device item of a token (for the full-sync sweep and recounts).
    pub async fn all_devices(&self, token: &TokenId) -> Result<Vec<Stored>, StoreError> {
        let mut all = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.tables.devices)
                .key_condition_expression("token_id = :token")
                .expression_attribute_values(":token", attrs::s(token.as_str()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| StoreError::dynamo("Query(all devices)", e))?;
            for item in output.items() {
                all.push(device_from_item(item)?);
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(all),
            }
        }
    }
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError::Malformed("a writer panicked while holding the batch state".into())
}
