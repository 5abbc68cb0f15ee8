//! The four OAuth 1.0a values of a server token, and the signed `/session` header.

use secrecy::{ExposeSecret, SecretString};

/// OAuth 1.0a credentials from a decrypted server token (`.p7m`).
///
/// All four are secret; `Debug` shows none of them.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// OAuth consumer key (`CK_…`).
    pub consumer_key: SecretString,
    /// OAuth consumer secret (`CS_…`).
    pub consumer_secret: SecretString,
    /// OAuth token (`AT_…`).
    pub access_token: SecretString,
    /// OAuth token secret (`AS_…`).
    pub access_secret: SecretString,
}

impl Credentials {
    /// The `Authorization` header for `GET <url>`, signed with HMAC-SHA1 as Apple requires.
    ///
    /// `url` must be the exact URL requested, without a query. The `realm="ADM"` parameter
    /// Apple's sample header carries is added in front; RFC 5849 §3.4.1.3.1 keeps `realm`
    /// out of the signature, so adding it does not change what is signed.
    pub(crate) fn authorization(&self, url: &str) -> SecretString {
        let token = oauth1_request::Token::from_parts(
            self.consumer_key.expose_secret(),
            self.consumer_secret.expose_secret(),
            self.access_token.expose_secret(),
            self.access_secret.expose_secret(),
        );
        let mut builder =
            oauth1_request::Builder::with_token(token, oauth1_request::HmacSha1::new());
        // Apple's sample header carries `oauth_version="1.0"`; the crate omits it by default.
        builder.version(true);
        let signed = builder.get(url, &());
        let params = signed.strip_prefix("OAuth ").unwrap_or(&signed);
        SecretString::from(format!("OAuth realm=\"ADM\",{params}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials() -> Credentials {
        Credentials {
            consumer_key: "CK_key".into(),
            consumer_secret: "CS_secret".into(),
            access_token: "AT_token".into(),
            access_secret: "AS_secret".into(),
        }
    }

    #[test]
    fn header_names_realm_and_hmac_sha1() {
        let header = credentials().authorization("https://mdmenrollment.apple.com/session");
        let header = header.expose_secret();
        assert!(header.starts_with("OAuth realm=\"ADM\",oauth_"), "{header}");
        for part in [
            "oauth_consumer_key=\"CK_key\"",
            "oauth_token=\"AT_token\"",
            "oauth_signature_method=\"HMAC-SHA1\"",
            "oauth_version=\"1.0\"",
            "oauth_signature=\"",
            "oauth_nonce=\"",
            "oauth_timestamp=\"",
        ] {
            assert!(header.contains(part), "{part} missing from {header}");
        }
        // The secrets sign the header; they are never in it.
        assert!(!header.contains("CS_secret") && !header.contains("AS_secret"));
    }

    #[test]
    fn debug_hides_every_value() {
        let debug = format!("{:?}", credentials());
        for value in ["CK_key", "CS_secret", "AT_token", "AS_secret"] {
            assert!(!debug.contains(value), "{value} leaked in {debug}");
        }
    }
}
