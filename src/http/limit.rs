//! A bound on the API requests in flight, so memory and latency stay bounded however many
//! clients call at once: beyond it a request is answered at once with 503, `Retry-After: 1` and
//! `{"error": "…"}` (shed, never queued: a queue in front of a full service only adds latency
//! and memory, and the caller knows best whether to retry).
//!
//! Reads (`GET`/`HEAD`) and actions (everything else) have separate bounds
//! (`--http-max-inflight-reads`, `--http-max-inflight-actions`): an action holds its slot while
//! it waits for its command's result (milliseconds to 20 s), so a burst of actions must not shed
//! the reads that take a fraction of a millisecond, nor the reverse.
//!
//! A slot is held until the response body is written out (or the connection drops), not only
//! while the handler runs: a page of 100 entries is built in full before it is sent, so the
//! bodies waiting on slow readers are what memory is made of under load.
//! `/healthz`, `/readyz` and `/metrics` are outside the bound: probes and scrapes must answer
//! precisely when the API is busiest.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    body::{Body, Bytes, HttpBody},
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

/// The middleware: admits the request or sheds it; an admitted request's slot rides on its
/// response body.
pub async fn bound_in_flight(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let permit = match s.in_flight.admit(req.method()) {
        Ok(p) => p,
        Err(shed) => return shed.into_response(),
    };
    let response = next.run(req).await;
    let (parts, body) = response.into_parts();
    Response::from_parts(
        parts,
        Body::new(HeldBody {
            inner: body,
            permit: Some(permit),
        }),
    )
}

/// A response body that holds its request's slot until the last byte is handed to the
/// connection, or the body is dropped (client gone, timeout).
struct HeldBody {
    inner: Body,
    permit: Option<OwnedSemaphorePermit>,
}

impl HttpBody for HeldBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        // `Body` is `Unpin`, so this wrapper is too: no pin projection needed.
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.permit = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

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

    #[tokio::test]
    async fn a_slot_is_held_until_the_body_is_sent() {
        let f = InFlight::new(1, 1);
        let permit = f.admit(&Method::GET).expect("a read");
        let mut body = Body::new(HeldBody {
            inner: Body::from("a page"),
            permit: Some(permit),
        })
        .into_data_stream();
        assert!(f.admit(&Method::GET).is_err(), "held while unsent");
        assert_eq!(
            body.next().await.and_then(Result::ok).as_deref(),
            Some(&b"a page"[..])
        );
        assert!(body.next().await.is_none());
        assert!(
            f.admit(&Method::GET).is_ok(),
            "released at the end of the body, not only when it is dropped"
        );
        drop(body);
    }
}
