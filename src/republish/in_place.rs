//! A restart or resume written from the stored entry's bytes, without decoding the entry.
//!
//! A bulk restart decoded every stored entry with prost (each string, header map and step
//! allocated), moved its fields into a `WorkflowExecution` ([`super::execution`]) and encoded
//! that: malloc and free were ~44% of the commands thread. [`EntryInPlace::read`] checks the
//! stored bytes as prost's decoding would (all of the event, through
//! [`FailureRef::read`](crate::wire::failure_ref::FailureRef::read)), and
//! [`EntryInPlace::execution`] writes the run field by field from them: the same run
//! [`super::execution`] builds, as a test checks over every cut and one-byte change of a full
//! entry. It covers what bulk redrive does — RESTART and RESUME without overrides — and gives a
//! DELETE the few fields its decision reads; anything else decodes the entry.

use prost::encoding::{encode_key, encode_varint, WireType};

use crate::wire::{
    failure_ref::FailureRef,
    pb::{workflow_execution::Kind, DlqEntry, FailureEvent},
    walk::{
        bytes, fields,
        tags::{entry, event, execution},
        text, varint,
    },
};

/// A stored entry read in place: what a decision on it reads, and its event's bytes.
#[derive(Debug)]
pub struct EntryInPlace<'a> {
    pub dlq_id: &'a str,
    pub expires_at: i64,
    pub redrive_count: i32,
    /// The `FailureEvent`'s bytes, checked.
    event: &'a [u8],
}

