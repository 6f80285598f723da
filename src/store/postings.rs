//! Per-value lists of the view's entries in listing order, so a filter on a rare value walks
//! its matches only instead of every entry (issue 13: a 1-in-1,000 `flowControlKey` filter
//! walked ~100,000 slots per page).
//!
//! A list holds slot numbers (4 bytes) sorted by `(created_at, slot)` — the listing order's own
//! keys, read from the slots through `at` — in chunks of at most [`CHUNK`], each chunk's first
//! key kept beside it so finding the chunk reads no slot. New entries land near the end, among
//! slots just written (in cache). A list of one key (a value only one entry has: a caller IP,
//! say) is kept inline, without an allocation. Chunks grow by small exact steps and shrink when
//! half empty: about 4.5 bytes per key whatever the order of inserts and removals (12-byte
//! keys cost ~55 B per entry over four fields, more than the memory target left).

use std::cmp::Ordering;

/// Most keys in one chunk (6 KiB): inserting or removing moves at most this many.
pub const CHUNK: usize = 512;

/// `(created_at, slot)` in 12 bytes (a tuple would be padded to 16).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Key {
    hi: i32,
    lo: u32,
    slot: u32,
}

impl Key {
    pub fn new(created_at: i64, slot: u32) -> Key {
        Key {
            hi: (created_at >> 32) as i32,
            lo: created_at as u32,
            slot,
        }
    }

    pub fn get(self) -> (i64, u32) {
        (((self.hi as i64) << 32) | self.lo as i64, self.slot)
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.hi, self.lo, self.slot).cmp(&(other.hi, other.lo, other.slot))
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

#[derive(Debug)]
pub struct Chunk {
    first: Key,
    keys: Vec<u32>,
}

/// The keys of the entries holding one value, sorted.
///
/// 16 bytes: a list of more than one key is boxed, so the map of a field's values (most of
/// them held by one entry, for a field like the caller IP) holds 16 bytes less per value. `E`
/// is what a list of more than one key keeps beside its keys (the view's tally of a value's
/// traits; nothing for the listing order): a list of one key has none.
#[derive(Debug)]
pub enum Postings<E = ()> {
    One(Key),
    Many(Box<Chunks<E>>),
}

/// An empty list (a list of one field's value is never empty: it goes with its last key; the
/// view's listing order of every entry starts empty).
impl<E: Default> Default for Postings<E> {
    fn default() -> Self {
        Postings::Many(Box::new(Chunks {
            chunks: Vec::new(),
            len: 0,
            extra: E::default(),
        }))
    }
}

#[derive(Debug)]
pub struct Chunks<E> {
    chunks: Vec<Chunk>,
    len: usize,
    extra: E,
}

/// Where `key` goes among `keys` (sorted by `at`), searched from the end: past it most of the
/// time (one read of the slot just written), else a few places before it. Live entries come
/// from several store partitions, so a key often lands a little before the newest ones; a
/// binary search over the whole chunk read its middle first, an old slot out of cache, and was
/// half of the view's apply thread (`perf` during `dlq-bench ingest`). Steps double back from
/// the end, then a binary search runs between the last two probes.
fn position_from_end(keys: &[u32], key: Key, at: impl Fn(u32) -> Key) -> usize {
    // `keys[hi..]` sort after `key`; `keys[..lo]` before it.
    let mut hi = keys.len();
    let mut step = 1;
    let lo = loop {
        let Some(probe) = hi.checked_sub(step) else {
            break 0;
        };
        if at(keys[probe]) < key {
            break probe + 1;
        }
        hi = probe;
        step *= 2;
    };
    lo + keys[lo..hi].partition_point(|&k| at(k) < key)
}

/// Where `slot` sits among `keys`, found by comparing slot numbers. A binary search by key
/// read a slot at each of its ~9 steps, most of them old slots out of cache: removals (a bulk
/// restart's, an expiry sweep's) spent a quarter of the view's apply thread there (`perf`
/// during `dlq-bench redrive`). A chunk is at most [`CHUNK`] keys: the scan reads 2 KiB at
/// worst, in blocks the compiler checks several lanes at a time.
fn find_slot(keys: &[u32], slot: u32) -> Option<usize> {
    const LANES: usize = 16;
    for (b, block) in keys.chunks(LANES).enumerate() {
        // No early exit inside a block: the comparison is vectorised.
        if block.iter().fold(false, |hit, &k| hit | (k == slot)) {
            return block.iter().position(|&k| k == slot).map(|p| b * LANES + p);
        }
    }
    None
}

/// The room a new last chunk starts with, after `full` chunks. A long list (the listing order of
/// every entry, a URL's) fills one chunk after another at its end: grown in small steps, each
/// chunk was reallocated ~25 times on the way to [`CHUNK`], each time leaving a freed block of
/// another size in glibc's bins. A short list starts small: most never fill one chunk.
fn tail_capacity(full: usize) -> usize {
    if full >= 4 {
        CHUNK
    } else {
        16
    }
}

impl<E: Default> Postings<E> {
    pub fn new(key: Key) -> Self {
        Postings::One(key)
    }

