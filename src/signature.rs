//! Failure signatures (docs/design.md §4 *Signatures*): what makes two failures "the same kind
//! of failure", so 50,000 entries read as the three things that broke.
//!
//! A signature is a pure function of normalised fields: the workflow URL without its query
//! string or fragment, the failed step's name and type, the response status, and the error
//! message with the values that vary from run to run (ids, numbers, UUIDs, hex, timestamps)
//! replaced by one placeholder. Ingest computes it once and stores it on the entry, so an
//! entry keeps its group when this normaliser changes in a later version.
//!
//! The message is normalised by a hand-written scanner rather than a list of regular
//! expressions: one pass, no backtracking over a 4 KiB message, no new dependency, and the
//! rules below are easier to read as code than as five patterns whose order matters.

use sha2::{Digest, Sha256};

/// What stands for a value in a normalised message.
pub const HOLE: &str = "<*>";

/// Characters that join the parts of one value (`2024-01-02T03:04:05.123Z`, `10.0.0.1`,
/// `order-42`, `1.5s`): two holes joined by one of them are one hole, so a timestamp or an
/// address is one placeholder whatever its precision.
const JOINERS: &[char] = &['-', '_', ':', '.', '/', '+', '@'];

/// A run of hex letters this long or longer (without a digit) is a value too (`deadbeefcafe`):
/// shorter ones are words (`face`, `decade`).
const HEX_WORD: usize = 8;

/// The fields of a failure a signature is made from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Parts<'a> {
    pub workflow_url: &'a str,
    pub step_name: &'a str,
    pub step_type: &'a str,
    pub response_status: i32,
    pub error_message: &'a str,
}

