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

use adesync_core::assignment::{Assignment, AssignmentStatus};
use adesync_core::device::{
    AppleAttributes, Device, DeviceState, DeviceSummary, DeviceWrite, Management, Stored, Version,
};
use adesync_core::enrollment::{DeviceAction, EnrollmentState};
use adesync_core::ids::{PolicyId, Serial, TokenId, UserId};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    DeleteRequest, KeysAndAttributes, Put, PutRequest, TransactWriteItem, WriteRequest,
};
use backon::Retryable;
use chrono::DateTime;
use futures::{StreamExt, TryStreamExt};

use crate::attrs::{self, Item};
use crate::error::{build_error, retry_policy};
use crate::{Db, Devices, StoreError};

/// Keys per `BatchGetItem` (DynamoDB's limit).
pub const MAX_BATCH_GET: usize = 100;
/// Items per `TransactWriteItems` (DynamoDB's limit).
pub const MAX_TRANSACTION_ITEMS: usize = 100;
/// Requests per `BatchWriteItem` (DynamoDB's limit).
pub const MAX_BATCH_WRITE: usize = 25;
/// Concurrent requests one batch of devices may have in flight.
pub const WRITE_CONCURRENCY: usize = 8;

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
    if device.released_by_replacement {
        item.insert("released_by_replacement".into(), attrs::bool(true));
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
    // A device counted by a policy is never left to the TTL, which would delete it
    // without uncounting it: the end-of-run sweep deletes it with its count instead.
    if let Some(at) = device.deletes_at
        && device.policy_id.is_none()
    {
        item.insert("expires_at".into(), attrs::ttl_seconds(at));
    }
    if let Some(policy) = &device.policy_id {
        item.insert("policy_id".into(), attrs::s(policy.as_str()));
        item.insert("policy_key".into(), attrs::s(policy_key(token, policy)));
    }
    insert_management(&mut item, token, &device.management);
    item
}

/// Device item attribute names of the MDM side ([`Management`]).
pub mod management_attr {
    pub const ASSIGN_STATUS: &str = "assign_status";
    pub const ASSIGN_AT: &str = "assign_at";
    pub const ASSIGN_PROFILE_UUID: &str = "assign_profile_uuid";
    pub const ASSIGN_RETRY_AT: &str = "assign_retry_at";
    /// Key of the sparse `by-assignment-due` index: the token, set only while an
    /// assignment waits for Apple (pending, or failed/throttled until retried).
    pub const ASSIGN_DUE_TOKEN: &str = "assign_due_token";
    /// Sort key of that index: when the assignment is due (epoch milliseconds).
    pub const ASSIGN_DUE_AT: &str = "assign_due_at";
    pub const ENROLLMENT_STATE: &str = "enrollment_state";
    pub const LAST_ACTION: &str = "last_action";
    pub const ENROLLMENT_CHANGED_AT: &str = "enrollment_changed_at";
    pub const USER_ID: &str = "user_id";
}
use management_attr as m;

/// Name of the sparse index of assignments waiting for Apple.
pub const ASSIGNMENT_DUE_INDEX: &str = "by-assignment-due";
/// Name of the index that finds a serial number's tokens.
pub const SERIAL_INDEX: &str = "by-serial";

fn insert_management(item: &mut Item, token: &TokenId, management: &Management) {
    if let Some(assignment) = &management.assignment {
        item.insert(
            m::ASSIGN_STATUS.into(),
            attrs::s(assignment.status.as_str()),
        );
        item.insert(m::ASSIGN_AT.into(), attrs::millis(assignment.at));
        if let Some(uuid) = &assignment.profile_uuid {
            item.insert(m::ASSIGN_PROFILE_UUID.into(), attrs::s(uuid.as_str()));
        }
        if let Some(at) = assignment.retry_at {
            item.insert(m::ASSIGN_RETRY_AT.into(), attrs::millis(at));
        }
        if let Some(due) = assignment.due_at() {
            item.insert(m::ASSIGN_DUE_TOKEN.into(), attrs::s(token.as_str()));
            item.insert(m::ASSIGN_DUE_AT.into(), attrs::millis(due));
        }
    }
    if management.enrollment != EnrollmentState::NotEnrolled {
        item.insert(
            m::ENROLLMENT_STATE.into(),
            attrs::s(management.enrollment.as_str()),
        );
    }
    if let Some(action) = management.last_action {
        item.insert(m::LAST_ACTION.into(), attrs::s(action.as_str()));
    }
    if let Some(at) = management.enrollment_changed_at {
        item.insert(m::ENROLLMENT_CHANGED_AT.into(), attrs::millis(at));
    }
    if let Some(user) = &management.user_id {
        item.insert(m::USER_ID.into(), attrs::s(user.as_str()));
    }
}

