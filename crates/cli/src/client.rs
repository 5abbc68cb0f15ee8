//! A typed client of the adesync HTTP API (docs/openapi.yaml).
//!
//! One method per route. Path segments (token ids, serial numbers, policy
//! ids) are percent-encoded by [`reqwest::Url`], so no argument can reach
//! another route. Every error answer of the API becomes an [`ApiFailure`]
//! carrying the contract's `error` code, its `message` and, for refusals,
//! when to retry.

use std::time::Duration;

use base64::Engine;
use reqwest::{Method, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::model::{
    Assignment, Device, DeviceDeleted, DeviceFilter, DevicePage, Policy, PolicyPage, Run, RunList,
    SyncKind, SyncStarted, SyncStatus, Token, TokenPage,
};

/// How long one request may take. Token creation waits for Apple's
/// answer, which the API bounds well below this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// An error answer of the API: `{"error", "message", ...details}`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiFailure {
    /// The HTTP status.
    pub status: u16,
    /// The contract's error code (`manual_sync_cooldown`, `not_found`, …).
    pub code: String,
    /// One plain sentence: what happened and what to do.
    pub message: String,
    /// From `Retry-After` or `retry_after_seconds`: when to try again.
    pub retry_after_seconds: Option<u64>,
    /// The whole error body, details included.
    pub body: Value,
}

impl ApiFailure {
    /// A rule of the product refused the request and nothing changed: a
    /// cooldown (429) or a conflict with the current state (409) such as a
    /// sync in progress, a limit reached or a token that is not empty.
    pub fn is_refusal(&self) -> bool {
        matches!(self.status, 409 | 429)
    }

    /// The retry time the API named (`retry_at` or `lease_expires_at`).
    pub fn retry_at(&self) -> Option<&str> {
        ["retry_at", "lease_expires_at"]
            .iter()
            .find_map(|key| self.body[*key].as_str())
    }

    fn from_answer(status: u16, retry_after: Option<u64>, text: &str) -> Self {
        let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let code = body["error"].as_str().map_or_else(
            || match status {
                // API Gateway's own JWT authorizer answers {"message": "Unauthorized"}.
                401 => "unauthorized".to_owned(),
                403 => "forbidden".to_owned(),
                _ => format!("http_{status}"),
            },
            str::to_owned,
        );
        let message = body["message"].as_str().map_or_else(
            || {
                format!(
                    "The API answered HTTP {status} without an explanation{}.",
                    if status == 401 {
                        "; the access token is missing, invalid or expired"
                    } else {
                        ""
                    }
                )
            },
            str::to_owned,
        );
        let retry_after_seconds = retry_after.or_else(|| body["retry_after_seconds"].as_u64());
        Self {
            status,
            code,
            message,
            retry_after_seconds,
            body,
        }
    }
}

/// Why a call did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API answered with an error.
    #[error(transparent)]
    Api(#[from] ApiFailure),
    /// No answer: the URL is wrong, the service is down, or the network failed.
    #[error("cannot reach the adesync API at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// An answer that is not what the API documents.
    #[error("the API answered {what} with something unexpected: {problem}")]
    Unexpected { what: String, problem: String },
    /// The base URL is not an http(s) URL.
    #[error("{0:?} is not an http(s) URL of an adesync API (for example http://127.0.0.1:3000)")]
    InvalidUrl(String),
}

impl ClientError {
    /// The API's refusal, if that is what this is.
    pub fn refusal(&self) -> Option<&ApiFailure> {
        match self {
            ClientError::Api(failure) if failure.is_refusal() => Some(failure),
            _ => None,
        }
    }
}

