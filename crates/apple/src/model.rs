//! Apple's JSON shapes (`docs/apple.md` §4), typed.
//!
//! Fields Apple may omit are `Option`s; fields this crate does not know yet land in
//! `extra`, so a newer protocol version (v10 adds MAC addresses, IMEI, ...) loses nothing.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

/// Fields this crate does not model, kept as Apple sent them.
pub type Extra = serde_json::Map<String, serde_json::Value>;

/// `GET /account`: the MDM server and organisation behind a token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Account {
    /// Name of the MDM server in Apple Business.
    pub server_name: String,
    /// Apple's id of the MDM server; a renewed token for the same server keeps it.
    pub server_uuid: String,
    /// Apple Account that downloaded the token in use.
    #[serde(default)]
    pub admin_id: Option<String>,
    /// Legacy, deprecated form of `admin_id`.
    #[serde(default)]
    pub facilitator_id: Option<String>,
    /// Organisation name.
    #[serde(default)]
    pub org_name: Option<String>,
    /// Organisation e-mail.
    #[serde(default)]
    pub org_email: Option<String>,
    /// Organisation phone.
    #[serde(default)]
    pub org_phone: Option<String>,
    /// Organisation address.
    #[serde(default)]
    pub org_address: Option<String>,
    /// Organisation id (v3+).
    #[serde(default)]
    pub org_id: Option<String>,
    /// Hash of the organisation id (v3+).
    #[serde(default)]
    pub org_id_hash: Option<String>,
    /// `edu` or `org` (v3+).
    #[serde(default)]
    pub org_type: Option<String>,
    /// `v1` or `v2` (v3+).
    #[serde(default)]
    pub org_version: Option<String>,
    /// The routes this token may call, with their page limits (v3+).
    #[serde(default)]
    pub urls: Vec<AccountUrl>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Account {
    /// The largest page Apple advertises for `path` (`urls[].limit.maximum`).
    pub fn page_limit(&self, path: &str) -> Option<u32> {
        self.urls
            .iter()
            .find(|url| url.uri == path)
            .and_then(|url| url.limit.as_ref())
            .and_then(|limit| limit.maximum)
            .filter(|maximum| *maximum > 0)
    }
}

/// One route a token may call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountUrl {
    /// Path, e.g. `/server/devices`.
    pub uri: String,
    /// Methods accepted.
    #[serde(default)]
    pub http_method: Vec<String>,
    /// Page size bounds, for paged routes.
    #[serde(default)]
    pub limit: Option<PageLimit>,
}

/// Page size bounds of a paged route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageLimit {
    /// Page size when the request names none.
    #[serde(default)]
    pub default: Option<u32>,
    /// Largest page size accepted.
    #[serde(default)]
    pub maximum: Option<u32>,
}

/// A page of fetch or sync results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DevicePage {
    /// Where the next request starts.
    pub cursor: String,
    /// How far the walk has come.
    #[serde(default, deserialize_with = "lenient_time")]
    pub fetched_until: Option<DateTime<Utc>>,
    /// Ask again at once from `cursor`.
    pub more_to_follow: bool,
    /// Devices, in the order of their operations. A device whose optional timestamp
    /// cannot be read keeps the rest of its record ([`Device::unreadable`]): one bad
    /// field must not fail the page, or every run would stop at the same page.
    #[serde(default, deserialize_with = "lenient_devices")]
    pub devices: Vec<Device>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Extra,
}

impl DevicePage {
    /// Devices of this page that came with an optional field that could not be read.
    pub fn with_unreadable_fields(&self) -> impl Iterator<Item = &Device> {
        self.devices.iter().filter(|d| !d.unreadable.is_empty())
    }
}

