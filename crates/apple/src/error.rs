//! What can go wrong talking to Apple, and how an HTTP answer is read as one of those.
//!
//! Apple's error bodies are short tokens such as `EXPIRED_CURSOR`, sent bare, JSON-quoted
//! (`"EXPIRED_CURSOR"`) or as `{"code": "EXPIRED_CURSOR"}` depending on who is answering;
//! like nanodep, we match tokens by substring so every spelling reads the same.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;

use crate::route::Route;

/// How [`AppleError::Refused`] reads: a run's stored error that contains it failed on
/// such a refusal.
pub const REFUSED_WITHOUT_A_REASON: &str = "Apple refused the request without giving a reason";

/// Longest excerpt of an Apple error body kept in an error (never for `/session`).
const EXCERPT_CHARS: usize = 200;

/// A failed call to Apple's device assignment service.
///
/// Messages are one plain sentence saying what happened and what to do. They never carry
/// credentials, session tokens or the `Authorization` header.
#[derive(Debug, thiserror::Error)]
pub enum AppleError {
    /// 403 `T_C_NOT_SIGNED`: Apple published new terms and nobody accepted them yet.
    #[error(
        "Apple refused the request because the organisation has not accepted Apple's latest terms; an administrator must sign in to Apple Business Manager or Apple School Manager and accept them"
    )]
    TermsNotSigned,
    /// The server token is no longer accepted (401 at `/session`, or 401 / 403 `FORBIDDEN`
    /// that outlived a fresh session): it was re-downloaded, revoked, or its owner removed.
    #[error(
        "Apple no longer accepts this server token (it was renewed, revoked or its Apple Account removed); download a new token in Apple Business Manager and renew it here"
    )]
    TokenInvalid,
    /// 403 `ACCESS_DENIED`: the token may not make this request.
    #[error(
        "Apple denied this server token access to the request; check the MDM server's permissions in Apple Business Manager"
    )]
    AccessDenied,
    /// 401 on a fresh session, or a 403 naming none of Apple's reasons (an empty or HTML
    /// body, as an edge in front of Apple sends): not proof that the token is dead, so it
    /// is retried like a server error and changes no token status by itself.
    #[error(
        "{REFUSED_WITHOUT_A_REASON} (HTTP {status}); it is retried, and the token is marked invalid only if such refusals persist"
    )]
    Refused {
        /// The HTTP status (401 or 403).
        status: u16,
    },
    /// 429 that did not clear within the retry deadline.
    #[error("Apple is throttling requests for this token{}; retry later", after(*.retry_after))]
    Throttled {
        /// How long Apple asked us to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// 400 `EXPIRED_CURSOR`: the cursor is older than Apple keeps them (7 days).
    #[error("Apple's sync cursor expired; fetch the full device list again")]
    CursorExpired,
    /// 400 `INVALID_CURSOR`.
    #[error("Apple did not recognise the sync cursor; fetch the full device list again")]
    CursorInvalid,
    /// 400 `EXHAUSTED_CURSOR`: every device was already returned for this cursor.
    #[error("Apple already returned every device for this cursor; sync changes from it instead")]
    CursorExhausted,
    /// 400 `CURSOR_REQUIRED`: sync was asked without a cursor.
    #[error("Apple needs a cursor to sync changes; fetch the full device list first")]
    CursorRequired,
    /// Another 400: Apple rejected the request (e.g. `CONFIG_NAME_INVALID`,
    /// `FLAGS_INVALID`, `DEVICE_ID_REQUIRED`).
    #[error("Apple rejected the request as invalid ({code}); correct it and try again")]
    BadRequest {
        /// Apple's error token, or a short excerpt of its answer.
        code: String,
    },
    /// 404 on a profile route: Apple has no profile with that UUID.
    #[error("Apple has no enrollment profile with this UUID; define the profile again")]
    ProfileNotFound,
    /// Refused before sending: Apple takes at most [`crate::MAX_DEVICES_PER_REQUEST`]
    /// serial numbers per request.
    #[error(
        "{count} serial numbers is more than Apple accepts in one request ({max}); send them in smaller batches"
    )]
    TooManyDevices {
        /// Serial numbers given.
        count: usize,
        /// The most one request may carry.
        max: usize,
    },
    /// 5xx that did not clear within the retry deadline.
    #[error("Apple's service answered with a server error ({status}){}; retry later", after(*.retry_after))]
    Server {
        /// The HTTP status.
        status: u16,
        /// How long Apple asked us to wait, when it said (`Retry-After` on a 503).
        retry_after: Option<Duration>,
    },
    /// A status Apple's contract does not list for this request.
    #[error("Apple answered with unexpected status {status} ({excerpt}); retry later or report it")]
    UnexpectedStatus {
        /// The HTTP status.
        status: u16,
        /// A short excerpt of the body.
        excerpt: String,
    },
    /// No complete answer within the configured request timeout.
    #[error("Apple did not answer in time; retry later")]
    Timeout,
    /// The connection failed (DNS, TCP, TLS, or the stream broke).
    #[error("could not reach Apple's device service ({source}); check network access and retry")]
    Transport {
        /// The underlying failure.
        #[source]
        source: reqwest::Error,
    },
    /// The answer was larger than the configured cap.
    #[error("Apple's answer was larger than the {limit} bytes allowed; use smaller pages")]
    ResponseTooLarge {
        /// The cap in bytes.
        limit: usize,
    },
    /// The answer was not the JSON Apple documents for this route.
    ///
    /// Only the position is kept: serde's message may quote values from the body, and a
    /// `/session` body is a session token.
    #[error(
        "Apple's answer to {route} could not be read (line {line}, column {column}); report it"
    )]
    Decode {
        /// Route that answered.
        route: &'static str,
        /// Where decoding stopped.
        line: usize,
        /// Where decoding stopped.
        column: usize,
    },
    /// The client could not be built from its configuration.
    #[error("the Apple client is misconfigured: {reason}")]
    Setup {
        /// What is wrong.
        reason: String,
    },
}

