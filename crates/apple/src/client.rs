//! The shared HTTP client, and per-token sessions that call Apple's endpoints.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use adesync_core::clock::Clock;
use chrono::{DateTime, Utc};

use backon::{ExponentialBuilder, Retryable};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::config::AppleConfig;
use crate::credentials::Credentials;
use crate::error::{
    AppleError, classify, parse_retry_after, stale_on_a_fresh_session, wants_new_session,
};
use crate::model::{
    Account, AssignRequest, AssignedProfile, DefinedProfile, DeviceDetails, DevicePage,
    DeviceStatuses, PageRequest, Profile, SerialsRequest, SessionAnswer,
};
use crate::route::Route;
use crate::shared::{Renewal, SessionKeeper};

/// Most serial numbers one request may name: Apple asks to "limit requests to 1000
/// devices at a time" for assignment; the same bound is kept for every device list.
pub const MAX_DEVICES_PER_REQUEST: usize = 1000;

/// Page size used when `/account` advertises none (Apple's documented maximum).
pub const FALLBACK_PAGE_LIMIT: u32 = 1000;

const SESSION_HEADER: &str = "X-ADM-Auth-Session";
/// How long a caller waits (clock time) for another process's renewal of the
/// token's session before asking Apple itself: a little longer than a
/// renewal's claim lasts, so a holder that died is outwaited, not raced.
const RENEWAL_PATIENCE: Duration = Duration::from_secs(40);
/// How often (real time) a waiting caller asks the keeper again.
const RENEWAL_POLL: Duration = Duration::from_millis(200);
const PROTOCOL_HEADER: &str = "X-Server-Protocol-Version";
/// Every client of Apple's service sends this exact spelling; depsim insists on it.
const JSON_CONTENT_TYPE: &str = "application/json;charset=UTF8";

/// The connection pool and settings shared by every token's session. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppleClient {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    http: reqwest::Client,
    /// Base URL without a trailing slash, so route paths append as they are.
    base_url: String,
    config: AppleConfig,
}

impl AppleClient {
    /// Builds the one HTTP client (connection pool, timeouts, default headers).
    pub fn new(config: AppleConfig) -> Result<Self, AppleError> {
        let base = Url::parse(&config.base_url).map_err(|error| AppleError::Setup {
            reason: format!("base URL {:?} is not a URL ({error})", config.base_url),
        })?;
        if !matches!(base.scheme(), "http" | "https")
            || base.query().is_some()
            || base.fragment().is_some()
        {
            return Err(AppleError::Setup {
                reason: format!(
                    "base URL {:?} must be http(s) without query or fragment",
                    config.base_url
                ),
            });
        }
        let mut headers = HeaderMap::new();
        headers.insert(PROTOCOL_HEADER, HeaderValue::from(config.protocol_version));
        let http = reqwest::Client::builder()
            .user_agent(&config.user_agent)
            .default_headers(headers)
            .connect_timeout(config.connect_timeout)
            // Answer timeouts are set per request, in the real time the
            // clock's span takes (see `AppleConfig::clock`).
            .build()
            .map_err(|error| AppleError::Setup {
                reason: format!("the HTTP client could not be built ({error})"),
            })?;
        let base_url = base.as_str().trim_end_matches('/').to_owned();
        Ok(AppleClient {
            inner: Arc::new(Shared {
                http,
                base_url,
                config,
            }),
        })
    }

    /// The settings this client was built with.
    pub fn config(&self) -> &AppleConfig {
        &self.inner.config
    }

    /// A handle for one server token.
    ///
    /// `token_key` names the token in logs (it is not secret). `cached_session` is a
    /// session token saved by an earlier caller (Lambdas share one through DynamoDB); when
    /// it is stale, Apple answers 401 and the session authenticates again.
    pub fn session(
        &self,
        token_key: &str,
        credentials: Credentials,
        cached_session: Option<SecretString>,
    ) -> AppleSession {
        let cached = cached_session.filter(|token| usable(token.expose_secret()));
        AppleSession {
            client: self.clone(),
            token_key: token_key.to_owned(),
            credentials,
            auth: Mutex::new(cached.clone()),
            account: Mutex::new(None),
            keeper: None,
            shared: Mutex::new(cached),
            refused: Mutex::new(None),
            renewing: tokio::sync::Mutex::new(()),
        }
    }

