//! The admin console: plain HTML, CSS and JavaScript modules from `console/`
//! at the checkout's root, compiled into this function and answered by the
//! stage's HTTP API under `/console` (docs/architecture.md, "The console").
//!
//! The page calls the API on its own origin, so it needs no CORS, no bucket
//! and no second URL. Nothing it loads comes from another host: the OpenID
//! Connect client (oidc-client-ts) is vendored in `console/vendor/`.
//!
//! `GET /console/config.json` tells the page how to sign in:
//! - deployed: `{"auth": "oidc", "issuer", "client_id", "scope"}` from the
//!   stack parameters (authorization code with PKCE, by oidc-client-ts);
//! - the local runner: `{"auth": "dev"}`, the runner's development token;
//! - deployed without a client id: `{"auth": "none"}`, and the page says
//!   which stack parameter to set.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde_json::{Value, json};

/// How the page signs its user in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleAuth {
    /// The local runner's development token (HS256, this run's secret).
    Dev,
    /// OpenID Connect authorization code with PKCE against `issuer`, the
    /// identity provider the stack's JWT authorizer trusts.
    Oidc {
        issuer: String,
        client_id: String,
        scope: String,
    },
    /// Deployed without `ConsoleClientId`: the page explains, signs no one in.
    Unconfigured,
}

/// The console's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleConfig {
    pub auth: ConsoleAuth,
}

/// The variables template.yaml sets from the stack parameters.
pub const ISSUER_VAR: &str = "ADESYNC_CONSOLE_OIDC_ISSUER";
pub const CLIENT_ID_VAR: &str = "ADESYNC_CONSOLE_OIDC_CLIENT_ID";
pub const SCOPE_VAR: &str = "ADESYNC_CONSOLE_OIDC_SCOPE";

impl ConsoleConfig {
    /// The local runner's console.
    pub fn dev() -> Self {
        Self {
            auth: ConsoleAuth::Dev,
        }
    }

    /// A deployed console, from [`ISSUER_VAR`], [`CLIENT_ID_VAR`] and
    /// [`SCOPE_VAR`] (default `openid`).
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let set = |name: &str| {
            var(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let auth = match (set(ISSUER_VAR), set(CLIENT_ID_VAR)) {
            (Some(issuer), Some(client_id)) => ConsoleAuth::Oidc {
                issuer,
                client_id,
                scope: set(SCOPE_VAR).unwrap_or_else(|| "openid".into()),
            },
            _ => ConsoleAuth::Unconfigured,
        };
        Self { auth }
    }

    fn json(&self) -> Value {
        match &self.auth {
            ConsoleAuth::Dev => json!({ "auth": "dev" }),
            ConsoleAuth::Oidc {
                issuer,
                client_id,
                scope,
            } => json!({
                "auth": "oidc",
                "issuer": issuer,
                "client_id": client_id,
                "scope": scope,
            }),
            ConsoleAuth::Unconfigured => json!({
                "auth": "none",
                "message": "The console's sign-in is not configured: deploy with the stack parameter ConsoleClientId (an OpenID Connect client of the JwtIssuer identity provider; docs/deploy.md).",
            }),
        }
    }

    /// The page's Content-Security-Policy: scripts, styles and images only
    /// from the console itself; API calls to its own origin, and with OpenID
    /// Connect to the identity provider (its discovery document and token
    /// endpoint, which may be on another https host than the issuer).
    fn content_security_policy(&self) -> &'static str {
        match self.auth {
            ConsoleAuth::Oidc { .. } => {
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' https:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
            }
            _ => {
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
            }
        }
    }
}

/// One file of the console.
struct File {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        File {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("../../../console/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the page loads; nothing else is answered.
const FILES: &[File] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("auth.js", JS),
    asset!("format.js", JS),
    asset!("pages.js", JS),
    asset!("vendor/oidc-client-ts.min.js", JS),
];

/// The console's routes: `/` and `/console/` lead to `/console`, the page;
/// its files are under `/console/`. No route needs a token: the files are
/// public, the data comes from the API with the signed-in user's token.
pub fn routes(config: ConsoleConfig) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console") }))
        .route("/console", get(index))
        .route("/console/", get(|| async { Redirect::to("/console") }))
        .route("/console/{*path}", get(asset))
        .with_state(config)
}

/// The names of the files the console answers (tests check each loads).
pub fn file_names() -> impl Iterator<Item = &'static str> {
    FILES.iter().map(|f| f.name)
}

