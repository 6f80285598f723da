//! The entries' bytes, packed end to end in blocks: one allocation per block of a replay
//! (~1 MiB, the reader's batch), not one per entry.
//!
//! Why: a cold start copied each 1.4 KB payload into an allocation of its own, and glibc grew
//! the reader thread's arena a page at a time for them (an `mprotect` every few entries: the
//! reader's largest cost, issue 13). A block is one allocation, and it holds no allocator header
//! or size-class rounding per entry.
//!
//! A block is freed when its last entry goes. An entry removed or replaced leaves its bytes
//! dead in its block; a block whose live bytes fall under three quarters of its length is
//! *sparse*, and once sparse blocks hold an eighth of all held bytes their live entries are
//! copied to a new block ([`Payloads::compact`], bounded per call): the dead bytes held stay
//! bounded whatever is removed, where a block kept whole for its last entry would not be.
//! A quiet topic's batches are a few entries each: such *small* blocks are merged the same way
//! once there are many, so a view filled by a trickle does not keep a block per entry.

use bytes::Bytes;

/// Where one entry's bytes sit: 12 bytes in a slot, where a `Box<[u8]>` took 16 and its
/// allocation 8–16 more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PayloadRef {
    block: u32,
    at: u32,
    len: u32,
}

impl PayloadRef {
    /// Refers to nothing (a free slot).
    pub(super) const NONE: PayloadRef = PayloadRef {
        block: u32::MAX,
        at: 0,
        len: 0,
    };

    pub(super) fn len(&self) -> usize {
        self.len as usize
    }
}

/// A block's number in [`Payloads`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockId(u32);

#[derive(Default)]
struct Block {
    /// Shared so that an insert can read an entry's fields from it while the index changes.
    bytes: Bytes,
    /// Bytes of this block's entries still in the view.
    live: usize,
    /// The slots given bytes of this block (some may have moved on since: a slot is checked
    /// against its own reference before it is moved).
    slots: Vec<u32>,
    /// Being filled by a batch: not freed nor moved while entries of the batch may still come.
    pinned: bool,
    /// Listed in [`Payloads::listed`] for compaction, and why.
    listed: Option<Why>,
}

/// Why a block is listed for compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// Mostly dead bytes: counted in [`Payloads::sparse_bytes`].
    Sparse,
    /// Few bytes: counted in [`Payloads::small_blocks`].
    Small,
}

/// A block is sparse when less than this share of its bytes is live (num/den).
const SPARSE_BELOW: (usize, usize) = (3, 4);
/// A block is small under this length: it costs its bookkeeping (~100 B) for a few entries.
const SMALL_BELOW: usize = 64 << 10;
/// Small blocks are merged once there are this many (~100 KB of bookkeeping).
const COMPACT_AT_SMALL_BLOCKS: usize = 1024;
/// Sparse blocks are compacted once they hold at least this share of all held bytes (1/n)…
const COMPACT_AT_SHARE: usize = 8;
/// …and at least this many bytes (a small view does not move entries for a few KB).
const COMPACT_AT_LEAST: usize = 4 << 20;
/// Live bytes moved by one call of [`Payloads::compact`] at most (~1–2 ms of copying under the
/// view's write lock); the rest waits for the next call.
const COMPACT_BYTES_PER_CALL: usize = 4 << 20;

#[derive(Default)]
pub(super) struct Payloads {
    blocks: Vec<Block>,
    free: Vec<u32>,
    /// Bytes the blocks hold.
    held: usize,
    /// Bytes of live entries (what the view must hold at the least).
    live: usize,
    /// Sparse and small blocks, not yet compacted (some freed since: checked when taken).
    listed: Vec<u32>,
    sparse_bytes: usize,
    small_blocks: usize,
}

/// The slots [`Payloads::compact`] moves, with their new references.
pub(super) type Moves = Vec<(u32, PayloadRef)>;

impl Payloads {
    /// Takes `bytes` as a new block, pinned until [`Payloads::unpin`]: its entries are added
    /// one by one ([`Payloads::add`]).
    pub(super) fn adopt(&mut self, bytes: Bytes) -> BlockId {
        self.held += bytes.len();
        let block = Block {
            bytes,
            live: 0,
            slots: Vec::new(),
            pinned: true,
            listed: None,
        };
        match self.free.pop() {
            Some(i) => {
                self.blocks[i as usize] = block;
                BlockId(i)
            }
            None => {
                self.blocks.push(block);
                BlockId((self.blocks.len() - 1) as u32)
            }
        }
    }

