//! The CMS `EnvelopedData` inside the S/MIME wrapper (RFC 5652 §6): which certificate it is for,
//! the content key encrypted to that certificate's RSA key, and the content encrypted with it.
//!
//! Parsing and encoding are the `cms` crate's; the cryptography is the `rsa`, `aes`, `des` and
//! `cbc` crates'. What is here is the glue: picking the recipient, the algorithm table, and
//! refusing a wrong key and a damaged file alike. `seal` assembles the structure itself rather
//! than using the `cms` builder because the builder has no 3DES, and one code path for every
//! cipher keeps sealing simple.

use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{
    BlockCipherDecrypt, BlockCipherEncrypt, BlockModeDecrypt, BlockModeEncrypt, KeyInit, KeyIvInit,
};
use cms::cert::IssuerAndSerialNumber;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::{
    EncryptedContentInfo, EnvelopedData, KeyTransRecipientInfo, RecipientIdentifier, RecipientInfo,
    RecipientInfos,
};
use const_oid::ObjectIdentifier;
use const_oid::db::{DB, rfc5911, rfc5912};
use der::asn1::{OctetString, SetOfVec};
use der::referenced::OwnedToRef;
use der::{Any, Decode, DecodePem, Encode, EncodingRules};
use rsa::PublicKey;
use x509_cert::Certificate;
use x509_cert::spki::AlgorithmIdentifierOwned;
use zeroize::Zeroizing;

use crate::{AccountKey, SealError, TokenFileError};

/// At most this many recipients are tried, so a crafted file cannot demand many RSA operations.
const MAX_RECIPIENT_ATTEMPTS: usize = 8;

/// How [`seal`](crate::seal) encrypts the content. [`open`](crate::open) reads all of these
/// and AES-192-CBC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ContentCipher {
    /// AES-128 in CBC mode.
    Aes128Cbc,
    /// AES-256 in CBC mode.
    #[default]
    Aes256Cbc,
    /// Triple DES (EDE, three keys) in CBC mode, as older S/MIME tools write.
    DesEde3Cbc,
}

/// The content ciphers [`open`](crate::open) reads, all in CBC mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cipher {
    Aes128,
    Aes192,
    Aes256,
    DesEde3,
}

impl From<ContentCipher> for Cipher {
    fn from(cipher: ContentCipher) -> Self {
        match cipher {
            ContentCipher::Aes128Cbc => Self::Aes128,
            ContentCipher::Aes256Cbc => Self::Aes256,
            ContentCipher::DesEde3Cbc => Self::DesEde3,
        }
    }
}

impl Cipher {
    fn from_oid(oid: &ObjectIdentifier) -> Option<Self> {
        [Self::Aes128, Self::Aes192, Self::Aes256, Self::DesEde3]
            .into_iter()
            .find(|cipher| cipher.oid() == *oid)
    }

    fn oid(self) -> ObjectIdentifier {
        match self {
            Self::Aes128 => rfc5911::ID_AES_128_CBC,
            Self::Aes192 => rfc5911::ID_AES_192_CBC,
            Self::Aes256 => rfc5911::ID_AES_256_CBC,
            Self::DesEde3 => rfc5911::DES_EDE_3_CBC,
        }
    }

    fn key_len(self) -> usize {
        match self {
            Self::Aes128 => 16,
            Self::Aes192 | Self::DesEde3 => 24,
            Self::Aes256 => 32,
        }
    }

    /// Block size, which is also the IV size in CBC.
    fn block_len(self) -> usize {
        match self {
            Self::Aes128 | Self::Aes192 | Self::Aes256 => 16,
            Self::DesEde3 => 8,
        }
    }

    /// Decrypt in place and strip PKCS#7 padding; the plaintext length, or `None` when the key,
    /// IV or padding is wrong.
    fn decrypt(self, key: &[u8], iv: &[u8], buffer: &mut [u8]) -> Option<usize> {
        match self {
            Self::Aes128 => cbc_decrypt::<aes::Aes128>(key, iv, buffer),
            Self::Aes192 => cbc_decrypt::<aes::Aes192>(key, iv, buffer),
            Self::Aes256 => cbc_decrypt::<aes::Aes256>(key, iv, buffer),
            Self::DesEde3 => cbc_decrypt::<des::TdesEde3>(key, iv, buffer),
        }
    }

    /// Encrypt with PKCS#7 padding; `None` when the key or IV has the wrong length.
    fn encrypt(self, key: &[u8], iv: &[u8], plaintext: &[u8]) -> Option<Vec<u8>> {
        match self {
            Self::Aes128 => cbc_encrypt::<aes::Aes128>(key, iv, plaintext),
            Self::Aes192 => cbc_encrypt::<aes::Aes192>(key, iv, plaintext),
            Self::Aes256 => cbc_encrypt::<aes::Aes256>(key, iv, plaintext),
            Self::DesEde3 => cbc_encrypt::<des::TdesEde3>(key, iv, plaintext),
        }
    }
}

