//! Profile assignment with Apple: the importer's default-policy hook, the assignment
//! pass (a job on the sync-jobs queue, run by the sync worker), and its hourly sweep.
//!
//! # How a newly synced device gets the default policy without slowing the import
//! The importer writes every device it imports anyway. [`prepare_writes`] puts the
//! default policy and a `pending` assignment into that same write (the pure rule is
//! `adesync_core::assignment::on_sync`) and reserves room on the policy's counter with
//! one conditional `ADD` per batch; [`settle_counts`] gives back what was not written.
//! No Apple call happens during the import. When the run closes, [`queue_if_due`]
//! queues an [`AssignJob`]; the sync worker runs [`run_job`], which reads the due
//! devices from the sparse `by-assignment-due` index, defines the policy's profile if
//! needed and assigns in requests of at most 1,000 serials.
//!
//! # Retries
//! Apple's answer is stored on each device ([`adesync_core::assignment::outcome`]):
//! a `FAILED` device is due again 24 hours later, a `THROTTLED` one after Apple's
//! `retry_after_seconds`. The scheduler's `{"sweep": "assignments"}` runs [`sweep`],
//! which queues a job for every token with due work.
//!
//! # Changed policies
//! Apple has no profile update. A policy whose settings changed is marked
//! `reassign_pending`; the job defines a new profile and walks the policy's devices
//! (the `by-policy` index), assigning each one whose assignment names another profile,
//! saving its progress on the policy as it goes.

use std::collections::{BTreeMap, HashMap, HashSet};

use adesync_apple::{AppleError, AppleSession, DeviceStatus, Profile};
use adesync_core::assignment::AssignJob;
use adesync_core::assignment::{
    self, AppleAnswer, Assignment, AssignmentStatus, MAX_SERIALS_PER_REQUEST,
};
use adesync_core::clock::Deadline;
use adesync_core::device::Device;
use adesync_core::device::{DeviceWrite, Stored};
use adesync_core::ids::{AccountId, PolicyId, Serial, TokenId};
use adesync_core::policy::PolicyRecord;
use adesync_core::policy::PolicySettings;
use adesync_queue::{QueueError, Queues};
use adesync_store::assignments::AssignerSlot;
use adesync_store::devices::Written;
use adesync_store::{Devices, Policies, Store, StoreError};
use chrono::{DateTime, Utc};

use crate::Adapters;
use crate::announce::Announcer;
use crate::session::SharedSession;
use crate::tokens::{self, CredentialsError};
use adesync_events::Event;

/// Time kept in hand before a job's deadline: one Apple request and its writes.
pub const DEADLINE_MARGIN: chrono::Duration = chrono::Duration::seconds(60);

/// Rounds of re-reading devices someone changed while their answer was being stored.
const CONFLICT_ROUNDS: usize = 5;

