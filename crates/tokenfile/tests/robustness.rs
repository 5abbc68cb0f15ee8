//! `open` never panics: random bytes, random content behind S/MIME headers, random BER, and
//! truncations and bit flips of a valid file.

mod common;

use std::sync::LazyLock;

use adesync_tokenfile::{ContentCipher, open, seal};
use base64::Engine as _;
use common::*;
use proptest::prelude::*;

static FILE: LazyLock<Vec<u8>> =
    LazyLock::new(|| seal(&token(), &KEY.certificate_pem(), ContentCipher::default()).unwrap());

/// Cutting the file anywhere before its last base64 character loses content; only trailing
/// line ends (and `=` padding, which is optional) can go without harm.
fn last_content_byte() -> usize {
    FILE.iter()
        .rposition(|byte| byte.is_ascii_alphanumeric() || *byte == b'+' || *byte == b'/')
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        prop_assert!(open(&bytes, &KEY, before_expiry()).is_err());
    }

    #[test]
    fn random_ber_is_refused(tail in proptest::collection::vec(any::<u8>(), 0..2048)) {
        // Starts like a CMS ContentInfo so the BER decoder, not the wrapper check, sees it.
        let mut bytes = vec![0x30, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03, 0xa0, 0x80];
        bytes.extend(tail);
        prop_assert!(open(&bytes, &KEY, before_expiry()).is_err());
        let wrapped = format!(
            "Content-Type: application/pkcs7-mime\r\n\r\n{}",
            base64::engine::general_purpose::STANDARD.encode(&bytes)
        );
        prop_assert!(open(wrapped.as_bytes(), &KEY, before_expiry()).is_err());
    }

    #[test]
    fn random_text_behind_headers_is_refused(body in "[ -~\r\n]{0,2000}") {
        let file = format!("Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\n{body}");
        prop_assert!(open(file.as_bytes(), &KEY, before_expiry()).is_err());
    }

    #[test]
    fn truncated_files_are_refused(fraction in 0.0..1.0f64) {
        let keep = (fraction * last_content_byte() as f64) as usize;
        prop_assert!(open(&FILE[..keep], &KEY, before_expiry()).is_err());
    }

    #[test]
    fn bit_flips_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), 0..8u8), 1..8)) {
        let mut file = FILE.clone();
        for (index, bit) in flips {
            let at = index.index(file.len());
            file[at] ^= 1 << bit;
        }
        // CBC is not authenticated and headers are forgiving, so some flips still open (a
        // header letter's case, a bit in the IV that lands in the inner headers); the property
        // is that every outcome is a value, never a panic, and that errors stay errors.
        let _ = open(&file, &KEY, before_expiry());
    }

    #[test]
    fn flips_in_the_cms_structure_are_refused_or_harmless(index in any::<prop::sample::Index>(), bit in 0..8u8) {
        // Flip one bit of the decoded CMS and wrap it again, so every flip hits the envelope.
        let text = std::str::from_utf8(&FILE).unwrap();
        let (headers, body) = text.split_once("\r\n\r\n").unwrap();
        let compact: String = body.split_whitespace().collect();
        let mut cms = base64::engine::general_purpose::STANDARD.decode(compact).unwrap();
        let at = index.index(cms.len());
        cms[at] ^= 1 << bit;
        let file = format!("{headers}\r\n\r\n{}", base64::engine::general_purpose::STANDARD.encode(&cms));
        if let Ok(token) = open(file.as_bytes(), &KEY, before_expiry()) {
            // Only flips that the JSON survives intact can succeed (CBC garbles the block a
            // flip lands in, and the next block's bit, which here lie in the inner headers).
            assert_is_the_token(&token);
        }
    }
}
