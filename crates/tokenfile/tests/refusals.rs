//! Every way an upload is refused before decryption has its own error, every way after it the
//! same one, and no error, `Debug` or message shows a secret.

mod common;

use adesync_tokenfile::{
    AccountKey, ContentCipher, KeyError, MAX_FILE_BYTES, SealError, ServerToken, TokenFileError,
    open, seal,
};
use chrono::TimeDelta;
use common::*;
use secrecy::{ExposeSecret, SecretString};

fn sealed() -> Vec<u8> {
    seal(&token(), &KEY.certificate_pem(), ContentCipher::default()).unwrap()
}

#[test]
fn a_file_for_another_key_is_undecryptable() {
    let file = seal(
        &token(),
        &OTHER_KEY.certificate_pem(),
        ContentCipher::default(),
    )
    .unwrap();
    assert!(matches!(
        open(&file, &KEY, before_expiry()),
        Err(TokenFileError::Undecryptable)
    ));
    // The same through OpenSSL, for each cipher.
    let workspace = Workspace::new(&OTHER_KEY);
    for cipher in ["-aes256", "-des3"] {
        let file = workspace.openssl_encrypt("smime", &inner_message(&token_json()), &[cipher]);
        assert!(matches!(
            open(&file, &KEY, before_expiry()),
            Err(TokenFileError::Undecryptable)
        ));
    }
}

#[test]
fn a_truncated_file_is_malformed() {
    let file = sealed();
    for keep in [file.len() / 2, file.len() - 10, 250] {
        let result = open(&file[..keep], &KEY, before_expiry());
        assert!(
            matches!(result, Err(TokenFileError::Malformed { .. })),
            "keeping {keep} of {} bytes: {result:?}",
            file.len()
        );
    }
    // Headers only: the download stopped before the content.
    let headers_only = &file[..file.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4];
    assert!(matches!(
        open(headers_only, &KEY, before_expiry()),
        Err(TokenFileError::Malformed { .. })
    ));
}

#[test]
fn an_encrypted_message_that_is_not_a_token_is_undecryptable() {
    let workspace = Workspace::new(&KEY);
    let file = workspace.openssl_encrypt("smime", "hello\n", &["-aes256"]);
    assert!(matches!(
        open(&file, &KEY, before_expiry()),
        Err(TokenFileError::Undecryptable)
    ));
}

#[test]
fn random_bytes_are_not_a_token_file() {
    let mut bytes = vec![0u8; 2048];
    getrandom::fill(&mut bytes).unwrap();
    bytes[0] = 0xa5; // never a DER SEQUENCE, so never taken for a binary CMS
    assert!(matches!(
        open(&bytes, &KEY, before_expiry()),
        Err(TokenFileError::NotATokenFile)
    ));
    for other in [
        &b""[..],
        KEY.certificate_pem().as_bytes(),
        token_json().as_bytes(),
        b"Content-Type: text/plain\r\n\r\nhello\r\n",
    ] {
        assert!(matches!(
            open(other, &KEY, before_expiry()),
            Err(TokenFileError::NotATokenFile)
        ));
    }
}

#[test]
fn an_oversized_file_is_too_large_before_it_is_read() {
    let mut huge = sealed();
    huge.resize(MAX_FILE_BYTES + 1, b'\n');
    assert!(matches!(
        open(&huge, &KEY, before_expiry()),
        Err(TokenFileError::TooLarge {
            limit_bytes: MAX_FILE_BYTES
        })
    ));
}

#[test]
fn an_expired_token_says_when_it_expired() {
    let file = sealed();
    for now in [expiry(), expiry() + TimeDelta::days(3)] {
        match open(&file, &KEY, now) {
            Err(TokenFileError::Expired { expired_at }) => assert_eq!(expired_at, expiry()),
            other => panic!("expected Expired at {now}, got {other:?}"),
        }
    }
    assert!(open(&file, &KEY, expiry() - TimeDelta::seconds(1)).is_ok());
}

#[test]
fn a_token_with_a_missing_field_or_broken_json_is_undecryptable() {
    let mut empty = token();
    empty.access_secret = SecretString::from("");
    let file = seal(&empty, &KEY.certificate_pem(), ContentCipher::default()).unwrap();
    assert!(matches!(
        open(&file, &KEY, before_expiry()),
        Err(TokenFileError::Undecryptable)
    ));

    let workspace = Workspace::new(&KEY);
    let without_consumer_key =
        token_json().replace(&format!("\"consumer_key\":\"{CONSUMER_KEY}\","), "");
    let cut = &token_json()[..60];
    let bad_date = token_json().replace("2031-07-01T22:18:53Z", "next July");
    for json in [without_consumer_key.as_str(), cut, &bad_date] {
        let file = workspace.openssl_encrypt("smime", &inner_message(json), &["-aes256"]);
        assert!(matches!(
            open(&file, &KEY, before_expiry()),
            Err(TokenFileError::Undecryptable)
        ));
    }
}

