//! The in-memory view of the store topic: last write wins per `dlqId`, a tombstone removes.
//!
//! Each entry is kept as its protobuf bytes (decoded only when read) plus the few fields filters
//! and ordering need, with repeated strings (URLs, IPs, labels) interned. Tombstoned ids are
//! remembered so a replayed failure of an entry already recovered is not stored again.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    ops::Bound,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, RwLock, RwLockReadGuard, RwLockWriteGuard,
    },
};

use prost::Message;

use super::filter::{Cursor, EntryFilter, FilterKeys};
use crate::wire::pb::DlqEntry;

struct Slot {
    created_at: i64,
    expires_at: i64,
    partition: i32,
    offset: i64,
    raw: Box<[u8]>,
    workflow_url: Arc<str>,
    workflow_run_id: Box<str>,
    workflow_created_at: i64,
    labels: Box<[Arc<str>]>,
    callback_state: i32,
    caller_ip: Arc<str>,
    flow_control_key: Arc<str>,
}

impl Slot {
    fn keys(&self) -> FilterKeys<'_> {
        FilterKeys {
            created_at: self.created_at,
            workflow_url: &self.workflow_url,
            workflow_run_id: &self.workflow_run_id,
            workflow_created_at: self.workflow_created_at,
            labels: &self.labels,
            callback_state: self.callback_state,
            caller_ip: &self.caller_ip,
            flow_control_key: &self.flow_control_key,
        }
    }
}

