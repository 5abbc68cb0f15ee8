//! AWS SDK clients, built once per process.

use aws_config::{BehaviorVersion, SdkConfig};

/// The SDK clients the functions use, sharing one HTTP connection pool each.
#[derive(Debug, Clone)]
pub struct Clients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub kms: aws_sdk_kms::Client,
    pub eventbridge: aws_sdk_eventbridge::Client,
}

impl Clients {
    /// Clients from the standard AWS environment: credentials, region and
    /// `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` (emulators).
    pub async fn from_env() -> Self {
        Self::from_sdk_config(&load_sdk_config().await)
    }

    /// Clients for explicit per-service endpoints (emulators).
    pub fn with_endpoints(
        config: &SdkConfig,
        dynamodb: &str,
        sqs: &str,
        kms: &str,
        eventbridge: &str,
    ) -> Self {
        Self {
            dynamodb: aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(config)
                    .retry_config(dynamodb_retries())
                    .endpoint_url(dynamodb)
                    .build(),
            ),
            sqs: aws_sdk_sqs::Client::from_conf(
                aws_sdk_sqs::config::Builder::from(config)
                    .endpoint_url(sqs)
                    .build(),
            ),
            kms: aws_sdk_kms::Client::from_conf(
                aws_sdk_kms::config::Builder::from(config)
                    .endpoint_url(kms)
                    .build(),
            ),
            eventbridge: aws_sdk_eventbridge::Client::from_conf(
                aws_sdk_eventbridge::config::Builder::from(config)
                    .endpoint_url(eventbridge)
                    .build(),
            ),
        }
    }

    pub fn from_sdk_config(config: &SdkConfig) -> Self {
        Self {
            dynamodb: aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(config)
                    .retry_config(dynamodb_retries())
                    .build(),
            ),
            sqs: aws_sdk_sqs::Client::new(config),
            kms: aws_sdk_kms::Client::new(config),
            eventbridge: aws_sdk_eventbridge::Client::new(config),
        }
    }
}

/// The adapters every function builds from its clients and settings: one
/// wiring, whichever function asks.
impl Clients {
    /// The DynamoDB tables.
    pub fn store(&self, config: &crate::Config) -> adesync_store::Store {
        adesync_store::Store::new(self.dynamodb.clone(), config.tables.clone())
    }

    /// The sync-jobs and device-batches queues.
    pub fn queues(&self, config: &crate::Config) -> adesync_queue::Queues {
        adesync_queue::Queues::new(
            self.sqs.clone(),
            &config.sync_jobs_queue_url,
            &config.device_batches_queue_url,
        )
        .with_device_batches_dlq(config.device_batches_dlq_url.clone())
    }

    /// The KMS envelope encryption of secrets.
    pub fn vault(&self, config: &crate::Config) -> adesync_secrets::Vault {
        adesync_secrets::Vault::new(self.kms.clone(), &config.kms_key_id)
    }
}

impl Clients {
    /// The domain events of the changes a function makes, with their outbox.
    pub fn announcer(
        &self,
        config: &crate::Config,
        faults: std::sync::Arc<adesync_service::faults::Faults>,
    ) -> adesync_service::announce::Announcer {
        adesync_service::announce::Announcer {
            publisher: self.publisher(config),
            store: self.store(config),
            faults,
        }
    }

    /// Every adapter the operations that talk to Apple use.
    pub fn adapters(
        &self,
        config: &crate::Config,
        clock: adesync_core::clock::SharedClock,
        faults: std::sync::Arc<adesync_service::faults::Faults>,
    ) -> Result<adesync_service::Adapters, adesync_apple::AppleError> {
        Ok(adesync_service::Adapters {
            store: self.store(config),
            queues: self.queues(config),
            vault: self.vault(config),
            apple: adesync_apple::AppleClient::new(config.apple(clock))?,
            events: self.announcer(config, faults),
        })
    }

    /// The domain events' bus (disabled when the environment names none).
    pub fn publisher(&self, config: &crate::Config) -> adesync_events::Publisher {
        adesync_events::Publisher::eventbridge(
            self.eventbridge.clone(),
            config.event_bus_name.as_deref(),
        )
    }
}

/// DynamoDB answers throttling per partition, in bursts: five attempts
/// (the SDK's default is three; AWS's own DynamoDB clients long used ten)
/// with short backoffs, so a read at the API's edge rides out a burst while
/// the worst case (about 4 s of waiting) stays far inside every function's
/// timeout. Writes the store wraps in its own retries get these too.
fn dynamodb_retries() -> aws_config::retry::RetryConfig {
    aws_config::retry::RetryConfig::standard()
        .with_max_attempts(5)
        .with_initial_backoff(std::time::Duration::from_millis(100))
        .with_max_backoff(std::time::Duration::from_secs(2))
}

/// The SDK configuration of the environment.
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}
