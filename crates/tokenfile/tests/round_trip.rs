//! `seal` → `open` with every cipher, the account certificate's properties, and key storage.

mod common;

use adesync_tokenfile::{AccountKey, ContentCipher, KeyError, open, seal};
use chrono::TimeDelta;
use common::*;
use der::{Decode, DecodePem, Encode};
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::sha2::Sha256;
use rsa::signature::Verifier;
use rsa::traits::PublicKeyParts;
use secrecy::ExposeSecret;
use x509_cert::Certificate;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};

const CIPHERS: [ContentCipher; 3] = [
    ContentCipher::Aes128Cbc,
    ContentCipher::Aes256Cbc,
    ContentCipher::DesEde3Cbc,
];

#[test]
fn sealed_tokens_open_with_every_cipher() {
    for cipher in CIPHERS {
        let file = seal(&token(), &KEY.certificate_pem(), cipher).unwrap();
        let opened = open(&file, &KEY, before_expiry())
            .unwrap_or_else(|error| panic!("{cipher:?}: {error}"));
        assert_is_the_token(&opened);
    }
}

#[test]
fn the_default_cipher_is_aes_256() {
    assert_eq!(ContentCipher::default(), ContentCipher::Aes256Cbc);
}

#[test]
fn sealed_files_look_like_apple_s_mime() {
    let file = String::from_utf8(
        seal(&token(), &KEY.certificate_pem(), ContentCipher::default()).unwrap(),
    )
    .unwrap();
    let (headers, body) = file.split_once("\r\n\r\n").unwrap();
    assert!(
        headers.contains("Content-Type: application/pkcs7-mime;"),
        "{headers}"
    );
    assert!(headers.contains("smime-type=enveloped-data"), "{headers}");
    assert!(
        headers.contains("Content-Transfer-Encoding: base64"),
        "{headers}"
    );
    assert!(
        body.lines().all(|line| line.len() <= 76),
        "base64 lines are wrapped"
    );
    for secret in SECRETS {
        assert!(
            !file.contains(secret),
            "the sealed file shows a secret in clear"
        );
    }
    // Two seals of the same token differ: fresh content key and IV every time.
    let again = seal(&token(), &KEY.certificate_pem(), ContentCipher::default()).unwrap();
    assert_ne!(file.as_bytes(), again.as_slice());
}

#[test]
fn the_certificate_is_what_apple_business_expects() {
    let not_before = cert_not_before();
    let certificate = Certificate::from_pem(KEY.certificate_pem().as_bytes()).unwrap();
    assert!(
        KEY.certificate_pem()
            .starts_with("-----BEGIN CERTIFICATE-----\n")
    );
    let tbs = certificate.tbs_certificate();

    // Subject CN as given, and self-issued.
    assert_eq!(tbs.subject().to_string(), "CN=adesync-test");
    assert_eq!(tbs.issuer(), tbs.subject());

    // Self-signed: the signature verifies with the certificate's own key.
    let public_key = rsa::PublicKey::try_from(der::referenced::OwnedToRef::owned_to_ref(
        tbs.subject_public_key_info(),
    ))
    .unwrap();
    let signature = Signature::try_from(certificate.signature().raw_bytes()).unwrap();
    VerifyingKey::<Sha256>::new(public_key.clone())
        .verify(&tbs.to_der().unwrap(), &signature)
        .unwrap();

    // RSA 2048 with the usual exponent.
    assert_eq!(public_key.size() * 8, 2048);
    assert_eq!(
        public_key.e().to_string().trim_start_matches('0'),
        "10001",
        "e = 65537"
    );

    // Validity as requested.
    let validity = tbs.validity();
    assert_eq!(
        validity.not_before.to_unix_duration().as_secs(),
        not_before.timestamp() as u64
    );
    let not_after = not_before + TimeDelta::days(30);
    assert_eq!(
        validity.not_after.to_unix_duration().as_secs(),
        not_after.timestamp() as u64
    );
    assert_eq!(KEY.certificate_not_after(), not_after);

    // Key usage: key encipherment (for the token's content key) and digital signature.
    let (_, usage) = tbs.get_extension::<KeyUsage>().unwrap().unwrap();
    assert!(usage.0.contains(KeyUsages::KeyEncipherment));
    assert!(usage.0.contains(KeyUsages::DigitalSignature));
    assert!(!usage.0.contains(KeyUsages::KeyCertSign));
    let (_, basic) = tbs.get_extension::<BasicConstraints>().unwrap().unwrap();
    assert!(!basic.ca);
}

