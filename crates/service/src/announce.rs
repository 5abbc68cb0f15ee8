//! Announcing changes on the event bus, never losing one and never
//! announcing one that did not happen.
//!
//! The delivery guarantee is an **outbox in the runs table**
//! (`adesync_store::outbox`):
//!
//! 1. Before a batch's device writes, the importer records what they will
//!    announce: one compact line per changed device (serial, change, the
//!    Apple observation written). Unchanged devices write nothing, so an
//!    unchanged re-sync costs no outbox write and announces nothing.
//! 2. After the writes and the batch's marking, the events of the writes
//!    that landed go to the bus, and the outbox item is deleted once the
//!    bus accepted them all.
//! 3. A publish that fails (the bus down, throttled past the publisher's
//!    retries) leaves the item and the import goes on. So does a crash
//!    between the writes and the publish. Every run's close publishes what
//!    the token's outbox still holds: the event arrives later, at the
//!    latest with the token's next sync.
//! 4. An item is published from the stored devices, and only for a device
//!    whose stored observation is at least the one the line names: a
//!    write that never landed (conflict, crash before it) is not announced.
//!
//! Delivery is at least once; each event's id is stable (kind, token,
//! serial, Apple observation), so consumers drop repeats.

use std::collections::HashMap;
use std::sync::Arc;

use adesync_core::change::DeviceChange;
use adesync_core::device::{Device, Version};
use adesync_core::ids::{AccountId, RunId, Serial, TokenId};
use adesync_core::run::{ABANDONED_ERROR, RunStatus};
use adesync_events::{Event, Publisher};
use adesync_store::{Runs, Store, StoreError};
use chrono::{DateTime, Utc};

use crate::faults::{CrashPoint, Faults};

/// One device change an outbox item owes the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owed {
    pub serial: Serial,
    pub change: DeviceChange,
    pub version: Version,
}

impl Owed {
    fn encode(&self) -> String {
        let change = match self.change {
            DeviceChange::Added => "a",
            DeviceChange::Changed => "c",
            DeviceChange::Released {
                by_replacement: false,
            } => "r",
            DeviceChange::Released {
                by_replacement: true,
            } => "R",
        };
        format!("{} {change} {}", self.serial, self.version)
    }

    fn decode(line: &str) -> Option<Self> {
        let mut parts = line.split(' ');
        let serial = Serial::parse(parts.next()?).ok()?;
        let change = match parts.next()? {
            "a" => DeviceChange::Added,
            "c" => DeviceChange::Changed,
            "r" => DeviceChange::Released {
                by_replacement: false,
            },
            "R" => DeviceChange::Released {
                by_replacement: true,
            },
            _ => return None,
        };
        let version = parts.next()?.parse().ok()?;
        Some(Self {
            serial,
            change,
            version,
        })
    }
}

/// What an outbox item holds: device lines, or whole events (the run's
/// `sync.finished`, which no stored item can rebuild).
fn encode_devices(owed: &[Owed]) -> String {
    owed.iter().map(Owed::encode).collect::<Vec<_>>().join("\n")
}

/// The announcements of one operation, once its change is durable.
#[derive(Debug, Default)]
pub struct Pending {
    /// Outbox items to delete once `events` are on the bus.
    pub keys: Vec<String>,
    pub events: Vec<Event>,
}

impl Pending {
    pub fn extend(&mut self, other: Pending) {
        self.keys.extend(other.keys);
        self.events.extend(other.events);
    }
}

/// The event bus with its outbox; cheap to clone.
#[derive(Clone)]
pub struct Announcer {
    pub publisher: Publisher,
    pub store: Store,
    pub faults: Arc<Faults>,
}

impl Announcer {
    /// Whether events are published at all (a bus is configured).
    pub fn enabled(&self) -> bool {
        self.publisher.is_enabled()
    }

    /// Step 1: records, before the writes, what they will announce.
    /// Nothing to announce writes nothing.
    pub async fn owe(
        &self,
        token: &TokenId,
        key: &str,
        owed: &[Owed],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if !self.enabled() || owed.is_empty() {
            return Ok(());
        }
        self.store
            .runs
            .put_outbox(token, key, &encode_devices(owed), now)
            .await
    }

    /// Owes whole events (the run's `sync.finished`) before the change they
    /// announce is recorded.
    pub async fn owe_events(
        &self,
        token: &TokenId,
        key: &str,
        events: &[Event],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if !self.enabled() || events.is_empty() {
            return Ok(());
        }
        let body = serde_json::to_string(events).unwrap_or_default();
        self.store.runs.put_outbox(token, key, &body, now).await
    }

