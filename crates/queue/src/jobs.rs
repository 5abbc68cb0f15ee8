//! Sync jobs: "run this step of this run".

use adesync_core::ids::{AccountId, RunId, TokenId};
use adesync_core::sync::{SyncKind, Trigger};
use serde::{Deserialize, Serialize};

use crate::{QueueError, Queues};

/// One step of a sync run. The first step is queued by whoever claimed the
/// run; a worker nearing its deadline queues the next one itself. The
/// cursor is NOT in the message: it lives on the token item, saved only
/// after the devices it covers were accepted by SQS, so a replayed or
/// stale job can never move it backwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncJob {
    pub account_id: AccountId,
    pub token_id: TokenId,
    pub run_id: RunId,
    pub kind: SyncKind,
    pub trigger: Trigger,
    /// 0 for the first step, then 1, 2, … for continuations.
    #[serde(default)]
    pub step: u32,
}

impl SyncJob {
    pub fn decode(body: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(body)
    }
}

impl Queues {
    /// Queues a sync job.
    pub async fn send_sync_job(&self, job: &SyncJob) -> Result<(), QueueError> {
        self.client
            .send_message()
            .queue_url(&self.sync_jobs_url)
            .message_body(serde_json::to_string(job)?)
            .send()
            .await
            .map_err(|e| QueueError::sqs("SendMessage(sync job)", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(SyncJob::decode(&text).unwrap(), job);
        let hostile = text.replace("\"t1\"", "\"../t1\"");
        assert!(SyncJob::decode(&hostile).is_err());
    }
}