fn management_from(item: &Item) -> Result<Management, StoreError> {
    let assignment = match attrs::get_s(item, m::ASSIGN_STATUS) {
        None => None,
        Some(text) => Some(Assignment {
            status: AssignmentStatus::parse(text).ok_or_else(|| {
                StoreError::Malformed(format!("unknown assignment status {text}"))
            })?,
            at: attrs::get_time(item, m::ASSIGN_AT)?
                .ok_or_else(|| StoreError::Malformed("an assignment without a time".into()))?,
            profile_uuid: attrs::get_s(item, m::ASSIGN_PROFILE_UUID).map(str::to_owned),
            retry_at: attrs::get_time(item, m::ASSIGN_RETRY_AT)?,
        }),
    };
    let enrollment = match attrs::get_s(item, m::ENROLLMENT_STATE) {
        None => EnrollmentState::NotEnrolled,
        Some(text) => EnrollmentState::parse(text)
            .ok_or_else(|| StoreError::Malformed(format!("unknown enrollment state {text}")))?,
    };
    let last_action = attrs::get_s(item, m::LAST_ACTION)
        .map(|text| {
            DeviceAction::parse(text)
                .ok_or_else(|| StoreError::Malformed(format!("unknown device action {text}")))
        })
        .transpose()?;
    let user_id = attrs::get_s(item, m::USER_ID)
        .map(|text| UserId::parse(text).map_err(|e| StoreError::Malformed(e.to_string())))
        .transpose()?;
    Ok(Management {
        assignment,
        enrollment,
        last_action,
        enrollment_changed_at: attrs::get_time(item, m::ENROLLMENT_CHANGED_AT)?,
        user_id,
    })
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
        released_by_replacement: attrs::get_bool(item, "released_by_replacement"),
        deletes_at: attrs::get_time(item, "deletes_at")?,
        deleted_at: attrs::get_time(item, "deleted_at")?,
        policy_id: get("policy_id").and_then(|p| PolicyId::parse(&p).ok()),
        management: management_from(item)?,
        first_seen_at: attrs::get_time(item, "first_seen_at")?.unwrap_or(DateTime::UNIX_EPOCH),
    };
    Ok(Stored {
        device,
        revision: attrs::get_u64(item, "revision")?.unwrap_or(0),
    })
}

impl Devices {
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
            .map(|serial| device_key(token, serial))
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

    /// Writes `writes`, each conditional on what was read. Devices that
    /// exist are written in transactions of up to 100, conditional on the
    /// revision read; a device changed since is returned in
    /// [`Written::conflicts`] (the rest of its transaction is written on the
    /// next try). Devices that did not exist go in plain `BatchWriteItem`
    /// calls of 25 — cheaper, and safe because only the importer creates
    /// devices and it handles one token's batches one at a time (FIFO);
    /// every other writer (the API) acts on devices that exist.
    pub async fn write_devices(
        &self,
        token: &TokenId,
        writes: Vec<DeviceWrite>,
    ) -> Result<Written, StoreError> {
        let (new, existing): (Vec<DeviceWrite>, Vec<DeviceWrite>) =
            writes.into_iter().partition(|w| w.expected.is_none());
        let new_count = new.len();
        let creates = create_requests(token, &new)?;
        let updates: Vec<Vec<DeviceWrite>> = existing
            .chunks(MAX_TRANSACTION_ITEMS)
            .map(<[DeviceWrite]>::to_vec)
            .collect();
        let create_calls = futures::stream::iter(creates)
            .map(|requests| self.batch_write(requests))
            .buffer_unordered(WRITE_CONCURRENCY)
            .try_collect::<Vec<()>>();
        let update_calls = futures::stream::iter(updates)
            .map(|chunk| self.write_chunk(token, chunk))
            .buffer_unordered(WRITE_CONCURRENCY)
            .try_collect::<Vec<Written>>();
        let (_, results) = futures::try_join!(create_calls, update_calls)?;
        Ok(results.into_iter().fold(
            Written {
                written: new_count,
                conflicts: Vec::new(),
            },
            |mut all, w| {
                all.written += w.written;
                all.conflicts.extend(w.conflicts);
                all
            },
        ))
    }

