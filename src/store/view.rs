//! The in-memory view of the store topic: last write wins per `dlqId`, a tombstone removes.
//!
//! Each entry is one compact slot: its protobuf bytes as read, packed with others' in blocks
//! ([`super::payloads`]; decoded only when an entry is returned; the id is read from them too),
//! plus the fields filters and ordering need. Strings many entries share (URLs, IPs,
//! flow-control keys, label sets) are kept once and counted, so a filter compares numbers and
//! a value no entry holds any more is dropped. The id index and the listing order hold slot
//! numbers only: a scan never hashes an id. Tombstoned ids are remembered so a replayed failure
//! of an entry already recovered is not stored again.

use std::{
    borrow::Borrow,
    collections::HashMap,
    hash::{BuildHasher, Hash},
    sync::{RwLock, RwLockReadGuard, RwLockWriteGuard},
};

// foldhash (hashbrown's default) rather than SipHash: the view hashes several strings per entry
// on a cold start, and its seeds are still random per process.
use hashbrown::{DefaultHashBuilder, HashMap as FastMap, HashSet as FastSet, HashTable};
use prost::Message;

use super::{
    filter::{key_hash, Cursor, EntryFilter, FilterError, FilterKeys, Matcher, Order, Sym, Traits},
    keys::IndexKeys,
    payloads::{BlockId, PayloadRef, Payloads},
    postings::{Key, Postings, Union},
    text::Text,
};
use crate::{
    events::{Event, StoreIntegrityBreach},
    kafka::progress::ReadProgress,
    wire::pb::DlqEntry,
};

/// The fields with per-value lists, as indices into [`Index::by_value`] (the order of
/// [`Matcher::indexed`]).
const URL: usize = 0;
const CALLER_IP: usize = 1;
const FLOW_CONTROL_KEY: usize = 2;
const LABEL: usize = 3;
/// The failure signature: its list is the group, and keeps the group's aggregates (count,
/// first and last seen) without a scan.
const SIGNATURE: usize = 4;

/// `(created_at, slot)`: a position in the listing order.
type At = (i64, u32);

/// A group end not found yet.
const UNMET: At = (i64::MIN, u32::MAX);

/// The partition of a free slot (one whose entry was removed; reused by the next insert).
const FREE: i32 = -1;

/// One entry: 88 bytes plus its payload. The id is not stored apart: it is read from the
/// payload, where the entry's protobuf bytes already hold it.
struct Slot {
    /// The entry's protobuf bytes, in [`Index::payloads`].
    payload: PayloadRef,
    /// Where the `dlqId` sits in the entry's bytes.
    id_at: u32,
    id_len: u32,
    created_at: i64,
    expires_at: i64,
    workflow_created_at: i64,
    offset: i64,
    workflow_run_id_hash: u32,
    message_id_hash: u32,
    partition: i32,
    /// Callback state, response status, topic, queue, schedule, signature and redrive count:
    /// one [`Traits`] symbol.
    traits: Sym,
    workflow_url: Sym,
    caller_ip: Sym,
    flow_control_key: Sym,
    labels: Sym,
}

impl Slot {
    fn free() -> Slot {
        Slot {
            payload: PayloadRef::NONE,
            id_at: 0,
            id_len: 0,
            created_at: 0,
            expires_at: 0,
            workflow_created_at: 0,
            offset: 0,
            workflow_run_id_hash: 0,
            message_id_hash: 0,
            partition: FREE,
            traits: 0,
            workflow_url: 0,
            caller_ip: 0,
            flow_control_key: 0,
            labels: 0,
        }
    }

    /// The entry's protobuf bytes.
    fn raw<'a>(&self, payloads: &'a Payloads) -> &'a [u8] {
        payloads.get(self.payload)
    }

    fn id_bytes<'a>(&self, payloads: &'a Payloads) -> &'a [u8] {
        let at = self.id_at as usize;
        self.raw(payloads)
            .get(at..at + self.id_len as usize)
            .unwrap_or_default()
    }

    /// The entry's `dlqId` (checked UTF-8 when the entry was read).
    fn id<'a>(&self, payloads: &'a Payloads) -> &'a str {
        std::str::from_utf8(self.id_bytes(payloads)).unwrap_or_default()
    }
}

/// Values many entries share, each kept once and named by a number, with how many entries
/// hold it: the last holder's release drops it.
///
/// The value is kept once, in `values`; the lookup table holds its number only, hashed from
/// the value there (as the id table holds slot numbers). A map from value to number held every
/// value twice over and ~20 more bytes a bucket: at ~1.75 buckets per value, ~35 B of each of
/// the 65,536 caller IPs of `dlq-bench`'s data (issue 13's memory curve).
struct Symbols<K> {
    hasher: DefaultHashBuilder,
    ids: HashTable<Sym>,
    values: Vec<Option<(K, u32)>>,
    free: Vec<Sym>,
}

impl<K> Default for Symbols<K> {
    fn default() -> Self {
        Symbols {
            hasher: DefaultHashBuilder::default(),
            ids: HashTable::new(),
            values: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<K: Hash + Eq> Symbols<K> {
    fn lookup<Q: ?Sized + Hash + Eq>(&self, value: &Q) -> Option<Sym>
    where
        K: Borrow<Q>,
    {
        let values = &self.values;
        self.ids
            .find(self.hasher.hash_one(value), |&s| {
                values
                    .get(s as usize)
                    .and_then(|v| v.as_ref())
                    .is_some_and(|(k, _)| k.borrow() == value)
            })
            .copied()
    }

    /// The symbol of `value`, held once more; `true` when it was not held before.
    fn acquire<Q: ?Sized + Hash + Eq>(&mut self, value: &Q) -> (Sym, bool)
    where
        K: Borrow<Q> + for<'a> From<&'a Q>,
    {
        if let Some(sym) = self.lookup(value) {
            self.hold(sym);
            return (sym, false);
        }
        let hash = self.hasher.hash_one(value);
        let key = K::from(value);
        let sym = match self.free.pop() {
            Some(sym) => {
                self.values[sym as usize] = Some((key, 1));
                sym
            }
            None => {
                grow_by_an_eighth(&mut self.values);
                self.values.push(Some((key, 1)));
                (self.values.len() - 1) as Sym
            }
        };
        let (values, hasher) = (&self.values, &self.hasher);
        self.ids.insert_unique(hash, sym, |&s| {
            values
                .get(s as usize)
                .and_then(|v| v.as_ref())
                .map_or(0, |(k, _)| hasher.hash_one(k))
        });
        (sym, true)
    }

    fn hold(&mut self, sym: Sym) {
        if let Some(Some((_, holders))) = self.values.get_mut(sym as usize) {
            *holders += 1;
        }
    }

    /// Lets go of `sym` once; returns its value when nobody holds it any more.
    fn release(&mut self, sym: Sym) -> Option<K> {
        let slot = self.values.get_mut(sym as usize)?;
        let (_, holders) = slot.as_mut()?;
        *holders -= 1;
        if *holders > 0 {
            return None;
        }
        let (value, _) = slot.take()?;
        if let Ok(found) = self
            .ids
            .find_entry(self.hasher.hash_one(&value), |&s| s == sym)
        {
            found.remove();
        }
        self.free.push(sym);
        Some(value)
    }

    fn get(&self, sym: Sym) -> Option<&K> {
        self.values
            .get(sym as usize)
            .and_then(|v| v.as_ref())
            .map(|(k, _)| k)
    }
}

#[derive(Default)]
struct Index {
    hasher: DefaultHashBuilder,
    /// Slot numbers, found by the hash of the slot's id.
    by_id: HashTable<u32>,
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    /// Listing order by `created_at` (ties are put in `dlqId` order when walked: [`Index::walk`]):
    /// every slot, in the chunked list the per-value lists use (~4.5 bytes an entry; a
    /// `BTreeSet<(i64, u32)>` filled in time order held its 16-byte keys in half-full nodes,
    /// ~30 bytes an entry).
    order: Postings,
    deleted: FastSet<Box<str>>,
    strings: Symbols<Text>,
    label_sets: Symbols<Box<[Sym]>>,
    traits: Symbols<Traits>,
    /// Per indexed field ([`URL`], [`CALLER_IP`], [`FLOW_CONTROL_KEY`], [`LABEL`]: each label of
    /// the set, [`SIGNATURE`]), per value: the keys of the entries holding it, in the order's
    /// order, and their traits tallied. Empty strings are not listed (no filter asks for them).
    by_value: [FastMap<Sym, Listed>; 5],
    /// The entries' bytes, in blocks.
    payloads: Payloads,
    /// `--max-redrives`: which entries the `parked` filter means (0: none).
    max_redrives: u32,
    /// The per-value lists are not kept yet ([`StoreView::defer_lists`]): a cold start fills
    /// the view first and builds them in one pass once caught up. Meanwhile every query scans.
    lists_deferred: bool,
}

/// Makes room for one more in `v`, by an eighth of its length at a time rather than doubling:
/// the slots and the symbol tables grow one entry or value at a time for as long as the service
/// runs, and a doubled `Vec` held up to as much room again as it used (88 B per entry for the
/// slots: a view grown live to 600,000 entries held room for 1,048,576). A large block grows in
/// place (glibc's `realloc` remaps its pages), so the extra reallocations cost little.
fn grow_by_an_eighth<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact((v.len() / 8).max(16));
    }
}

/// Slot `s`'s place in the listing order.
fn slot_key(slots: &[Slot], s: u32) -> Key {
    Key::new(slots[s as usize].created_at, s)
}

/// How [`Index::list_values`] changes a slot's lists.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Listing {
    Add,
    /// Add a key known to sort after every key of its lists ([`Index::build_lists`]).
    Append,
    Remove,
}

impl Listing {
    /// Adds `key` (of a slot with traits `traits_sym`) to, or removes it from, the list of
    /// value `sym` among `lists`, the lists of `field`; `slots` are the view's (a listed
    /// slot's key and traits are read there).
    fn apply(
        self,
        lists: &mut FastMap<Sym, Listed>,
        field: usize,
        (sym, key, traits_sym): (Sym, Key, Sym),
        slots: &[Slot],
    ) {
        let at = |s: u32| slot_key(slots, s);
        let traits_of = |s: u32| slots[s as usize].traits;
        let tallied = field != SIGNATURE;
        if self != Listing::Remove {
            let listed = match lists.entry(sym) {
                hashbrown::hash_map::Entry::Occupied(o) => {
                    let listed = o.into_mut();
                    if self == Listing::Append {
                        listed.keys.push_last(key);
                    } else {
                        listed.keys.insert(key, at);
                    }
                    listed
                }
                hashbrown::hash_map::Entry::Vacant(v) => v.insert(Listed {
                    keys: Postings::new(key),
                }),
            };
            if tallied {
                listed.count(traits_sym, true, traits_of);
            }
        } else if let Some(listed) = lists.get_mut(&sym) {
            listed.keys.remove(key, at);
            if tallied {
                listed.count(traits_sym, false, traits_of);
            }
            if listed.keys.is_empty() {
                lists.remove(&sym);
            }
        }
    }
}