    /// What the list keeps beside its keys; `None` for a list of one key.
    pub fn extra(&self) -> Option<&E> {
        match self {
            Postings::One(_) => None,
            Postings::Many(m) => Some(&m.extra),
        }
    }

    pub fn extra_mut(&mut self) -> Option<&mut E> {
        match self {
            Postings::One(_) => None,
            Postings::Many(m) => Some(&mut m.extra),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Postings::One(_) => 1,
            Postings::Many(m) => m.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `key` (not already present); `at(slot)` is the key of a listed slot.
    pub fn insert(&mut self, key: Key, at: impl Fn(u32) -> Key) {
        let (chunks, len) = match self {
            Postings::One(k) => {
                let mut keys = Vec::with_capacity(4);
                keys.push(k.slot);
                *self = Postings::Many(Box::new(Chunks {
                    chunks: vec![Chunk { first: *k, keys }],
                    len: 1,
                    extra: E::default(),
                }));
                return self.insert(key, at);
            }
            Postings::Many(m) => (&mut m.chunks, &mut m.len),
        };
        *len += 1;
        if chunks.is_empty() {
            let mut keys = Vec::with_capacity(4);
            keys.push(key.slot);
            chunks.push(Chunk { first: key, keys });
            return;
        }
        // The last chunk whose first key is below `key` (or the first chunk). A live view adds
        // mostly its newest entries, which land in the last chunk: asked first, that skips the
        // search over the chunks (`partition_point` in `store-apply` during `dlq-bench ingest`
        // went from 10.9% to 8.5%; the rest is the search inside the chunk, whose keys are
        // read from their slots: entries of the store's partitions arrive interleaved, so a
        // new key often sorts just before the last few).
        let ci = match chunks.last() {
            Some(c) if c.first < key => chunks.len() - 1,
            _ => chunks.partition_point(|c| c.first < key).saturating_sub(1),
        };
        let last = ci + 1 == chunks.len();
        let c = &mut chunks[ci];
        let pos = position_from_end(&c.keys, key, &at);
        if c.keys.len() == CHUNK {
            if pos == CHUNK && last {
                // Appending past the end: a new chunk, leaving this one full.
                let mut keys = Vec::with_capacity(tail_capacity(chunks.len()));
                keys.push(key.slot);
                chunks.push(Chunk { first: key, keys });
                return;
            }
            let right = c.keys.split_off(CHUNK / 2);
            c.keys.shrink_to(CHUNK / 2 + CHUNK / 16);
            let right = Chunk {
                first: at(right[0]),
                keys: right,
            };
            chunks.insert(ci + 1, right);
            let ci = if pos > CHUNK / 2 { ci + 1 } else { ci };
            let pos = if pos > CHUNK / 2 {
                pos - CHUNK / 2
            } else {
                pos
            };
            return Self::put(&mut chunks[ci], pos, key);
        }
        Self::put(c, pos, key);
    }

    /// Adds `key`, which sorts after every key held (a list built in listing order): no
    /// search and no slot read.
    pub fn push_last(&mut self, key: Key) {
        match self {
            Postings::One(k) => {
                let mut keys = Vec::with_capacity(4);
                keys.extend([k.slot, key.slot]);
                *self = Postings::Many(Box::new(Chunks {
                    chunks: vec![Chunk { first: *k, keys }],
                    len: 2,
                    extra: E::default(),
                }));
            }
            Postings::Many(m) => {
                let Chunks { chunks, len, .. } = &mut **m;
                *len += 1;
                match chunks.last_mut() {
                    Some(c) if c.keys.len() < CHUNK => Self::put(c, c.keys.len(), key),
                    _ => {
                        let mut keys = Vec::with_capacity(tail_capacity(chunks.len()));
                        keys.push(key.slot);
                        chunks.push(Chunk { first: key, keys });
                    }
                }
            }
        }
    }

    fn put(c: &mut Chunk, pos: usize, key: Key) {
        if c.keys.len() == c.keys.capacity() {
            let n = c.keys.len();
            c.keys.reserve_exact((n / 8).max(4).min(CHUNK - n).max(1));
        }
        c.keys.insert(pos, key.slot);
        if pos == 0 {
            c.first = key;
        }
    }

    /// Removes `key`; true when it was there. `at` as for [`Postings::insert`].
    pub fn remove(&mut self, key: Key, at: impl Fn(u32) -> Key) -> bool {
        let (chunks, len) = match self {
            Postings::One(k) => {
                if *k != key {
                    return false;
                }
                *self = Postings::Many(Box::new(Chunks {
                    chunks: Vec::new(),
                    len: 0,
                    extra: E::default(),
                }));
                return true;
            }
            Postings::Many(m) => (&mut m.chunks, &mut m.len),
        };
        let ci = chunks.partition_point(|c| c.first <= key);
        let Some(ci) = ci.checked_sub(1) else {
            return false;
        };
        let n_chunks = chunks.len();
        let next_len = chunks.get(ci + 1).map_or(usize::MAX, |c| c.keys.len());
        let c = &mut chunks[ci];
        let Some(pos) = find_slot(&c.keys, key.slot).filter(|&p| at(c.keys[p]) == key) else {
            return false;
        };
        *len -= 1;
        c.keys.remove(pos);
        if c.keys.is_empty() {
            chunks.remove(ci);
            return true;
        }
        if pos == 0 {
            c.first = at(c.keys[0]);
        }
        if c.keys.len() < c.keys.capacity() / 2 {
            let n = c.keys.len();
            c.keys.shrink_to(n + n / 4);
        }
        // A small chunk joins its right neighbour when both fit in one.
        if c.keys.len() < CHUNK / 8 && ci + 1 < n_chunks && c.keys.len() + next_len <= CHUNK {
            let next = chunks.remove(ci + 1);
            let c = &mut chunks[ci];
            c.keys.reserve_exact(next.keys.len());
            c.keys.extend_from_slice(&next.keys);
        }
        if *len == 1 {
            let k = chunks[0].first;
            *self = Postings::One(k);
        }
        true
    }

    /// The first and the last key: the oldest and the newest holder of the value, read without
    /// a walk (a group's first and last seen). `at` as for [`Postings::insert`].
    pub fn ends(&self, at: impl Fn(u32) -> Key) -> Option<(Key, Key)> {
        match self {
            Postings::One(k) => Some((*k, *k)),
            Postings::Many(m) => {
                let chunks = &m.chunks;
                let first = chunks.first()?.first;
                let last = chunks.last()?.keys.last().map(|&s| at(s))?;
                Some((first, last))
            }
        }
    }

    /// The slots listed, in order.
    pub fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        let (one, chunks): (Option<u32>, &[Chunk]) = match self {
            Postings::One(k) => (Some(k.slot), &[]),
            Postings::Many(m) => (None, &m.chunks[..]),
        };
        one.into_iter()
            .chain(chunks.iter().flat_map(|c| c.keys.iter().copied()))
    }

    /// The keys at or after `lower`, in order. `at` as for [`Postings::insert`].
    pub fn from<'a>(
        &'a self,
        lower: Key,
        at: impl Fn(u32) -> Key + 'a,
    ) -> impl Iterator<Item = Key> + 'a {
        let (one, chunks): (Option<Key>, &[Chunk]) = match self {
            Postings::One(k) => ((*k >= lower).then_some(*k), &[]),
            Postings::Many(m) => (None, &m.chunks[..]),
        };
        let ci = chunks
            .partition_point(|c| c.first <= lower)
            .saturating_sub(1);
        let chunks = chunks.get(ci..).unwrap_or_default();
        let skip = chunks
            .first()
            .map_or(0, |c| c.keys.partition_point(|&k| at(k) < lower));
        one.into_iter().chain(
            chunks
                .iter()
                .flat_map(|c| c.keys.iter().copied())
                .skip(skip)
                .map(at),
        )
    }

