//! Enrollment policies: the settings a device gets at Setup Assistant, validated as
//! Apple validates an enrollment profile, and the per-token limits.
//!
//! A policy mirrors Apple's profile fields (docs/apple.md §4.6) plus adesync's own
//! `user_affinity`. Apple refuses a bad profile only when the service defines it, long
//! after the administrator saved the policy; [`PolicySettings::validate`] refuses the same
//! things up front, naming the field, so a saved policy always defines cleanly.
//!
//! Apple has no "update profile": a changed policy is a new profile, defined again, and
//! its devices are assigned to the new one ([`PolicySettings::apple_profile`] is what is
//! sent; the policy's `version` says which settings a defined profile carries).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{PolicyId, Serial, TokenId};

/// Enrollment policies per token (docs/product.md "Limits").
pub const MAX_POLICIES_PER_TOKEN: u64 = 1_000;
/// ADE devices per policy (docs/product.md "Limits").
pub const MAX_DEVICES_PER_POLICY: u64 = 200_000;

/// Apple's limits on profile fields (define-profile error list).
pub const MAX_NAME_CHARS: usize = 125;
pub const MAX_URL_CHARS: usize = 2_000;
pub const MAX_DEPARTMENT_CHARS: usize = 125;
pub const MAX_ORG_MAGIC_CHARS: usize = 256;
pub const MAX_SUPPORT_PHONE_CHARS: usize = 50;
pub const MAX_SUPPORT_EMAIL_CHARS: usize = 250;

/// The JSON type each settings field takes, for naming a mistyped field.
pub const FIELD_KINDS: &[(&str, FieldKind)] = &[
    ("name", FieldKind::Text),
    ("url", FieldKind::Text),
    ("configuration_web_url", FieldKind::Text),
    ("is_supervised", FieldKind::Flag),
    ("is_mandatory", FieldKind::Flag),
    ("is_mdm_removable", FieldKind::Flag),
    ("allow_pairing", FieldKind::Flag),
    ("await_device_configured", FieldKind::Flag),
    ("auto_advance_setup", FieldKind::Flag),
    ("is_multi_user", FieldKind::Flag),
    ("is_return_to_service", FieldKind::Flag),
    ("do_not_use_profile_from_backup", FieldKind::Flag),
    ("department", FieldKind::Text),
    ("org_magic", FieldKind::Text),
    ("support_phone_number", FieldKind::Text),
    ("support_email_address", FieldKind::Text),
    ("language", FieldKind::Text),
    ("region", FieldKind::Text),
    ("skip_setup_items", FieldKind::TextList),
    ("anchor_certs", FieldKind::TextList),
    ("supervising_host_certs", FieldKind::TextList),
    ("user_affinity", FieldKind::Flag),
];

/// A settings field's JSON type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// A string.
    Text,
    /// `true` or `false`.
    Flag,
    /// An array of strings.
    TextList,
}

impl FieldKind {
    /// The type in words, for an error message.
    pub fn describe(self) -> &'static str {
        match self {
            FieldKind::Text => "a string",
            FieldKind::Flag => "true or false",
            FieldKind::TextList => "an array of strings",
        }
    }
}

/// Setup Assistant panes Apple knows how to skip (Apple's `SkipKeys`, current and
/// retired ones: Apple ignores a retired key, so accepting it breaks nothing).
pub const SKIP_SETUP_ITEMS: &[&str] = &[
    "Accessibility",
    "ActionButton",
    "AdditionalPrivacySettings",
    "Android",
    "Appearance",
    "AppleID",
    "AppStore",
    "Biometric",
    "CameraButton",
    "CloudStorage",
    "DeviceToDeviceMigration",
    "Diagnostics",
    "DisplayTone",
    "EnableLockdownMode",
    "ExpressLanguage",
    "FileVault",
    "HomeButtonSensitivity",
    "iCloudDiagnostics",
    "iCloudStorage",
    "iMessageAndFaceTime",
    "Intelligence",
    "Keyboard",
    "Location",
    "MessagingActivationUsingPhoneNumber",
    "Multitasking",
    "OnBoarding",
    "OSShowcase",
    "Passcode",
    "Payment",
    "PreferredLanguage",
    "Privacy",
    "Registration",
    "Restore",
    "RestoreCompleted",
    "Safety",
    "SafetyAndHandling",
    "ScreenSaver",
    "ScreenTime",
    "SIMSetup",
    "Siri",
    "SoftwareUpdate",
    "SpokenLanguage",
    "TapToSetup",
    "TermsOfAddress",
    "TOS",
    "TVHomeScreenSync",
    "TVProviderSignIn",
    "TVRoom",
    "UnlockWithWatch",
    "UpdateCompleted",
    "Wallpaper",
    "WatchMigration",
    "WebContentFiltering",
    "Welcome",
    "Zoom",
];