/// A client of one adesync deployment, acting with one access token.
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<SecretString>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// Where a route lives: path segments under the base URL.
type Segments<'a> = &'a [&'a str];

impl Client {
    /// A client of the API at `base_url` (the local runner, or an API
    /// Gateway URL), sending `token` as the bearer token.
    pub fn new(base_url: &str, token: Option<SecretString>) -> Result<Self, ClientError> {
        let base = Url::parse(base_url.trim_end_matches('/'))
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && !url.cannot_be_a_base())
            .ok_or_else(|| ClientError::InvalidUrl(base_url.to_owned()))?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("adesync-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Unreachable {
                url: base.to_string(),
                reason: error_chain(&e),
            })?;
        Ok(Self { http, base, token })
    }

    /// The base URL, as given.
    pub fn base_url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    fn url(&self, segments: Segments<'_>, query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Sends one request; an error answer becomes [`ApiFailure`].
    async fn send(
        &self,
        method: Method,
        segments: Segments<'_>,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<reqwest::Response, ClientError> {
        let url = self.url(segments, query);
        let mut request = self.http.request(method, url.clone());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose_secret());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base_url().to_owned(),
            reason: error_chain(&e),
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let text = response.text().await.unwrap_or_default();
        Err(ApiFailure::from_answer(status.as_u16(), retry_after, &text).into())
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: Segments<'_>,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<T, ClientError> {
        let what = format!("{method} /{}", segments.join("/"));
        let response = self.send(method, segments, query, body).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::Unexpected {
                what: what.clone(),
                problem: error_chain(&e),
            })?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Unexpected {
            what,
            problem: e.to_string(),
        })
    }

    /// `GET /v1/health` (no access token needed).
    pub async fn health(&self) -> Result<Value, ClientError> {
        self.call(Method::GET, &["v1", "health"], &[], None).await
    }

    /// `GET /v1/public-key`: the account's certificate (PEM) to upload to
    /// the MDM server in Apple Business.
    pub async fn public_key(&self) -> Result<String, ClientError> {
        let response = self
            .send(Method::GET, &["v1", "public-key"], &[], None)
            .await?;
        response.text().await.map_err(|e| ClientError::Unexpected {
            what: "GET /v1/public-key".into(),
            problem: error_chain(&e),
        })
    }

    /// `POST /v1/tokens`: links an MDM server by its token file (the
    /// `.p7m` downloaded from Apple Business) and starts its first full sync.
    pub async fn create_token(
        &self,
        name: &str,
        apple_id: &str,
        token_file: &[u8],
    ) -> Result<Token, ClientError> {
        let body = json!({
            "name": name,
            "apple_id": apple_id,
            "token_file": base64::engine::general_purpose::STANDARD.encode(token_file),
        });
        self.call(Method::POST, &["v1", "tokens"], &[], Some(&body))
            .await
    }

    /// One page of `GET /v1/tokens`.
    pub async fn tokens_page(
        &self,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<TokenPage, ClientError> {
        let mut query = Vec::new();
        if let Some(cursor) = cursor {
            query.push(("cursor", cursor.to_owned()));
        }
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        self.call(Method::GET, &["v1", "tokens"], &query, None)
            .await
    }

    /// Every token of the account, following `next_cursor`.
    pub async fn tokens(&self) -> Result<Vec<Token>, ClientError> {
        let mut tokens = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.tokens_page(cursor.as_deref(), Some(1_000)).await?;
            tokens.extend(page.tokens);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(tokens),
            }
        }
    }

    /// `GET /v1/tokens/{token_id}`.
    pub async fn token(&self, token: &str) -> Result<Token, ClientError> {
        self.call(Method::GET, &["v1", "tokens", token], &[], None)
            .await
    }

    /// `PUT /v1/tokens/{token_id}/renewal`: uploads a newly downloaded token
    /// file; the token keeps its id, devices and policies.
    pub async fn renew_token(
        &self,
        token: &str,
        apple_id: &str,
        token_file: &[u8],
    ) -> Result<Token, ClientError> {
        let body = json!({
            "apple_id": apple_id,
            "token_file": base64::engine::general_purpose::STANDARD.encode(token_file),
        });
        self.call(
            Method::PUT,
            &["v1", "tokens", token, "renewal"],
            &[],
            Some(&body),
        )
        .await
    }

    /// `DELETE /v1/tokens/{token_id}`.
    pub async fn delete_token(&self, token: &str) -> Result<(), ClientError> {
        self.send(Method::DELETE, &["v1", "tokens", token], &[], None)
            .await
            .map(drop)
    }

    /// `POST /v1/tokens/{token_id}/sync`.
    pub async fn start_sync(
        &self,
        token: &str,
        kind: SyncKind,
    ) -> Result<SyncStarted, ClientError> {
        self.call(
            Method::POST,
            &["v1", "tokens", token, "sync"],
            &[],
            Some(&json!({ "kind": kind })),
        )
        .await
    }

    /// `GET /v1/tokens/{token_id}/sync`.
    pub async fn sync_status(&self, token: &str) -> Result<SyncStatus, ClientError> {
        self.call(Method::GET, &["v1", "tokens", token, "sync"], &[], None)
            .await
    }

    /// `GET /v1/tokens/{token_id}/runs`: the newest runs first.
    pub async fn runs(&self, token: &str, limit: Option<u32>) -> Result<Vec<Run>, ClientError> {
        let query: Vec<(&str, String)> = limit
            .map(|l| ("limit", l.to_string()))
            .into_iter()
            .collect();
        let list: RunList = self
            .call(Method::GET, &["v1", "tokens", token, "runs"], &query, None)
            .await?;
        Ok(list.runs)
    }

    /// One page of `GET /v1/tokens/{token_id}/devices`.
    pub async fn devices_page(
        &self,
        token: &str,
        filter: &DeviceFilter,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<DevicePage, ClientError> {
        let mut query = Vec::new();
        if let Some(state) = &filter.state {
            query.push(("state", state.clone()));
        }
        if let Some(policy) = &filter.policy_id {
            query.push(("policy_id", policy.clone()));
        }
        if let Some(cursor) = cursor {
            query.push(("cursor", cursor.to_owned()));
        }
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        self.call(
            Method::GET,
            &["v1", "tokens", token, "devices"],
            &query,
            None,
        )
        .await
    }

    /// Every device matching `filter`, following `next_cursor`.
    pub async fn all_devices(
        &self,
        token: &str,
        filter: &DeviceFilter,
    ) -> Result<Vec<Device>, ClientError> {
        let mut devices = Vec::new();
        let mut cursor = None;
        loop {
            let page = self
                .devices_page(token, filter, cursor.as_deref(), Some(1_000))
                .await?;
            devices.extend(page.devices);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(devices),
            }
        }
    }

    /// `GET /v1/tokens/{token_id}/devices/{serial}`.
    pub async fn device(&self, token: &str, serial: &str) -> Result<Device, ClientError> {
        self.call(
            Method::GET,
            &["v1", "tokens", token, "devices", serial],
            &[],
            None,
        )
        .await
    }

    /// `DELETE /v1/tokens/{token_id}/devices/{serial}`: removes the device
    /// from management (it reappears on the next full sync unless it is
    /// unassigned in Apple Business first — the answer's warning).
    pub async fn delete_device(
        &self,
        token: &str,
        serial: &str,
    ) -> Result<DeviceDeleted, ClientError> {
        self.call(
            Method::DELETE,
            &["v1", "tokens", token, "devices", serial],
            &[],
            None,
        )
        .await
    }

    /// `POST /v1/tokens/{token_id}/policies` with the policy's settings.
    pub async fn create_policy(
        &self,
        token: &str,
        settings: &Value,
    ) -> Result<Policy, ClientError> {
        self.call(
            Method::POST,
            &["v1", "tokens", token, "policies"],
            &[],
            Some(settings),
        )
        .await
    }

    /// `GET /v1/tokens/{token_id}/policies`.
    pub async fn policies(&self, token: &str) -> Result<PolicyPage, ClientError> {
        self.call(Method::GET, &["v1", "tokens", token, "policies"], &[], None)
            .await
    }

    /// `GET /v1/tokens/{token_id}/policies/{policy_id}`.
    pub async fn policy(&self, token: &str, policy: &str) -> Result<Policy, ClientError> {
        self.call(
            Method::GET,
            &["v1", "tokens", token, "policies", policy],
            &[],
            None,
        )
        .await
    }

    /// `PATCH /v1/tokens/{token_id}/policies/{policy_id}` with the changed settings.
    pub async fn update_policy(
        &self,
        token: &str,
        policy: &str,
        changes: &Value,
    ) -> Result<Policy, ClientError> {
        self.call(
            Method::PATCH,
            &["v1", "tokens", token, "policies", policy],
            &[],
            Some(changes),
        )
        .await
    }

    /// `DELETE /v1/tokens/{token_id}/policies/{policy_id}`.
    pub async fn delete_policy(&self, token: &str, policy: &str) -> Result<(), ClientError> {
        self.send(
            Method::DELETE,
            &["v1", "tokens", token, "policies", policy],
            &[],
            None,
        )
        .await
        .map(drop)
    }

    /// `PUT /v1/tokens/{token_id}/default-policy`: newly synced devices get
    /// this policy.
    pub async fn set_default_policy(
        &self,
        token: &str,
        policy: &str,
    ) -> Result<Value, ClientError> {
        let response = self
            .send(
                Method::PUT,
                &["v1", "tokens", token, "default-policy"],
                &[],
                Some(&json!({ "policy_id": policy })),
            )
            .await?;
        // The contract promises 200; its body is informative only.
        Ok(response.json().await.unwrap_or(Value::Null))
    }

    /// `POST /v1/tokens/{token_id}/policies/{policy_id}/devices`: assigns
    /// devices to a policy, with an outcome per serial.
    pub async fn assign(
        &self,
        token: &str,
        policy: &str,
        serials: &[String],
    ) -> Result<Assignment, ClientError> {
        self.call(
            Method::POST,
            &["v1", "tokens", token, "policies", policy, "devices"],
            &[],
            Some(&json!({ "serials": serials })),
        )
        .await
    }
}

