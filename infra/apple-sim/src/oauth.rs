//! Server-side checking of the OAuth 1.0a (RFC 5849) `Authorization` header of `GET /session`.
//!
//! The signature is recomputed from the request as the client addressed it, with the `hmac`
//! and `sha1` crates over the RFC 5849 §3.4.1 signature base string, and compared in constant
//! time. Nonce and timestamp policy belongs to the caller (see `world`).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use secrecy::{ExposeSecret, SecretString};
use sha1::Sha1;

/// RFC 5849 §3.6: everything but ALPHA, DIGIT, `-`, `.`, `_`, `~` is encoded.
const OAUTH_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn encode(text: &str) -> String {
    utf8_percent_encode(text, OAUTH_ENCODE).to_string()
}

/// Why a header is malformed: Apple answers these with 400.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MalformedAuth {
    #[error("no OAuth Authorization header")]
    Missing,
    #[error("OAuth parameter {0} is missing")]
    MissingParameter(&'static str),
    #[error("OAuth parameter {0} appears twice")]
    Duplicated(String),
    #[error("unsupported OAuth parameter {0}")]
    Unsupported(String),
    #[error("signature method must be HMAC-SHA1")]
    SignatureMethod,
    #[error("oauth_version must be 1.0")]
    Version,
    #[error("the Authorization header is not valid OAuth syntax")]
    Syntax,
}

/// The protocol parameters of a parsed `Authorization: OAuth ...` header.
pub struct OAuthHeader {
    /// Every parameter except `realm` and `oauth_signature`, decoded.
    params: BTreeMap<String, String>,
    signature: String,
}

const KNOWN: [&str; 7] = [
    "oauth_consumer_key",
    "oauth_token",
    "oauth_signature_method",
    "oauth_timestamp",
    "oauth_nonce",
    "oauth_version",
    "oauth_signature",
];

impl OAuthHeader {
    pub fn parse(header: Option<&str>) -> Result<Self, MalformedAuth> {
        let header = header.ok_or(MalformedAuth::Missing)?.trim();
        let rest = match header.split_once(char::is_whitespace) {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("OAuth") => rest,
            _ => return Err(MalformedAuth::Missing),
        };
        let mut params = BTreeMap::new();
        let mut signature = None;
        for item in rest.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, value) = item.split_once('=').ok_or(MalformedAuth::Syntax)?;
            let name = name.trim();
            let value = value
                .trim()
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .ok_or(MalformedAuth::Syntax)?;
            let value = percent_decode_str(value)
                .decode_utf8()
                .map_err(|_| MalformedAuth::Syntax)?
                .into_owned();
            if name == "realm" {
                continue;
            }
            if !KNOWN.contains(&name) {
                return Err(MalformedAuth::Unsupported(name.to_owned()));
            }
            let duplicate = if name == "oauth_signature" {
                signature.replace(value).is_some()
            } else {
                params.insert(name.to_owned(), value).is_some()
            };
            if duplicate {
                return Err(MalformedAuth::Duplicated(name.to_owned()));
            }
        }
        let signature = signature.ok_or(MalformedAuth::MissingParameter("oauth_signature"))?;
        for required in [
            "oauth_consumer_key",
            "oauth_token",
            "oauth_signature_method",
            "oauth_timestamp",
            "oauth_nonce",
        ] {
            if !params.contains_key(required) {
                return Err(MalformedAuth::MissingParameter(required));
            }
        }
        if params.get("oauth_signature_method").map(String::as_str) != Some("HMAC-SHA1") {
            return Err(MalformedAuth::SignatureMethod);
        }
        if params
            .get("oauth_version")
            .is_some_and(|version| version != "1.0")
        {
            return Err(MalformedAuth::Version);
        }
        Ok(Self { params, signature })
    }

    fn param(&self, name: &str) -> &str {
        self.params
            .get(name)
            .map(String::as_str)
            .unwrap_or_default()
    }

    pub fn consumer_key(&self) -> &str {
        self.param("oauth_consumer_key")
    }

    pub fn token(&self) -> &str {
        self.param("oauth_token")
    }

    pub fn nonce(&self) -> &str {
        self.param("oauth_nonce")
    }

    /// Seconds since the epoch, `None` when not a number (a bad timestamp is a 401, like a
    /// stale one).
    pub fn timestamp(&self) -> Option<i64> {
        self.param("oauth_timestamp").parse().ok()
    }

    /// Checks `oauth_signature` against the request as addressed by the client.
    ///
    /// `base_uri` is `scheme://host[:port]/path` as the client used it; `query` is the raw query
    /// string, whose parameters are signed too.
    pub fn signature_matches(
        &self,
        method: &str,
        base_uri: &str,
        query: Option<&str>,
        consumer_secret: &SecretString,
        token_secret: &SecretString,
    ) -> bool {
        let Ok(given) = STANDARD.decode(&self.signature) else {
            return false;
        };
        let base = signature_base_string(method, base_uri, query, &self.params);
        let key = format!(
            "{}&{}",
            encode(consumer_secret.expose_secret()),
            encode(token_secret.expose_secret())
        );
        let Ok(mut mac) = <Hmac<Sha1> as Mac>::new_from_slice(key.as_bytes()) else {
            return false;
        };
        mac.update(base.as_bytes());
        mac.verify_slice(&given).is_ok()
    }
}

