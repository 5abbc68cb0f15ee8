//! Sync status and run history of a token.

use std::sync::Arc;

use adesync_core::ids::TokenId;
use adesync_core::sync::{self, LARGE_TOKEN_DEVICES, SyncKind};
use adesync_runtime::http::TokenPath;
use adesync_runtime::routes::Routes;
use adesync_runtime::{ApiError, Caller};
use adesync_service::start::LARGE_TOKEN_WARNING;
use adesync_store::claims::SyncView;
use adesync_store::runs::RunRecord;
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
/// account does not own.
pub(crate) async fn owned_token(
    api: &Api,
    caller: &Caller,
    token: &TokenId,
) -> Result<SyncView, ApiError> {
    caller.require_read()?;
    match api.store.sync_view(&caller.account, token).await {
        Ok(Some(view)) => Ok(view),
        Ok(None) => Err(ApiError::not_found("token")),
        Err(e) if e.is_transient() => Err(ApiError::unavailable(&e)),
        Err(e) => Err(ApiError::internal(&e)),
    }
}

fn at(time: Option<DateTime<Utc>>) -> Value {
    time.map_or(Value::Null, |t| json!(t.to_rfc3339()))
}

fn run_json(run: &RunRecord, now: DateTime<Utc>, device_count: u64) -> Value {
    let elapsed = u64::try_from((now - run.started_at).num_seconds()).unwrap_or(0);
    // A full sync brings every device; until the fetch ends the token's
    // known count is the best guess of the total.
    let total = match (run.kind.as_str(), run.fetch_finished_at) {
        (_, Some(_)) => run.fetched,
        ("full", None) => run.fetched.max(device_count),
        _ => run.fetched,
    };
    let left = if run.is_over() {
        0
    } else {
        sync::eta_seconds(total, run.imported, elapsed)
    };
    json!({
        "run_id": run.run_id,
        "kind": run.kind,
        "trigger": run.trigger,
        "recovery": run.recovery,
        "status": run.status,
        "started_at": run.started_at.to_rfc3339(),
        "fetch_finished_at": at(run.fetch_finished_at),
        "finished_at": at(run.finished_at),
        "pages": run.pages,
        "fetched": run.fetched,
        "imported": run.imported,
        "estimated_seconds_left": left,
        "error": run.error,
        "warning": run.warning,
    })
}

fn store_error(e: adesync_store::StoreError) -> ApiError {
    if e.is_transient() {
        ApiError::unavailable(&e)
    } else {
        ApiError::internal(&e)
    }
}

async fn sync_status(
    State(api): State<Arc<Api>>,
    caller: Caller,
    TokenPath(token): TokenPath,
) -> Result<Json<Value>, ApiError> {
    let view = owned_token(&api, &caller, &token).await?;
    let now = api.clock.now();
    let run = match view.current_run(now) {
        Some(run_id) => api
            .store
            .get_run(&token, run_id)
            .await
            .map_err(store_error)?,
        None => None,
    };
    let state = &view.state;
    let mut warnings = Vec::new();
    if state.device_count > LARGE_TOKEN_DEVICES {
        warnings.push(LARGE_TOKEN_WARNING.to_owned());
    }
    if let Some(warning) = run.as_ref().and_then(|r| r.warning.clone()) {
        warnings.push(warning);
    }
    Ok(Json(json!({
        "state": if run.as_ref().is_some_and(|r| !r.is_over()) { "running" } else { "idle" },
        "run": run.as_ref().map(|r| run_json(r, now, state.device_count)),
        "device_count": state.device_count,
        "last_full_sync_at": at(state.last_full_at),
        "last_delta_sync_at": at(view.last_delta_at),
        "last_manual_sync_at": at(state.last_manual_at),
        "last_finished_at": at(view.last_finished_at),
        "last_outcome": view.last_outcome,
        "last_error": view.last_error,
        "next_manual_sync_at": at(sync::next_manual_sync_at(state, now)),
        "next_full_sync_at": at(sync::next_full_sync_at(state, now)),
        "next_sync_is_full": state.next_sync_is_full,
        "next_sync_kind": if state.next_sync_is_full { SyncKind::Full } else { SyncKind::Delta },
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
    let view = owned_token(&api, &caller, &token).await?;
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
    let runs = api
        .store
        .recent_runs(&token, limit)
        .await
        .map_err(store_error)?;
    Ok(Json(json!({
        "runs": runs.iter().map(|r| run_json(r, now, view.state.device_count)).collect::<Vec<_>>(),
    })))
}