    /// The reference to `at..at + len` of `block`, if it lies inside it.
    pub(super) fn locate(&self, block: BlockId, at: u32, len: u32) -> Option<PayloadRef> {
        let b = self.blocks.get(block.0 as usize)?;
        let end = (at as usize).checked_add(len as usize)?;
        (end <= b.bytes.len()).then_some(PayloadRef {
            block: block.0,
            at,
            len,
        })
    }

    /// The bytes of `r`; empty for [`PayloadRef::NONE`].
    pub(super) fn get(&self, r: PayloadRef) -> &[u8] {
        self.blocks
            .get(r.block as usize)
            .and_then(|b| b.bytes.get(r.at as usize..r.at as usize + r.len as usize))
            .unwrap_or_default()
    }

    /// The bytes of `r`, shared: readable while the view changes.
    pub(super) fn share(&self, r: PayloadRef) -> Bytes {
        match self.blocks.get(r.block as usize) {
            Some(b) if r.at as usize + r.len as usize <= b.bytes.len() => {
                b.bytes.slice(r.at as usize..r.at as usize + r.len as usize)
            }
            _ => Bytes::new(),
        }
    }

    /// Slot `slot` now holds `r`.
    pub(super) fn add(&mut self, r: PayloadRef, slot: u32) {
        if let Some(b) = self.blocks.get_mut(r.block as usize) {
            b.live += r.len as usize;
            b.slots.push(slot);
            self.live += r.len as usize;
        }
    }

    /// The entry holding `r` is gone.
    pub(super) fn release(&mut self, r: PayloadRef) {
        let Some(b) = self.blocks.get_mut(r.block as usize) else {
            return;
        };
        b.live -= r.len as usize;
        self.live -= r.len as usize;
        if !b.pinned {
            self.settle(r.block);
        }
    }

    /// The batch filling `block` is done: it may now be freed or compacted.
    pub(super) fn unpin(&mut self, block: BlockId) {
        if let Some(b) = self.blocks.get_mut(block.0 as usize) {
            b.pinned = false;
            b.slots.shrink_to_fit();
            self.settle(block.0);
        }
    }

    /// Frees block `i` if it holds nothing live, or lists it as sparse or small.
    fn settle(&mut self, i: u32) {
        let b = &mut self.blocks[i as usize];
        let len = b.bytes.len();
        if b.live == 0 {
            self.unlist(i);
            self.held -= len;
            self.blocks[i as usize] = Block::default();
            self.free.push(i);
            return;
        }
        let why = if b.listed.is_some() {
            return;
        } else if len < SMALL_BELOW {
            self.small_blocks += 1;
            Why::Small
        } else if b.live * SPARSE_BELOW.1 < len * SPARSE_BELOW.0 {
            self.sparse_bytes += len;
            Why::Sparse
        } else {
            return;
        };
        b.listed = Some(why);
        self.listed.push(i);
        // Blocks freed while listed stay listed until compacted: keep the list to the blocks
        // listed now should compaction not come for a long time.
        if self.listed.len() > 2 * self.blocks.len() + 64 {
            let blocks = &self.blocks;
            self.listed.retain(|&j| blocks[j as usize].listed.is_some());
            self.listed.sort_unstable();
            self.listed.dedup();
        }
    }

    /// Block `i` leaves the counts of listed blocks (it stays in the list until taken).
    fn unlist(&mut self, i: u32) {
        let b = &mut self.blocks[i as usize];
        match b.listed.take() {
            Some(Why::Sparse) => self.sparse_bytes -= b.bytes.len(),
            Some(Why::Small) => self.small_blocks -= 1,
            None => {}
        }
    }

    /// Bytes of live entries.
    pub(super) fn live_bytes(&self) -> usize {
        self.live
    }

    /// Bytes the blocks hold, live or dead.
    #[cfg(test)]
    pub(super) fn held_bytes(&self) -> usize {
        self.held
    }

    /// Blocks held.
    #[cfg(test)]
    pub(super) fn blocks_held(&self) -> usize {
        self.blocks.len() - self.free.len()
    }

    /// Whether sparse blocks hold enough dead bytes, or small blocks are enough, to be worth a
    /// [`Payloads::compact`].
    pub(super) fn wants_compaction(&self) -> bool {
        (self.sparse_bytes >= COMPACT_AT_LEAST && self.sparse_bytes * COMPACT_AT_SHARE >= self.held)
            || self.small_blocks >= COMPACT_AT_SMALL_BLOCKS
    }

