//! What a token's sync looks like now, and its run history.
//!
//! Reading the status is also one of the moments a stuck run is noticed:
//! a lease that lapsed (no progress for 15 minutes) is settled here —
//! recorded `abandoned`, the token released — before the status is shown,
//! so nobody reads "running" about a run that is over.

use adesync_core::ids::{AccountId, RunId, TokenId};
use adesync_core::scope::{self, Scope};
use adesync_core::sync;
pub use adesync_store::claims::SyncView;
pub use adesync_store::runs::RunRecord;
use adesync_store::{Claims, Store, StoreError};
use chrono::{DateTime, Utc};

/// A token's sync status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncStatus {
    pub view: SyncView,
    /// The run holding the token (or still importing), if any.
    pub run: Option<RunRecord>,
}

/// The sync status of `token` at `now` (None: the account has no such
/// token the caller's `scope` sees), settling a run whose lease lapsed first.
pub async fn sync_status(
    store: &Store,
    account: &AccountId,
    scope: &Scope,
    token: &TokenId,
    now: DateTime<Utc>,
) -> Result<Option<SyncStatus>, StoreError> {
    let Some(view) = settled_view(store, account, scope, token, now).await? else {
        return Ok(None);
    };
    let run = match view.current_run(now) {
        Some(run_id) => store.runs.get_run(token, run_id).await?,
        None => None,
    };
    Ok(Some(SyncStatus { view, run }))
}

/// The newest `limit` runs of `token` (None: the account has no such
/// token the caller's `scope` sees), a lapsed one recorded abandoned first.
pub async fn recent_runs(
    store: &Store,
    account: &AccountId,
    scope: &Scope,
    token: &TokenId,
    limit: u32,
    now: DateTime<Utc>,
) -> Result<Option<(SyncView, Vec<RunRecord>)>, StoreError> {
    let Some(view) = settled_view(store, account, scope, token, now).await? else {
        return Ok(None);
    };
    let runs = store.runs.recent_runs(token, limit).await?;
    Ok(Some((view, runs)))
}

/// The sync view of `token` as it is stored (None: the account has no such
/// token, or the caller's `scope` does not see it: answered alike, so a
/// scoped caller learns nothing of tokens outside its scope) — what every
/// token-scoped request checks first.
pub async fn sync_view(
    store: &Claims,
    account: &AccountId,
    scope: &Scope,
    token: &TokenId,
) -> Result<Option<SyncView>, StoreError> {
    Ok(store
        .sync_view(account, token)
        .await?
        .filter(|view| scope::visible(&view.scope_tags, scope)))
}

/// The token's sync view after settling a run whose lease lapsed.
async fn settled_view(
    store: &Store,
    account: &AccountId,
    scope: &Scope,
    token: &TokenId,
    now: DateTime<Utc>,
) -> Result<Option<SyncView>, StoreError> {
    let Some(view) = sync_view(&store.claims, account, scope, token).await? else {
        return Ok(None);
    };
    let Some(lapsed) = sync::lapsed_lease(&view.state, now).map(|l| l.run_id.clone()) else {
        return Ok(Some(view));
    };
    settle_lapsed(store, account, token, &lapsed, now).await?;
    sync_view(&store.claims, account, scope, token).await
}

/// Records `run` abandoned if its lease lapsed and nobody did yet, and
/// owes its `sync.finished` (see [`crate::announce::owe_abandoned`]).
pub async fn settle_lapsed(
    store: &Store,
    account: &AccountId,
    token: &TokenId,
    run: &RunId,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let settled = store
        .claims
        .settle_lapsed_run(account, token, run, now)
        .await?;
    if settled {
        crate::announce::owe_abandoned(&store.runs, account, token, run, now).await;
    }
    Ok(settled)
}
