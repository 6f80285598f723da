//! Idempotent actions: a client that retries a call (a timeout, a dropped connection) sends the
//! same `Upstash-Deduplication-Id` (QStash's header) or `Idempotency-Key` again, and the action
//! happens once.
//!
//! The key becomes the command's id — `http-dedup-` and a hash of the key with the route and
//! query it was sent to — so the command topic's own rule does the work: the same command id
//! twice acts once, and the results topic (read back by the ledger for its retention) holds the
//! first outcome, which a replay answers again. The hash includes the request, so a key reused
//! by mistake for a different action is a different command, not a wrong answer.

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

use super::ApiError;

pub const DEDUPLICATION_ID: &str = "upstash-deduplication-id";
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Longest key accepted.
const MAX_KEY: usize = 256;

/// The command id for this request if the client gave a deduplication key, else `None`.
/// `request` names what is asked: the route and its query (or path id).
pub fn command_id(headers: &HeaderMap, request: &str) -> Result<Option<String>, ApiError> {
    let mut key: Option<&str> = None;
    for name in [DEDUPLICATION_ID, IDEMPOTENCY_KEY] {
        let Some(v) = headers.get(name) else {
            continue;
        };
        let v = v
            .to_str()
            .map_err(|_| ApiError::BadRequest(format!("`{name}` must be visible ASCII")))?
            .trim();
        if v.is_empty() || v.len() > MAX_KEY {
            return Err(ApiError::BadRequest(format!(
                "`{name}` must be 1 to {MAX_KEY} characters"
            )));
        }
        match key {
            Some(k) if k != v => {
                return Err(ApiError::BadRequest(format!(
                    "`{DEDUPLICATION_ID}` and `{IDEMPOTENCY_KEY}` differ; send one"
                )))
            }
            _ => key = Some(v),
        }
    }
    Ok(key.map(|k| {
        let mut h = Sha256::new();
        h.update(k.as_bytes());
        h.update([0]);
        h.update(request.as_bytes());
        let digest = h.finalize();
        let mut id = String::from("http-dedup-");
        for b in &digest[..16] {
            use std::fmt::Write;
            let _ = write!(id, "{b:02x}");
        }
        id
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_same_key_and_request_is_the_same_command_and_either_header_works() {
        let a = command_id(&headers(&[(DEDUPLICATION_ID, "k1")]), "POST /r?x").unwrap();
        let b = command_id(&headers(&[(IDEMPOTENCY_KEY, "k1")]), "POST /r?x").unwrap();
        assert!(a.is_some());
        assert_eq!(a, b);
        let other_request = command_id(&headers(&[(IDEMPOTENCY_KEY, "k1")]), "POST /r?y").unwrap();
        assert_ne!(a, other_request);
        assert_eq!(command_id(&HeaderMap::new(), "POST /r").unwrap(), None);
    }

    #[test]
    fn empty_long_or_conflicting_keys_are_400() {
        for h in [
            headers(&[(IDEMPOTENCY_KEY, " ")]),
            headers(&[(IDEMPOTENCY_KEY, &"x".repeat(MAX_KEY + 1))]),
            headers(&[(IDEMPOTENCY_KEY, "a"), (DEDUPLICATION_ID, "b")]),
        ] {
            assert!(matches!(command_id(&h, "r"), Err(ApiError::BadRequest(_))));
        }
    }
}
