//! Control operations behind `/_sim/*`: device changes made "in Apple Business", terms,
//! injected faults and per-device assignment outcomes.

use std::collections::HashSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{World, format_time};
use crate::device::{self, Device, Family, OpType, PatchError};
use crate::error::ControlError;

/// Largest `count` one add request may ask for, to keep a typo from eating the machine.
const MAX_GENERATED_PER_REQUEST: usize = 2_000_000;

/// What a forced assignment answers for one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutcomeStatus {
    Failed,
    Throttled,
    NotAccessible,
}

/// A forced assignment answer for the next `remaining` assignments of one device.
#[derive(Debug, Clone, Serialize)]
pub struct AssignOutcome {
    pub status: OutcomeStatus,
    pub retry_after_seconds: u64,
    pub remaining: u32,
}

/// `POST /_sim/faults` body.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Exact request path (`/server/devices`) or `*` for every Apple route.
    pub route: String,
    /// Status to answer; 0 or absent lets the request through (after `delay_ms`).
    #[serde(default)]
    pub status: u16,
    #[serde(default)]
    pub body: String,
    /// How many requests this fault answers; absent = 1.
    pub times: Option<u32>,
    /// `Retry-After` header value (seconds or an HTTP date).
    pub retry_after: Option<Value>,
    pub delay_ms: Option<u64>,
    /// Only requests of this server (by session or consumer key) are affected.
    pub server_uuid: Option<String>,
    /// Matching requests let through before the fault answers: `1` on
    /// `/server/devices` hits the first request that carries a cursor of the
    /// walk (the middle of a snapshot).
    #[serde(default)]
    pub skip: u32,
    /// On `/server/devices` or `/devices/sync`: answer 200 with the cursor
    /// the request sent, `more_to_follow: true` and no devices (Apple's
    /// echoed cursor, micromdm#1016). `status` and `body` are ignored.
    #[serde(default)]
    pub echo_cursor: bool,
}

/// An armed fault.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    pub id: u64,
    #[serde(flatten)]
    pub spec: FaultSpec,
    pub remaining: u32,
    /// Matching requests still to let through (from `skip`).
    pub to_skip: u32,
}

/// What an armed fault does to the request it matched.
#[derive(Debug, Clone)]
pub struct FaultHit {
    pub status: u16,
    pub body: String,
    pub retry_after: Option<String>,
    pub delay_ms: u64,
    pub echo_cursor: bool,
}

fn not_found(what: &str) -> ControlError {
    ControlError::NotFound(format!("{what} not found"))
}

impl World {
    fn require_server(&self, uuid: &str) -> Result<(), ControlError> {
        if self.servers.contains_key(uuid) {
            Ok(())
        } else {
            Err(not_found("server"))
        }
    }

    /// Adds `count` generated devices assigned now, each an `added` event.
    pub fn add_generated_devices(
        &mut self,
        server_uuid: &str,
        count: usize,
        family: Option<Family>,
    ) -> Result<Vec<String>, ControlError> {
        if count > MAX_GENERATED_PER_REQUEST {
            return Err(ControlError::BadRequest(format!(
                "count is limited to {MAX_GENERATED_PER_REQUEST} per request"
            )));
        }
        let now = format_time(self.now());
        let server = self
            .servers
            .get_mut(server_uuid)
            .ok_or_else(|| not_found("server"))?;
        let admin = server.org.admin_id.clone();
        let mut serials = Vec::with_capacity(count);
        for _ in 0..count {
            let serial = loop {
                let candidate = device::random_serial(&mut self.rng);
                if !self.serial_owner.contains_key(&candidate) {
                    break candidate;
                }
            };
            let device = device::generate(&mut self.rng, serial.clone(), family, &admin, &now);
            self.serial_owner
                .insert(serial.clone(), server_uuid.to_owned());
            server.insert_device(device, OpType::Added, now.clone());
            serials.push(serial);
        }
        Ok(serials)
    }

