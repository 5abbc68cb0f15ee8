//! Enrollment on the MDM side: re-enroll actions, who may enroll, and the SCEP challenge.
//!
//! Apple's view of a device ([`crate::device::DeviceState`]: assigned to the MDM server
//! or released) says nothing about whether the device went through Setup Assistant and
//! enrolled. [`EnrollmentState`] is that other half, kept by the service:
//!
//! ```text
//!  not_enrolled ──enroll──> enrolled ──wipe──────────────────────> wiped ──enroll──> enrolled
//!                              └─────retire──> pending_reset ──factory-reset──┘
//! ```
//!
//! A device that already went through ADE re-enrolls only after a wipe, or a retire
//! followed by a factory reset (docs/product.md "Re-enroll"); every other action is refused
//! with [`InvalidAction`]. A policy may be assigned to a wiped device before it
//! activates again: assignment and enrollment state are independent.
//!
//! The SCEP challenge of an enrollment lives [`SCEP_CHALLENGE_LIFETIME`]; within it the
//! management profile can be downloaded again, after it the device must be reset.
//!
//! A challenge is a credential, so it is shown once: in the answer that issues it. Only
//! its [`ScepChallengeDigest`] is kept, which cannot give it back; a download of the
//! profile therefore issues a new challenge that replaces the previous one (docs/product.md).

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, EnrollmentId, PolicyId, Serial, TokenId, UserId};

/// How long an enrollment's SCEP challenge is valid (docs/product.md).
pub const SCEP_CHALLENGE_LIFETIME: Duration = Duration::minutes(15);

/// The message a device gets once its challenge expired (docs/product.md, word for word).
pub const SCEP_EXPIRED_MESSAGE: &str = "The SCEP server returned an invalid response.";

/// The MDM side of a device's life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnrollmentState {
    /// Never enrolled through the service.
    #[default]
    NotEnrolled,
    /// Activated and enrolled: it cannot enroll with ADE again until wiped.
    Enrolled,
    /// Retired (management removed) but not reset: it needs a factory reset.
    PendingReset,
    /// Wiped or factory reset: it may enroll again.
    Wiped,
}

impl EnrollmentState {
    pub fn as_str(self) -> &'static str {
        match self {
            EnrollmentState::NotEnrolled => "not_enrolled",
            EnrollmentState::Enrolled => "enrolled",
            EnrollmentState::PendingReset => "pending_reset",
            EnrollmentState::Wiped => "wiped",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "not_enrolled" => EnrollmentState::NotEnrolled,
            "enrolled" => EnrollmentState::Enrolled,
            "pending_reset" => EnrollmentState::PendingReset,
            "wiped" => EnrollmentState::Wiped,
            _ => return None,
        })
    }

    /// Whether a device in this state may enroll with ADE now.
    pub fn may_enroll(self) -> bool {
        matches!(self, EnrollmentState::NotEnrolled | EnrollmentState::Wiped)
    }
}

/// An administrator's re-enroll action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceAction {
    /// Erase the device through the MDM (it may enroll again).
    Wipe,
    /// Remove management, keep the device's data (a factory reset must follow).
    Retire,
    /// The factory reset of a retired device (it may enroll again).
    FactoryReset,
}

impl DeviceAction {
    /// The action's name in the API path.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceAction::Wipe => "wipe",
            DeviceAction::Retire => "retire",
            DeviceAction::FactoryReset => "factory-reset",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "wipe" => DeviceAction::Wipe,
            "retire" => DeviceAction::Retire,
            "factory-reset" => DeviceAction::FactoryReset,
            _ => return None,
        })
    }
}

/// An action that does not apply to the device's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a device that is {} cannot be {}", .state.as_str(), past(*.action))]
pub struct InvalidAction {
    pub state: EnrollmentState,
    pub action: DeviceAction,
}

fn past(action: DeviceAction) -> &'static str {
    match action {
        DeviceAction::Wipe => "wiped",
        DeviceAction::Retire => "retired",
        DeviceAction::FactoryReset => "factory reset",
    }
}

impl InvalidAction {
    /// What the administrator can do instead, in one sentence.
    pub fn advice(&self) -> &'static str {
        match (self.state, self.action) {
            (EnrollmentState::NotEnrolled | EnrollmentState::Wiped, _) => {
                "It is not enrolled, so there is nothing to wipe, retire or reset; it may enroll as it is."
            }
            (EnrollmentState::Enrolled, DeviceAction::FactoryReset) => {
                "Retire it first (or wipe it), then record the factory reset."
            }
            (EnrollmentState::PendingReset, DeviceAction::FactoryReset) => {
                "Record the factory reset once."
            }
            (EnrollmentState::PendingReset, _) => {
                "It is retired and no longer managed: factory reset it, then record the factory reset."
            }
            (EnrollmentState::Enrolled, _) => "Retry the request.",
        }
    }
}

