//! A JSON response written into a buffer sized up front. axum's `Json` starts from 128 bytes and
//! grows by doubling through `BytesMut`: for a page of 100 entries (~200 KB) that is a dozen
//! reallocations and copies, and a `write_all` through `BytesMut` for every run between two
//! escaped characters — a tenth of the CPU of a listed page (BENCHMARKS.md, ninth session).

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Serialize;

/// `value` as `application/json`, written into a buffer of `capacity` bytes (a hint: it grows
/// if the body is larger).
pub struct SizedJson<T> {
    pub value: T,
    pub capacity: usize,
}

impl<T: Serialize> IntoResponse for SizedJson<T> {
    fn into_response(self) -> Response {
        let mut body = Vec::with_capacity(self.capacity);
        match serde_json::to_writer(&mut body, &self.value) {
            Ok(()) => (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response(),
            // As axum's `Json` answers: our own types only fail to serialize on a bug.
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                )],
                e.to_string(),
            )
                .into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body is the value's JSON whatever the hint, under the JSON content type.
    #[tokio::test]
    async fn the_body_is_the_json_of_the_value_past_its_capacity_hint() {
        let messages = vec!["a\"b\u{1}"; 100];
        let value = serde_json::json!({ "messages": messages, "cursor": null });
        for capacity in [0, 16, 1 << 20] {
            let response = SizedJson {
                value: &value,
                capacity,
            }
            .into_response();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("body");
            assert_eq!(body, serde_json::to_vec(&value).expect("json"));
        }
    }
}