    fn url(&self, route: Route) -> String {
        format!("{}{}", self.inner.base_url, route.path())
    }

    fn clock(&self) -> &dyn Clock {
        self.inner.config.clock.as_ref()
    }

    /// The real time a wait of `span` on the client's clock takes.
    fn real(&self, span: Duration) -> Duration {
        span.div_f64(self.clock().speed().max(1.0))
    }
}

/// How one call may spend its time, beyond the client's settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallLimits {
    /// Longest wait for one answer (clock time); the configured request
    /// timeout when None.
    pub timeout: Option<Duration>,
    /// Give up retrying once a wait would end after this (clock time), even
    /// within the retry policy's deadline: the caller's own deadline.
    pub until: Option<DateTime<Utc>>,
    /// Whether a timed-out attempt is tried again as it was. A caller that
    /// answers a timeout by asking less (smaller pages) says no.
    pub retry_timeouts: bool,
}

impl CallLimits {
    /// The client's settings: configured timeout, retries of every kind.
    pub fn standard() -> Self {
        CallLimits {
            retry_timeouts: true,
            ..CallLimits::default()
        }
    }
}

/// A session token can only be used if it fits in a header.
fn usable(token: &str) -> bool {
    !token.is_empty() && HeaderValue::from_str(token).is_ok()
}

/// One token's handle on Apple: its credentials, its session token, its account details.
///
/// Calls may run concurrently. Each call re-authenticates at most once (on 401, or 403
/// `FORBIDDEN`), then replays the request.
pub struct AppleSession {
    client: AppleClient,
    token_key: String,
    credentials: Credentials,
    auth: Mutex<Option<SecretString>>,
    account: Mutex<Option<Arc<Account>>>,
    /// Where the token's processes share its session; None: this handle alone.
    keeper: Option<Arc<dyn SessionKeeper>>,
    /// The session the keeper holds, as far as this handle knows.
    shared: Mutex<Option<SecretString>>,
    /// The session Apple last refused: what a renewal replaces.
    refused: Mutex<Option<SecretString>>,
    /// One renewal at a time within this handle.
    renewing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for AppleSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppleSession")
            .field("token_key", &self.token_key)
            .finish_non_exhaustive()
    }
}

/// A whole answer from Apple.
struct Answer {
    status: StatusCode,
    body: Vec<u8>,
    retry_after: Option<Duration>,
}

/// A mutex poisoned by a panic elsewhere still holds a usable value (a session token or
/// an account): carry on with it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn same(a: &SecretString, b: &SecretString) -> bool {
    a.expose_secret() == b.expose_secret()
}

impl AppleSession {
    /// Renews the session through `keeper`, which shares it with the token's
    /// other processes (see [`crate::shared`]).
    pub fn with_keeper(mut self, keeper: Arc<dyn SessionKeeper>) -> Self {
        self.keeper = Some(keeper);
        self
    }

    /// The session token in use.
    pub fn current_auth_session(&self) -> Option<SecretString> {
        lock(&self.auth).clone()
    }

    /// Hands the session in use to the keeper if it is not the one the keeper
    /// holds (Apple rotated it during the calls), so the token's next caller
    /// starts with it.
    pub async fn keep_current(&self) {
        let Some(keeper) = &self.keeper else {
            return;
        };
        let Some(current) = self.current_auth_session() else {
            return;
        };
        let known = lock(&self.shared)
            .as_ref()
            .is_some_and(|shared| same(shared, &current));
        if !known {
            keeper.share(&current).await;
            *lock(&self.shared) = Some(current);
        }
    }

