//! The table of every route the service serves, for the end-to-end checks
//! that must cover all of them (`tests/tests/security.rs`: accounts, roles,
//! 401, 413; `tests/tests/scopes.rs`: scope tags). Add a row when a route
//! is added, and every check covers it.

use reqwest::Method;
use serde_json::{Value, json};

use crate::{Reply, TestService};

/// Whether a route acts on the caller's account or on one of its tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Always the caller's own account (there is no id to point elsewhere).
    Account,
    /// A token named in the path (`{token}`).
    Token,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub method: Method,
    /// `{token}` stands for a token id.
    pub path: &'static str,
    /// Needs `admin` or `dem`.
    pub write: bool,
    pub scope: Scope,
    /// A well-formed body, so a refusal is about the caller, not the body.
    pub body: Option<Value>,
    /// The token's owner gets a 2xx for this exact request (so the other
    /// account's 404 proves hiding, not absence).
    pub owner_succeeds: bool,
}

pub fn route(method: Method, path: &'static str, write: bool, scope: Scope) -> Route {
    Route {
        method,
        path,
        write,
        scope,
        body: None,
        owner_succeeds: !write,
    }
}

/// Every route of the contract (`docs/openapi.yaml`) the service serves today.
pub fn routes() -> Vec<Route> {
    let token_file = json!({"apple_id": "admin@acme.test", "token_file": "AAAA"});
    vec![
        route(Method::GET, "/v1/public-key", false, Scope::Account),
        route(Method::GET, "/v1/tokens", false, Scope::Account),
        Route {
            body: Some(json!({"name": "New", "apple_id": "admin@acme.test", "token_file": "AAAA"})),
            ..route(Method::POST, "/v1/tokens", true, Scope::Account)
        },
        route(Method::GET, "/v1/tokens/{token}", false, Scope::Token),
        Route {
            body: Some(token_file),
            ..route(
                Method::PUT,
                "/v1/tokens/{token}/renewal",
                true,
                Scope::Token,
            )
        },
        // Scope tags: admin only, so a dem is refused like a reader.
        Route {
            body: Some(json!({"scope_tags": []})),
            owner_succeeds: true,
            ..route(Method::PATCH, "/v1/tokens/{token}", true, Scope::Token)
        },
        route(Method::DELETE, "/v1/tokens/{token}", true, Scope::Token),
        Route {
            body: Some(json!({"kind": "delta"})),
            ..route(Method::POST, "/v1/tokens/{token}/sync", true, Scope::Token)
        },
        route(Method::GET, "/v1/tokens/{token}/sync", false, Scope::Token),
        route(Method::GET, "/v1/tokens/{token}/runs", false, Scope::Token),
        route(
            Method::GET,
            "/v1/tokens/{token}/devices",
            false,
            Scope::Token,
        ),
        Route {
            owner_succeeds: false,
            ..route(
                Method::GET,
                "/v1/tokens/{token}/devices/C02TEST00001",
                false,
                Scope::Token,
            )
        },
        route(
            Method::DELETE,
            "/v1/tokens/{token}/devices/C02TEST00001",
            true,
            Scope::Token,
        ),
        // Enrollment policies.
        Route {
            body: Some(json!({"name": "Sales", "url": "https://mdm.acme.test/enroll"})),
            ..route(
                Method::POST,
                "/v1/tokens/{token}/policies",
                true,
                Scope::Token,
            )
        },
        route(
            Method::GET,
            "/v1/tokens/{token}/policies",
            false,
            Scope::Token,
        ),
        Route {
            owner_succeeds: false,
            ..route(
                Method::GET,
                "/v1/tokens/{token}/policies/P0000",
                false,
                Scope::Token,
            )
        },
        Route {
            body: Some(json!({"name": "Renamed"})),
            ..route(
                Method::PATCH,
                "/v1/tokens/{token}/policies/P0000",
                true,
                Scope::Token,
            )
        },
        route(
            Method::DELETE,
            "/v1/tokens/{token}/policies/P0000",
            true,
            Scope::Token,
        ),
        Route {
            body: Some(json!({"serials": ["C02TEST00001"]})),
            ..route(
                Method::POST,
                "/v1/tokens/{token}/policies/P0000/devices",
                true,
                Scope::Token,
            )
        },
        Route {
            body: Some(json!({"policy_id": "P0000"})),
            ..route(
                Method::PUT,
                "/v1/tokens/{token}/default-policy",
                true,
                Scope::Token,
            )
        },
        // Re-enroll actions and device users.
        route(
            Method::POST,
            "/v1/tokens/{token}/devices/C02TEST00001/actions/wipe",
            true,
            Scope::Token,
        ),
        Route {
            body: Some(json!({"user_id": "ada@acme.test"})),
            ..route(
                Method::PUT,
                "/v1/tokens/{token}/devices/C02TEST00001/user",
                true,
                Scope::Token,
            )
        },
        // Licenses and enrollments (the caller's account).
        Route {
            body: Some(json!({"licensed": true})),
            ..route(
                Method::PUT,
                "/v1/licenses/users/ada@acme.test",
                true,
                Scope::Account,
            )
        },
        Route {
            body: Some(json!({"licensed": true})),
            ..route(
                Method::PUT,
                "/v1/licenses/devices/C02TEST00001",
                true,
                Scope::Account,
            )
        },
        Route {
            body: Some(json!({"serial": "C02TEST00001"})),
            ..route(Method::POST, "/v1/enrollments", true, Scope::Account)
        },
        // A download issues a SCEP challenge, so it needs admin or dem.
        route(
            Method::GET,
            "/v1/enrollments/01ARZ3NDEKTSV4RRFFQ69G5FAV/profile",
            true,
            Scope::Account,
        ),
    ]
}

impl Route {
    pub fn path_for(&self, token: &str) -> String {
        self.path.replace("{token}", token)
    }

    pub fn label(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

pub async fn send(env: &TestService, route: &Route, path: &str, auth: Option<&str>) -> Reply {
    let mut request = env.http.request(route.method.clone(), env.api(path));
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    if let Some(body) = &route.body {
        request = request.json(body);
    }
    Reply::from(request.send().await.expect("the API answers")).await
}
