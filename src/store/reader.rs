//! Feeds the store view from the store topic (see [`crate::kafka::tail`]): last write wins per
//! `dlqId`, a tombstone removes. Ready once caught up with the topic's end at start.

use std::{
    sync::{mpsc, Arc},
    time::Instant,
};

use rdkafka::message::{BorrowedMessage, Message};
use tokio_util::sync::CancellationToken;

use super::{keys::IndexKeys, StoreView};
use crate::{
    events::{Event, StoreIntegrityBreach},
    kafka::{tail, KafkaConn},
    metrics,
    wire::{codec, pb::DlqEntry},
};

/// Changes handed to the applier at once: one wake-up per batch, not per record (handing
/// them over one at a time made the two threads wake each other for every record).
const BATCH: usize = 256;
/// Batches read but not yet applied, at most (about 10 MB of 1.3 KB entries).
const IN_FLIGHT: usize = 32;

/// Starts the store reader; it stops when `shutdown` is cancelled.
///
/// Two threads: the tail thread checks and copies each record (the first touch of bytes
/// librdkafka just wrote, and the allocation), and an applier thread indexes the copies in
/// order. A cold start applied about 116k entries/s on one thread (issue 13). Positions and
/// "caught up" travel behind the records they follow, so the view never claims a position
/// before the records up to it are applied.
pub fn spawn(
    worker: crate::health::Worker,
    conn: KafkaConn,
    topic: String,
    view: Arc<StoreView>,
    shutdown: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    // The replay fills the view first; its per-value lists are built once caught up.
    view.defer_lists();
    let (tx, rx) = mpsc::sync_channel(IN_FLIGHT);
    let applier = Applier {
        view: view.clone(),
        started: Instant::now(),
    };
    let fallback = Applier {
        view,
        started: Instant::now(),
    };
    std::thread::Builder::new()
        .name("store-apply".into())
        .spawn(move || {
            // Ends when the tail's sink (the sender) is dropped.
            for batch in rx {
                applier.apply_all(batch);
            }
        })?;
    let sink = StoreSink {
        tx,
        batch: Vec::with_capacity(BATCH),
        fallback,
    };
    tail::spawn(worker, conn, topic, sink, shutdown)
}

/// One change to the view, in the store topic's order.
enum Op {
    Upsert {
        partition: i32,
        offset: i64,
        raw: Box<[u8]>,
    },
    /// A decoded JSON entry.
    UpsertEntry {
        partition: i32,
        offset: i64,
        entry: Box<DlqEntry>,
    },
    Remove(Box<str>),
    /// The replay brings at most this many entries.
    Reserve(u64),
    Position(i32, i64),
    CaughtUp,
}

struct Applier {
    view: Arc<StoreView>,
    started: Instant,
}

/// Most entries applied under one hold of the view's write lock (~0.5 ms of index work):
/// queries and ingest's duplicate checks wait at most that long.
const UPSERTS_PER_LOCK: usize = 64;

impl Applier {
    /// Applies `ops` in order; runs of upserts share a write lock ([`UPSERTS_PER_LOCK`]).
    fn apply_all(&self, ops: Vec<Op>) {
        let mut run = Vec::with_capacity(UPSERTS_PER_LOCK);
        for op in ops {
            match op {
                Op::Upsert {
                    partition,
                    offset,
                    raw,
                } => {
                    run.push((partition, offset, raw));
                    if run.len() == UPSERTS_PER_LOCK {
                        self.view.upsert_raw_all(run.drain(..));
                    }
                }
                other => {
                    if !run.is_empty() {
                        self.view.upsert_raw_all(run.drain(..));
                    }
                    self.apply(other);
                }
            }
        }
        if !run.is_empty() {
            self.view.upsert_raw_all(run.drain(..));
        }
    }

    fn apply(&self, op: Op) {
        let view = &self.view;
        match op {
            Op::Upsert {
                partition,
                offset,
                raw,
            } => view.upsert_raw(partition, offset, raw),
            Op::UpsertEntry {
                partition,
                offset,
                entry,
            } => view.upsert(partition, offset, &entry),
            Op::Remove(id) => {
                view.remove(&id);
            }
            Op::Reserve(records) => view.reserve(records),
            Op::Position(partition, next) => view.set_position(partition, next),
            Op::CaughtUp => {
                view.set_caught_up();
                publish_gauges(view);
                tracing::info!(
                    entries = view.len(),
                    payload_bytes = view.payload_bytes(),
                    elapsed_ms = self.started.elapsed().as_millis() as u64,
                    "store view caught up"
                );
            }
        }
    }
}

struct StoreSink {
    tx: mpsc::SyncSender<Vec<Op>>,
    batch: Vec<Op>,
    /// Applies on the tail thread should the applier thread be gone (it panicked).
    fallback: Applier,
}

impl StoreSink {
    fn send(&mut self, op: Op) {
        self.batch.push(op);
        if self.batch.len() >= BATCH {
            tail::TailSink::flush(self);
        }
    }
}