fn after(retry_after: Option<Duration>) -> String {
    match retry_after {
        Some(wait) => format!(" (Apple asked to wait {} s)", wait.as_secs()),
        None => String::new(),
    }
}

impl AppleError {
    /// The token itself is unusable until an administrator acts (terms, renewal, access).
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            AppleError::TermsNotSigned | AppleError::TokenInvalid | AppleError::AccessDenied
        )
    }

    /// Trying the same request again later may succeed (throttling, server errors,
    /// timeouts, broken connections).
    pub fn is_retryable(&self) -> bool {
        match self {
            AppleError::Throttled { .. }
            | AppleError::Timeout
            | AppleError::Transport { .. }
            | AppleError::Refused { .. } => true,
            AppleError::Server { status, .. } => matches!(status, 500 | 502 | 503 | 504),
            _ => false,
        }
    }

    /// Apple refused the cursor (expired, invalid, exhausted or missing).
    pub fn is_cursor(&self) -> bool {
        matches!(
            self,
            AppleError::CursorExpired
                | AppleError::CursorInvalid
                | AppleError::CursorExhausted
                | AppleError::CursorRequired
        )
    }

    /// How long Apple asked to wait before the next attempt, when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AppleError::Throttled { retry_after } | AppleError::Server { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// Apple certainly did not act on the request, so even a request that is not
    /// idempotent may be sent again.
    pub(crate) fn was_refused(&self) -> bool {
        matches!(
            self,
            AppleError::Throttled { .. } | AppleError::Refused { .. }
        ) || matches!(self, AppleError::Server { status: 503, .. })
            || matches!(self, AppleError::Transport { source } if source.is_connect())
    }

    pub(crate) fn from_reqwest(source: reqwest::Error) -> Self {
        if source.is_timeout() {
            AppleError::Timeout
        } else {
            AppleError::Transport {
                source: source.without_url(),
            }
        }
    }

    pub(crate) fn decode(route: Route, error: &serde_json::Error) -> Self {
        AppleError::Decode {
            route: route.path(),
            line: error.line(),
            column: error.column(),
        }
    }
}

/// What an answer that still says "stale session" on a fresh session means: `FORBIDDEN`
/// is Apple's word that the token is dead; a bare 401 is not (it is retried).
pub(crate) fn stale_on_a_fresh_session(status: StatusCode) -> AppleError {
    if status == StatusCode::FORBIDDEN {
        AppleError::TokenInvalid
    } else {
        AppleError::Refused {
            status: status.as_u16(),
        }
    }
}

/// Does this answer mean "your session is stale"? nanodep re-authenticates on 401, and on
/// 403 `FORBIDDEN` (what depsim answers after a restart). Never for `/session` itself.
pub(crate) fn wants_new_session(route: Route, status: StatusCode, body: &[u8]) -> bool {
    route != Route::Session
        && (status == StatusCode::UNAUTHORIZED
            || (status == StatusCode::FORBIDDEN && contains(body, "FORBIDDEN")))
}

