//! The API function: every route of api.md except the manual sync trigger
//! (its own function, so its concurrency and permissions stay narrow).

use std::sync::Arc;

use adesync_core::clock::SharedClock;
use adesync_runtime::Config;
use adesync_runtime::aws::Clients;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

/// What the handlers need, built once per process.
#[derive(Clone)]
pub struct Api {}

impl Api {
    pub fn new(_config: &Config, _clients: &Clients, _clock: SharedClock) -> Arc<Self> {
        Arc::new(Self {})
    }
}

/// The routes this function serves.
pub fn routes(state: Arc<Api>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .with_state(state)
}

/// Unauthenticated liveness check (API Gateway route with `Authorizer: NONE`).
async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}
