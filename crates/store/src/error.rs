use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

/// A failure talking to DynamoDB that no rule explains.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// DynamoDB refused or throttled the request, or could not be reached.
    #[error("the database request {operation} failed ({code})")]
    Dynamo {
        operation: &'static str,
        code: String,
        #[source]
        source: anyhow::Error,
    },
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
        Self::Dynamo {
            operation,
            code,
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
            StoreError::Malformed(_) => false,
        }
    }
}