    /// The keys at or before `upper`, last first (a newest-first listing). `at` as for
    /// [`Postings::insert`].
    pub fn until<'a>(
        &'a self,
        upper: Key,
        at: impl Fn(u32) -> Key + 'a,
    ) -> impl Iterator<Item = Key> + 'a {
        let (one, chunks): (Option<Key>, &[Chunk]) = match self {
            Postings::One(k) => ((*k <= upper).then_some(*k), &[]),
            Postings::Many(m) => (None, &m.chunks[..]),
        };
        let n = chunks.partition_point(|c| c.first <= upper);
        let chunks = &chunks[..n];
        let keep = chunks
            .last()
            .map_or(0, |c| c.keys.partition_point(|&k| at(k) <= upper));
        one.into_iter().chain(
            chunks
                .iter()
                .enumerate()
                .rev()
                .flat_map(move |(i, c)| {
                    let end = if i + 1 == n { keep } else { c.keys.len() };
                    c.keys[..end].iter().rev().copied()
                })
                .map(at),
        )
    }
}

/// The union of sorted key streams, in their order (ascending, or descending for streams made
/// by [`Postings::until`]), each key once.
pub struct Union<I: Iterator<Item = Key>> {
    heads: Vec<(Option<Key>, I)>,
    last: Option<Key>,
    descending: bool,
}