    /// Step 2: publishes what a durable change announces and clears its
    /// outbox items. A failure leaves them for the next close (step 3) and
    /// is only logged: the change is kept and the import goes on.
    pub async fn publish(&self, token: &TokenId, pending: Pending) {
        if !self.enabled() || (pending.events.is_empty() && pending.keys.is_empty()) {
            return;
        }
        if let Err(error) = self.put(&pending.events).await {
            tracing::warn!(%error, events = pending.events.len(), "events not published; they stay in the outbox until the run's close");
            return;
        }
        for key in &pending.keys {
            if let Err(error) = self.store.runs.delete_outbox(token, key).await {
                // Published again later: a repeat consumers drop by id.
                tracing::warn!(%error, "a published outbox item could not be deleted");
            }
        }
    }

    /// Publishes events that no stored item can rebuild (`sync.finished`,
    /// `device.deleted`); if the bus refuses, they go into the outbox whole.
    pub async fn publish_or_keep(
        &self,
        token: &TokenId,
        key: &str,
        events: Vec<Event>,
        now: DateTime<Utc>,
    ) {
        if !self.enabled() || events.is_empty() {
            return;
        }
        if let Err(error) = self.put(&events).await {
            tracing::warn!(%error, "events not published; kept in the outbox");
            let body = serde_json::to_string(&events).unwrap_or_default();
            if let Err(error) = self.store.runs.put_outbox(token, key, &body, now).await {
                tracing::error!(%error, "events neither published nor kept");
            }
        }
    }

    /// Records that the token's stored status is now `status` and, if that
    /// is a change, announces `token.status_changed` (once: the claim is a
    /// conditional write). Failures are logged: a status is never held up
    /// by its announcement.
    pub async fn status_changed(
        &self,
        account: &AccountId,
        token: &TokenId,
        status: &str,
        now: DateTime<Utc>,
    ) {
        if !self.enabled() {
            return;
        }
        match self
            .store
            .tokens
            .claim_status_change(account, token, status)
            .await
        {
            Ok(true) => {
                let event = Event::token_status_changed(account, token, status, now);
                let key = format!("status#{status}#{}", now.timestamp_millis());
                self.publish_or_keep(token, &key, vec![event], now).await;
            }
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "the token's status change was not announced"),
        }
    }

    /// Step 3: publishes what the token's outbox still holds, checked
    /// against the stored devices (step 4). Failures are logged; the
    /// items stay for the next close.
    pub async fn flush(&self, account: &AccountId, token: &TokenId, now: DateTime<Utc>) {
        if !self.enabled() {
            return;
        }
        if let Err(error) = self.try_flush(account, token, now).await {
            tracing::warn!(%error, "the outbox waits for the next close");
        }
    }

    async fn try_flush(
        &self,
        account: &AccountId,
        token: &TokenId,
        now: DateTime<Utc>,
    ) -> Result<(), anyhow::Error> {
        for item in self.store.runs.outbox(token).await? {
            let events = if item.body.starts_with('[') {
                serde_json::from_str(&item.body)?
            } else {
                let owed: Vec<Owed> = item.body.lines().filter_map(Owed::decode).collect();
                let serials: Vec<Serial> = owed.iter().map(|o| o.serial.clone()).collect();
                let stored = self.store.devices.get_devices(token, &serials).await?;
                landed(
                    account,
                    token,
                    &owed,
                    &stored.into_iter().map(|(s, d)| (s, d.device)).collect(),
                    now,
                )
            };
            self.put(&events).await?;
            self.store.runs.delete_outbox(token, &item.key).await?;
            tracing::info!(key = %item.key, events = events.len(), "owed events published");
        }
        Ok(())
    }

    async fn put(&self, events: &[Event]) -> Result<(), adesync_events::PublishError> {
        if self.faults.check(CrashPoint::BusRefuses).is_err() {
            return Err(adesync_events::PublishError::Request(
                "the bus refused (injected by a fault test)".into(),
            ));
        }
        self.publisher.publish(events).await
    }
}

