//! Plain HTTPS routes on the controller's listener (for curl and browsers).

use std::sync::Arc;

use axum::routing::get;
use axum::Router;

use crate::Shared;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let ca = shared.ca.cert_pem().to_string();
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/ca.pem", get(move || async move { ca }))
}
