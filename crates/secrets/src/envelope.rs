use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, AeadInOut, Generate, KeyInit, Nonce, Payload, Tag};
use anyhow::anyhow;
use secrecy::SecretSlice;
use zeroize::Zeroizing;

use crate::VaultError;

/// Length of an AES-256 data key, as KMS returns it for `KeySpec=AES_256`.
pub(crate) const KEY_LEN: usize = 32;
/// Length of a GCM nonce: 96 bits, the size GCM is defined for without extra hashing.
pub(crate) const NONCE_LEN: usize = 12;
/// Length of the GCM authentication tag, appended to the ciphertext.
pub(crate) const TAG_LEN: usize = 16;

/// A plaintext data key, ready to encrypt or decrypt one secret.
///
/// Holds only the expanded cipher, which (with the `zeroize` feature of `aes-gcm`) clears its key
/// schedule and GHASH key when dropped; the raw key bytes are cleared as soon as it is built.
pub(crate) struct DataKey(Aes256Gcm);

impl DataKey {
    /// Takes ownership of the plaintext key bytes KMS returned and wipes them.
    pub(crate) fn from_kms(bytes: Vec<u8>) -> Result<Self, VaultError> {
        let bytes = Zeroizing::new(bytes);
        if bytes.len() != KEY_LEN {
            return Err(anyhow!(
                "KMS returned a {}-byte data key, expected {KEY_LEN}",
                bytes.len()
            )
            .into());
        }
        let cipher = Aes256Gcm::new_from_slice(&bytes)
            .map_err(|_| anyhow!("KMS returned a data key AES-256 does not accept"))?;
        Ok(Self(cipher))
    }

    /// Encrypts under a fresh random nonce; returns the nonce and the ciphertext with its tag.
    pub(crate) fn encrypt(
        &self,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<([u8; NONCE_LEN], Vec<u8>), VaultError> {
        let nonce = <[u8; NONCE_LEN]>::try_generate()
            .map_err(|e| anyhow!("the system random number generator failed: {e}"))?;
        // `Aead::encrypt` copies the plaintext into a buffer sized for the tag and encrypts it in
        // place, so no plaintext copy outlives this call.
        let ciphertext = self
            .0
            .encrypt(
                &Nonce::<Aes256Gcm>::from(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| anyhow!("AES-GCM refused a {}-byte secret", plaintext.len()))?;
        Ok((nonce, ciphertext))
    }

    /// Authenticates and decrypts `ciphertext` (with its tag appended).
    pub(crate) fn decrypt(
        &self,
        nonce: &[u8; NONCE_LEN],
        ciphertext: &[u8],
        aad: &[u8],
    ) -> Result<SecretSlice<u8>, VaultError> {
        let split = ciphertext
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(VaultError::Malformed("ciphertext shorter than its tag"))?;
        let (body, tag) = ciphertext.split_at(split);
        let tag = Tag::<Aes256Gcm>::try_from(tag)
            .map_err(|_| VaultError::Malformed("tag has the wrong length"))?;
        // Decrypt into an exactly-sized box: it becomes the secret as is, with no reallocation
        // leaving a plaintext copy behind. GCM checks the tag before decrypting, so on failure
        // the buffer still holds only ciphertext.
        let mut buffer: Box<[u8]> = body.into();
        self.0
            .decrypt_inout_detached(
                &Nonce::<Aes256Gcm>::from(*nonce),
                aad,
                buffer.as_mut().into(),
                &tag,
            )
            .map_err(|_| VaultError::Tampered)?;
        Ok(SecretSlice::from(buffer))
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn key(byte: u8) -> DataKey {
        match DataKey::from_kms(vec![byte; KEY_LEN]) {
            Ok(key) => key,
            Err(e) => panic!("a 32-byte key is valid: {e}"),
        }
    }

    #[test]
    fn cipher_clears_its_key_on_drop() {
        fn zeroizes_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        zeroizes_on_drop::<Aes256Gcm>();
    }

    #[test]
    fn round_trip() -> Result<(), VaultError> {
        let key = key(7);
        let (nonce, ciphertext) = key.encrypt(b"consumer secret", b"ctx")?;
        assert_eq!(ciphertext.len(), b"consumer secret".len() + TAG_LEN);
        assert_ne!(&ciphertext[..15], b"consumer secret");
        let plaintext = key.decrypt(&nonce, &ciphertext, b"ctx")?;
        assert_eq!(plaintext.expose_secret(), b"consumer secret");
        Ok(())
    }

    #[test]
    fn empty_secret_round_trips() -> Result<(), VaultError> {
        let key = key(1);
        let (nonce, ciphertext) = key.encrypt(b"", b"")?;
        assert_eq!(ciphertext.len(), TAG_LEN);
        assert!(
            key.decrypt(&nonce, &ciphertext, b"")?
                .expose_secret()
                .is_empty()
        );
        Ok(())
    }

    #[test]
    fn other_associated_data_is_tampering() -> Result<(), VaultError> {
        let key = key(7);
        let (nonce, ciphertext) = key.encrypt(b"secret", b"token-a")?;
        assert!(matches!(
            key.decrypt(&nonce, &ciphertext, b"token-b"),
            Err(VaultError::Tampered)
        ));
        Ok(())
    }

    #[test]
    fn every_flipped_bit_is_tampering() -> Result<(), VaultError> {
        let key = key(7);
        let (nonce, ciphertext) = key.encrypt(b"secret", b"ctx")?;
        for bit in 0..ciphertext.len() * 8 {
            let mut flipped = ciphertext.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                matches!(
                    key.decrypt(&nonce, &flipped, b"ctx"),
                    Err(VaultError::Tampered)
                ),
                "bit {bit}"
            );
        }
        let mut other_nonce = nonce;
        other_nonce[0] ^= 1;
        assert!(matches!(
            key.decrypt(&other_nonce, &ciphertext, b"ctx"),
            Err(VaultError::Tampered)
        ));
        Ok(())
    }

    #[test]
    fn other_key_is_tampering() -> Result<(), VaultError> {
        let (nonce, ciphertext) = key(7).encrypt(b"secret", b"ctx")?;
        assert!(matches!(
            key(8).decrypt(&nonce, &ciphertext, b"ctx"),
            Err(VaultError::Tampered)
        ));
        Ok(())
    }

    #[test]
    fn nonces_are_fresh() -> Result<(), VaultError> {
        let key = key(7);
        let (first, _) = key.encrypt(b"secret", b"")?;
        let (second, _) = key.encrypt(b"secret", b"")?;
        assert_ne!(first, second);
        Ok(())
    }

    #[test]
    fn short_ciphertext_is_malformed_not_a_panic() {
        let key = key(7);
        for len in 0..TAG_LEN {
            assert!(matches!(
                key.decrypt(&[0; NONCE_LEN], &vec![0; len], b""),
                Err(VaultError::Malformed(_))
            ));
        }
    }

    #[test]
    fn data_key_of_wrong_length_is_refused() {
        for len in [0, 16, 31, 33] {
            assert!(matches!(
                DataKey::from_kms(vec![0; len]),
                Err(VaultError::Unexpected(_))
            ));
        }
    }
}