/// What an assignment could not do.
#[derive(Debug, thiserror::Error)]
pub enum AssignError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("the token's credentials could not be used: {0}")]
    Credentials(#[from] CredentialsError),
    /// Apple refused or could not be reached; the devices stay due.
    #[error(transparent)]
    Apple(#[from] AppleError),
    /// Apple refused the policy's settings when defining its profile.
    #[error("Apple refused the policy's profile: {0}")]
    ProfileRefused(String),
    /// Another assignment job of the token talks to Apple until `until`.
    #[error("another assignment job of this token runs until {until}")]
    Busy { until: DateTime<Utc> },
}

impl AssignError {
    /// When a job refused for [`AssignError::Busy`] may run: its holder's
    /// deadline. None for other failures.
    pub fn retry_at(&self) -> Option<DateTime<Utc>> {
        match self {
            AssignError::Busy { until } => Some(*until),
            _ => None,
        }
    }
}

/// Apple's profile for a policy's settings.
pub fn apple_profile(settings: &PolicySettings) -> Profile {
    Profile {
        profile_name: settings.name.clone(),
        url: Some(settings.url.clone()),
        configuration_web_url: settings.configuration_web_url.clone(),
        is_supervised: settings.is_supervised,
        is_mandatory: settings.is_mandatory,
        is_mdm_removable: settings.is_mdm_removable,
        allow_pairing: settings.allow_pairing,
        await_device_configured: settings.await_device_configured,
        auto_advance_setup: settings.auto_advance_setup,
        is_multi_user: settings.is_multi_user,
        is_return_to_service: settings.is_return_to_service,
        do_not_use_profile_from_backup: settings.do_not_use_profile_from_backup,
        department: settings.department.clone(),
        org_magic: settings.org_magic.clone(),
        support_phone_number: settings.support_phone_number.clone(),
        support_email_address: settings.support_email_address.clone(),
        language: settings.language.clone(),
        region: settings.region.clone(),
        skip_setup_items: settings.skip_setup_items.clone(),
        anchor_certs: settings.anchor_certs.clone(),
        supervising_host_certs: settings.supervising_host_certs.clone(),
        ..Profile::default()
    }
}

/// One token's line to Apple for an assignment: its session, kept for later callers.
pub struct AppleLink<'a> {
    store: &'a Store,
    events: &'a Announcer,
    account: AccountId,
    token: TokenId,
    session: AppleSession,
}

impl<'a> AppleLink<'a> {
    /// Opens the token's credentials and its shared Apple session.
    pub async fn open(
        adapters: &'a Adapters,
        account: &AccountId,
        token: &TokenId,
    ) -> Result<Self, AssignError> {
        let (credentials, cached) =
            tokens::load_credentials(&adapters.store.tokens, &adapters.vault, account, token)
                .await?;
        let keeper = SharedSession::new(
            &adapters.store.tokens,
            &adapters.vault,
            adapters.apple.config().clock.clone(),
            account,
            token,
        );
        let session = adapters
            .apple
            .session(token.as_str(), credentials, cached)
            .with_keeper(keeper);
        Ok(Self {
            store: &adapters.store,
            events: &adapters.events,
            account: account.clone(),
            token: token.clone(),
            session,
        })
    }

    /// Keeps Apple's session for the token's next calls if Apple rotated it.
    pub async fn close(self) {
        self.session.keep_current().await;
    }

    /// Apple's profile for the policy's current settings, defined now if needed.
    pub async fn ensure_profile(&self, policy: &PolicyRecord) -> Result<String, AssignError> {
        let mut policy = policy.clone();
        for _ in 0..3 {
            if let Some(uuid) = policy.current_profile() {
                return Ok(uuid.to_owned());
            }
            let defined = match self
                .session
                .define_profile(&apple_profile(&policy.settings))
                .await
            {
                Ok(defined) => defined,
                Err(AppleError::BadRequest { code }) => {
                    let message = format!(
                        "Apple refused the policy's profile ({code}); correct the policy's settings."
                    );
                    self.store
                        .policies
                        .set_policy_profile_error(
                            &self.token,
                            &policy.policy,
                            policy.version,
                            &message,
                        )
                        .await?;
                    return Err(AssignError::ProfileRefused(code));
                }
                Err(error) => return Err(error.into()),
            };
            if self
                .store
                .policies
                .set_policy_profile(
                    &self.token,
                    &policy.policy,
                    policy.version,
                    &defined.profile_uuid,
                )
                .await?
            {
                tracing::info!(policy = %policy.policy, version = policy.version, "policy's profile defined with Apple");
                return Ok(defined.profile_uuid);
            }
            // The settings changed, or someone recorded a profile first: use theirs.
            match self
                .store
                .policies
                .policy(&self.token, &policy.policy)
                .await?
            {
                Some(current) => policy = current,
                None => {
                    return Err(AssignError::ProfileRefused(
                        "the policy was deleted".to_owned(),
                    ));
                }
            }
        }
        Err(StoreError::Unprocessed("define policy profile").into())
    }