impl tail::TailSink for StoreSink {
    fn record(&mut self, m: &BorrowedMessage<'_>) {
        if let Some(op) = read(m) {
            self.send(op);
        }
    }

    fn position(&mut self, partition: i32, next_offset: i64) {
        self.send(Op::Position(partition, next_offset));
    }

    fn backlog(&mut self, records: u64) {
        self.send(Op::Reserve(records));
    }

    fn caught_up(&mut self) {
        self.send(Op::CaughtUp);
        tail::TailSink::flush(self);
    }

    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        if let Err(mpsc::SendError(batch)) = self.tx.send(batch) {
            for op in batch {
                self.fallback.apply(op);
            }
        }
    }
}

/// Sets `dlq_entries` and `dlq_oldest_entry_age_seconds` from the view.
pub fn publish_gauges(view: &StoreView) {
    let now = crate::now_ms();
    let age = view
        .oldest_created_at()
        .map(|t| ((now - t).max(0) as f64) / 1000.0)
        .unwrap_or(0.0);
    metrics::entries(view.len(), age);
}

/// The change a store record makes, checked; `None` (logged and counted) when it can't be read.
fn read(m: &BorrowedMessage<'_>) -> Option<Op> {
    let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
        StoreIntegrityBreach {
            what: &format!(
                "store record without a UTF-8 key at partition {} offset {}; skipped",
                m.partition(),
                m.offset()
            ),
        }
        .emit();
        return None;
    };
    let Some(payload) = m.payload() else {
        return Some(Op::Remove(key.into()));
    };
    let ct = codec::content_type_of(m.headers());
    let (partition, offset) = (m.partition(), m.offset());
    // The change, or the other id the record holds, or the reason it can't be read.
    let applied: Result<Result<Op, String>, String> = match codec::detect(ct, payload) {
        // Protobuf is kept as read (copied once); here only its id is read, the view reads
        // the index's fields when it applies it (and counts an entry it cannot read).
        Ok(codec::Encoding::Protobuf) => match IndexKeys::read_id(payload) {
            Ok(id) if id == key => Ok(Ok(Op::Upsert {
                partition,
                offset,
                raw: payload.into(),
            })),
            Ok(id) => Ok(Err(id.to_string())),
            Err(e) => Err(e.to_string()),
        },
        // JSON is decoded whole and kept as protobuf.
        Ok(codec::Encoding::Json) => match codec::decode::<DlqEntry>(ct, Some(payload)) {
            Ok(entry) if entry.dlq_id == key => Ok(Ok(Op::UpsertEntry {
                partition,
                offset,
                entry: Box::new(entry),
            })),
            Ok(entry) => Ok(Err(entry.dlq_id)),
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(e.to_string()),
    };
    match applied {
        Ok(Ok(op)) => return Some(op),
        Ok(Err(id)) => StoreIntegrityBreach {
            what: &format!(
                "store record key `{key}` and dlqId `{id}` differ at partition {partition} \
                 offset {offset}; skipped"
            ),
        }
        .emit(),
        Err(e) => StoreIntegrityBreach {
            what: &format!(
                "undecodable store record `{key}` at partition {partition} offset {offset}: \
                 {e}; skipped"
            ),
        }
        .emit(),
    }
    None
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::store::EntryState;

    fn upsert(id: &str, offset: i64) -> Op {
        let entry = DlqEntry {
            dlq_id: id.into(),
            created_at: offset,
            ..Default::default()
        };
        Op::Upsert {
            partition: 0,
            offset,
            raw: entry.encode_to_vec().into_boxed_slice(),
        }
    }

    /// Upserts share a write lock in runs, but a run never jumps over the tombstone or
    /// position that follows it in the topic: last write wins, in the topic's order.
    #[test]
    fn runs_of_upserts_keep_the_topics_order_with_tombstones_and_positions() {
        let view = Arc::new(StoreView::new());
        let applier = Applier {
            view: view.clone(),
            started: Instant::now(),
        };
        let mut ops = Vec::new();
        // More than one run's worth before the tombstone, so a run ends on its size too.
        for i in 0..(UPSERTS_PER_LOCK as i64 + 10) {
            ops.push(upsert(&format!("e{i}"), i));
        }
        ops.push(Op::Remove("e3".into()));
        ops.push(upsert("e4", 1_000));
        ops.push(Op::Remove("e4".into()));
        ops.push(upsert("e3", 1_001));
        ops.push(Op::Position(0, 1_002));
        ops.push(upsert("late", 1_002));
        applier.apply_all(ops);

        assert_eq!(
            view.state("e3"),
            EntryState::Present,
            "re-stored after its tombstone"
        );
        assert_eq!(
            view.state("e4"),
            EntryState::Deleted,
            "its tombstone came last"
        );
        assert_eq!(view.state("late"), EntryState::Present);
        // e0..e73, less e4, plus `late`.
        assert_eq!(view.len(), UPSERTS_PER_LOCK + 10);
    }
}