/// A device record (`docs/apple.md` §4.4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// Serial number: the device's identity everywhere.
    pub serial_number: String,
    /// Model, e.g. `MacBook Pro`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Apple's description of the configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Colour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    /// Asset tag set in Apple Business.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset_tag: Option<String>,
    /// Where the device stands with its enrollment profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_status: Option<ProfileStatus>,
    /// The profile assigned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_uuid: Option<String>,
    /// When the profile was assigned.
    #[serde(
        default,
        deserialize_with = "lenient_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub profile_assign_time: Option<DateTime<Utc>>,
    /// When the device downloaded the profile.
    #[serde(
        default,
        deserialize_with = "lenient_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub profile_push_time: Option<DateTime<Utc>>,
    /// When the device was assigned to this MDM server.
    #[serde(
        default,
        deserialize_with = "lenient_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub device_assigned_date: Option<DateTime<Utc>>,
    /// Who assigned it (an e-mail address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_assigned_by: Option<String>,
    /// `iOS`, `iPadOS`, `OSX`, `tvOS`, `visionOS` (v2+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// `iPad`, `iPhone`, `iPod`, `Mac`, `AppleTV`, `Vision` (v2+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_family: Option<String>,
    /// Deadline for migrating to another MDM (v8+).
    #[serde(
        default,
        deserialize_with = "lenient_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub mdm_migration_deadline: Option<DateTime<Utc>>,
    /// Sync records only: what happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_type: Option<OpType>,
    /// Sync records only: when it happened; the latest `op_date` wins.
    #[serde(
        default,
        deserialize_with = "lenient_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub op_date: Option<DateTime<Utc>>,
    /// Device details only: `SUCCESS`, or why the device could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_status: Option<String>,
    /// Sync records with `op_type: deleted` only (v10+): Apple released the device
    /// because another one replaced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_by_replacement: Option<bool>,
    /// Fields not modelled here (newer protocol versions add some).
    #[serde(flatten)]
    pub extra: Extra,
    /// Optional fields Apple sent in a form that could not be read (a timestamp that is
    /// not ISO 8601): left out of this record, named here so the run can say so.
    #[serde(skip)]
    pub unreadable: Vec<String>,
}

/// The optional timestamps of a device record: one Apple sends unreadable is left out
/// rather than failing its page.
const OPTIONAL_TIMES: [&str; 5] = [
    "profile_assign_time",
    "profile_push_time",
    "device_assigned_date",
    "mdm_migration_deadline",
    "op_date",
];

const RELEASED_BY_REPLACEMENT: &str = "released_by_replacement";

impl Device {
    /// Reads one device record; an optional timestamp (or flag) that cannot be read is dropped and
    /// named in [`Device::unreadable`]. Anything else wrong (no serial number) fails.
    fn read_leniently(mut record: serde_json::Value) -> Result<Self, serde_json::Error> {
        let mut unreadable = Vec::new();
        if let Some(fields) = record.as_object_mut() {
            for name in OPTIONAL_TIMES {
                let readable = match fields.get(name) {
                    Some(serde_json::Value::String(text)) => parse_time(text).is_ok(),
                    Some(serde_json::Value::Null) | None => true,
                    Some(_) => false,
                };
                if !readable {
                    fields.remove(name);
                    unreadable.push(name.to_owned());
                }
            }
            let flag = fields.get(RELEASED_BY_REPLACEMENT);
            if flag.is_some_and(|value| !value.is_boolean() && !value.is_null()) {
                fields.remove(RELEASED_BY_REPLACEMENT);
                unreadable.push(RELEASED_BY_REPLACEMENT.to_owned());
            }
        }
        let mut device: Device = serde_json::from_value(record)?;
        device.unreadable = unreadable;
        Ok(device)
    }
}

/// A device's profile state in Apple.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProfileStatus {
    /// No profile.
    Empty,
    /// Assigned, not yet downloaded.
    Assigned,
    /// Downloaded by the device.
    Pushed,
    /// Removed.
    Removed,
    /// A value this crate does not know.
    #[serde(other)]
    Unknown,
}

