//! Sync status and run history of a token.

use std::sync::Arc;

use adesync_core::ids::TokenId;
use adesync_core::run;
use adesync_core::sync::{self, LARGE_TOKEN_DEVICES, SyncKind};
use adesync_runtime::http::TokenPath;
use adesync_runtime::routes::Routes;
use adesync_runtime::{ApiError, Caller};
use adesync_service::start::LARGE_TOKEN_WARNING;
use adesync_service::status::{self, RunRecord, SyncStatus, SyncView};
use axum::Json;
use axum::extract::{Query, State};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Api;

pub fn routes() -> Routes<Arc<Api>> {
    Routes::new()
        .get("/v1/tokens/{token_id}/sync", sync_status)
        .get("/v1/tokens/{token_id}/runs", runs)
}

/// Reads the token's sync view, answering 404 for anything the caller's
/// account does not own or its scope tags do not show it
/// (`docs/product.md` "Scope tags").
pub(crate) async fn owned_token(
    api: &Api,
    caller: &Caller,
    token: &TokenId,
) -> Result<SyncView, ApiError> {
    caller.require_read()?;
    match status::sync_view(
        &api.adapters.store.claims,
        &caller.account,
        &caller.scope,
        token,
    )
    .await
    {
        Ok(Some(view)) => Ok(view),
        Ok(None) => Err(ApiError::not_found("token")),
        Err(e) => Err(e.into()),
    }
}

fn at(time: Option<DateTime<Utc>>) -> Value {
    time.map_or(Value::Null, |t| json!(t.to_rfc3339()))
}

fn run_json(run: &RunRecord, lease_expires_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Value {
    let estimate = run::estimate(&run.progress(), now);
    json!({
        // `id` as every resource; `run_id` kept for earlier clients (deprecated).
        "id": run.run_id,
        "run_id": run.run_id,
        "kind": run.kind,
        "trigger": run.trigger,
        "recovery": run.recovery,
        "status": run.status,
        "started_at": run.started_at.to_rfc3339(),
        "fetch_finished_at": at(run.fetch_finished_at),
        "finished_at": at(run.finished_at),
        "pages": run.pages,
        "expected_devices": run.expected,
        "fetched": estimate.fetched,
        "imported": run.imported,
        "estimated_seconds_left": estimate.seconds_left,
        "devices_per_minute": estimate.devices_per_minute,
        "lease_expires_at": at(lease_expires_at.filter(|_| !run.is_over())),
        "error": run.error,
        "warning": run.warning,
    })
}

async fn sync_status(
    State(api): State<Arc<Api>>,
    caller: Caller,
    TokenPath(token): TokenPath,
) -> Result<Json<Value>, ApiError> {
    caller.require_read()?;
    let now = api.clock.now();
    let SyncStatus { view, run } = status::sync_status(
        &api.adapters.store,
        &caller.account,
        &caller.scope,
        &token,
        now,
    )
    .await?
    .ok_or_else(|| ApiError::not_found("token"))?;
    let state = &view.state;
    let lease_expires_at = state.lease.as_ref().map(|lease| lease.expires_at);
    let mut warnings = Vec::new();
    if state.device_count > LARGE_TOKEN_DEVICES {
        warnings.push(LARGE_TOKEN_WARNING.to_owned());
    }
    if let Some(warning) = run.as_ref().and_then(|r| r.warning.clone()) {
        warnings.push(warning);
    }
    let running = run.as_ref().is_some_and(|r| !r.is_over());
    // A running full sync is owed until it completes: "next is full" would
    // only say that this one has not finished.
    let next_is_full = state.next_sync_is_full
        && !(running && run.as_ref().is_some_and(|r| r.kind == SyncKind::Full));
    Ok(Json(json!({
        "state": if running { "running" } else { "idle" },
        "run": run.as_ref().map(|r| run_json(r, lease_expires_at, now)),
        "device_count": state.device_count,
        "last_full_sync_at": at(state.last_full_at),
        "last_delta_sync_at": at(view.last_delta_at),
        "last_manual_sync_at": at(state.last_manual_at),
        "last_finished_at": at(view.last_finished_at),
        "last_outcome": view.last_outcome,
        "last_error": view.last_error,
        "next_manual_sync_at": at(sync::next_manual_sync_at(state, now)),
        "next_full_sync_at": at(sync::next_full_sync_at(state, now).filter(|_| !next_is_full)),
        "next_sync_is_full": next_is_full,
        "next_sync_kind": if next_is_full { SyncKind::Full } else { SyncKind::Delta },
        "warnings": warnings,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunsQuery {
    limit: Option<u32>,
}

async fn runs(
    State(api): State<Arc<Api>>,
    caller: Caller,
    TokenPath(token): TokenPath,
    query: Result<Query<RunsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_read()?;
    let Query(query) = query.map_err(|_| {
        ApiError::bad_request(
            "invalid_request",
            "The only query parameter is limit (1 to 100).",
        )
    })?;
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "limit must be between 1 and 100.",
        ));
    }
    let now = api.clock.now();
    let (view, runs) = status::recent_runs(
        &api.adapters.store,
        &caller.account,
        &caller.scope,
        &token,
        limit,
        now,
    )
    .await?
    .ok_or_else(|| ApiError::not_found("token"))?;
    let lease = view.state.lease.as_ref();
    Ok(Json(json!({
        "runs": runs
            .iter()
            .map(|r| {
                let held = lease.filter(|l| l.run_id == r.run_id).map(|l| l.expires_at);
                run_json(r, held, now)
            })
            .collect::<Vec<_>>(),
    })))
}
