//! The error body of the HTTP contract.
//!
//! Every 4xx/5xx answer is `{"error": "<code>", "message": "<one plain
//! sentence>", ...details}`. Statuses are chosen here and in the handlers'
//! `From` impls at the edge — nowhere deeper. 5xx bodies never carry the
//! internal cause: it is logged instead.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Map, Value, json};

/// An error answer of the API.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Map<String, Value>,
    retry_after_seconds: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Map::new(),
            retry_after_seconds: None,
        }
    }

    /// Adds a machine-readable detail next to `error` and `message`.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// Sets the `Retry-After` header (and `retry_after_seconds` detail).
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_seconds = Some(seconds);
        self.with("retry_after_seconds", seconds)
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 for anything the caller's account does not own — whether or not
    /// it exists elsewhere.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("No {what} with that id exists in your account; check the id."),
        )
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 413: the body is over [`MAX_BODY_BYTES`].
    pub fn body_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "The request body is larger than {} KiB; a token file is a few KiB, so send only its base64 in token_file.",
                MAX_BODY_BYTES / 1024
            ),
        )
    }

    /// An unexpected failure. The cause is logged here, never returned.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed unexpectedly");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Something went wrong on our side; retry in a moment, and contact support if it persists.",
        )
    }

    /// A dependency (DynamoDB, SQS, KMS) is throttling or unreachable.
    pub fn unavailable(cause: &dyn std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "a dependency is unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "The service is busy; retry in a few seconds.",
        )
        .retry_after(5)
    }

    /// The JSON body of this error.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("error".into(), json!(self.code));
        body.insert("message".into(), json!(self.message));
        for (k, v) in &self.details {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body)
    }
}

/// `text` as one sentence of an error message: capitalised, ending with a
/// full stop (domain errors read as clauses: "a manual sync … ran").
pub fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    let mut sentence: String = chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default();
    if !sentence.ends_with('.') {
        sentence.push('.');
    }
    sentence
}

/// A storage failure at the edge: throttling or an unreachable DynamoDB is
/// worth retrying (503 with `Retry-After`); anything else is ours (500).
impl From<adesync_store::StoreError> for ApiError {
    fn from(error: adesync_store::StoreError) -> Self {
        ApiError::store(&error)
    }
}

impl ApiError {
    /// See the `From<StoreError>` conversion.
    pub fn store(error: &adesync_store::StoreError) -> Self {
        if error.is_transient() {
            ApiError::unavailable(error)
        } else {
            ApiError::internal(error)
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after_seconds
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// Describes what is wrong with a JSON body without quoting it (a body
/// may carry secrets, such as a token file).
pub fn json_problem(error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match error.classify() {
        Category::Syntax | Category::Eof => format!(
            "malformed JSON at line {}, column {}",
            error.line(),
            error.column()
        ),
        Category::Data => {
            // serde's data errors name the field and the expected type but can
            // quote an offending value; keep only the part before any quote.
            let text = error.to_string();
            let safe = text
                .split('`')
                .next()
                .unwrap_or("")
                .trim()
                .trim_end_matches(':');
            safe.to_owned()
        }
        Category::Io => "the body could not be read".to_owned(),
    }
}

/// The token named by a route's `{token_id}`. Anything that is not a token
/// id — hostile text, bad percent-encoding — names no token of the caller's:
/// 404, the same answer as another account's token.
#[derive(Debug, Clone)]
pub struct TokenPath(pub adesync_core::ids::TokenId);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for TokenPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let axum::extract::Path(params) = axum::extract::Path::<
            std::collections::HashMap<String, String>,
        >::from_request_parts(parts, state)
        .await
        .map_err(|_| ApiError::not_found("token"))?;
        params
            .get("token_id")
            .and_then(|id| adesync_core::ids::TokenId::parse(id).ok())
            .map(TokenPath)
            .ok_or_else(|| ApiError::not_found("token"))
    }
}

/// The token and device named by `{token_id}` and `{serial}` (404 for
/// anything unparsable, as [`TokenPath`]).
#[derive(Debug, Clone)]
pub struct DevicePath(
    pub adesync_core::ids::TokenId,
    pub adesync_core::ids::Serial,
);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for DevicePath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let TokenPath(token) = TokenPath::from_request_parts(parts, state).await?;
        let axum::extract::Path(params) = axum::extract::Path::<
            std::collections::HashMap<String, String>,
        >::from_request_parts(parts, state)
        .await
        .map_err(|_| ApiError::not_found("device"))?;
        params
            .get("serial")
            .and_then(|serial| adesync_core::ids::Serial::parse(serial).ok())
            .map(|serial| DevicePath(token, serial))
            .ok_or_else(|| ApiError::not_found("device"))
    }
}

