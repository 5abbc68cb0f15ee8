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

/// Whether a conditional `UpdateItem` failed on its condition (the rule it
/// enforces said no), as opposed to failing.
pub(crate) fn is_condition_failed<R>(
    error: &aws_sdk_dynamodb::error::SdkError<
        aws_sdk_dynamodb::operation::update_item::UpdateItemError,
        R,
    >,
) -> bool {
    matches!(
        error.as_service_error(),
        Some(aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(_))
    )
}

/// A conditional `UpdateItem`'s answer: whether it was applied (false: its
/// condition said no); other failures are errors of `operation`.
pub(crate) fn update_applied<T, R>(
    result: Result<
        T,
        aws_sdk_dynamodb::error::SdkError<
            aws_sdk_dynamodb::operation::update_item::UpdateItemError,
            R,
        >,
    >,
    operation: &'static str,
) -> Result<bool, StoreError>
where
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(true),
        Err(error) if is_condition_failed(&error) => Ok(false),
        Err(error) => Err(StoreError::dynamo(operation, error)),
    }
}
