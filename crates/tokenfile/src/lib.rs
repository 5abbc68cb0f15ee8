//! Apple server token files (`.p7m`) and the account key pair they are encrypted to.
//!
//! An administrator uploads this account's certificate ([`AccountKey::certificate_pem`]) to an MDM
//! server in Apple Business, downloads the server token file Apple encrypts to it, and uploads that
//! file here. [`open`] decrypts and checks it; [`seal`] produces the same kind of file, for the
//! Apple simulator and for tests.
//!
//! # Layout
//!
//! A token file is four nested layers; each module handles one or two of them:
//!
//! 1. **S/MIME wrapper** (`smime`): MIME header fields (`Content-Type:
//!    application/pkcs7-mime; smime-type=enveloped-data`, `Content-Transfer-Encoding: base64`, …),
//!    a blank line, then base64 text wrapped at any width.
//! 2. **CMS `EnvelopedData`** (`envelope`): the decoded base64 is a BER/DER `ContentInfo`
//!    holding `EnvelopedData`. Its `KeyTransRecipientInfo` names the recipient certificate
//!    (issuer and serial number) and carries the content-encryption key encrypted with the
//!    certificate's RSA key (PKCS#1 v1.5); the content is encrypted with AES-CBC or 3DES-CBC
//!    (PKCS#7 padding, IV in the algorithm parameters).
//! 3. **Inner MIME entity** (`smime`): the decrypted content is a small text entity: header
//!    fields, a blank line, then the body between `-----BEGIN MESSAGE-----` and
//!    `-----END MESSAGE-----` lines.
//! 4. **JSON** (`token`): the body lines, joined, are a JSON object with `consumer_key`,
//!    `consumer_secret`, `access_token`, `access_secret` and `access_token_expiry` (ISO 8601).
//!
//! The account's key pair (`key`) is an RSA-2048 private key (kept as PKCS#8 DER, for encrypted
//! storage) and a self-signed certificate for it, which is what Apple Business accepts.
//!
//! A failure of [`open`] found in the file's structure, before anything is decrypted, has its
//! own [`TokenFileError`]; every failure after that (a wrong key, a damaged encrypted key or
//! content, a plaintext that is not a token) is the one [`TokenFileError::Undecryptable`], and a
//! failed key transport still decrypts the content (with a random key), so that neither the
//! answers nor the RSA step's timing serve as a padding oracle on the account's key. What is
//! left: content whose CBC padding holds is then read as a token, microseconds more work than a
//! padding failure (far inside Lambda's jitter; it tells about the content, not the RSA key).
//! Every message tells the administrator what to do; none of them, nor any `Debug` output,
//! contains secret material.

mod envelope;
mod error;
mod key;
mod smime;
mod token;

use chrono::{DateTime, Utc};

pub use envelope::ContentCipher;
pub use error::{SealError, TokenFileError};
pub use key::{AccountKey, KeyError};
pub use token::ServerToken;

/// The largest file [`open`] reads. Real token files are a few kilobytes; the cap keeps a
/// mistaken or hostile upload from costing memory or RSA operations.
pub const MAX_FILE_BYTES: usize = 64 * 1024;

/// Decrypt and validate an uploaded token file with the account's key.
///
/// Accepts what Apple Business produces and what people do to it: CRLF or LF line ends, header
/// fields in any order or case, base64 wrapped at any width, BER (indefinite lengths) or DER, and
/// also a bare base64 body or the binary CMS without the S/MIME headers. A token whose
/// `access_token_expiry` is at or before `now` is refused as [`TokenFileError::Expired`].
pub fn open(
    file: &[u8],
    key: &AccountKey,
    now: DateTime<Utc>,
) -> Result<ServerToken, TokenFileError> {
    let cms = smime::unwrap_outer(file)?;
    let envelope = envelope::Envelope::parse(&cms)?;
    let token = envelope.open_with(key, |plaintext| {
        let json = smime::unwrap_inner(plaintext)?;
        ServerToken::from_json_bytes(&json).ok()
    })?;
    if token.access_token_expiry <= now {
        return Err(TokenFileError::Expired {
            expired_at: token.access_token_expiry,
        });
    }
    Ok(token)
}

/// Produce a token file exactly as Apple Business does: S/MIME header fields, then base64 DER
/// CMS `EnvelopedData` encrypted to `recipient_certificate_pem`, whose content is a MIME entity
/// wrapping the token JSON in `-----BEGIN MESSAGE-----` / `-----END MESSAGE-----`.
pub fn seal(
    token: &ServerToken,
    recipient_certificate_pem: &str,
    cipher: ContentCipher,
) -> Result<Vec<u8>, SealError> {
    let json = token.to_json_bytes();
    let message = smime::wrap_inner(secrecy::ExposeSecret::expose_secret(&json));
    let cms = envelope::seal(&message, recipient_certificate_pem, cipher)?;
    Ok(smime::wrap_outer(&cms))
}
