//! Enrollment policies: create, show, change and delete them, choose the token's
//! default, and assign devices to a policy (in adesync and in Apple).
//!
//! Every limit is a condition in the store's transactions (1,000 policies per token,
//! 200,000 devices per policy, no delete while devices are assigned); the reads here
//! only refuse early and name the numbers. A changed policy's devices move to its new
//! profile in the background ([`crate::assign`]): Apple has no profile update.

use std::collections::{HashMap, HashSet};

use adesync_core::assignment::AssignJob;
use adesync_core::assignment::{self, Assignment};
use adesync_core::device::DeviceState;
use adesync_core::device::{DeviceWrite, Stored};
use adesync_core::ids::{AccountId, PolicyId, Serial, TokenId};
use adesync_core::policy::PolicyRecord;
use adesync_core::policy::{InvalidPolicy, MAX_DEVICES_PER_POLICY, PolicyPatch, PolicySettings};
use adesync_queue::Queues;
use adesync_store::policies::{
    CountedWrite, CreatePolicyError, DefaultPolicyError, DeletePolicyError,
};
use adesync_store::{Policies, Store, StoreError};
use chrono::{DateTime, Utc};

use crate::Adapters;
use crate::assign::{AppleLink, AssignError};

/// Serial numbers one assignment request may name (Apple gets them 1,000 at a time).
pub const MAX_SERIALS_PER_CALL: usize = 5_000;

/// Rounds of re-reading devices a sync changed while they were being assigned.
const CONFLICT_ROUNDS: usize = 5;

/// Why a policy operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("no such token")]
    TokenNotFound,
    #[error("no such policy")]
    NotFound,
    #[error(transparent)]
    Invalid(#[from] InvalidPolicy),
    #[error("the token already has the most enrollment policies allowed")]
    LimitReached,
    #[error("{device_count} devices are assigned to the policy")]
    InUse { device_count: u64 },
    /// The policy would hold more than [`MAX_DEVICES_PER_POLICY`] devices.
    #[error("the policy would hold more than {MAX_DEVICES_PER_POLICY} devices")]
    DeviceLimitReached { device_count: u64, adding: u64 },
    /// Serial numbers that are not devices of the token.
    #[error("{} serial numbers are not devices of this token", .0.len())]
    UnknownDevices(Vec<Serial>),
    /// Devices released from Apple Business: Apple cannot assign them.
    #[error("{} devices are no longer assigned to this token in Apple Business", .0.len())]
    InactiveDevices(Vec<Serial>),
    /// The policy changed during the request; retrying is safe.
    #[error("the policy changed during the request")]
    Changed,
    /// Devices kept changing (a sync importing them); retrying is safe.
    #[error("the devices kept changing during the request")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A new policy for `token` (which the caller has checked belongs to `account`).
pub async fn create(
    store: &Policies,
    account: &AccountId,
    token: &TokenId,
    settings: PolicySettings,
    now: DateTime<Utc>,
) -> Result<PolicyRecord, PolicyError> {
    settings.validate()?;
    let policy = PolicyId::new_at(now);
    store
        .create_policy(account, token, &policy, &settings, now)
        .await
        .map_err(|e| match e {
            CreatePolicyError::LimitReached => PolicyError::LimitReached,
            CreatePolicyError::TokenNotFound => PolicyError::TokenNotFound,
            CreatePolicyError::Store(e) => PolicyError::Store(e),
        })
        .inspect(|_| tracing::info!(token = %token, policy = %policy, "policy created"))
}

/// The token's default policy, if it has one.
pub async fn default_policy(
    store: &Policies,
    account: &AccountId,
    token: &TokenId,
) -> Result<Option<PolicyId>, PolicyError> {
    Ok(store.default_policy_id(account, token).await?)
}

/// One policy of the token.
pub async fn get(
    store: &Policies,
    token: &TokenId,
    policy: &PolicyId,
) -> Result<PolicyRecord, PolicyError> {
    store
        .policy(token, policy)
        .await?
        .ok_or(PolicyError::NotFound)
}

/// Applies `patch` to a policy. A change Apple's profile carries makes a new profile
/// and queues the move of the policy's devices to it.
pub async fn update(
    store: &Store,
    queues: &Queues,
    account: &AccountId,
    token: &TokenId,
    policy: &PolicyId,
    patch: &PolicyPatch,
    now: DateTime<Utc>,
) -> Result<PolicyRecord, PolicyError> {
    for _ in 0..3 {
        let current = get(&store.policies, token, policy).await?;
        let settings = patch.apply(&current.settings);
        settings.validate()?;
        let new_profile = patch.changes_profile(&current.settings);
        let Some(updated) = store
            .policies
            .update_policy(token, policy, current.version, &settings, new_profile, now)
            .await?
        else {
            continue;
        };
        if new_profile && updated.device_count > 0 {
            // The hourly sweep also finds the policy marked; queueing now is sooner.
            if let Err(error) = queues
                .send_assign_job(&AssignJob::new(account.clone(), token.clone()))
                .await
            {
                tracing::warn!(%error, "the move to the new profile waits for the next sweep");
            }
        }
        tracing::info!(token = %token, policy = %policy, new_profile, "policy changed");
        return Ok(updated);
    }
    Err(PolicyError::Changed)
}

/// Deletes a policy no device is assigned to.
pub async fn delete(
    store: &Policies,
    account: &AccountId,
    token: &TokenId,
    policy: &PolicyId,
) -> Result<(), PolicyError> {
    store
        .delete_policy(account, token, policy)
        .await
        .map_err(|e| match e {
            DeletePolicyError::NotFound => PolicyError::NotFound,
            DeletePolicyError::InUse { device_count } => PolicyError::InUse { device_count },
            DeletePolicyError::Store(e) => PolicyError::Store(e),
        })
        .inspect(|()| tracing::info!(token = %token, policy = %policy, "policy deleted"))
}

/// Makes `policy` the token's default policy.
pub async fn set_default(
    store: &Policies,
    account: &AccountId,
    token: &TokenId,
    policy: &PolicyId,
) -> Result<(), PolicyError> {
    store
        .set_default_policy(account, token, Some(policy))
        .await
        .map_err(|e| match e {
            DefaultPolicyError::PolicyNotFound => PolicyError::NotFound,
            DefaultPolicyError::TokenNotFound => PolicyError::TokenNotFound,
            DefaultPolicyError::Store(e) => PolicyError::Store(e),
        })
}

/// How one device fared in an assignment request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceResult {
    pub serial: Serial,
    /// Apple's answer as stored, or `pending` when Apple could not be asked.
    pub assignment: Assignment,
}