fn cbc_decrypt<C: BlockCipherDecrypt + KeyInit>(
    key: &[u8],
    iv: &[u8],
    buffer: &mut [u8],
) -> Option<usize> {
    let decryptor = cbc::Decryptor::<C>::new_from_slices(key, iv).ok()?;
    decryptor
        .decrypt_padded::<Pkcs7>(buffer)
        .ok()
        .map(<[u8]>::len)
}

fn cbc_encrypt<C: BlockCipherEncrypt + KeyInit>(
    key: &[u8],
    iv: &[u8],
    plaintext: &[u8],
) -> Option<Vec<u8>> {
    let encryptor = cbc::Encryptor::<C>::new_from_slices(key, iv).ok()?;
    Some(encryptor.encrypt_padded_vec::<Pkcs7>(plaintext))
}

/// A name for an algorithm identifier, for messages: its registered name, or the dotted OID.
fn algorithm_name(oid: &ObjectIdentifier) -> String {
    DB.by_oid(oid)
        .map_or_else(|| oid.to_string(), str::to_owned)
}

/// The parts of a token file's `EnvelopedData` needed to decrypt it.
pub(crate) struct Envelope {
    cipher: Cipher,
    iv: Box<[u8]>,
    ciphertext: Box<[u8]>,
    recipients: Vec<KeyTransRecipientInfo>,
}

impl Envelope {
    /// Read a BER or DER `ContentInfo` holding `EnvelopedData`. Apple's S/MIME writers may use
    /// BER indefinite lengths and chunked octet strings, so this decodes with BER rules.
    pub(crate) fn parse(cms: &[u8]) -> Result<Self, TokenFileError> {
        let malformed = |what| TokenFileError::Malformed { what };
        let info = ContentInfo::from_ber(cms).map_err(|_| malformed("its CMS envelope"))?;
        if info.content_type != rfc5911::ID_ENVELOPED_DATA {
            // A signed or plain CMS message is some other kind of .p7m file.
            return Err(TokenFileError::NotATokenFile);
        }
        let data: EnvelopedData = info
            .content
            .decode_as_encoding(EncodingRules::Ber)
            .map_err(|_| malformed("its CMS envelope"))?;

        let content = data.encrypted_content;
        let algorithm = &content.content_enc_alg;
        let cipher =
            Cipher::from_oid(&algorithm.oid).ok_or_else(|| TokenFileError::UnsupportedCipher {
                algorithm: algorithm_name(&algorithm.oid),
            })?;
        let iv = algorithm
            .parameters
            .as_ref()
            .and_then(|parameters| parameters.decode_as::<OctetString>().ok())
            .map(OctetString::into_bytes)
            .filter(|iv| iv.len() == cipher.block_len())
            .ok_or(malformed("its encryption parameters"))?;
        let ciphertext = content
            .encrypted_content
            .map(OctetString::into_bytes)
            .filter(|bytes| !bytes.is_empty() && bytes.len() % cipher.block_len() == 0)
            .ok_or(malformed("its encrypted content"))?;
        let recipients = data
            .recip_infos
            .0
            .into_vec()
            .into_iter()
            .filter_map(|recipient| match recipient {
                RecipientInfo::Ktri(recipient) => Some(recipient),
                _ => None,
            })
            .collect();
        Ok(Self {
            cipher,
            iv,
            ciphertext,
            recipients,
        })
    }

    /// Decrypt with `key` and hand the plaintext to `read`, which turns it into the result or
    /// `None`. Past the envelope's structure, every failure is
    /// [`Undecryptable`](TokenFileError::Undecryptable), whichever step it was.
    pub(crate) fn open_with<T>(
        &self,
        key: &AccountKey,
        read: impl Fn(&[u8]) -> Option<T>,
    ) -> Result<T, TokenFileError> {
        let (named, others): (Vec<_>, Vec<_>) = self
            .recipients
            .iter()
            .take(MAX_RECIPIENT_ATTEMPTS)
            .partition(|recipient| key.is_named_by(&recipient.rid));

        if let Some(recipient) = named.first() {
            if recipient.key_enc_alg.oid != rfc5912::RSA_ENCRYPTION {
                return Err(TokenFileError::UnsupportedCipher {
                    algorithm: algorithm_name(&recipient.key_enc_alg.oid),
                });
            }
            return self
                .decrypt(key, recipient)
                .and_then(|plaintext| read(&plaintext))
                .ok_or(TokenFileError::Undecryptable);
        }

        // Nothing names this certificate. The key may still be ours under an earlier
        // certificate (an account key certified again keeps its key pair), so try it: with the
        // wrong key the content key is junk, which fails the padding or the token checks, so
        // only a real token gets through.
        others
            .into_iter()
            .filter(|recipient| recipient.key_enc_alg.oid == rfc5912::RSA_ENCRYPTION)
            .find_map(|recipient| {
                self.decrypt(key, recipient)
                    .and_then(|plaintext| read(&plaintext))
            })
            .ok_or(TokenFileError::Undecryptable)
    }

