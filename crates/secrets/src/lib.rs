//! Secrets at rest: KMS envelope encryption of the OAuth credentials of each server token and of
//! each account's private key, bound to what they belong to.
//!
//! Each [`Vault::seal`] asks KMS for a fresh AES-256 data key (`GenerateDataKey` under the
//! service's key, `ADESYNC_KMS_KEY_ID`), encrypts the secret locally with AES-256-GCM under a
//! random 96-bit nonce, forgets the plaintext data key, and returns a [`Sealed`] holding the
//! KMS-encrypted data key, the nonce and the ciphertext. [`Vault::open`] has KMS decrypt the data
//! key, then decrypts and authenticates the ciphertext.
//!
//! A [`Context`] (account, purpose, token) names what a secret belongs to. It is the KMS
//! encryption context of the data key *and* the GCM associated data, so a sealed secret copied
//! onto another token or account does not open there: KMS refuses the data key, and GCM would
//! refuse the ciphertext even if it did not.
//!
//! # Layout
//!
//! - `vault`: [`Vault`], the two KMS calls and the mapping of their failures.
//! - `envelope`: the local AES-256-GCM step with a plaintext data key, which is zeroized on drop.
//! - `context`: [`Context`] and its canonical byte form (the GCM associated data).
//! - `sealed`: [`Sealed`] and its versioned byte format, stored as a DynamoDB binary attribute.
//! - `error`: [`VaultError`]; no variant carries plaintext, key material or ciphertext.

mod context;
mod envelope;
mod error;
mod sealed;
mod vault;

pub use context::Context;
pub use error::VaultError;
pub use sealed::Sealed;
pub use vault::Vault;
