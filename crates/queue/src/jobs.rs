//! Jobs of the `sync-jobs` queue, consumed by the sync worker:
//! - [`SyncJob`]: "run this step of this run";
//! - [`AssignJob`]: "send this token's due profile assignments to Apple";
//! - [`SweepJob`]: "start the scheduled syncs of this page of tokens".
//!
//! [`Job::decode`] reads any. A sync job's JSON is unchanged (no tag), so messages
//! queued before the other jobs existed still decode; an assignment job says
//! `"job": "assign"`, a sweep page `"job": "sweep"`.

use adesync_core::assignment::AssignJob;
use adesync_core::fanout::SweepJob;
use adesync_core::run::messages::SyncJob;

use crate::{QueueError, Queues};

/// Any message of the sync-jobs queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    Sync(SyncJob),
    Assign(AssignJob),
    Sweep(SweepJob),
}

impl Job {
    /// Reads a message body by its `"job"` tag: `"assign"`, `"sweep"`, or
    /// none for a sync job.
    pub fn decode(body: &str) -> Result<Self, serde_json::Error> {
        let value: serde_json::Value = serde_json::from_str(body)?;
        match value.get("job") {
            None => Ok(Job::Sync(serde_json::from_value(value)?)),
            Some(tag) if tag == "sweep" => Ok(Job::Sweep(serde_json::from_value(value)?)),
            // "assign", or a tag no job has: the assignment job's decoder names it.
            Some(_) => Ok(Job::Assign(serde_json::from_value(value)?)),
        }
    }
}

impl Queues {
    /// Queues an assignment job.
    pub async fn send_assign_job(&self, job: &AssignJob) -> Result<(), QueueError> {
        self.client
            .send_message()
            .queue_url(&self.sync_jobs_url)
            .message_body(serde_json::to_string(job)?)
            .send()
            .await
            .map_err(|e| QueueError::sqs("SendMessage(assign job)", e))?;
        Ok(())
    }

    /// Makes a received sync-jobs message visible again `after` from now
    /// instead of at the end of the queue's visibility timeout: a step that
    /// failed for a passing reason is retried in seconds, not in the
    /// 9 minutes a killed step needs (which would eat most of its run's
    /// 15-minute lease).
    pub async fn redeliver_sync_job_after(
        &self,
        receipt_handle: &str,
        after: std::time::Duration,
    ) -> Result<(), QueueError> {
        let seconds = i32::try_from(after.as_secs().max(1)).unwrap_or(i32::MAX);
        self.client
            .change_message_visibility()
            .queue_url(&self.sync_jobs_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(seconds)
            .send()
            .await
            .map_err(|e| QueueError::sqs("ChangeMessageVisibility(sync job)", e))?;
        Ok(())
    }

    /// Queues a page of a scheduled pass, visible after `delay` (at most
    /// SQS's 15 minutes).
    pub async fn send_sweep_job(
        &self,
        job: &SweepJob,
        delay: std::time::Duration,
    ) -> Result<(), QueueError> {
        self.client
            .send_message()
            .queue_url(&self.sync_jobs_url)
            .message_body(serde_json::to_string(job)?)
            .delay_seconds(delay_seconds(delay))
            .send()
            .await
            .map_err(|e| QueueError::sqs("SendMessage(sweep job)", e))?;
        Ok(())
    }

    /// Queues a sync job, visible after `delay` (a scheduled pass spreads
    /// its starts; zero otherwise).
    pub async fn send_sync_job(
        &self,
        job: &SyncJob,
        delay: std::time::Duration,
    ) -> Result<(), QueueError> {
        self.client
            .send_message()
            .queue_url(&self.sync_jobs_url)
            .message_body(serde_json::to_string(job)?)
            .delay_seconds(delay_seconds(delay))
            .send()
            .await
            .map_err(|e| QueueError::sqs("SendMessage(sync job)", e))?;
        Ok(())
    }
}

/// SQS's `DelaySeconds` for `delay`: whole seconds, rounded to the nearest
/// so that sub-second spacing still spreads, at most its 15 minutes.
fn delay_seconds(delay: std::time::Duration) -> i32 {
    let seconds = delay.as_secs_f64().round().min(900.0);
    // In 0..=900 after the rounding and clamp: the cast is exact.
    seconds as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use adesync_core::fanout::{PassPlan, ScanPosition, Sweep};
    use adesync_core::ids::{AccountId, RunId, TokenId};
    use adesync_core::sync::{SyncKind, Trigger};

    #[test]
    fn delays_round_to_whole_seconds_within_sqs_limit() {
        let of = |seconds: f64| delay_seconds(std::time::Duration::from_secs_f64(seconds));
        assert_eq!(of(0.0), 0);
        assert_eq!(of(0.4), 0);
        assert_eq!(of(0.6), 1);
        assert_eq!(of(19.5), 20);
        assert_eq!(of(3_600.0), 900);
    }

    #[test]
    fn jobs_round_trip_and_refuse_hostile_ids() {
        let job = SyncJob {
            account_id: AccountId::parse("acme").unwrap(),
            token_id: TokenId::parse("t1").unwrap(),
            run_id: RunId::parse("r1").unwrap(),
            kind: SyncKind::Full,
            trigger: Trigger::Manual,
            step: 0,
        };
        let text = serde_json::to_string(&job).unwrap();
        assert_eq!(Job::decode(&text).unwrap(), Job::Sync(job));
        let hostile = text.replace("\"t1\"", "\"../t1\"");
        assert!(Job::decode(&hostile).is_err());
    }

    #[test]
    fn assignment_jobs_are_told_apart_and_checked() {
        let job = AssignJob::new(
            AccountId::parse("acme").unwrap(),
            TokenId::parse("t1").unwrap(),
        );
        let text = serde_json::to_string(&job).unwrap();
        assert!(text.contains("\"job\":\"assign\""), "{text}");
        assert_eq!(Job::decode(&text).unwrap(), Job::Assign(job));
        assert!(Job::decode(&text.replace("\"assign\"", "\"erase\"")).is_err());
        assert!(Job::decode(&text.replace("\"t1\"", "\"../t1\"")).is_err());
        // A message from before assignment jobs existed still decodes.
        let old = r#"{"account_id":"acme","token_id":"t1","run_id":"r1","kind":"delta","trigger":"scheduled"}"#;
        assert!(matches!(Job::decode(old).unwrap(), Job::Sync(_)));
    }

    #[test]
    fn sweep_pages_round_trip_and_refuse_what_no_pass_sends() {
        let first = SweepJob::first(Sweep::Delta, PassPlan::default(), 2);
        let next = first.next(ScanPosition {
            account_id: "acme".into(),
            token_id: "t9".into(),
        });
        assert_eq!(next.page, 1);
        assert_eq!(next.segment, 2);
        for job in [first, next] {
            let text = serde_json::to_string(&job).unwrap();
            assert!(text.contains("\"job\":\"sweep\""), "{text}");
            assert_eq!(Job::decode(&text).unwrap(), Job::Sweep(job));
        }
        let hostile = r#"{"job":"sweep","sweep":"delta","plan":{"segments":4,"page":100,"starts_per_second":20},"segment":-1}"#;
        assert!(Job::decode(hostile).is_err());
        assert!(Job::decode(&hostile.replace("\"delta\"", "\"weekly\"")).is_err());
    }
}