    /// Adds exact device records (replaying Apple's samples), each an `added` event dated
    /// with its `device_assigned_date` when it has one.
    pub fn add_device_records(
        &mut self,
        server_uuid: &str,
        records: Vec<Value>,
    ) -> Result<Vec<String>, ControlError> {
        self.require_server(server_uuid)?;
        let mut devices = Vec::with_capacity(records.len());
        let mut seen = HashSet::new();
        for record in records {
            let device = Device::from_json(record)
                .map_err(|e| ControlError::BadRequest(format!("invalid device record: {e}")))?;
            if self.serial_owner.contains_key(&device.serial_number)
                || !seen.insert(device.serial_number.clone())
            {
                return Err(ControlError::Conflict(format!(
                    "serial {} is already assigned",
                    device.serial_number
                )));
            }
            devices.push(device);
        }
        let now = format_time(self.now());
        let server = self
            .servers
            .get_mut(server_uuid)
            .ok_or_else(|| not_found("server"))?;
        let mut serials = Vec::with_capacity(devices.len());
        for device in devices {
            let op_date = device
                .device_assigned_date
                .clone()
                .unwrap_or_else(|| now.clone());
            self.serial_owner
                .insert(device.serial_number.clone(), server_uuid.to_owned());
            serials.push(device.serial_number.clone());
            server.insert_device(device, OpType::Added, op_date);
        }
        Ok(serials)
    }

    /// Changes attributes of a device (a `modified` event).
    pub fn patch_device(
        &mut self,
        server_uuid: &str,
        serial: &str,
        patch: &Map<String, Value>,
    ) -> Result<Arc<Device>, ControlError> {
        let now = format_time(self.now());
        let server = self
            .servers
            .get_mut(server_uuid)
            .ok_or_else(|| not_found("server"))?;
        let device = server.device(serial).ok_or_else(|| not_found("device"))?;
        let updated = device.patched(patch).map_err(|e| match e {
            PatchError::SerialChange | PatchError::Invalid => {
                ControlError::BadRequest(e.to_string())
            }
        })?;
        server.replace_device(updated, now);
        server
            .device(serial)
            .cloned()
            .ok_or_else(|| not_found("device"))
    }

    /// Releases a device from the organisation. Apple sends no event for this, except when
    /// the device was released because another replaced it: then the sync says `deleted`
    /// with `released_by_replacement`.
    pub fn release_device(
        &mut self,
        server_uuid: &str,
        serial: &str,
        by_replacement: bool,
    ) -> Result<(), ControlError> {
        let now = format_time(self.now());
        let server = self
            .servers
            .get_mut(server_uuid)
            .ok_or_else(|| not_found("server"))?;
        let old = server
            .remove_device(serial)
            .ok_or_else(|| not_found("device"))?;
        if by_replacement {
            server.events.push(super::Event {
                op: OpType::Deleted,
                op_date: now,
                device: old,
                released_by_replacement: true,
            });
        }
        self.serial_owner.remove(serial);
        Ok(())
    }

    /// Moves a device to another server: `deleted` on the old one, `target_op` (normally
    /// `added`; Apple sometimes says `modified`) on the new one. Reassigning to the same
    /// server drops its profile: `modified` with `profile_status: removed`.
    pub fn reassign_device(
        &mut self,
        server_uuid: &str,
        serial: &str,
        to_server_uuid: Option<&str>,
        target_op: Option<OpType>,
    ) -> Result<Arc<Device>, ControlError> {
        let now = format_time(self.now());
        let target = to_server_uuid.unwrap_or(server_uuid).to_owned();
        self.require_server(server_uuid)?;
        let target_admin = self
            .servers
            .get(&target)
            .ok_or_else(|| not_found("target server"))?
            .org
            .admin_id
            .clone();
        let source = self
            .servers
            .get_mut(server_uuid)
            .ok_or_else(|| not_found("server"))?;
        let device = source.device(serial).ok_or_else(|| not_found("device"))?;
        let mut moved = Device::clone(device);
        moved.device_assigned_by = Some(target_admin);
        moved.device_assigned_date = Some(now.clone());
        if target == server_uuid {
            moved.profile_status = Some("removed".to_owned());
            source.replace_device(moved, now);
            return source
                .device(serial)
                .cloned()
                .ok_or_else(|| not_found("device"));
        }
        let old = source
            .remove_device(serial)
            .ok_or_else(|| not_found("device"))?;
        source.events.push(super::Event {
            op: OpType::Deleted,
            op_date: now.clone(),
            device: old,
            released_by_replacement: false,
        });
        moved.profile_status = Some("empty".to_owned());
        moved.profile_uuid = None;
        moved.profile_assign_time = None;
        moved.profile_push_time = None;
        let destination = self
            .servers
            .get_mut(&target)
            .ok_or_else(|| not_found("target server"))?;
        destination.insert_device(moved, target_op.unwrap_or(OpType::Added), now);
        self.serial_owner.insert(serial.to_owned(), target.clone());
        destination
            .device(serial)
            .cloned()
            .ok_or_else(|| not_found("device"))
    }