/// What a sync record reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpType {
    /// Assigned to this MDM server.
    Added,
    /// Changed (also what a move from another MDM server often looks like).
    Modified,
    /// Moved away from this MDM server.
    Deleted,
    /// A value this crate does not know.
    #[serde(other)]
    Unknown,
}

/// Apple's answer for one device of an assign / remove / disown / define request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeviceStatus {
    /// Done.
    Success,
    /// The device is not assigned to this MDM server.
    NotAccessible,
    /// Apple failed for this device (retry much later: fleet uses 24 h).
    Failed,
    /// Apple's assignment cooldown (v9+); see `retry_after_seconds`.
    Throttled,
    /// A value this crate does not know.
    #[serde(other)]
    Unknown,
}

/// `POST /devices`: details per serial number.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceDetails {
    /// One record per serial asked for.
    #[serde(default)]
    pub devices: BTreeMap<String, Device>,
}

/// An enrollment profile (`docs/apple.md` §4.6).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Name shown on the device (≤ 125 characters).
    pub profile_name: String,
    /// Apple's id; set on profiles read back, ignored when defining.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_uuid: Option<String>,
    /// MDM enrollment URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Web view authentication URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration_web_url: Option<String>,
    /// Supervise the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_supervised: Option<bool>,
    /// The user may not skip enrollment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_mandatory: Option<bool>,
    /// The user may remove the MDM profile (false needs `is_supervised`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_mdm_removable: Option<bool>,
    /// Deprecated in iOS 13.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_pairing: Option<bool>,
    /// Hold Setup Assistant until the MDM says the device is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub await_device_configured: Option<bool>,
    /// Advance Setup Assistant on its own (tvOS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_advance_setup: Option<bool>,
    /// Shared iPad.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_multi_user: Option<bool>,
    /// Return to Service (iOS 26+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_return_to_service: Option<bool>,
    /// Do not restore the profile from a backup (iOS 26+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub do_not_use_profile_from_backup: Option<bool>,
    /// Department (≤ 125 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// Opaque string for the MDM (≤ 256 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_magic: Option<String>,
    /// Support phone (≤ 50 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub support_phone_number: Option<String>,
    /// Support e-mail (≤ 250 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub support_email_address: Option<String>,
    /// Setup Assistant language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Setup Assistant region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Setup Assistant panes to skip.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip_setup_items: Vec<String>,
    /// Trusted anchor certificates (base64 DER).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anchor_certs: Vec<String>,
    /// Certificates of hosts allowed to pair (base64 DER).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supervising_host_certs: Vec<String>,
    /// Serial numbers to assign while defining.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `POST /profile`: the new profile's id and how each listed device fared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DefinedProfile {
    /// Apple's id of the new profile.
    pub profile_uuid: String,
    /// Per serial listed in the profile.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub devices: BTreeMap<String, DeviceStatus>,
}

/// `PUT /profile/devices`: how each device fared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AssignedProfile {
    /// The profile assigned. Apple's schema marks it optional (and nanodep reads it so):
    /// the profile asked for is the one assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_uuid: Option<String>,
    /// Per serial.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub devices: BTreeMap<String, DeviceStatus>,
    /// Wait at least this long before retrying throttled devices (v10+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}

/// Per-serial answers of remove-profile and disown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceStatuses {
    /// Per serial.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub devices: BTreeMap<String, DeviceStatus>,
}

/// `GET /session`.
#[derive(Deserialize)]
pub(crate) struct SessionAnswer {
    pub(crate) auth_session_token: String,
}

/// `POST /server/devices` and `POST /devices/sync`.
#[derive(Serialize)]
pub(crate) struct PageRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cursor: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) limit: Option<u32>,
}

/// Bodies that name devices (details, remove, disown).
#[derive(Serialize)]
pub(crate) struct SerialsRequest<'a> {
    pub(crate) devices: &'a [String],
}

