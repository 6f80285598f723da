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

/// Changes handed to the applier at once, at most: one wake-up per batch, not per record
/// (handing them over one at a time made the two threads wake each other for every record).
const BATCH: usize = 4096;
/// Bytes of entries a batch carries, at most: its block's size (~750 entries of 1.4 KB).
const BLOCK_BYTES: usize = 1 << 20;
/// Batches read but not yet applied, at most (about 8 MB).
const IN_FLIGHT: usize = 8;

/// Starts the store reader; it stops when `shutdown` is cancelled.
///
/// Two threads: the tail thread checks each record and copies it into the batch's block of
/// entries' bytes (the first touch of bytes librdkafka just wrote), and an applier thread
/// indexes the copies in order; the view keeps the block ([`crate::store::view::BlockBatch`]).
/// A cold start applied about 116k entries/s on one thread (issue 13). Positions and
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
        batch: Vec::new(),
        block: Vec::new(),
        fallback,
    };
    tail::spawn(worker, conn, topic, sink, shutdown)
}

/// Changes to the view in the store topic's order, and the bytes of the entries they store.
struct Batch {
    ops: Vec<Op>,
    block: Vec<u8>,
}

/// One change to the view, in the store topic's order.
enum Op {
    /// The protobuf entry at `at..at + len` of the batch's block.
    Upsert {
        partition: i32,
        offset: i64,
        at: u32,
        len: u32,
    },
    Other(Change),
}

/// A change that is not an entry in the batch's block.
enum Change {
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
    /// Applies `batch` in order; runs of upserts share a write lock ([`UPSERTS_PER_LOCK`]).
    fn apply_all(&self, batch: Batch) {
        let block = self.view.adopt_block(batch.block);
        let mut run = Vec::with_capacity(UPSERTS_PER_LOCK);
        for op in batch.ops {
            match op {
                Op::Upsert {
                    partition,
                    offset,
                    at,
                    len,
                } => {
                    run.push((partition, offset, at, len));
                    if run.len() == UPSERTS_PER_LOCK {
                        block.upsert_all(run.drain(..));
                    }
                }
                Op::Other(change) => {
                    if !run.is_empty() {
                        block.upsert_all(run.drain(..));
                    }
                    self.apply(change);
                }
            }
        }
        if !run.is_empty() {
            block.upsert_all(run.drain(..));
        }
    }