    /// One `BatchWriteItem`, re-sending what DynamoDB leaves unprocessed.
    async fn batch_write(&self, requests: Vec<WriteRequest>) -> Result<(), StoreError> {
        let pending = Mutex::new(requests);
        let round = || async {
            let requests = pending.lock().map_err(poisoned)?.clone();
            let output = self
                .client
                .batch_write_item()
                .request_items(&self.tables.devices, requests)
                .send()
                .await
                .map_err(|e| StoreError::dynamo("BatchWriteItem(devices)", e))?;
            match output
                .unprocessed_items
                .and_then(|mut u| u.remove(&self.tables.devices))
            {
                Some(rest) if !rest.is_empty() => {
                    *pending.lock().map_err(poisoned)? = rest;
                    Err(StoreError::Unprocessed("BatchWriteItem(devices)"))
                }
                _ => Ok(()),
            }
        };
        round
            .retry(retry_policy())
            .when(StoreError::is_transient)
            .await
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
        page_of(&output)
    }

    /// Whether the token has any device item at all.
    pub async fn token_has_devices(&self, token: &TokenId) -> Result<bool, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.tables.devices)
            .key_condition_expression("token_id = :token")
            .expression_attribute_values(":token", attrs::s(token.as_str()))
            .projection_expression("serial")
            .limit(1)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("Query(token has devices)", e))?;
        Ok(output.count() > 0)
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
            let requests = chunk
                .iter()
                .map(|serial| {
                    let delete = DeleteRequest::builder()
                        .key("token_id", attrs::s(token.as_str()))
                        .key("serial", attrs::s(serial.as_str()))
                        .build()
                        .map_err(|e| StoreError::Malformed(e.to_string()))?;
                    Ok(WriteRequest::builder().delete_request(delete).build())
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            self.batch_write(requests).await?;
        }
        Ok(())
    }

    /// Deletes a device past its deletion date that no policy counts,
    /// provided it is unchanged since read (`revision`): true when deleted.
    /// DynamoDB's TTL would remove it too, silently and days later.
    pub async fn delete_expired_device(
        &self,
        token: &TokenId,
        serial: &Serial,
        revision: u64,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.tables.devices)
            .key("token_id", attrs::s(token.as_str()))
            .key("serial", attrs::s(serial.as_str()))
            .condition_expression("revision = :revision")
            .expression_attribute_values(":revision", attrs::n(revision))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(error)
                if matches!(
                    error.as_service_error(),
                    Some(aws_sdk_dynamodb::operation::delete_item::DeleteItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(false)
            }
            Err(error) => Err(StoreError::dynamo("DeleteItem(expired device)", error)),
        }
    }

    /// Where a part of the end-of-run sweep ends: the `count`-th serial of
    /// the token after `after`, or its last one when fewer follow, with how
    /// many devices that makes (`None` when none follow). Reads keys only,
    /// so a part's range is known before its devices are read in full.
    pub async fn serial_after(
        &self,
        token: &TokenId,
        after: Option<&Serial>,
        count: usize,
    ) -> Result<Option<(Serial, usize)>, StoreError> {
        let mut last: Option<Serial> = None;
        let mut seen = 0;
        let mut start = after.map(|after| device_key(token, after));
        loop {
            let wanted = i32::try_from(count - seen).unwrap_or(i32::MAX);
            let output = self
                .client
                .query()
                .table_name(&self.tables.devices)
                .key_condition_expression("token_id = :token")
                .expression_attribute_values(":token", attrs::s(token.as_str()))
                .projection_expression("serial")
                .set_exclusive_start_key(start.take())
                .limit(wanted)
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| StoreError::dynamo("Query(device serials)", e))?;
            seen += output.items().len();
            if let Some(serial) = output
                .items()
                .last()
                .and_then(|item| attrs::get_s(item, "serial"))
            {
                last =
                    Some(Serial::parse(serial).map_err(|e| StoreError::Malformed(e.to_string()))?);
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() && seen < count => start = Some(key),
                _ => return Ok(last.map(|last| (last, seen))),
            }
        }
    }

    /// A page of what closing a run needs to know of the token's devices
    /// after `after` (up to and including `through`, if given), read
    /// consistently; and where the next page starts, if any. Only a few
    /// small attributes come back, so a close reads a whole token without
    /// moving its items (DynamoDB caps a page at 1 MB of items read).
    pub async fn device_summaries_page(
        &self,
        token: &TokenId,
        after: Option<&Serial>,
        through: Option<&Serial>,
        limit: u32,
    ) -> Result<(Vec<DeviceSummary>, Option<Serial>), StoreError> {
        let mut query = self
            .client
            .query()
            .table_name(&self.tables.devices)
            .key_condition_expression("token_id = :token")
            .expression_attribute_values(":token", attrs::s(token.as_str()));
        if let Some(through) = through {
            query = query
                .key_condition_expression("token_id = :token AND serial <= :through")
                .expression_attribute_values(":through", attrs::s(through.as_str()));
        }
        let output = query
            .projection_expression("serial, #state, deletes_at, policy_id")
            .expression_attribute_names("#state", "state")
            .set_exclusive_start_key(after.map(|after| device_key(token, after)))
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("Query(device summaries of a run's close)", e))?;
        let summaries = output
            .items()
            .iter()
            .map(summary_from_item)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((summaries, next_serial(&output)))
    }
}

