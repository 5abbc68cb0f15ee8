//! The vault against a real KMS emulator (moto), one fresh KMS key per test.
//!
//! Run through `cargo run -p adesync-local -- test`, which starts the emulators, or start moto
//! (`moto_server -H 127.0.0.1 -p 5000`) and set `AWS_ENDPOINT_URL_KMS=http://127.0.0.1:5000`.

use adesync_secrets::{Context, Sealed, Vault, VaultError};
use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_sdk_kms::config::Credentials;
use secrecy::ExposeSecret;

const CREDENTIALS: &[u8] =
    br#"{"consumer_key":"CK_1","consumer_secret":"CS_2","access_token":"AT_3","access_secret":"AS_4"}"#;

/// A KMS client for the emulator named in the environment; fails loudly when there is none.
async fn kms() -> aws_sdk_kms::Client {
    let Some(endpoint) = ["AWS_ENDPOINT_URL_KMS", "AWS_ENDPOINT_URL"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    else {
        panic!(
            "no KMS endpoint: run these tests through `cargo run -p adesync-local -- test`, \
             or start moto (`moto_server -H 127.0.0.1 -p 5000`) and set \
             AWS_ENDPOINT_URL_KMS=http://127.0.0.1:5000"
        );
    };
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(RegionProviderChain::default_provider().or_else("us-east-1"));
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        loader = loader.credentials_provider(Credentials::new(
            "test",
            "test",
            None,
            None,
            "adesync-secrets-tests",
        ));
    }
    let config = loader.load().await;
    aws_sdk_kms::Client::from_conf(
        aws_sdk_kms::config::Builder::from(&config)
            .endpoint_url(endpoint)
            .build(),
    )
}

/// A vault over a KMS key of its own, so tests share nothing.
async fn vault(kms: &aws_sdk_kms::Client) -> Vault {
    let created = match kms
        .create_key()
        .description("adesync-secrets test")
        .send()
        .await
    {
        Ok(created) => created,
        Err(e) => panic!(
            "CreateKey failed: {}",
            aws_sdk_kms::error::DisplayErrorContext(&e)
        ),
    };
    let Some(key_id) = created.key_metadata().map(|m| m.key_id().to_owned()) else {
        panic!("CreateKey returned no key metadata");
    };
    Vault::new(kms.clone(), key_id)
}