/// A policy's settings: Apple's profile fields (`name` is Apple's `profile_name`) and
/// whether devices enroll with user affinity.
///
/// Apple's flags are optional: absent means Apple's default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    /// Shown on the device (Apple's `profile_name`). Required: missing reads as empty,
    /// which [`PolicySettings::validate`] refuses naming the field.
    #[serde(default)]
    pub name: String,
    /// The MDM enrollment URL (required, like `name`).
    #[serde(default)]
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration_web_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_supervised: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_mandatory: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_mdm_removable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_pairing: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub await_device_configured: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_advance_setup: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_multi_user: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_return_to_service: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub do_not_use_profile_from_backup: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_magic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub support_phone_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub support_email_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip_setup_items: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anchor_certs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supervising_host_certs: Vec<String>,
    /// adesync's own: devices enroll with user affinity (a licensed user is then needed).
    #[serde(default)]
    pub user_affinity: bool,
}

/// Why a policy's settings are refused: the field and what is wrong, in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidPolicy {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> InvalidPolicy {
    InvalidPolicy {
        field,
        message: message.into(),
    }
}

fn chars(text: &str) -> usize {
    text.chars().count()
}

fn at_most(
    field: &'static str,
    value: &Option<String>,
    max: usize,
    apple_code: &str,
) -> Result<(), InvalidPolicy> {
    match value {
        Some(text) if chars(text) > max => Err(invalid(
            field,
            format!("must be at most {max} characters (Apple refuses it with {apple_code})"),
        )),
        _ => Ok(()),
    }
}