/// Just the fields of a `DlqEntry` the index needs (same tags as `dlq.proto`): decoding these
/// skips the headers, bodies and steps, which is most of the bytes — the view's rebuild on a
/// cold start decodes every entry once.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EntryKeys {
    #[prost(string, tag = "1")]
    pub dlq_id: String,
    #[prost(message, optional, tag = "2")]
    pub event: Option<EventKeys>,
    #[prost(int64, tag = "3")]
    pub created_at: i64,
    #[prost(int64, tag = "4")]
    pub expires_at: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EventKeys {
    #[prost(string, tag = "2")]
    pub workflow_run_id: String,
    #[prost(string, tag = "3")]
    pub workflow_url: String,
    #[prost(int64, tag = "4")]
    pub workflow_created_at: i64,
    #[prost(string, tag = "11")]
    pub caller_ip: String,
    #[prost(string, repeated, tag = "12")]
    pub labels: Vec<String>,
    #[prost(message, optional, tag = "13")]
    pub flow_control: Option<FlowControlKey>,
    #[prost(message, optional, tag = "20")]
    pub failure_callback_info: Option<CallbackState>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FlowControlKey {
    #[prost(string, tag = "1")]
    pub key: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CallbackState {
    #[prost(int32, tag = "1")]
    pub state: i32,
}

#[derive(Default)]
struct Index {
    entries: HashMap<Arc<str>, Slot>,
    order: BTreeSet<(i64, Arc<str>)>,
    deleted: HashSet<Arc<str>>,
    interned: HashSet<Arc<str>>,
    payload_bytes: usize,
}

impl Index {
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.interned.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.interned.insert(a.clone());
        a
    }

    fn remove(&mut self, id: &str) -> bool {
        match self.entries.remove_entry(id) {
            Some((key, slot)) => {
                self.order.remove(&(slot.created_at, key));
                self.payload_bytes -= slot.raw.len();
                true
            }
            None => false,
        }
    }
}

/// What the view knows of a `dlqId`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryState {
    Present,
    /// A tombstone was seen: the entry was recovered, deleted or expired.
    Deleted,
    Unknown,
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub entries: Vec<DlqEntry>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

/// The queryable view; shared by the reader (writes) and everything that answers (reads).
#[derive(Default)]
pub struct StoreView {
    index: RwLock<Index>,
    caught_up: AtomicBool,
    /// Next store offset to apply, per partition: how far the view has read.
    positions: std::sync::Mutex<HashMap<i32, i64>>,
}

impl StoreView {
    pub fn new() -> StoreView {
        StoreView::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, Index> {
        // A panic while holding the lock leaves a consistent index (every mutation is a
        // complete insert or remove), so poisoning is not a reason to stop answering.
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies an entry read from the store topic at `partition`/`offset`.
    pub fn upsert(&self, partition: i32, offset: i64, entry: &DlqEntry) {
        let raw = entry.encode_to_vec().into_boxed_slice();
        // Our own encoding of a decoded entry: its keys decode.
        if let Ok(keys) = EntryKeys::decode(&raw[..]) {
            self.upsert_keys(partition, offset, &keys, raw);
        }
    }

    /// Applies a protobuf-encoded entry as read from the store topic, given its index fields
    /// ([`EntryKeys`], decoded by the caller from the same bytes): the bytes are kept as read.
    pub fn upsert_keys(&self, partition: i32, offset: i64, entry: &EntryKeys, raw: Box<[u8]>) {
        let mut ix = self.write();
        let id = entry.dlq_id.as_str();
        ix.remove(id);
        ix.deleted.remove(id);
        let key: Arc<str> = Arc::from(id);
        let event = entry.event.as_ref();
        let ev = |f: fn(&EventKeys) -> &str| event.map(f).unwrap_or("");
        let slot = Slot {
            created_at: entry.created_at,
            expires_at: entry.expires_at,
            partition,
            offset,
            workflow_url: ix.intern(ev(|e| &e.workflow_url)),
            workflow_run_id: ev(|e| &e.workflow_run_id).into(),
            workflow_created_at: event.map(|e| e.workflow_created_at).unwrap_or(0),
            labels: event
                .map(|e| e.labels.iter().map(|l| ix.intern(l)).collect())
                .unwrap_or_default(),
            callback_state: event
                .and_then(|e| e.failure_callback_info.as_ref())
                .map(|i| i.state)
                .unwrap_or(0),
            caller_ip: ix.intern(ev(|e| &e.caller_ip)),
            flow_control_key: ix.intern(
                event
                    .and_then(|e| e.flow_control.as_ref())
                    .map(|f| f.key.as_str())
                    .unwrap_or(""),
            ),
            raw,
        };
        ix.payload_bytes += slot.raw.len();
        ix.order.insert((slot.created_at, key.clone()));
        ix.entries.insert(key, slot);
    }

    /// Applies a tombstone.
    pub fn remove(&self, dlq_id: &str) -> bool {
        let mut ix = self.write();
        let removed = ix.remove(dlq_id);
        let key: Arc<str> = Arc::from(dlq_id);
        ix.deleted.insert(key);
        removed
    }

    pub fn state(&self, dlq_id: &str) -> EntryState {
        let ix = self.read();
        if ix.entries.contains_key(dlq_id) {
            EntryState::Present
        } else if ix.deleted.contains(dlq_id) {
            EntryState::Deleted
        } else {
            EntryState::Unknown
        }
    }

    pub fn get(&self, dlq_id: &str) -> Option<DlqEntry> {
        let ix = self.read();
        ix.entries
            .get(dlq_id)
            .and_then(|s| DlqEntry::decode(&s.raw[..]).ok())
    }

    pub fn len(&self) -> usize {
        self.read().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the entries' encoded payloads (what the view must hold at the least).
    pub fn payload_bytes(&self) -> usize {
        self.read().payload_bytes
    }

    /// The oldest entry's `created_at`, if any.
    pub fn oldest_created_at(&self) -> Option<i64> {
        self.read().order.first().map(|(t, _)| *t)
    }

    /// Entries matching `filter`, ordered by `created_at` then `dlqId`, after `cursor`.
    pub fn list(&self, filter: &EntryFilter, cursor: Option<&Cursor>, count: usize) -> Page {
        let ix = self.read();
        let start = match cursor {
            Some(c) => Bound::Excluded((c.created_at, Arc::<str>::from(c.dlq_id.as_str()))),
            None => Bound::Unbounded,
        };
        let mut page = Page::default();
        let mut last = None;
        for (created_at, id) in ix.order.range((start, Bound::Unbounded)) {
            let Some(slot) = ix.entries.get(id) else {
                continue;
            };
            if !filter.matches(&slot.keys()) {
                continue;
            }
            if page.entries.len() == count {
                // There is at least one more: the page ends at the last one returned.
                page.next = last.take();
                break;
            }
            if let Ok(entry) = DlqEntry::decode(&slot.raw[..]) {
                page.entries.push(entry);
                last = Some(Cursor {
                    created_at: *created_at,
                    dlq_id: id.to_string(),
                });
            }
        }
        page
    }

    /// Ids of the entries matching `filter` (a bulk command's snapshot).
    pub fn matching_ids(&self, filter: &EntryFilter) -> Vec<String> {
        let ix = self.read();
        ix.order
            .iter()
            .filter(|(_, id)| {
                ix.entries
                    .get(id)
                    .is_some_and(|slot| filter.matches(&slot.keys()))
            })
            .map(|(_, id)| id.to_string())
            .collect()
    }

    /// Ids of the entries whose `expires_at` is at or before `now_ms`.
    pub fn expired_ids(&self, now_ms: i64) -> Vec<String> {
        let ix = self.read();
        ix.entries
            .iter()
            .filter(|(_, s)| s.expires_at > 0 && s.expires_at <= now_ms)
            .map(|(id, _)| id.to_string())
            .collect()
    }

    /// Per store partition, the lowest offset of an entry the view still holds: the partition's
    /// log start offset must never pass it.
    pub fn lowest_live_offsets(&self) -> HashMap<i32, i64> {
        let ix = self.read();
        let mut low: HashMap<i32, i64> = HashMap::new();
        for s in ix.entries.values() {
            low.entry(s.partition)
                .and_modify(|o| *o = (*o).min(s.offset))
                .or_insert(s.offset);
        }
        low
    }

    pub fn set_position(&self, partition: i32, next_offset: i64) {
        let mut p = self.positions.lock().unwrap_or_else(|e| e.into_inner());
        let at = p.entry(partition).or_insert(next_offset);
        *at = (*at).max(next_offset);
    }

    /// The next store offset the view will apply on `partition` (0 before any).
    pub fn position(&self, partition: i32) -> i64 {
        let p = self.positions.lock().unwrap_or_else(|e| e.into_inner());
        p.get(&partition).copied().unwrap_or(0)
    }

    pub fn set_caught_up(&self) {
        self.caught_up.store(true, Ordering::SeqCst);
    }

    /// True once the view has read the store up to the end offsets it saw at start.
    pub fn is_caught_up(&self) -> bool {
        self.caught_up.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::pb::FailureEvent;

    fn entry(id: &str, created_at: i64, url: &str) -> DlqEntry {
        DlqEntry {
            dlq_id: id.into(),
            created_at,
            expires_at: created_at + 1000,
            event: Some(FailureEvent {
                event_id: format!("e-{id}"),
                workflow_url: url.into(),
                workflow_run_id: format!("run-{id}"),
                labels: vec!["a".into()],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn last_write_wins_and_tombstones_remove() {
        let v = StoreView::new();
        v.upsert(0, 1, &entry("x", 10, "u1"));
        v.upsert(0, 2, &entry("x", 10, "u2"));
        assert_eq!(v.len(), 1);
        assert_eq!(v.get("x").unwrap().event.unwrap().workflow_url, "u2");
        assert!(v.remove("x"));
        assert_eq!(v.len(), 0);
        assert_eq!(v.state("x"), EntryState::Deleted);
        assert_eq!(v.state("y"), EntryState::Unknown);
        assert_eq!(v.payload_bytes(), 0);
    }

    #[test]
    fn pages_follow_created_at_then_id_and_end_without_cursor() {
        let v = StoreView::new();
        for (i, id) in ["c", "a", "b", "d", "e"].iter().enumerate() {
            v.upsert(0, i as i64, &entry(id, if *id == "e" { 1 } else { 5 }, "u"));
        }
        let all = EntryFilter::all();
        let p1 = v.list(&all, None, 2);
        let ids: Vec<_> = p1.entries.iter().map(|e| e.dlq_id.clone()).collect();
        assert_eq!(ids, ["e", "a"]);
        let p2 = v.list(&all, p1.next.as_ref(), 2);
        let ids: Vec<_> = p2.entries.iter().map(|e| e.dlq_id.clone()).collect();
        assert_eq!(ids, ["b", "c"]);
        let p3 = v.list(&all, p2.next.as_ref(), 2);
        assert_eq!(p3.entries.len(), 1);
        assert!(p3.next.is_none());
    }

    #[test]
    fn lowest_live_offsets_track_what_is_held() {
        let v = StoreView::new();
        v.upsert(0, 5, &entry("a", 1, "u"));
        v.upsert(0, 9, &entry("b", 1, "u"));
        v.upsert(1, 3, &entry("c", 1, "u"));
        v.remove("a");
        let low = v.lowest_live_offsets();
        assert_eq!(low[&0], 9);
        assert_eq!(low[&1], 3);
    }
}
