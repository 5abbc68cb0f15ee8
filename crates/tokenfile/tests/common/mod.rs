//! Shared fixtures: key pairs (generated once per test binary; RSA generation is the slow part),
//! a token with recognisable secrets, and the `openssl` CLI.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::LazyLock;

use adesync_tokenfile::{AccountKey, ServerToken};
use chrono::{DateTime, TimeZone, Utc};
use der::pem::LineEnding;
use secrecy::{ExposeSecret, SecretString};

pub const CONSUMER_KEY: &str = "CK_9af2f8218b150c351ad802c6f3d66abe";
pub const CONSUMER_SECRET: &str = "CS_0b1d5e7f9a2c4e6081a3c5e7f9b1d3f5";
pub const ACCESS_TOKEN: &str = "AT_7c9e1a3b5d7f9b1c3e5a7c9e1b3d5f7a";
pub const ACCESS_SECRET: &str = "AS_5e3c1a9f7d5b3e1c9a7f5d3b1e9c7a5f";
pub const SECRETS: [&str; 4] = [CONSUMER_KEY, CONSUMER_SECRET, ACCESS_TOKEN, ACCESS_SECRET];

/// The expiry in the token JSON, and a moment well before it.
pub fn expiry() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2031, 7, 1, 22, 18, 53).unwrap()
}

pub fn before_expiry() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 7, 2, 9, 0, 0).unwrap()
}

pub fn token_json() -> String {
    format!(
        r#"{{"consumer_key":"{CONSUMER_KEY}","consumer_secret":"{CONSUMER_SECRET}","access_token":"{ACCESS_TOKEN}","access_secret":"{ACCESS_SECRET}","access_token_expiry":"2031-07-01T22:18:53Z"}}"#
    )
}

pub fn token() -> ServerToken {
    ServerToken {
        consumer_key: SecretString::from(CONSUMER_KEY),
        consumer_secret: SecretString::from(CONSUMER_SECRET),
        access_token: SecretString::from(ACCESS_TOKEN),
        access_secret: SecretString::from(ACCESS_SECRET),
        access_token_expiry: expiry(),
    }
}

pub fn assert_is_the_token(token: &ServerToken) {
    assert_eq!(token.consumer_key.expose_secret(), CONSUMER_KEY);
    assert_eq!(token.consumer_secret.expose_secret(), CONSUMER_SECRET);
    assert_eq!(token.access_token.expose_secret(), ACCESS_TOKEN);
    assert_eq!(token.access_secret.expose_secret(), ACCESS_SECRET);
    assert_eq!(token.access_token_expiry, expiry());
}

/// The inner MIME entity as Apple writes it, around any body.
pub fn inner_message(body: &str) -> String {
    format!(
        "Content-Type: text/plain;charset=UTF-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n-----BEGIN MESSAGE-----\r\n{body}\r\n-----END MESSAGE-----\r\n"
    )
}

pub fn cert_not_before() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 7, 1, 12, 0, 0).unwrap()
}

pub static KEY: LazyLock<AccountKey> =
    LazyLock::new(|| AccountKey::generate("adesync-test", cert_not_before(), 30).unwrap());

pub static OTHER_KEY: LazyLock<AccountKey> =
    LazyLock::new(|| AccountKey::generate("someone-else", cert_not_before(), 30).unwrap());

/// The private key as PKCS#8 PEM, as `openssl -inkey` reads it.
pub fn private_key_pem(key: &AccountKey) -> String {
    der::pem::encode_string(
        "PRIVATE KEY",
        LineEnding::LF,
        key.private_key_der().expose_secret(),
    )
    .unwrap()
}

/// The `openssl` CLI. The interop tests need it; they fail (never skip) without it.
pub fn openssl() -> Command {
    let found = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        found,
        "the `openssl` command-line tool is required by the interop tests and was not found; \
         install it (Debian/Ubuntu: `apt-get install openssl`) and run the tests again"
    );
    Command::new("openssl")
}

/// Run an `openssl` command line, failing the test with its stderr if it fails.
pub fn run_openssl(args: &[&str]) -> Vec<u8> {
    let output = openssl().args(args).output().unwrap();
    assert!(
        output.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// A temporary folder with the key's certificate and private key as PEM files.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new(key: &AccountKey) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.pem"), key.certificate_pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), private_key_pem(key)).unwrap();
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn arg(&self, name: &str) -> String {
        path_arg(&self.path(name))
    }

    /// Encrypt `message` to the certificate with `openssl <tool> -encrypt <extra...>`; the file.
    pub fn openssl_encrypt(&self, tool: &str, message: &str, extra: &[&str]) -> Vec<u8> {
        std::fs::write(self.path("message"), message).unwrap();
        let (input, output, cert) = (
            self.arg("message"),
            self.arg("token.p7m"),
            self.arg("cert.pem"),
        );
        let mut args = vec![tool, "-encrypt", "-in", &input, "-out", &output];
        args.extend_from_slice(extra);
        args.push(&cert);
        run_openssl(&args);
        std::fs::read(self.path("token.p7m")).unwrap()
    }
}

fn path_arg(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}