    /// Accepting or withdrawing the latest Apple Business terms for a server's organisation.
    pub fn set_terms(&mut self, server_uuid: &str, signed: bool) -> Result<(), ControlError> {
        self.servers
            .get_mut(server_uuid)
            .ok_or_else(|| not_found("server"))?
            .terms_signed = signed;
        Ok(())
    }

    /// Forces the next assignment answers for one device.
    pub fn set_assign_outcome(
        &mut self,
        server_uuid: &str,
        serial: &str,
        outcome: Option<AssignOutcome>,
    ) -> Result<(), ControlError> {
        let server = self
            .servers
            .get_mut(server_uuid)
            .ok_or_else(|| not_found("server"))?;
        server.device(serial).ok_or_else(|| not_found("device"))?;
        match outcome {
            Some(outcome) if outcome.remaining > 0 => {
                server.outcomes.insert(serial.to_owned(), outcome);
            }
            _ => {
                server.outcomes.remove(serial);
            }
        }
        Ok(())
    }

    pub fn add_fault(&mut self, spec: FaultSpec) -> Result<u64, ControlError> {
        if spec.status != 0 && !(100..=599).contains(&spec.status) {
            return Err(ControlError::BadRequest(
                "status must be an HTTP status or 0".into(),
            ));
        }
        if spec.route != "*" && !spec.route.starts_with('/') {
            return Err(ControlError::BadRequest(
                "route must be an exact path such as /server/devices, or *".into(),
            ));
        }
        if let Some(retry_after) = &spec.retry_after
            && !(retry_after.is_string() || retry_after.is_u64())
        {
            return Err(ControlError::BadRequest(
                "retry_after must be seconds or an HTTP date".into(),
            ));
        }
        if spec.echo_cursor && !matches!(spec.route.as_str(), "/server/devices" | "/devices/sync") {
            return Err(ControlError::BadRequest(
                "echo_cursor applies to /server/devices or /devices/sync only".into(),
            ));
        }
        self.next_fault_id += 1;
        let remaining = spec.times.unwrap_or(1);
        let to_skip = spec.skip;
        self.faults.push(Fault {
            id: self.next_fault_id,
            spec,
            remaining,
            to_skip,
        });
        Ok(self.next_fault_id)
    }

    pub fn clear_faults(&mut self) {
        self.faults.clear();
    }

    pub fn faults(&self) -> &[Fault] {
        &self.faults
    }

    /// Consumes one use of the first armed fault matching this request.
    pub fn take_fault(&mut self, path: &str, server_uuid: Option<&str>) -> Option<FaultHit> {
        let index = self.faults.iter().position(|f| {
            f.remaining > 0
                && (f.spec.route == "*" || f.spec.route == path)
                && f.spec
                    .server_uuid
                    .as_deref()
                    .is_none_or(|only| Some(only) == server_uuid)
        })?;
        let fault = &mut self.faults[index];
        if fault.to_skip > 0 {
            fault.to_skip -= 1;
            return None;
        }
        fault.remaining -= 1;
        let hit = FaultHit {
            status: fault.spec.status,
            body: fault.spec.body.clone(),
            retry_after: fault.spec.retry_after.as_ref().map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
            delay_ms: fault.spec.delay_ms.unwrap_or(0),
            echo_cursor: fault.spec.echo_cursor,
        };
        if fault.remaining == 0 {
            self.faults.remove(index);
        }
        Some(hit)
    }
}
