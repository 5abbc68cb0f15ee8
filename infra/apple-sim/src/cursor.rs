//! Opaque fetch/sync cursors.
//!
//! A cursor is `base64url(payload ‖ HMAC-SHA256(payload)[..16])`. The MAC key is random per
//! simulator process, so a tampered cursor, one made up by a client, or one from an earlier run
//! answers `INVALID_CURSOR`, like a cursor Apple does not recognise. All positions live in the
//! cursor itself; only fetch snapshots are kept server-side.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const MAC_LEN: usize = 16;
/// Apple documents cursors of up to 1000 characters (ADS); payloads here stay far below.
pub const MAX_CURSOR_LEN: usize = 1000;

/// Where a client is in the device stream of one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// Mid-way through a full fetch: snapshot `fetch_id`, after device key `after`.
    Fetch {
        fetch_id: u64,
        after: u64,
        /// Event sequence number the snapshot was taken at; sync continues from here.
        seq: u64,
    },
    /// The fetch is complete (or this is a sync cursor): next event to deliver is `seq`.
    Sync { seq: u64 },
}

impl Position {
    /// Event sequence number from which a sync continues.
    pub fn seq(&self) -> u64 {
        match self {
            Position::Fetch { seq, .. } | Position::Sync { seq } => *seq,
        }
    }
}

/// The decoded content of a cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub server_uuid: String,
    pub position: Position,
    pub issued_at: DateTime<Utc>,
}

/// Issues and checks cursors with one process-wide key.
pub struct CursorCodec {
    key: [u8; 32],
}

impl CursorCodec {
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail for a 32-byte key.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
    }

    pub fn encode(&self, cursor: &Cursor) -> String {
        let payload = match cursor.position {
            Position::Fetch {
                fetch_id,
                after,
                seq,
            } => format!(
                "1:F:{}:{}:{fetch_id}:{after}:{seq}",
                cursor.server_uuid,
                cursor.issued_at.timestamp()
            ),
            Position::Sync { seq } => format!(
                "1:S:{}:{}:{seq}",
                cursor.server_uuid,
                cursor.issued_at.timestamp()
            ),
        };
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let tag = mac.finalize().into_bytes();
        let mut bytes = payload.into_bytes();
        bytes.extend_from_slice(&tag[..MAC_LEN]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// `None` for anything not issued by this process unchanged.
    pub fn decode(&self, text: &str) -> Option<Cursor> {
        if text.len() > MAX_CURSOR_LEN {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        let split = bytes.len().checked_sub(MAC_LEN)?;
        let (payload, tag) = bytes.split_at(split);
        let mut mac = self.mac();
        mac.update(payload);
        mac.verify_truncated_left(tag).ok()?;
        let payload = std::str::from_utf8(payload).ok()?;
        let parts: Vec<&str> = payload.split(':').collect();
        let number = |i: usize| parts.get(i).and_then(|p| p.parse::<u64>().ok());
        let (server_uuid, issued) = (parts.get(2)?, parts.get(3)?.parse::<i64>().ok()?);
        let position = match (parts.first()?, parts.get(1)?, parts.len()) {
            (&"1", &"F", 7) => Position::Fetch {
                fetch_id: number(4)?,
                after: number(5)?,
                seq: number(6)?,
            },
            (&"1", &"S", 5) => Position::Sync { seq: number(4)? },
            _ => return None,
        };
        Some(Cursor {
            server_uuid: (*server_uuid).to_owned(),
            position,
            issued_at: DateTime::from_timestamp(issued, 0)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec() -> CursorCodec {
        CursorCodec::new([9; 32])
    }

    fn cursors() -> Vec<Cursor> {
        let issued_at = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        vec![
            Cursor {
                server_uuid: "ABC".into(),
                position: Position::Fetch {
                    fetch_id: 3,
                    after: 1000,
                    seq: 77,
                },
                issued_at,
            },
            Cursor {
                server_uuid: "ABC".into(),
                position: Position::Sync { seq: 12 },
                issued_at,
            },
        ]
    }

    #[test]
    fn round_trips() {
        for cursor in cursors() {
            let text = codec().encode(&cursor);
            assert!(text.len() < MAX_CURSOR_LEN);
            assert_eq!(codec().decode(&text), Some(cursor));
        }
    }

    #[test]
    fn rejects_tampering_and_foreign_keys() {
        let text = codec().encode(&cursors()[1]);
        assert_eq!(CursorCodec::new([1; 32]).decode(&text), None);
        let mut bytes = URL_SAFE_NO_PAD.decode(&text).unwrap_or_default();
        bytes[6] ^= 1;
        assert_eq!(codec().decode(&URL_SAFE_NO_PAD.encode(bytes)), None);
        assert_eq!(codec().decode("garbage!"), None);
        assert_eq!(codec().decode(""), None);
    }
}
