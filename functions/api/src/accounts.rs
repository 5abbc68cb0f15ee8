//! The account's public key certificate, to upload to Apple Business.
//!
//! `GET /v1/public-key` always answers with the CALLER's account's
//! certificate (made on first call), so it is never another account's
//! object: any role may download it.

use std::sync::Arc;

use adesync_runtime::routes::Routes;
use adesync_runtime::{ApiError, Caller};
use adesync_secrets::VaultError;
use adesync_service::accounts::{self, AccountKeyError};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::Api;

pub fn routes() -> Routes<Arc<Api>> {
    Routes::new().get("/v1/public-key", public_key)
}

#[tracing::instrument(skip_all, fields(account = %caller.account))]
async fn public_key(State(api): State<Arc<Api>>, caller: Caller) -> Result<Response, ApiError> {
    caller.require_read()?;
    let certificate = accounts::public_key(
        &api.adapters.store.accounts,
        &api.adapters.vault,
        &caller.account,
        api.clock.now(),
    )
    .await
    .map_err(|e| account_key_error(&e))?;
    let filename = format!("attachment; filename=\"adesync-{}.pem\"", caller.account);
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-pem-file".to_owned()),
            (header::CONTENT_DISPOSITION, filename),
        ],
        certificate.pem,
    )
        .into_response())
}

/// A failure of KMS that waiting may cure (throttling, no connection).
pub(crate) fn vault_is_transient(error: &VaultError) -> bool {
    matches!(error, VaultError::Kms { code, .. } if matches!(
        code.as_str(),
        "ThrottlingException"
            | "KMSInternalException"
            | "DependencyTimeoutException"
            | "DispatchFailure"
            | "Timeout"
    ))
}

pub(crate) fn vault_error(error: &VaultError) -> ApiError {
    if vault_is_transient(error) {
        ApiError::unavailable(error)
    } else {
        ApiError::internal(error)
    }
}

pub(crate) fn account_key_error(error: &AccountKeyError) -> ApiError {
    match error {
        AccountKeyError::Store(e) => ApiError::store(e),
        AccountKeyError::Vault(e) => vault_error(e),
        other => ApiError::internal(other),
    }
}