    /// The plaintext for one recipient, or `None` whichever step failed.
    ///
    /// The content is decrypted even when the key transport gives no content key of the
    /// cipher's size, with a random key instead (RFC 3218's random filling): a failed key transport then
    /// costs the same work as a good one and ends in the same refusal as damaged content, so
    /// neither the answer nor its timing says whether the RSA padding was valid. The `rsa`
    /// crate's implicit rejection already hides the padding inside the RSA operation; the
    /// length it returns is the one thing it leaves public, and it is only compared here.
    fn decrypt(
        &self,
        key: &AccountKey,
        recipient: &KeyTransRecipientInfo,
    ) -> Option<Zeroizing<Vec<u8>>> {
        let key_len = self.cipher.key_len();
        let mut stand_in = Zeroizing::new(vec![0u8; key_len]);
        // Without a random stand-in, a known (zero) key would be used: refuse instead, after
        // the same work.
        let stand_in_drawn = getrandom::fill(&mut stand_in).is_ok();
        let transported = key
            .decrypt_content_key(recipient.enc_key.as_bytes())
            .filter(|content_key| content_key.len() == key_len);
        let usable = transported.is_some() || stand_in_drawn;
        let content_key = transported.unwrap_or(stand_in);
        let mut buffer = Zeroizing::new(self.ciphertext.to_vec());
        let length = self.cipher.decrypt(&content_key, &self.iv, &mut buffer);
        let length = length.filter(|_| usable)?;
        buffer.truncate(length);
        Some(buffer)
    }
}

/// DER `ContentInfo` holding `EnvelopedData` with `message` encrypted to the certificate's RSA
/// key: a random content key and IV, the key sent with RSAES-PKCS1-v1_5, and the recipient
/// named by issuer and serial number, as Apple Business and `openssl smime` do.
pub(crate) fn seal(
    message: &[u8],
    recipient_certificate_pem: &str,
    cipher: ContentCipher,
) -> Result<Vec<u8>, SealError> {
    let certificate = Certificate::from_pem(recipient_certificate_pem.trim().as_bytes())
        .map_err(|_| SealError::InvalidCertificate)?;
    let tbs = certificate.tbs_certificate();
    let public_key = PublicKey::try_from(tbs.subject_public_key_info().owned_to_ref())
        .map_err(|_| SealError::NotRsa)?;

    let cipher = Cipher::from(cipher);
    let encrypt = |what| SealError::Encrypt { what };
    let mut content_key = Zeroizing::new(vec![0u8; cipher.key_len()]);
    getrandom::fill(&mut content_key).map_err(|_| encrypt("random content key"))?;
    let mut iv = vec![0u8; cipher.block_len()];
    getrandom::fill(&mut iv).map_err(|_| encrypt("random IV"))?;

    let ciphertext = cipher
        .encrypt(&content_key, &iv, message)
        .ok_or(encrypt("content encryption"))?;
    let encrypted_key = public_key
        .pkcs1v15_encrypt(&content_key)
        .map_err(|_| encrypt("key transport"))?;

    let encoding = |_| encrypt("CMS encoding");
    let recipient = KeyTransRecipientInfo {
        version: CmsVersion::V0,
        rid: RecipientIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: tbs.issuer().clone(),
            serial_number: tbs.serial_number().clone(),
        }),
        // RFC 3370 §4.2.1: rsaEncryption parameters are NULL.
        key_enc_alg: AlgorithmIdentifierOwned {
            oid: rfc5912::RSA_ENCRYPTION,
            parameters: Some(Any::null()),
        },
        enc_key: OctetString::new(encrypted_key).map_err(encoding)?,
    };
    let iv = OctetString::new(iv).map_err(encoding)?;
    let data = EnvelopedData {
        version: CmsVersion::V0,
        originator_info: None,
        recip_infos: RecipientInfos(
            SetOfVec::try_from(vec![RecipientInfo::Ktri(recipient)]).map_err(encoding)?,
        ),
        encrypted_content: EncryptedContentInfo {
            content_type: rfc5911::ID_DATA,
            content_enc_alg: AlgorithmIdentifierOwned {
                oid: cipher.oid(),
                parameters: Some(Any::encode_from(&iv).map_err(encoding)?),
            },
            encrypted_content: Some(OctetString::new(ciphertext).map_err(encoding)?),
        },
        unprotected_attrs: None,
    };
    ContentInfo {
        content_type: rfc5911::ID_ENVELOPED_DATA,
        content: Any::encode_from(&data).map_err(encoding)?,
    }
    .to_der()
    .map_err(encoding)
}