#[test]
fn common_names_are_text_not_syntax() {
    let key = AccountKey::generate("Acme, Inc. = MDM", cert_not_before(), 1).unwrap();
    let certificate = Certificate::from_pem(key.certificate_pem().as_bytes()).unwrap();
    let cn = certificate
        .tbs_certificate()
        .subject()
        .common_name()
        .unwrap()
        .unwrap();
    assert!(matches!(
        &cn,
        x509_cert::ext::pkix::name::DirectoryString::Utf8String(_)
    ));
    assert_eq!(cn.value(), "Acme, Inc. = MDM");
    assert_eq!(
        certificate.tbs_certificate().subject().len(),
        1,
        "one attribute, not several"
    );

    for bad in ["", "   ", "line\nbreak", &"x".repeat(65)] {
        assert!(matches!(
            AccountKey::generate(bad, cert_not_before(), 1),
            Err(KeyError::InvalidCommonName)
        ));
    }
    assert!(matches!(
        AccountKey::generate("ok", cert_not_before(), 0),
        Err(KeyError::InvalidValidity)
    ));
}

#[test]
fn stored_parts_round_trip_and_open_files() {
    let der = KEY.private_key_der();
    let restored = AccountKey::from_parts(der.expose_secret(), &KEY.certificate_pem()).unwrap();
    assert_eq!(restored.certificate_pem(), KEY.certificate_pem());
    assert_eq!(
        restored.private_key_der().expose_secret(),
        der.expose_secret()
    );
    // The DER is PKCS#8 (what storage and `openssl -inkey` expect).
    rsa::pkcs8::PrivateKeyInfoRef::from_der(der.expose_secret()).unwrap();

    let file = seal(&token(), &KEY.certificate_pem(), ContentCipher::default()).unwrap();
    assert_is_the_token(&open(&file, &restored, before_expiry()).unwrap());
    // PEM with CRLF line ends, as a browser upload or a Windows editor may leave it.
    let crlf = KEY.certificate_pem().replace('\n', "\r\n");
    assert!(AccountKey::from_parts(der.expose_secret(), &crlf).is_ok());
}

#[test]
fn stored_parts_must_belong_together() {
    let der = KEY.private_key_der();
    assert!(matches!(
        AccountKey::from_parts(der.expose_secret(), &OTHER_KEY.certificate_pem()),
        Err(KeyError::KeyMismatch)
    ));
    assert!(matches!(
        AccountKey::from_parts(b"not a key", &KEY.certificate_pem()),
        Err(KeyError::InvalidPrivateKey)
    ));
    assert!(matches!(
        AccountKey::from_parts(
            der.expose_secret(),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        ),
        Err(KeyError::InvalidCertificate)
    ));
}

#[test]
fn a_renewed_certificate_still_opens_files_for_the_old_one() {
    let renewed = KEY
        .renew_certificate(cert_not_before() + TimeDelta::days(29), 30)
        .unwrap();
    assert_ne!(renewed.certificate_pem(), KEY.certificate_pem());
    assert_eq!(
        renewed.private_key_der().expose_secret(),
        KEY.private_key_der().expose_secret()
    );

    // Apple still holds the old certificate, so the file names it, not the renewed one.
    let file = seal(&token(), &KEY.certificate_pem(), ContentCipher::default()).unwrap();
    assert_is_the_token(&open(&file, &renewed, before_expiry()).unwrap());
    // And files for the renewed certificate open with the stored parts of either.
    let file = seal(
        &token(),
        &renewed.certificate_pem(),
        ContentCipher::DesEde3Cbc,
    )
    .unwrap();
    assert_is_the_token(&open(&file, &KEY, before_expiry()).unwrap());
}

#[test]
fn seal_refuses_what_is_not_an_rsa_certificate() {
    assert!(seal(&token(), "hello", ContentCipher::default()).is_err());
    assert!(seal(&token(), &private_key_pem(&KEY), ContentCipher::default()).is_err());
}
