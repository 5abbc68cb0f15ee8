//! Device records as Apple serves them, their version-dependent JSON view, and realistic
//! generated devices.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use rand::seq::IndexedRandom;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

/// One device as Apple stores it for an MDM server (docs/apple.md §4.4).
///
/// Timestamps are kept as the strings Apple sends so that loaded records are replayed
/// byte-for-byte; generated ones use `YYYY-MM-DDTHH:MM:SSZ` like Apple's samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub serial_number: String,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_assign_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_push_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_assigned_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_assigned_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_family: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mdm_migration_deadline: Option<String>,
    /// Fields Apple's schema does not name (the v10 MAC/IMEI attributes, say): kept and served
    /// as loaded.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Fields that only make sense in a response and are never part of the stored record.
const RESPONSE_ONLY_FIELDS: [&str; 4] = [
    "op_type",
    "op_date",
    "response_status",
    "released_by_replacement",
];

impl Device {
    /// Builds a record from JSON a test supplies, dropping response-only fields.
    pub fn from_json(value: Value) -> Result<Self, serde_json::Error> {
        let mut device: Device = serde_json::from_value(value)?;
        for field in RESPONSE_ONLY_FIELDS {
            device.extra.remove(field);
        }
        Ok(device)
    }

    /// Applies a JSON merge patch (RFC 7386, top level only): `null` removes a field.
    pub fn patched(&self, patch: &Map<String, Value>) -> Result<Self, PatchError> {
        let Value::Object(mut current) =
            serde_json::to_value(self).map_err(|_| PatchError::Invalid)?
        else {
            return Err(PatchError::Invalid);
        };
        for (key, value) in patch {
            if key == "serial_number" && value.as_str() != Some(self.serial_number.as_str()) {
                return Err(PatchError::SerialChange);
            }
            if value.is_null() {
                current.remove(key);
            } else {
                current.insert(key.clone(), value.clone());
            }
        }
        Device::from_json(Value::Object(current)).map_err(|_| PatchError::Invalid)
    }
}

/// Why a device patch was refused.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("serial_number cannot change")]
    SerialChange,
    #[error("the patched record is not a valid device (serial_number and model are strings)")]
    Invalid,
}

/// What a sync event says happened to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    Added,
    Modified,
    Deleted,
}

impl OpType {
    pub fn as_str(self) -> &'static str {
        match self {
            OpType::Added => "added",
            OpType::Modified => "modified",
            OpType::Deleted => "deleted",
        }
    }
}

/// A device as serialised for one protocol version, with the sync or details extras.
pub struct DeviceView<'a> {
    pub device: &'a Device,
    pub version: u8,
    pub op: Option<(OpType, &'a str)>,
    pub response_status: Option<&'a str>,
    /// On a `deleted` sync event: whether Apple released the device because another
    /// replaced it (sent from protocol version 10).
    pub released_by_replacement: bool,
}

impl Serialize for DeviceView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let d = self.device;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("serial_number", &d.serial_number)?;
        map.serialize_entry("model", &d.model)?;
        let plain = [
            ("description", &d.description),
            ("color", &d.color),
            ("asset_tag", &d.asset_tag),
            ("profile_status", &d.profile_status),
            ("profile_uuid", &d.profile_uuid),
            ("profile_assign_time", &d.profile_assign_time),
            ("profile_push_time", &d.profile_push_time),
            ("device_assigned_date", &d.device_assigned_date),
            ("device_assigned_by", &d.device_assigned_by),
        ];
        for (key, value) in plain {
            if let Some(value) = value {
                map.serialize_entry(key, value)?;
            }
        }
        if self.version >= 2 {
            if let Some(os) = &d.os {
                // Before v7 Apple reported iPads as running iOS.
                let os = if self.version < 7 && os == "iPadOS" {
                    "iOS"
                } else {
                    os
                };
                map.serialize_entry("os", os)?;
            }
            if let Some(family) = &d.device_family {
                map.serialize_entry("device_family", family)?;
            }
        }
        if self.version >= 8
            && let Some(deadline) = &d.mdm_migration_deadline
        {
            map.serialize_entry("mdm_migration_deadline", deadline)?;
        }
        for (key, value) in &d.extra {
            map.serialize_entry(key, value)?;
        }
        if let Some((op_type, op_date)) = self.op {
            map.serialize_entry("op_type", op_type.as_str())?;
            map.serialize_entry("op_date", op_date)?;
            // Apple's Device.json: only on sync, only when `op_type` is `deleted`, v10+.
            if op_type == OpType::Deleted && self.version >= 10 {
                map.serialize_entry("released_by_replacement", &self.released_by_replacement)?;
            }
        }
        if let Some(status) = self.response_status {
            map.serialize_entry("response_status", status)?;
        }
        map.end()
    }
}

