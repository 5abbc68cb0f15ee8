//! The API function: every route of the HTTP contract except the manual
//! sync trigger (its own function, so its concurrency and permissions stay
//! narrow).
//!
//! # Layout
//! - [`accounts`]: the account's public key certificate.
//! - [`tokens`]: create, list, show, renew and delete tokens.
//! - [`status`]: sync status and run history.
//! - [`devices`]: device listing, details and deletion.
//! - [`policies`]: enrollment policies, the default policy, assigning devices.
//! - [`enrollments`]: re-enroll actions, device users, licenses, enrollments.
//!
//! Each module parses its requests, calls one operation of
//! `adesync-service` and maps the result; statuses are chosen there.

pub mod accounts;
pub mod devices;
pub mod enrollments;
pub mod policies;
pub mod status;
pub mod tokens;

use std::sync::Arc;

use adesync_core::clock::SharedClock;
use adesync_runtime::Config;
use adesync_runtime::aws::Clients;
use adesync_runtime::routes::{Route, Routes};
use adesync_service::Adapters;
use axum::{Json, Router};
use serde_json::{Value, json};

/// What the handlers need, built once per process.
pub struct Api {
    pub adapters: Adapters,
    pub clock: SharedClock,
}

impl Api {
    pub fn new(
        config: &Config,
        clients: &Clients,
        clock: SharedClock,
    ) -> Result<Arc<Self>, adesync_apple::AppleError> {
        Ok(Arc::new(Self {
            adapters: clients.adapters(config, clock.clone(), Default::default())?,
            clock,
        }))
    }
}

/// The routes of this function built with [`Routes`], which lists them:
/// docs/openapi.yaml is checked against [`route_list`].
fn listed_routes() -> Routes<Arc<Api>> {
    Routes::new()
        .get("/v1/health", health)
        .merge(accounts::routes())
        .merge(tokens::routes())
        .merge(status::routes())
        .merge(devices::routes())
        .merge(policies::routes())
        .merge(enrollments::routes())
}

/// Every listed route this function serves (method, path template).
pub fn route_list() -> Vec<Route> {
    listed_routes().list().to_vec()
}

/// The routes this function serves.
pub fn routes(state: Arc<Api>) -> Router {
    listed_routes().into_router().with_state(state)
}

/// Unauthenticated liveness check (API Gateway route with `Authorizer: NONE`).
async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}
