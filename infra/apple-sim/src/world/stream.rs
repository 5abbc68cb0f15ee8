//! Fetch (`/server/devices`) and sync (`/devices/sync`) pages and their cursors.

use std::ops::Bound;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use imbl::OrdMap;

use super::{World, format_time};
use crate::cursor::{Cursor, Position};
use crate::device::{Device, PageEntry};
use crate::error::AppleError;

/// How many finished or abandoned fetch snapshots a server keeps (they share structure with
/// the live map, so each costs only what changed since).
const SNAPSHOTS_KEPT: usize = 32;

/// The devices assigned to a server when a fetch started.
pub(super) struct Snapshot {
    devices: OrdMap<u64, Arc<Device>>,
    /// Length of the event log at that moment: the sync that follows starts here.
    seq: u64,
    taken_at: DateTime<Utc>,
}

/// One fetch or sync answer, built under the lock and serialised outside it.
pub struct Page {
    pub entries: Vec<PageEntry>,
    pub cursor: String,
    pub more_to_follow: bool,
    pub fetched_until: String,
}

impl World {
    fn decode_cursor(&self, server_uuid: &str, text: &str) -> Result<Cursor, AppleError> {
        let cursor = self
            .cursors
            .decode(text)
            .filter(|c| c.server_uuid == server_uuid)
            .ok_or(AppleError::bad_request("INVALID_CURSOR"))?;
        let max_age = TimeDelta::seconds(
            i64::try_from(self.behaviour.cursor_max_age_seconds).unwrap_or(i64::MAX),
        );
        if self.now() - cursor.issued_at > max_age {
            return Err(AppleError::bad_request("EXPIRED_CURSOR"));
        }
        Ok(cursor)
    }

    fn encode_cursor(&self, server_uuid: &str, position: Position) -> String {
        self.cursors.encode(&Cursor {
            server_uuid: server_uuid.to_owned(),
            position,
            issued_at: self.now(),
        })
    }

    /// `POST /server/devices`: the devices assigned when the fetch started, page by page.
    pub fn fetch(
        &mut self,
        server_uuid: &str,
        cursor: Option<&str>,
        limit: Option<i64>,
    ) -> Result<Page, AppleError> {
        let size = self.page_size(limit);
        let now = self.now();
        let (fetch_id, after) = match cursor.filter(|c| !c.is_empty()) {
            None => {
                let server = self
                    .servers
                    .get_mut(server_uuid)
                    .ok_or_else(AppleError::unauthorized)?;
                let fetch_id = server.next_fetch;
                server.next_fetch += 1;
                server.fetches.insert(
                    fetch_id,
                    Snapshot {
                        devices: server.devices.clone(),
                        seq: server.events.len() as u64,
                        taken_at: now,
                    },
                );
                while server.fetches.len() > SNAPSHOTS_KEPT {
                    server.fetches.pop_first();
                }
                (fetch_id, 0)
            }
            Some(text) => match self.decode_cursor(server_uuid, text)?.position {
                Position::Sync { .. } => return Err(AppleError::bad_request("EXHAUSTED_CURSOR")),
                Position::Fetch {
                    fetch_id, after, ..
                } => (fetch_id, after),
            },
        };
        let server = self
            .servers
            .get(server_uuid)
            .ok_or_else(AppleError::unauthorized)?;
        // A snapshot evicted since is as unknown to us as a made-up cursor.
        let snapshot = server
            .fetches
            .get(&fetch_id)
            .ok_or(AppleError::bad_request("INVALID_CURSOR"))?;
        let mut range = snapshot
            .devices
            .range((Bound::Excluded(after), Bound::Unbounded));
        let mut entries = Vec::with_capacity(size.min(snapshot.devices.len()));
        let mut last_key = after;
        for (key, device) in range.by_ref().take(size) {
            last_key = *key;
            entries.push(PageEntry {
                device: Arc::clone(device),
                op: None,
                released_by_replacement: false,
            });
        }
        let more_to_follow = range.next().is_some();
        let position = if more_to_follow {
            Position::Fetch {
                fetch_id,
                after: last_key,
                seq: snapshot.seq,
            }
        } else {
            Position::Sync { seq: snapshot.seq }
        };
        let fetched_until = format_time(snapshot.taken_at);
        Ok(Page {
            entries,
            cursor: self.encode_cursor(server_uuid, position),
            more_to_follow,
            fetched_until,
        })
    }

    /// `POST /devices/sync`: the events since the cursor, oldest first.
    pub fn sync(
        &mut self,
        server_uuid: &str,
        cursor: Option<&str>,
        limit: Option<i64>,
    ) -> Result<Page, AppleError> {
        let size = self.page_size(limit);
        let text = cursor
            .filter(|c| !c.is_empty())
            .ok_or(AppleError::bad_request("CURSOR_REQUIRED"))?;
        let start = self.decode_cursor(server_uuid, text)?.position.seq();
        let server = self
            .servers
            .get(server_uuid)
            .ok_or_else(AppleError::unauthorized)?;
        let start = usize::try_from(start)
            .ok()
            .filter(|s| *s <= server.events.len())
            .ok_or(AppleError::bad_request("INVALID_CURSOR"))?;
        let end = start.saturating_add(size).min(server.events.len());
        let duplicate_every = self.behaviour.duplicate_every.filter(|n| *n > 0);
        let mut entries = Vec::with_capacity(end - start);
        for (seq, event) in server.events[start..end].iter().enumerate() {
            let entry = || PageEntry {
                device: Arc::clone(&event.device),
                op: Some((event.op, event.op_date.clone())),
                released_by_replacement: event.released_by_replacement,
            };
            entries.push(entry());
            if duplicate_every.is_some_and(|n| (start + seq + 1) % n as usize == 0) {
                entries.push(entry());
            }
        }
        let more_to_follow = end < server.events.len();
        let fetched_until = match server.events[start..end].last() {
            Some(event) if more_to_follow => event.op_date.clone(),
            _ => format_time(self.now()),
        };
        Ok(Page {
            entries,
            cursor: self.encode_cursor(server_uuid, Position::Sync { seq: end as u64 }),
            more_to_follow,
            fetched_until,
        })
    }
}