/// Reads a non-success answer as an error. `retry_after` is the parsed `Retry-After`.
pub(crate) fn classify(
    route: Route,
    status: StatusCode,
    body: &[u8],
    retry_after: Option<Duration>,
) -> AppleError {
    match status.as_u16() {
        400 => cursor_error(body).unwrap_or_else(|| AppleError::BadRequest {
            code: code(route, body),
        }),
        // Apple's word that the credentials are dead is a 401 to `/session` itself.
        401 if route == Route::Session => AppleError::TokenInvalid,
        403 if contains(body, "T_C_NOT_SIGNED") => AppleError::TermsNotSigned,
        403 if contains(body, "FORBIDDEN") => AppleError::TokenInvalid,
        403 if contains(body, "ACCESS_DENIED") => AppleError::AccessDenied,
        status @ (401 | 403) => AppleError::Refused { status },
        404 if route.is_profile() => AppleError::ProfileNotFound,
        429 => AppleError::Throttled { retry_after },
        status @ 500..=599 => AppleError::Server {
            status,
            retry_after,
        },
        status => AppleError::UnexpectedStatus {
            status,
            excerpt: code(route, body),
        },
    }
}

fn cursor_error(body: &[u8]) -> Option<AppleError> {
    [
        ("EXPIRED_CURSOR", AppleError::CursorExpired),
        ("INVALID_CURSOR", AppleError::CursorInvalid),
        ("EXHAUSTED_CURSOR", AppleError::CursorExhausted),
        ("CURSOR_REQUIRED", AppleError::CursorRequired),
    ]
    .into_iter()
    .find_map(|(token, error)| contains(body, token).then_some(error))
}

fn contains(body: &[u8], token: &str) -> bool {
    body.windows(token.len())
        .any(|window| window == token.as_bytes())
}

/// Apple's error token from a body: a bare token, a JSON string, or `{"code": ...}`;
/// anything else is cut to a short excerpt. `/session` bodies are never repeated: they
/// answer an OAuth request and may describe its parameters.
fn code(route: Route, body: &[u8]) -> String {
    if route == Route::Session {
        return String::new();
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let token = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::String(token)) => token,
        Ok(serde_json::Value::Object(object)) => match object.get("code") {
            Some(serde_json::Value::String(token)) => token.clone(),
            _ => text.to_owned(),
        },
        _ => text.to_owned(),
    };
    token.chars().take(EXCERPT_CHARS).collect()
}

