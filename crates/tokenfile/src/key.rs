//! The account's key pair: an RSA-2048 private key and the self-signed certificate an
//! administrator uploads to Apple Business, which Apple encrypts token files to.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use der::asn1::{SetOfVec, Utf8StringRef};
use der::oid::db::rfc4519;
use der::pem::LineEnding;
use der::referenced::OwnedToRef;
use der::{Any, Decode, DecodePem, Encode, EncodePem};
use getrandom::SysRng;
use rsa::pkcs1v15::{Signature, SigningKey};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rsa::sha2::Sha256;
use rsa::{PrivateKey, PublicKey};
use secrecy::SecretSlice;
use x509_cert::Certificate;
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::certificate::TbsCertificate;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier};
use x509_cert::ext::{Extension, ToExtension};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef};
use x509_cert::time::{Time, Validity};
use zeroize::Zeroizing;

/// RSA modulus size. Apple Business takes RSA certificates; 2048 bits is what the reference
/// implementations (nanodep, zentral) generate.
pub const KEY_BITS: usize = 2048;

/// X.520 upper bound for a common name.
const MAX_COMMON_NAME_CHARS: usize = 64;

/// Random bytes in a certificate serial number, so that issuer + serial (which is how a token
/// file names its recipient) is unique even when accounts share a common name.
const SERIAL_BYTES: usize = 16;

/// Why a key pair could not be generated or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The common name is empty, too long, or has control characters.
    #[error(
        "The certificate's common name must be 1 to 64 characters without control characters; choose another name."
    )]
    InvalidCommonName,

    /// The validity is zero days, or falls outside what a certificate can express.
    #[error(
        "The certificate's validity must be at least one day, starting after 1970 and ending before 9999; choose other dates."
    )]
    InvalidValidity,

    /// The system random source failed while generating the key or serial number.
    #[error(
        "Generating the RSA key pair failed because the system random source failed; retry, and check the host's entropy source if it persists."
    )]
    Generate,

    /// The certificate could not be built or encoded.
    #[error(
        "Building the account certificate failed ({what}); retry, and report it if it persists."
    )]
    Certificate {
        /// Which step failed.
        what: &'static str,
    },

    /// The stored private key is not a PKCS#8 RSA private key.
    #[error(
        "The stored private key is not a PKCS#8 RSA private key; generate a new key pair for the account and upload its certificate to Apple Business."
    )]
    InvalidPrivateKey,

    /// The stored certificate is not a PEM X.509 certificate with an RSA key.
    #[error(
        "The stored certificate is not a PEM X.509 certificate for an RSA key; generate a new key pair for the account and upload its certificate to Apple Business."
    )]
    InvalidCertificate,

    /// The certificate certifies a different key than the private key given with it.
    #[error(
        "The certificate does not belong to the private key stored with it; generate a new key pair for the account and upload its certificate to Apple Business."
    )]
    KeyMismatch,
}

/// An account's key pair: RSA-2048 private key + self-signed X.509 certificate to upload to
/// Apple Business. `Debug` shows the certificate's subject, serial and validity, never the key.
pub struct AccountKey {
    private_key: PrivateKey,
    private_key_der: Zeroizing<Vec<u8>>,
    certificate: Certificate,
    certificate_pem: String,
    subject_key_id: Option<Vec<u8>>,
}

impl fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tbs = self.certificate.tbs_certificate();
        f.debug_struct("AccountKey")
            .field("subject", &tbs.subject().to_string())
            .field("serial", &tbs.serial_number().to_string())
            .field("not_before", &tbs.validity().not_before.to_string())
            .field("not_after", &tbs.validity().not_after.to_string())
            .field("private_key", &"[redacted]")
            .finish()
    }
}

impl AccountKey {
    /// Generate a new RSA-2048 key pair and a self-signed certificate for it, with subject
    /// `CN=<common_name>`, valid from `not_before` (whole seconds) for `validity_days` days, and
    /// key usage digitalSignature + keyEncipherment.
    ///
    /// Apple encrypts to the certificate when the token file is downloaded; keep the key for the
    /// token's whole life (renewed tokens are encrypted to the certificate Apple already holds).
    pub fn generate(
        common_name: &str,
        not_before: DateTime<Utc>,
        validity_days: u32,
    ) -> Result<Self, KeyError> {
        let subject = common_name_to_name(common_name)?;
        let validity = validity(not_before, validity_days)?;
        let private_key = PrivateKey::new(&mut SysRng, KEY_BITS).map_err(|_| KeyError::Generate)?;
        Self::certify(private_key, subject, validity)
    }