fn ok<T>(result: Result<T, VaultError>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn sealed_credentials_open_with_the_same_context() {
    let vault = vault(&kms().await).await;
    let context = Context::token_credentials("acc-1", "tok-1");
    let sealed = ok(vault.seal(CREDENTIALS, &context).await);
    let stored = sealed.to_bytes();
    assert!(
        !stored.windows(4).any(|w| w == b"CS_2"),
        "plaintext visible in the sealed bytes"
    );
    let reread = ok(Sealed::from_bytes(&stored));
    let opened = ok(vault.open(&reread, &context).await);
    assert_eq!(opened.expose_secret(), CREDENTIALS);
}

#[tokio::test]
async fn account_key_round_trips_including_an_empty_secret() {
    let vault = vault(&kms().await).await;
    let context = Context::account_key("acc-1");
    let der: Vec<u8> = (0..=255).cycle().take(1218).collect();
    let sealed = ok(vault.seal(&der, &context).await);
    assert_eq!(ok(vault.open(&sealed, &context).await).expose_secret(), der);
    let empty = ok(vault.seal(b"", &context).await);
    assert!(
        ok(vault.open(&empty, &context).await)
            .expose_secret()
            .is_empty()
    );
}

#[tokio::test]
async fn another_token_account_or_purpose_cannot_open_it() {
    let vault = vault(&kms().await).await;
    let sealed = ok(vault
        .seal(CREDENTIALS, &Context::token_credentials("acc-1", "tok-1"))
        .await);
    for other in [
        Context::token_credentials("acc-1", "tok-2"),
        Context::token_credentials("acc-2", "tok-1"),
        Context::account_key("acc-1"),
        Context::new(),
        Context::token_credentials("acc-1", "tok-1").with("extra", "entry"),
    ] {
        let result = vault.open(&sealed, &other).await;
        assert!(
            matches!(result, Err(VaultError::Tampered)),
            "{other:?} gave {:?}",
            result.map(|_| "a plaintext")
        );
    }
}

#[tokio::test]
async fn flipped_bits_are_tampering() {
    let vault = vault(&kms().await).await;
    let context = Context::token_credentials("acc-1", "tok-1");
    let stored = ok(vault.seal(CREDENTIALS, &context).await).to_bytes();
    let key_len = usize::from(u16::from_be_bytes([stored[1], stored[2]]));
    // One bit in the ciphertext, the tag, the nonce, and inside the encrypted data key.
    let positions = [
        stored.len() - 30,
        stored.len() - 1,
        3 + key_len + 5,
        3 + key_len / 2,
    ];
    for position in positions {
        let mut flipped = stored.clone();
        flipped[position] ^= 0x10;
        let sealed = ok(Sealed::from_bytes(&flipped));
        let result = vault.open(&sealed, &context).await;
        assert!(
            matches!(result, Err(VaultError::Tampered)),
            "byte {position} gave {:?}",
            result.map(|_| "a plaintext")
        );
    }
}

#[tokio::test]
async fn a_data_key_from_another_kms_key_is_refused() {
    let kms = kms().await;
    let ours = vault(&kms).await;
    let theirs = vault(&kms).await;
    let context = Context::account_key("acc-1");
    let sealed = ok(theirs.seal(b"their key", &context).await);
    let result = ours.open(&sealed, &context).await;
    assert!(
        matches!(
            result,
            Err(VaultError::Kms {
                operation: "Decrypt",
                ..
            })
        ),
        "{:?}",
        result.map(|_| "a plaintext")
    );

    // Their data key with our ciphertext: KMS decrypts the key, GCM refuses the mix.
    let our_sealed = ok(ours.seal(b"our key", &context).await);
    let their_stored = sealed.to_bytes();
    let our_stored = our_sealed.to_bytes();
    let their_header = 3 + usize::from(u16::from_be_bytes([their_stored[1], their_stored[2]]));
    let our_header = 3 + usize::from(u16::from_be_bytes([our_stored[1], our_stored[2]]));
    let spliced = [&their_stored[..their_header], &our_stored[our_header..]].concat();
    let result = theirs
        .open(&ok(Sealed::from_bytes(&spliced)), &context)
        .await;
    assert!(
        matches!(result, Err(VaultError::Tampered)),
        "{:?}",
        result.map(|_| "a plaintext")
    );
}

#[tokio::test]
async fn sealing_twice_gives_different_bytes() {
    let vault = vault(&kms().await).await;
    let context = Context::token_credentials("acc-1", "tok-1");
    let first = ok(vault.seal(CREDENTIALS, &context).await).to_bytes();
    let second = ok(vault.seal(CREDENTIALS, &context).await).to_bytes();
    let header = |b: &[u8]| 3 + usize::from(u16::from_be_bytes([b[1], b[2]]));
    let (first_key, first_rest) = first.split_at(header(&first));
    let (second_key, second_rest) = second.split_at(header(&second));
    assert_ne!(first_key, second_key, "data key reused");
    assert_ne!(first_rest[..12], second_rest[..12], "nonce reused");
    assert_ne!(first_rest[12..], second_rest[12..]);
}

#[tokio::test]
async fn debug_output_shows_no_key_material() {
    let vault = vault(&kms().await).await;
    let sealed = ok(vault
        .seal(CREDENTIALS, &Context::account_key("acc-1"))
        .await);
    let stored = sealed.to_bytes();
    let debug = format!("{sealed:?} {vault:?}");
    assert!(debug.contains(vault.key_id()), "{debug}");
    // No run of stored bytes, in any rendering Debug would use for them.
    for window in stored.windows(4) {
        let decimal = format!("{}, {}, {}, {}", window[0], window[1], window[2], window[3]);
        let hex: String = window.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!debug.contains(&decimal), "{debug}");
        assert!(!debug.to_lowercase().contains(&hex), "{debug}");
    }
    assert!(
        !debug.contains("CS_2") && !debug.contains("secret"),
        "{debug}"
    );
}