/// Reads a `Retry-After` value: delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
/// A date in the past means "now".
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(route: Route, status: u16, body: &str) -> AppleError {
        let status = StatusCode::from_u16(status).expect("test statuses are valid");
        classify(route, status, body.as_bytes(), None)
    }

    #[test]
    fn cursor_tokens_in_every_spelling() {
        for body in [
            "EXPIRED_CURSOR",
            "\"EXPIRED_CURSOR\"",
            "{\"code\": \"EXPIRED_CURSOR\"}",
            "EXPIRED_CURSOR\n",
        ] {
            assert!(
                matches!(
                    read(Route::SyncDevices, 400, body),
                    AppleError::CursorExpired
                ),
                "{body}"
            );
        }
        assert!(matches!(
            read(Route::FetchDevices, 400, "\"INVALID_CURSOR\""),
            AppleError::CursorInvalid
        ));
        assert!(matches!(
            read(Route::FetchDevices, 400, "EXHAUSTED_CURSOR"),
            AppleError::CursorExhausted
        ));
        assert!(matches!(
            read(Route::SyncDevices, 400, "CURSOR_REQUIRED"),
            AppleError::CursorRequired
        ));
    }

    #[test]
    fn other_bad_requests_keep_apple_token() {
        for (body, token) in [
            ("\"CONFIG_NAME_INVALID\"", "CONFIG_NAME_INVALID"),
            ("{\"code\":\"FLAGS_INVALID\"}", "FLAGS_INVALID"),
            ("DEVICE_ID_REQUIRED", "DEVICE_ID_REQUIRED"),
        ] {
            match read(Route::DefineProfile, 400, body) {
                AppleError::BadRequest { code } => assert_eq!(code, token),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn long_bodies_are_cut() {
        let body = "X".repeat(5_000);
        let AppleError::BadRequest { code } = read(Route::DefineProfile, 400, &body) else {
            panic!("expected a bad request");
        };
        assert_eq!(code.chars().count(), EXCERPT_CHARS);
    }

    #[test]
    fn session_bodies_are_never_repeated() {
        let body = "oauth_signature=secret-looking";
        let error = read(Route::Session, 400, body);
        assert!(!error.to_string().contains("secret-looking"), "{error}");
        let error = read(Route::Session, 418, body);
        assert!(!error.to_string().contains("secret-looking"), "{error}");
    }

    #[test]
    fn refusals_without_a_reason_are_retried_and_say_nothing_of_the_token() {
        for (route, status, body) in [
            (Route::FetchDevices, 403, ""),
            (
                Route::FetchDevices,
                403,
                "<html><body>403 Forbidden</body></html>",
            ),
            (Route::Account, 403, "SOMETHING_NEW"),
            (Route::SyncDevices, 401, ""),
        ] {
            let error = read(route, status, body);
            assert!(
                matches!(error, AppleError::Refused { status: s } if s == status),
                "{status} {body:?}: {error:?}"
            );
            assert!(error.is_retryable() && !error.is_auth(), "{error:?}");
        }
        // Apple's own words still count.
        assert!(matches!(
            read(Route::Session, 401, "<html>"),
            AppleError::TokenInvalid
        ));
        assert!(matches!(
            stale_on_a_fresh_session(StatusCode::FORBIDDEN),
            AppleError::TokenInvalid
        ));
        assert!(matches!(
            stale_on_a_fresh_session(StatusCode::UNAUTHORIZED),
            AppleError::Refused { status: 401 }
        ));
    }

    #[test]
    fn forbidden_answers() {
        assert!(matches!(
            read(Route::Session, 403, "T_C_NOT_SIGNED"),
            AppleError::TermsNotSigned
        ));
        assert!(matches!(
            read(Route::Account, 403, "{\"code\":\"T_C_NOT_SIGNED\"}"),
            AppleError::TermsNotSigned
        ));
        assert!(matches!(
            read(Route::Account, 403, "ACCESS_DENIED"),
            AppleError::AccessDenied
        ));
        assert!(matches!(
            read(Route::FetchDevices, 403, "\"FORBIDDEN\""),
            AppleError::TokenInvalid
        ));
        assert!(matches!(
            read(Route::Session, 401, ""),
            AppleError::TokenInvalid
        ));
    }

    #[test]
    fn stale_sessions_are_recognised_outside_session_only() {
        let forbidden = StatusCode::FORBIDDEN;
        let unauthorized = StatusCode::UNAUTHORIZED;
        assert!(wants_new_session(Route::Account, unauthorized, b""));
        assert!(wants_new_session(
            Route::SyncDevices,
            forbidden,
            b"\"FORBIDDEN\""
        ));
        assert!(!wants_new_session(
            Route::SyncDevices,
            forbidden,
            b"T_C_NOT_SIGNED"
        ));
        assert!(!wants_new_session(
            Route::SyncDevices,
            forbidden,
            b"ACCESS_DENIED"
        ));
        assert!(!wants_new_session(Route::Session, unauthorized, b""));
    }

    #[test]
    fn statuses_map_to_their_kind() {
        assert!(matches!(
            read(Route::AssignProfile, 404, ""),
            AppleError::ProfileNotFound
        ));
        assert!(matches!(
            read(Route::Account, 404, "nope"),
            AppleError::UnexpectedStatus { status: 404, .. }
        ));
        assert!(matches!(
            read(Route::Account, 405, ""),
            AppleError::UnexpectedStatus { status: 405, .. }
        ));
        assert!(matches!(
            read(Route::Session, 429, "TOO_MANY_REQUESTS"),
            AppleError::Throttled { .. }
        ));
        assert!(matches!(
            read(Route::Account, 503, ""),
            AppleError::Server { status: 503, .. }
        ));
    }

    #[test]
    fn retryable_and_auth_predicates() {
        assert!(AppleError::Throttled { retry_after: None }.is_retryable());
        assert!(AppleError::Timeout.is_retryable());
        for status in [500, 502, 503, 504] {
            let error = AppleError::Server {
                status,
                retry_after: None,
            };
            assert!(error.is_retryable(), "{status}");
        }
        let not_implemented = AppleError::Server {
            status: 501,
            retry_after: None,
        };
        assert!(!not_implemented.is_retryable());
        assert!(!AppleError::CursorExpired.is_retryable());
        assert!(
            !AppleError::BadRequest {
                code: String::new()
            }
            .is_retryable()
        );
        assert!(!AppleError::TokenInvalid.is_retryable());

        assert!(AppleError::TermsNotSigned.is_auth());
        assert!(AppleError::TokenInvalid.is_auth());
        assert!(AppleError::AccessDenied.is_auth());
        assert!(!AppleError::Timeout.is_auth());
        assert!(AppleError::CursorRequired.is_cursor());
        assert!(!AppleError::ProfileNotFound.is_cursor());
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").expect("valid date");
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn throttled_message_says_how_long() {
        let error = AppleError::Throttled {
            retry_after: Some(Duration::from_secs(30)),
        };
        assert!(error.to_string().contains("30 s"), "{error}");
    }
}