    /// Assigns `profile_uuid` to `devices` (of `policy`) in requests of at most 1,000
    /// serials, and stores each device's answer. Returns the answers stored.
    pub async fn assign(
        &self,
        policy: &PolicyId,
        profile_uuid: &str,
        devices: Vec<Stored>,
        now: DateTime<Utc>,
    ) -> Result<Vec<(Serial, Assignment)>, AssignError> {
        let mut recorded = Vec::with_capacity(devices.len());
        for chunk in devices.chunks(MAX_SERIALS_PER_REQUEST) {
            let serials: Vec<String> = chunk
                .iter()
                .map(|s| s.device.serial.as_str().to_owned())
                .collect();
            let answer = self.session.assign_profile(profile_uuid, &serials).await?;
            let outcomes: HashMap<Serial, Assignment> = chunk
                .iter()
                .map(|stored| {
                    let serial = &stored.device.serial;
                    // A serial Apple left out of its answer is retried like a failure.
                    let status = answer
                        .devices
                        .get(serial.as_str())
                        .copied()
                        .unwrap_or(DeviceStatus::Failed);
                    let answered = match status {
                        DeviceStatus::Success => AppleAnswer::Success,
                        DeviceStatus::NotAccessible => AppleAnswer::NotAccessible,
                        DeviceStatus::Throttled => AppleAnswer::Throttled {
                            retry_after_seconds: answer.retry_after_seconds,
                        },
                        DeviceStatus::Failed | DeviceStatus::Unknown => AppleAnswer::Failed,
                    };
                    (
                        serial.clone(),
                        assignment::outcome(
                            answered,
                            answer.profile_uuid.as_deref().unwrap_or(profile_uuid),
                            now,
                        ),
                    )
                })
                .collect();
            self.record(policy, chunk, &outcomes, now).await?;
            recorded.extend(outcomes);
        }
        Ok(recorded)
    }

    /// Stores Apple's answers on the devices, re-reading those changed
    /// meanwhile, then announces each answer stored (`device.assigned`).
    async fn record(
        &self,
        policy: &PolicyId,
        devices: &[Stored],
        outcomes: &HashMap<Serial, Assignment>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut landed = Vec::new();
        let result = self
            .write_answers(policy, devices, outcomes, now, &mut landed)
            .await;
        let events: Vec<Event> = landed
            .iter()
            .filter_map(|device| Event::device_assigned(&self.account, &self.token, device, now))
            .collect();
        let key = format!(
            "assigned#{}#{:08x}",
            now.timestamp_millis(),
            rand::random::<u32>()
        );
        self.events
            .publish_or_keep(&self.token, &key, events, now)
            .await;
        result
    }

    /// Writes Apple's answers, conditional on what was read; `landed` gets
    /// every device whose write landed.
    async fn write_answers(
        &self,
        policy: &PolicyId,
        devices: &[Stored],
        outcomes: &HashMap<Serial, Assignment>,
        now: DateTime<Utc>,
        landed: &mut Vec<Device>,
    ) -> Result<(), StoreError> {
        let mut current: Vec<Stored> = devices.to_vec();
        for _ in 0..CONFLICT_ROUNDS {
            let writes: Vec<DeviceWrite> = current
                .iter()
                .filter_map(|stored| {
                    let outcome = outcomes.get(&stored.device.serial)?.clone();
                    assignment::record(&stored.device, policy, outcome, now).map(|device| {
                        DeviceWrite {
                            device,
                            expected: Some(stored.revision),
                        }
                    })
                })
                .collect();
            let Written { conflicts, .. } = self
                .store
                .devices
                .write_devices(&self.token, writes.clone())
                .await?;
            landed.extend(
                writes
                    .into_iter()
                    .filter(|w| !conflicts.contains(&w.device.serial))
                    .map(|w| w.device),
            );
            if conflicts.is_empty() {
                return Ok(());
            }
            current = self
                .store
                .devices
                .get_devices(&self.token, &conflicts)
                .await?
                .into_values()
                .collect();
        }
        tracing::warn!(
            "some devices kept changing; their assignment stays due and is retried later"
        );
        Ok(())
    }
}