    /// The same key pair with a new certificate (same subject, new serial number), for an
    /// administrator whose uploaded certificate has expired. Token files Apple encrypted to the
    /// previous certificate still open with the result.
    pub fn renew_certificate(
        &self,
        not_before: DateTime<Utc>,
        validity_days: u32,
    ) -> Result<Self, KeyError> {
        let subject = self.certificate.tbs_certificate().subject().clone();
        let validity = validity(not_before, validity_days)?;
        Self::certify(self.private_key.clone(), subject, validity)
    }

    /// Load a key pair kept in storage: the PKCS#8 DER from [`AccountKey::private_key_der`] and
    /// the PEM from [`AccountKey::certificate_pem`]. Refuses a certificate for another key.
    pub fn from_parts(
        private_key_pkcs8_der: &[u8],
        certificate_pem: &str,
    ) -> Result<Self, KeyError> {
        let private_key = PrivateKey::from_pkcs8_der(private_key_pkcs8_der)
            .map_err(|_| KeyError::InvalidPrivateKey)?;
        let certificate = Certificate::from_pem(certificate_pem.trim().as_bytes())
            .map_err(|_| KeyError::InvalidCertificate)?;
        Self::assemble(private_key, certificate)
    }

    /// The certificate to upload to Apple Business (`-----BEGIN CERTIFICATE-----` …).
    pub fn certificate_pem(&self) -> String {
        self.certificate_pem.clone()
    }

    /// The private key as PKCS#8 DER, to store encrypted. Exposing it is deliberate and loud.
    pub fn private_key_der(&self) -> SecretSlice<u8> {
        SecretSlice::from(self.private_key_der.to_vec())
    }