/// An error and its causes in one line ("error sending request: connection
/// refused"): reqwest's own message alone hides the cause.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_keep_code_message_and_retry_time() {
        let failure = ApiFailure::from_answer(
            429,
            Some(880),
            r#"{"error":"manual_sync_cooldown","message":"Wait.","retry_at":"2030-01-01T00:15:00+00:00","retry_after_seconds":881}"#,
        );
        assert_eq!(failure.code, "manual_sync_cooldown");
        assert_eq!(failure.message, "Wait.");
        assert_eq!(failure.retry_after_seconds, Some(880), "the header wins");
        assert_eq!(failure.retry_at(), Some("2030-01-01T00:15:00+00:00"));
        assert!(failure.is_refusal());
    }

    #[test]
    fn answers_without_the_contracts_body_still_explain_themselves() {
        let gateway = ApiFailure::from_answer(401, None, r#"{"message":"Unauthorized"}"#);
        assert_eq!(gateway.code, "unauthorized");
        assert!(!gateway.is_refusal());
        let bare = ApiFailure::from_answer(502, None, "<html>bad gateway</html>");
        assert_eq!(bare.code, "http_502");
        assert!(bare.message.contains("502"), "{}", bare.message);
    }

    #[test]
    fn path_arguments_cannot_leave_their_segment() {
        let client = Client::new("http://127.0.0.1:3000/", None).unwrap();
        let url = client.url(&["v1", "tokens", "../public-key", "sync"], &[]);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:3000/v1/tokens/..%2Fpublic-key/sync"
        );
        let staged = Client::new("https://api.example.com/prod", None).unwrap();
        assert_eq!(
            staged
                .url(&["v1", "tokens"], &[("limit", "5".into())])
                .as_str(),
            "https://api.example.com/prod/v1/tokens?limit=5"
        );
        assert!(matches!(
            Client::new("ftp://x", None),
            Err(ClientError::InvalidUrl(_))
        ));
    }

    #[test]
    fn the_access_token_never_shows_in_debug_output() {
        let client = Client::new(
            "http://127.0.0.1:3000",
            Some(SecretString::from("eyJ.secret.jwt")),
        )
        .unwrap();
        let shown = format!("{client:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
