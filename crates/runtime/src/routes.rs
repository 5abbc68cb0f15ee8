//! A router that knows its routes.
//!
//! The API reference (docs/openapi.yaml) is checked against the routes the
//! functions really serve. axum cannot list a router's routes, so each
//! route is added through [`Routes`], which registers it with axum and
//! records its method and path in the same call: the list is what the
//! router serves, by construction.

use axum::Router;
use axum::handler::Handler;
use axum::routing::{self, MethodRouter};
use http::Method;

/// One route: its method and its path template (`/v1/tokens/{token_id}`,
/// the syntax axum and OpenAPI share).
pub type Route = (Method, &'static str);

/// An axum router plus the list of its routes.
pub struct Routes<S = ()> {
    router: Router<S>,
    list: Vec<Route>,
}

impl<S> Default for Routes<S>
where
    S: Clone + Send + Sync + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Routes<S>
where
    S: Clone + Send + Sync + 'static,
{
    pub fn new() -> Self {
        Self {
            router: Router::new(),
            list: Vec::new(),
        }
    }

    fn add(mut self, method: Method, path: &'static str, route: MethodRouter<S>) -> Self {
        // axum merges method routers of the same path, so one path may be
        // added once per method.
        self.router = self.router.route(path, route);
        self.list.push((method, path));
        self
    }

    /// Serves `GET path` with `handler`.
    pub fn get<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.add(Method::GET, path, routing::get(handler))
    }

    /// Serves `POST path` with `handler`.
    pub fn post<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.add(Method::POST, path, routing::post(handler))
    }

    /// Serves `PUT path` with `handler`.
    pub fn put<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.add(Method::PUT, path, routing::put(handler))
    }

    /// Serves `PATCH path` with `handler`.
    pub fn patch<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.add(Method::PATCH, path, routing::patch(handler))
    }

    /// Serves `DELETE path` with `handler`.
    pub fn delete<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.add(Method::DELETE, path, routing::delete(handler))
    }

    /// Adds every route of `other`.
    pub fn merge(mut self, other: Routes<S>) -> Self {
        self.router = self.router.merge(other.router);
        self.list.extend(other.list);
        self
    }

    /// The routes, in the order they were added.
    pub fn list(&self) -> &[Route] {
        &self.list
    }

    /// The axum router serving them.
    pub fn into_router(self) -> Router<S> {
        self.router
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn the_list_is_what_the_router_serves() {
        let routes: Routes = Routes::new()
            .get("/v1/things", || async { "list" })
            .post("/v1/things", || async { "create" })
            .merge(Routes::new().delete("/v1/things/{id}", || async { "gone" }));
        assert_eq!(
            routes.list(),
            [
                (Method::GET, "/v1/things"),
                (Method::POST, "/v1/things"),
                (Method::DELETE, "/v1/things/{id}"),
            ]
        );
        let router = routes.into_router();
        for (method, uri, expected) in [
            (Method::GET, "/v1/things", "list"),
            (Method::POST, "/v1/things", "create"),
            (Method::DELETE, "/v1/things/7", "gone"),
        ] {
            let response = router
                .clone()
                .oneshot(
                    http::Request::builder()
                        .method(method)
                        .uri(uri)
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            let body = axum::body::to_bytes(response.into_body(), 64)
                .await
                .unwrap();
            assert_eq!(body, expected);
        }
    }
}