/// `PUT /profile/devices`.
#[derive(Serialize)]
pub(crate) struct AssignRequest<'a> {
    pub(crate) profile_uuid: &'a str,
    pub(crate) devices: &'a [String],
}

/// Apple's timestamps are ISO 8601; RFC 3339 is what it sends, and a form without an
/// offset is read as UTC rather than failing a whole page over one field.
fn lenient_time<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    let Some(text) = Option::<String>::deserialize(deserializer)? else {
        return Ok(None);
    };
    parse_time(&text).map_err(serde::de::Error::custom)
}

/// An ISO 8601 timestamp as Apple writes them (with or without an offset; empty: none).
fn parse_time(text: &str) -> Result<Option<DateTime<Utc>>, &'static str> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(Some(time.with_timezone(&Utc)));
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .map(|naive| Some(naive.and_utc()))
        .map_err(|_| "a timestamp that is not ISO 8601")
}

/// A page's devices, each read with [`Device::read_leniently`] (`null`: none).
fn lenient_devices<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Device>, D::Error> {
    let records = Option::<Vec<serde_json::Value>>::deserialize(deserializer)?.unwrap_or_default();
    records
        .into_iter()
        .map(|record| Device::read_leniently(record).map_err(serde::de::Error::custom))
        .collect()
}

