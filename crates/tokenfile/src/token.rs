//! The JSON inside a token file: four OAuth 1.0a credentials and the access token's expiry.

use std::fmt;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use serde::{Deserialize, Serialize};

use crate::TokenFileError;

/// The decrypted OAuth credentials of an Apple MDM server token.
///
/// `Debug` shows only the expiry. The type deliberately does not implement `Serialize`, so it
/// cannot end up in a log line or a response by accident: [`ServerToken::to_json_bytes`] is the
/// one, explicit way to get the secrets out (for encrypted storage or for sealing a file).
/// `Deserialize` reads the JSON shape of the file (as [`ServerToken::from_json_bytes`] does),
/// so the token can be read back from storage.
#[derive(Clone, Deserialize)]
#[serde(try_from = "WireToken")]
pub struct ServerToken {
    /// OAuth consumer key (`CK_…`).
    pub consumer_key: SecretString,
    /// OAuth consumer secret (`CS_…`).
    pub consumer_secret: SecretString,
    /// OAuth access token (`AT_…`).
    pub access_token: SecretString,
    /// OAuth access token secret (`AS_…`).
    pub access_secret: SecretString,
    /// When Apple stops accepting the access token (about a year after the file was downloaded).
    pub access_token_expiry: DateTime<Utc>,
}

impl fmt::Debug for ServerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerToken")
            .field("consumer_key", &"[redacted]")
            .field("consumer_secret", &"[redacted]")
            .field("access_token", &"[redacted]")
            .field("access_secret", &"[redacted]")
            .field("access_token_expiry", &self.access_token_expiry)
            .finish()
    }
}

impl ServerToken {
    /// Parse the token JSON (the shape Apple puts in the file), checking that every field is
    /// present and non-empty. Does not check expiry: that depends on when you ask.
    ///
    /// Errors carry only the position of a JSON error, never the parser's message, which could
    /// quote a secret.
    pub fn from_json_bytes(json: &[u8]) -> Result<Self, TokenFileError> {
        let wire: WireToken =
            serde_json::from_slice(json).map_err(|error| TokenFileError::MalformedJson {
                line: error.line(),
                column: error.column(),
            })?;
        wire.try_into()
    }

    /// The token as Apple's JSON, secrets included: for encrypted storage and for sealing.
    /// The expiry is written as RFC 3339 UTC (`2023-07-01T22:18:53Z`).
    pub fn to_json_bytes(&self) -> SecretSlice<u8> {
        let wire = WireTokenOut {
            consumer_key: self.consumer_key.expose_secret(),
            consumer_secret: self.consumer_secret.expose_secret(),
            access_token: self.access_token.expose_secret(),
            access_secret: self.access_secret.expose_secret(),
            access_token_expiry: self
                .access_token_expiry
                .to_rfc3339_opts(SecondsFormat::AutoSi, true),
        };
        // No external input here: a struct of strings always serialises.
        let json = serde_json::to_vec(&wire).expect("a struct of strings serialises to JSON");
        SecretSlice::from(json)
    }
}

/// The file's JSON as read: every field optional, so a missing one is reported by name rather
/// than as a serde message.
#[derive(Deserialize)]
struct WireToken {
    consumer_key: Option<SecretString>,
    consumer_secret: Option<SecretString>,
    access_token: Option<SecretString>,
    access_secret: Option<SecretString>,
    access_token_expiry: Option<String>,
}

#[derive(Serialize)]
struct WireTokenOut<'a> {
    consumer_key: &'a str,
    consumer_secret: &'a str,
    access_token: &'a str,
    access_secret: &'a str,
    access_token_expiry: String,
}

impl TryFrom<WireToken> for ServerToken {
    type Error = TokenFileError;

    fn try_from(wire: WireToken) -> Result<Self, Self::Error> {
        fn required(
            value: Option<SecretString>,
            field: &'static str,
        ) -> Result<SecretString, TokenFileError> {
            value
                .filter(|value| !value.expose_secret().trim().is_empty())
                .ok_or(TokenFileError::MissingField { field })
        }
        let expiry = wire
            .access_token_expiry
            .filter(|value| !value.trim().is_empty())
            .ok_or(TokenFileError::MissingField {
                field: "access_token_expiry",
            })?;
        Ok(Self {
            consumer_key: required(wire.consumer_key, "consumer_key")?,
            consumer_secret: required(wire.consumer_secret, "consumer_secret")?,
            access_token: required(wire.access_token, "access_token")?,
            access_secret: required(wire.access_secret, "access_secret")?,
            access_token_expiry: parse_expiry(&expiry).ok_or(TokenFileError::InvalidExpiry)?,
        })
    }
}

