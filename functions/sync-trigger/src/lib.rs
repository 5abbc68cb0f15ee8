//! The sync-trigger function: an administrator's "Sync" request.
//!
//! Parse the request, start the run through [`adesync_service::start`],
//! and map the outcome to the HTTP contract (202, 429 with `Retry-After`,
//! 409). The rules themselves live in `adesync-core`; their enforcement in
//! the service's conditional write on the token item.

use std::sync::Arc;

use adesync_core::clock::SharedClock;
use adesync_core::sync::{Refusal, SyncKind, SyncRequest, Trigger};
use adesync_runtime::aws::Clients;
use adesync_runtime::http::TokenPath;
use adesync_runtime::routes::{Route, Routes};
use adesync_runtime::{ApiError, Caller, Config};
use adesync_service::start::{StartError, Started, Starter};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

/// What the handler needs, built once per process.
#[derive(Clone)]
pub struct SyncTrigger {
    starter: Starter,
    clock: SharedClock,
}

impl SyncTrigger {
    pub fn new(config: &Config, clients: &Clients, clock: SharedClock) -> Arc<Self> {
        Arc::new(Self {
            starter: Starter {
                store: clients.store(config),
                queues: clients.queues(config),
            },
            clock,
        })
    }
}

/// The routes of this function, listed: docs/openapi.yaml is checked
/// against [`route_list`].
fn listed_routes() -> Routes<Arc<SyncTrigger>> {
    Routes::new().post("/v1/tokens/{token_id}/sync", trigger)
}

/// Every route this function serves (method, path template).
pub fn route_list() -> Vec<Route> {
    listed_routes().list().to_vec()
}

/// The routes this function serves.
pub fn routes(state: Arc<SyncTrigger>) -> Router {
    listed_routes().into_router().with_state(state)
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SyncBody {
    #[serde(default)]
    kind: Option<SyncKind>,
}

#[tracing::instrument(skip(state, caller, body), fields(account = %caller.account))]
async fn trigger(
    State(state): State<Arc<SyncTrigger>>,
    caller: Caller,
    TokenPath(token): TokenPath,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require_write()?;
    let body: SyncBody = if body.iter().all(u8::is_ascii_whitespace) {
        SyncBody::default()
    } else {
        adesync_runtime::http::parse_object(&body).map_err(|problem| {
            ApiError::bad_request(
                "invalid_request",
                format!(
                    "The request body must be {{\"kind\": \"delta\"}} or {{\"kind\": \"full\"}} ({problem})."
                ),
            )
        })?
    };
    let request = SyncRequest {
        trigger: Trigger::Manual,
        kind: body.kind.unwrap_or(SyncKind::Delta),
    };
    let now = state.clock.now();
    // The scope is checked in the claim itself: this function's role may
    // only update the token item, not read it.
    match state
        .starter
        .start_in_scope(&caller.account, &caller.scope, &token, request, now)
        .await
    {
        Ok(started) => Ok((StatusCode::ACCEPTED, Json(accepted(&started)))),
        // Retry-After counts from the answer, not the request: the claim
        // that won meanwhile may be stamped after this request's `now`, and
        // the wait must not read longer than the cooldown itself.
        Err(error) => Err(refused(error, state.clock.now())),
    }
}

fn accepted(started: &Started) -> Value {
    json!({
        // `id` as every resource; `run_id` kept for earlier clients (deprecated).
        "id": started.claim.run_id,
        "run_id": started.claim.run_id,
        "kind": started.claim.kind,
        "estimated_seconds": started.estimated_seconds,
        "lease_expires_at": started.claim.lease_expires_at,
        "warnings": started.warnings,
    })
}

/// The HTTP answer of each reason a sync did not start.
fn refused(error: StartError, now: chrono::DateTime<chrono::Utc>) -> ApiError {
    match error {
        StartError::Refused { refusal, running } => {
            let retry_after = refusal.retry_after_seconds(now);
            let message = adesync_runtime::http::sentence(&refusal.to_string());
            match &refusal {
                Refusal::ManualCooldown { retry_at } | Refusal::FullCooldown { retry_at } => {
                    ApiError::new(StatusCode::TOO_MANY_REQUESTS, refusal.code(), message)
                        .with("retry_at", retry_at.to_rfc3339())
                        .retry_after(retry_after)
                }
                Refusal::SyncInProgress {
                    run_id,
                    lease_expires_at,
                } => {
                    // The lease moves with the run's progress: the run's own
                    // estimate says when to come back, when it has one.
                    let left = running.and_then(|estimate| estimate.seconds_left);
                    let mut conflict = ApiError::conflict(refusal.code(), message)
                        .with("run_id", run_id.as_str())
                        .with("lease_expires_at", lease_expires_at.to_rfc3339())
                        .with("estimated_seconds_left", left)
                        .retry_after(left.unwrap_or(retry_after).max(1));
                    if let Some(estimate) = running {
                        conflict = conflict
                            .with("fetched", estimate.fetched)
                            .with("devices_per_minute", estimate.devices_per_minute);
                    }
                    conflict
                }
                Refusal::LargeImportRunning {
                    run_id,
                    estimated_seconds,
                    ..
                } => ApiError::conflict(refusal.code(), message)
                    .with("run_id", run_id.as_str())
                    .with("estimated_seconds", *estimated_seconds)
                    .retry_after(retry_after),
            }
        }
        StartError::TokenNotFound => ApiError::not_found("token"),
        StartError::Store(e) => e.into(),
        StartError::Queue(e) => ApiError::unavailable(&e),
    }
}