// ---------------------------------------------------------------- importer hooks

/// The policy moves a batch's writes make, for [`settle_counts`].
#[derive(Debug, Default)]
pub struct Moves {
    /// (serial, the policy it counted in, the policy it counts in once written)
    moves: Vec<(Serial, Option<PolicyId>, Option<PolicyId>)>,
}

/// Puts newly synced devices into the token's default policy, in the writes the
/// importer makes anyway, and reserves room for them on the policy's counter. A full
/// (or just deleted) policy takes none: they are imported without a policy.
pub async fn prepare_writes(
    store: &Policies,
    token: &TokenId,
    default: Option<&PolicyId>,
    stored: &HashMap<Serial, Stored>,
    writes: &mut [DeviceWrite],
    now: DateTime<Utc>,
) -> Result<Moves, StoreError> {
    let before = |serial: &Serial| stored.get(serial).map(|s| &s.device);
    for write in writes.iter_mut() {
        let after = write.device.clone();
        write.device = assignment::on_sync(before(&write.device.serial), after, default, now);
    }
    let mut moves = Moves::default();
    let mut joining: BTreeMap<PolicyId, u64> = BTreeMap::new();
    for write in writes.iter() {
        let from = before(&write.device.serial).and_then(|d| d.policy_id.clone());
        let to = write.device.policy_id.clone();
        if from != to {
            if let Some(to) = &to {
                *joining.entry(to.clone()).or_default() += 1;
            }
            moves.moves.push((write.device.serial.clone(), from, to));
        }
    }
    for (policy, count) in joining {
        if store.reserve_policy_devices(token, &policy, count).await? {
            continue;
        }
        tracing::warn!(policy = %policy, count, "the default policy is full or gone; these devices are imported without it");
        for write in writes.iter_mut() {
            if write.device.policy_id.as_ref() == Some(&policy) {
                let previous = before(&write.device.serial);
                if previous.and_then(|d| d.policy_id.as_ref()) != Some(&policy) {
                    write.device.policy_id = previous.and_then(|d| d.policy_id.clone());
                    write.device.management.assignment =
                        previous.and_then(|d| d.management.assignment.clone());
                }
            }
        }
        moves
            .moves
            .retain(|(_, _, to)| to.as_ref() != Some(&policy));
    }
    Ok(moves)
}

/// After the writes: counts out the policies devices left, and gives back the room
/// reserved for devices that were not written (`conflicts`: decided again later).
pub async fn settle_counts(
    store: &Policies,
    token: &TokenId,
    moves: Moves,
    conflicts: &[Serial],
) -> Result<(), StoreError> {
    let conflicted: HashSet<&Serial> = conflicts.iter().collect();
    let mut deltas: BTreeMap<PolicyId, i64> = BTreeMap::new();
    for (serial, from, to) in moves.moves {
        if conflicted.contains(&serial) {
            if let Some(to) = to {
                *deltas.entry(to).or_default() -= 1;
            }
        } else if let Some(from) = from {
            *deltas.entry(from).or_default() -= 1;
        }
    }
    for (policy, delta) in deltas {
        store.add_policy_devices(token, &policy, delta).await?;
    }
    Ok(())
}