/// A slot's listed values, `(field, symbol)`: its URL, caller IP, flow-control key and
/// signature, then each of its labels; empty strings are not listed (no filter asks for them).
fn listed_values<'a>(
    slot: &'a Slot,
    strings: &'a Symbols<Text>,
    label_sets: &'a Symbols<Box<[Sym]>>,
    traits: &'a Symbols<Traits>,
) -> impl Iterator<Item = (usize, Sym)> + 'a {
    let labels = label_sets.get(slot.labels).map_or(&[][..], |l| &l[..]);
    let signature = traits.get(slot.traits).map_or(0, |t| t.signature);
    let fields = [
        (URL, slot.workflow_url),
        (CALLER_IP, slot.caller_ip),
        (FLOW_CONTROL_KEY, slot.flow_control_key),
        (SIGNATURE, signature),
    ];
    fields
        .into_iter()
        .chain(labels.iter().map(|&l| (LABEL, l)))
        .filter(|&(_, sym)| strings.get(sym).is_some_and(|s| !s.is_empty()))
}

/// The entries holding one value of an indexed field, and how many of them hold each
/// [`Traits`] symbol: a filter on this value and on traits fields (the signature, `parked`, a
/// status…) is then counted per kind of failure without visiting an entry (groups and the
/// console's count at a million entries; issue 15).
///
/// 16 bytes in its field's map: a value held by one entry (most caller IPs) costs a bucket of
/// 24 bytes and no allocation.
struct Listed {
    keys: Postings<Tally>,
}

/// `(traits symbol, entries)`, sorted by symbol, no zero counts, beside a list's keys — kept
/// only for a list of [`TALLY_FROM`] keys or more: a shorter one is counted by visiting its few
/// slots ([`Listed::tally`]). A tally for every value, in the map beside the keys, cost each
/// value an allocation and 16 bytes a bucket: ~75 B per caller IP, the most of any part of the
/// view at 10,000 to 100,000 entries (issue 13's memory curve). Never kept for the signature
/// lists (the signature is itself a trait).
// Boxed: the list's box grows by 8 bytes, not a `Vec`'s 24.
#[allow(clippy::box_collection)]
type Tally = Option<Box<Vec<(Sym, u32)>>>;

/// A list gets its tally when it reaches this many keys…
const TALLY_FROM: usize = 32;
/// …and loses it when it falls below this many (apart, so a list that hovers does not build
/// and drop it in turn).
const TALLY_UNTIL: usize = 16;

impl Listed {
    /// Counts one more (`add`) or one fewer holder of `traits`, after the key was added to or
    /// removed from `keys`; `traits_of(slot)` reads a listed slot's traits when the tally is
    /// built.
    fn count(&mut self, traits: Sym, add: bool, traits_of: impl Fn(u32) -> Sym) {
        let n = self.keys.len();
        let build = add && n >= TALLY_FROM && self.kept().is_none();
        let built = build.then(|| Box::new(self.tally_by_visit(traits_of)));
        // A list of one key has nowhere to keep a tally, and needs none.
        let Some(kept) = self.keys.extra_mut() else {
            return;
        };
        if built.is_some() {
            *kept = built;
            return;
        }
        let Some(tally) = kept else {
            return;
        };
        match tally.binary_search_by_key(&traits, |t| t.0) {
            Ok(i) if add => tally[i].1 += 1,
            Ok(i) => {
                tally[i].1 -= 1;
                if tally[i].1 == 0 {
                    tally.remove(i);
                }
            }
            Err(i) if add => tally.insert(i, (traits, 1)),
            Err(_) => {}
        }
        if !add && n < TALLY_UNTIL {
            *kept = None;
        }
    }

    fn kept(&self) -> Option<&[(Sym, u32)]> {
        self.keys.extra().and_then(|t| t.as_deref()).map(|t| &t[..])
    }

    /// `(traits symbol, entries)` over the list, sorted by symbol: the kept tally, or the
    /// list's slots visited (a short list).
    fn tally(&self, traits_of: impl Fn(u32) -> Sym) -> std::borrow::Cow<'_, [(Sym, u32)]> {
        match self.kept() {
            Some(t) => std::borrow::Cow::Borrowed(t),
            None => std::borrow::Cow::Owned(self.tally_by_visit(traits_of)),
        }
    }

    fn tally_by_visit(&self, traits_of: impl Fn(u32) -> Sym) -> Vec<(Sym, u32)> {
        let mut held: Vec<Sym> = self.keys.slots().map(traits_of).collect();
        held.sort_unstable();
        let mut tally: Vec<(Sym, u32)> = Vec::new();
        for t in held {
            match tally.last_mut() {
                Some((last, n)) if *last == t => *n += 1,
                _ => tally.push((t, 1)),
            }
        }
        tally
    }
}

impl Index {
    fn state(&self, dlq_id: &str) -> EntryState {
        if self.find(dlq_id).is_some() {
            EntryState::Present
        } else if self.deleted.contains(dlq_id) {
            EntryState::Deleted
        } else {
            EntryState::Unknown
        }
    }

    fn find(&self, id: &str) -> Option<&Slot> {
        let (slots, payloads) = (&self.slots, &self.payloads);
        self.by_id
            .find(self.hasher.hash_one(id), |&i| {
                slots[i as usize].id_bytes(payloads) == id.as_bytes()
            })
            .map(|&i| &slots[i as usize])
    }

    /// The sorted, de-duplicated label set of an entry, held once more.
    fn acquire_labels(&mut self, labels: &[&str]) -> Sym {
        let mut names: Vec<&str> = labels.to_vec();
        names.sort_unstable();
        names.dedup();
        let mut syms: Vec<Sym> = names.iter().map(|n| self.strings.acquire(*n).0).collect();
        syms.sort_unstable();
        let (set, new) = self.label_sets.acquire(&syms[..]);
        if !new {
            // The set already holds its strings.
            for s in syms {
                self.strings.release(s);
            }
        }
        set
    }

    /// The traits of an entry, held once more (with their strings).
    fn acquire_traits(&mut self, e: &IndexKeys<'_>, signature: &str) -> Sym {
        let t = Traits {
            callback_state: e.callback_state,
            response_status: e.response_status,
            topic_name: self.strings.acquire(e.topic_name).0,
            queue_name: self.strings.acquire(e.queue_name).0,
            schedule_id: self.strings.acquire(e.schedule_id).0,
            signature: self.strings.acquire(signature).0,
            redrives: Traits::clamp_redrives(e.redrive_count),
        };
        let (sym, new) = self.traits.acquire(&t);
        if !new {
            // The combination already holds its strings.
            self.release_trait_strings(&t);
        }
        sym
    }

    fn release_trait_strings(&mut self, t: &Traits) {
        for sym in [t.topic_name, t.queue_name, t.schedule_id, t.signature] {
            self.strings.release(sym);
        }
    }

    /// Inserts (or replaces) the entry whose protobuf bytes are `payload`, in a block of
    /// [`Index::payloads`] (kept as they are: no copy); its index fields are read from them.
    fn insert(&mut self, partition: i32, offset: i64, payload: PayloadRef) {
        // Shared, so the fields read from it borrow nothing of the index they change.
        let raw = self.payloads.share(payload);
        let entry = match IndexKeys::read(&raw) {
            Ok(keys) => keys,
            Err(e) => {
                StoreIntegrityBreach {
                    what: &format!(
                        "undecodable store record at partition {partition} offset {offset}: \
                         {e}; skipped"
                    ),
                }
                .emit();
                return;
            }
        };
        let id = entry.dlq_id;
        let hash = self.hasher.hash_one(id);
        self.remove_hashed(hash, id);
        self.deleted.remove(id);
        // The id inside `raw`: `entry.dlq_id` borrows from it.
        let id_at = (id.as_ptr() as usize)
            .checked_sub(raw.as_ptr() as usize)
            .filter(|at| raw.get(*at..*at + id.len()) == Some(id.as_bytes()));
        let Some(id_at) = id_at else {
            tracing::error!(
                dlq_id = id,
                "index fields not read from the entry's bytes; skipped"
            );
            return;
        };
        let signature = entry.signature();
        let slot = Slot {
            payload,
            id_at: id_at as u32,
            id_len: id.len() as u32,
            created_at: entry.created_at,
            expires_at: entry.expires_at,
            partition,
            offset,
            workflow_url: self.strings.acquire(entry.workflow_url).0,
            workflow_run_id_hash: key_hash(entry.workflow_run_id),
            message_id_hash: key_hash(entry.message_id),
            workflow_created_at: entry.workflow_created_at,
            labels: self.acquire_labels(&entry.labels),
            traits: self.acquire_traits(&entry, &signature),
            caller_ip: self.strings.acquire(entry.caller_ip).0,
            flow_control_key: self.strings.acquire(entry.flow_control_key).0,
        };
        drop(signature);
        drop(entry);
        let created_at = slot.created_at;
        let i = match self.free_slots.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                grow_by_an_eighth(&mut self.slots);
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        self.payloads.add(payload, i);
        let (slots, hasher, payloads) = (&self.slots, &self.hasher, &self.payloads);
        self.by_id.insert_unique(hash, i, |&j| {
            hasher.hash_one(slots[j as usize].id(payloads))
        });
        self.order
            .insert(Key::new(created_at, i), |s| slot_key(slots, s));
        if !self.lists_deferred {
            self.index_values(i, true);
        }
    }