/// Apple sends `null` for empty lists on some routes.
fn null_as_empty<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_optional_time_drops_that_field_not_the_page() {
        let page: DevicePage = serde_json::from_str(
            r#"{"cursor":"c1","more_to_follow":false,"devices":[
              {"serial_number":"C02T0HL0GGC0","mdm_migration_deadline":"next tuesday",
               "device_assigned_date":"2017-10-16T01:55:30Z","op_date":17},
              {"serial_number":"C02T0HL0GGC1","mdm_migration_deadline":"2026-12-31T00:00:00Z"}]}"#,
        )
        .unwrap();
        let [odd, fine] = &page.devices[..] else {
            panic!("two devices: {page:?}");
        };
        assert_eq!(odd.unreadable, ["mdm_migration_deadline", "op_date"]);
        assert_eq!(odd.mdm_migration_deadline, None);
        assert!(odd.device_assigned_date.is_some());
        assert!(fine.unreadable.is_empty());
        assert!(fine.mdm_migration_deadline.is_some());
        assert_eq!(page.with_unreadable_fields().count(), 1);
        // A record without a serial number still fails its page.
        let missing = serde_json::from_str::<DevicePage>(
            r#"{"cursor":"c1","more_to_follow":false,"devices":[{"model":"iPad"}]}"#,
        );
        assert!(missing.is_err());
    }

    #[test]
    fn reads_apple_sample_page() {
        // The shape of micromdm's dep/testdata/device_response.json (docs/apple.md §4.3).
        let page: DevicePage = serde_json::from_str(
            r#"{"devices":[{"serial_number":"C02T0HL0GGC0","model":"MacBook Pro",
              "description":"MBP 13.3 SPACE GRAY/2.0GHZ/8GB/256GB-USA","color":"SPACE GRAY",
              "os":"OSX","device_family":"Mac","profile_status":"assigned",
              "profile_uuid":"C1F123098EB5074580041E69883004C3","profile_assign_time":"2018-09-08T16:49:09Z",
              "device_assigned_by":"apple-dep@acme.co","device_assigned_date":"2017-10-16T01:55:30Z",
              "wifi_mac_address":"aa:bb"}],
             "fetched_until":"2018-09-08T17:28:18Z","more_to_follow":false,
             "cursor":"MDowOjE1MzY0Mjc2OTg5MTQ6MTUzNjQyNzY5ODkxNDp0cnVlOjE1MzY0Mjc2OTg5MTQ"}"#,
        )
        .expect("Apple's sample decodes");
        assert!(!page.more_to_follow);
        let device = &page.devices[0];
        assert_eq!(device.serial_number, "C02T0HL0GGC0");
        assert_eq!(device.profile_status, Some(ProfileStatus::Assigned));
        assert_eq!(device.op_type, None);
        assert_eq!(
            device.device_assigned_date.map(|time| time.to_rfc3339()),
            Some("2017-10-16T01:55:30+00:00".to_owned())
        );
        assert_eq!(device.extra.get("wifi_mac_address"), Some(&"aa:bb".into()));
    }

    #[test]
    fn reads_sync_records_and_unknown_values() {
        let page: DevicePage = serde_json::from_str(
            r#"{"cursor":"c","more_to_follow":true,"devices":[
                {"serial_number":"A","op_type":"deleted","op_date":"2024-01-02T03:04:05.123Z"},
                {"serial_number":"B","op_type":"teleported","profile_status":"floating","op_date":"2024-01-02T03:04:05"}]}"#,
        )
        .expect("sync page decodes");
        assert_eq!(page.devices[0].op_type, Some(OpType::Deleted));
        assert_eq!(page.devices[1].op_type, Some(OpType::Unknown));
        assert_eq!(page.devices[1].profile_status, Some(ProfileStatus::Unknown));
        assert!(page.devices[1].op_date.is_some());
        assert_eq!(page.fetched_until, None);
    }

    #[test]
    fn empty_sync_page_and_null_devices() {
        for body in [
            r#"{"cursor":"c","more_to_follow":false,"devices":[]}"#,
            r#"{"cursor":"c","more_to_follow":false,"devices":null}"#,
            r#"{"cursor":"c","more_to_follow":false}"#,
        ] {
            let page: DevicePage = serde_json::from_str(body).expect(body);
            assert!(page.devices.is_empty());
        }
    }

    #[test]
    fn account_page_limits() {
        // The shape of micromdm's dep/testdata/account_response.json (docs/apple.md §4.1).
        let account: Account = serde_json::from_str(
            r#"{"server_name":"dev","server_uuid":"6666ED66666666666666666666666666",
                "admin_id":"apple-dep@acme.co","org_name":"Acme, Inc","org_type":"org",
                "urls":[{"uri":"/server/devices","http_method":["POST"],"limit":{"default":1000,"maximum":5000}},
                        {"uri":"/devices/sync","http_method":["POST"],"limit":{"default":1000,"maximum":0}},
                        {"uri":"/profile","http_method":["POST","GET"]}]}"#,
        )
        .expect("account decodes");
        assert_eq!(account.page_limit("/server/devices"), Some(5000));
        assert_eq!(account.page_limit("/devices/sync"), None);
        assert_eq!(account.page_limit("/profile"), None);
        assert_eq!(account.page_limit("/nowhere"), None);
    }

    #[test]
    fn profile_omits_what_is_unset() {
        let profile = Profile {
            profile_name: "Staff".to_owned(),
            is_supervised: Some(true),
            ..Profile::default()
        };
        let json = serde_json::to_value(&profile).expect("profile encodes");
        assert_eq!(
            json,
            serde_json::json!({"profile_name": "Staff", "is_supervised": true})
        );
    }

    #[test]
    fn assignment_statuses() {
        let answer: AssignedProfile = serde_json::from_str(
            r#"{"profile_uuid":"P","devices":{"S1":"SUCCESS","S2":"NOT_ACCESSIBLE","S3":"THROTTLED","S4":"NEW"},
                "retry_after_seconds":3600}"#,
        )
        .expect("assign answer decodes");
        assert_eq!(answer.devices["S1"], DeviceStatus::Success);
        assert_eq!(answer.devices["S2"], DeviceStatus::NotAccessible);
        assert_eq!(answer.devices["S3"], DeviceStatus::Throttled);
        assert_eq!(answer.devices["S4"], DeviceStatus::Unknown);
        assert_eq!(answer.retry_after_seconds, Some(3600));
    }
}