/// Deletes the devices of a close's page that are past their deletion
/// date: with their policy count when a policy counts them (the TTL would
/// leave the count behind), each conditional on the revision read (one
/// changed meanwhile is left for the next close). Returns the devices kept
/// and the ones deleted, which the close announces.
pub async fn drop_expired(
    store: &Store,
    token: &TokenId,
    devices: Vec<Stored>,
    now: DateTime<Utc>,
) -> Result<(Vec<Stored>, Vec<Device>), StoreError> {
    let (expired, kept): (Vec<Stored>, Vec<Stored>) =
        devices.into_iter().partition(|s| s.device.is_expired(now));
    if expired.is_empty() {
        return Ok((kept, Vec::new()));
    }
    let (counted, uncounted): (Vec<Stored>, Vec<Stored>) = expired
        .into_iter()
        .partition(|s| s.device.policy_id.is_some());
    let doomed: Vec<(Serial, u64, PolicyId)> = counted
        .iter()
        .filter_map(|s| {
            Some((
                s.device.serial.clone(),
                s.revision,
                s.device.policy_id.clone()?,
            ))
        })
        .collect();
    let gone: HashSet<Serial> = store
        .policies
        .delete_counted_devices(token, &doomed)
        .await?
        .into_iter()
        .collect();
    let mut deleted: Vec<Device> = counted
        .into_iter()
        .filter(|s| gone.contains(&s.device.serial))
        .map(|s| s.device)
        .collect();
    for stored in uncounted {
        if store
            .devices
            .delete_expired_device(token, &stored.device.serial, stored.revision)
            .await?
        {
            deleted.push(stored.device);
        }
    }
    tracing::info!(deleted = deleted.len(), "expired devices deleted");
    Ok((kept, deleted))
}

/// Queues the token's assignment job if any assignment is due (after a run closes).
pub async fn queue_if_due(
    store: &Devices,
    queues: &Queues,
    account: &AccountId,
    token: &TokenId,
    now: DateTime<Utc>,
) -> Result<bool, AssignError> {
    if !store.has_due_assignments(token, now).await? {
        return Ok(false);
    }
    queues
        .send_assign_job(&AssignJob::new(account.clone(), token.clone()))
        .await?;
    Ok(true)
}

// ------------------------------------------------------------------ the job

/// What a job step did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct JobReport {
    pub assigned: usize,
    pub not_accessible: usize,
    pub failed: usize,
    pub throttled: usize,
    /// Assign requests sent to Apple.
    pub requests: usize,
    /// The deadline came near and the next step was queued.
    pub continued: bool,
}

impl JobReport {
    fn count(&mut self, answers: &[(Serial, Assignment)]) {
        for (_, answer) in answers {
            match answer.status {
                AssignmentStatus::Assigned => self.assigned += 1,
                AssignmentStatus::NotAccessible => self.not_accessible += 1,
                AssignmentStatus::Failed => self.failed += 1,
                AssignmentStatus::Throttled => self.throttled += 1,
                AssignmentStatus::Pending => {}
            }
        }
        self.requests += answers.len().div_ceil(MAX_SERIALS_PER_REQUEST);
    }
}

/// Runs one step of an assignment job: moves changed policies' devices to their new
/// profiles, then assigns every due device. A step nearing `deadline` queues the next.
#[tracing::instrument(skip(adapters, job, deadline), fields(token = %job.token_id, step = job.step))]
pub async fn run_job(
    adapters: &Adapters,
    job: &AssignJob,
    now: DateTime<Utc>,
    deadline: &Deadline,
) -> Result<JobReport, AssignError> {
    let store = &adapters.store;
    let token = &job.token_id;
    // One assigner per token while it talks to Apple; its slot lasts until
    // this invocation's deadline, so a killed job frees it by itself.
    let assigner = crate::holder_id();
    match store
        .claims
        .claim_assigner(&job.account_id, token, &assigner, deadline.at(), now)
        .await?
    {
        AssignerSlot::Taken => {}
        AssignerSlot::TokenGone => {
            tracing::info!("the token no longer exists; dropping the assignment job");
            return Ok(JobReport::default());
        }
        AssignerSlot::Busy { until } => return Err(AssignError::Busy { until }),
    }
    let result = assign_holding_slot(adapters, job, now, deadline).await;
    if let Err(error) = store
        .claims
        .release_assigner(&job.account_id, token, &assigner)
        .await
    {
        tracing::warn!(%error, "the assigner slot stays taken until this job's deadline");
    }
    result
}

