//! `/matchbox/{room}`: the protocol of matchbox_server (to be built: see issue #12).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::app::App;

/// Accepts the upgrade once admission has passed.
pub async fn upgrade(State(_app): State<Arc<App>>) -> Response {
    StatusCode::NOT_IMPLEMENTED.into_response()
}
