//! The service's settings.
//!
//! On AWS they come from the function's environment (template.yaml's
//! `Globals.Function.Environment`); the local runner resolves the same
//! variables from the same template and hands them over with
//! [`Config::from_lookup`].

use adesync_store::Tables;

/// Environment variable names, as template.yaml sets them.
pub mod var {
    pub const ACCOUNTS_TABLE: &str = "ADESYNC_ACCOUNTS_TABLE";
    pub const TOKENS_TABLE: &str = "ADESYNC_TOKENS_TABLE";
    pub const DEVICES_TABLE: &str = "ADESYNC_DEVICES_TABLE";
    pub const POLICIES_TABLE: &str = "ADESYNC_POLICIES_TABLE";
    pub const RUNS_TABLE: &str = "ADESYNC_RUNS_TABLE";
    pub const SYNC_JOBS_QUEUE_URL: &str = "ADESYNC_SYNC_JOBS_QUEUE_URL";
    pub const DEVICE_BATCHES_QUEUE_URL: &str = "ADESYNC_DEVICE_BATCHES_QUEUE_URL";
    /// Optional: the device-batches dead-letter queue, where the importer
    /// sets aside a message that is not a batch at once.
    pub const DEVICE_BATCHES_DLQ_URL: &str = "ADESYNC_DEVICE_BATCHES_DLQ_URL";
    pub const KMS_KEY_ID: &str = "ADESYNC_KMS_KEY_ID";
    pub const APPLE_BASE_URL: &str = "ADESYNC_APPLE_BASE_URL";
    /// Optional: how long one Apple call may keep retrying (default 120 s).
    pub const APPLE_RETRY_DEADLINE_SECONDS: &str = "ADESYNC_APPLE_RETRY_DEADLINE_SECONDS";
    /// Optional: longest wait for one Apple answer (default 60 s).
    pub const APPLE_REQUEST_TIMEOUT_SECONDS: &str = "ADESYNC_APPLE_REQUEST_TIMEOUT_SECONDS";
    /// Optional: devices one part of a run's close sweeps and counts
    /// (default 20,000; see `adesync_service::import`).
    pub const CLOSE_PART_DEVICES: &str = "ADESYNC_CLOSE_PART_DEVICES";
    /// Optional: parallel scan segments of a scheduled pass (default 4).
    pub const SWEEP_SEGMENTS: &str = "ADESYNC_SWEEP_SEGMENTS";
    /// Optional: tokens one page of a scheduled pass reads (default 100).
    pub const SWEEP_PAGE_TOKENS: &str = "ADESYNC_SWEEP_PAGE_TOKENS";
    /// Optional: syncs a scheduled pass starts per second (default 20).
    pub const SYNC_STARTS_PER_SECOND: &str = "ADESYNC_SYNC_STARTS_PER_SECOND";
    /// Optional: the EventBridge bus the domain events go to (none: no events).
    pub const EVENT_BUS_NAME: &str = "ADESYNC_EVENT_BUS_NAME";
}

/// Everything a function needs to know about its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub tables: Tables,
    pub sync_jobs_queue_url: String,
    pub device_batches_queue_url: String,
    pub device_batches_dlq_url: Option<String>,
    pub kms_key_id: String,
    pub apple_base_url: String,
    /// How long one Apple call may keep retrying throttling and server errors.
    pub apple_retry_deadline: std::time::Duration,
    /// Longest wait for one Apple answer.
    pub apple_request_timeout: std::time::Duration,
    /// Devices one invocation of the importer sweeps and counts when it
    /// closes a run (a larger token takes several).
    pub close_part_devices: usize,
    /// How the scheduler cuts and paces its passes over every token.
    pub pass_plan: adesync_core::fanout::PassPlan,
    /// Where the domain events go; `None`: they are not published.
    pub event_bus_name: Option<String>,
}

