//! Identifiers derived from the wire messages.

use sha2::{Digest, Sha256};

/// The `dlqId` of a failure: a pure function of its `event_id`, so the same event delivered
/// twice lands on the same key of the compacted store and is one entry.
pub fn dlq_id_for_event(event_id: &str) -> String {
    let digest = Sha256::digest(event_id.as_bytes());
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(36);
    id.push_str("dlq-");
    // By hand rather than `write!("{:02x}")`: ingest derives an id per record, and the
    // formatter's per-byte dispatch showed in its profile.
    for byte in &digest[..16] {
        id.push(HEX[usize::from(byte >> 4)] as char);
        id.push(HEX[usize::from(byte & 0xf)] as char);
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
        // The id every earlier version derived (sha-256, first 16 bytes, lower-case hex).
        assert_eq!(
            dlq_id_for_event("evt-1"),
            "dlq-7b409f932d2c88e97f0c17676c8420d3"
        );
    }
}
