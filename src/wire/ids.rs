//! Identifiers derived from the wire messages.

use sha2::{Digest, Sha256};

/// The `dlqId` of a failure: a pure function of its `event_id`, so the same event delivered
/// twice lands on the same key of the compacted store and is one entry.
pub fn dlq_id_for_event(event_id: &str) -> String {
    let digest = Sha256::digest(event_id.as_bytes());
    let mut id = String::with_capacity(36);
    id.push_str("dlq-");
    for byte in &digest[..16] {
        use std::fmt::Write;
        let _ = write!(id, "{byte:02x}");
    }
    id
}

/// A new workflow run id for a republished run (time-ordered, like the platform's own).
pub fn new_run_id() -> String {
    format!("wfr_{}", uuid::Uuid::now_v7().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_event_always_gets_the_same_dlq_id() {
        assert_eq!(dlq_id_for_event("evt-1"), dlq_id_for_event("evt-1"));
        assert_ne!(dlq_id_for_event("evt-1"), dlq_id_for_event("evt-2"));
        assert_eq!(dlq_id_for_event("evt-1").len(), 36);
    }
}