/// Owes `sync.finished` (outcome `abandoned`) for `run`, which whoever
/// noticed its lapsed lease has just recorded abandoned (a status read, a
/// scheduled pass, the run that took the token over). It goes into the
/// token's outbox under the key a close would use, so it is published by
/// the token's next close, or at once by a caller that flushes. `listed`
/// and `released` are 0: the run never closed. Failures are logged: the
/// run's record is never held up by its announcement.
pub async fn owe_abandoned(
    runs: &Runs,
    account: &AccountId,
    token: &TokenId,
    run: &RunId,
    now: DateTime<Utc>,
) {
    let record = match runs.get_run(token, run).await {
        Ok(Some(record)) => record,
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(%error, %run, "the abandoned run's sync.finished is not announced");
            return;
        }
    };
    let event = Event::sync_finished(
        account,
        token,
        adesync_events::RunDetail {
            run_id: run.to_string(),
            kind: record.kind.as_str().to_owned(),
            outcome: RunStatus::Abandoned.as_str().to_owned(),
            fetched: record.fetched,
            imported: record.imported,
            listed: 0,
            released: 0,
            duration_ms: u64::try_from((now - record.started_at).num_milliseconds()).unwrap_or(0),
            error: record.error.or_else(|| Some(ABANDONED_ERROR.to_owned())),
        },
        now,
    );
    let body = serde_json::to_string(&[event]).unwrap_or_default();
    if let Err(error) = runs
        .put_outbox(token, &format!("{run}#finished"), &body, now)
        .await
    {
        tracing::warn!(%error, %run, "the abandoned run's sync.finished is not announced");
    }
}

/// The events of owed changes whose write landed: the stored device holds
/// that observation or a newer one (versions never go back).
pub fn landed(
    account: &AccountId,
    token: &TokenId,
    owed: &[Owed],
    stored: &HashMap<Serial, Device>,
    now: DateTime<Utc>,
) -> Vec<Event> {
    owed.iter()
        .filter_map(|o| {
            let device = stored.get(&o.serial).filter(|d| d.version >= o.version)?;
            // The id names the observation owed, whatever came after.
            let announced = Device {
                version: o.version,
                ..device.clone()
            };
            Some(Event::device(account, token, &announced, o.change, now))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use adesync_core::device::{AppleAttributes, DeviceState, Management};

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    fn device(serial: &str, version: Version) -> Device {
        Device {
            serial: Serial::parse(serial).unwrap(),
            state: DeviceState::Active,
            attributes: AppleAttributes::default(),
            version,
            attributes_version: None,
            removed_at: None,
            released_by_replacement: false,
            deletes_at: None,
            deleted_at: None,
            policy_id: None,
            management: Management::default(),
            first_seen_at: at(0),
        }
    }

    #[test]
    fn outbox_lines_read_back_as_written() {
        let owed = vec![
            Owed {
                serial: Serial::parse("C02A").unwrap(),
                change: DeviceChange::Added,
                version: Version::for_snapshot(at(0), 3),
            },
            Owed {
                serial: Serial::parse("C02B").unwrap(),
                change: DeviceChange::Released {
                    by_replacement: true,
                },
                version: Version::for_change(at(5), 9),
            },
        ];
        let body = encode_devices(&owed);
        let back: Vec<Owed> = body.lines().filter_map(Owed::decode).collect();
        assert_eq!(back, owed);
    }

    #[test]
    fn only_writes_that_landed_are_announced_with_the_id_of_their_first_announcement() {
        let account = AccountId::parse("acct").unwrap();
        let token = TokenId::parse("tok").unwrap();
        let v1 = Version::for_snapshot(at(0), 1);
        let v2 = Version::for_snapshot(at(60), 1);
        let owed = |serial: &str, version| Owed {
            serial: Serial::parse(serial).unwrap(),
            change: DeviceChange::Added,
            version,
        };
        let stored: HashMap<Serial, Device> = [
            // Landed as owed.
            device("LANDED", v1),
            // A newer observation landed since: the owed one did too.
            device("NEWER", v2),
            // Still older than owed: the write never happened.
            device("OLDER", v1),
        ]
        .into_iter()
        .map(|d| (d.serial.clone(), d))
        .collect();
        let events = landed(
            &account,
            &token,
            &[
                owed("LANDED", v1),
                owed("NEWER", v1),
                owed("OLDER", v2),
                owed("ABSENT", v1),
            ],
            &stored,
            at(100),
        );
        let serials: Vec<&str> = events
            .iter()
            .map(|e| e.device.as_ref().unwrap().serial.as_str())
            .collect();
        assert_eq!(serials, ["LANDED", "NEWER"]);
        // The same id as if it had been published right after the write.
        let first = Event::device(
            &account,
            &token,
            &device("NEWER", v1),
            DeviceChange::Added,
            at(1),
        );
        assert_eq!(events[1].id, first.id);
    }
}