    /// Builds every per-value list from the entries, in listing order: each key is appended
    /// at its list's end (no search inside a chunk). A replay's keys arrive in each
    /// partition's order, interleaved, so inserting them one by one searched a chunk per list
    /// per entry, reading a slot at each step: most of a cold start's index work.
    fn build_lists(&mut self) {
        if !self.lists_deferred {
            return;
        }
        self.lists_deferred = false;
        let keys: Vec<u32> = self.order.slots().collect();
        let Index {
            slots,
            strings,
            label_sets,
            traits,
            by_value,
            ..
        } = self;
        let (slots, strings, label_sets, traits) = (&*slots, &*strings, &*label_sets, &*traits);
        // Fields `from..` of the lists, in `lists`: each field's lists are its own, so two
        // threads build disjoint fields over the same slots (a million entries took 0.6–0.75 s
        // on one core, with the other idle: the replay is over).
        let append = |lists: &mut [FastMap<Sym, Listed>], from: usize| {
            for &i in &keys {
                let slot = &slots[i as usize];
                let key = Key::new(slot.created_at, i);
                for (field, sym) in listed_values(slot, strings, label_sets, traits) {
                    if let Some(lists) = field.checked_sub(from).and_then(|f| lists.get_mut(f)) {
                        Listing::Append.apply(lists, field, (sym, key, slot.traits), slots);
                    }
                }
            }
        };
        // URL, caller IP and flow-control key on one; labels and the signature on the other.
        let (first, second) = by_value.split_at_mut(LABEL);
        // Behind a lock only so that either thread may take it (it is never contended).
        let second = std::sync::Mutex::new(second);
        let append_second = || {
            let mut lists = second.lock().unwrap_or_else(|p| p.into_inner());
            append(&mut lists, LABEL);
        };
        std::thread::scope(|s| {
            let other = std::thread::Builder::new()
                .name("store-lists".into())
                .spawn_scoped(s, append_second);
            append(first, 0);
            match other {
                Ok(other) => {
                    if let Err(panic) = other.join() {
                        std::panic::resume_unwind(panic);
                    }
                }
                // No second thread: this one builds those fields too.
                Err(_) => append_second(),
            }
        });
    }

    /// Adds slot `i` to (or removes it from) the per-value lists of its values.
    fn index_values(&mut self, i: u32, add: bool) {
        self.list_values(i, if add { Listing::Add } else { Listing::Remove });
    }

    fn list_values(&mut self, i: u32, how: Listing) {
        let Index {
            slots,
            strings,
            label_sets,
            traits,
            by_value,
            ..
        } = self;
        let slot = &slots[i as usize];
        let key = Key::new(slot.created_at, i);
        for (field, sym) in listed_values(slot, strings, label_sets, traits) {
            how.apply(&mut by_value[field], field, (sym, key, slot.traits), slots);
        }
    }

    /// Moves the entries of mostly-dead or small payload blocks into a new one, when there are
    /// enough to be worth it (bounded per call: [`Payloads::compact`]).
    fn compact_payloads(&mut self) {
        if !self.payloads.wants_compaction() {
            return;
        }
        let slots = &self.slots;
        let moves = self.payloads.compact(|s| {
            slots
                .get(s as usize)
                .map_or(PayloadRef::NONE, |slot| slot.payload)
        });
        for (s, r) in moves {
            self.slots[s as usize].payload = r;
        }
    }

    /// Removes the entry `id`; true when it was there.
    fn remove(&mut self, id: &str) -> bool {
        self.remove_hashed(self.hasher.hash_one(id), id)
    }

    fn remove_hashed(&mut self, hash: u64, id: &str) -> bool {
        let (slots, payloads) = (&self.slots, &self.payloads);
        let Ok(found) = self.by_id.find_entry(hash, |&i| {
            slots[i as usize].id_bytes(payloads) == id.as_bytes()
        }) else {
            return false;
        };
        let (i, _) = found.remove();
        if !self.lists_deferred {
            self.index_values(i, false);
        }
        let slots = &self.slots;
        let key = Key::new(slots[i as usize].created_at, i);
        self.order.remove(key, |s| slot_key(slots, s));
        let slot = std::mem::replace(&mut self.slots[i as usize], Slot::free());
        self.free_slots.push(i);
        self.payloads.release(slot.payload);
        for sym in [slot.workflow_url, slot.caller_ip, slot.flow_control_key] {
            self.strings.release(sym);
        }
        if let Some(set) = self.label_sets.release(slot.labels) {
            for sym in set.iter() {
                self.strings.release(*sym);
            }
        }
        if let Some(t) = self.traits.release(slot.traits) {
            self.release_trait_strings(&t);
        }
        true
    }

    /// Visits the entries `keep` accepts in listing order — `created_at`, then `dlqId` — after
    /// `after`, until `visit` returns false. Entries sharing a `created_at` are sorted by id as
    /// they are reached (a millisecond's worth: small); `keep` runs first, so entries a filter
    /// refuses cost no more than the check.
    fn walk(
        &self,
        candidates: impl Iterator<Item = (i64, u32)>,
        order: Order,
        after: Option<&Cursor>,
        keep: impl Fn(&Slot) -> bool,
        mut visit: impl FnMut(i64, &Slot) -> bool,
    ) {
        let latest_first = order == Order::LatestFirst;
        let mut group: Vec<(&str, u32)> = Vec::new();
        let mut flush = |t: i64, group: &mut Vec<(&str, u32)>| -> bool {
            group.sort_unstable();
            if latest_first {
                group.reverse();
            }
            for (id, i) in group.drain(..) {
                let passed = |c: &Cursor| {
                    let id = id.as_bytes();
                    let at = c.dlq_id.as_bytes();
                    t == c.created_at && if latest_first { id >= at } else { id <= at }
                };
                if after.is_some_and(passed) {
                    continue;
                }
                if !visit(t, &self.slots[i as usize]) {
                    return false;
                }
            }
            true
        };
        let mut current = None;
        for (t, i) in candidates {
            let slot = &self.slots[i as usize];
            if !keep(slot) {
                continue;
            }
            if current != Some(t) {
                if let Some(prev) = current {
                    if !flush(prev, &mut group) {
                        return;
                    }
                }
                current = Some(t);
            }
            group.push((slot.id(&self.payloads), i));
        }
        if let Some(prev) = current {
            flush(prev, &mut group);
        }
    }

    fn live(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter().filter(|s| s.partition != FREE)
    }

    fn matches(&self, m: &Matcher, slot: &Slot) -> bool {
        let keys = FilterKeys {
            created_at: slot.created_at,
            workflow_url: slot.workflow_url,
            workflow_run_id_hash: slot.workflow_run_id_hash,
            message_id_hash: slot.message_id_hash,
            workflow_created_at: slot.workflow_created_at,
            labels: self.label_sets.get(slot.labels).map_or(&[], |l| &l[..]),
            traits: slot.traits,
            caller_ip: slot.caller_ip,
            flow_control_key: slot.flow_control_key,
        };
        m.matches(&keys, || {
            IndexKeys::read(slot.raw(&self.payloads))
                .ok()
                .map(|k| (k.workflow_run_id.to_string(), k.message_id.to_string()))
        })
    }

