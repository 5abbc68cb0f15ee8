use std::fmt;

use crate::VaultError;
use crate::envelope::{NONCE_LEN, TAG_LEN};

/// Version byte of the only format so far. It is also the first byte of the GCM associated data,
/// so a sealed secret cannot be reinterpreted under a later format.
pub(crate) const VERSION: u8 = 1;

/// A sealed secret: the KMS-encrypted data key, the GCM nonce, and the ciphertext with its tag.
///
/// Stored as one DynamoDB binary attribute via [`Sealed::to_bytes`]:
///
/// | bytes | content |
/// |---|---|
/// | 1 | version, `1` |
/// | 2 | length *n* of the encrypted data key, big-endian, at least 1 |
/// | *n* | encrypted data key (the KMS `CiphertextBlob`, at most 6,144 bytes per the KMS API) |
/// | 12 | AES-GCM nonce |
/// | rest | AES-256-GCM ciphertext followed by its 16-byte tag |
///
/// Nothing here is secret without KMS, but `Debug` shows only lengths anyway: the bytes are
/// useless in logs and would make them look like a leak.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub(crate) encrypted_key: Vec<u8>,
    pub(crate) nonce: [u8; NONCE_LEN],
    pub(crate) ciphertext: Vec<u8>,
}

impl Sealed {
    /// The largest encrypted data key the format holds; KMS ciphertexts are far smaller.
    pub(crate) const MAX_ENCRYPTED_KEY_LEN: usize = u16::MAX as usize;

    /// The stored form.
    pub fn to_bytes(&self) -> Vec<u8> {
        // The constructors keep the key within u16; saturating keeps this total, and a saturated
        // length would only make `from_bytes` fail, never misread.
        let key_len = u16::try_from(self.encrypted_key.len()).unwrap_or(u16::MAX);
        let mut out =
            Vec::with_capacity(3 + self.encrypted_key.len() + NONCE_LEN + self.ciphertext.len());
        out.push(VERSION);
        out.extend_from_slice(&key_len.to_be_bytes());
        out.extend_from_slice(&self.encrypted_key);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Reads the stored form. Any input that is not one fails with [`VaultError::Malformed`];
    /// whether it is authentic is only known when it is opened.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, VaultError> {
        let (&version, rest) = bytes.split_first().ok_or(VaultError::Malformed("empty"))?;
        if version != VERSION {
            return Err(VaultError::Malformed("unknown format version"));
        }
        let (key_len, rest) = rest.split_first_chunk::<2>().ok_or(VaultError::Malformed(
            "truncated before the data key length",
        ))?;
        let key_len = usize::from(u16::from_be_bytes(*key_len));
        if key_len == 0 {
            return Err(VaultError::Malformed("empty encrypted data key"));
        }
        let (encrypted_key, rest) = rest
            .split_at_checked(key_len)
            .ok_or(VaultError::Malformed("truncated inside the data key"))?;
        let (nonce, ciphertext) = rest
            .split_first_chunk::<NONCE_LEN>()
            .ok_or(VaultError::Malformed("truncated inside the nonce"))?;
        if ciphertext.len() < TAG_LEN {
            return Err(VaultError::Malformed("ciphertext shorter than its tag"));
        }
        Ok(Self {
            encrypted_key: encrypted_key.to_vec(),
            nonce: *nonce,
            ciphertext: ciphertext.to_vec(),
        })
    }
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("version", &VERSION)
            .field("encrypted_key_len", &self.encrypted_key.len())
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample() -> Sealed {
        Sealed {
            encrypted_key: (1..=40).collect(),
            nonce: [0xA5; NONCE_LEN],
            ciphertext: (100..140).collect(),
        }
    }