impl<I: Iterator<Item = Key>> Union<I> {
    #[cfg(test)]
    pub fn new(streams: impl IntoIterator<Item = I>) -> Self {
        Self::ordered(streams, false)
    }

    pub fn ordered(streams: impl IntoIterator<Item = I>, descending: bool) -> Self {
        let heads = streams.into_iter().map(|mut s| (s.next(), s)).collect();
        Union {
            heads,
            last: None,
            descending,
        }
    }
}

impl<I: Iterator<Item = Key>> Iterator for Union<I> {
    type Item = Key;

    fn next(&mut self) -> Option<Key> {
        loop {
            let heads = self
                .heads
                .iter()
                .enumerate()
                .filter_map(|(i, (h, _))| h.map(|h| (i, h)));
            let (i, _) = if self.descending {
                heads.max_by_key(|(_, h)| *h)?
            } else {
                heads.min_by_key(|(_, h)| *h)?
            };
            let (head, stream) = &mut self.heads[i];
            let k = head.take()?;
            *head = stream.next();
            if self.last != Some(k) {
                self.last = Some(k);
                return Some(k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_16_bytes() {
        assert_eq!(std::mem::size_of::<Postings>(), 16);
    }
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeSet;

    fn check(p: &Postings, oracle: &BTreeSet<(i64, u32)>, at: impl Fn(u32) -> Key) {
        assert_eq!(p.len(), oracle.len());
        let all: Vec<_> = p.from(Key::new(i64::MIN, 0), &at).map(Key::get).collect();
        let want: Vec<_> = oracle.iter().copied().collect();
        assert_eq!(all, want);
        if let Postings::Many(m) = p {
            for c in &m.chunks {
                assert!(!c.keys.is_empty() && c.keys.len() <= CHUNK);
                assert_eq!(c.first, at(c.keys[0]));
            }
        }
    }

    #[test]
    fn a_search_from_the_end_finds_what_a_binary_search_finds() {
        for n in 0..70u32 {
            // Slot s has time 10·s: every gap and both ends are tried.
            let keys: Vec<u32> = (0..n).collect();
            let at = |s: u32| Key::new(i64::from(s) * 10, s);
            for t in -1..=i64::from(n) * 10 + 1 {
                let key = Key::new(t, u32::MAX);
                assert_eq!(
                    position_from_end(&keys, key, at),
                    keys.partition_point(|&k| at(k) < key),
                    "n {n} t {t}"
                );
            }
        }
    }

    #[test]
    fn a_slot_is_found_in_every_lane_and_block_and_nowhere_else() {
        for n in 0..=CHUNK as u32 {
            let keys: Vec<u32> = (0..n).map(|i| i * 3 + 1).collect();
            for (i, &k) in keys.iter().enumerate() {
                assert_eq!(find_slot(&keys, k), Some(i));
            }
            for absent in [0, 2, 3 * n + 1] {
                assert_eq!(find_slot(&keys, absent), None);
            }
        }
    }

    #[test]
    fn keys_order_like_tuples_including_negative_times() {
        let ts = [i64::MIN, -5, -1, 0, 1, 1 << 32, (1 << 32) + 1, i64::MAX];
        for a in ts {
            for b in ts {
                for (s, t) in [(0u32, 1u32), (1, 0), (3, 3)] {
                    assert_eq!(Key::new(a, s).cmp(&Key::new(b, t)), (a, s).cmp(&(b, t)));
                    assert_eq!(Key::new(a, s).get(), (a, s));
                }
            }
        }
    }

    #[test]
    fn random_inserts_removes_and_ranges_agree_with_a_btree() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for round in 0..20 {
            let span = [10i64, 1000, 100_000][round % 3];
            let mut oracle = BTreeSet::new();
            let times = std::cell::RefCell::new(std::collections::HashMap::new());
            let at = |s: u32| Key::new(times.borrow()[&s], s);
            let first = (rng.random_range(0..span), 0u32);
            let mut p = Postings::new(Key::new(first.0, first.1));
            oracle.insert(first);
            times.borrow_mut().insert(first.1, first.0);
            for step in 0..6000u32 {
                // Mostly appends near the end (how entries arrive), some anywhere, removals.
                let r = rng.random_range(0..10);
                if r < 4 || oracle.is_empty() {
                    let t = match r {
                        0 | 1 => rng.random_range(0..span),
                        // A little before the newest (another partition's batch).
                        2 => span + step as i64 / 3 - rng.random_range(0..200),
                        _ => span + step as i64 / 3,
                    };
                    let k = (t, step + 1);
                    if oracle.insert(k) {
                        times.borrow_mut().insert(k.1, k.0);
                        p.insert(Key::new(k.0, k.1), at);
                    }
                } else if r < 8 {
                    let nth = rng.random_range(0..oracle.len());
                    let k = *oracle.iter().nth(nth).unwrap();
                    oracle.remove(&k);
                    assert!(p.remove(Key::new(k.0, k.1), at));
                } else {
                    times.borrow_mut().insert(u32::MAX, -1);
                    assert!(!p.remove(Key::new(-1, u32::MAX), at));
                    // A listed slot under another time is not that slot's key.
                    if let Some(&(t, slot)) = oracle.iter().nth(rng.random_range(0..oracle.len())) {
                        assert!(!p.remove(Key::new(t + 1, slot), at));
                        assert!(!p.remove(Key::new(t - 1, slot), at));
                    }
                    let lower = (rng.random_range(-1..span * 2), rng.random_range(0..9000));
                    let got: Vec<_> = p
                        .from(Key::new(lower.0, lower.1), at)
                        .map(Key::get)
                        .collect();
                    let want: Vec<_> = oracle.range(lower..).copied().collect();
                    assert_eq!(got, want);
                    let got: Vec<_> = p
                        .until(Key::new(lower.0, lower.1), at)
                        .map(Key::get)
                        .collect();
                    let want: Vec<_> = oracle.range(..=lower).rev().copied().collect();
                    assert_eq!(got, want, "until {lower:?}");
                }
            }
            check(&p, &oracle, at);
            // Emptied from the front, as expiry does.
            for k in std::mem::take(&mut oracle) {
                assert!(p.remove(Key::new(k.0, k.1), at));
            }
            assert!(p.is_empty());
        }
    }

    #[test]
    fn a_union_is_sorted_and_has_each_key_once() {
        let a = [1, 3, 5, 7].map(|t| Key::new(t, 0));
        let b = [2, 3, 6].map(|t| Key::new(t, 0));
        let got: Vec<_> = Union::new([a.iter().copied(), b.iter().copied()])
            .map(|k| k.get().0)
            .collect();
        assert_eq!(got, [1, 2, 3, 5, 6, 7]);
        let got: Vec<_> = Union::ordered([a.iter().rev().copied(), b.iter().rev().copied()], true)
            .map(|k| k.get().0)
            .collect();
        assert_eq!(got, [7, 6, 5, 3, 2, 1]);
    }
}
