//! Identifiers, parsed once where they enter the system.
//!
//! Every id that arrives in a URL path or an event is untrusted text: these
//! newtypes accept only a conservative alphabet and length, so a hostile
//! string can never reach a DynamoDB key, a log line or an SQS attribute
//! unvalidated.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a piece of text is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} must be 1 to {max} characters of {alphabet}")]
pub struct InvalidId {
    pub what: &'static str,
    pub max: usize,
    pub alphabet: &'static str,
}

fn check(
    text: &str,
    what: &'static str,
    max: usize,
    alphabet: &'static str,
    allowed: impl Fn(char) -> bool,
) -> Result<(), InvalidId> {
    if text.is_empty() || text.len() > max || !text.chars().all(allowed) {
        return Err(InvalidId {
            what,
            max,
            alphabet,
        });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:literal, $alphabet:literal, $allowed:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Accepts `text` if it is a well-formed identifier of this kind.
            pub fn parse(text: &str) -> Result<Self, InvalidId> {
                check(text, $what, $max, $alphabet, $allowed)?;
                Ok(Self(text.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(text: String) -> Result<Self, InvalidId> {
                check(&text, $what, $max, $alphabet, $allowed)?;
                Ok(Self(text))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

id_type!(
    /// A customer organisation (tenant). Comes only from the verified caller identity.
    AccountId,
    "an account id",
    64,
    "letters, digits, '-' and '_'",
    id_char
);

id_type!(
    /// An enrollment program token, unique across all accounts.
    TokenId,
    "a token id",
    64,
    "letters, digits, '-' and '_'",
    id_char
);

id_type!(
    /// One sync run of one token.
    RunId,
    "a run id",
    64,
    "letters, digits, '-' and '_'",
    id_char
);

id_type!(
    /// A device serial number as Apple reports it.
    Serial,
    "a serial number",
    64,
    "letters and digits",
    |c: char| c.is_ascii_alphanumeric()
);

id_type!(
    /// An enrollment policy of a token.
    PolicyId,
    "a policy id",
    64,
    "letters, digits, '-' and '_'",
    id_char
);

id_type!(
    /// A user of the customer's directory (license holder, device user).
    UserId,
    "a user id",
    128,
    "letters, digits, '-', '_', '.' and '@'",
    |c: char| id_char(c) || c == '.' || c == '@'
);

id_type!(
    /// An enrollment of a device (its SCEP challenge and management profile).
    EnrollmentId,
    "an enrollment id",
    64,
    "letters, digits, '-' and '_'",
    id_char
);

impl EnrollmentId {
    /// A new, unguessable enrollment id that also says when it was issued.
    pub fn new_at(now: chrono::DateTime<chrono::Utc>) -> Self {
        Self(ulid::Ulid::from_datetime(now.into()).to_string())
    }

    /// When the id was issued, if it is one of ours (a ULID).
    pub fn issued_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let ulid = ulid::Ulid::from_string(&self.0).ok()?;
        chrono::DateTime::from_timestamp_millis(i64::try_from(ulid.timestamp_ms()).ok()?)
    }
}

impl RunId {
    /// A new run id that sorts by its start time, so a token's runs list
    /// newest-first with a plain key-ordered query.
    pub fn new_at(now: chrono::DateTime<chrono::Utc>) -> Self {
        Self(ulid::Ulid::from_datetime(now.into()).to_string())
    }
}

impl TokenId {
    /// A new, unguessable token id.
    pub fn new_at(now: chrono::DateTime<chrono::Utc>) -> Self {
        Self(ulid::Ulid::from_datetime(now.into()).to_string())
    }
}

impl PolicyId {
    /// A new policy id.
    pub fn new_at(now: chrono::DateTime<chrono::Utc>) -> Self {
        Self(ulid::Ulid::from_datetime(now.into()).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_ids_and_refuses_hostile_text() {
        assert!(TokenId::parse("01J9ZK3V6Q8M1E2R3T4Y5U6I7O").is_ok());
        assert!(Serial::parse("C02T0HL0GGC0").is_ok());
        for bad in [
            "",
            "a/b",
            "../etc",
            "x y",
            "<script>",
            "é",
            "a\u{0}b",
            &"a".repeat(65),
        ] {
            assert!(TokenId::parse(bad).is_err(), "{bad:?} accepted");
            assert!(Serial::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Serial::parse("C02-T0").is_err());
        assert!(UserId::parse("ada@example.com").is_ok());
    }

    #[test]
    fn run_ids_sort_by_start_time() {
        let t0 = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let t1 = t0 + chrono::Duration::milliseconds(1);
        let a = RunId::new_at(t0);
        let b = RunId::new_at(t1);
        assert!(a < b);
    }

    #[test]
    fn enrollment_ids_tell_when_they_were_issued() {
        let t0 = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let id = EnrollmentId::new_at(t0);
        assert_eq!(id.issued_at(), Some(t0));
        assert_eq!(EnrollmentId::parse("not-a-ulid").unwrap().issued_at(), None);
    }

    #[test]
    fn serde_rejects_invalid_ids() {
        let bad: Result<TokenId, _> = serde_json::from_str("\"a/b\"");
        assert!(bad.is_err());
    }
}
