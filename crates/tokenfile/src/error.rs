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

    /// The file looks like a token file but its structure cannot be read (cut short, edited, or
    /// damaged in transit), found before anything is decrypted.
    #[error(
        "The token file is damaged or incomplete ({what} cannot be read); download the token file again from Apple Business and upload the new file."
    )]
    Malformed {
        /// Which part could not be read, in plain words.
        what: &'static str,
    },

    /// The file's envelope is well formed but it does not decrypt to a server token with this
    /// account's key: it was encrypted for another key, or its encrypted key or content is
    /// damaged.
    ///
    /// One answer for all of these, whichever step failed, because telling them apart answers
    /// questions about the account's private key and the plaintext: a caller who could see
    /// "wrong key" apart from "bad content" could decrypt with the key one guess at a time (a
    /// padding oracle).
    #[error(
        "The token file does not open with this account's key: it was encrypted for another public key, or it is damaged; upload this account's current certificate (GET /v1/public-key) to the MDM server in Apple Business, then download a new token file and upload it."
    )]
    Undecryptable,

    /// The file uses a content or key encryption algorithm that is not supported.
    #[error(
        "The token file is encrypted with {algorithm}, which is not supported; download a new token file from Apple Business, and report the algorithm name to the adesync maintainers if it persists."
    )]
    UnsupportedCipher {
        /// The algorithm's name, or its object identifier when it has no known name.
        algorithm: String,
    },

    /// The token message is not valid JSON. Only from
    /// [`ServerToken::from_json_bytes`](crate::ServerToken::from_json_bytes): inside a file it is
    /// [`Undecryptable`](Self::Undecryptable).
    #[error(
        "The server token in the file is not valid JSON (line {line}, column {column}); download a new token file from Apple Business."
    )]
    MalformedJson {
        /// 1-based line of the first error.
        line: usize,
        /// 1-based column of the first error.
        column: usize,
    },

    /// A required token field is absent or empty (as `MalformedJson`, never from a file).
    #[error(
        "The server token in the file has no value for `{field}`; download a new token file from Apple Business."
    )]
    MissingField {
        /// The JSON field name.
        field: &'static str,
    },

    /// `access_token_expiry` is not a recognisable date and time (as `MalformedJson`, never from
    /// a file).
    #[error(
        "The server token's `access_token_expiry` is not a date and time; download a new token file from Apple Business."
    )]
    InvalidExpiry,

    /// The token has expired. Told apart from [`Undecryptable`](Self::Undecryptable) although it
    /// depends on the plaintext: it comes only from a file that decrypted to a whole, valid
    /// token, which a caller learns from a success just as well, and the expiry is not secret
    /// (it is shown on every token).
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