    /// Copies the live entries of listed blocks (up to [`COMPACT_BYTES_PER_CALL`] of them) into
    /// one new block and frees the old ones. `current(slot)` is what `slot` holds now; the
    /// caller points each moved slot at its new reference.
    pub(super) fn compact(&mut self, current: impl Fn(u32) -> PayloadRef) -> Moves {
        let mut taken = Vec::new();
        let mut moving = 0;
        while moving < COMPACT_BYTES_PER_CALL {
            let Some(i) = self.listed.pop() else { break };
            let b = &self.blocks[i as usize];
            // Freed since it was listed, or listed twice (freed, reused, listed again), or
            // being filled.
            if b.listed.is_none() || b.pinned {
                continue;
            }
            moving += b.live;
            taken.push(i);
            // Taken: passed over should the list hold it again.
            self.blocks[i as usize].pinned = true;
        }
        let mut bytes = Vec::with_capacity(moving);
        let mut moved: Vec<(u32, u32, u32)> = Vec::new();
        for &i in &taken {
            let mut listed = std::mem::take(&mut self.blocks[i as usize].slots);
            // A slot given bytes of this block twice (an entry replaced within its batch).
            listed.sort_unstable();
            listed.dedup();
            for slot in listed {
                let r = current(slot);
                // Holding bytes of another block now (or none).
                if r.block != i {
                    continue;
                }
                moved.push((slot, bytes.len() as u32, r.len));
                bytes.extend_from_slice(self.get(r));
            }
        }
        for &i in &taken {
            self.unlist(i);
            let b = &mut self.blocks[i as usize];
            self.live -= b.live;
            self.held -= b.bytes.len();
            *b = Block::default();
            self.free.push(i);
        }
        if moved.is_empty() {
            return Vec::new();
        }
        let block = self.adopt(Bytes::from(bytes));
        let moves = moved
            .into_iter()
            .map(|(slot, at, len)| {
                let r = PayloadRef {
                    block: block.0,
                    at,
                    len,
                };
                self.add(r, slot);
                (slot, r)
            })
            .collect();
        self.unpin(block);
        moves
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` entries of `len` bytes each (entry `i` filled with byte `i`), in blocks of `per`.
    fn filled(n: usize, len: usize, per: usize) -> (Payloads, Vec<PayloadRef>) {
        let mut p = Payloads::default();
        let mut refs = Vec::new();
        for first in (0..n).step_by(per) {
            let count = per.min(n - first);
            let bytes: Vec<u8> = (first..first + count)
                .flat_map(|i| std::iter::repeat_n(i as u8, len))
                .collect();
            let block = p.adopt(bytes.into());
            for k in 0..count {
                let r = p
                    .locate(block, (k * len) as u32, len as u32)
                    .expect("inside the block");
                p.add(r, (first + k) as u32);
                refs.push(r);
            }
            p.unpin(block);
        }
        (p, refs)
    }

    #[test]
    fn a_block_is_freed_with_its_last_entry_and_not_while_pinned() {
        let mut p = Payloads::default();
        let block = p.adopt(vec![7u8; 100].into());
        let a = p.locate(block, 0, 60).expect("inside");
        let b = p.locate(block, 60, 40).expect("inside");
        assert_eq!(p.locate(block, 60, 41), None, "past the block's end");
        p.add(a, 0);
        // Replaced within its own batch: the block must survive for the rest of the batch.
        p.release(a);
        assert_eq!(p.held_bytes(), 100);
        p.add(b, 0);
        p.unpin(block);
        assert_eq!((p.live_bytes(), p.held_bytes()), (40, 100));
        assert_eq!(p.get(b), &[7u8; 40][..]);
        p.release(b);
        assert_eq!((p.live_bytes(), p.held_bytes()), (0, 0), "freed");
        assert_eq!(p.free, vec![0]);
        assert_eq!(p.get(PayloadRef::NONE), &[] as &[u8]);
    }

    /// Removing most entries of every block compacts the rest into a new block: the dead bytes
    /// held fall to nothing and every entry left reads the same bytes at its new place.
    #[test]
    fn sparse_blocks_are_compacted_and_their_entries_keep_their_bytes() {
        // 8,000 entries of 1 KiB, 1,000 a block: 8 blocks, ~7.8 MiB.
        let (mut p, mut refs) = filled(8_000, 1024, 1_000);
        assert!(!p.wants_compaction());
        for (i, r) in refs.iter().enumerate() {
            if i % 8 != 0 {
                p.release(*r);
            }
        }
        assert_eq!(p.live_bytes(), 1_000 * 1024);
        assert!(p.wants_compaction(), "held {} B", p.held_bytes());
        let mut moved = 0;
        while p.wants_compaction() {
            let current = refs.clone();
            let moves = p.compact(|s| {
                // Removed entries are free slots: they hold nothing.
                if s % 8 == 0 {
                    current[s as usize]
                } else {
                    PayloadRef::NONE
                }
            });
            assert!(!moves.is_empty(), "compaction made no progress");
            for (s, r) in moves {
                refs[s as usize] = r;
                moved += 1;
            }
        }
        assert_eq!(moved, 1_000, "every entry left moved once");
        assert_eq!(p.live_bytes(), 1_000 * 1024);
        assert_eq!(p.held_bytes(), 1_000 * 1024, "no dead bytes held");
        for i in (0..8_000).step_by(8) {
            assert_eq!(p.get(refs[i]), &vec![i as u8; 1024][..], "entry {i}");
        }
    }

    /// A block listed as sparse, freed, and reused is compacted once, not twice.
    #[test]
    fn a_block_listed_twice_is_taken_once() {
        let (mut p, refs) = filled(6_000, 1024, 1_000);
        // Block 0: sparse, then freed.
        for r in &refs[..1_000] {
            p.release(*r);
        }
        assert_eq!(p.free, vec![0]);
        // Its number reused by a block that goes sparse in turn.
        let block = p.adopt(vec![1u8; 1_000 * 1024].into());
        assert_eq!(block, BlockId(0));
        let mut reused = Vec::new();
        for k in 0..1_000u32 {
            let r = p.locate(block, k * 1024, 1024).expect("inside");
            p.add(r, 10_000 + k);
            reused.push(r);
        }
        p.unpin(block);
        for r in &reused[100..] {
            p.release(*r);
        }
        for r in &refs[1_000..] {
            p.release(*r);
        }
        let held = p.held_bytes();
        assert_eq!(held, 1_000 * 1024, "only block 0 holds anything");
        assert_eq!(
            p.listed.iter().filter(|&&i| i == 0).count(),
            2,
            "listed twice"
        );
        let moves = p.compact(|s| {
            if (10_000..10_100).contains(&s) {
                reused[(s - 10_000) as usize]
            } else {
                PayloadRef::NONE
            }
        });
        assert_eq!(moves.len(), 100);
        assert_eq!((p.live_bytes(), p.held_bytes()), (100 * 1024, 100 * 1024));
        let mut free = p.free.clone();
        free.sort_unstable();
        free.dedup();
        assert_eq!(
            free.len(),
            p.free.len(),
            "a block freed twice: {:?}",
            p.free
        );
        for i in &p.free {
            assert!(
                p.blocks[*i as usize].bytes.is_empty(),
                "block {i} is free and holds entries"
            );
        }
    }

    /// A quiet topic's batches are an entry each: their blocks are merged once there are many,
    /// so a view filled by a trickle does not keep a block (and its bookkeeping) per entry.
    #[test]
    fn small_blocks_are_merged_once_there_are_many() {
        let mut p = Payloads::default();
        let mut refs: Vec<PayloadRef> = Vec::new();
        for i in 0..3_000u32 {
            let block = p.adopt(vec![i as u8; 1_400].into());
            let r = p.locate(block, 0, 1_400).expect("inside");
            p.add(r, i);
            refs.push(r);
            p.unpin(block);
            if p.wants_compaction() {
                let current = refs.clone();
                for (s, r) in p.compact(|s| current[s as usize]) {
                    refs[s as usize] = r;
                }
            }
        }
        let blocks = p.blocks.len() - p.free.len();
        assert!(
            blocks < COMPACT_AT_SMALL_BLOCKS,
            "{blocks} blocks for 3,000 entries"
        );
        assert_eq!(p.live_bytes(), 3_000 * 1_400);
        assert_eq!(p.held_bytes(), 3_000 * 1_400);
        for (i, r) in refs.iter().enumerate() {
            assert_eq!(p.get(*r), &[i as u8; 1_400][..], "entry {i}");
        }
    }
}