    fn from_bytes(bytes: &[u8]) -> Sealed {
        match Sealed::from_bytes(bytes) {
            Ok(sealed) => sealed,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn layout_is_version_length_key_nonce_ciphertext() {
        let bytes = sample().to_bytes();
        assert_eq!(bytes.len(), 1 + 2 + 40 + NONCE_LEN + 40);
        assert_eq!(bytes[..3], [1, 0, 40]);
        assert_eq!(bytes[3..43], sample().encrypted_key[..]);
        assert_eq!(bytes[43..55], [0xA5; NONCE_LEN]);
        assert_eq!(bytes[55..], sample().ciphertext[..]);
    }

    #[test]
    fn round_trip() {
        assert_eq!(from_bytes(&sample().to_bytes()), sample());
    }

    #[test]
    fn every_truncation_is_malformed() {
        let bytes = sample().to_bytes();
        // Cutting into the tag still parses (the ciphertext is just shorter); cutting further
        // must not.
        let shortest = bytes.len() - sample().ciphertext.len() + TAG_LEN;
        for len in 0..shortest {
            assert!(
                matches!(
                    Sealed::from_bytes(&bytes[..len]),
                    Err(VaultError::Malformed(_))
                ),
                "{len} bytes"
            );
        }
        assert!(Sealed::from_bytes(&bytes[..shortest]).is_ok());
    }

    #[test]
    fn unknown_version_and_empty_key_are_malformed() {
        let mut bytes = sample().to_bytes();
        bytes[0] = 2;
        assert!(matches!(
            Sealed::from_bytes(&bytes),
            Err(VaultError::Malformed("unknown format version"))
        ));
        let empty_key = [&[VERSION, 0, 0][..], &[0; NONCE_LEN + TAG_LEN]].concat();
        assert!(matches!(
            Sealed::from_bytes(&empty_key),
            Err(VaultError::Malformed("empty encrypted data key"))
        ));
    }

    #[test]
    fn overstated_key_length_is_malformed() {
        let mut bytes = sample().to_bytes();
        bytes[1..3].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(matches!(
            Sealed::from_bytes(&bytes),
            Err(VaultError::Malformed(_))
        ));
    }

    #[test]
    fn debug_shows_lengths_only() {
        let debug = format!("{:?}", sample());
        assert_eq!(
            debug,
            "Sealed { version: 1, encrypted_key_len: 40, ciphertext_len: 40, .. }"
        );
    }

    proptest! {
        #[test]
        fn from_bytes_never_panics_and_round_trips_what_it_accepts(
            bytes in proptest::collection::vec(any::<u8>(), 0..200)
        ) {
            if let Ok(sealed) = Sealed::from_bytes(&bytes) {
                prop_assert_eq!(sealed.to_bytes(), bytes);
            }
        }

        // Random bytes rarely start with a plausible header; these do, so both the accepting and
        // the rejecting paths past the header are exercised.
        #[test]
        fn framed_bytes_never_panic_and_round_trip_what_is_accepted(
            key_len in 0u16..64,
            tail in proptest::collection::vec(any::<u8>(), 0..120),
        ) {
            let bytes = [&[VERSION][..], &key_len.to_be_bytes(), &tail].concat();
            let fits = usize::from(key_len) + NONCE_LEN + TAG_LEN <= tail.len();
            match Sealed::from_bytes(&bytes) {
                Ok(sealed) => {
                    prop_assert!(key_len > 0 && fits);
                    prop_assert_eq!(sealed.to_bytes(), bytes);
                }
                Err(VaultError::Malformed(_)) => prop_assert!(key_len == 0 || !fits),
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
        }

        #[test]
        fn to_bytes_round_trips(
            encrypted_key in proptest::collection::vec(any::<u8>(), 1..300),
            nonce in any::<[u8; NONCE_LEN]>(),
            ciphertext in proptest::collection::vec(any::<u8>(), TAG_LEN..300),
        ) {
            let sealed = Sealed { encrypted_key, nonce, ciphertext };
            prop_assert_eq!(Sealed::from_bytes(&sealed.to_bytes())?, sealed);
        }
    }
}