/// [`run_job`] once it holds the token's assigner slot.
async fn assign_holding_slot(
    adapters: &Adapters,
    job: &AssignJob,
    now: DateTime<Utc>,
    deadline: &Deadline,
) -> Result<JobReport, AssignError> {
    let store = &adapters.store;
    let token = &job.token_id;
    let link = match AppleLink::open(adapters, &job.account_id, token).await {
        Ok(link) => link,
        Err(AssignError::Credentials(CredentialsError::NoCredentials)) => {
            tracing::info!("the token has no credentials; nothing can be assigned");
            return Ok(JobReport::default());
        }
        Err(error) => return Err(error),
    };
    let mut report = JobReport::default();
    let result = async {
        let policies = store.policies.list_policies(token).await?;
        for policy in policies.iter().filter(|p| p.reassign_pending) {
            if !reassign(&link, policy, now, deadline, &mut report).await? {
                return Ok(false);
            }
        }
        assign_due(&link, &policies, now, deadline, &mut report).await
    }
    .await;
    link.close().await;
    let finished = match result {
        // Apple's trouble is not the message's: the devices stay due and the hourly
        // sweep tries again, rather than SQS redelivering into the same trouble.
        Err(AssignError::Apple(error)) => {
            tracing::warn!(%error, "Apple could not take the assignments now; they stay due");
            true
        }
        other => other?,
    };
    if !finished {
        let next = AssignJob {
            step: job.step + 1,
            ..job.clone()
        };
        adapters.queues.send_assign_job(&next).await?;
        report.continued = true;
    }
    tracing::info!(?report, "assignment step done");
    Ok(report)
}

fn near(deadline: &Deadline) -> bool {
    !deadline.leaves(DEADLINE_MARGIN)
}

/// Moves a changed policy's devices to its new profile. Returns false when the
/// deadline stopped it.
async fn reassign(
    link: &AppleLink<'_>,
    policy: &PolicyRecord,
    now: DateTime<Utc>,
    deadline: &Deadline,
    report: &mut JobReport,
) -> Result<bool, AssignError> {
    let store = link.store;
    let token = &link.token;
    let profile = match link.ensure_profile(policy).await {
        Ok(profile) => profile,
        Err(AssignError::ProfileRefused(code)) => {
            tracing::warn!(policy = %policy.policy, code, "the changed policy's profile was refused; its devices keep the old one");
            return Ok(true);
        }
        Err(error) => return Err(error),
    };
    let mut after = policy.reassign_after.clone();
    loop {
        if near(deadline) {
            return Ok(false);
        }
        let (serials, next) = store
            .devices
            .list_policy_serials(
                token,
                &policy.policy,
                after.as_ref(),
                MAX_SERIALS_PER_REQUEST as u32,
            )
            .await?;
        let stored = store.devices.get_devices(token, &serials).await?;
        let moving: Vec<Stored> = serials
            .iter()
            .filter_map(|serial| stored.get(serial).cloned())
            .filter(|s| needs_profile(&s.device, &policy.policy, &profile, now))
            .collect();
        if !moving.is_empty() {
            let answers = link.assign(&policy.policy, &profile, moving, now).await?;
            report.count(&answers);
        }
        after = serials.last().cloned().or(after);
        let done = next.is_none();
        if !store
            .policies
            .save_reassign_progress(token, &policy.policy, policy.version, after.as_ref(), done)
            .await?
        {
            // Changed again meanwhile: the next job starts the move over.
            return Ok(true);
        }
        if done {
            tracing::info!(policy = %policy.policy, "devices moved to the policy's new profile");
            return Ok(true);
        }
    }
}

/// Whether a device of `policy` still has to get `profile` (and Apple has not asked
/// us to wait for it).
fn needs_profile(device: &Device, policy: &PolicyId, profile: &str, now: DateTime<Utc>) -> bool {
    device.policy_id.as_ref() == Some(policy)
        && device.is_listed(now)
        && device.state == adesync_core::device::DeviceState::Active
        && device.management.assignment.as_ref().is_none_or(|a| {
            // Already on this profile, or not on Apple's MDM server: nothing to send.
            let settled = match a.status {
                AssignmentStatus::Assigned => a.profile_uuid.as_deref() == Some(profile),
                AssignmentStatus::NotAccessible => true,
                _ => false,
            };
            !settled && !a.cooling_down(now)
        })
}

