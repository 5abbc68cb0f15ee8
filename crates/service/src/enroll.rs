//! Enrollment: re-enroll actions, device users, licenses, and ADE enrollments with
//! their 15-minute SCEP challenge.
//!
//! A SCEP challenge is a credential: whoever holds it can enroll a device into the
//! organisation until it expires. So it is shown once, in the answer that issues it, and
//! only its SHA-256 is stored. Downloading the management profile again (the product
//! allows it within the 15 minutes) needs the challenge too, and the stored digest cannot
//! give it back: each download issues a new challenge, which replaces the previous one
//! for the rest of the enrollment's 15 minutes. Nothing needs the challenge back later,
//! so a digest is all the store holds — no key, nothing to unseal.
//!
//! The rules are pure functions of `adesync_core` (`enrollment::apply`,
//! `license::check`); this module gathers their facts and writes their outcome, each
//! device write conditional on the revision it read (a sync importing the device at
//! the same moment makes the loser read again).

use adesync_core::device::{Device, DeviceState};
use adesync_core::device::{DeviceWrite, Stored};
use adesync_core::enrollment::EnrollmentRecord;
use adesync_core::enrollment::Licensee;
use adesync_core::enrollment::{
    self, DeviceAction, EnrollmentState, InvalidAction, SCEP_CHALLENGE_LIFETIME, ScepChallenge,
    ScepChallengeDigest,
};
use adesync_core::ids::{AccountId, EnrollmentId, Serial, TokenId, UserId};
use adesync_core::license::{self, LicenseFacts, LicenseNeeded};
use adesync_core::policy::PolicyRecord;
use adesync_core::scope::Scope;
use adesync_store::enrollments::EnrollmentUse;
use adesync_store::{Devices, Enrollments, Store, StoreError};
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Rounds of re-reading a device a sync changed under us.
const CONFLICT_ROUNDS: usize = 5;

