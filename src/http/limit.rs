//! A bound on the API requests in flight, so the work held at once (above all actions, each
//! waiting on Kafka with its command and waiter) cannot grow with the number of clients: beyond
//! it a request is answered at once with 503, `Retry-After: 1` and
//! `{"error": "…"}` (shed, never queued: a queue in front of a full service only adds latency
//! and memory, and the caller knows best whether to retry).
//!
//! Reads (`GET`/`HEAD`) and actions (everything else) have separate bounds
//! (`--http-max-inflight-reads`, `--http-max-inflight-actions`): an action holds its slot while
//! it waits for its command's result (milliseconds to 20 s), so a burst of actions must not shed
//! the reads that take a fraction of a millisecond, nor the reverse.
//!
//! A slot is held while the request is handled — for an action, until its command's result is
//! in. Answers waiting on clients that are slow to read them are outside the bound: hyper
//! buffers one answer per connection and reads that connection's next request only once it is
//! sent, so those are bounded by the connections open (`tests/it/http_load.rs` shows such
//! clients hold no slot and starve no one). A read never waits, so it is admitted, answered and
//! handed to hyper within one poll: the read bound is a safety net should a read ever wait.
//!
//! `/healthz`, `/readyz` and `/metrics` are outside the bound: probes and scrapes must answer
//! precisely when the API is busiest.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{header, HeaderValue, Method},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{ApiError, AppState};

/// What a shed request is told to wait before retrying, in seconds.
pub const RETRY_AFTER_SECS: u64 = 1;

/// The two bounds, as the middleware holds them.
pub struct InFlight {
    reads: Arc<Semaphore>,
    actions: Arc<Semaphore>,
    read_limit: usize,
    action_limit: usize,
}

impl InFlight {
    pub fn new(read_limit: usize, action_limit: usize) -> InFlight {
        InFlight {
            reads: Arc::new(Semaphore::new(read_limit)),
            actions: Arc::new(Semaphore::new(action_limit)),
            read_limit,
            action_limit,
        }
    }

    /// A slot for a request of `method`, or why it is shed.
    fn admit(&self, method: &Method) -> Result<OwnedSemaphorePermit, Overloaded> {
        let (slots, limit, what, setting) = if method == Method::GET || method == Method::HEAD {
            (
                &self.reads,
                self.read_limit,
                "reads",
                "--http-max-inflight-reads",
            )
        } else {
            (
                &self.actions,
                self.action_limit,
                "actions",
                "--http-max-inflight-actions",
            )
        };
        slots.clone().try_acquire_owned().map_err(|_| Overloaded {
            limit,
            what,
            setting,
        })
    }
}

/// A request shed at its bound: answered 503 with `Retry-After`.
#[derive(Debug, thiserror::Error)]
#[error(
    "overloaded: {limit} {what} already in flight ({setting}); retry after {RETRY_AFTER_SECS} s"
)]
pub struct Overloaded {
    limit: usize,
    what: &'static str,
    setting: &'static str,
}

impl IntoResponse for Overloaded {
    fn into_response(self) -> Response {
        let mut r = ApiError::Unavailable(self.to_string()).into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        r
    }
}

/// The middleware: admits the request, or sheds it; the slot is freed once the response is
/// built.
pub async fn bound_in_flight(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match s.in_flight.admit(req.method()) {
        // Bound to a name (not `_`), so the slot lives until the response is built.
        Ok(_slot) => next.run(req).await,
        Err(shed) => shed.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn text(r: Response) -> String {
        let bytes = axum::body::to_bytes(r.into_body(), 4096)
            .await
            .expect("body");
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[tokio::test]
    async fn beyond_its_bound_a_request_is_shed_with_retry_after() {
        let f = InFlight::new(1, 1);
        let read = f.admit(&Method::GET).expect("the first read");
        let shed = f
            .admit(&Method::HEAD)
            .expect_err("a second read is shed")
            .into_response();
        assert_eq!(shed.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            shed.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from_static("1"))
        );
        let body = text(shed).await;
        assert!(
            body.contains("overloaded") && body.contains("--http-max-inflight-reads"),
            "{body}"
        );
        // Actions have their own bound: a full read bound sheds no action, and the reverse.
        let action = f.admit(&Method::POST).expect("an action");
        let body = text(
            f.admit(&Method::DELETE)
                .expect_err("a second action")
                .into_response(),
        )
        .await;
        assert!(body.contains("--http-max-inflight-actions"), "{body}");
        drop(action);
        assert!(f.admit(&Method::DELETE).is_ok());
        drop(read);
        assert!(f.admit(&Method::GET).is_ok());
    }
}
