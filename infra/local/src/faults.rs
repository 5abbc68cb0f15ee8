//! Faults the local AWS cannot produce by itself, for fault tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextMut;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;

/// Answers every `every`-th DynamoDB request with
/// `ProvisionedThroughputExceededException`, as DynamoDB does under load
/// (DynamoDB Local never throttles). The request itself was carried out or
/// not — like a real throttle, the caller cannot tell and must retry.
#[derive(Debug, Clone)]
pub struct ThrottleDynamo {
    every: u64,
    seen: Arc<AtomicU64>,
    thrown: Arc<AtomicU64>,
}

impl ThrottleDynamo {
    pub fn every(every: u64) -> Self {
        Self {
            every: every.max(2),
            seen: Arc::default(),
            thrown: Arc::default(),
        }
    }

    /// How many responses were replaced so far.
    pub fn thrown(&self) -> u64 {
        self.thrown.load(Ordering::Relaxed)
    }
}

impl Intercept for ThrottleDynamo {
    fn name(&self) -> &'static str {
        "ThrottleDynamo"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let n = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        if !n.is_multiple_of(self.every) {
            return Ok(());
        }
        self.thrown.fetch_add(1, Ordering::Relaxed);
        let response = context.response_mut();
        *response.status_mut() = 400u16.try_into()?;
        response
            .headers_mut()
            .insert("content-type", "application/x-amz-json-1.0");
        *response.body_mut() = SdkBody::from(
            r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"The level of configured provisioned throughput for the table was exceeded (injected by a fault test)."}"#,
        );
        Ok(())
    }
}