/// Apple writes `2023-07-01T22:18:53Z`; other producers add fractional seconds, an offset, or
/// leave out the zone (which then means UTC, as in Apple's own files).
fn parse_expiry(value: &str) -> Option<DateTime<Utc>> {
    let value = value.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(value) {
        return Some(time.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(time) = DateTime::parse_from_str(value, format) {
            return Some(time.with_timezone(&Utc));
        }
    }
    let naive = value.strip_suffix(['Z', 'z']).unwrap_or(value);
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .into_iter()
        .find_map(|format| NaiveDateTime::parse_from_str(naive, format).ok())
        .map(|time| time.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeDelta, TimeZone};

    fn at(secs: u32, nanos: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2023, 7, 1, 22, 18, secs).unwrap() + TimeDelta::nanoseconds(nanos)
    }

    #[test]
    fn expiry_accepts_the_shapes_seen_in_the_wild() {
        let cases = [
            ("2023-07-01T22:18:53Z", at(53, 0)),
            ("2023-07-01T22:18:53", at(53, 0)),
            ("2023-07-01T22:18:53.250Z", at(53, 250_000_000)),
            ("2023-07-01T22:18:53.250", at(53, 250_000_000)),
            ("2023-07-01T23:18:53+01:00", at(53, 0)),
            ("2023-07-01T23:18:53+0100", at(53, 0)),
            ("2023-07-01 22:18:53", at(53, 0)),
            (" 2023-07-01T22:18:53z ", at(53, 0)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_expiry(text), Some(expected), "parsing {text:?}");
        }
    }

    #[test]
    fn expiry_refuses_non_dates() {
        for text in [
            "",
            "tomorrow",
            "2023-07-01",
            "2023-13-01T00:00:00Z",
            "1688249933",
        ] {
            assert_eq!(parse_expiry(text), None, "parsing {text:?}");
        }
    }

    #[test]
    fn json_round_trips_and_names_missing_fields() {
        let json = br#"{"consumer_key":"CK_1","consumer_secret":"CS_1","access_token":"AT_1",
            "access_secret":"AS_1","access_token_expiry":"2023-07-01T22:18:53Z","extra":1}"#;
        let token = ServerToken::from_json_bytes(json).unwrap();
        assert_eq!(token.access_secret.expose_secret(), "AS_1");
        assert_eq!(token.access_token_expiry, at(53, 0));

        let again = ServerToken::from_json_bytes(token.to_json_bytes().expose_secret()).unwrap();
        assert_eq!(again.consumer_key.expose_secret(), "CK_1");
        assert_eq!(again.consumer_secret.expose_secret(), "CS_1");
        assert_eq!(again.access_token.expose_secret(), "AT_1");
        assert_eq!(again.access_token_expiry, token.access_token_expiry);

        let missing = br#"{"consumer_key":"CK_1","consumer_secret":"","access_token":"AT_1",
            "access_secret":"AS_1","access_token_expiry":"2023-07-01T22:18:53Z"}"#;
        assert!(matches!(
            ServerToken::from_json_bytes(missing),
            Err(TokenFileError::MissingField {
                field: "consumer_secret"
            })
        ));
        let absent = br#"{"consumer_key":"CK_1","consumer_secret":"CS_1","access_token":"AT_1",
            "access_secret":"AS_1"}"#;
        assert!(matches!(
            ServerToken::from_json_bytes(absent),
            Err(TokenFileError::MissingField {
                field: "access_token_expiry"
            })
        ));
        assert!(matches!(
            ServerToken::from_json_bytes(b"{\"consumer_key\": 5"),
            Err(TokenFileError::MalformedJson { line: 1, .. })
        ));
    }

    #[test]
    fn serde_deserialize_validates_like_from_json_bytes() {
        let good: Result<ServerToken, _> = serde_json::from_str(
            r#"{"consumer_key":"CK_1","consumer_secret":"CS_1","access_token":"AT_1",
               "access_secret":"AS_1","access_token_expiry":"2023-07-01T22:18:53Z"}"#,
        );
        assert!(good.is_ok());
        let bad: Result<ServerToken, _> = serde_json::from_str(
            r#"{"consumer_key":"CK_1","consumer_secret":"CS_1","access_token":"AT_1",
               "access_secret":"AS_1","access_token_expiry":"soon"}"#,
        );
        assert!(bad.is_err());
    }
}