    /// The keys, from `from` on in `order`, of a superset of the entries `m` matches: with
    /// `use_index`, those of the filtered field whose wanted values the fewest entries hold (a
    /// rare value's matches only); else every entry.
    fn candidates<'a>(
        &'a self,
        m: &'a Matcher,
        from: (i64, u32),
        order: Order,
        use_index: bool,
    ) -> Box<dyn Iterator<Item = (i64, u32)> + 'a> {
        let latest_first = order == Order::LatestFirst;
        let best = m
            .indexed()
            .into_iter()
            .enumerate()
            .filter(|(_, wanted)| use_index && !self.lists_deferred && !wanted.is_empty())
            .map(|(field, wanted)| {
                let held: usize = wanted
                    .iter()
                    .filter_map(|s| self.by_value[field].get(s))
                    .map(|l| l.keys.len())
                    .sum();
                (held, field, wanted)
            })
            .min_by_key(|(held, ..)| *held);
        match best {
            Some((held, field, wanted)) if held < self.order.len() => {
                let from = Key::new(from.0, from.1);
                let at = move |s: u32| Key::new(self.slots[s as usize].created_at, s);
                let lists = wanted
                    .iter()
                    .filter_map(|s| self.by_value[field].get(s))
                    .map(|l| &l.keys);
                if latest_first {
                    let lists: Vec<Box<dyn Iterator<Item = Key> + 'a>> = lists
                        .map(|p| Box::new(p.until(from, at)) as Box<dyn Iterator<Item = Key> + 'a>)
                        .collect();
                    Box::new(Union::ordered(lists, true).map(Key::get))
                } else {
                    let lists: Vec<Box<dyn Iterator<Item = Key> + 'a>> = lists
                        .map(|p| Box::new(p.from(from, at)) as Box<dyn Iterator<Item = Key> + 'a>)
                        .collect();
                    Box::new(Union::ordered(lists, false).map(Key::get))
                }
            }
            _ if latest_first => Box::new(
                self.order
                    .until(Key::new(from.0, from.1), |s| slot_key(&self.slots, s))
                    .map(Key::get),
            ),
            _ => Box::new(
                self.order
                    .from(Key::new(from.0, from.1), |s| slot_key(&self.slots, s))
                    .map(Key::get),
            ),
        }
    }

    /// The entries `m` matches, counted per traits symbol from the lists' tallies without
    /// visiting an entry — when the filter allows it: traits fields, and at most one listed
    /// field besides the signature (of one value for labels: an entry holding two wanted
    /// labels would be counted twice). `None`: the matches must be visited.
    fn tally(&self, m: &Matcher) -> Option<Vec<u64>> {
        if self.lists_deferred || !m.reads_traits_and_lists_only() {
            return None;
        }
        let listed: Vec<(usize, &[Sym])> = m
            .indexed()
            .into_iter()
            .enumerate()
            .filter(|(field, wanted)| *field != SIGNATURE && !wanted.is_empty())
            .collect();
        let mut counts = vec![0u64; self.traits.values.len()];
        match listed[..] {
            [] => {
                for (t, held) in self.traits.values.iter().enumerate() {
                    if let Some((_, holders)) = held {
                        if m.allows_traits(t as Sym) {
                            counts[t] = u64::from(*holders);
                        }
                    }
                }
            }
            [(field, wanted)] => {
                let mut wanted = wanted.to_vec();
                wanted.sort_unstable();
                wanted.dedup();
                if field == LABEL && wanted.len() > 1 {
                    return None;
                }
                let traits_of = |s: u32| self.slots[s as usize].traits;
                for listed in wanted.iter().filter_map(|s| self.by_value[field].get(s)) {
                    for &(t, n) in listed.tally(traits_of).iter() {
                        if let Some(c) = counts.get_mut(t as usize) {
                            if m.allows_traits(t) {
                                *c += u64::from(n);
                            }
                        }
                    }
                }
            }
            _ => return None,
        }
        Some(counts)
    }

    /// Groups of the matches of `m` from the lists' tallies ([`Index::tally`]), when the
    /// filter allows it.
    fn tallied_groups(&self, m: &Matcher) -> Option<FastMap<Sym, (u64, At, At)>> {
        let mut by_sig: FastMap<Sym, (u64, At, At)> = FastMap::default();
        for (t, n) in self.tally(m)?.into_iter().enumerate() {
            if let Some(traits) = self.traits.get(t as Sym).filter(|_| n > 0) {
                by_sig
                    .entry(traits.signature)
                    .or_insert((0, UNMET, UNMET))
                    .0 += n;
            }
        }
        self.group_ends(m, &mut by_sig);
        Some(by_sig)
    }

    /// The oldest and newest match of each signature in `groups` (whose counts are known): the
    /// matches are walked from each end of the listing order until every group has been met,
    /// so it costs a few steps per group unless a group's matches are rare and far from both
    /// ends (then as much as the scan it replaces).
    fn group_ends(&self, m: &Matcher, groups: &mut FastMap<Sym, (u64, At, At)>) {
        for order in [Order::EarliestFirst, Order::LatestFirst] {
            let from = match order {
                Order::EarliestFirst => (i64::MIN, 0),
                Order::LatestFirst => (i64::MAX, u32::MAX),
            };
            let mut unmet = groups.len();
            for key in self.candidates(m, from, order, true) {
                if unmet == 0 {
                    break;
                }
                let slot = &self.slots[key.1 as usize];
                if !self.matches(m, slot) {
                    continue;
                }
                let Some(g) = self
                    .traits
                    .get(slot.traits)
                    .and_then(|t| groups.get_mut(&t.signature))
                else {
                    continue;
                };
                let end = if order == Order::EarliestFirst {
                    &mut g.1
                } else {
                    &mut g.2
                };
                if *end == UNMET {
                    *end = key;
                    unmet -= 1;
                }
            }
        }
    }

    /// Groups of the matches of `m` by visiting each: counted per traits symbol (a vector
    /// index, no hashing per entry), then folded into signatures (several combinations share
    /// one). Keys are compared, not assumed ordered, so a full scan can walk the slots in
    /// memory order.
    fn scan_groups(&self, m: &Matcher) -> FastMap<Sym, (u64, At, At)> {
        let mut by_traits: Vec<(u64, At, At)> =
            vec![(0, (i64::MAX, u32::MAX), (i64::MIN, 0)); self.traits.values.len()];
        let mut count = |slot: &Slot, key: At| {
            if !self.matches(m, slot) {
                return;
            }
            if let Some(g) = by_traits.get_mut(slot.traits as usize) {
                g.0 += 1;
                g.1 = g.1.min(key);
                g.2 = g.2.max(key);
            }
        };
        if !self.lists_deferred && m.indexed().iter().any(|wanted| !wanted.is_empty()) {
            for key in self.candidates(m, (i64::MIN, 0), Order::EarliestFirst, true) {
                count(&self.slots[key.1 as usize], key);
            }
        } else {
            // Every entry is a candidate: the slots in memory order beat the B-tree.
            for (i, slot) in self.slots.iter().enumerate() {
                if slot.partition != FREE {
                    count(slot, (slot.created_at, i as u32));
                }
            }
        }
        let mut by_sig: FastMap<Sym, (u64, At, At)> = FastMap::default();
        for (t, g) in by_traits.into_iter().enumerate() {
            let Some(traits) = self.traits.get(t as Sym).filter(|_| g.0 > 0) else {
                continue;
            };
            by_sig
                .entry(traits.signature)
                .and_modify(|s| {
                    s.0 += g.0;
                    s.1 = s.1.min(g.1);
                    s.2 = s.2.max(g.2);
                })
                .or_insert(g);
        }
        by_sig
    }

    fn matcher(&self, filter: &EntryFilter) -> Option<Matcher> {
        let mut m = filter.resolve(|s| self.strings.lookup(s), self.max_redrives)?;
        if m.filters_traits() {
            // Few distinct combinations: decide each once, then a scan tests one flag.
            let allowed: Vec<bool> = self
                .traits
                .values
                .iter()
                .map(|v| v.as_ref().is_some_and(|(t, _)| m.accepts_traits(t)))
                .collect();
            if !allowed.contains(&true) {
                return None;
            }
            m.allow_traits(allowed);
        }
        Some(m)
    }
}

/// One kind of failure: the entries sharing a signature (docs/design.md §5 *Groups*).
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub signature: String,
    pub count: u64,
    /// The `created_at` of the group's oldest and newest entries.
    pub first_seen: i64,
    pub last_seen: i64,
    /// The newest entry of the group: its fields describe the group.
    pub sample: Option<DlqEntry>,
}

/// Where a page of groups ends. Groups are ordered by count, largest first, then signature;
/// the next page starts after this one, so a cursor stays usable while counts change (a group
/// that grew past it is not shown again, one that shrank below it may be).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupCursor {
    pub count: u64,
    pub signature: String,
}

impl GroupCursor {
    pub fn encode(&self) -> String {
        use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
        URL_SAFE_NO_PAD.encode(format!("g:{}:{}", self.count, self.signature))
    }

    pub fn decode(text: &str) -> Result<GroupCursor, FilterError> {
        use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
        let raw = URL_SAFE_NO_PAD
            .decode(text.trim())
            .map_err(|_| FilterError::Cursor)?;
        let raw = String::from_utf8(raw).map_err(|_| FilterError::Cursor)?;
        let rest = raw.strip_prefix("g:").ok_or(FilterError::Cursor)?;
        let (count, signature) = rest.split_once(':').ok_or(FilterError::Cursor)?;
        Ok(GroupCursor {
            count: count.parse().map_err(|_| FilterError::Cursor)?,
            signature: signature.to_string(),
        })
    }
}

/// One page of groups.
#[derive(Debug, Clone, Default)]
pub struct GroupPage {
    pub groups: Vec<Group>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<GroupCursor>,
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
    /// Bytes of the entries as stored: what sizes the page's JSON buffer.
    pub stored_bytes: usize,
}

/// A block of entries' bytes taken by the view ([`StoreView::adopt_block`]), whose entries are
/// being applied. Dropped, the block is the view's alone: freed once its entries are gone, or
/// compacted once most are.
pub struct BlockBatch<'v> {
    view: &'v StoreView,
    block: BlockId,
}

impl BlockBatch<'_> {
    /// Applies the entries at `at..at + len` of the block, as read from the store topic at
    /// their partition and offset, under one write lock: taken per entry, the lock's hand-offs
    /// with ingest's reads (a duplicate check per failure) put both threads to sleep and wake
    /// them tens of thousands of times a second. An entry outside the block is skipped, said.
    pub fn upsert_all(&self, entries: impl IntoIterator<Item = (i32, i64, u32, u32)>) {
        let mut ix = self.view.write();
        for (partition, offset, at, len) in entries {
            match ix.payloads.locate(self.block, at, len) {
                Some(payload) => ix.insert(partition, offset, payload),
                None => tracing::error!(
                    partition,
                    offset,
                    at,
                    len,
                    "store entry outside its block; skipped"
                ),
            }
        }
    }
}

impl Drop for BlockBatch<'_> {
    fn drop(&mut self) {
        let mut ix = self.view.write();
        ix.payloads.unpin(self.block);
        ix.compact_payloads();
    }
}