    fn apply(&self, change: Change) {
        let view = &self.view;
        match change {
            Change::UpsertEntry {
                partition,
                offset,
                entry,
            } => view.upsert(partition, offset, &entry),
            Change::Remove(id) => {
                view.remove(&id);
            }
            Change::Reserve(records) => view.reserve(records),
            Change::Position(partition, next) => view.set_position(partition, next),
            Change::CaughtUp => {
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
    tx: mpsc::SyncSender<Batch>,
    batch: Vec<Op>,
    /// The entries' bytes of `batch`, end to end.
    block: Vec<u8>,
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

    /// Copies `payload` into the batch's block: where it sits there. A block that cannot take
    /// it is sent first; one entry larger than a block has a block of its own size.
    fn copy(&mut self, payload: &[u8]) -> (u32, u32) {
        if !self.block.is_empty() && self.block.len() + payload.len() > BLOCK_BYTES {
            tail::TailSink::flush(self);
        }
        if self.block.capacity() == 0 {
            self.block = Vec::with_capacity(BLOCK_BYTES.max(payload.len()));
        }
        let at = self.block.len() as u32;
        self.block.extend_from_slice(payload);
        (at, payload.len() as u32)
    }
}

impl tail::TailSink for StoreSink {
    fn record(&mut self, m: &BorrowedMessage<'_>) {
        let op = match read(m) {
            Some(Read::Protobuf(payload)) => {
                let (at, len) = self.copy(payload);
                Op::Upsert {
                    partition: m.partition(),
                    offset: m.offset(),
                    at,
                    len,
                }
            }
            Some(Read::Other(change)) => Op::Other(change),
            None => return,
        };
        self.send(op);
    }

    fn position(&mut self, partition: i32, next_offset: i64) {
        self.send(Op::Other(Change::Position(partition, next_offset)));
    }

    fn backlog(&mut self, records: u64) {
        self.send(Op::Other(Change::Reserve(records)));
    }

    fn caught_up(&mut self) {
        self.send(Op::Other(Change::CaughtUp));
        tail::TailSink::flush(self);
    }

    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        // The next batch is likely the size of this one: room for it now, not by doubling.
        let next = Vec::with_capacity(self.batch.len());
        let ops = std::mem::replace(&mut self.batch, next);
        // A block mostly empty (a quiet topic's batch) is copied to one of its size, and the
        // room is kept for the next batch; a full one is handed over as it is.
        let block = if self.block.len() >= self.block.capacity() / 2 {
            std::mem::take(&mut self.block)
        } else {
            let copy = self.block.clone();
            self.block.clear();
            copy
        };
        let batch = Batch { ops, block };
        if let Err(mpsc::SendError(batch)) = self.tx.send(batch) {
            self.fallback.apply_all(batch);
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

/// What a store record is, checked.
enum Read<'m> {
    /// A protobuf entry whose id is its key: its bytes, to be kept as they are.
    Protobuf(&'m [u8]),
    /// Any other change.
    Other(Change),
}

/// The change a store record makes, checked; `None` (logged and counted) when it can't be read.
fn read<'m>(m: &'m BorrowedMessage<'_>) -> Option<Read<'m>> {
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
        return Some(Read::Other(Change::Remove(key.into())));
    };
    let ct = codec::content_type_of(m.headers());
    let (partition, offset) = (m.partition(), m.offset());
    // The change, or the other id the record holds, or the reason it can't be read.
    let applied: Result<Result<Read<'m>, String>, String> = match codec::detect(ct, payload) {
        // Protobuf is kept as read (copied once); here only its id is read, the view reads
        // the index's fields when it applies it (and counts an entry it cannot read).
        Ok(codec::Encoding::Protobuf) => match IndexKeys::read_id(payload) {
            Ok(id) if id == key => Ok(Ok(Read::Protobuf(payload))),
            Ok(id) => Ok(Err(id.to_string())),
            Err(e) => Err(e.to_string()),
        },
        // JSON is decoded whole and kept as protobuf.
        Ok(codec::Encoding::Json) => match codec::decode::<DlqEntry>(ct, Some(payload)) {
            Ok(entry) if entry.dlq_id == key => Ok(Ok(Read::Other(Change::UpsertEntry {
                partition,
                offset,
                entry: Box::new(entry),
            }))),
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

    /// An upsert of entry `id` whose bytes are appended to `block`.
    fn upsert(block: &mut Vec<u8>, id: &str, offset: i64) -> Op {
        let entry = DlqEntry {
            dlq_id: id.into(),
            created_at: offset,
            ..Default::default()
        };
        let at = block.len() as u32;
        entry.encode(block).expect("a Vec grows");
        Op::Upsert {
            partition: 0,
            offset,
            at,
            len: block.len() as u32 - at,
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
        let (mut ops, mut block) = (Vec::new(), Vec::new());
        // More than one run's worth before the tombstone, so a run ends on its size too.
        for i in 0..(UPSERTS_PER_LOCK as i64 + 10) {
            ops.push(upsert(&mut block, &format!("e{i}"), i));
        }
        ops.push(Op::Other(Change::Remove("e3".into())));
        ops.push(upsert(&mut block, "e4", 1_000));
        ops.push(Op::Other(Change::Remove("e4".into())));
        ops.push(upsert(&mut block, "e3", 1_001));
        ops.push(Op::Other(Change::Position(0, 1_002)));
        ops.push(upsert(&mut block, "late", 1_002));
        applier.apply_all(Batch { ops, block });

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

    /// Entries that overflow a block go on in the next batch's block, and one larger than a
    /// block gets a block of its own: every entry is applied once with its own bytes.
    #[test]
    fn entries_over_many_blocks_are_each_applied_with_their_own_bytes() {
        let view = Arc::new(StoreView::new());
        let (tx, rx) = mpsc::sync_channel(10_000);
        let mut sink = StoreSink {
            tx,
            batch: Vec::new(),
            block: Vec::new(),
            fallback: Applier {
                view: view.clone(),
                started: Instant::now(),
            },
        };
        let stored = |i: i64| DlqEntry {
            dlq_id: format!("e{i}"),
            created_at: i,
            // ~1 KB each, and one of 2 MiB: larger than a block.
            source_topic: "x".repeat(if i == 1_500 { 2 << 20 } else { 1_000 }),
            ..Default::default()
        };
        for i in 0..3_000 {
            let (at, len) = sink.copy(&stored(i).encode_to_vec());
            sink.send(Op::Upsert {
                partition: 0,
                offset: i,
                at,
                len,
            });
        }
        tail::TailSink::flush(&mut sink);
        drop(sink);
        let applier = Applier {
            view: view.clone(),
            started: Instant::now(),
        };
        let mut blocks = Vec::new();
        for batch in rx.try_iter() {
            blocks.push(batch.block.len());
            applier.apply_all(batch);
        }
        assert!(blocks.len() >= 4, "batches: {blocks:?}");
        assert_eq!(
            blocks.iter().filter(|&&b| b > BLOCK_BYTES).count(),
            1,
            "only the large entry's block is over a block's size: {blocks:?}"
        );
        assert_eq!(view.len(), 3_000);
        for i in 0..3_000 {
            assert_eq!(view.get(&format!("e{i}")), Some(stored(i)), "e{i}");
        }
    }
}
