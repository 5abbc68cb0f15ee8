//! Every way an upload is refused has its own error, and no error, `Debug` or message shows a
//! secret.

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
fn a_file_for_another_key_is_wrong_key() {
    let file = seal(
        &token(),
        &OTHER_KEY.certificate_pem(),
        ContentCipher::default(),
    )
    .unwrap();
    assert!(matches!(
        open(&file, &KEY, before_expiry()),
        Err(TokenFileError::WrongKey)
    ));
    // The same through OpenSSL, for each cipher.
    let workspace = Workspace::new(&OTHER_KEY);
    for cipher in ["-aes256", "-des3"] {
        let file = workspace.openssl_encrypt("smime", &inner_message(&token_json()), &[cipher]);
        assert!(matches!(
            open(&file, &KEY, before_expiry()),
            Err(TokenFileError::WrongKey)
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
fn an_encrypted_message_that_is_not_a_token_is_not_a_token() {
    let workspace = Workspace::new(&KEY);
    let file = workspace.openssl_encrypt("smime", "hello\n", &["-aes256"]);
    assert!(matches!(
        open(&file, &KEY, before_expiry()),
        Err(TokenFileError::NotAToken)
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
fn a_missing_or_empty_field_is_named() {
    let mut empty = token();
    empty.access_secret = SecretString::from("");
    let file = seal(&empty, &KEY.certificate_pem(), ContentCipher::default()).unwrap();
    assert!(matches!(
        open(&file, &KEY, before_expiry()),
        Err(TokenFileError::MissingField {
            field: "access_secret"
        })
    ));

    let workspace = Workspace::new(&KEY);
    let without_consumer_key =
        token_json().replace(&format!("\"consumer_key\":\"{CONSUMER_KEY}\","), "");
    let file =
        workspace.openssl_encrypt("smime", &inner_message(&without_consumer_key), &["-aes256"]);
    assert!(matches!(
        open(&file, &KEY, before_expiry()),
        Err(TokenFileError::MissingField {
            field: "consumer_key"
        })
    ));
}

#[test]
fn broken_json_and_dates_have_their_own_errors() {
    let workspace = Workspace::new(&KEY);
    let cut = &token_json()[..60];
    let file = workspace.openssl_encrypt("smime", &inner_message(cut), &["-aes256"]);
    assert!(matches!(
        open(&file, &KEY, before_expiry()),
        Err(TokenFileError::MalformedJson { line: 1, .. })
    ));
    let bad_date = token_json().replace("2031-07-01T22:18:53Z", "next July");
    let file = workspace.openssl_encrypt("smime", &inner_message(&bad_date), &["-aes256"]);
    assert!(matches!(
        open(&file, &KEY, before_expiry()),
        Err(TokenFileError::InvalidExpiry)
    ));
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
