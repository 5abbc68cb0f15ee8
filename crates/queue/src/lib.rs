//! The SQS adapter.
//!
//! # Layout
//! - [`batches`]: the `device-batches` FIFO queue: device records of a run
//!   in Apple's order, then an end-of-run marker.
//! - [`jobs`]: the `sync-jobs` queue: one message per run step, or per
//!   assignment pass of a token, consumed by the sync worker (a run re-queues
//!   its own continuation).
//!
//! The messages themselves are domain types (`adesync_core::run::messages`,
//! `AssignJob`, `SweepJob`); this crate only encodes them: JSON bodies,
//! splitting devices into messages that fit SQS, FIFO groups and
//! deduplication ids, retries of refused entries. Producers and consumers
//! both go through it, so the wire format cannot drift apart.

pub mod batches;
pub mod jobs;

use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};

/// The queues of the service; cheap to clone.
#[derive(Debug, Clone)]
pub struct Queues {
    client: aws_sdk_sqs::Client,
    sync_jobs_url: String,
    device_batches_url: String,
    /// Where a device batch that can never be applied is set aside.
    device_batches_dlq_url: Option<String>,
}

impl Queues {
    pub fn new(
        client: aws_sdk_sqs::Client,
        sync_jobs_url: impl Into<String>,
        device_batches_url: impl Into<String>,
    ) -> Self {
        Self {
            client,
            sync_jobs_url: sync_jobs_url.into(),
            device_batches_url: device_batches_url.into(),
            device_batches_dlq_url: None,
        }
    }

    /// With the device-batches dead-letter queue, where
    /// [`Queues::set_aside_batch`] puts unreadable messages.
    pub fn with_device_batches_dlq(mut self, url: Option<String>) -> Self {
        self.device_batches_dlq_url = url.filter(|u| !u.is_empty());
        self
    }

    pub fn device_batches_url(&self) -> &str {
        &self.device_batches_url
    }
}

/// A failure to hand messages to SQS.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("the queue request {operation} failed ({code})")]
    Sqs {
        operation: &'static str,
        code: String,
        #[source]
        source: anyhow::Error,
    },
    /// SQS accepted the request but refused some of its entries.
    #[error("SQS refused {failed} of {total} messages (first: {first_code})")]
    Rejected {
        failed: usize,
        total: usize,
        first_code: String,
    },
    #[error("a message could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("a sender panicked while holding the batch state")]
    Poisoned,
}

impl QueueError {
    /// True when retrying later may succeed (throttling, transport).
    pub fn is_transient(&self) -> bool {
        match self {
            QueueError::Sqs { code, .. } => matches!(
                code.as_str(),
                "transport"
                    | "ThrottlingException"
                    | "RequestThrottled"
                    | "ServiceUnavailable"
                    | "InternalError"
            ),
            _ => false,
        }
    }

    pub(crate) fn sqs<E, R>(operation: &'static str, error: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let code = error
            .as_service_error()
            .and_then(|e| e.code())
            .unwrap_or("transport")
            .to_owned();
        Self::Sqs {
            operation,
            code,
            source: anyhow::Error::new(error),
        }
    }
}
