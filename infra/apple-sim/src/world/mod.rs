//! Everything the simulator knows, behind one lock: MDM servers with their credentials,
//! devices, event logs, profiles and sessions, plus the knobs tests turn.
//!
//! # Layout
//! - `mod.rs`: the [`World`] and [`Server`] types, server creation.
//! - `auth.rs`: `/session` (OAuth check, nonces) and session tokens (expiry, rotation).
//! - `stream.rs`: fetch snapshots and the sync event log, i.e. cursors and pages.
//! - `profiles.rs`: define/get profiles, assign/remove, device details, disown.
//! - `admin.rs`: control operations (add/patch/release/reassign devices, terms, faults).
//!
//! Device storage is what makes fetch O(page): each server keeps its devices in a persistent
//! ordered map keyed by arrival order, so a fetch snapshot is an O(1) clone and each page an
//! O(log n + page) range read. The sync log is an append-only vector indexed by sequence
//! number, so a sync page is a slice.

mod admin;
mod auth;
mod profiles;
mod stream;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use imbl::OrdMap;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use secrecy::SecretString;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

pub use admin::{AssignOutcome, Fault, FaultSpec, OutcomeStatus};
pub use auth::Authed;
pub use stream::Page;

use crate::clock::{ClockError, SimClock};
use crate::config::{Behaviour, SimConfig};
use crate::cursor::CursorCodec;
use crate::device::{Device, OpType};

/// `YYYY-MM-DDTHH:MM:SSZ`, the form of every timestamp in Apple's samples.
pub fn format_time(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Upper-case hex of `bytes` random bytes, the shape of Apple's server and profile UUIDs.
fn random_upper_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill(buf.as_mut_slice());
    hex::encode_upper(buf)
}

/// The four OAuth values of a server token and their expiry.
pub struct Credentials {
    pub consumer_key: String,
    pub consumer_secret: SecretString,
    pub access_token: SecretString,
    pub access_secret: SecretString,
    pub access_token_expiry: DateTime<Utc>,
}

impl Credentials {
    fn random_value(prefix: &str) -> String {
        let mut buf = [0u8; 16];
        rand::rng().fill(&mut buf);
        format!("{prefix}{}", hex::encode(buf))
    }

    /// Fresh credentials valid for a year, as a token download in Apple Business produces.
    pub fn generate(now: DateTime<Utc>) -> Self {
        Self {
            consumer_key: Self::random_value("CK_"),
            consumer_secret: Self::random_value("CS_").into(),
            access_token: Self::random_value("AT_").into(),
            access_secret: Self::random_value("AS_").into(),
            // Whole seconds, like the expiry in Apple's token files.
            access_token_expiry: (now + TimeDelta::days(365)).trunc_subsecs(0),
        }
    }

    /// A renewal: same consumer, new access token and secret.
    pub fn renewed(&self, now: DateTime<Utc>) -> Self {
        let fresh = Self::generate(now);
        Self {
            consumer_key: self.consumer_key.clone(),
            consumer_secret: self.consumer_secret.clone(),
            ..fresh
        }
    }
}

/// The organisation details `/account` reports.
#[derive(Debug, Clone)]
pub struct Org {
    pub name: String,
    pub admin_id: String,
    pub id: String,
    pub id_hash: String,
}

/// One event in a server's sync log.
pub struct Event {
    pub op: OpType,
    pub op_date: String,
    pub device: Arc<Device>,
    /// A `deleted` event for a device another one replaced.
    pub released_by_replacement: bool,
}

/// One MDM server as Apple Business holds it.
pub struct Server {
    pub uuid: String,
    pub name: String,
    pub org: Org,
    pub credentials: Credentials,
    /// Bumped on every token re-download; sessions of older generations answer 403.
    pub generation: u32,
    /// The certificate the last token was encrypted to, reused by renewals without one.
    pub certificate_pem: String,
    pub terms_signed: bool,
    /// Current devices keyed by arrival order (fetch order).
    devices: OrdMap<u64, Arc<Device>>,
    keys: HashMap<String, u64>,
    next_key: u64,
    events: Vec<Event>,
    fetches: BTreeMap<u64, stream::Snapshot>,
    next_fetch: u64,
    profiles: HashMap<String, Map<String, Value>>,
    outcomes: HashMap<String, AssignOutcome>,
}

impl Server {
    pub fn device(&self, serial: &str) -> Option<&Arc<Device>> {
        self.keys.get(serial).and_then(|key| self.devices.get(key))
    }

    pub fn devices(&self) -> impl Iterator<Item = &Arc<Device>> {
        self.devices.values()
    }

    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// Adds a device at the end of the fetch order and logs `op`.
    fn insert_device(&mut self, device: Device, op: OpType, op_date: String) {
        let device = Arc::new(device);
        self.next_key += 1;
        self.keys
            .insert(device.serial_number.clone(), self.next_key);
        self.devices.insert(self.next_key, Arc::clone(&device));
        self.events.push(Event {
            op,
            op_date,
            device,
            released_by_replacement: false,
        });
    }

    /// Replaces a device in place (same fetch position) and logs `modified` at `op_date`.
    fn replace_device(&mut self, device: Device, op_date: String) -> bool {
        let Some(&key) = self.keys.get(&device.serial_number) else {
            return false;
        };
        let device = Arc::new(device);
        self.devices.insert(key, Arc::clone(&device));
        self.events.push(Event {
            op: OpType::Modified,
            op_date,
            device,
            released_by_replacement: false,
        });
        true
    }

    /// Removes a device, returning its last state.
    fn remove_device(&mut self, serial: &str) -> Option<Arc<Device>> {
        let key = self.keys.remove(serial)?;
        self.outcomes.remove(serial);
        self.devices.remove(&key)
    }
}