/// Reads a JSON object body into `T`. Only an object is accepted: serde
/// would otherwise also read a struct from an array of its fields.
pub fn parse_object<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| json_problem(&e))?;
    if !value.is_object() {
        return Err("the body must be a JSON object".to_owned());
    }
    serde_json::from_value(value).map_err(|e| json_problem(&e))
}

/// Largest request body any route accepts (a token file is a few KiB).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Wraps a function's routes with what every HTTP function needs: a body
/// size cap, a JSON 404 for unknown routes, every error in the contract's
/// JSON shape, and panics answered as a 500 without details.
pub fn service(routes: axum::Router) -> axum::Router {
    use axum::extract::DefaultBodyLimit;
    use axum::middleware;
    use tower_http::catch_panic::CatchPanicLayer;

    routes
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "No such route; see the API reference (docs/openapi.yaml).",
            )
        })
        .method_not_allowed_fallback(|| async { method_not_allowed() })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::map_response(in_the_contracts_shape))
        .layer(middleware::from_fn(refuse_declared_oversized_bodies))
        .layer(CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| {
                ApiError::internal(&"a request handler panicked").into_response()
            },
        ))
}

fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "This route does not accept that method; see the API reference (docs/openapi.yaml).",
    )
}

/// A body that says it is over the cap is refused before routing, so every
/// route answers it alike, whether or not its handler reads a body. A body
/// that does not say its length meets the cap when a handler reads it.
async fn refuse_declared_oversized_bodies(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return ApiError::body_too_large().into_response();
    }
    next.run(request).await
}