/// An `https` URL of at most [`MAX_URL_CHARS`] characters with a host.
fn https_url(text: &str) -> bool {
    let Some(rest) = text.strip_prefix("https://") else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = host.rsplit('@').next().unwrap_or_default();
    let host_name = host.split(':').next().unwrap_or_default();
    text.len() <= MAX_URL_CHARS
        && !host_name.is_empty()
        && host_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        && !text.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// `name@domain.tld`: one `@`, something on each side, a dot in the domain, no spaces.
fn email_like(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !text.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// `en`, `fr-CA`, `zh_Hans`: a 2–3 letter language with optional subtags.
fn language_tag(text: &str) -> bool {
    let mut parts = text.split(['-', '_']);
    let primary = parts
        .next()
        .is_some_and(|p| (2..=3).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphabetic()));
    primary
        && parts.all(|p| (2..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

impl PolicySettings {
    /// Refuses what Apple's define-profile refuses, naming the first bad field.
    pub fn validate(&self) -> Result<(), InvalidPolicy> {
        let name = self.name.trim();
        if name.is_empty() {
            return Err(invalid(
                "name",
                "is required (Apple refuses a profile without one: CONFIG_NAME_REQUIRED)",
            ));
        }
        if chars(&self.name) > MAX_NAME_CHARS {
            return Err(invalid(
                "name",
                format!(
                    "must be at most {MAX_NAME_CHARS} characters (Apple refuses it with CONFIG_NAME_INVALID)"
                ),
            ));
        }
        if self.name.chars().any(char::is_control) {
            return Err(invalid("name", "must not contain control characters"));
        }
        if self.url.is_empty() {
            return Err(invalid(
                "url",
                "is required: the MDM enrollment URL (CONFIG_URL_REQUIRED)",
            ));
        }
        if !https_url(&self.url) {
            return Err(invalid(
                "url",
                format!(
                    "must be an https URL of at most {MAX_URL_CHARS} characters (CONFIG_URL_INVALID)"
                ),
            ));
        }
        if let Some(web) = &self.configuration_web_url
            && !https_url(web)
        {
            return Err(invalid(
                "configuration_web_url",
                format!(
                    "must be an https URL of at most {MAX_URL_CHARS} characters (CONFIG_URL_INVALID)"
                ),
            ));
        }
        if self.is_mdm_removable == Some(false) && self.is_supervised != Some(true) {
            return Err(invalid(
                "is_mdm_removable",
                "may be false only when is_supervised is true (Apple refuses it with FLAGS_INVALID)",
            ));
        }
        at_most(
            "department",
            &self.department,
            MAX_DEPARTMENT_CHARS,
            "DEPARTMENT_INVALID",
        )?;
        at_most(
            "org_magic",
            &self.org_magic,
            MAX_ORG_MAGIC_CHARS,
            "MAGIC_INVALID",
        )?;
        at_most(
            "support_phone_number",
            &self.support_phone_number,
            MAX_SUPPORT_PHONE_CHARS,
            "SUPPORT_PHONE_INVALID",
        )?;
        at_most(
            "support_email_address",
            &self.support_email_address,
            MAX_SUPPORT_EMAIL_CHARS,
            "SUPPORT_EMAIL_INVALID",
        )?;
        if let Some(email) = &self.support_email_address
            && !email_like(email)
        {
            return Err(invalid(
                "support_email_address",
                "must be an e-mail address like help@example.com (SUPPORT_EMAIL_INVALID)",
            ));
        }
        if let Some(language) = &self.language
            && !language_tag(language)
        {
            return Err(invalid(
                "language",
                "must be a language code such as en or fr-CA (LOCALE_INVALID)",
            ));
        }
        if let Some(region) = &self.region
            && !(region.len() == 2 && region.chars().all(|c| c.is_ascii_alphabetic()))
        {
            return Err(invalid(
                "region",
                "must be a two-letter region code such as US (LOCALE_INVALID)",
            ));
        }
        if let Some(unknown) = self
            .skip_setup_items
            .iter()
            .find(|item| !SKIP_SETUP_ITEMS.contains(&item.as_str()))
        {
            return Err(invalid(
                "skip_setup_items",
                format!(
                    "{} is not a Setup Assistant pane Apple knows; use Apple's skip keys such as AppleID, Siri or TOS",
                    printable(unknown)
                ),
            ));
        }
        for (field, certs) in [
            ("anchor_certs", &self.anchor_certs),
            ("supervising_host_certs", &self.supervising_host_certs),
        ] {
            if certs.iter().any(|c| !base64_text(c)) {
                return Err(invalid(
                    field,
                    "must list certificates as base64-encoded DER",
                ));
            }
        }
        Ok(())
    }
}

/// An unknown value quoted back, cut short and stripped of anything unprintable.
fn printable(text: &str) -> String {
    let clean: String = text.chars().filter(|c| !c.is_control()).take(40).collect();
    format!("{clean:?}")
}

fn base64_text(text: &str) -> bool {
    !text.is_empty()
        && text.len().is_multiple_of(4)
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
}

/// A policy update: every field given replaces the stored one; `null` clears an
/// optional field (JSON merge-patch semantics, RFC 7396).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyPatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default, deserialize_with = "patch_value")]
    pub configuration_web_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch_value")]
    pub is_supervised: Option<Option<bool>>,
    #[serde(default, deserialize_with = "patch_value")]
    pub is_mandatory: Option<Option<bool>>,
    #[serde(default, deserialize_with = "patch_value")]
    pub is_mdm_removable: Option<Option<bool>>,
    #[serde(default, deserialize_with = "patch_value")]
    pub allow_pairing: Option<Option<bool>>,
    #[serde(default, deserialize_with = "patch_value")]
    pub await_device_configured: Option<Option<bool>>,
    #[serde(default, deserialize_with = "patch_value")]
    pub auto_advance_setup: Option<Option<bool>>,
    #[serde(default, deserialize_with = "patch_value")]
    pub is_multi_user: Option<Option<bool>>,
    #[serde(default, deserialize_with = "patch_value")]
    pub is_return_to_service: Option<Option<bool>>,
    #[serde(default, deserialize_with = "patch_value")]
    pub do_not_use_profile_from_backup: Option<Option<bool>>,
    #[serde(default, deserialize_with = "patch_value")]
    pub department: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch_value")]
    pub org_magic: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch_value")]
    pub support_phone_number: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch_value")]
    pub support_email_address: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch_value")]
    pub language: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch_value")]
    pub region: Option<Option<String>>,
    #[serde(default)]
    pub skip_setup_items: Option<Vec<String>>,
    #[serde(default)]
    pub anchor_certs: Option<Vec<String>>,
    #[serde(default)]
    pub supervising_host_certs: Option<Vec<String>>,
    #[serde(default)]
    pub user_affinity: Option<bool>,
}

/// A present field: `Some(value)`, with JSON `null` as `Some(None)`.
fn patch_value<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

impl PolicyPatch {
    /// The settings with this patch applied (not yet validated).
    pub fn apply(&self, current: &PolicySettings) -> PolicySettings {
        let mut next = current.clone();
        fn set<T: Clone>(target: &mut T, value: &Option<T>) {
            if let Some(value) = value {
                *target = value.clone();
            }
        }
        set(&mut next.name, &self.name);
        set(&mut next.url, &self.url);
        set(&mut next.configuration_web_url, &self.configuration_web_url);
        set(&mut next.is_supervised, &self.is_supervised);
        set(&mut next.is_mandatory, &self.is_mandatory);
        set(&mut next.is_mdm_removable, &self.is_mdm_removable);
        set(&mut next.allow_pairing, &self.allow_pairing);
        set(
            &mut next.await_device_configured,
            &self.await_device_configured,
        );
        set(&mut next.auto_advance_setup, &self.auto_advance_setup);
        set(&mut next.is_multi_user, &self.is_multi_user);
        set(&mut next.is_return_to_service, &self.is_return_to_service);
        set(
            &mut next.do_not_use_profile_from_backup,
            &self.do_not_use_profile_from_backup,
        );
        set(&mut next.department, &self.department);
        set(&mut next.org_magic, &self.org_magic);
        set(&mut next.support_phone_number, &self.support_phone_number);
        set(&mut next.support_email_address, &self.support_email_address);
        set(&mut next.language, &self.language);
        set(&mut next.region, &self.region);
        set(&mut next.skip_setup_items, &self.skip_setup_items);
        set(&mut next.anchor_certs, &self.anchor_certs);
        set(
            &mut next.supervising_host_certs,
            &self.supervising_host_certs,
        );
        set(&mut next.user_affinity, &self.user_affinity);
        next
    }

    /// Whether the patch changes what Apple's profile carries (everything but
    /// `user_affinity`, which only adesync reads): then a new profile is needed.
    pub fn changes_profile(&self, current: &PolicySettings) -> bool {
        let next = self.apply(current);
        PolicySettings {
            user_affinity: current.user_affinity,
            ..next
        } != *current
    }
}

/// A stored policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRecord {
    pub token: TokenId,
    pub policy: PolicyId,
    pub settings: PolicySettings,
    /// Bumped on every change of the settings.
    pub version: u64,
    pub device_count: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub profile_uuid: Option<String>,
    pub profile_version: Option<u64>,
    pub profile_error: Option<String>,
    pub reassign_pending: bool,
    pub reassign_after: Option<Serial>,
}

impl PolicyRecord {
    /// Apple's profile for the current settings, once defined.
    pub fn current_profile(&self) -> Option<&str> {
        match (&self.profile_uuid, self.profile_version) {
            (Some(uuid), Some(version)) if version == self.version => Some(uuid.as_str()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> PolicySettings {
        PolicySettings {
            name: "Sales iPhones".into(),
            url: "https://mdm.example.com/enroll".into(),
            ..PolicySettings::default()
        }
    }

    fn field_of(settings: PolicySettings) -> &'static str {
        settings.validate().expect_err("refused").field
    }

    #[test]
    fn a_minimal_policy_is_valid() {
        assert_eq!(valid().validate(), Ok(()));
        let full = PolicySettings {
            configuration_web_url: Some("https://mdm.example.com/auth".into()),
            is_supervised: Some(true),
            is_mdm_removable: Some(false),
            department: Some("D".repeat(MAX_DEPARTMENT_CHARS)),
            org_magic: Some("m".repeat(MAX_ORG_MAGIC_CHARS)),
            support_phone_number: Some("1".repeat(MAX_SUPPORT_PHONE_CHARS)),
            support_email_address: Some(format!(
                "{}@example.com",
                "a".repeat(MAX_SUPPORT_EMAIL_CHARS - 12)
            )),
            language: Some("fr-CA".into()),
            region: Some("CA".into()),
            skip_setup_items: vec!["AppleID".into(), "Siri".into()],
            anchor_certs: vec!["MIIB".into()],
            user_affinity: true,
            ..valid()
        };
        assert_eq!(full.validate(), Ok(()));
        assert_eq!(
            PolicySettings {
                name: "n".repeat(MAX_NAME_CHARS),
                ..valid()
            }
            .validate(),
            Ok(())
        );
    }

    #[test]
    fn each_apple_rule_names_its_field() {
        let cases: Vec<(PolicySettings, &str)> = vec![
            (
                PolicySettings {
                    name: " ".into(),
                    ..valid()
                },
                "name",
            ),
            (
                PolicySettings {
                    name: "n".repeat(MAX_NAME_CHARS + 1),
                    ..valid()
                },
                "name",
            ),
            (
                PolicySettings {
                    url: String::new(),
                    ..valid()
                },
                "url",
            ),
            (
                PolicySettings {
                    url: "http://mdm.example.com".into(),
                    ..valid()
                },
                "url",
            ),
            (
                PolicySettings {
                    url: "https://".into(),
                    ..valid()
                },
                "url",
            ),
            (
                PolicySettings {
                    url: format!("https://mdm.example.com/{}", "a".repeat(MAX_URL_CHARS)),
                    ..valid()
                },
                "url",
            ),
            (
                PolicySettings {
                    configuration_web_url: Some("ftp://x".into()),
                    ..valid()
                },
                "configuration_web_url",
            ),
            (
                PolicySettings {
                    is_mdm_removable: Some(false),
                    ..valid()
                },
                "is_mdm_removable",
            ),
            (
                PolicySettings {
                    is_mdm_removable: Some(false),
                    is_supervised: Some(false),
                    ..valid()
                },
                "is_mdm_removable",
            ),
            (
                PolicySettings {
                    department: Some("d".repeat(MAX_DEPARTMENT_CHARS + 1)),
                    ..valid()
                },
                "department",
            ),
            (
                PolicySettings {
                    org_magic: Some("m".repeat(MAX_ORG_MAGIC_CHARS + 1)),
                    ..valid()
                },
                "org_magic",
            ),
            (
                PolicySettings {
                    support_phone_number: Some("1".repeat(MAX_SUPPORT_PHONE_CHARS + 1)),
                    ..valid()
                },
                "support_phone_number",
            ),
            (
                PolicySettings {
                    support_email_address: Some("not-an-email".into()),
                    ..valid()
                },
                "support_email_address",
            ),
            (
                PolicySettings {
                    support_email_address: Some(format!(
                        "{}@example.com",
                        "a".repeat(MAX_SUPPORT_EMAIL_CHARS)
                    )),
                    ..valid()
                },
                "support_email_address",
            ),
            (
                PolicySettings {
                    language: Some("english!".into()),
                    ..valid()
                },
                "language",
            ),
            (
                PolicySettings {
                    region: Some("USA".into()),
                    ..valid()
                },
                "region",
            ),
            (
                PolicySettings {
                    skip_setup_items: vec!["AppleID".into(), "MakeCoffee".into()],
                    ..valid()
                },
                "skip_setup_items",
            ),
            (
                PolicySettings {
                    anchor_certs: vec!["not base64!".into()],
                    ..valid()
                },
                "anchor_certs",
            ),
        ];
        for (settings, field) in cases {
            assert_eq!(field_of(settings.clone()), field, "{settings:?}");
        }
    }

    #[test]
    fn a_patch_replaces_given_fields_and_null_clears() {
        let current = PolicySettings {
            department: Some("Sales".into()),
            ..valid()
        };
        let patch: PolicyPatch =
            serde_json::from_str(r#"{"name": "Renamed", "department": null}"#).unwrap();
        let next = patch.apply(&current);
        assert_eq!(next.name, "Renamed");
        assert_eq!(next.department, None);
        assert_eq!(next.url, current.url);
        assert!(patch.changes_profile(&current));
        let affinity: PolicyPatch = serde_json::from_str(r#"{"user_affinity": true}"#).unwrap();
        assert!(!affinity.changes_profile(&current));
        assert!(affinity.apply(&current).user_affinity);
        let same: PolicyPatch = serde_json::from_str(r#"{"name": "Sales iPhones"}"#).unwrap();
        assert!(!same.changes_profile(&current));
        assert!(serde_json::from_str::<PolicyPatch>(r#"{"colour": "red"}"#).is_err());
    }

    #[test]
    fn settings_round_trip_as_json_and_refuse_unknown_fields() {
        let settings = PolicySettings {
            skip_setup_items: vec!["TOS".into()],
            user_affinity: true,
            ..valid()
        };
        let json = serde_json::to_string(&settings).unwrap();
        assert_eq!(
            serde_json::from_str::<PolicySettings>(&json).unwrap(),
            settings
        );
        assert!(
            serde_json::from_str::<PolicySettings>(
                r#"{"name": "a", "url": "https://x.example", "profile_uuid": "X"}"#
            )
            .is_err()
        );
    }
}