#[test]
fn nothing_shown_contains_a_secret() {
    let token = token();
    let key_der = KEY.private_key_der();
    let key_pem = private_key_pem(&KEY);
    let key_base64: String = key_pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();

    let mut shown = vec![format!("{token:?}"), format!("{:?}", *KEY)];

    // Every refusal's message, produced from files whose content holds the secrets.
    let workspace = Workspace::new(&KEY);
    let file = sealed();
    let cut_json = &token_json()[..100];
    let refusals: Vec<TokenFileError> = vec![
        open(&file, &OTHER_KEY, before_expiry()).unwrap_err(),
        open(&file[..file.len() / 2], &KEY, before_expiry()).unwrap_err(),
        open(&file, &KEY, expiry()).unwrap_err(),
        open(b"junk", &KEY, before_expiry()).unwrap_err(),
        open(&vec![b'A'; MAX_FILE_BYTES + 1], &KEY, before_expiry()).unwrap_err(),
        open(
            &workspace.openssl_encrypt("smime", "hello", &["-aes256"]),
            &KEY,
            before_expiry(),
        )
        .unwrap_err(),
        open(
            &workspace.openssl_encrypt("smime", &inner_message(cut_json), &["-aes256"]),
            &KEY,
            before_expiry(),
        )
        .unwrap_err(),
        open(
            &workspace.openssl_encrypt("smime", &inner_message(&token_json()), &["-camellia128"]),
            &KEY,
            before_expiry(),
        )
        .unwrap_err(),
        ServerToken::from_json_bytes(
            format!("{{\"consumer_key\": 1{CONSUMER_SECRET}}}").as_bytes(),
        )
        .unwrap_err(),
        ServerToken::from_json_bytes(token_json().replace("2031", "x").as_bytes()).unwrap_err(),
    ];
    for error in &refusals {
        shown.push(error.to_string());
        shown.push(format!("{error:?}"));
    }
    let key_errors = [
        AccountKey::from_parts(key_der.expose_secret(), &OTHER_KEY.certificate_pem()).unwrap_err(),
        AccountKey::from_parts(&key_der.expose_secret()[..100], &KEY.certificate_pem())
            .unwrap_err(),
    ];
    for error in &key_errors {
        assert!(matches!(
            error,
            KeyError::KeyMismatch | KeyError::InvalidPrivateKey
        ));
        shown.push(error.to_string());
    }
    shown.push(
        seal(&token, "junk", ContentCipher::default())
            .unwrap_err()
            .to_string(),
    );
    assert!(matches!(
        seal(&token, "junk", ContentCipher::default()),
        Err(SealError::InvalidCertificate)
    ));

    for text in &shown {
        for secret in SECRETS {
            assert!(!text.contains(secret), "{text:?} shows a token secret");
            // Nor a recognisable part of one.
            assert!(
                !text.contains(&secret[3..15]),
                "{text:?} shows part of a token secret"
            );
        }
        assert!(
            !text.contains(&key_base64[..40]),
            "{text:?} shows the private key"
        );
        assert!(
            !text.contains("PRIVATE KEY"),
            "{text:?} shows the private key"
        );
    }
    // Messages are single sentences that say what to do.
    for error in &refusals {
        let message = error.to_string();
        assert!(
            message.ends_with('.') && !message.contains('\n'),
            "{message:?}"
        );
        assert!(
            message.contains("; "),
            "{message:?} says what to do after a semicolon"
        );
    }
    let expired = open(&file, &KEY, expiry()).unwrap_err().to_string();
    assert!(expired.contains("2031-07-01"), "{expired}");
    assert_eq!(token.consumer_key.expose_secret(), CONSUMER_KEY);
}

/// Files whose envelope parses but that must not open with [`KEY`], each broken at another
/// step of the decryption.
mod broken_after_the_envelope {
    use super::*;
    use base64::Engine as _;
    use cms::content_info::ContentInfo;
    use cms::enveloped_data::{
        EnvelopedData, KeyTransRecipientInfo, RecipientInfo, RecipientInfos,
    };
    use der::asn1::{OctetString, SetOfVec};
    use der::referenced::OwnedToRef;
    use der::{Any, Decode, DecodePem, Encode};
    use x509_cert::Certificate;

    /// The binary CMS of a file [`seal`] wrote (which `open` reads as it is).
    fn cms_of(file: &[u8]) -> Vec<u8> {
        let text = std::str::from_utf8(file).unwrap();
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        let compact: String = body.split_whitespace().collect();
        base64::engine::general_purpose::STANDARD
            .decode(compact)
            .unwrap()
    }

    /// A file of [`token`] sealed to [`KEY`] with `cipher`, its envelope changed by `tamper`.
    fn tampered(cipher: ContentCipher, tamper: impl FnOnce(&mut EnvelopedData)) -> Vec<u8> {
        let file = seal(&token(), &KEY.certificate_pem(), cipher).unwrap();
        let info = ContentInfo::from_der(&cms_of(&file)).unwrap();
        let mut data: EnvelopedData = info.content.decode_as().unwrap();
        tamper(&mut data);
        ContentInfo {
            content_type: info.content_type,
            content: Any::encode_from(&data).unwrap(),
        }
        .to_der()
        .unwrap()
    }