/// The state an action leaves a device in.
pub fn apply(
    state: EnrollmentState,
    action: DeviceAction,
) -> Result<EnrollmentState, InvalidAction> {
    match (state, action) {
        (EnrollmentState::Enrolled, DeviceAction::Wipe) => Ok(EnrollmentState::Wiped),
        (EnrollmentState::Enrolled, DeviceAction::Retire) => Ok(EnrollmentState::PendingReset),
        (EnrollmentState::PendingReset, DeviceAction::FactoryReset) => Ok(EnrollmentState::Wiped),
        _ => Err(InvalidAction { state, action }),
    }
}

/// An enrollment's SCEP challenge: a secret the device presents to the SCEP server.
/// Its `Debug` never shows it, so it cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct ScepChallenge(String);

impl ScepChallenge {
    /// Wraps a challenge made by a secure random source.
    pub fn new(text: String) -> Self {
        Self(text)
    }

    /// The challenge itself, for the management profile only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ScepChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ScepChallenge([redacted])")
    }
}

/// What is kept of a SCEP challenge: its SHA-256. A challenge is 32 random bytes, so
/// nobody can search the digest back to it, and it still tells whether a challenge a
/// device presents is the current one; an unsalted, fast hash is enough for a secret
/// with that much entropy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScepChallengeDigest([u8; 32]);

impl ScepChallengeDigest {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// When a challenge issued at `now` stops working.
pub fn challenge_expires_at(now: DateTime<Utc>) -> DateTime<Utc> {
    now + SCEP_CHALLENGE_LIFETIME
}

/// What a license item is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Licensee {
    User(UserId),
    Device(Serial),
}

/// A stored enrollment. It holds nothing of the SCEP challenge: the challenge is in the
/// one answer that issues it, its digest only in the item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentRecord {
    pub id: EnrollmentId,
    pub account: AccountId,
    pub token: TokenId,
    pub serial: Serial,
    pub policy: PolicyId,
    pub user: Option<UserId>,
    pub created_at: DateTime<Utc>,
    /// When the SCEP challenge stops working.
    pub expires_at: DateTime<Utc>,
    /// Times the management profile was downloaded again.
    pub downloads: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATES: [EnrollmentState; 4] = [
        EnrollmentState::NotEnrolled,
        EnrollmentState::Enrolled,
        EnrollmentState::PendingReset,
        EnrollmentState::Wiped,
    ];
    const ACTIONS: [DeviceAction; 3] = [
        DeviceAction::Wipe,
        DeviceAction::Retire,
        DeviceAction::FactoryReset,
    ];

    #[test]
    fn the_whole_action_table() {
        use DeviceAction::*;
        use EnrollmentState::*;
        for state in STATES {
            for action in ACTIONS {
                let expected = match (state, action) {
                    (Enrolled, Wipe) => Some(Wiped),
                    (Enrolled, Retire) => Some(PendingReset),
                    (PendingReset, FactoryReset) => Some(Wiped),
                    _ => None,
                };
                match expected {
                    Some(next) => {
                        assert_eq!(apply(state, action), Ok(next), "{state:?} {action:?}")
                    }
                    None => {
                        let refused = apply(state, action).unwrap_err();
                        assert_eq!(refused, InvalidAction { state, action });
                        assert!(!refused.advice().is_empty());
                    }
                }
            }
        }
    }

    #[test]
    fn only_a_wipe_or_a_retire_then_reset_lets_an_enrolled_device_enroll_again() {
        assert!(EnrollmentState::NotEnrolled.may_enroll());
        assert!(!EnrollmentState::Enrolled.may_enroll());
        let wiped = apply(EnrollmentState::Enrolled, DeviceAction::Wipe).unwrap();
        assert!(wiped.may_enroll());
        let retired = apply(EnrollmentState::Enrolled, DeviceAction::Retire).unwrap();
        assert!(
            !retired.may_enroll(),
            "a retired device still needs its reset"
        );
        let reset = apply(retired, DeviceAction::FactoryReset).unwrap();
        assert!(reset.may_enroll());
    }

    #[test]
    fn names_round_trip() {
        for state in STATES {
            assert_eq!(EnrollmentState::parse(state.as_str()), Some(state));
        }
        for action in ACTIONS {
            assert_eq!(DeviceAction::parse(action.as_str()), Some(action));
        }
        assert_eq!(DeviceAction::parse("erase"), None);
        assert_eq!(
            InvalidAction {
                state: EnrollmentState::Wiped,
                action: DeviceAction::FactoryReset
            }
            .to_string(),
            "a device that is wiped cannot be factory reset"
        );
    }

    #[test]
    fn challenges_never_show_in_debug_output() {
        let challenge = ScepChallenge::new("s3cr3t-challenge".into());
        assert!(!format!("{challenge:?}").contains("s3cr3t"));
        assert_eq!(challenge.expose(), "s3cr3t-challenge");
        let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        assert_eq!(challenge_expires_at(t) - t, Duration::minutes(15));
    }
}
