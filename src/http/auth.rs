//! Bearer-token authentication and scopes: the token is found among the configured ones
//! (compared in constant time, `crate::tokens::verify`), and its scope must cover the route —
//! reading (`GET`) needs `read`, anything that acts needs `operate`. The caller's name rides on
//! the request for the handlers to record as who asked.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{header::AUTHORIZATION, Method},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{ApiError, AppState};
use crate::tokens::{verify, Scope};

/// Who is calling: the token's name and scope (never the token).
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub scope: Scope,
}

impl Caller {
    /// How commands and results name this caller (`requested_by`).
    pub fn requested_by(&self) -> String {
        format!("http:{}", self.name)
    }
}

/// The scope a request needs: reading is `read`; every other method acts.
fn needed(method: &Method) -> Scope {
    if method == Method::GET || method == Method::HEAD {
        Scope::Read
    } else {
        Scope::Operate
    }
}

pub async fn require_bearer(
    State(s): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    let Some(presented) = presented else {
        return ApiError::Unauthorized(
            "missing bearer token: send `Authorization: Bearer <token>`".into(),
        )
        .into_response();
    };
    let Some(token) = verify(&s.tokens, presented.trim()) else {
        return ApiError::Unauthorized("invalid bearer token".into()).into_response();
    };
    let need = needed(req.method());
    if token.scope < need {
        return ApiError::Forbidden(format!(
            "token `{}` has scope `{}`; {} {} needs `{}`",
            token.name,
            token.scope.as_str(),
            req.method(),
            req.uri().path(),
            need.as_str()
        ))
        .into_response();
    }
    req.extensions_mut().insert(Caller {
        name: token.name.clone(),
        scope: token.scope,
    });
    next.run(req).await
}
