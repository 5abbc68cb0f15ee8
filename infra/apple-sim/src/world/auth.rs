//! `/session` and the `X-ADM-Auth-Session` tokens it hands out.

use chrono::{DateTime, Utc};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::World;
use crate::error::AppleError;
use crate::oauth::OAuthHeader;

/// How far `oauth_timestamp` may be from the real wall clock (not the simulator clock, which
/// tests move by days) before the request is refused.
const TIMESTAMP_TOLERANCE_SECONDS: i64 = 5 * 60;
/// Nonces are remembered a little longer than the timestamp window, after which a replay is
/// refused for its timestamp anyway.
const NONCE_MEMORY_SECONDS: i64 = 2 * TIMESTAMP_TOLERANCE_SECONDS;
const PRUNE_ABOVE: usize = 10_000;

/// A live session. Only the SHA-256 of its token is stored, so no session token sits in
/// memory in clear.
pub(super) struct Session {
    server_uuid: String,
    generation: u32,
    issued_at: DateTime<Utc>,
    uses: u32,
    /// Set once rotated out: how many more requests it may serve.
    grace_left: Option<u32>,
}

/// A request that passed session checks.
#[derive(Debug, Clone)]
pub struct Authed {
    pub server_uuid: String,
    /// A replacement token to send back as `X-ADM-Auth-Session`.
    pub rotated_token: Option<SecretString>,
}

fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    hex::encode(bytes)
}

impl World {
    fn issue_session(&mut self, server_uuid: &str, generation: u32) -> String {
        let now = self.now();
        if self.sessions.len() > PRUNE_ABOVE {
            let ttl = self.behaviour.session_ttl();
            self.sessions
                .retain(|_, s| (now - s.issued_at).to_std().is_ok_and(|age| age < ttl));
        }
        let token = new_token();
        self.sessions.insert(
            token_hash(&token),
            Session {
                server_uuid: server_uuid.to_owned(),
                generation,
                issued_at: now,
                uses: 0,
                grace_left: None,
            },
        );
        token
    }

    /// Checks a signed `GET /session` and issues a session token.
    ///
    /// `base_uri` and `query` describe the URL as the client addressed it.
    pub fn open_session(
        &mut self,
        header: &OAuthHeader,
        base_uri: &str,
        query: Option<&str>,
    ) -> Result<SecretString, AppleError> {
        let uuid = self
            .by_consumer_key
            .get(header.consumer_key())
            .ok_or_else(AppleError::unauthorized)?
            .clone();
        let server = self
            .servers
            .get(&uuid)
            .ok_or_else(AppleError::unauthorized)?;
        let real_now = Utc::now().timestamp();
        let timestamp = header.timestamp().ok_or_else(AppleError::unauthorized)?;
        if (timestamp - real_now).abs() > TIMESTAMP_TOLERANCE_SECONDS {
            return Err(AppleError::unauthorized());
        }
        let creds = &server.credentials;
        if header.token() != creds.access_token.expose_secret() {
            // Unknown or re-downloaded (stale) access token.
            return Err(AppleError::unauthorized());
        }
        if !header.signature_matches(
            "GET",
            base_uri,
            query,
            &creds.consumer_secret,
            &creds.access_secret,
        ) {
            return Err(AppleError::unauthorized());
        }
        // Only a correctly signed request consumes its nonce, so forgeries cannot burn them.
        let seen = self
            .nonces
            .entry(header.consumer_key().to_owned())
            .or_default();
        if seen.len() > PRUNE_ABOVE {
            seen.retain(|_, ts| real_now - *ts <= NONCE_MEMORY_SECONDS);
        }
        if seen.insert(header.nonce().to_owned(), timestamp).is_some() {
            return Err(AppleError::unauthorized());
        }
        if server.credentials.access_token_expiry <= self.now() {
            return Err(AppleError::unauthorized());
        }
        if !server.terms_signed {
            return Err(AppleError::terms_not_signed());
        }
        let generation = server.generation;
        if self.behaviour.end_older_sessions {
            self.sessions
                .retain(|_, session| session.server_uuid != uuid);
        }
        Ok(self.issue_session(&uuid, generation).into())
    }

    /// The server a session token belongs to, without counting a use (for fault targeting).
    pub fn session_server(&self, token: &str) -> Option<&str> {
        self.sessions
            .get(&token_hash(token))
            .map(|s| s.server_uuid.as_str())
    }

    /// The server whose consumer key is `consumer_key`.
    pub fn consumer_server(&self, consumer_key: &str) -> Option<&str> {
        self.by_consumer_key.get(consumer_key).map(String::as_str)
    }

    /// Checks `X-ADM-Auth-Session` for an API call, counting the use and rotating the session
    /// when configured to.
    pub fn authenticate(&mut self, token: Option<&str>) -> Result<Authed, AppleError> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or_else(AppleError::unauthorized)?;
        let hash = token_hash(token);
        let now = self.now();
        let ttl = self.behaviour.session_ttl();
        let session = self
            .sessions
            .get_mut(&hash)
            .ok_or_else(AppleError::unauthorized)?;
        let Some(server) = self.servers.get(&session.server_uuid) else {
            self.sessions.remove(&hash);
            return Err(AppleError::unauthorized());
        };
        if session.generation != server.generation {
            // Made with credentials that were re-downloaded since.
            return Err(AppleError::forbidden());
        }
        let expired = (now - session.issued_at)
            .to_std()
            .is_ok_and(|age| age >= ttl);
        if expired || session.grace_left == Some(0) {
            self.sessions.remove(&hash);
            return Err(AppleError::unauthorized());
        }
        if !server.terms_signed {
            return Err(AppleError::terms_not_signed());
        }
        let server_uuid = session.server_uuid.clone();
        let generation = session.generation;
        session.uses += 1;
        let rotate = match (
            session.grace_left.as_mut(),
            self.behaviour.rotate_session_every,
        ) {
            (Some(left), _) => {
                *left -= 1;
                false
            }
            (None, Some(every)) if every > 0 && session.uses % every == 0 => {
                session.grace_left = Some(self.behaviour.rotation_grace_requests);
                true
            }
            _ => false,
        };
        let rotated_token = rotate.then(|| self.issue_session(&server_uuid, generation).into());
        Ok(Authed {
            server_uuid,
            rotated_token,
        })
    }
}
