//! (routes to come)

use std::sync::Arc;

use axum::Router;

use crate::Api;

pub fn routes() -> Router<Arc<Api>> {
    Router::new()
}