/// The outcome of assigning devices to a policy.
#[derive(Debug, Clone)]
pub struct AssignReport {
    pub policy: PolicyRecord,
    pub results: Vec<DeviceResult>,
    /// Why Apple was not (fully) asked: the devices stay pending and are retried.
    pub apple_problem: Option<String>,
}

/// Assigns `serials` of `token` to `policy`: in adesync first (each device's policy
/// with the policies' counts, in one transaction per chunk), then in Apple, whose
/// answer per device is stored and returned.
pub async fn assign_devices(
    adapters: &Adapters,
    account: &AccountId,
    token: &TokenId,
    policy: &PolicyId,
    serials: &[Serial],
    now: DateTime<Utc>,
) -> Result<AssignReport, PolicyError> {
    let store = &adapters.store;
    let record = get(&store.policies, token, policy).await?;
    let mut wanted: Vec<Serial> = Vec::with_capacity(serials.len());
    let mut seen = HashSet::new();
    for serial in serials {
        if seen.insert(serial.clone()) {
            wanted.push(serial.clone());
        }
    }
    let devices = assign_in_adesync(store, token, &record, &wanted, now).await?;

    let mut report = AssignReport {
        policy: record.clone(),
        results: Vec::new(),
        apple_problem: None,
    };
    let answers = async {
        let link = AppleLink::open(adapters, account, token).await?;
        let answers = async {
            let profile = link.ensure_profile(&record).await?;
            link.assign(policy, &profile, devices.clone(), now).await
        }
        .await;
        link.close().await;
        answers
    }
    .await;
    let answered: HashMap<Serial, Assignment> = match answers {
        Ok(answers) => answers.into_iter().collect(),
        Err(AssignError::Store(error)) => return Err(error.into()),
        Err(error) => {
            tracing::warn!(%error, "Apple could not take the assignment now; the devices stay pending");
            report.apple_problem = Some(apple_problem(&error));
            HashMap::new()
        }
    };
    report.results = devices
        .iter()
        .map(|stored| {
            let serial = stored.device.serial.clone();
            let assignment = answered
                .get(&serial)
                .cloned()
                .or_else(|| stored.device.management.assignment.clone())
                .unwrap_or_else(|| Assignment::pending(now));
            DeviceResult { serial, assignment }
        })
        .collect();
    if let Some(updated) = store.policies.policy(token, policy).await? {
        report.policy = updated;
    }
    Ok(report)
}

