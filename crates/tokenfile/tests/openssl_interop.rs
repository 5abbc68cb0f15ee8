//! Interoperability with OpenSSL, an independent S/MIME implementation: files it encrypts open,
//! and files `seal` produces decrypt with it. These tests need the `openssl` CLI and fail with
//! instructions when it is missing.

mod common;

use adesync_tokenfile::{ContentCipher, TokenFileError, open, seal};
use common::*;

#[test]
fn openssl_smime_files_open_with_every_cipher() {
    let workspace = Workspace::new(&KEY);
    let message = inner_message(&token_json());
    for cipher in ["-aes256", "-aes128", "-des3", "-aes192"] {
        let file = workspace.openssl_encrypt("smime", &message, &[cipher]);
        let opened = open(&file, &KEY, before_expiry())
            .unwrap_or_else(|error| panic!("openssl smime {cipher}: {error}"));
        assert_is_the_token(&opened);
    }
}

#[test]
fn openssl_files_open_in_the_shapes_other_writers_use() {
    let workspace = Workspace::new(&KEY);
    let message = inner_message(&token_json());
    let cases: [(&str, &[&str]); 5] = [
        // BER with indefinite lengths and chunked content, as streaming S/MIME writers emit.
        ("smime", &["-aes256", "-stream"]),
        // Binary CMS without the S/MIME wrapper.
        ("smime", &["-aes256", "-outform", "DER"]),
        // LF-only text: -binary keeps the message exactly as written.
        ("smime", &["-aes128", "-binary"]),
        // Recipient named by subject key identifier instead of issuer and serial number.
        ("cms", &["-aes256", "-keyid"]),
        ("cms", &["-aes256", "-stream", "-keyid"]),
    ];
    for (tool, extra) in cases {
        let file = workspace.openssl_encrypt(tool, &message, extra);
        let opened = open(&file, &KEY, before_expiry())
            .unwrap_or_else(|error| panic!("openssl {tool} {extra:?}: {error}"));
        assert_is_the_token(&opened);
    }
    // An inner entity with LF line ends and the JSON wrapped over several lines.
    let json = token_json().replace(",\"", ",\n\"");
    let lf = format!(
        "Content-Type: text/plain\n\n-----BEGIN MESSAGE-----\n{json}\n-----END MESSAGE-----\n"
    );
    let file = workspace.openssl_encrypt("smime", &lf, &["-aes256", "-binary"]);
    assert_is_the_token(&open(&file, &KEY, before_expiry()).unwrap());
}

#[test]
fn sealed_files_decrypt_with_openssl() {
    let workspace = Workspace::new(&KEY);
    for cipher in [
        ContentCipher::Aes128Cbc,
        ContentCipher::Aes256Cbc,
        ContentCipher::DesEde3Cbc,
    ] {
        let file = seal(&token(), &KEY.certificate_pem(), cipher).unwrap();
        std::fs::write(workspace.path("sealed.p7m"), &file).unwrap();
        let plaintext = run_openssl(&[
            "smime",
            "-decrypt",
            "-in",
            &workspace.arg("sealed.p7m"),
            "-inkey",
            &workspace.arg("key.pem"),
        ]);
        assert_eq!(
            String::from_utf8(plaintext).unwrap(),
            inner_message(&token_json()),
            "{cipher:?}"
        );
    }
}

#[test]
fn openssl_reads_the_account_certificate_and_key() {
    let workspace = Workspace::new(&KEY);
    let text = String::from_utf8(run_openssl(&[
        "x509",
        "-in",
        &workspace.arg("cert.pem"),
        "-noout",
        "-text",
    ]))
    .unwrap();
    for expected in [
        "Subject: CN = adesync-test",
        "Issuer: CN = adesync-test",
        "Public-Key: (2048 bit)",
        "Exponent: 65537",
        "Digital Signature, Key Encipherment",
        "sha256WithRSAEncryption",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // The stored PKCS#8 key is the certificate's key.
    let from_key = run_openssl(&["pkey", "-in", &workspace.arg("key.pem"), "-pubout"]);
    let from_cert = run_openssl(&[
        "x509",
        "-in",
        &workspace.arg("cert.pem"),
        "-noout",
        "-pubkey",
    ]);
    assert_eq!(from_key, from_cert);
}

#[test]
fn openssl_files_with_an_unsupported_cipher_are_named() {
    let workspace = Workspace::new(&KEY);
    let file = workspace.openssl_encrypt("smime", &inner_message(&token_json()), &["-camellia256"]);
    match open(&file, &KEY, before_expiry()) {
        Err(TokenFileError::UnsupportedCipher { algorithm }) => {
            assert!(!algorithm.is_empty());
        }
        other => panic!("expected UnsupportedCipher, got {other:?}"),
    }
}