/// A page of devices (fetch or sync) serialised without copying records.
pub struct DeviceList<'a> {
    pub entries: &'a [PageEntry],
    pub version: u8,
}

/// One device in a fetch or sync page.
pub struct PageEntry {
    pub device: std::sync::Arc<Device>,
    pub op: Option<(OpType, String)>,
    pub released_by_replacement: bool,
}

impl Serialize for DeviceList<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.entries.len()))?;
        for entry in self.entries {
            seq.serialize_element(&DeviceView {
                device: &entry.device,
                version: self.version,
                op: entry.op.as_ref().map(|(op, date)| (*op, date.as_str())),
                response_status: None,
                released_by_replacement: entry.released_by_replacement,
            })?;
        }
        seq.end()
    }
}

/// Apple's device families (the `device_family` values of Device.json).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    IPhone,
    IPad,
    Mac,
    AppleTv,
    IPod,
    Vision,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.catalog().family)
    }
}

/// An unknown `family` in a control request.
#[derive(Debug, thiserror::Error)]
#[error("unknown device family {0:?} (iPhone, iPad, Mac, AppleTV, iPod, Vision)")]
pub struct UnknownFamily(String);

impl FromStr for Family {
    type Err = UnknownFamily;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "iphone" => Family::IPhone,
            "ipad" => Family::IPad,
            "mac" => Family::Mac,
            "appletv" | "tvos" => Family::AppleTv,
            "ipod" => Family::IPod,
            "vision" | "visionos" => Family::Vision,
            _ => return Err(UnknownFamily(s.to_owned())),
        })
    }
}

struct Catalog {
    family: &'static str,
    os: &'static str,
    /// (model, description prefix)
    models: &'static [(&'static str, &'static str)],
    colors: &'static [&'static str],
    capacities: &'static [&'static str],
}

impl Family {
    fn catalog(self) -> &'static Catalog {
        match self {
            Family::IPhone => &Catalog {
                family: "iPhone",
                os: "iOS",
                models: &[
                    ("iPhone 15", "IPHONE 15"),
                    ("iPhone 15 Pro", "IPHONE 15 PRO"),
                    ("iPhone 14", "IPHONE 14"),
                    ("iPhone 13", "IPHONE 13"),
                    ("iPhone SE (3rd generation)", "IPHONE SE"),
                ],
                colors: &["BLACK", "WHITE", "BLUE", "MIDNIGHT", "STARLIGHT"],
                capacities: &["128GB", "256GB", "512GB"],
            },
            Family::IPad => &Catalog {
                family: "iPad",
                os: "iPadOS",
                models: &[
                    ("iPad (10th generation)", "IPAD WI-FI"),
                    ("iPad Air (5th generation)", "IPAD AIR WI-FI"),
                    ("iPad Pro (11-inch)", "IPAD PRO 11 WI-FI"),
                    ("iPad mini (6th generation)", "IPAD MINI WI-FI"),
                ],
                colors: &["SPACE GRAY", "SILVER", "BLUE", "PINK"],
                capacities: &["64GB", "256GB"],
            },
            Family::Mac => &Catalog {
                family: "Mac",
                os: "OSX",
                models: &[
                    ("MacBook Pro", "MBP 14 M3/16GB"),
                    ("MacBook Air", "MBA 13 M2/8GB"),
                    ("iMac", "IMAC 24 M3/8GB"),
                    ("Mac mini", "MAC MINI M2/8GB"),
                ],
                colors: &["SPACE GRAY", "SILVER", "MIDNIGHT", "STARLIGHT"],
                capacities: &["256GB", "512GB", "1TB"],
            },
            Family::AppleTv => &Catalog {
                family: "AppleTV",
                os: "tvOS",
                models: &[("Apple TV 4K", "APPLE TV 4K WI-FI")],
                colors: &["BLACK"],
                capacities: &["64GB", "128GB"],
            },
            Family::IPod => &Catalog {
                family: "iPod",
                os: "iOS",
                models: &[("iPod touch (7th generation)", "IPOD TOUCH")],
                colors: &["SPACE GRAY", "SILVER", "GOLD"],
                capacities: &["32GB", "128GB"],
            },
            Family::Vision => &Catalog {
                family: "Vision",
                os: "visionOS",
                models: &[("Apple Vision Pro", "APPLE VISION PRO")],
                colors: &["SILVER"],
                capacities: &["256GB", "512GB"],
            },
        }
    }

    /// Roughly the mix of a business fleet: mostly phones, then Macs and iPads.
    fn pick(rng: &mut impl Rng) -> Family {
        match rng.random_range(0..100) {
            0..50 => Family::IPhone,
            50..75 => Family::Mac,
            75..94 => Family::IPad,
            94..98 => Family::AppleTv,
            98..99 => Family::IPod,
            _ => Family::Vision,
        }
    }
}