/// Rejections axum answers itself — a body over the cap as a handler reads
/// it, a path or query its extractors cannot read — come as plain text, and
/// their text can quote the request. Each is answered in the contract's
/// shape instead, with a code by its status and none of its text.
async fn in_the_contracts_shape(response: Response) -> Response {
    let status = response.status();
    let is_error = status.is_client_error() || status.is_server_error();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !is_error || is_json {
        return response;
    }
    let error = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::body_too_large(),
        StatusCode::NOT_FOUND => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "No such route or object; see the API reference (docs/openapi.yaml).",
        ),
        StatusCode::METHOD_NOT_ALLOWED => method_not_allowed(),
        status if status.is_server_error() => {
            ApiError::internal(&format_args!("a plain-text {status} answer"))
        }
        status => ApiError::new(
            status,
            "invalid_request",
            "The request could not be read (its path, query, headers or body); see the API reference (docs/openapi.yaml) for what this route expects.",
        ),
    };
    let allow = response.headers().get(header::ALLOW).cloned();
    let mut answer = error.into_response();
    if let Some(allow) = allow {
        answer.headers_mut().insert(header::ALLOW, allow);
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clause_becomes_a_sentence() {
        assert_eq!(sentence("the token expired"), "The token expired.");
        assert_eq!(sentence("done."), "Done.");
        assert_eq!(sentence(""), ".");
        assert_eq!(sentence("über"), "Über.");
    }

    #[test]
    fn body_carries_code_message_and_details() {
        let err = ApiError::conflict("sync_in_progress", "A sync is running.")
            .with("run_id", "r1")
            .retry_after(30);
        let body = err.body();
        assert_eq!(body["error"], "sync_in_progress");
        assert_eq!(body["message"], "A sync is running.");
        assert_eq!(body["run_id"], "r1");
        assert_eq!(body["retry_after_seconds"], 30);
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(response.headers()[header::RETRY_AFTER], "30");
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_without_details() {
        use tower::ServiceExt;
        let app = service(axum::Router::new().route(
            "/boom",
            axum::routing::get(|| async {
                if std::hint::black_box(true) {
                    panic!("secret=hunter2 at table adesync-prod-tokens");
                }
                "unreachable"
            }),
        ));
        let response = app
            .oneshot(
                http::Request::get("/boom")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("internal_error"), "{text}");
        assert!(
            !text.contains("hunter2") && !text.contains("adesync-prod"),
            "{text}"
        );
    }

    /// The answer to `request` of a service with a few routes whose
    /// extractors reject: status, headers, body.
    async fn answer(
        request: http::Request<axum::body::Body>,
    ) -> (StatusCode, http::HeaderMap, axum::body::Bytes) {
        use tower::ServiceExt;
        let app =
            service(
                axum::Router::new()
                    .route(
                        "/echo",
                        axum::routing::post(|body: axum::body::Bytes| async move {
                            body.len().to_string()
                        }),
                    )
                    .route(
                        "/json",
                        axum::routing::post(|axum::Json(value): axum::Json<Value>| async move {
                            value.to_string()
                        }),
                    )
                    .route(
                        "/number/{n}",
                        axum::routing::get(
                            |axum::extract::Path(n): axum::extract::Path<u32>| async move {
                                n.to_string()
                            },
                        ),
                    )
                    .route("/ping", axum::routing::get(|| async { "pong" })),
            );
        let response = app.oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 16).await.unwrap();
        (parts.status, parts.headers, bytes)
    }

    fn request(method: &str, uri: &str) -> http::request::Builder {
        http::Request::builder().method(method).uri(uri)
    }

    #[tokio::test]
    async fn every_rejection_answers_in_the_contracts_shape() {
        use axum::body::Body;
        let big = vec![b'x'; MAX_BODY_BYTES + 1];
        let declared_big = (MAX_BODY_BYTES + 1).to_string();
        let cases: Vec<(&str, http::Request<Body>, StatusCode, &str)> = vec![
            (
                "a body over the cap, read by the handler",
                request("POST", "/echo")
                    .body(Body::from(big.clone()))
                    .unwrap(),
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
            ),
            (
                "a body over the cap, declared",
                request("POST", "/echo")
                    .header(header::CONTENT_LENGTH, &declared_big)
                    .body(Body::from(big.clone()))
                    .unwrap(),
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
            ),
            (
                "a body over the cap on a route that reads none",
                request("GET", "/ping")
                    .header(header::CONTENT_LENGTH, &declared_big)
                    .body(Body::from(big.clone()))
                    .unwrap(),
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
            ),
            (
                "a body over the cap on no route",
                request("PUT", "/nowhere")
                    .header(header::CONTENT_LENGTH, &declared_big)
                    .body(Body::from(big))
                    .unwrap(),
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
            ),
            (
                "an unknown route",
                request("GET", "/nowhere").body(Body::empty()).unwrap(),
                StatusCode::NOT_FOUND,
                "not_found",
            ),
            (
                "a method the route does not take",
                request("DELETE", "/echo").body(Body::empty()).unwrap(),
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
            ),
            (
                "a path parameter that does not parse",
                request("GET", "/number/secret%3Dhunter2")
                    .body(Body::empty())
                    .unwrap(),
                StatusCode::BAD_REQUEST,
                "invalid_request",
            ),
            (
                "JSON without its content type",
                request("POST", "/json")
                    .body(Body::from("{\"a\": 1}"))
                    .unwrap(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request",
            ),
            (
                "a body that is not JSON",
                request("POST", "/json")
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from("{\"secret\": hunter2"))
                    .unwrap(),
                StatusCode::BAD_REQUEST,
                "invalid_request",
            ),
        ];
        for (what, request, status, code) in cases {
            let (answered, headers, bytes) = answer(request).await;
            let text = String::from_utf8_lossy(&bytes);
            assert_eq!(answered, status, "{what}: {text}");
            assert_eq!(
                headers[header::CONTENT_TYPE],
                "application/json",
                "{what}: {text}"
            );
            let body: Value = serde_json::from_slice(&bytes).expect("a JSON body");
            assert_eq!(body["error"], code, "{what}: {body}");
            assert!(
                body["message"].as_str().is_some_and(|m| m.ends_with('.')),
                "{what}: {body}"
            );
            assert!(
                !text.contains("hunter2"),
                "{what} quoted the request: {text}"
            );
            if status == StatusCode::METHOD_NOT_ALLOWED {
                assert!(headers.contains_key(header::ALLOW), "{what}");
            }
        }
        // Answers that are not errors pass unchanged.
        let (status, headers, bytes) =
            answer(request("GET", "/ping").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        assert_eq!(&bytes[..], b"pong");
    }

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let err = ApiError::internal(&"table adesync-prod-tokens: secret=hunter2");
        let text = err.body().to_string();
        assert!(!text.contains("hunter2"));
        assert!(!text.contains("adesync-prod-tokens"));
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