/// The administrator-facing sentence for an Apple problem.
fn apple_problem(error: &AssignError) -> String {
    match error {
        AssignError::ProfileRefused(code) => format!(
            "Apple refused the policy's profile ({code}); correct the policy, the devices stay pending."
        ),
        AssignError::Credentials(_) => {
            "The token's credentials could not be used; renew the token. The devices stay pending."
                .to_owned()
        }
        other => format!("{other}. The devices stay pending and are retried automatically."),
    }
}

/// Moves the devices to the policy with their counts; returns them as written.
async fn assign_in_adesync(
    store: &Store,
    token: &TokenId,
    policy: &PolicyRecord,
    serials: &[Serial],
    now: DateTime<Utc>,
) -> Result<Vec<Stored>, PolicyError> {
    let mut pending: Vec<Serial> = serials.to_vec();
    let mut done: Vec<Stored> = Vec::with_capacity(serials.len());
    for round in 0..CONFLICT_ROUNDS {
        let stored = store.devices.get_devices(token, &pending).await?;
        if round == 0 {
            check_devices(&stored, &pending, now)?;
            let adding = pending
                .iter()
                .filter(|s| {
                    stored.get(*s).and_then(|d| d.device.policy_id.as_ref()) != Some(&policy.policy)
                })
                .count() as u64;
            if policy.device_count + adding > MAX_DEVICES_PER_POLICY {
                return Err(PolicyError::DeviceLimitReached {
                    device_count: policy.device_count,
                    adding,
                });
            }
        }
        let mut writes = Vec::with_capacity(pending.len());
        for serial in &pending {
            let Some(current) = stored.get(serial) else {
                return Err(PolicyError::UnknownDevices(vec![serial.clone()]));
            };
            writes.push(CountedWrite {
                write: DeviceWrite {
                    device: assignment::assign(&current.device, &policy.policy, now),
                    expected: Some(current.revision),
                },
                from: current.device.policy_id.clone(),
            });
        }
        let written: HashMap<Serial, Stored> = writes
            .iter()
            .map(|w| {
                (
                    w.write.device.serial.clone(),
                    Stored {
                        device: w.write.device.clone(),
                        revision: w.write.expected.map_or(1, |r| r + 1),
                    },
                )
            })
            .collect();
        let outcome = store.policies.write_devices_counted(token, writes).await?;
        if !outcome.refused.is_empty() {
            let current = store
                .policies
                .policy(token, &policy.policy)
                .await?
                .map_or(policy.device_count, |p| p.device_count);
            return Err(PolicyError::DeviceLimitReached {
                device_count: current,
                adding: outcome.refused.len() as u64,
            });
        }
        let conflicted: HashSet<&Serial> = outcome.conflicts.iter().collect();
        done.extend(
            written
                .into_iter()
                .filter(|(serial, _)| !conflicted.contains(serial))
                .map(|(_, stored)| stored),
        );
        if outcome.conflicts.is_empty() {
            return Ok(done);
        }
        pending = outcome.conflicts;
    }
    Err(PolicyError::Busy)
}

/// Every serial must be a listed, active device of the token.
fn check_devices(
    stored: &HashMap<Serial, Stored>,
    serials: &[Serial],
    now: DateTime<Utc>,
) -> Result<(), PolicyError> {
    let unknown: Vec<Serial> = serials
        .iter()
        .filter(|s| stored.get(*s).is_none_or(|d| !d.device.is_listed(now)))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(PolicyError::UnknownDevices(unknown));
    }
    let inactive: Vec<Serial> = serials
        .iter()
        .filter(|s| {
            stored
                .get(*s)
                .is_some_and(|d| d.device.state != DeviceState::Active)
        })
        .cloned()
        .collect();
    if !inactive.is_empty() {
        return Err(PolicyError::InactiveDevices(inactive));
    }
    Ok(())
}
