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

/// Counts the DynamoDB write requests the functions send, per table, as
/// DynamoDB bills them: `PutItem`, `UpdateItem` and `DeleteItem` are one
/// each, `BatchWriteItem` and `TransactWriteItems` one per item they carry
/// (a transaction's `ConditionCheck` writes nothing and is not counted).
/// Every attempt counts, retries included: each reaches the table. Counting
/// is off until [`CountDynamoWrites::start`], so the benchmark can count one
/// phase of a run; while off, a request costs one atomic load.
#[derive(Debug, Clone, Default)]
pub struct CountDynamoWrites {
    counting: Arc<std::sync::atomic::AtomicBool>,
    /// table name → write requests
    tables: Arc<std::sync::Mutex<std::collections::HashMap<String, u64>>>,
}

impl CountDynamoWrites {
    /// Forgets what was counted and counts from now on.
    pub fn start(&self) {
        if let Ok(mut tables) = self.tables.lock() {
            tables.clear();
        }
        self.counting.store(true, Ordering::SeqCst);
    }

    /// Stops counting and returns the counts (table name → write requests).
    pub fn stop(&self) -> std::collections::HashMap<String, u64> {
        self.counting.store(false, Ordering::SeqCst);
        self.tables
            .lock()
            .map(|tables| tables.clone())
            .unwrap_or_default()
    }

    fn record(&self, target: &str, body: &[u8]) -> Result<(), BoxError> {
        let operation = target.rsplit('.').next().unwrap_or_default();
        let request: serde_json::Value = serde_json::from_slice(body)?;
        let mut counts: Vec<(String, u64)> = Vec::new();
        match operation {
            "PutItem" | "UpdateItem" | "DeleteItem" => {
                if let Some(table) = request["TableName"].as_str() {
                    counts.push((table.to_owned(), 1));
                }
            }
            "BatchWriteItem" => {
                if let Some(items) = request["RequestItems"].as_object() {
                    for (table, requests) in items {
                        let n = requests.as_array().map_or(0, Vec::len) as u64;
                        counts.push((table.clone(), n));
                    }
                }
            }
            "TransactWriteItems" => {
                for item in request["TransactItems"].as_array().into_iter().flatten() {
                    let write = ["Put", "Update", "Delete"]
                        .iter()
                        .find_map(|kind| item.get(*kind));
                    if let Some(table) = write.and_then(|w| w["TableName"].as_str()) {
                        counts.push((table.to_owned(), 1));
                    }
                }
            }
            // Reads, and table management.
            _ => {}
        }
        let mut tables = self
            .tables
            .lock()
            .map_err(|_| "the write counter was poisoned")?;
        for (table, n) in counts {
            *tables.entry(table).or_default() += n;
        }
        Ok(())
    }
}

impl Intercept for CountDynamoWrites {
    fn name(&self) -> &'static str {
        "CountDynamoWrites"
    }

    fn read_before_transmit(
        &self,
        context: &aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if !self.counting.load(Ordering::Relaxed) {
            return Ok(());
        }
        let request = context.request();
        let Some(target) = request.headers().get("x-amz-target") else {
            return Ok(());
        };
        // The SDK serialises DynamoDB requests into memory, so the body is there.
        let body = request.body().bytes().unwrap_or_default();
        self.record(target, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_count_as_dynamodb_bills_them() {
        let counter = CountDynamoWrites::default();
        counter.start();
        let batch = r#"{"RequestItems":{"devices":[{"PutRequest":{}},{"PutRequest":{}},{"DeleteRequest":{}}]}}"#;
        counter
            .record("DynamoDB_20120810.BatchWriteItem", batch.as_bytes())
            .unwrap();
        let transaction = r#"{"TransactItems":[{"Put":{"TableName":"runs"}},{"Update":{"TableName":"runs"}},{"ConditionCheck":{"TableName":"tokens"}}]}"#;
        counter
            .record(
                "DynamoDB_20120810.TransactWriteItems",
                transaction.as_bytes(),
            )
            .unwrap();
        counter
            .record("DynamoDB_20120810.UpdateItem", br#"{"TableName":"tokens"}"#)
            .unwrap();
        counter
            .record("DynamoDB_20120810.Query", br#"{"TableName":"devices"}"#)
            .unwrap();
        let counts = counter.stop();
        assert_eq!(counts.get("devices"), Some(&3));
        assert_eq!(counts.get("runs"), Some(&2));
        assert_eq!(counts.get("tokens"), Some(&1));
        assert_eq!(counts.len(), 3);
    }
}