/// The whole simulated service.
pub struct World {
    pub behaviour: Behaviour,
    clock: SimClock,
    /// Seeded: drives generated devices only, so runs are reproducible.
    rng: StdRng,
    pub default_device_count: usize,
    cursors: CursorCodec,
    servers: HashMap<String, Server>,
    by_consumer_key: HashMap<String, String>,
    /// Which server each serial is on (a serial is on at most one server at a time).
    serial_owner: HashMap<String, String>,
    sessions: HashMap<[u8; 32], auth::Session>,
    /// Seen nonces per consumer key with their timestamps, for replay protection.
    nonces: HashMap<String, HashMap<String, i64>>,
    faults: Vec<Fault>,
    next_fault_id: u64,
    /// Pacing of fetch/sync like Apple's ~3,000 devices/minute; 0 = unpaced.
    pub devices_per_minute: u32,
    requests_by_path: BTreeMap<String, u64>,
    requests_by_method: BTreeMap<String, u64>,
}

impl World {
    pub fn new(config: &SimConfig) -> Result<Self, ClockError> {
        let mut key = [0u8; 32];
        rand::rng().fill(&mut key);
        Ok(Self {
            behaviour: config.behaviour.clone(),
            clock: SimClock::new(config.clock_speed)?,
            rng: StdRng::seed_from_u64(config.seed),
            default_device_count: config.default_device_count,
            cursors: CursorCodec::new(key),
            servers: HashMap::new(),
            by_consumer_key: HashMap::new(),
            serial_owner: HashMap::new(),
            sessions: HashMap::new(),
            nonces: HashMap::new(),
            faults: Vec::new(),
            next_fault_id: 0,
            devices_per_minute: 0,
            requests_by_path: BTreeMap::new(),
            requests_by_method: BTreeMap::new(),
        })
    }

    /// The simulator clock's current time.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn clock(&self) -> &SimClock {
        &self.clock
    }

    /// Advances the clock and/or changes its speed, both at the same real instant; a refused
    /// change leaves the clock as it was.
    pub fn adjust_clock(
        &mut self,
        advance_seconds: Option<i64>,
        speed: Option<f64>,
    ) -> Result<(), ClockError> {
        let real = Instant::now();
        let mut clock = self.clock.clone();
        if let Some(speed) = speed {
            clock.set_speed_at(real, speed)?;
        }
        if let Some(seconds) = advance_seconds {
            clock.advance_at(real, seconds)?;
        }
        self.clock = clock;
        Ok(())
    }

    pub fn server(&self, uuid: &str) -> Option<&Server> {
        self.servers.get(uuid)
    }

    pub fn servers(&self) -> impl Iterator<Item = &Server> {
        self.servers.values()
    }

    /// Registers a new MDM server with already-generated credentials.
    pub fn create_server(
        &mut self,
        name: String,
        org_name: Option<String>,
        admin_id: Option<String>,
        credentials: Credentials,
        certificate_pem: String,
    ) -> String {
        let uuid = random_upper_hex(16);
        let org_id = self.rng.random_range(1_000_000..10_000_000u32).to_string();
        let org = Org {
            name: org_name.unwrap_or_else(|| "Simulated Org".to_owned()),
            admin_id: admin_id.unwrap_or_else(|| "ade-admin@example.com".to_owned()),
            id_hash: hex::encode(Sha256::digest(org_id.as_bytes()))[..40].to_owned(),
            id: org_id,
        };
        self.by_consumer_key
            .insert(credentials.consumer_key.clone(), uuid.clone());
        self.servers.insert(
            uuid.clone(),
            Server {
                uuid: uuid.clone(),
                name,
                org,
                credentials,
                generation: 0,
                certificate_pem,
                terms_signed: true,
                devices: OrdMap::new(),
                keys: HashMap::new(),
                next_key: 0,
                events: Vec::new(),
                fetches: BTreeMap::new(),
                next_fetch: 0,
                profiles: HashMap::new(),
                outcomes: HashMap::new(),
            },
        );
        uuid
    }

    /// A token re-download: the old access token and every session made with it stop working.
    /// Returns the new credentials' generation.
    pub fn renew_token(
        &mut self,
        uuid: &str,
        credentials: Credentials,
        certificate_pem: String,
    ) -> Option<u32> {
        let server = self.servers.get_mut(uuid)?;
        self.by_consumer_key
            .remove(&server.credentials.consumer_key);
        self.by_consumer_key
            .insert(credentials.consumer_key.clone(), uuid.to_owned());
        server.credentials = credentials;
        server.certificate_pem = certificate_pem;
        server.generation += 1;
        Some(server.generation)
    }

    /// Counts a request for `GET /_sim/stats`.
    pub fn count_request(&mut self, method: &str, path: &str) {
        *self.requests_by_path.entry(path.to_owned()).or_default() += 1;
        *self
            .requests_by_method
            .entry(format!("{method} {path}"))
            .or_default() += 1;
    }

    /// Request counts by path and by `METHOD path`.
    pub fn stats(&self) -> (&BTreeMap<String, u64>, &BTreeMap<String, u64>) {
        (&self.requests_by_path, &self.requests_by_method)
    }

    pub fn reset_stats(&mut self) {
        self.requests_by_path.clear();
        self.requests_by_method.clear();
    }

    /// The fetch/sync page size for a requested `limit`: default when absent or not positive,
    /// clamped to the advertised maximum.
    fn page_size(&self, requested: Option<i64>) -> usize {
        let maximum = self.behaviour.limit_maximum.max(1);
        let size = match requested {
            Some(n) if n > 0 => u32::try_from(n).unwrap_or(u32::MAX),
            _ => self.behaviour.limit_default,
        };
        size.clamp(1, maximum) as usize
    }
}