/// A setting is missing.
#[derive(Debug, thiserror::Error)]
#[error(
    "the environment variable {0} is not set; deploy with template.yaml (which sets it) or start the service with `adesync-local serve`"
)]
pub struct MissingSetting(pub &'static str);

impl Config {
    /// Settings of the Apple client, whose waits run on `clock`.
    pub fn apple(&self, clock: adesync_core::clock::SharedClock) -> adesync_apple::AppleConfig {
        adesync_apple::AppleConfig {
            clock,
            base_url: self.apple_base_url.clone(),
            retry: adesync_apple::RetryPolicy {
                deadline: self.apple_retry_deadline,
                ..adesync_apple::RetryPolicy::default()
            },
            request_timeout: self.apple_request_timeout,
            ..adesync_apple::AppleConfig::default()
        }
    }

    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, MissingSetting> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup` (variable name → value).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, MissingSetting> {
        let get = |name: &'static str| {
            lookup(name)
                .filter(|v| !v.is_empty())
                .ok_or(MissingSetting(name))
        };
        Ok(Self {
            tables: Tables {
                accounts: get(var::ACCOUNTS_TABLE)?,
                tokens: get(var::TOKENS_TABLE)?,
                devices: get(var::DEVICES_TABLE)?,
                policies: get(var::POLICIES_TABLE)?,
                runs: get(var::RUNS_TABLE)?,
            },
            sync_jobs_queue_url: get(var::SYNC_JOBS_QUEUE_URL)?,
            device_batches_queue_url: get(var::DEVICE_BATCHES_QUEUE_URL)?,
            device_batches_dlq_url: lookup(var::DEVICE_BATCHES_DLQ_URL).filter(|v| !v.is_empty()),
            kms_key_id: get(var::KMS_KEY_ID)?,
            apple_base_url: lookup(var::APPLE_BASE_URL)
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "https://mdmenrollment.apple.com".to_owned()),
            apple_retry_deadline: seconds(&lookup, var::APPLE_RETRY_DEADLINE_SECONDS, 120),
            apple_request_timeout: seconds(&lookup, var::APPLE_REQUEST_TIMEOUT_SECONDS, 60),
            close_part_devices: lookup(var::CLOSE_PART_DEVICES)
                .and_then(|v| v.parse().ok())
                .filter(|n| *n > 0)
                .unwrap_or(DEFAULT_CLOSE_PART_DEVICES),
            pass_plan: {
                let default = adesync_core::fanout::PassPlan::default();
                let number = |name: &str, default: u32| {
                    lookup(name).and_then(|v| v.parse().ok()).unwrap_or(default)
                };
                adesync_core::fanout::PassPlan {
                    segments: number(var::SWEEP_SEGMENTS, default.segments),
                    page: number(var::SWEEP_PAGE_TOKENS, default.page),
                    starts_per_second: number(
                        var::SYNC_STARTS_PER_SECOND,
                        default.starts_per_second,
                    ),
                }
                .bounded()
            },
            event_bus_name: lookup(var::EVENT_BUS_NAME).filter(|v| !v.is_empty()),
        })
    }
}

/// See [`var::CLOSE_PART_DEVICES`]: measured to close well inside the
/// importer's 60 s timeout and 32 MiB (docs/performance.md).
pub const DEFAULT_CLOSE_PART_DEVICES: usize = 20_000;

/// An optional setting in whole seconds.
fn seconds(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: u64,
) -> std::time::Duration {
    std::time::Duration::from_secs(lookup(name).and_then(|v| v.parse().ok()).unwrap_or(default))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn a_missing_variable_is_named() {
        let env: HashMap<&str, &str> = HashMap::from([(var::ACCOUNTS_TABLE, "a")]);
        let err = Config::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap_err();
        assert_eq!(err.0, var::TOKENS_TABLE);
        assert!(err.to_string().contains("ADESYNC_TOKENS_TABLE"));
    }
}
