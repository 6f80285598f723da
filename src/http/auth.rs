//! Bearer-token authentication, compared in constant time.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::header::AUTHORIZATION,
    middleware::Next,
    response::{IntoResponse, Response},
};
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};

pub async fn require_bearer(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    match presented {
        None => ApiError::Unauthorized(
            "missing bearer token: send `Authorization: Bearer <token>`".into(),
        )
        .into_response(),
        Some(token)
            if bool::from(
                token
                    .trim()
                    .as_bytes()
                    .ct_eq(s.api_token.expose_secret().as_bytes()),
            ) =>
        {
            next.run(req).await
        }
        Some(_) => ApiError::Unauthorized("invalid bearer token".into()).into_response(),
    }
}
