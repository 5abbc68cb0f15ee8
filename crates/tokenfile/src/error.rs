//! Why a token file was refused, or could not be produced.
//!
//! Messages are shown to administrators as they are: each is one sentence saying what happened
//! and what to do, and none carries secret material (no token values, no decrypted bytes, no
//! parser messages that could quote them).

use chrono::{DateTime, Utc};

/// Why [`open`](crate::open) refused a file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenFileError {
    /// The file is larger than any token file; it was not read.
    #[error(
        "The file is larger than {limit_bytes} bytes, far larger than an Apple server token file; upload the .p7m file downloaded from the MDM server's page in Apple Business."
    )]
    TooLarge {
        /// The size limit, [`MAX_FILE_BYTES`](crate::MAX_FILE_BYTES).
        limit_bytes: usize,
    },

    /// The file is not an S/MIME message or base64 CMS at all (a certificate, a JSON file, …).
    #[error(
        "The file is not an Apple server token file (an S/MIME .p7m file); upload the token file downloaded from the MDM server's page in Apple Business."
    )]
    NotATokenFile,

    /// The file looks like a token file but its encrypted content cannot be read (cut short,
    /// edited, or damaged in transit).
    #[error(
        "The token file is damaged or incomplete ({what} cannot be read); download the token file again from Apple Business and upload the new file."
    )]
    Malformed {
        /// Which part could not be read, in plain words.
        what: &'static str,
    },

    /// The file was encrypted for a different key pair than this account's.
    #[error(
        "The token file was encrypted for a different public key than this account's; upload this account's current certificate to the MDM server in Apple Business, then download a new token file and upload it."
    )]
    WrongKey,

    /// The file uses a content or key encryption algorithm that is not supported.
    #[error(
        "The token file is encrypted with {algorithm}, which is not supported; download a new token file from Apple Business, and report the algorithm name to the adesync maintainers if it persists."
    )]
    UnsupportedCipher {
        /// The algorithm's name, or its object identifier when it has no known name.
        algorithm: String,
    },

    /// The file decrypted, but its content is not an Apple server token message.
    #[error(
        "The file decrypted, but it does not contain an Apple server token; upload the server token file from Apple Business, not another encrypted file."
    )]
    NotAToken,

    /// The token message is not valid JSON.
    #[error(
        "The server token in the file is not valid JSON (line {line}, column {column}); download a new token file from Apple Business."
    )]
    MalformedJson {
        /// 1-based line of the first error.
        line: usize,
        /// 1-based column of the first error.
        column: usize,
    },

    /// A required token field is absent or empty.
    #[error(
        "The server token in the file has no value for `{field}`; download a new token file from Apple Business."
    )]
    MissingField {
        /// The JSON field name.
        field: &'static str,
    },

    /// `access_token_expiry` is not a recognisable date and time.
    #[error(
        "The server token's `access_token_expiry` is not a date and time; download a new token file from Apple Business."
    )]
    InvalidExpiry,

    /// The token has expired.
    #[error(
        "The server token expired on {expired_at}; download a new token file for this MDM server in Apple Business and upload it."
    )]
    Expired {
        /// When the token's access token expired.
        expired_at: DateTime<Utc>,
    },
}

/// Why [`seal`](crate::seal) could not produce a file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The recipient certificate is not a PEM X.509 certificate.
    #[error(
        "The recipient certificate is not a PEM X.509 certificate; pass the certificate as downloaded (-----BEGIN CERTIFICATE-----)."
    )]
    InvalidCertificate,

    /// The recipient certificate's key is not an RSA key.
    #[error(
        "The recipient certificate does not hold an RSA public key; use a certificate for an RSA key, as Apple Business requires."
    )]
    NotRsa,

    /// Encryption or encoding failed (the system random source, or a key too small).
    #[error(
        "The token file could not be encrypted ({what}); check the recipient certificate and retry."
    )]
    Encrypt {
        /// Which step failed.
        what: &'static str,
    },
}
