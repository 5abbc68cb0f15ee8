use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// Why a secret could not be sealed or opened.
///
/// No variant carries plaintext, key material or ciphertext, so every message is safe to log and
/// `Debug` shows nothing secret.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// A KMS call failed: the service refused it (`code` is the KMS error code, e.g.
    /// `AccessDeniedException`, `IncorrectKeyException`, `NotFoundException`,
    /// `ThrottlingException`) or it never completed (`DispatchFailure`, `Timeout`, ...).
    /// The SDK has already retried what is worth retrying.
    #[error("KMS {operation} failed ({code}): {detail}")]
    Kms {
        /// The KMS operation, e.g. `GenerateDataKey` or `Decrypt`.
        operation: &'static str,
        /// The KMS error code, or the kind of transport failure.
        code: String,
        /// KMS's message or the transport error, for operators.
        detail: String,
    },
    /// The sealed secret does not authenticate: it was altered, or it is opened with another
    /// context than it was sealed with (copied onto another token or account).
    #[error("the sealed secret was altered or belongs to another account, token or purpose")]
    Tampered,
    /// The stored bytes are not a sealed secret this version can read.
    #[error("the stored bytes are not a sealed secret: {0}")]
    Malformed(&'static str),
    /// Anything else (a KMS answer that breaks its contract, the system RNG failing).
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl VaultError {
    /// Maps a failed KMS call, keeping its code and message but never the raw response: a
    /// `GenerateDataKey` response carries the plaintext data key.
    pub(crate) fn kms<E, R>(operation: &'static str, err: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let (code, detail) = match &err {
            SdkError::ServiceError(service) => {
                let e = service.err();
                (
                    e.code().unwrap_or("Unknown").to_owned(),
                    e.message().unwrap_or("no message").to_owned(),
                )
            }
            SdkError::DispatchFailure(_) => (
                "DispatchFailure".to_owned(),
                DisplayErrorContext(&err).to_string(),
            ),
            SdkError::TimeoutError(_) => ("Timeout".to_owned(), "no answer in time".to_owned()),
            SdkError::ConstructionFailure(_) => (
                "ConstructionFailure".to_owned(),
                DisplayErrorContext(&err).to_string(),
            ),
            SdkError::ResponseError(_) => (
                "ResponseError".to_owned(),
                "KMS sent a response that could not be read".to_owned(),
            ),
            _ => ("Unknown".to_owned(), "unclassified SDK error".to_owned()),
        };
        Self::Kms {
            operation,
            code,
            detail,
        }
    }
}
