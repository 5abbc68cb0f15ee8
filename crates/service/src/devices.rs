//! A token's devices as an administrator sees them: pages with filters, one
//! device, and deleting one.

use adesync_core::device::{self, Device};
use adesync_core::device::{DeviceWrite, Stored};
use adesync_core::ids::{AccountId, PolicyId, Serial, TokenId};
use adesync_store::policies::CountedWrite;
use adesync_store::{Devices, Store, StoreError};
use chrono::{DateTime, Utc};

/// The most devices one listing request reads before it answers, filters
/// or not: a filter that matches few devices of a large token answers a
/// short page (possibly empty) with a cursor rather than reading the whole
/// token in one request.
pub const READS_PER_PAGE: usize = 5_000;

/// Devices read per query while a state filter skips some.
const FILTERED_QUERY: u32 = 1_000;

/// Which devices a listing shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFilter {
    /// The state as the API shows it ([`device::shown_state`]).
    pub state: Option<&'static str>,
    pub policy: Option<PolicyId>,
}

/// A page of a token's devices.
#[derive(Debug, Clone, PartialEq)]
pub struct DevicePage {
    pub devices: Vec<Device>,
    /// Where the next page starts; None when the devices ran out.
    pub next: Option<Serial>,
}

/// Up to `limit` listed devices of `token` after `after` that `filter`
/// keeps, reading at most [`READS_PER_PAGE`] devices.
pub async fn list(
    store: &Devices,
    token: &TokenId,
    filter: &DeviceFilter,
    mut after: Option<Serial>,
    limit: u32,
    now: DateTime<Utc>,
) -> Result<DevicePage, StoreError> {
    let mut devices = Vec::new();
    let mut read = 0;
    // Unfiltered, a page reads exactly what it shows; a state filter skips
    // devices, so it reads in larger queries (within the bound).
    let query = if filter.state.is_some() {
        FILTERED_QUERY
    } else {
        limit
    };
    loop {
        let (page, next) = match &filter.policy {
            None => store.list_devices(token, after.as_ref(), query).await?,
            Some(policy) => {
                let (serials, next) = store
                    .list_policy_serials(token, policy, after.as_ref(), query)
                    .await?;
                let found = store.get_devices(token, &serials).await?;
                let page = serials
                    .iter()
                    .filter_map(|s| found.get(s).cloned())
                    .collect();
                (page, next)
            }
        };
        read += page.len();
        for Stored { device, .. } in page {
            // The page's last device read is where the next one starts,
            // kept or not.
            after = Some(device.serial.clone());
            let wanted = device.is_listed(now)
                && filter
                    .state
                    .is_none_or(|s| s == device::shown_state(&device));
            if wanted {
                devices.push(device);
                if devices.len() as u32 >= limit {
                    break;
                }
            }
        }
        if devices.len() as u32 >= limit || read >= READS_PER_PAGE {
            // More may follow unless this read reached the end.
            let more = next.is_some() || devices.len() as u32 >= limit;
            return Ok(DevicePage {
                devices,
                next: after.filter(|_| more),
            });
        }
        match next {
            Some(n) => after = Some(n),
            None => {
                return Ok(DevicePage {
                    devices,
                    next: None,
                });
            }
        }
    }
}

/// A listed device of `token` (None: unknown, deleted, or expired).
pub async fn show(
    store: &Store,
    token: &TokenId,
    serial: &Serial,
    now: DateTime<Utc>,
) -> Result<Option<Device>, StoreError> {
    Ok(read_listed(&store.devices, token, serial, now)
        .await?
        .map(|stored| stored.device))
}

async fn read_listed(
    store: &Devices,
    token: &TokenId,
    serial: &Serial,
    now: DateTime<Utc>,
) -> Result<Option<Stored>, StoreError> {
    Ok(store
        .get_device(token, serial)
        .await?
        .filter(|stored| stored.device.is_listed(now)))
}

/// Why a device was not deleted.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error("no such device")]
    NotFound,
    /// A sync kept changing it between read and write.
    #[error("the device kept changing while it was being deleted")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Rounds of reading and deciding again when an import changed the device
/// between the read and the conditional write.
const DELETE_ROUNDS: usize = 5;

/// An administrator's delete of a listed device: a tombstone, written
/// conditionally on the revision read, with its policy's count (and the
/// token's) going down. Returns the device as it was.
pub async fn delete(
    store: &Store,
    events: &crate::announce::Announcer,
    account: &AccountId,
    token: &TokenId,
    serial: &Serial,
    now: impl Fn() -> DateTime<Utc>,
) -> Result<Device, DeleteError> {
    for _ in 0..DELETE_ROUNDS {
        let now = now();
        let stored = read_listed(&store.devices, token, serial, now)
            .await?
            .ok_or(DeleteError::NotFound)?;
        let tombstone =
            device::admin_delete(&stored.device, now).map_err(|_| DeleteError::NotFound)?;
        // The delete clears the policy: its count goes down in the same transaction.
        let written = store
            .policies
            .write_devices_counted(
                token,
                vec![CountedWrite {
                    write: DeviceWrite {
                        device: tombstone,
                        expected: Some(stored.revision),
                    },
                    from: stored.device.policy_id.clone(),
                }],
            )
            .await?;
        if written.conflicts.is_empty() {
            // Between run closes the count moves with each delete; it errs
            // high if this fails, and the next close recounts.
            store.runs.add_device_count(account, token, -1).await?;
            tracing::info!(token = %token, serial = %serial, "device deleted by an administrator");
            // After the delete is durable; if the bus refuses, the event
            // waits in the outbox for the token's next run's close.
            let deleted =
                adesync_events::Event::device_deleted(account, token, serial, "admin", now);
            let key = format!("deleted#{serial}#{}", now.timestamp_millis());
            events
                .publish_or_keep(token, &key, vec![deleted], now)
                .await;
            return Ok(stored.device);
        }
    }
    Err(DeleteError::Busy)
}
