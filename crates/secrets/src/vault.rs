use std::fmt;

use anyhow::anyhow;
use aws_sdk_kms::operation::decrypt::DecryptError;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use secrecy::SecretSlice;

use crate::envelope::DataKey;
use crate::sealed::VERSION;
use crate::{Context, Sealed, VaultError};

/// Seals and opens secrets under one KMS key.
///
/// Cheap to clone (the SDK client is reference-counted); build one per process and share it.
#[derive(Clone)]
pub struct Vault {
    kms: aws_sdk_kms::Client,
    key_id: String,
}

impl Vault {
    /// A vault over `key_id`: a key id, key ARN, alias name (`alias/...`) or alias ARN, as
    /// configured in `ADESYNC_KMS_KEY_ID`.
    pub fn new(kms: aws_sdk_kms::Client, key_id: impl Into<String>) -> Self {
        Self {
            kms,
            key_id: key_id.into(),
        }
    }

    /// The KMS key this vault seals under and accepts data keys from.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Encrypts `plaintext` under a fresh data key bound to `context`.
    ///
    /// One `GenerateDataKey` call per secret: data keys are never reused, so neither is a
    /// (key, nonce) pair.
    pub async fn seal(&self, plaintext: &[u8], context: &Context) -> Result<Sealed, VaultError> {
        let mut generated = self
            .kms
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(context.to_kms())
            .send()
            .await
            .map_err(|e| VaultError::kms("GenerateDataKey", e))?;
        let key = DataKey::from_kms(
            generated
                .plaintext
                .take()
                .ok_or_else(|| anyhow!("KMS GenerateDataKey returned no plaintext key"))?
                .into_inner(),
        )?;
        let encrypted_key = generated
            .ciphertext_blob
            .take()
            .ok_or_else(|| anyhow!("KMS GenerateDataKey returned no encrypted key"))?
            .into_inner();
        if encrypted_key.is_empty() || encrypted_key.len() > Sealed::MAX_ENCRYPTED_KEY_LEN {
            return Err(anyhow!(
                "KMS GenerateDataKey returned a {}-byte encrypted key",
                encrypted_key.len()
            )
            .into());
        }
        let (nonce, ciphertext) = key.encrypt(plaintext, &associated_data(context))?;
        Ok(Sealed {
            encrypted_key,
            nonce,
            ciphertext,
        })
    }

    /// Decrypts a secret sealed with the same `context`.
    ///
    /// KMS is asked to decrypt the data key only under this vault's key, so a secret sealed
    /// under another key fails (`IncorrectKeyException`, or `AccessDeniedException` from some
    /// emulators) rather than being opened with whatever key the ciphertext names.
    pub async fn open(
        &self,
        sealed: &Sealed,
        context: &Context,
    ) -> Result<SecretSlice<u8>, VaultError> {
        let mut decrypted = self
            .kms
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(sealed.encrypted_key.as_slice()))
            .set_encryption_context(context.to_kms())
            .send()
            .await
            .map_err(|e| {
                // KMS says the same for a damaged blob and for another encryption context.
                if e.as_service_error()
                    .is_some_and(DecryptError::is_invalid_ciphertext_exception)
                {
                    VaultError::Tampered
                } else {
                    VaultError::kms("Decrypt", e)
                }
            })?;
        let key = DataKey::from_kms(
            decrypted
                .plaintext
                .take()
                .ok_or_else(|| anyhow!("KMS Decrypt returned no plaintext key"))?
                .into_inner(),
        )?;
        key.decrypt(&sealed.nonce, &sealed.ciphertext, &associated_data(context))
    }
}

/// The GCM associated data: the format version, then the context.
fn associated_data(context: &Context) -> Vec<u8> {
    [&[VERSION][..], &context.canonical_bytes()].concat()
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn associated_data_is_version_then_context() {
        let context = Context::token_credentials("acc-1", "tok-1");
        let aad = associated_data(&context);
        assert_eq!(aad[0], VERSION);
        assert_eq!(aad[1..], context.canonical_bytes());
        assert_ne!(
            aad,
            associated_data(&Context::token_credentials("acc-1", "tok-2"))
        );
    }
}