    /// When the certificate stops being valid. Apple Business checks it when the administrator
    /// uploads it; the private key keeps decrypting token files after that.
    pub fn certificate_not_after(&self) -> DateTime<Utc> {
        let validity = self.certificate.tbs_certificate().validity();
        let seconds = validity.not_after.to_unix_duration().as_secs();
        i64::try_from(seconds)
            .ok()
            .and_then(|seconds| DateTime::from_timestamp(seconds, 0))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// Whether a CMS recipient identifier names this key's certificate.
    pub(crate) fn is_named_by(&self, rid: &cms::enveloped_data::RecipientIdentifier) -> bool {
        use cms::enveloped_data::RecipientIdentifier;
        let tbs = self.certificate.tbs_certificate();
        match rid {
            RecipientIdentifier::IssuerAndSerialNumber(named) => {
                named.issuer == *tbs.issuer() && named.serial_number == *tbs.serial_number()
            }
            RecipientIdentifier::SubjectKeyIdentifier(named) => {
                self.subject_key_id.as_deref() == Some(named.0.as_bytes())
            }
        }
    }

    /// Decrypt a content-encryption key sent to this key with RSAES-PKCS1-v1_5.
    ///
    /// The rsa crate uses implicit rejection: a ciphertext for another key does not fail here
    /// but yields a deterministic random-looking key, so callers must check what it decrypts.
    pub(crate) fn decrypt_content_key(&self, encrypted: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        self.private_key
            .pkcs1v15_decrypt(encrypted)
            .ok()
            .map(Zeroizing::new)
    }

    fn certify(
        private_key: PrivateKey,
        subject: Name,
        validity: Validity,
    ) -> Result<Self, KeyError> {
        let mut serial = [0u8; SERIAL_BYTES];
        getrandom::fill(&mut serial).map_err(|_| KeyError::Generate)?;
        let serial = SerialNumber::new(&serial).map_err(|_| KeyError::Certificate {
            what: "serial number",
        })?;
        let public_key_info = SubjectPublicKeyInfoOwned::from_key(private_key.as_public_key())
            .map_err(|_| KeyError::Certificate { what: "public key" })?;
        let builder =
            CertificateBuilder::new(SelfSigned { subject }, serial, validity, public_key_info)
                .map_err(|_| KeyError::Certificate { what: "validity" })?;
        let signer = SigningKey::<Sha256>::new(private_key.clone());
        let certificate = builder
            .build::<_, Signature>(&signer)
            .map_err(|_| KeyError::Certificate { what: "signature" })?;
        Self::assemble(private_key, certificate)
    }

    fn assemble(private_key: PrivateKey, certificate: Certificate) -> Result<Self, KeyError> {
        let tbs = certificate.tbs_certificate();
        let public_key_info = tbs.subject_public_key_info();
        let certified_key = PublicKey::try_from(public_key_info.owned_to_ref())
            .map_err(|_| KeyError::InvalidCertificate)?;
        if certified_key != *private_key.as_public_key() {
            return Err(KeyError::KeyMismatch);
        }
        // Senders that name recipients by key identifier use the certificate's extension when it
        // has one, otherwise the SHA-1 of the public key (RFC 5280 method 1).
        let subject_key_id = match tbs.get_extension::<SubjectKeyIdentifier>() {
            Ok(Some((_, id))) => Some(id.0.as_bytes().to_vec()),
            _ => SubjectKeyIdentifier::try_from(public_key_info.owned_to_ref())
                .ok()
                .map(|id| id.0.as_bytes().to_vec()),
        };
        let certificate_pem =
            certificate
                .to_pem(LineEnding::LF)
                .map_err(|_| KeyError::Certificate {
                    what: "PEM encoding",
                })?;
        let private_key_der = private_key
            .to_pkcs8_der()
            .map_err(|_| KeyError::Certificate {
                what: "private key encoding",
            })?
            .to_bytes();
        Ok(Self {
            private_key,
            private_key_der,
            certificate,
            certificate_pem,
            subject_key_id,
        })
    }
}

/// `CN=<common_name>`, built as a typed name so that commas or `=` in the name stay text.
fn common_name_to_name(common_name: &str) -> Result<Name, KeyError> {
    let length = common_name.chars().count();
    if common_name.trim().is_empty()
        || length > MAX_COMMON_NAME_CHARS
        || common_name.chars().any(char::is_control)
    {
        return Err(KeyError::InvalidCommonName);
    }
    let value = Utf8StringRef::new(common_name)
        .and_then(|value| Any::encode_from(&value))
        .map_err(|_| KeyError::InvalidCommonName)?;
    let attribute = AttributeTypeAndValue {
        oid: rfc4519::CN,
        value,
    };
    let rdn = SetOfVec::try_from(vec![attribute])
        .map(RelativeDistinguishedName::from)
        .map_err(|_| KeyError::InvalidCommonName)?;
    let sequence = RdnSequence::from(vec![rdn]);
    // `Name` is built only by decoding (its checks run there); the encoding is ours.
    sequence
        .to_der()
        .and_then(|der| Name::from_der(&der))
        .map_err(|_| KeyError::InvalidCommonName)
}

fn validity(not_before: DateTime<Utc>, validity_days: u32) -> Result<Validity, KeyError> {
    let not_after = not_before
        .checked_add_signed(TimeDelta::days(i64::from(validity_days)))
        .filter(|_| validity_days > 0)
        .ok_or(KeyError::InvalidValidity)?;
    Ok(Validity::new(time(not_before)?, time(not_after)?))
}

fn time(at: DateTime<Utc>) -> Result<Time, KeyError> {
    let seconds = u64::try_from(at.timestamp()).map_err(|_| KeyError::InvalidValidity)?;
    der::DateTime::from_unix_duration(std::time::Duration::from_secs(seconds))
        .map(Time::from)
        .map_err(|_| KeyError::InvalidValidity)
}

/// A self-signed end-entity certificate for key transport: Apple only needs the public key, and
/// the builder's CA/TLS profiles add constraints that do not fit.
struct SelfSigned {
    subject: Name,
}

impl BuilderProfile for SelfSigned {
    fn get_issuer(&self, subject: &Name) -> Name {
        subject.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        spk: SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: SubjectPublicKeyInfoRef<'_>,
        tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        let mut extensions = Vec::new();
        let basic = BasicConstraints {
            ca: false,
            path_len_constraint: None,
        }
        .to_extension(tbs.subject(), &extensions)?;
        extensions.push(basic);
        let usage = KeyUsage(KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment)
            .to_extension(tbs.subject(), &extensions)?;
        extensions.push(usage);
        let key_id =
            SubjectKeyIdentifier::try_from(spk)?.to_extension(tbs.subject(), &extensions)?;
        extensions.push(key_id);
        Ok(extensions)
    }
}