    fn with_recipient(data: &mut EnvelopedData, change: impl FnOnce(&mut KeyTransRecipientInfo)) {
        let mut recipients = data.recip_infos.0.clone().into_vec();
        let RecipientInfo::Ktri(recipient) = &mut recipients[0] else {
            panic!("seal names its recipient by key transport");
        };
        change(recipient);
        data.recip_infos = RecipientInfos(SetOfVec::try_from(recipients).unwrap());
    }

    /// `content_key` sent to [`KEY`]'s public key with valid RSA padding.
    fn transported(content_key: &[u8]) -> OctetString {
        let certificate = Certificate::from_pem(KEY.certificate_pem().as_bytes()).unwrap();
        let public_key = rsa::PublicKey::try_from(
            certificate
                .tbs_certificate()
                .subject_public_key_info()
                .owned_to_ref(),
        )
        .unwrap();
        OctetString::new(public_key.pkcs1v15_encrypt(content_key).unwrap()).unwrap()
    }

    fn change_ciphertext(data: &mut EnvelopedData, change: impl FnOnce(&mut Vec<u8>)) {
        let content = &mut data.encrypted_content.encrypted_content;
        let mut bytes = content.take().unwrap().into_bytes().into_vec();
        change(&mut bytes);
        *content = Some(OctetString::new(bytes).unwrap());
    }

    #[test]
    fn every_failure_past_the_envelope_is_one_indistinguishable_refusal() {
        let workspace = Workspace::new(&KEY);
        let mut no_field = token();
        no_field.access_secret = SecretString::from("");
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "sealed to another key",
                seal(
                    &token(),
                    &OTHER_KEY.certificate_pem(),
                    ContentCipher::default(),
                )
                .unwrap(),
            ),
            (
                "an encrypted key with one byte changed",
                tampered(ContentCipher::Aes256Cbc, |data| {
                    with_recipient(data, |recipient| {
                        let mut key = recipient.enc_key.as_bytes().to_vec();
                        key[100] ^= 0x01;
                        recipient.enc_key = OctetString::new(key).unwrap();
                    });
                }),
            ),
            (
                "an encrypted key cut short",
                tampered(ContentCipher::Aes256Cbc, |data| {
                    with_recipient(data, |recipient| {
                        let key = &recipient.enc_key.as_bytes()[..200];
                        recipient.enc_key = OctetString::new(key).unwrap();
                    });
                }),
            ),
            (
                "a validly padded content key of the wrong length (16 bytes for AES-256)",
                tampered(ContentCipher::Aes256Cbc, |data| {
                    with_recipient(data, |recipient| recipient.enc_key = transported(&[7; 16]));
                }),
            ),
            (
                "a validly padded content key of the right length that is not the key",
                tampered(ContentCipher::Aes256Cbc, |data| {
                    with_recipient(data, |recipient| recipient.enc_key = transported(&[7; 32]));
                }),
            ),
            (
                "a content key of the wrong length for the content's cipher",
                tampered(ContentCipher::Aes256Cbc, |data| {
                    data.encrypted_content.content_enc_alg.oid =
                        const_oid::db::rfc5911::ID_AES_128_CBC;
                }),
            ),
            (
                "the content's padding changed",
                tampered(ContentCipher::Aes256Cbc, |data| {
                    change_ciphertext(data, |bytes| {
                        let last_block = bytes.len() - 32;
                        bytes[last_block + 15] ^= 0x01;
                    });
                }),
            ),
            (
                "a block of the content changed",
                tampered(ContentCipher::Aes256Cbc, |data| {
                    change_ciphertext(data, |bytes| {
                        let middle = bytes.len() / 32 * 16;
                        bytes[middle] ^= 0x80;
                    });
                }),
            ),
            (
                "the content cut by a block",
                tampered(ContentCipher::DesEde3Cbc, |data| {
                    change_ciphertext(data, |bytes| bytes.truncate(bytes.len() - 8));
                }),
            ),
            (
                "a message that is not a token",
                workspace.openssl_encrypt("smime", "hello\n", &["-aes256"]),
            ),
            (
                "a token without a field",
                seal(&no_field, &KEY.certificate_pem(), ContentCipher::default()).unwrap(),
            ),
            (
                "a token cut short",
                workspace.openssl_encrypt(
                    "smime",
                    &inner_message(&token_json()[..60]),
                    &["-aes256"],
                ),
            ),
        ];

        // The control: untouched, the same file opens.
        let untouched = tampered(ContentCipher::Aes256Cbc, |_| {});
        assert_is_the_token(&open(&untouched, &KEY, before_expiry()).unwrap());

        let expected = TokenFileError::Undecryptable;
        for (what, file) in &cases {
            let refusal = open(file, &KEY, before_expiry()).expect_err(what);
            assert!(
                matches!(refusal, TokenFileError::Undecryptable),
                "{what}: {refusal:?}"
            );
            assert_eq!(refusal.to_string(), expected.to_string(), "{what}");
            assert_eq!(format!("{refusal:?}"), format!("{expected:?}"), "{what}");
        }
    }
}