/// The devices of a `Query` answer, and the serial the next page starts after.
fn page_of(
    output: &aws_sdk_dynamodb::operation::query::QueryOutput,
) -> Result<(Vec<Stored>, Option<Serial>), StoreError> {
    let devices = output
        .items()
        .iter()
        .map(device_from_item)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((devices, next_serial(output)))
}

/// The serial a `Query` answer's next page starts after.
fn next_serial(output: &aws_sdk_dynamodb::operation::query::QueryOutput) -> Option<Serial> {
    output
        .last_evaluated_key()
        .and_then(|key| attrs::get_s(key, "serial"))
        .and_then(|s| Serial::parse(s).ok())
}

/// Reads what [`Store::device_summaries_page`] projects.
fn summary_from_item(item: &Item) -> Result<DeviceSummary, StoreError> {
    let serial = attrs::get_s(item, "serial")
        .and_then(|s| Serial::parse(s).ok())
        .ok_or_else(|| StoreError::Malformed("device without a valid serial".into()))?;
    Ok(DeviceSummary {
        serial,
        state: state_from(attrs::get_s(item, "state").unwrap_or_default())?,
        deletes_at: attrs::get_time(item, "deletes_at")?,
        counted: item.contains_key("policy_id"),
    })
}

/// A device item's primary key.
fn device_key(token: &TokenId, serial: &Serial) -> Item {
    HashMap::from([
        ("token_id".to_owned(), attrs::s(token.as_str())),
        ("serial".to_owned(), attrs::s(serial.as_str())),
    ])
}

/// The `BatchWriteItem` calls (25 puts each) that create the devices of
/// `new` at revision 1 (see [`Store::write_devices`]).
pub fn create_requests(
    token: &TokenId,
    new: &[DeviceWrite],
) -> Result<Vec<Vec<WriteRequest>>, StoreError> {
    new.chunks(MAX_BATCH_WRITE)
        .map(|chunk| {
            chunk
                .iter()
                .map(|w| {
                    let put = PutRequest::builder()
                        .set_item(Some(device_item(token, &w.device, 1)))
                        .build()
                        .map_err(|e| StoreError::Malformed(e.to_string()))?;
                    Ok(WriteRequest::builder().put_request(put).build())
                })
                .collect::<Result<Vec<_>, StoreError>>()
        })
        .collect()
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError::Malformed("a writer panicked while holding the batch state".into())
}

