//! The mail-server form (new and edit) and the JSON its script calls.

use std::sync::Arc;

use axum::Router;

use super::Admin;

pub fn routes() -> Router<Arc<Admin>> {
    Router::new()
}
