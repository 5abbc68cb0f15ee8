//! Profiles (define, get), assigning and removing them, device details and disown.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{OutcomeStatus, World, format_time, random_upper_hex};
use crate::device::Device;
use crate::error::AppleError;

/// Apple: "limit requests to 1000 devices at a time" (assign, remove, disown).
pub const MAX_DEVICES_PER_REQUEST: usize = 1000;

/// The per-device answer of assign, define-with-devices, remove and disown.
#[derive(Debug, Clone, Serialize)]
pub struct AssignResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_uuid: Option<String>,
    pub devices: BTreeMap<String, &'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}

/// One answer of `POST /devices`: the serial asked for, its record if this server has it, and
/// `response_status`.
pub type DeviceDetail = (String, Option<Arc<Device>>, &'static str);

/// The profile fields Apple validates, typed so that a wrong JSON type is a malformed body.
#[derive(Deserialize)]
#[allow(dead_code)] // Several fields exist only for their type check.
struct ProfileFields {
    profile_name: Option<String>,
    url: Option<String>,
    configuration_web_url: Option<String>,
    is_supervised: Option<bool>,
    is_mdm_removable: Option<bool>,
    is_mandatory: Option<bool>,
    allow_pairing: Option<bool>,
    await_device_configured: Option<bool>,
    auto_advance_setup: Option<bool>,
    is_multi_user: Option<bool>,
    is_return_to_service: Option<bool>,
    do_not_use_profile_from_backup: Option<bool>,
    department: Option<String>,
    org_magic: Option<String>,
    support_phone_number: Option<String>,
    support_email_address: Option<String>,
    language: Option<String>,
    region: Option<String>,
    skip_setup_items: Option<Vec<String>>,
    anchor_certs: Option<Vec<String>>,
    supervising_host_certs: Option<Vec<String>>,
    devices: Option<Vec<String>>,
}

fn too_long(value: &Option<String>, max_chars: usize) -> bool {
    value
        .as_ref()
        .is_some_and(|v| v.chars().count() > max_chars)
}

fn valid_url(value: &str) -> bool {
    value.len() <= 2000
        && url::Url::parse(value).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
}

/// `en`, `fr-CA`, `zh_Hans`: a 2–3 letter language with optional subtags.
fn valid_language(value: &str) -> bool {
    let mut parts = value.split(['-', '_']);
    let primary_ok = parts
        .next()
        .is_some_and(|p| (2..=3).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphabetic()));
    primary_ok
        && parts.all(|p| (2..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// Apple's define-profile validation (AD define-profile error list).
fn validate(fields: &ProfileFields) -> Result<(), AppleError> {
    match fields.profile_name.as_deref() {
        None | Some("") => return Err(AppleError::bad_request("CONFIG_NAME_REQUIRED")),
        Some(_) if too_long(&fields.profile_name, 125) => {
            return Err(AppleError::bad_request("CONFIG_NAME_INVALID"));
        }
        Some(_) => {}
    }
    match fields.url.as_deref() {
        None | Some("") => return Err(AppleError::bad_request("CONFIG_URL_REQUIRED")),
        Some(url) if !valid_url(url) => return Err(AppleError::bad_request("CONFIG_URL_INVALID")),
        Some(_) => {}
    }
    if fields
        .configuration_web_url
        .as_deref()
        .is_some_and(|u| !u.is_empty() && !valid_url(u))
    {
        return Err(AppleError::bad_request("CONFIG_URL_INVALID"));
    }
    if fields.is_mdm_removable == Some(false) && fields.is_supervised != Some(true) {
        return Err(AppleError::bad_request("FLAGS_INVALID"));
    }
    if too_long(&fields.department, 125) {
        return Err(AppleError::bad_request("DEPARTMENT_INVALID"));
    }
    if too_long(&fields.org_magic, 256) {
        return Err(AppleError::bad_request("MAGIC_INVALID"));
    }
    if too_long(&fields.support_phone_number, 50) {
        return Err(AppleError::bad_request("SUPPORT_PHONE_INVALID"));
    }
    if too_long(&fields.support_email_address, 250)
        || fields
            .support_email_address
            .as_deref()
            .is_some_and(|e| !e.is_empty() && !e.contains('@'))
    {
        return Err(AppleError::bad_request("SUPPORT_EMAIL_INVALID"));
    }
    let bad_region = fields.region.as_deref().is_some_and(|r| {
        let two_letters = r.len() == 2 && r.chars().all(|c| c.is_ascii_alphabetic());
        !r.is_empty() && !two_letters
    });
    let bad_language = fields
        .language
        .as_deref()
        .is_some_and(|l| !l.is_empty() && !valid_language(l));
    if bad_region || bad_language {
        return Err(AppleError::bad_request("LOCALE_INVALID"));
    }
    Ok(())
}

/// A non-empty device list of at most 1000 serials.
fn device_list(devices: Option<Vec<String>>) -> Result<Vec<String>, AppleError> {
    let devices = devices
        .filter(|d| !d.is_empty())
        .ok_or(AppleError::bad_request("DEVICE_ID_REQUIRED"))?;
    if devices.len() > MAX_DEVICES_PER_REQUEST {
        // Apple names no token for this; the simulator's is documented in the README.
        return Err(AppleError::bad_request("DEVICE_LIMIT_EXCEEDED"));
    }
    Ok(devices)
}

impl World {
    /// `POST /profile`.
    pub fn define_profile(
        &mut self,
        server_uuid: &str,
        mut body: Map<String, Value>,
        version: u8,
    ) -> Result<AssignResult, AppleError> {
        let fields: ProfileFields = serde_json::from_value(Value::Object(body.clone()))
            .map_err(|_| AppleError::malformed())?;
        validate(&fields)?;
        let devices = match fields.devices {
            Some(devices) if !devices.is_empty() => device_list(Some(devices))?,
            _ => Vec::new(),
        };
        body.remove("devices");
        let profile_uuid = random_upper_hex(16);
        body.insert("profile_uuid".into(), Value::String(profile_uuid.clone()));
        self.servers
            .get_mut(server_uuid)
            .ok_or_else(AppleError::unauthorized)?
            .profiles
            .insert(profile_uuid.clone(), body);
        let (devices, retry_after_seconds) =
            self.apply_profile(server_uuid, &profile_uuid, &devices, version);
        Ok(AssignResult {
            profile_uuid: Some(profile_uuid),
            devices,
            retry_after_seconds,
        })
    }

    /// `GET /profile?profile_uuid=`.
    pub fn profile(
        &self,
        server_uuid: &str,
        profile_uuid: Option<&str>,
    ) -> Result<Value, AppleError> {
        let profile_uuid = profile_uuid
            .filter(|p| !p.is_empty())
            .ok_or(AppleError::bad_request("PROFILE_UUID_REQUIRED"))?;
        self.servers
            .get(server_uuid)
            .ok_or_else(AppleError::unauthorized)?
            .profiles
            .get(profile_uuid)
            .map(|p| Value::Object(p.clone()))
            .ok_or_else(AppleError::not_found)
    }

    /// `POST`/`PUT /profile/devices`.
    pub fn assign_profile(
        &mut self,
        server_uuid: &str,
        profile_uuid: Option<String>,
        devices: Option<Vec<String>>,
        version: u8,
    ) -> Result<AssignResult, AppleError> {
        let profile_uuid = profile_uuid
            .filter(|p| !p.is_empty())
            .ok_or(AppleError::bad_request("PROFILE_UUID_REQUIRED"))?;
        let devices = device_list(devices)?;
        let server = self
            .servers
            .get(server_uuid)
            .ok_or_else(AppleError::unauthorized)?;
        if !server.profiles.contains_key(&profile_uuid) {
            return Err(AppleError::not_found());
        }
        let (devices, retry_after_seconds) =
            self.apply_profile(server_uuid, &profile_uuid, &devices, version);
        Ok(AssignResult {
            profile_uuid: Some(profile_uuid),
            devices,
            retry_after_seconds,
        })
    }

    /// Assigns `profile_uuid` to each serial, honouring the outcome knobs. A successful
    /// assignment is a `modified` event, as with Apple.
    fn apply_profile(
        &mut self,
        server_uuid: &str,
        profile_uuid: &str,
        serials: &[String],
        version: u8,
    ) -> (BTreeMap<String, &'static str>, Option<u64>) {
        let now = format_time(self.now());
        let mut statuses = BTreeMap::new();
        let mut retry_after: Option<u64> = None;
        let Some(server) = self.servers.get_mut(server_uuid) else {
            return (statuses, None);
        };
        for serial in serials {
            let Some(device) = server.device(serial) else {
                statuses.insert(serial.clone(), "NOT_ACCESSIBLE");
                continue;
            };
            let device = Arc::clone(device);
            if let Some(outcome) = server.outcomes.get_mut(serial) {
                let status = outcome.status;
                let wait = outcome.retry_after_seconds;
                outcome.remaining = outcome.remaining.saturating_sub(1);
                if outcome.remaining == 0 {
                    server.outcomes.remove(serial);
                }
                let answer = match status {
                    OutcomeStatus::Failed => "FAILED",
                    OutcomeStatus::NotAccessible => "NOT_ACCESSIBLE",
                    // Clients older than v9 do not know THROTTLED; Apple reports a failure.
                    OutcomeStatus::Throttled if version < 9 => "FAILED",
                    OutcomeStatus::Throttled => {
                        retry_after = Some(retry_after.unwrap_or(0).max(wait));
                        "THROTTLED"
                    }
                };
                statuses.insert(serial.clone(), answer);
                continue;
            }
            let mut updated = Device::clone(&device);
            updated.profile_uuid = Some(profile_uuid.to_owned());
            updated.profile_status = Some("assigned".to_owned());
            updated.profile_assign_time = Some(now.clone());
            server.replace_device(updated, now.clone());
            statuses.insert(serial.clone(), "SUCCESS");
        }
        (statuses, retry_after.filter(|_| version >= 10))
    }

    /// `DELETE /profile/devices`: the profile is marked `removed` (its UUID stays, as Apple
    /// reports it), a `modified` event.
    pub fn remove_profile(
        &mut self,
        server_uuid: &str,
        devices: Option<Vec<String>>,
    ) -> Result<AssignResult, AppleError> {
        let devices = device_list(devices)?;
        let now = format_time(self.now());
        let server = self
            .servers
            .get_mut(server_uuid)
            .ok_or_else(AppleError::unauthorized)?;
        let mut statuses = BTreeMap::new();
        for serial in devices {
            let status = match server.device(&serial) {
                Some(device) => {
                    let mut updated = Device::clone(device);
                    updated.profile_status = Some("removed".to_owned());
                    server.replace_device(updated, now.clone());
                    "SUCCESS"
                }
                None => "NOT_ACCESSIBLE",
            };
            statuses.insert(serial, status);
        }
        Ok(AssignResult {
            profile_uuid: None,
            devices: statuses,
            retry_after_seconds: None,
        })
    }

    /// `POST /devices`: each requested serial with its record, if this server has it.
    pub fn device_details(
        &self,
        server_uuid: &str,
        devices: Option<Vec<String>>,
    ) -> Result<Vec<DeviceDetail>, AppleError> {
        let devices = devices
            .filter(|d| !d.is_empty())
            .ok_or(AppleError::bad_request("DEVICE_ID_REQUIRED"))?;
        let server = self
            .servers
            .get(server_uuid)
            .ok_or_else(AppleError::unauthorized)?;
        Ok(devices
            .into_iter()
            .map(|serial| match server.device(&serial) {
                Some(device) => (serial, Some(Arc::clone(device)), "SUCCESS"),
                None if self.serial_owner.contains_key(&serial) => (serial, None, "NOT_ACCESSIBLE"),
                None => (serial, None, "NOT_FOUND"),
            })
            .collect())
    }

    /// `POST /devices/disown`: the devices leave the organisation. Like a release in Apple
    /// Business this produces no sync event.
    pub fn disown(
        &mut self,
        server_uuid: &str,
        devices: Option<Vec<String>>,
    ) -> Result<AssignResult, AppleError> {
        let devices = device_list(devices)?;
        let server = self
            .servers
            .get_mut(server_uuid)
            .ok_or_else(AppleError::unauthorized)?;
        let mut statuses = BTreeMap::new();
        for serial in devices {
            let status = if server.remove_device(&serial).is_some() {
                self.serial_owner.remove(&serial);
                "SUCCESS"
            } else {
                "NOT_ACCESSIBLE"
            };
            statuses.insert(serial, status);
        }
        Ok(AssignResult {
            profile_uuid: None,
            devices: statuses,
            retry_after_seconds: None,
        })
    }
}