/// The signature: the first 8 bytes of SHA-256 over the normalised fields, as 16 lower-case
/// hex digits (collisions among a DLQ's few hundred kinds of failure are negligible).
pub fn signature(p: &Parts<'_>) -> String {
    let mut h = Sha256::new();
    // Each field is length-prefixed, so no two tuples hash the same bytes.
    for field in [
        url_without_query(p.workflow_url),
        p.step_name,
        p.step_type,
        &p.response_status.to_string(),
        &normalise_message(p.error_message),
    ] {
        h.update((field.len() as u64).to_le_bytes());
        h.update(field.as_bytes());
    }
    let digest = h.finalize();
    digest[..8]
        .iter()
        .fold(String::with_capacity(16), |mut s, b| {
            use std::fmt::Write;
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The signature of a failure event.
pub fn of_event(ev: &crate::wire::pb::FailureEvent) -> String {
    let step = ev.failed_step.as_ref();
    signature(&Parts {
        workflow_url: &ev.workflow_url,
        step_name: step.map_or("", |s| &s.step_name),
        step_type: step.map_or("", |s| &s.step_type),
        response_status: ev.response_status,
        error_message: &ev.error_message,
    })
}

/// The URL up to its query string or fragment: the same endpoint called with other parameters
/// fails the same way.
pub fn url_without_query(url: &str) -> &str {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    url[..end].trim()
}

/// True when `s` at its start has the shape of a UUID (8-4-4-4-12 hex digits).
fn uuid_at(s: &[u8]) -> bool {
    s.len() >= 36
        && s[..36].iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
        && s.get(36).is_none_or(|b| !b.is_ascii_alphanumeric())
}

/// A word that is a value, not language: it has a digit (`42`, `0x1f`, `user42`, `3ms`,
/// `v2`), or is a long run of hex letters.
fn is_value(word: &str) -> bool {
    word.bytes().any(|b| b.is_ascii_digit())
        || (word.len() >= HEX_WORD && word.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The error message with its values replaced by [`HOLE`] and whitespace collapsed: messages
/// that differ only in ids, counts, durations, addresses or times normalise equal.
pub fn normalise_message(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len().min(256));
    let bytes = msg.as_bytes();
    let mut i = 0;
    let mut pending_space = false;
    while i < msg.len() {
        let c = msg[i..].chars().next().unwrap_or(' ');
        if c.is_whitespace() {
            pending_space = !out.is_empty();
            i += c.len_utf8();
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        if uuid_at(&bytes[i..]) && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) {
            push_hole(&mut out);
            i += 36;
            continue;
        }
        if c.is_alphanumeric() {
            let len = msg[i..]
                .find(|ch: char| !ch.is_alphanumeric())
                .unwrap_or(msg.len() - i);
            let word = &msg[i..i + len];
            if is_value(word) {
                push_hole(&mut out);
            } else {
                out.push_str(word);
            }
            i += len;
            continue;
        }
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// Appends a hole, merging it with a hole just before it (directly or across one joiner).
fn push_hole(out: &mut String) {
    if out.ends_with(HOLE) {
        return;
    }
    let mut chars = out.chars();
    if let Some(last) = chars.next_back() {
        if JOINERS.contains(&last) && chars.as_str().ends_with(HOLE) {
            out.pop();
            return;
        }
    }
    out.push_str(HOLE);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        normalise_message(s)
    }

    #[test]
    fn values_become_one_placeholder_and_words_stay() {
        for (input, want) in [
            (
                "charge failed after 3 retries",
                "charge failed after <*> retries",
            ),
            ("user 42 not found", "user <*> not found"),
            ("order-123 rejected", "order-<*> rejected"),
            ("run wfr_0192ab3f failed", "run wfr_<*> failed"),
            (
                "lock 550e8400-e29b-41d4-a716-446655440000 held",
                "lock <*> held",
            ),
            ("uuid cafebabe-dead-beef-face-deadbeefcafe", "uuid <*>"),
            ("bad pointer 0xdeadbeef", "bad pointer <*>"),
            ("digest deadbeefcafebabe mismatch", "digest <*> mismatch"),
            ("at 2024-01-02T03:04:05.123Z: timeout", "at <*>: timeout"),
            ("at 2025-11-30T19:59:00Z: timeout", "at <*>: timeout"),
            ("at 1764500000000: timeout", "at <*>: timeout"),
            ("connect 10.0.0.12:5432 refused", "connect <*> refused"),
            ("took 1.5s", "took <*>"),
            ("took 12ms", "took <*>"),
            ("  spaced \t out\n", "spaced out"),
            ("the façade decade", "the façade decade"),
            ("", ""),
        ] {
            assert_eq!(norm(input), want, "{input:?}");
        }
    }

    #[test]
    fn messages_that_differ_only_in_values_normalise_equal() {
        let a = norm("POST /v1/charges/ch_1 returned 502 after 3021ms (request 7f3a9c21)");
        let b = norm("POST /v1/charges/ch_998 returned 503 after 12ms (request deadbeef99)");
        assert_eq!(a, b);
        assert_ne!(norm("connection refused"), norm("connection reset"));
    }

    #[test]
    fn the_signature_is_stable_and_ignores_query_strings_and_values() {
        let base = Parts {
            workflow_url: "https://app.example.com/api/pay?tenant=7",
            step_name: "charge",
            step_type: "Run",
            response_status: 500,
            error_message: "charge 17 failed after 3 retries",
        };
        let sig = signature(&base);
        assert_eq!(sig.len(), 16);
        assert!(sig.bytes().all(|b| b.is_ascii_hexdigit()));
        // Pinned: a change here regroups every entry stored from now on.
        assert_eq!(sig, signature(&base));
        let same = Parts {
            workflow_url: "https://app.example.com/api/pay#x",
            error_message: "charge 99 failed after 5 retries",
            ..base
        };
        assert_eq!(signature(&same), sig);
        for other in [
            Parts {
                response_status: 502,
                ..base
            },
            Parts {
                step_name: "refund",
                ..base
            },
            Parts {
                step_type: "Call",
                ..base
            },
            Parts {
                workflow_url: "https://app.example.com/api/refund",
                ..base
            },
            Parts {
                error_message: "card declined",
                ..base
            },
        ] {
            assert_ne!(signature(&other), sig, "{other:?}");
        }
        // Field boundaries count: moving text from one field to the next is another tuple.
        let a = Parts {
            step_name: "ab",
            step_type: "c",
            ..base
        };
        let b = Parts {
            step_name: "a",
            step_type: "bc",
            ..base
        };
        assert_ne!(signature(&a), signature(&b));
    }

    #[test]
    fn any_text_normalises_without_panicking() {
        for s in [
            "é1",
            "1é",
            "\u{10FFFF}9",
            "-",
            "<*>",
            "9-",
            "a:1:b:2",
            "🙂42🙂",
        ] {
            let _ = norm(s);
        }
        assert_eq!(norm("<*> 5"), "<*> <*>");
    }
}