const SERIAL_ALPHABET: &[u8] = b"0123456789ABCDEFGHJKLMNPQRSTUVWXYZ";

/// A 12-character serial like Apple's (no I or O, which Apple avoids).
pub fn random_serial(rng: &mut impl Rng) -> String {
    (0..12)
        .map(|_| char::from(SERIAL_ALPHABET[rng.random_range(0..SERIAL_ALPHABET.len())]))
        .collect()
}

/// A freshly assigned device of `family` (or a random family).
pub fn generate(
    rng: &mut impl Rng,
    serial: String,
    family: Option<Family>,
    assigned_by: &str,
    assigned_date: &str,
) -> Device {
    let family = family.unwrap_or_else(|| Family::pick(rng));
    let catalog = family.catalog();
    let (model, prefix) = catalog
        .models
        .choose(rng)
        .copied()
        .unwrap_or(("Unknown", ""));
    let color = catalog.colors.choose(rng).copied().unwrap_or("BLACK");
    let capacity = catalog.capacities.choose(rng).copied().unwrap_or("");
    Device {
        serial_number: serial,
        model: model.to_owned(),
        description: Some(format!("{prefix} {color}/{capacity}-USA")),
        color: Some(color.to_owned()),
        asset_tag: None,
        profile_status: Some("empty".to_owned()),
        profile_uuid: None,
        profile_assign_time: None,
        profile_push_time: None,
        device_assigned_date: Some(assigned_date.to_owned()),
        device_assigned_by: Some(assigned_by.to_owned()),
        os: Some(catalog.os.to_owned()),
        device_family: Some(catalog.family.to_owned()),
        mdm_migration_deadline: None,
        extra: Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn sample() -> Device {
        let mut rng = StdRng::seed_from_u64(7);
        generate(
            &mut rng,
            "C02T0HL0GGC0".into(),
            Some(Family::IPad),
            "a@b.c",
            "2024-01-01T00:00:00Z",
        )
    }

    #[test]
    fn view_hides_fields_by_version() {
        let device = sample();
        let view = |version| {
            serde_json::to_value(DeviceView {
                device: &device,
                version,
                op: None,
                response_status: None,
                released_by_replacement: false,
            })
            .unwrap_or_default()
        };
        assert!(view(1).get("os").is_none());
        assert_eq!(view(3)["os"], "iOS");
        assert_eq!(view(7)["os"], "iPadOS");
        assert_eq!(view(7)["device_family"], "iPad");
    }

    #[test]
    fn patch_sets_removes_and_guards_serial() -> Result<(), PatchError> {
        let device = sample();
        let patch = serde_json::json!({"color": "PINK", "description": null, "asset_tag": "A1"});
        let Value::Object(patch) = patch else {
            unreachable!()
        };
        let patched = device.patched(&patch)?;
        assert_eq!(patched.color.as_deref(), Some("PINK"));
        assert_eq!(patched.description, None);
        assert_eq!(patched.asset_tag.as_deref(), Some("A1"));
        let Value::Object(bad) = serde_json::json!({"serial_number": "OTHER"}) else {
            unreachable!()
        };
        assert!(matches!(
            device.patched(&bad),
            Err(PatchError::SerialChange)
        ));
        Ok(())
    }

    #[test]
    fn same_seed_same_devices() {
        let make = || {
            let mut rng = StdRng::seed_from_u64(42);
            (0..5)
                .map(|_| {
                    let serial = random_serial(&mut rng);
                    generate(&mut rng, serial, None, "x", "y")
                })
                .collect::<Vec<_>>()
        };
        let first = make();
        assert_eq!(first, make());
        assert!(first.iter().all(|d| {
            d.serial_number.len() == 12
                && d.serial_number
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        }));
    }
}