/// Assigns every device whose assignment is due. Returns false when the deadline
/// stopped it.
async fn assign_due(
    link: &AppleLink<'_>,
    policies: &[PolicyRecord],
    now: DateTime<Utc>,
    deadline: &Deadline,
    report: &mut JobReport,
) -> Result<bool, AssignError> {
    let store = link.store;
    let token = &link.token;
    let by_id: HashMap<&PolicyId, &PolicyRecord> =
        policies.iter().map(|p| (&p.policy, p)).collect();
    let mut profiles: HashMap<PolicyId, Option<String>> = HashMap::new();
    let mut after = None;
    loop {
        if near(deadline) {
            return Ok(false);
        }
        let (due, next) = store
            .devices
            .due_assignments(token, now, after.as_ref(), MAX_SERIALS_PER_REQUEST as u32)
            .await?;
        let serials: Vec<Serial> = due.iter().map(|d| d.serial.clone()).collect();
        let stored = store.devices.get_devices(token, &serials).await?;
        let mut groups: BTreeMap<PolicyId, Vec<Stored>> = BTreeMap::new();
        let mut orphans = Vec::new();
        for serial in &serials {
            let Some(s) = stored.get(serial) else {
                continue;
            };
            let due_now = s
                .device
                .management
                .assignment
                .as_ref()
                .is_some_and(|a| a.is_due(now));
            if !due_now {
                continue;
            }
            match s
                .device
                .policy_id
                .as_ref()
                .filter(|p| by_id.contains_key(p))
            {
                Some(policy) if s.device.is_listed(now) => {
                    groups.entry(policy.clone()).or_default().push(s.clone())
                }
                _ => orphans.push(s.clone()),
            }
        }
        clear_orphans(&store.devices, token, orphans, now).await?;
        for (policy, devices) in groups {
            let Some(record) = by_id.get(&policy) else {
                continue;
            };
            let profile = match profiles.get(&policy) {
                Some(profile) => profile.clone(),
                None => {
                    let profile = match link.ensure_profile(record).await {
                        Ok(profile) => Some(profile),
                        Err(AssignError::ProfileRefused(code)) => {
                            tracing::warn!(policy = %policy, code, "the policy's profile was refused; its devices stay pending");
                            None
                        }
                        Err(error) => return Err(error),
                    };
                    profiles.insert(policy.clone(), profile.clone());
                    profile
                }
            };
            let Some(profile) = profile else { continue };
            let answers = link.assign(&policy, &profile, devices, now).await?;
            report.count(&answers);
        }
        match next {
            Some(next) => after = Some(next),
            None => return Ok(true),
        }
    }
}

/// Due assignments of devices that no longer hold a (living) policy are dropped.
async fn clear_orphans(
    store: &Devices,
    token: &TokenId,
    orphans: Vec<Stored>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let writes: Vec<DeviceWrite> = orphans
        .into_iter()
        .filter(|s| s.device.policy_id.is_none() || !s.device.is_listed(now))
        .map(|s| {
            let mut device = s.device;
            device.management.assignment = None;
            DeviceWrite {
                device,
                expected: Some(s.revision),
            }
        })
        .collect();
    if !writes.is_empty() {
        store.write_devices(token, writes).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------- the sweep

/// The hourly assignment sweep's work for one token (a page of the pass is
/// [`crate::schedule::sweep_page`]): queues its assignment job if it has
/// due assignments or a changed policy. Returns whether it queued one.
pub async fn sweep_token(
    store: &Store,
    queues: &Queues,
    account: &AccountId,
    token: &TokenId,
    now: DateTime<Utc>,
) -> Result<bool, AssignError> {
    let due = store.devices.has_due_assignments(token, now).await?
        || store
            .policies
            .list_policies(token)
            .await?
            .iter()
            .any(|p| p.reassign_pending);
    if due {
        queues
            .send_assign_job(&AssignJob::new(account.clone(), token.clone()))
            .await?;
    }
    Ok(due)
}