impl Db {
    /// A device put conditioned on the revision it was read at (or on its
    /// absence): the importer's and the counted policy writes' optimistic check.
    pub(crate) fn conditional_put(
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
            .put(put.build().map_err(build_error)?)
            .build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adesync_core::assignment::{AppleAnswer, outcome};

    fn device() -> Device {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        Device {
            serial: Serial::parse("C02T0HL0GGC0").unwrap(),
            state: DeviceState::Active,
            attributes: AppleAttributes {
                model: Some("iPhone".into()),
                profile_status: Some("assigned".into()),
                ..AppleAttributes::default()
            },
            version: Version::for_change(at, 3),
            attributes_version: Some(Version::for_change(at, 3)),
            removed_at: None,
            released_by_replacement: false,
            deletes_at: None,
            deleted_at: None,
            policy_id: Some(PolicyId::parse("p1").unwrap()),
            management: Management {
                assignment: Some(outcome(
                    AppleAnswer::Throttled {
                        retry_after_seconds: Some(60),
                    },
                    "PROFILE1",
                    at,
                )),
                enrollment: EnrollmentState::PendingReset,
                last_action: Some(DeviceAction::Retire),
                enrollment_changed_at: Some(at),
                user_id: Some(UserId::parse("ada@example.com").unwrap()),
            },
            first_seen_at: at,
        }
    }

    #[test]
    fn every_field_round_trips_through_the_item() {
        let token = TokenId::parse("t1").unwrap();
        let device = device();
        let item = device_item(&token, &device, 7);
        let stored = device_from_item(&item).unwrap();
        assert_eq!(stored.device, device);
        assert_eq!(stored.revision, 7);
        // A throttled assignment is in the due index, keyed by its retry time.
        assert_eq!(attrs::get_s(&item, m::ASSIGN_DUE_TOKEN), Some("t1"));
        assert_eq!(
            attrs::get_time(&item, m::ASSIGN_DUE_AT).unwrap(),
            device.management.assignment.as_ref().unwrap().retry_at
        );
        // An untouched MDM side writes nothing.
        let plain = Device {
            policy_id: None,
            management: Management::default(),
            ..device
        };
        let item = device_item(&token, &plain, 1);
        for name in [
            m::ASSIGN_STATUS,
            m::ASSIGN_DUE_TOKEN,
            m::ENROLLMENT_STATE,
            m::USER_ID,
            "policy_key",
        ] {
            assert!(!item.contains_key(name), "{name}");
        }
        assert_eq!(device_from_item(&item).unwrap().device, plain);
    }

    #[test]
    fn done_assignments_leave_the_due_index() {
        let token = TokenId::parse("t1").unwrap();
        let mut device = device();
        device.management.assignment = Some(outcome(
            AppleAnswer::Success,
            "PROFILE1",
            DateTime::UNIX_EPOCH,
        ));
        let item = device_item(&token, &device, 1);
        assert!(!item.contains_key(m::ASSIGN_DUE_TOKEN));
        assert!(!item.contains_key(m::ASSIGN_DUE_AT));
        assert_eq!(device_from_item(&item).unwrap().device, device);
    }

    #[test]
    fn devices_counted_by_a_policy_are_not_left_to_the_ttl() {
        let token = TokenId::parse("t1").unwrap();
        let removed = Device {
            state: DeviceState::RemovedFromApple,
            removed_at: Some(DateTime::UNIX_EPOCH),
            deletes_at: Some(DateTime::UNIX_EPOCH + chrono::Duration::days(31)),
            ..device()
        };
        assert!(!device_item(&token, &removed, 1).contains_key("expires_at"));
        let unassigned = Device {
            policy_id: None,
            ..removed
        };
        assert!(device_item(&token, &unassigned, 1).contains_key("expires_at"));
    }
}