/// Why an enrollment operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// No listed device with that serial in the token.
    #[error("no such device")]
    DeviceNotFound,
    /// The serial is not an active device of any token of the account.
    #[error("the device is not assigned to any token of this account")]
    NotAssigned,
    /// The device has no enrollment policy.
    #[error("the device has no enrollment policy")]
    NoPolicy,
    /// Already activated: it must be wiped (or retired and reset) first.
    #[error("the device is {} and must be wiped before it can enroll again", .0.as_str())]
    NotWiped(EnrollmentState),
    #[error(transparent)]
    LicenseRequired(#[from] LicenseNeeded),
    #[error(transparent)]
    InvalidAction(#[from] InvalidAction),
    /// Actions apply to devices Apple still assigns to the token.
    #[error("the device was released from Apple Business")]
    Released,
    #[error("no such enrollment")]
    EnrollmentNotFound,
    #[error("{}", enrollment::SCEP_EXPIRED_MESSAGE)]
    ChallengeExpired,
    #[error("the device kept changing during the request")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

async fn listed_device(
    store: &Devices,
    token: &TokenId,
    serial: &Serial,
    now: DateTime<Utc>,
) -> Result<Stored, EnrollError> {
    match store.get_device(token, serial).await? {
        Some(stored) if stored.device.is_listed(now) => Ok(stored),
        _ => Err(EnrollError::DeviceNotFound),
    }
}

/// Reads the device, changes it with `change` and writes it conditionally, again
/// after a conflict. Returns the device as written.
async fn change_device(
    store: &Store,
    token: &TokenId,
    serial: &Serial,
    now: DateTime<Utc>,
    change: impl Fn(&Device) -> Result<Device, EnrollError>,
) -> Result<Device, EnrollError> {
    for _ in 0..CONFLICT_ROUNDS {
        let stored = listed_device(&store.devices, token, serial, now).await?;
        let next = change(&stored.device)?;
        let written = store
            .devices
            .write_devices(
                token,
                vec![DeviceWrite {
                    device: next.clone(),
                    expected: Some(stored.revision),
                }],
            )
            .await?;
        if written.conflicts.is_empty() {
            return Ok(next);
        }
    }
    Err(EnrollError::Busy)
}

/// Records an administrator's re-enroll action on a device of `token`.
pub async fn act(
    store: &Store,
    token: &TokenId,
    serial: &Serial,
    action: DeviceAction,
    now: DateTime<Utc>,
) -> Result<Device, EnrollError> {
    let device = change_device(store, token, serial, now, |device| {
        if device.state != DeviceState::Active {
            return Err(EnrollError::Released);
        }
        let state = enrollment::apply(device.management.enrollment, action)?;
        let mut next = device.clone();
        next.management.enrollment = state;
        next.management.last_action = Some(action);
        next.management.enrollment_changed_at = Some(now);
        Ok(next)
    })
    .await?;
    tracing::info!(token = %token, serial = %serial, action = action.as_str(),
        state = device.management.enrollment.as_str(), "re-enroll action recorded");
    Ok(device)
}

/// Associates a user with a device of `token` (None: none).
pub async fn set_user(
    store: &Store,
    token: &TokenId,
    serial: &Serial,
    user: Option<UserId>,
    now: DateTime<Utc>,
) -> Result<Device, EnrollError> {
    change_device(store, token, serial, now, |device| {
        let mut next = device.clone();
        next.management.user_id = user.clone();
        Ok(next)
    })
    .await
}

/// Grants or withdraws a license of the account.
pub async fn set_license(
    store: &Enrollments,
    account: &AccountId,
    licensee: &Licensee,
    licensed: bool,
    now: DateTime<Utc>,
) -> Result<(), EnrollError> {
    store.set_license(account, licensee, licensed, now).await?;
    Ok(())
}

/// An enrollment granted.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub enrollment: EnrollmentRecord,
    /// Its first challenge, for this answer only.
    pub challenge: ScepChallenge,
    pub policy: PolicyRecord,
    pub device: Device,
}

/// A management profile downloaded again.
#[derive(Debug, Clone)]
pub struct Profile {
    pub enrollment: EnrollmentRecord,
    /// The challenge this download issued, for its answer only; the one before stopped
    /// working.
    pub challenge: ScepChallenge,
    /// None if the policy was deleted since.
    pub policy: Option<PolicyRecord>,
}

/// A device enrolling with ADE: finds it among the account's tokens, checks that it
/// may enroll (not already activated, licensed) and issues its enrollment with a new
/// SCEP challenge, marking the device enrolled in the same transaction.
///
/// A caller limited by scope tags finds only devices of the tokens it sees.
pub async fn enroll(
    store: &Store,
    account: &AccountId,
    scope: &Scope,
    serial: &Serial,
    user: Option<UserId>,
    now: DateTime<Utc>,
) -> Result<Enrolled, EnrollError> {
    for _ in 0..CONFLICT_ROUNDS {
        let (token, stored) = find_active(store, account, scope, serial, now).await?;
        let device = &stored.device;
        let policy_id = device.policy_id.clone().ok_or(EnrollError::NoPolicy)?;
        let policy = store
            .policies
            .policy(&token, &policy_id)
            .await?
            .ok_or(EnrollError::NoPolicy)?;
        if !device.management.enrollment.may_enroll() {
            return Err(EnrollError::NotWiped(device.management.enrollment));
        }
        let licensed = |licensee: Licensee| async move {
            store.enrollments.is_licensed(account, &licensee).await
        };
        let enrolling_user = match &user {
            Some(user) => Some(licensed(Licensee::User(user.clone())).await?),
            None => None,
        };
        let associated_user = match &device.management.user_id {
            Some(user) => Some(licensed(Licensee::User(user.clone())).await?),
            None => None,
        };
        let facts = LicenseFacts {
            user_affinity: policy.settings.user_affinity,
            enrolling_user,
            device_licensed: licensed(Licensee::Device(serial.clone())).await?,
            associated_user,
        };
        license::check(facts)?;

        let mut next = device.clone();
        next.management.enrollment = EnrollmentState::Enrolled;
        next.management.enrollment_changed_at = Some(now);
        let record = EnrollmentRecord {
            id: EnrollmentId::new_at(now),
            account: account.clone(),
            token: token.clone(),
            serial: serial.clone(),
            policy: policy_id,
            user: user.clone().or_else(|| device.management.user_id.clone()),
            created_at: now,
            expires_at: enrollment::challenge_expires_at(now),
            downloads: 0,
        };
        let write = DeviceWrite {
            device: next.clone(),
            expected: Some(stored.revision),
        };
        let challenge = new_challenge();
        if store
            .enrollments
            .create_enrollment(&record, &challenge_digest(&challenge), &write)
            .await?
        {
            tracing::info!(token = %token, serial = %serial, enrollment = %record.id, "device enrolled");
            return Ok(Enrolled {
                enrollment: record,
                challenge,
                policy,
                device: next,
            });
        }
    }
    Err(EnrollError::Busy)
}

/// The enrollment's management profile, downloaded again within its 15 minutes, with a
/// new SCEP challenge that replaces the previous one. Two downloads at the same moment
/// are two downloads: the one DynamoDB applies last holds.
///
/// A caller limited by scope tags gets only the enrollments of the tokens it
/// sees; any other is not found, as another account's (checked before the
/// download issues a challenge).
pub async fn profile(
    store: &Store,
    account: &AccountId,
    scope: &Scope,
    id: &EnrollmentId,
    now: DateTime<Utc>,
) -> Result<Profile, EnrollError> {
    if scope.limited_to().is_some() {
        let token = match store.enrollments.enrollment(account, id).await? {
            Some(enrollment) => enrollment.token,
            None => return Err(missing(id, now)),
        };
        if crate::status::sync_view(&store.claims, account, scope, &token)
            .await?
            .is_none()
        {
            return Err(EnrollError::EnrollmentNotFound);
        }
    }
    let challenge = new_challenge();
    match store
        .enrollments
        .use_enrollment(account, id, &challenge_digest(&challenge), now)
        .await?
    {
        EnrollmentUse::Valid(enrollment) => {
            let policy = store
                .policies
                .policy(&enrollment.token, &enrollment.policy)
                .await?;
            Ok(Profile {
                enrollment,
                challenge,
                policy,
            })
        }
        EnrollmentUse::Expired(_) => Err(EnrollError::ChallengeExpired),
        EnrollmentUse::Missing => Err(missing(id, now)),
    }
}

/// No enrollment item: DynamoDB's TTL deleted it (or it never existed). An id of ours
/// older than a challenge's lifetime is an expired challenge, whichever it was.
fn missing(id: &EnrollmentId, now: DateTime<Utc>) -> EnrollError {
    match id.issued_at() {
        Some(issued) if issued + SCEP_CHALLENGE_LIFETIME <= now => EnrollError::ChallengeExpired,
        _ => EnrollError::EnrollmentNotFound,
    }
}

/// The serial's active device among the account's tokens.
async fn find_active(
    store: &Store,
    account: &AccountId,
    scope: &Scope,
    serial: &Serial,
    now: DateTime<Utc>,
) -> Result<(TokenId, Stored), EnrollError> {
    for token in store.devices.tokens_with_serial(serial).await? {
        // Another account's token, or one outside the caller's scope.
        if crate::status::sync_view(&store.claims, account, scope, &token)
            .await?
            .is_none()
        {
            continue;
        }
        if let Some(stored) = store.devices.get_device(&token, serial).await?
            && stored.device.is_listed(now)
            && stored.device.state == DeviceState::Active
        {
            return Ok((token, stored));
        }
    }
    Err(EnrollError::NotAssigned)
}

/// 32 random bytes from a cryptographically secure generator (seeded by the
/// operating system), as hex.
fn new_challenge() -> ScepChallenge {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    ScepChallenge::new(hex::encode(bytes))
}

/// What the store keeps of a challenge: the SHA-256 of its text, as a device would
/// present it.
pub fn challenge_digest(challenge: &ScepChallenge) -> ScepChallengeDigest {
    ScepChallengeDigest::from_bytes(Sha256::digest(challenge.expose().as_bytes()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_challenge_is_kept_as_its_sha256_only() {
        let challenge = ScepChallenge::new("abc".into());
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            hex::encode(challenge_digest(&challenge).as_bytes()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let (one, other) = (new_challenge(), new_challenge());
        assert_eq!(one.expose().len(), 64);
        assert_ne!(one, other);
        assert_ne!(challenge_digest(&one), challenge_digest(&other));
    }
}
