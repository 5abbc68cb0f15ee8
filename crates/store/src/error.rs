use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

/// A failure talking to DynamoDB that no rule explains.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// DynamoDB refused or throttled the request, or could not be reached.
    #[error("the database request {operation} failed ({code}: {message})")]
    Dynamo {
        operation: &'static str,
        code: String,
        /// DynamoDB's own explanation (it names expressions, never values).
        message: String,
        #[source]
        source: anyhow::Error,
    },
    /// DynamoDB left part of a batch undone (throttling, transaction conflicts).
    #[error("DynamoDB left part of {0} unprocessed")]
    Unprocessed(&'static str),
    /// An item did not have the shape this version of the service writes.
    #[error("a stored item is malformed: {0}")]
    Malformed(String),
}

impl StoreError {
    pub(crate) fn dynamo<E, R>(operation: &'static str, error: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let code = error
            .as_service_error()
            .and_then(|e| e.code())
            .unwrap_or("transport")
            .to_owned();
        let message = error
            .as_service_error()
            .and_then(|e| e.message())
            .unwrap_or("no answer")
            .to_owned();
        Self::Dynamo {
            operation,
            code,
            message,
            source: anyhow::Error::new(error),
        }
    }

    /// True when retrying later may succeed (throttling, transport).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Dynamo { code, .. } => matches!(
                code.as_str(),
                "transport"
                    | "ProvisionedThroughputExceededException"
                    | "ThrottlingException"
                    | "RequestLimitExceeded"
                    | "InternalServerError"
                    | "ServiceUnavailable"
                    | "TransactionConflictException"
            ),
            StoreError::Unprocessed(_) => true,
            StoreError::Malformed(_) => false,
        }
    }
}

/// Backoff for work DynamoDB left undone: exponential with jitter, bounded.
/// A request the SDK's builder refused: a bug in how we build it, never the caller's input.
pub(crate) fn build_error(error: impl std::fmt::Display) -> StoreError {
    StoreError::Malformed(format!("a DynamoDB request could not be built: {error}"))
}

pub(crate) fn retry_policy() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(std::time::Duration::from_millis(20))
        .with_max_delay(std::time::Duration::from_secs(2))
        .with_max_times(10)
}