/// The queryable view; shared by the reader (writes) and everything that answers (reads).
#[derive(Default)]
pub struct StoreView {
    index: RwLock<Index>,
    /// How far the view has read the store topic (next offset per partition), and whether it
    /// has caught up: what the command consumer and HTTP actions wait on.
    pub progress: ReadProgress,
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
        self.upsert_raw(partition, offset, entry.encode_to_vec());
    }

    /// Applies a protobuf-encoded entry as read from the store topic (the caller checked it
    /// reads: [`IndexKeys::read`]); the bytes are kept as they are, in a block of their own.
    pub fn upsert_raw(&self, partition: i32, offset: i64, raw: Vec<u8>) {
        let len = raw.len() as u32;
        let block = self.adopt_block(raw);
        block.upsert_all([(partition, offset, 0, len)]);
    }

    /// Takes `bytes` as a block of entries' protobuf bytes, end to end: the batch then applies
    /// the entries it holds ([`BlockBatch::upsert_all`]), in order with its other changes.
    pub fn adopt_block(&self, bytes: Vec<u8>) -> BlockBatch<'_> {
        let block = self.write().payloads.adopt(bytes.into());
        BlockBatch { view: self, block }
    }

    /// Applies a tombstone.
    pub fn remove(&self, dlq_id: &str) -> bool {
        let mut ix = self.write();
        let removed = ix.remove(dlq_id);
        ix.compact_payloads();
        if !ix.deleted.contains(dlq_id) {
            ix.deleted.insert(Box::from(dlq_id));
        }
        removed
    }

    pub fn state(&self, dlq_id: &str) -> EntryState {
        self.read().state(dlq_id)
    }

    /// How many of `ids`, from the first, the view knows (their [`StoreView::state`] is not
    /// `Unknown`), up to the first it does not: one read lock for them all.
    pub fn known_prefix<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> usize {
        let ix = self.read();
        ids.into_iter()
            .take_while(|id| ix.state(id) != EntryState::Unknown)
            .count()
    }

    pub fn get(&self, dlq_id: &str) -> Option<DlqEntry> {
        let ix = self.read();
        ix.find(dlq_id)
            .and_then(|s| DlqEntry::decode(s.raw(&ix.payloads)).ok())
    }

    /// `read` over the entry's protobuf bytes as stored, under the view's read lock (keep it
    /// short): for a reader that needs a few fields, or copies the bytes on, without decoding.
    pub fn with_raw<R>(&self, dlq_id: &str, read: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let ix = self.read();
        ix.find(dlq_id).map(|s| read(s.raw(&ix.payloads)))
    }

    pub fn len(&self) -> usize {
        self.read().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the entries' encoded payloads (what the view must hold at the least).
    pub fn payload_bytes(&self) -> usize {
        self.read().payloads.live_bytes()
    }

    /// The oldest entry's `created_at`, if any.
    pub fn oldest_created_at(&self) -> Option<i64> {
        let ix = self.read();
        ix.order
            .ends(|s| slot_key(&ix.slots, s))
            .map(|(first, _)| first.get().0)
    }

    /// Entries matching `filter`, ordered by `created_at` then `dlqId`, after `cursor`.
    pub fn list(&self, filter: &EntryFilter, cursor: Option<&Cursor>, count: usize) -> Page {
        self.list_in(filter, Order::EarliestFirst, cursor, count)
    }

    /// [`StoreView::list`] in `order` (`cursor` must have been made in the same order).
    pub fn list_in(
        &self,
        filter: &EntryFilter,
        order: Order,
        cursor: Option<&Cursor>,
        count: usize,
    ) -> Page {
        self.list_with(filter, order, cursor, count, true)
    }

    /// [`StoreView::list_in`], walking a per-value list or (without `use_index`) every entry.
    fn list_with(
        &self,
        filter: &EntryFilter,
        order: Order,
        cursor: Option<&Cursor>,
        count: usize,
        use_index: bool,
    ) -> Page {
        let ix = self.read();
        let mut page = Page::default();
        let Some(matcher) = ix.matcher(filter) else {
            return page;
        };
        let mut last = None;
        let latest_first = order == Order::LatestFirst;
        let from = match (cursor, latest_first) {
            (Some(c), false) => (c.created_at, 0),
            (Some(c), true) => (c.created_at, u32::MAX),
            (None, false) => (i64::MIN, 0),
            (None, true) => (i64::MAX, u32::MAX),
        };
        ix.walk(
            ix.candidates(&matcher, from, order, use_index),
            order,
            cursor,
            |slot| ix.matches(&matcher, slot),
            |created_at, slot| {
                if page.entries.len() == count {
                    // There is at least one more: the page ends at the last one returned.
                    page.next = last.take();
                    return false;
                }
                if let Ok(entry) = DlqEntry::decode(slot.raw(&ix.payloads)) {
                    page.entries.push(entry);
                    page.stored_bytes += slot.payload.len();
                    last = Some(Cursor {
                        created_at,
                        dlq_id: slot.id(&ix.payloads).to_string(),
                        latest_first,
                    });
                }
                true
            },
        );
        page
    }

    /// Sets `--max-redrives`: which entries the `parked` filter means.
    pub fn set_max_redrives(&self, max_redrives: u32) {
        self.write().max_redrives = max_redrives;
    }

    /// True when some entry has this signature (ingest counts a signature the DLQ has not
    /// held before).
    pub fn has_signature(&self, signature: &str) -> bool {
        let ix = self.read();
        let Some(sym) = ix.strings.lookup(signature) else {
            return false;
        };
        if ix.lists_deferred {
            return ix
                .traits
                .values
                .iter()
                .flatten()
                .any(|(t, _)| t.signature == sym);
        }
        ix.by_value[SIGNATURE].contains_key(&sym)
    }

    /// The groups of the entries matching `filter`, largest first, `count` after `after`.
    /// Unfiltered, each group's figures are read from its signature's list (no entry is
    /// visited: the answer costs the number of groups). Filtered on traits fields and at most
    /// one listed field, the counts come from the lists' tallies and first/last seen from a
    /// walk in from each end ([`Index::tally`], [`Index::group_ends`]); any other filter
    /// scans its matches, through a per-value list when it has one.
    pub fn groups(
        &self,
        filter: &EntryFilter,
        after: Option<&GroupCursor>,
        count: usize,
    ) -> GroupPage {
        let ix = self.read();
        let at = |s: u32| Key::new(ix.slots[s as usize].created_at, s);
        // (count, signature, oldest, newest)
        let mut found: Vec<(u64, Sym, At, At)> = Vec::new();
        if filter.is_empty() && !ix.lists_deferred {
            for (sym, list) in &ix.by_value[SIGNATURE] {
                if let Some((first, last)) = list.keys.ends(at) {
                    found.push((list.keys.len() as u64, *sym, first.get(), last.get()));
                }
            }
        } else {
            let Some(m) = ix.matcher(filter) else {
                return GroupPage::default();
            };
            let by_sig = ix.tallied_groups(&m).unwrap_or_else(|| ix.scan_groups(&m));
            found.extend(by_sig.into_iter().map(|(s, (n, f, l))| (n, s, f, l)));
        }
        let mut named: Vec<_> = found
            .into_iter()
            .map(|(n, sym, first, last)| {
                let sig = ix.strings.get(sym).map_or("", |s| &**s);
                (n, sig, first, last)
            })
            .collect();
        named.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        let start = after.map_or(0, |c| {
            named.partition_point(|g| {
                (std::cmp::Reverse(g.0), g.1) <= (std::cmp::Reverse(c.count), c.signature.as_str())
            })
        });
        let rest = named.get(start..).unwrap_or_default();
        let mut page = GroupPage::default();
        for (n, sig, first, last) in rest.iter().take(count) {
            let sample = ix
                .slots
                .get(last.1 as usize)
                .and_then(|s| DlqEntry::decode(s.raw(&ix.payloads)).ok());
            page.groups.push(Group {
                signature: sig.to_string(),
                count: *n,
                first_seen: first.0,
                last_seen: last.0,
                sample,
            });
        }
        if rest.len() > count {
            page.next = page.groups.last().map(|g| GroupCursor {
                count: g.count,
                signature: g.signature.clone(),
            });
        }
        page
    }

    /// How many entries match `filter` (the console's live count). Unfiltered it is the
    /// entry count; filtered it walks the candidates like a listing does, without decoding any
    /// entry, so it costs a scan of the matching per-value list (or of the slots).
    pub fn count(&self, filter: &EntryFilter) -> u64 {
        let ix = self.read();
        if filter.is_empty() {
            return ix.by_id.len() as u64;
        }
        let Some(matcher) = ix.matcher(filter) else {
            return 0;
        };
        if let Some(by_traits) = ix.tally(&matcher) {
            return by_traits.iter().sum();
        }
        if !ix.lists_deferred && matcher.indexed().iter().any(|wanted| !wanted.is_empty()) {
            ix.candidates(&matcher, (i64::MIN, 0), Order::EarliestFirst, true)
                .filter(|(_, i)| ix.matches(&matcher, &ix.slots[*i as usize]))
                .count() as u64
        } else {
            ix.live().filter(|slot| ix.matches(&matcher, slot)).count() as u64
        }
    }

    /// Entries still held that entered the DLQ in each of `buckets` intervals of `width_ms`
    /// ending at `until_ms` (oldest bucket first): the overview's arrivals plot. Only the
    /// range asked for is walked, through the creation-time order.
    pub fn arrivals(&self, until_ms: i64, width_ms: i64, buckets: usize) -> Vec<u64> {
        let mut out = vec![0u64; buckets];
        let width = width_ms.max(1);
        let from = until_ms - width * buckets as i64;
        let ix = self.read();
        let until = Key::new(until_ms, 0);
        let in_range = ix
            .order
            .from(Key::new(from, 0), |s| slot_key(&ix.slots, s))
            .take_while(|k| *k < until);
        for (created_at, _) in in_range.map(Key::get) {
            if let Some(n) = usize::try_from((created_at - from) / width)
                .ok()
                .and_then(|b| out.get_mut(b))
            {
                *n += 1;
            }
        }
        out
    }

    /// Ids of the entries matching `filter` (a bulk command's snapshot).
    pub fn matching_ids(&self, filter: &EntryFilter) -> Vec<String> {
        let ix = self.read();
        let Some(matcher) = ix.matcher(filter) else {
            return Vec::new();
        };
        ix.candidates(&matcher, (i64::MIN, 0), Order::EarliestFirst, true)
            .map(|(_, i)| &ix.slots[i as usize])
            .filter(|slot| ix.matches(&matcher, slot))
            .map(|slot| slot.id(&ix.payloads).to_string())
            .collect()
    }

    /// Ids of the entries whose `expires_at` is at or before `now_ms`.
    pub fn expired_ids(&self, now_ms: i64) -> Vec<String> {
        let ix = self.read();
        ix.live()
            .filter(|s| s.expires_at > 0 && s.expires_at <= now_ms)
            .map(|s| s.id(&ix.payloads).to_string())
            .collect()
    }

    /// Per store partition, the lowest offset of an entry the view still holds: the partition's
    /// log start offset must never pass it.
    pub fn lowest_live_offsets(&self) -> HashMap<i32, i64> {
        let ix = self.read();
        let mut low: HashMap<i32, i64> = HashMap::new();
        for s in ix.live() {
            low.entry(s.partition)
                .and_modify(|o| *o = (*o).min(s.offset))
                .or_insert(s.offset);
        }
        low
    }

    pub fn set_position(&self, partition: i32, next_offset: i64) {
        self.progress.advance(partition, next_offset);
    }

    /// The next store offset the view will apply on `partition` (0 before any).
    pub fn position(&self, partition: i32) -> i64 {
        self.progress.position(partition)
    }

    /// Makes room for `records` more entries before a replay (the store's record count at
    /// start: an upper bound), so the slot array and the id table are not regrown — and
    /// rehashed, reading every slot's id — while it runs, and hold no doubling slack after it.
    /// Capped: a store of mostly superseded records or tombstones must not reserve for them all.
    pub fn reserve(&self, records: u64) {
        const MOST: u64 = 20_000_000;
        let n = records.min(MOST) as usize;
        let mut ix = self.write();
        let Index {
            slots,
            by_id,
            hasher,
            payloads,
            ..
        } = &mut *ix;
        slots.reserve_exact(n);
        by_id.reserve(n, |&j| hasher.hash_one(slots[j as usize].id(payloads)));
    }

    /// Keeps no per-value lists until [`StoreView::set_caught_up`], which builds them in one
    /// pass (a cold start's replay; queries meanwhile scan and answer the same).
    pub fn defer_lists(&self) {
        let mut ix = self.write();
        if ix.by_id.is_empty() {
            ix.lists_deferred = true;
        }
    }

    pub fn set_caught_up(&self) {
        self.write().build_lists();
        // Before anyone is told: a caller measuring memory at readiness sees what the view holds.
        super::trim::return_free_memory();
        self.progress.set_caught_up();
    }

    /// True once the view has read the store up to the end offsets it saw at start.
    pub fn is_caught_up(&self) -> bool {
        self.progress.is_caught_up()
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

    /// Entries arrive in blocks (as a replay brings them); removing most of them leaves the
    /// rest moved into a new block: the dead bytes go, and every entry left reads, lists and
    /// is found the same.
    #[test]
    fn most_entries_of_each_block_removed_leaves_the_rest_compacted_and_readable() {
        let v = StoreView::new();
        let with_padding = |i: i64| {
            let mut e = entry(
                &format!("x{i}"),
                1_000 + i,
                if i % 2 == 0 { "even" } else { "odd" },
            );
            if let Some(ev) = e.event.as_mut() {
                ev.error_message = "x".repeat(1_000);
            }
            e
        };
        // 8,000 entries of ~1.1 KB in blocks of 1,000: ~9 MB.
        for first in (0..8_000).step_by(1_000) {
            let (mut block, mut at) = (Vec::new(), Vec::new());
            for i in first..first + 1_000 {
                let start = block.len() as u32;
                with_padding(i).encode(&mut block).expect("a Vec grows");
                at.push((0, i, start, block.len() as u32 - start));
            }
            v.adopt_block(block).upsert_all(at);
        }
        let held = || v.read().payloads.held_bytes();
        let full = held();
        assert_eq!(full, v.payload_bytes());
        for i in (0..8_000).filter(|i| i % 8 != 0) {
            assert!(v.remove(&format!("x{i}")));
        }
        assert_eq!(v.len(), 1_000);
        // Every block keeps an eighth of its entries: only compaction frees any. Sparse
        // blocks under 4 MiB in all are left as they are.
        let (held, live) = (held(), v.payload_bytes());
        assert!(held * 4 < full, "{held} B held of {full}");
        assert!(held <= live + (4 << 20), "{held} B held for {live} live");
        for i in (0..8_000).step_by(8) {
            let id = format!("x{i}");
            assert_eq!(v.get(&id), Some(with_padding(i)), "{id}");
        }
        let evens = EntryFilter::compile(&crate::wire::pb::Filter {
            workflow_url: vec!["even".into()],
            ..Default::default()
        })
        .expect("a filter");
        let evens = v.list(&evens, None, 2_000);
        assert_eq!(evens.entries.len(), 1_000);
        assert_eq!(v.count(&EntryFilter::all()), 1_000);
    }

    /// Entries applied one at a time (a quiet topic) do not keep a block each.
    #[test]
    fn entries_applied_one_by_one_share_blocks() {
        let v = StoreView::new();
        for i in 0..3_000 {
            v.upsert(0, i, &entry(&format!("x{i}"), 1_000 + i, "u"));
        }
        let blocks = v.read().payloads.blocks_held();
        assert!(blocks < 1_024, "{blocks} blocks for 3,000 entries");
        for i in 0..3_000 {
            let id = format!("x{i}");
            assert_eq!(v.get(&id), Some(entry(&id, 1_000 + i, "u")), "{id}");
        }
    }

    #[test]
    fn count_agrees_with_listing_and_arrivals_bucket_by_creation_time() {
        let v = StoreView::new();
        for i in 0..10 {
            let url = if i % 3 == 0 { "u3" } else { "u" };
            v.upsert(0, i, &entry(&format!("x{i}"), 1_000 + i * 100, url));
        }
        let all = EntryFilter::all();
        assert_eq!(v.count(&all), 10);
        let by_url = |u: &str| {
            EntryFilter::compile(&crate::wire::pb::Filter {
                workflow_url: vec![u.into()],
                ..Default::default()
            })
            .unwrap()
        };
        assert_eq!(v.count(&by_url("u3")), 4);
        assert_eq!(
            v.count(&by_url("u3")) as usize,
            v.list(&by_url("u3"), None, 100).entries.len()
        );
        assert_eq!(v.count(&by_url("nowhere")), 0);
        // created_at 1000..=1900; buckets of 500 ms ending at 2000: [1000,1500) and [1500,2000).
        assert_eq!(v.arrivals(2_000, 500, 2), [5, 5]);
        assert_eq!(v.arrivals(1_000, 500, 2), [0, 0], "the end is exclusive");
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
    fn ties_stay_in_id_order_when_a_freed_slot_is_reused_and_a_cursor_lands_among_them() {
        let v = StoreView::new();
        for (i, id) in ["d", "b", "a", "c"].iter().enumerate() {
            v.upsert(0, i as i64, &entry(id, 5, "u"));
        }
        v.remove("a");
        v.upsert(0, 9, &entry("z", 5, "u")); // takes a's slot, before b's and c's
        v.upsert(0, 10, &entry("0", 5, "u"));
        let all = EntryFilter::all();
        let p1 = v.list(&all, None, 3);
        assert_eq!(ids(&p1), ["0", "b", "c"]);
        let p2 = v.list(&all, p1.next.as_ref(), 3);
        assert_eq!(ids(&p2), ["d", "z"]);
        assert!(p2.next.is_none());
        // A cursor naming an entry removed since still resumes after its place.
        let at_b = Cursor {
            latest_first: false,
            created_at: 5,
            dlq_id: "b".into(),
        };
        v.remove("b");
        assert_eq!(ids(&v.list(&all, Some(&at_b), 10)), ["c", "d", "z"]);
    }

    fn filter(f: crate::wire::pb::Filter) -> EntryFilter {
        EntryFilter::compile(&f).unwrap()
    }

    fn ids(page: &Page) -> Vec<String> {
        page.entries.iter().map(|e| e.dlq_id.clone()).collect()
    }

    #[test]
    fn filters_match_by_url_label_and_run_id_and_a_value_no_entry_has_matches_nothing() {
        let v = StoreView::new();
        v.upsert(0, 1, &entry("a", 1, "u1"));
        v.upsert(0, 2, &entry("b", 2, "u2"));
        let mut c = entry("c", 3, "u1");
        c.event.as_mut().unwrap().labels = vec!["z".into(), "a".into(), "z".into()];
        v.upsert(0, 3, &c);
        let by_url = |urls: &[&str]| {
            filter(crate::wire::pb::Filter {
                workflow_url: urls.iter().map(|u| u.to_string()).collect(),
                ..Default::default()
            })
        };
        assert_eq!(ids(&v.list(&by_url(&["u1"]), None, 10)), ["a", "c"]);
        assert_eq!(ids(&v.list(&by_url(&["u2", "nope"]), None, 10)), ["b"]);
        assert!(v.list(&by_url(&["nope"]), None, 10).entries.is_empty());
        assert!(v.matching_ids(&by_url(&["nope"])).is_empty());
        let by_label = |l: &str| {
            filter(crate::wire::pb::Filter {
                label: vec![l.into()],
                ..Default::default()
            })
        };
        assert_eq!(ids(&v.list(&by_label("z"), None, 10)), ["c"]);
        assert_eq!(v.matching_ids(&by_label("a")), ["a", "b", "c"]);
        let by_run = filter(crate::wire::pb::Filter {
            workflow_run_id: "run-b".into(),
            ..Default::default()
        });
        assert_eq!(ids(&v.list(&by_run, None, 10)), ["b"]);
    }

    #[test]
    fn a_cursor_stays_stable_while_entries_arrive_between_pages_in_both_orders() {
        for order in [Order::EarliestFirst, Order::LatestFirst] {
            let v = StoreView::new();
            let start: Vec<String> = (0..40).map(|i| format!("s{i:02}")).collect();
            for (i, id) in start.iter().enumerate() {
                v.upsert(0, i as i64, &entry(id, 100 + (i as i64 / 3), "u"));
            }
            let mut seen = Vec::new();
            let mut cursor = None;
            for page_no in 0.. {
                let p = v.list_in(&EntryFilter::all(), order, cursor.as_ref(), 7);
                seen.extend(ids(&p));
                // Between pages: new entries older, newer and among the ones listed so far.
                for (k, t) in [(0, 50), (1, 500), (2, 105)] {
                    let id = format!("n{page_no}-{k}");
                    v.upsert(1, page_no * 10 + k, &entry(&id, t, "u"));
                }
                match p.next {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            let mut unique = seen.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(
                unique.len(),
                seen.len(),
                "{order:?}: an entry was listed twice"
            );
            for id in &start {
                assert!(seen.contains(id), "{order:?}: {id} was skipped");
            }
        }
    }

    #[test]
    fn a_slot_stays_88_bytes() {
        // The memory budget (payload + 250 B per entry at 1,000,000) is spent mostly here: a
        // new indexed field joins `traits` or a shared symbol rather than growing the slot.
        assert_eq!(std::mem::size_of::<Slot>(), 88);
    }

    #[test]
    fn qstash_filters_match_queue_topic_schedule_status_and_message_id() {
        use crate::wire::pb::{FailureCallbackInfo, Filter};
        let v = StoreView::new();
        for (i, (id, queue, topic, status, cb)) in [
            ("a", "q1", "", 500, 3),
            ("b", "q2", "t1", 404, 1),
            ("c", "q1", "t1", 404, 3),
            ("d", "", "", 500, 0),
        ]
        .into_iter()
        .enumerate()
        {
            let mut e = entry(id, i as i64 + 1, "u");
            let ev = e.event.as_mut().unwrap();
            ev.queue_name = queue.into();
            ev.topic_name = topic.into();
            ev.schedule_id = if id == "d" {
                "scd".into()
            } else {
                String::new()
            };
            ev.response_status = status;
            ev.message_id = format!("msg-{id}");
            ev.failure_callback_info = Some(FailureCallbackInfo {
                state: cb,
                ..Default::default()
            });
            v.upsert(0, i as i64, &e);
        }
        let list = |f: Filter| v.matching_ids(&filter(f));
        let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            list(Filter {
                queue_name: strs(&["q1"]),
                ..Default::default()
            }),
            ["a", "c"]
        );
        assert_eq!(
            list(Filter {
                topic_name: strs(&["t1"]),
                response_status: vec![404],
                ..Default::default()
            }),
            ["b", "c"]
        );
        assert_eq!(
            list(Filter {
                response_status: vec![500, 502],
                ..Default::default()
            }),
            ["a", "d"]
        );
        assert_eq!(
            list(Filter {
                schedule_id: strs(&["scd"]),
                ..Default::default()
            }),
            ["d"]
        );
        assert_eq!(
            list(Filter {
                message_id: "msg-c".into(),
                ..Default::default()
            }),
            ["c"]
        );
        assert!(list(Filter {
            message_id: "msg-x".into(),
            ..Default::default()
        })
        .is_empty());
        assert!(list(Filter {
            queue_name: strs(&["nope"]),
            ..Default::default()
        })
        .is_empty());
        assert!(list(Filter {
            response_status: vec![201],
            ..Default::default()
        })
        .is_empty());
        assert_eq!(
            list(Filter {
                queue_name: strs(&["q1"]),
                failure_function_state: strs(&["CALLBACK_FAIL"]),
                ..Default::default()
            }),
            ["a", "c"]
        );
        // Newest first.
        let all = EntryFilter::all();
        let page = v.list_in(&all, Order::LatestFirst, None, 3);
        assert_eq!(ids(&page), ["d", "c", "b"]);
        let rest = v.list_in(&all, Order::LatestFirst, page.next.as_ref(), 3);
        assert_eq!(ids(&rest), ["a"]);
        assert!(rest.next.is_none());
        // Removing every holder of a combination frees it and its strings.
        for id in ["a", "b", "c", "d"] {
            v.remove(id);
        }
        let ix = v.read();
        assert!(ix.traits.ids.is_empty());
        assert!(
            ix.strings.ids.is_empty(),
            "{:?}",
            ix.strings.values.iter().flatten().collect::<Vec<_>>()
        );
    }

    #[test]
    fn shared_strings_and_slots_are_freed_with_the_last_entry_that_holds_them() {
        let v = StoreView::new();
        v.upsert(0, 1, &entry("a", 1, "shared"));
        v.upsert(0, 2, &entry("b", 1, "shared"));
        v.upsert(0, 3, &entry("c", 1, "only-c"));
        v.upsert(0, 4, &entry("c", 1, "only-c-now"));
        {
            let ix = v.read();
            assert!(
                ix.strings.lookup("only-c").is_none(),
                "replaced value dropped"
            );
            assert!(ix.strings.lookup("only-c-now").is_some());
        }
        v.remove("a");
        assert!(
            v.read().strings.lookup("shared").is_some(),
            "b still holds it"
        );
        v.remove("b");
        v.remove("c");
        let ix = v.read();
        for gone in ["shared", "only-c-now", "a", ""] {
            assert!(ix.strings.lookup(gone).is_none(), "{gone} still interned");
        }
        assert!(ix.label_sets.ids.is_empty());
        assert_eq!(
            (ix.by_id.len(), ix.order.len(), ix.payloads.live_bytes()),
            (0, 0, 0)
        );
        assert_eq!(
            ix.free_slots.len(),
            ix.slots.len(),
            "every slot free for reuse"
        );
        drop(ix);
        v.upsert(0, 5, &entry("d", 1, "u"));
        assert_eq!(v.read().slots.len(), 3, "a free slot was reused");
        assert_eq!(v.get("d").unwrap().dlq_id, "d");
        assert_eq!(v.expired_ids(1_001), ["d"]);
        assert_eq!(v.oldest_created_at(), Some(1));
    }

    #[test]
    fn a_value_held_by_one_entry_costs_a_24_byte_bucket_and_no_allocation() {
        assert_eq!(std::mem::size_of::<Listed>(), 16);
        assert_eq!(std::mem::size_of::<(Sym, Listed)>(), 24);
        assert_eq!(std::mem::size_of::<Option<(Text, u32)>>(), 32);
    }

    /// Every per-value list holds exactly the keys of the live entries with that value.
    fn check_lists(v: &StoreView) {
        let ix = v.read();
        // The listing order holds every live slot once, sorted, and nothing else.
        let mut live: Vec<(i64, u32)> = (0..ix.slots.len() as u32)
            .filter(|&i| ix.slots[i as usize].partition != FREE)
            .map(|i| (ix.slots[i as usize].created_at, i))
            .collect();
        live.sort_unstable();
        let listed: Vec<(i64, u32)> = ix
            .order
            .from(Key::new(i64::MIN, 0), |s| slot_key(&ix.slots, s))
            .map(Key::get)
            .collect();
        assert_eq!(listed, live, "the listing order");
        assert_eq!(ix.order.len(), live.len());
        let mut want: [std::collections::BTreeMap<Sym, Vec<(i64, u32)>>; 5] = Default::default();
        for (t, i) in ix
            .order
            .from(Key::new(i64::MIN, 0), |s| slot_key(&ix.slots, s))
            .map(Key::get)
        {
            let s = &ix.slots[i as usize];
            let labels = ix.label_sets.get(s.labels).unwrap();
            let values = [
                (URL, s.workflow_url),
                (CALLER_IP, s.caller_ip),
                (FLOW_CONTROL_KEY, s.flow_control_key),
                (SIGNATURE, ix.traits.get(s.traits).unwrap().signature),
            ]
            .into_iter()
            .chain(labels.iter().map(|&l| (LABEL, l)));
            for (field, sym) in values {
                if !ix.strings.get(sym).unwrap().is_empty() {
                    want[field].entry(sym).or_default().push((t, i));
                }
            }
        }
        for (field, want) in want.iter().enumerate() {
            assert_eq!(ix.by_value[field].len(), want.len(), "field {field}");
            for (sym, keys) in want {
                let listed = &ix.by_value[field][sym];
                let mut tally: std::collections::BTreeMap<Sym, u32> = Default::default();
                if field != SIGNATURE {
                    for &(_, i) in keys {
                        *tally.entry(ix.slots[i as usize].traits).or_default() += 1;
                    }
                }
                let tally: Vec<(Sym, u32)> = tally.into_iter().collect();
                if field != SIGNATURE {
                    let got = listed.tally(|s| ix.slots[s as usize].traits);
                    assert_eq!(
                        &got[..],
                        &tally[..],
                        "field {field} value {sym}: traits tally"
                    );
                    // Kept exactly when the list is long enough (or was, and has not fallen
                    // below the lower mark).
                    let n = listed.keys.len();
                    assert!(
                        n >= TALLY_UNTIL || listed.kept().is_none(),
                        "field {field} value {sym}: a tally kept for {n} keys"
                    );
                    assert!(
                        n < TALLY_FROM || listed.kept().is_some(),
                        "field {field} value {sym}: no tally for {n} keys"
                    );
                } else {
                    assert!(listed.kept().is_none(), "signature lists keep no tally");
                }
                let got: Vec<_> = listed
                    .keys
                    .from(Key::new(i64::MIN, 0), |s| {
                        Key::new(ix.slots[s as usize].created_at, s)
                    })
                    .map(Key::get)
                    .collect();
                assert_eq!(&got, keys, "field {field} value {sym}");
            }
        }
    }

    #[test]
    fn indexed_filters_page_exactly_like_a_full_scan_over_random_entries() {
        use crate::wire::pb::{Filter, FlowControl};
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let v = StoreView::new();
        v.set_max_redrives(3);
        let mut tallied_filters = 0;
        let urls = ["u0", "u1", "u2", "u3", "u4"];
        let pick = |rng: &mut rand::rngs::StdRng, n: usize, prefix: &str| -> String {
            match rng.random_range(0..n + 1) {
                0 => String::new(),
                k => format!("{prefix}{}", k - 1),
            }
        };
        for round in 0..40 {
            for step in 0..150 {
                let id = format!("id-{}", rng.random_range(0..300));
                if rng.random_range(0..10) < 3 {
                    v.remove(&id);
                    continue;
                }
                let mut e = entry(&id, rng.random_range(0..40), urls[rng.random_range(0..5)]);
                let ev = e.event.as_mut().unwrap();
                ev.caller_ip = pick(&mut rng, 60, "ip");
                ev.flow_control = Some(FlowControl {
                    key: pick(&mut rng, 25, "fc"),
                    ..Default::default()
                });
                ev.labels = (0..rng.random_range(0..4))
                    .map(|_| pick(&mut rng, 6, "l"))
                    .collect();
                ev.queue_name = pick(&mut rng, 3, "q");
                ev.topic_name = pick(&mut rng, 2, "t");
                ev.response_status = [0, 404, 500, 503][rng.random_range(0..4)];
                ev.message_id = format!("m{}", rng.random_range(0..50));
                ev.redrive_count = rng.random_range(0..5);
                ev.error_message = format!("boom {}", ["a", "b", "c"][rng.random_range(0..3)]);
                v.upsert(0, round * 1000 + step, &e);
            }
            check_lists(&v);
            for _ in 0..25 {
                let mut f = Filter::default();
                let values = |rng: &mut rand::rngs::StdRng, n: usize, prefix: &str| {
                    let k = rng.random_range(0..3);
                    (0..k)
                        .map(|_| format!("{prefix}{}", rng.random_range(0..n + 1)))
                        .collect::<Vec<_>>()
                };
                let signatures: Vec<String> = {
                    let ix = v.read();
                    ix.by_value[SIGNATURE]
                        .keys()
                        .filter_map(|s| ix.strings.get(*s).map(|s| s.to_string()))
                        .collect()
                };
                let signature = |rng: &mut rand::rngs::StdRng| {
                    let k = rng.random_range(0..signatures.len().max(1));
                    signatures.get(k).cloned().into_iter().collect::<Vec<_>>()
                };
                match rng.random_range(0..13) {
                    9 => f.parked = Some(rng.random_bool(0.5)),
                    10 => f.signature = signature(&mut rng),
                    11 => {
                        f.label = values(&mut rng, 6, "l");
                        f.parked = Some(rng.random_bool(0.5));
                    }
                    12 => {
                        f.workflow_url = values(&mut rng, 5, "u");
                        f.signature = signature(&mut rng);
                        f.response_status = vec![[404, 500, 503][rng.random_range(0..3)]];
                    }
                    6 => {
                        f.queue_name = values(&mut rng, 3, "q");
                        f.response_status = (0..rng.random_range(0..3))
                            .map(|_| [404, 500, 503][rng.random_range(0..3)])
                            .collect();
                    }
                    7 => {
                        f.topic_name = values(&mut rng, 2, "t");
                        f.label = values(&mut rng, 6, "l");
                    }
                    8 => f.message_id = format!("m{}", rng.random_range(0..50)),
                    0 => f.flow_control_key = values(&mut rng, 25, "fc"),
                    1 => f.caller_ip = values(&mut rng, 60, "ip"),
                    2 => f.label = values(&mut rng, 6, "l"),
                    3 => f.workflow_url = values(&mut rng, 5, "u"),
                    4 => {
                        f.label = values(&mut rng, 6, "l");
                        f.flow_control_key = values(&mut rng, 25, "fc");
                        f.workflow_url = values(&mut rng, 5, "u");
                    }
                    _ => {
                        f.caller_ip = values(&mut rng, 60, "ip");
                        f.from_date = rng.random_range(0..20);
                        f.to_date = f.from_date + rng.random_range(0..20);
                    }
                }
                let f = filter(f);
                let mut scan = Vec::new();
                let mut cursor = None;
                loop {
                    let p = v.list_with(&f, Order::EarliestFirst, cursor.as_ref(), 1000, false);
                    scan.extend(ids(&p));
                    if p.next.is_none() {
                        break;
                    }
                    cursor = p.next;
                }
                // The same filter through the index, a page of random size at a time.
                let count = rng.random_range(1..8);
                let mut indexed = Vec::new();
                let mut cursor = None;
                loop {
                    let p = v.list(&f, cursor.as_ref(), count);
                    assert!(p.entries.len() <= count);
                    indexed.extend(ids(&p));
                    if p.next.is_none() {
                        break;
                    }
                    cursor = p.next;
                }
                assert_eq!(indexed, scan, "{f:?}");
                // Newest first, through the index: the same entries, reversed.
                let mut latest = Vec::new();
                let mut cursor = None;
                loop {
                    let p = v.list_in(&f, Order::LatestFirst, cursor.as_ref(), count);
                    latest.extend(ids(&p));
                    if p.next.is_none() {
                        break;
                    }
                    cursor = p.next;
                }
                latest.reverse();
                assert_eq!(latest, scan, "latest first: {f:?}");
                let mut matching = v.matching_ids(&f);
                let mut want = scan.clone();
                matching.sort();
                want.sort();
                assert_eq!(matching, want, "{f:?}");
                // Counts and groups from the tallies agree with visiting every match.
                assert_eq!(v.count(&f), scan.len() as u64, "count: {f:?}");
                let ix = v.read();
                if let Some(m) = ix.matcher(&f) {
                    if let Some(tallied) = ix.tallied_groups(&m) {
                        tallied_filters += 1;
                        assert_eq!(tallied, ix.scan_groups(&m), "groups: {f:?}");
                    }
                }
            }
        }
        assert!(tallied_filters > 300, "tallied: {tallied_filters}");
        // Everything removed: no list is left behind.
        for i in 0..300 {
            v.remove(&format!("id-{i}"));
        }
        check_lists(&v);
        assert!(v.read().by_value.iter().all(|m| m.is_empty()));
    }

    /// A cold start keeps no per-value lists until caught up: meanwhile every query scans and
    /// answers what the lists would; then the lists are built in one pass, exactly.
    #[test]
    fn a_view_replayed_without_lists_answers_the_same_and_builds_them_when_caught_up() {
        use crate::wire::pb::Filter;
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (listed, deferred) = (StoreView::new(), StoreView::new());
        deferred.defer_lists();
        for v in [&listed, &deferred] {
            v.set_max_redrives(3);
        }
        for step in 0..3000 {
            let id = format!("id-{}", rng.random_range(0..800));
            if rng.random_range(0..10) < 2 {
                listed.remove(&id);
                deferred.remove(&id);
                continue;
            }
            let mut e = entry(&id, rng.random_range(0..500), ["u0", "u1", "u2"][step % 3]);
            let ev = e.event.as_mut().unwrap();
            ev.labels = vec![format!("l{}", rng.random_range(0..4))];
            ev.redrive_count = rng.random_range(0..5);
            ev.response_status = [404, 500][rng.random_range(0..2)];
            listed.upsert(0, step as i64, &e);
            deferred.upsert(0, step as i64, &e);
        }
        assert!(deferred.read().by_value.iter().all(|m| m.is_empty()));
        let filters = [
            Filter::default(),
            Filter {
                label: vec!["l1".into()],
                ..Default::default()
            },
            Filter {
                workflow_url: vec!["u2".into()],
                parked: Some(true),
                ..Default::default()
            },
            Filter {
                response_status: vec![404],
                ..Default::default()
            },
        ];
        let answers = |v: &StoreView, f: &EntryFilter| {
            let groups = v.groups(f, None, 100).groups;
            let mut ids = v.matching_ids(f);
            ids.sort();
            (
                ids,
                v.count(f),
                super::tests::ids(&v.list(f, None, 50)),
                groups,
            )
        };
        for f in filters {
            let f = filter(f);
            assert_eq!(answers(&listed, &f), answers(&deferred, &f), "{f:?}");
        }
        assert_eq!(
            listed.has_signature("x"),
            deferred.has_signature("x"),
            "an unknown signature"
        );
        deferred.set_caught_up();
        assert!(!deferred.read().lists_deferred);
        check_lists(&deferred);
    }

    #[test]
    fn a_replay_reserved_for_does_not_regrow_its_slots_or_id_table() {
        let v = StoreView::new();
        v.reserve(1000);
        let (slots, ids) = {
            let ix = v.read();
            (ix.slots.capacity(), ix.by_id.capacity())
        };
        assert!(slots >= 1000 && ids >= 1000, "{slots} {ids}");
        for i in 0..1000 {
            v.upsert(0, i, &entry(&format!("id-{i}"), i, "u"));
        }
        let ix = v.read();
        assert_eq!((ix.slots.capacity(), ix.by_id.capacity()), (slots, ids));
        drop(ix);
        assert_eq!(v.get("id-999").map(|e| e.created_at), Some(999));
    }

    #[test]
    fn an_overwrite_moves_an_entry_between_value_lists() {
        let v = StoreView::new();
        let with_fc = |id: &str, t: i64, fc: &str| {
            let mut e = entry(id, t, "u");
            e.event.as_mut().unwrap().flow_control = Some(crate::wire::pb::FlowControl {
                key: fc.into(),
                ..Default::default()
            });
            e
        };
        let by_fc = |k: &str| {
            filter(crate::wire::pb::Filter {
                flow_control_key: vec![k.into()],
                ..Default::default()
            })
        };
        v.upsert(0, 1, &with_fc("a", 1, "k1"));
        v.upsert(0, 2, &with_fc("b", 2, "k1"));
        assert_eq!(ids(&v.list(&by_fc("k1"), None, 10)), ["a", "b"]);
        v.upsert(0, 3, &with_fc("a", 3, "k2"));
        assert_eq!(ids(&v.list(&by_fc("k1"), None, 10)), ["b"]);
        assert_eq!(ids(&v.list(&by_fc("k2"), None, 10)), ["a"]);
        v.upsert(0, 4, &with_fc("b", 2, ""));
        assert!(v.list(&by_fc("k1"), None, 10).entries.is_empty());
        check_lists(&v);
        v.remove("a");
        assert!(v.list(&by_fc("k2"), None, 10).entries.is_empty());
        check_lists(&v);
    }

    /// An entry of kind `kind` (0..3) whose message carries `n` in several shapes.
    fn failing(id: &str, t: i64, kind: usize, n: i64, redrives: i32) -> DlqEntry {
        let mut e = entry(id, t, &format!("https://app/api/{kind}?run={n}"));
        let ev = e.event.as_mut().unwrap();
        ev.error_message = format!("step {kind} failed for order-{n} after {}ms", n * 7);
        ev.response_status = 500 + kind as i32;
        ev.redrive_count = redrives;
        // Stored entries carry their signature; half of these are "old" ones without it,
        // which the view computes.
        if n % 2 == 0 {
            e.signature = crate::signature::of_event(ev);
        }
        e
    }

    #[test]
    fn groups_count_kinds_of_failure_from_their_lists_and_follow_removals_and_filters() {
        let v = StoreView::new();
        for n in 0..90 {
            // Kind 0 holds 45, kind 1 holds 30, kind 2 holds 15.
            let kind = match n {
                0..45 => 0,
                45..75 => 1,
                _ => 2,
            };
            v.upsert(0, n, &failing(&format!("id-{n:03}"), 100 + n, kind, n, 0));
        }
        let all = v.groups(&EntryFilter::all(), None, 10);
        let counts: Vec<u64> = all.groups.iter().map(|g| g.count).collect();
        assert_eq!(counts, [45, 30, 15]);
        assert!(all.next.is_none());
        let big = &all.groups[0];
        assert_eq!((big.first_seen, big.last_seen), (100, 144));
        assert_eq!(big.sample.as_ref().unwrap().dlq_id, "id-044", "the newest");
        assert!(v.has_signature(&big.signature));
        // Paged one at a time, the same groups in the same order.
        let mut paged = Vec::new();
        let mut cursor = None;
        loop {
            let p = v.groups(&EntryFilter::all(), cursor.as_ref(), 1);
            paged.extend(p.groups.into_iter().map(|g| g.signature));
            match p.next {
                Some(c) => cursor = Some(GroupCursor::decode(&c.encode()).unwrap()),
                None => break,
            }
        }
        let sigs: Vec<_> = all.groups.iter().map(|g| g.signature.clone()).collect();
        assert_eq!(paged, sigs);
        // The signature filters a listing, through its list.
        let by_sig = filter(crate::wire::pb::Filter {
            signature: vec![sigs[2].clone()],
            ..Default::default()
        });
        assert_eq!(v.matching_ids(&by_sig).len(), 15);
        // A filtered groups query scans: entries created at or after 130.
        let recent = filter(crate::wire::pb::Filter {
            from_date: 130,
            ..Default::default()
        });
        let g = v.groups(&recent, None, 10);
        let counts: Vec<u64> = g.groups.iter().map(|g| g.count).collect();
        assert_eq!(counts, [30, 15, 15]);
        assert_eq!(g.groups[2].first_seen, 130);
        // Removing a group's newest entry moves its last seen; removing all drops it.
        v.remove("id-044");
        let g = v.groups(&EntryFilter::all(), None, 1);
        assert_eq!((g.groups[0].count, g.groups[0].last_seen), (44, 143));
        for n in 75..90 {
            v.remove(&format!("id-{n:03}"));
        }
        assert!(!v.has_signature(&sigs[2]));
        assert_eq!(v.groups(&EntryFilter::all(), None, 10).groups.len(), 2);
        check_lists(&v);
    }

    #[test]
    fn parked_entries_are_those_redriven_max_redrives_times() {
        let v = StoreView::new();
        v.set_max_redrives(3);
        for (n, redrives) in [0, 2, 3, 7].into_iter().enumerate() {
            v.upsert(
                0,
                n as i64,
                &failing(&format!("p{n}"), n as i64, 0, 1, redrives),
            );
        }
        let parked = |p: bool| {
            v.matching_ids(&filter(crate::wire::pb::Filter {
                parked: Some(p),
                ..Default::default()
            }))
        };
        assert_eq!(parked(true), ["p2", "p3"]);
        assert_eq!(parked(false), ["p0", "p1"]);
        v.set_max_redrives(0);
        assert!(parked(true).is_empty(), "the guard is off");
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