/// RFC 5849 §3.4.1: `METHOD&enc(base URI)&enc(normalised parameters)`.
fn signature_base_string(
    method: &str,
    base_uri: &str,
    query: Option<&str>,
    oauth_params: &BTreeMap<String, String>,
) -> String {
    let mut pairs: Vec<(String, String)> = oauth_params
        .iter()
        .map(|(k, v)| (encode(k), encode(v)))
        .collect();
    if let Some(query) = query {
        pairs.extend(
            url::form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (encode(&k), encode(&v))),
        );
    }
    pairs.sort();
    let normalised = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        encode(base_uri),
        encode(&normalised)
    )
}

/// The base string URI of RFC 5849 §3.4.1.2 from the `Host` header and the path: lower-case
/// host, default port dropped.
pub fn base_uri(scheme: &str, host: &str, path: &str) -> String {
    let host = host.to_ascii_lowercase();
    let default_port = if scheme == "https" { ":443" } else { ":80" };
    let host = host.strip_suffix(default_port).unwrap_or(&host);
    format!("{scheme}://{host}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5849 §3.4.1.1 example, to pin the base-string construction.
    #[test]
    fn base_string_matches_rfc_example() {
        let mut params = BTreeMap::new();
        for (k, v) in [
            ("oauth_consumer_key", "9djdj82h48djs9d2"),
            ("oauth_token", "kkk9d7dh3k39sjv7"),
            ("oauth_signature_method", "HMAC-SHA1"),
            ("oauth_timestamp", "137131201"),
            ("oauth_nonce", "7d8f3e4a"),
        ] {
            params.insert(k.to_owned(), v.to_owned());
        }
        let base = signature_base_string(
            "post",
            "http://example.com/request",
            Some("b5=%3D%253D&a3=a&c%40=&a2=r%20b"),
            &params,
        );
        // The RFC example also signs body parameters (c2, a3=2 q); without them the rest of
        // the normalised list must appear in this order.
        assert!(base.starts_with("POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3Da%26b5%3D%253D%25253D%26c%2540%3D%26oauth_consumer_key%3D9djdj82h48djs9d2"));
    }

    #[test]
    fn parse_rejects_malformed_headers() {
        let ok = r#"OAuth realm="ADM", oauth_consumer_key="CK", oauth_token="AT", oauth_signature_method="HMAC-SHA1", oauth_timestamp="1", oauth_nonce="n", oauth_version="1.0", oauth_signature="c2ln""#;
        assert!(OAuthHeader::parse(Some(ok)).is_ok());
        assert_eq!(
            OAuthHeader::parse(Some(&ok.replace("HMAC-SHA1", "PLAINTEXT"))).err(),
            Some(MalformedAuth::SignatureMethod)
        );
        assert_eq!(
            OAuthHeader::parse(Some(&ok.replace(r#"oauth_nonce="n", "#, ""))).err(),
            Some(MalformedAuth::MissingParameter("oauth_nonce"))
        );
        assert_eq!(
            OAuthHeader::parse(Some(&format!(r#"{ok}, oauth_nonce="m""#))).err(),
            Some(MalformedAuth::Duplicated("oauth_nonce".into()))
        );
        assert_eq!(
            OAuthHeader::parse(Some(&format!(r#"{ok}, oauth_callback="x""#))).err(),
            Some(MalformedAuth::Unsupported("oauth_callback".into()))
        );
        assert_eq!(
            OAuthHeader::parse(Some("Bearer x")).err(),
            Some(MalformedAuth::Missing)
        );
        assert_eq!(OAuthHeader::parse(None).err(), Some(MalformedAuth::Missing));
    }

    #[test]
    fn base_uri_drops_default_port() {
        assert_eq!(
            base_uri("http", "LocalHost:80", "/session"),
            "http://localhost/session"
        );
        assert_eq!(
            base_uri("http", "127.0.0.1:3001", "/session"),
            "http://127.0.0.1:3001/session"
        );
    }
}