async fn index(State(config): State<ConsoleConfig>) -> Response {
    serve("index.html", &config)
}

async fn asset(State(config): State<ConsoleConfig>, Path(path): Path<String>) -> Response {
    if path == "config.json" {
        let mut response = axum::Json(config.json()).into_response();
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return response;
    }
    serve(&path, &config)
}

fn serve(name: &str, config: &ConsoleConfig) -> Response {
    let Some(file) = FILES.iter().find(|f| f.name == name) else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({
                "error": "not_found",
                "message": "The console has no such file; open /console.",
            })),
        )
            .into_response();
    };
    let mut response = file.body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(file.content_type),
    );
    // The files change with each deployment and are small: the browser asks
    // again each time (API Gateway has no cache to purge).
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Ok(csp) = HeaderValue::from_str(config.content_security_policy()) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oidc_needs_both_issuer_and_client_id() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert_eq!(
            ConsoleConfig::from_vars(vars(&[(ISSUER_VAR, "https://idp.example")])).auth,
            ConsoleAuth::Unconfigured
        );
        assert_eq!(
            ConsoleConfig::from_vars(vars(&[
                (ISSUER_VAR, "https://idp.example"),
                (CLIENT_ID_VAR, " "),
            ]))
            .auth,
            ConsoleAuth::Unconfigured
        );
        assert_eq!(
            ConsoleConfig::from_vars(vars(&[
                (ISSUER_VAR, "https://idp.example"),
                (CLIENT_ID_VAR, "console"),
            ]))
            .auth,
            ConsoleAuth::Oidc {
                issuer: "https://idp.example".into(),
                client_id: "console".into(),
                scope: "openid".into(),
            }
        );
    }

    async fn get(path: &str) -> axum::response::Response {
        use tower::ServiceExt;
        let request = axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .expect("a request");
        routes(ConsoleConfig::dev())
            .oneshot(request)
            .await
            .expect("an answer")
    }

    #[tokio::test]
    async fn serves_each_file_with_its_type_and_policy() {
        for name in file_names() {
            let answer = get(&format!("/console/{name}")).await;
            assert_eq!(answer.status(), StatusCode::OK, "{name}");
            let headers = answer.headers();
            let kind = headers[header::CONTENT_TYPE].to_str().unwrap_or_default();
            assert!(
                kind.starts_with(if name.ends_with(".js") {
                    "text/javascript"
                } else if name.ends_with(".css") {
                    "text/css"
                } else {
                    "text/html"
                }),
                "{name}: {kind}"
            );
            let csp = headers[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap_or_default();
            assert!(csp.contains("script-src 'self'"), "{name}: {csp}");
            assert!(!csp.contains("https:"), "{name}: {csp}");
        }
        assert_eq!(get("/console").await.status(), StatusCode::OK);
        assert_eq!(get("/").await.status(), StatusCode::SEE_OTHER);
        assert_eq!(get("/console/").await.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            get("/console/../Cargo.toml").await.status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get("/console/nothing.js").await.status(),
            StatusCode::NOT_FOUND
        );
        let config = get("/console/config.json").await;
        assert_eq!(config.status(), StatusCode::OK);
    }

    #[test]
    fn every_script_the_page_names_is_served() {
        let index = std::str::from_utf8(FILES[0].body).expect("utf-8");
        for needle in ["/console/style.css", "/console/app.js"] {
            assert!(index.contains(needle), "index.html does not load {needle}");
        }
        for file in FILES.iter().filter(|f| f.name.ends_with(".js")) {
            let text = std::str::from_utf8(file.body).expect("utf-8");
            for import in text
                .split("from \"./")
                .skip(1)
                .filter_map(|rest| rest.split('"').next())
            {
                assert!(
                    FILES.iter().any(|f| f.name == import),
                    "{} imports ./{import}, which the console does not serve",
                    file.name
                );
            }
        }
    }
}
