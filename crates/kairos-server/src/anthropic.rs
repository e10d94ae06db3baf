//! `POST /v1/messages` (in progress).
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use http::{HeaderMap, Response};
use kairos_core::error::{ClientError, GatewayError};

use crate::http::{Shape, error_response};
use crate::routes::AppState;

pub async fn messages(State(_st): State<Arc<AppState>>, _headers: HeaderMap, _body: Body) -> Response<Body> {
    error_response(&GatewayError::Client(ClientError::NotFound), Shape::Anthropic, None)
}