    /// `GET /account`: the MDM server and organisation behind the token. Also a cheap way
    /// to check a newly uploaded token. The answer is kept for [`Self::page_limit_for`].
    pub async fn account(&self) -> Result<Account, AppleError> {
        let account: Account = self.call(Route::Account, None, None).await?;
        *lock(&self.account) = Some(Arc::new(account.clone()));
        Ok(account)
    }

    /// The page size to ask `route` for: the maximum `/account` advertises, else
    /// [`FALLBACK_PAGE_LIMIT`]. Reads `/account` once per session.
    pub async fn page_limit_for(&self, route: Route) -> Result<u32, AppleError> {
        let cached = lock(&self.account).clone();
        let account = match cached {
            Some(account) => account,
            None => Arc::new(self.account().await?),
        };
        Ok(account
            .page_limit(route.path())
            .unwrap_or(FALLBACK_PAGE_LIMIT))
    }

    /// `POST /server/devices`: a page of the complete device list. `cursor` is `None` on
    /// the first page; `limit` `None` asks for [`Self::page_limit_for`].
    pub async fn fetch_devices(
        &self,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<DevicePage, AppleError> {
        self.page(Route::FetchDevices, cursor, limit).await
    }

    /// `POST /devices/sync`: a page of changes since `cursor`. An empty cursor is not
    /// sent, so Apple answers `CURSOR_REQUIRED` ([`AppleError::CursorRequired`]).
    pub async fn sync_devices(
        &self,
        cursor: &str,
        limit: Option<u32>,
    ) -> Result<DevicePage, AppleError> {
        self.page(Route::SyncDevices, Some(cursor), limit).await
    }

    async fn page(
        &self,
        route: Route,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<DevicePage, AppleError> {
        self.page_within(route, cursor, limit, CallLimits::standard())
            .await
    }

    /// A page of `route` within `limits` (see [`CallLimits`]).
    pub(crate) async fn page_within(
        &self,
        route: Route,
        cursor: Option<&str>,
        limit: Option<u32>,
        limits: CallLimits,
    ) -> Result<DevicePage, AppleError> {
        let limit = match limit {
            Some(limit) => limit,
            None => self.page_limit_for(route).await?,
        };
        let body = PageRequest {
            cursor: cursor.filter(|cursor| !cursor.is_empty()),
            limit: Some(limit),
        };
        self.call_within(route, None, Some(json(&body)?), limits)
            .await
    }

    /// `POST /devices`: Apple's record of each named device (at most
    /// [`MAX_DEVICES_PER_REQUEST`]).
    pub async fn device_details(&self, serials: &[String]) -> Result<DeviceDetails, AppleError> {
        check_count(serials)?;
        let body = json(&SerialsRequest { devices: serials })?;
        self.call(Route::DeviceDetails, None, Some(body)).await
    }

    /// `POST /profile`: defines a new profile (Apple has no update: a changed profile is
    /// a new one). Not retried after a lost answer, which could define it twice.
    pub async fn define_profile(&self, profile: &Profile) -> Result<DefinedProfile, AppleError> {
        check_count(&profile.devices)?;
        self.call(Route::DefineProfile, None, Some(json(profile)?))
            .await
    }

    /// `GET /profile?profile_uuid=`: a profile as Apple holds it.
    pub async fn get_profile(&self, profile_uuid: &str) -> Result<Profile, AppleError> {
        self.call(
            Route::GetProfile,
            Some(("profile_uuid", profile_uuid)),
            None,
        )
        .await
    }

    /// `PUT /profile/devices`: assigns a profile to at most [`MAX_DEVICES_PER_REQUEST`]
    /// devices. Per-device failures come back in the answer with HTTP 200.
    pub async fn assign_profile(
        &self,
        profile_uuid: &str,
        serials: &[String],
    ) -> Result<AssignedProfile, AppleError> {
        check_count(serials)?;
        let body = json(&AssignRequest {
            profile_uuid,
            devices: serials,
        })?;
        self.call(Route::AssignProfile, None, Some(body)).await
    }

    /// `DELETE /profile/devices`: clears the profile of at most
    /// [`MAX_DEVICES_PER_REQUEST`] devices (no effect on a device that already
    /// downloaded it, until it is wiped).
    pub async fn remove_profile(&self, serials: &[String]) -> Result<DeviceStatuses, AppleError> {
        check_count(serials)?;
        let body = json(&SerialsRequest { devices: serials })?;
        self.call(Route::RemoveProfile, None, Some(body)).await
    }

    /// `POST /devices/disown`: removes devices from the organisation in Apple Business
    /// **for good**. At most [`MAX_DEVICES_PER_REQUEST`].
    pub async fn disown_devices(&self, serials: &[String]) -> Result<DeviceStatuses, AppleError> {
        check_count(serials)?;
        let body = json(&SerialsRequest { devices: serials })?;
        self.call(Route::DisownDevices, None, Some(body)).await
    }

    /// One logical call: retries with backoff, re-authentication, decoding; one span, and
    /// one closing event with the final status, attempts and duration.
    async fn call<T: DeserializeOwned>(
        &self,
        route: Route,
        query: Option<(&str, &str)>,
        body: Option<Vec<u8>>,
    ) -> Result<T, AppleError> {
        self.call_within(route, query, body, CallLimits::standard())
            .await
    }

    /// [`Self::call`] within `limits`.
    async fn call_within<T: DeserializeOwned>(
        &self,
        route: Route,
        query: Option<(&str, &str)>,
        body: Option<Vec<u8>>,
        limits: CallLimits,
    ) -> Result<T, AppleError> {
        let span = tracing::info_span!(
            "apple",
            route = route.path(),
            method = %route.method(),
            token = %self.token_key,
        );
        async {
            let started = Instant::now();
            let (result, attempts) = self
                .with_retries(route, query, body.as_deref(), limits)
                .await;
            let duration_ms = elapsed_ms(started);
            let answer = match result {
                Ok(answer) => answer,
                Err(error) => {
                    tracing::warn!(%error, attempts, duration_ms, "Apple call failed");
                    return Err(error);
                }
            };
            let status = answer.status.as_u16();
            match serde_json::from_slice(&answer.body) {
                Ok(decoded) => {
                    tracing::debug!(status, attempts, duration_ms, "Apple call succeeded");
                    Ok(decoded)
                }
                Err(error) => {
                    let error = AppleError::decode(route, &error);
                    tracing::warn!(%error, status, attempts, duration_ms, "Apple call failed");
                    Err(error)
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Attempts until success, a final error, or the deadline; also says how many it took.
    async fn with_retries(
        &self,
        route: Route,
        query: Option<(&str, &str)>,
        body: Option<&[u8]>,
        limits: CallLimits,
    ) -> (Result<Answer, AppleError>, u32) {
        let policy = &self.client.inner.config.retry;
        let clock = self.client.inner.config.clock.clone();
        let started = clock.now();
        let policy_end = started + chrono::Duration::from_std(policy.deadline).unwrap_or_default();
        let give_up_at = limits
            .until
            .map_or(policy_end, |until| until.min(policy_end));
        let timeout = limits
            .timeout
            .unwrap_or(self.client.inner.config.request_timeout);
        let reauthenticated = AtomicBool::new(false);
        let attempts = AtomicU32::new(0);
        let backoff = ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(policy.base_delay)
            .with_max_delay(policy.max_delay)
            .without_max_times();
        let result = (|| {
            attempts.fetch_add(1, Ordering::Relaxed);
            self.attempt(route, query, body, timeout, &reauthenticated)
        })
        .retry(backoff)
        // Waits are clock time: a sped-up local run waits less real time.
        .sleep(ClockSleeper(self.client.inner.config.clock.clone()))
        .when(|error: &AppleError| {
            error.is_retryable()
                && (route.is_idempotent() || error.was_refused())
                && (limits.retry_timeouts || !matches!(error, AppleError::Timeout))
        })
        .adjust(|error, delay| {
            // Apple's Retry-After is a floor; the backoff only ever lengthens it.
            let wait = delay?.max(error.retry_after().unwrap_or_default());
            let resume_at = clock.now() + chrono::Duration::from_std(wait).ok()?;
            (resume_at <= give_up_at).then_some(wait)
        })
        .notify(|error, wait| {
            tracing::info!(%error, wait_ms = wait.as_millis() as u64, "retrying Apple call");
        })
        .await;
        (result, attempts.load(Ordering::Relaxed))
    }

    /// One attempt: make sure there is a session, send, and on a stale session
    /// re-authenticate once per call and replay.
    async fn attempt(
        &self,
        route: Route,
        query: Option<(&str, &str)>,
        body: Option<&[u8]>,
        timeout: Duration,
        reauthenticated: &AtomicBool,
    ) -> Result<Answer, AppleError> {
        let session = match self.current_auth_session() {
            Some(session) => session,
            None => self.fresh_session().await?,
        };
        let mut answer = self.send(route, query, body, timeout, &session).await?;
        if wants_new_session(route, answer.status, &answer.body) {
            if reauthenticated.swap(true, Ordering::SeqCst) {
                // A refusal that outlives a fresh session is retried as it is
                // (an edge in front of Apple, say), without asking for more.
                return Err(stale_on_a_fresh_session(answer.status));
            }
            tracing::info!(
                status = answer.status.as_u16(),
                "Apple refused the session; renewing it"
            );
            self.forget(&session);
            let session = self.fresh_session().await?;
            answer = self.send(route, query, body, timeout, &session).await?;
            if wants_new_session(route, answer.status, &answer.body) {
                return Err(stale_on_a_fresh_session(answer.status));
            }
        }
        if answer.status.is_success() {
            Ok(answer)
        } else {
            Err(classify(
                route,
                answer.status,
                &answer.body,
                answer.retry_after,
            ))
        }
    }

    /// A session to replace the one Apple last refused (or none): one another
    /// call of this handle or another process already got, or a new one from
    /// Apple, shared through the keeper.
    async fn fresh_session(&self) -> Result<SecretString, AppleError> {
        let _turn = self.renewing.lock().await;
        if let Some(current) = self.current_auth_session() {
            return Ok(current);
        }
        let refused = lock(&self.refused).clone();
        let stale = refused.as_ref();
        let Some(keeper) = &self.keeper else {
            return self.authenticate().await;
        };
        let patience = self.client.real(RENEWAL_PATIENCE);
        let started = Instant::now();
        loop {
            match keeper.renew(stale).await {
                Renewal::Theirs(session)
                    if usable(session.expose_secret())
                        && stale.is_none_or(|stale| !same(stale, &session)) =>
                {
                    tracing::debug!("took the session another process renewed");
                    *lock(&self.auth) = Some(session.clone());
                    *lock(&self.shared) = Some(session.clone());
                    return Ok(session);
                }
                Renewal::Wait if started.elapsed() < patience => {
                    tokio::time::sleep(RENEWAL_POLL).await;
                }
                _ => {
                    let session = self.authenticate().await?;
                    keeper.share(&session).await;
                    *lock(&self.shared) = Some(session.clone());
                    return Ok(session);
                }
            }
        }
    }

    /// `GET /session`, signed with the token's OAuth credentials; stores the new session.
    async fn authenticate(&self) -> Result<SecretString, AppleError> {
        let url = self.client.url(Route::Session);
        let authorization = self.credentials.authorization(&url);
        let mut authorization = HeaderValue::from_str(authorization.expose_secret())
            .map_err(|_| AppleError::TokenInvalid)?;
        authorization.set_sensitive(true);
        let request = self
            .client
            .inner
            .http
            .get(&url)
            .header(AUTHORIZATION, authorization)
            // nanodep sends it on /session too, because depsim requires it.
            .header(CONTENT_TYPE, JSON_CONTENT_TYPE)
            .timeout(self.client.real(self.client.inner.config.request_timeout));
        let answer = self.exchange(Route::Session, request).await?;
        if !answer.status.is_success() {
            return Err(classify(
                Route::Session,
                answer.status,
                &answer.body,
                answer.retry_after,
            ));
        }
        let session: SessionAnswer = serde_json::from_slice(&answer.body)
            .map_err(|error| AppleError::decode(Route::Session, &error))?;
        if !usable(&session.auth_session_token) {
            return Err(AppleError::Decode {
                route: Route::Session.path(),
                line: 1,
                column: 1,
            });
        }
        let session = SecretString::from(session.auth_session_token);
        *lock(&self.auth) = Some(session.clone());
        tracing::debug!("authenticated with Apple");
        Ok(session)
    }

    /// Drops `stale` unless another call already replaced it, and remembers it
    /// as the session to renew.
    fn forget(&self, stale: &SecretString) {
        let mut auth = lock(&self.auth);
        if auth.as_ref().is_some_and(|current| same(current, stale)) {
            *auth = None;
            *lock(&self.refused) = Some(stale.clone());
        }
    }

    /// Sends an API request with the session header.
    async fn send(
        &self,
        route: Route,
        query: Option<(&str, &str)>,
        body: Option<&[u8]>,
        timeout: Duration,
        session: &SecretString,
    ) -> Result<Answer, AppleError> {
        let mut session =
            HeaderValue::from_str(session.expose_secret()).map_err(|_| AppleError::Decode {
                route: Route::Session.path(),
                line: 1,
                column: 1,
            })?;
        session.set_sensitive(true);
        let mut request = self
            .client
            .inner
            .http
            .request(route.method(), self.client.url(route))
            .header(SESSION_HEADER, session)
            .timeout(self.client.real(timeout));
        if let Some(query) = query {
            request = request.query(&[query]);
        }
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, JSON_CONTENT_TYPE)
                .body(body.to_vec());
        }
        self.exchange(route, request).await
    }

    /// Sends, reads the whole answer within the size cap, and picks up a rotated session.
    async fn exchange(
        &self,
        route: Route,
        request: reqwest::RequestBuilder,
    ) -> Result<Answer, AppleError> {
        let started = Instant::now();
        let mut response = request.send().await.map_err(AppleError::from_reqwest)?;
        let status = response.status();
        // Apple may hand out a new session on any answer; a 401 is the old one's death.
        if route != Route::Session && status != StatusCode::UNAUTHORIZED {
            let rotated = response
                .headers()
                .get(SESSION_HEADER)
                .and_then(|value| value.to_str().ok())
                .filter(|token| usable(token));
            if let Some(token) = rotated {
                let token = SecretString::from(token);
                let mut auth = lock(&self.auth);
                let changed = auth
                    .as_ref()
                    .is_none_or(|current| current.expose_secret() != token.expose_secret());
                if changed {
                    tracing::debug!("Apple rotated the session");
                    *auth = Some(token);
                }
            }
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, SystemTime::now()));
        let limit = self.client.inner.config.max_response_bytes;
        if response
            .content_length()
            .is_some_and(|length| length > limit as u64)
        {
            return Err(AppleError::ResponseTooLarge { limit });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(AppleError::from_reqwest)? {
            if body.len() + chunk.len() > limit {
                return Err(AppleError::ResponseTooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        tracing::debug!(
            path = route.path(),
            status = status.as_u16(),
            bytes = body.len(),
            elapsed_ms = elapsed_ms(started),
            "Apple answered"
        );
        Ok(Answer {
            status,
            body,
            retry_after,
        })
    }
}

/// Backoff waits on the client's clock (a named type: a closure here makes
/// the calls' futures lose `Send` to a higher-ranked lifetime).
struct ClockSleeper(adesync_core::clock::SharedClock);

impl backon::Sleeper for ClockSleeper {
    type Sleep = tokio::time::Sleep;

    fn sleep(&self, wait: Duration) -> Self::Sleep {
        tokio::time::sleep(wait.div_f64(self.0.speed().max(1.0)))
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn check_count(serials: &[String]) -> Result<(), AppleError> {
    if serials.len() > MAX_DEVICES_PER_REQUEST {
        return Err(AppleError::TooManyDevices {
            count: serials.len(),
            max: MAX_DEVICES_PER_REQUEST,
        });
    }
    Ok(())
}

fn json<T: Serialize + ?Sized>(body: &T) -> Result<Vec<u8>, AppleError> {
    // Our request types always encode (no maps with non-string keys); a failure here is a
    // bug, reported rather than panicking.
    serde_json::to_vec(body).map_err(|error| AppleError::Setup {
        reason: format!("a request body could not be encoded ({error})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_must_be_plain_http() {
        for base_url in ["not a url", "ftp://example.com", "https://example.com/?q=1"] {
            let config = AppleConfig {
                base_url: base_url.to_owned(),
                ..AppleConfig::default()
            };
            assert!(
                matches!(AppleClient::new(config), Err(AppleError::Setup { .. })),
                "{base_url}"
            );
        }
    }

    #[test]
    fn routes_append_to_the_base_url() {
        for base_url in ["https://example.com", "https://example.com/"] {
            let client = AppleClient::new(AppleConfig {
                base_url: base_url.to_owned(),
                ..AppleConfig::default()
            })
            .expect("valid config");
            assert_eq!(
                client.url(Route::FetchDevices),
                "https://example.com/server/devices"
            );
        }
        let client = AppleClient::new(AppleConfig {
            base_url: "http://127.0.0.1:9/apple/".to_owned(),
            ..AppleConfig::default()
        })
        .expect("valid config");
        assert_eq!(
            client.url(Route::Session),
            "http://127.0.0.1:9/apple/session"
        );
    }

    #[test]
    fn unusable_cached_sessions_are_dropped() {
        let client = AppleClient::new(AppleConfig::default()).expect("default config");
        let credentials = Credentials {
            consumer_key: "ck".into(),
            consumer_secret: "cs".into(),
            access_token: "at".into(),
            access_secret: "as".into(),
        };
        let session = client.session("t", credentials.clone(), Some("bad\nvalue".into()));
        assert!(session.current_auth_session().is_none());
        let session = client.session("t", credentials, Some("good".into()));
        assert_eq!(
            session
                .current_auth_session()
                .map(|token| token.expose_secret().to_owned()),
            Some("good".to_owned())
        );
    }

    /// Lambda handlers need `Send` futures; this fails to compile if a call is not.
    #[test]
    fn calls_are_send() {
        fn send<T: Send>(_: &T) {}
        let client = AppleClient::new(AppleConfig::default()).expect("default config");
        let session = client.session(
            "t",
            Credentials {
                consumer_key: "ck".into(),
                consumer_secret: "cs".into(),
                access_token: "at".into(),
                access_secret: "as".into(),
            },
            None,
        );
        send(&session);
        send(&session.account());
        send(&session.fetch_devices(None, None));
        send(&session.assign_profile("P", &[]));
    }

    #[tokio::test]
    async fn too_many_serials_are_refused_before_sending() {
        // Port 9 (discard) is never contacted: the refusal comes first.
        let client = AppleClient::new(AppleConfig {
            base_url: "http://127.0.0.1:9".to_owned(),
            ..AppleConfig::default()
        })
        .expect("valid config");
        let session = client.session(
            "t",
            Credentials {
                consumer_key: "ck".into(),
                consumer_secret: "cs".into(),
                access_token: "at".into(),
                access_secret: "as".into(),
            },
            None,
        );
        let serials: Vec<String> = (0..=MAX_DEVICES_PER_REQUEST)
            .map(|n| format!("S{n}"))
            .collect();
        let error = session
            .assign_profile("P", &serials)
            .await
            .expect_err("1,001 serials are refused");
        assert!(
            matches!(
                error,
                AppleError::TooManyDevices {
                    count: 1001,
                    max: 1000
                }
            ),
            "{error:?}"
        );
    }
}
