//! How far a reader of a whole topic has read — per partition, the next offset to read — and
//! whether it has caught up with the ends the topic had when reading started.
//!
//! The store view and the command ledger each publish one. This is the one read-your-writes
//! mechanism: whoever must act only once a reader has passed an offset (the command consumer
//! before deciding on a partition, an HTTP action before answering) waits on it here — a
//! condition variable for threads, a watch channel for async tasks — instead of sleep-polling.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Condvar, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use tokio::sync::watch;

/// How often a blocked waiter wakes to run its `tick` (e.g. a liveness beat) when nothing moves.
const TICK: Duration = Duration::from_millis(100);

pub struct ReadProgress {
    positions: Mutex<HashMap<i32, i64>>,
    moved: Condvar,
    /// Threads blocked in a wait for a position: a reader notifies only when someone waits (a
    /// notify is a syscall, and readers advance once per record).
    waiters: AtomicUsize,
    /// Threads waiting for the catch-up alone, apart: woken by every record of a replay, the
    /// command consumer's wait for a cold start took a fifth of a core.
    caught: Condvar,
    catch_up_waiters: AtomicUsize,
    caught_up: AtomicBool,
    /// Bumped on every change while anyone subscribes (async waiters).
    changes: watch::Sender<u64>,
}

impl Default for ReadProgress {
    fn default() -> Self {
        ReadProgress::new()
    }
}

impl ReadProgress {
    pub fn new() -> ReadProgress {
        ReadProgress {
            positions: Mutex::new(HashMap::new()),
            moved: Condvar::new(),
            waiters: AtomicUsize::new(0),
            caught: Condvar::new(),
            catch_up_waiters: AtomicUsize::new(0),
            caught_up: AtomicBool::new(false),
            changes: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i32, i64>> {
        self.positions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            // Taking the lock orders this notify after a waiter's check.
            drop(self.lock());
            self.moved.notify_all();
        }
        if self.changes.receiver_count() > 0 {
            self.changes.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// The reader has read `partition` up to `next_offset` (exclusive). Never moves back.
    pub fn advance(&self, partition: i32, next_offset: i64) {
        {
            let mut p = self.lock();
            let at = p.entry(partition).or_insert(0);
            if next_offset <= *at {
                return;
            }
            *at = next_offset;
        }
        self.changed();
    }

    /// The next offset the reader will read on `partition` (0 before any).
    pub fn position(&self, partition: i32) -> i64 {
        self.lock().get(&partition).copied().unwrap_or(0)
    }

    pub fn set_caught_up(&self) {
        self.caught_up.store(true, Ordering::SeqCst);
        if self.catch_up_waiters.load(Ordering::SeqCst) > 0 {
            drop(self.lock());
            self.caught.notify_all();
        }
        self.changed();
    }

    pub fn is_caught_up(&self) -> bool {
        self.caught_up.load(Ordering::SeqCst)
    }

    /// Blocks until `done` holds for the positions (checked on every change), or `deadline`.
    /// `tick` runs at least every 100 ms while waiting. True if `done` held.
    fn wait(
        &self,
        deadline: Instant,
        mut tick: impl FnMut(),
        catch_up_only: bool,
        mut done: impl FnMut(&ReadProgress, &HashMap<i32, i64>) -> bool,
    ) -> bool {
        let (cv, waiters) = if catch_up_only {
            (&self.caught, &self.catch_up_waiters)
        } else {
            (&self.moved, &self.waiters)
        };
        waiters.fetch_add(1, Ordering::SeqCst);
        let mut guard = self.lock();
        let held = loop {
            if done(self, &guard) {
                break true;
            }
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            tick();
            let (g, _) = cv
                .wait_timeout(guard, (deadline - now).min(TICK))
                .unwrap_or_else(|p| p.into_inner());
            guard = g;
        };
        drop(guard);
        waiters.fetch_sub(1, Ordering::SeqCst);
        held
    }

    /// Blocks until the reader has read `partition` up to `offset`, or `deadline` (false).
    pub fn wait_for(
        &self,
        partition: i32,
        offset: i64,
        deadline: Instant,
        tick: impl FnMut(),
    ) -> bool {
        self.wait(deadline, tick, false, |_, p| {
            p.get(&partition).copied().unwrap_or(0) >= offset
        })
    }

    /// Blocks until the reader has caught up, or `deadline` (false).
    pub fn wait_caught_up(&self, deadline: Instant, tick: impl FnMut()) -> bool {
        self.wait(deadline, tick, true, |s, _| s.is_caught_up())
    }

    /// A receiver that sees a new value after each change: async waiters re-check their
    /// condition on `changed()`.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_waiter_wakes_when_the_reader_passes_its_offset_and_times_out_otherwise() {
        let p = Arc::new(ReadProgress::new());
        p.advance(3, 10);
        p.advance(3, 5); // never moves back
        assert_eq!(p.position(3), 10);
        assert_eq!(p.position(4), 0);

        let reader = {
            let p = p.clone();
            std::thread::spawn(move || {
                for next in 11..=20 {
                    std::thread::sleep(Duration::from_millis(5));
                    p.advance(3, next);
                }
            })
        };
        let started = Instant::now();
        let mut ticks = 0;
        assert!(p.wait_for(3, 20, started + Duration::from_secs(10), || ticks += 1));
        assert!(started.elapsed() < Duration::from_secs(5));
        reader.join().expect("reader");

        let started = Instant::now();
        assert!(!p.wait_for(3, 21, started + Duration::from_millis(250), || ticks += 1));
        assert!(started.elapsed() >= Duration::from_millis(250));
        assert!(ticks >= 2, "the waiter ticks while it waits: {ticks}");
        assert_eq!(p.waiters.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn async_waiters_see_every_change() {
        let p = Arc::new(ReadProgress::new());
        let mut rx = p.subscribe();
        let q = p.clone();
        tokio::task::spawn_blocking(move || q.set_caught_up());
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("changed in time")
            .expect("sender alive");
        assert!(p.is_caught_up());
    }
}