impl<'a> EntryInPlace<'a> {
    /// `None` when `raw` is not one well-formed `DlqEntry` holding its event once (decode it).
    pub fn read(raw: &'a [u8]) -> Option<EntryInPlace<'a>> {
        let (mut dlq_id, mut expires_at) = ("", 0);
        let (mut event, mut events) = (&[][..], 0);
        fields(raw, |tag, v| {
            match tag {
                entry::DLQ_ID => dlq_id = text(bytes(v)?)?,
                entry::EXPIRES_AT => expires_at = varint(v)? as i64,
                entry::EVENT => {
                    event = bytes(v)?;
                    events += 1;
                }
                entry::SOURCE_TOPIC | entry::SIGNATURE => _ = text(bytes(v)?)?,
                entry::CREATED_AT | entry::SOURCE_PARTITION | entry::SOURCE_OFFSET => {
                    _ = varint(v)?
                }
                _ => {}
            }
            Ok(())
        })
        .ok()?;
        // Twice would merge (protobuf's rule for a message field): left to prost.
        if events != 1 {
            return None;
        }
        let checked = FailureRef::read(event).ok()?;
        Some(EntryInPlace {
            dlq_id,
            expires_at,
            redrive_count: checked.redrive_count,
            event,
        })
    }

    /// The entry as a decision on a restart, resume or delete reads it (`commands::decide`):
    /// its id, expiry and redrive count. Not for the callback actions, which read more.
    pub fn for_decision(&self) -> DlqEntry {
        DlqEntry {
            dlq_id: self.dlq_id.to_string(),
            expires_at: self.expires_at,
            event: Some(FailureEvent {
                redrive_count: self.redrive_count,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The `WorkflowExecution` [`super::execution`] builds for `kind` (RESTART or RESUME) with
    /// no overrides, encoded: the event's fields copied under the execution's tags, and the
    /// lineage, redrive count and ids written as that function computes them.
    pub fn execution(
        &self,
        kind: Kind,
        run_id: &str,
        created_at: i64,
        command_id: &str,
    ) -> Vec<u8> {
        let resume = kind == Kind::Resume;
        let mut out = Vec::with_capacity(self.event.len() + run_id.len() + 3 * 48);
        put_bytes(&mut out, execution::WORKFLOW_RUN_ID, run_id.as_bytes());
        put_varint(&mut out, execution::WORKFLOW_CREATED_AT, created_at as u64);
        put_varint(&mut out, execution::KIND, kind as i32 as u64);
        let mut redriven_from = "";
        let mut last_in_lineage = None;
        // The event was checked whole by `read`: no error can come out of this walk.
        let walked = fields(self.event, |tag, v| {
            let to = match tag {
                event::WORKFLOW_URL => execution::WORKFLOW_URL,
                event::METHOD => execution::METHOD,
                event::HEADER => execution::HEADER,
                event::BODY => execution::BODY,
                event::COMPLETED_STEPS if resume => execution::STEPS,
                event::FLOW_CONTROL => execution::FLOW_CONTROL,
                event::LABELS => execution::LABELS,
                event::FAILURE_CALLBACK => execution::FAILURE_CALLBACK,
                event::WORKFLOW_RUN_ID => execution::SOURCE_WORKFLOW_RUN_ID,
                event::LINEAGE => {
                    let b = bytes(v)?;
                    last_in_lineage = Some(text(b)?);
                    put_bytes(&mut out, execution::LINEAGE, b);
                    return Ok(());
                }
                event::MAX_RETRIES => {
                    put_varint(&mut out, execution::RETRIES, varint(v)?);
                    return Ok(());
                }
                event::REDRIVEN_FROM_DLQ_ID => {
                    redriven_from = text(bytes(v)?)?;
                    return Ok(());
                }
                _ => return Ok(()),
            };
            put_bytes(&mut out, to, bytes(v)?);
            Ok(())
        });
        debug_assert!(walked.is_ok(), "{walked:?}");
        // The chain of earlier entries: the event's lineage, the entry it was redriven from
        // (unless the lineage already ends with it), then this entry (`super::lineage`).
        let from = redriven_from.trim();
        if !from.is_empty() && last_in_lineage != Some(from) {
            put_bytes(&mut out, execution::LINEAGE, from.as_bytes());
        }
        put_bytes(&mut out, execution::LINEAGE, self.dlq_id.as_bytes());
        put_bytes(&mut out, execution::SOURCE_DLQ_ID, self.dlq_id.as_bytes());
        put_bytes(&mut out, execution::COMMAND_ID, command_id.as_bytes());
        let redrives = self.redrive_count.saturating_add(1);
        put_varint(&mut out, execution::REDRIVE_COUNT, redrives as u64);
        out
    }
}

fn put_bytes(out: &mut Vec<u8>, tag: u32, value: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(value.len() as u64, out);
    out.extend_from_slice(value);
}

/// An int32 or int64 as protobuf writes it (`value as u64`: a negative int32 sign-extends).
fn put_varint(out: &mut Vec<u8>, tag: u32, value: u64) {
    encode_key(tag, WireType::Varint, out);
    encode_varint(value, out);
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::{
        republish::execution,
        wire::{failure_ref::tests::full_event, pb::WorkflowExecution},
    };

    fn entry(ev: FailureEvent) -> DlqEntry {
        DlqEntry {
            dlq_id: "dlq-9".into(),
            event: Some(ev),
            created_at: 10,
            expires_at: 20,
            source_topic: "failures".into(),
            source_partition: 1,
            source_offset: 2,
            signature: "00ff".into(),
        }
    }

    /// The run written in place, decoded, against the run built from the decoded entry.
    fn agrees(raw: &[u8]) -> bool {
        let Some(e) = EntryInPlace::read(raw) else {
            return false;
        };
        let decoded = DlqEntry::decode(raw).expect("accepted in place, so prost decodes it");
        assert_eq!(e.dlq_id, decoded.dlq_id);
        assert_eq!(e.expires_at, decoded.expires_at);
        for kind in [Kind::Restart, Kind::Resume] {
            let ours = WorkflowExecution::decode(&e.execution(kind, "wfr_new", 77, "cmd-1")[..])
                .expect("decodes");
            let theirs = execution(decoded.clone(), kind, None, "wfr_new".into(), 77, "cmd-1");
            assert_eq!(ours, theirs, "{kind:?}");
        }
        true
    }

    #[test]
    fn writes_the_run_execution_builds_from_the_decoded_entry() {
        let mut ev = full_event();
        assert!(agrees(&entry(ev.clone()).encode_to_vec()));
        // The lineage rules: the entry redriven from is added unless it ends the lineage,
        // trimmed; a count at i32::MAX saturates.
        for (lineage, from) in [
            (vec![], ""),
            (vec!["dlq-1".to_string()], "dlq-1"),
            (vec!["dlq-1".to_string()], " dlq-2 "),
            (vec![], "  "),
        ] {
            ev.lineage = lineage;
            ev.redriven_from_dlq_id = from.into();
            ev.redrive_count = i32::MAX;
            ev.max_retries = -3;
            assert!(agrees(&entry(ev.clone()).encode_to_vec()));
        }
        assert!(agrees(&entry(FailureEvent::default()).encode_to_vec()));
        // No event at all, or twice: decoded instead.
        let none = DlqEntry {
            event: None,
            ..entry(FailureEvent::default())
        };
        assert!(EntryInPlace::read(&none.encode_to_vec()).is_none());
        let once = entry(full_event()).encode_to_vec();
        let twice = [once.clone(), once].concat();
        assert!(DlqEntry::decode(&twice[..]).is_ok());
        assert!(EntryInPlace::read(&twice).is_none());
    }

    #[test]
    fn accepts_nothing_prost_refuses_and_writes_what_execution_writes() {
        let raw = entry(full_event()).encode_to_vec();
        let (mut ours, mut prost_refused) = (0, 0);
        let mut check = |bytes: &[u8]| {
            if DlqEntry::decode(bytes).is_err() {
                prost_refused += 1;
            }
            if agrees(bytes) {
                ours += 1;
            }
        };
        for cut in 0..raw.len() {
            check(&raw[..cut]);
        }
        for at in 0..raw.len() {
            for byte in [0x00, 0x01, 0x0a, 0x7f, 0x80, 0xff] {
                let mut changed = raw.clone();
                changed[at] = byte;
                check(&changed);
                changed[at] = raw[at] ^ 0x08;
                check(&changed);
            }
        }
        assert!(
            ours > 1_000 && prost_refused > 1_000,
            "{ours} {prost_refused}"
        );
    }
}
