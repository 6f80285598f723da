//! Readiness: Kafka reachable, the store view caught up, the store topic trustworthy, and every
//! worker alive and making progress.
//!
//! Each worker thread holds a [`Worker`] handle and calls [`Worker::beat`] on every turn of its
//! loop (and inside every bounded wait). A worker whose last beat is older than [`STALL_AFTER`]
//! is reported stalled; so is one whose loop turns but reads nothing while records wait for it
//! (the progress watchdog, [`crate::kafka::watchdog`], sets [`Worker::set_stalled`] until it
//! reads again); one that is restarting after an error is reported with the error; one
//! that died for good (it kept panicking) is reported dead, and [`Health::fatal`] tells the
//! service to exit non-zero so the orchestrator restarts the process — the topics are the truth,
//! so a fresh process loses nothing.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicI64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use crate::{events::WorkerKind, store::StoreView};

/// A worker silent for this long is stalled. Every Kafka call between beats is bounded by
/// [`crate::kafka::txn::CALL_TIMEOUT`] (10 s); a healthy commit takes milliseconds, so a worker
/// still inside a chain of them after 45 s (a commit resumed while the coordinator moves, then
/// an abort) is not ready, even though the chain will end. The waits that can last longer beat
/// inside.
pub const STALL_AFTER: Duration = Duration::from_secs(45);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerStatus {
    Running,
    /// Between an error and the next start of its pipeline (with the error).
    Restarting(String),
    /// Gave up: it cannot be restarted (with why).
    Dead(String),
}

struct WorkerState {
    kind: WorkerKind,
    last_beat_ms: AtomicI64,
    status: Mutex<WorkerStatus>,
    /// Why the watchdog says it reads nothing while records wait (cleared when it reads). It
    /// outlives a restart of the pipeline: only reading again proves the stall is over.
    stalled: Mutex<Option<String>>,
    /// `stalled` is set: the per-record clear costs one atomic load.
    is_stalled: AtomicBool,
}

/// A worker's line to health. Cheap to clone and to beat.
#[derive(Clone)]
pub struct Worker(Arc<WorkerState>);

impl Worker {
    /// A handle registered nowhere (for tests and tools that run a pipeline on their own).
    pub fn detached(kind: WorkerKind) -> Worker {
        Worker(Arc::new(WorkerState {
            kind,
            last_beat_ms: AtomicI64::new(crate::now_ms()),
            status: Mutex::new(WorkerStatus::Running),
            stalled: Mutex::new(None),
            is_stalled: AtomicBool::new(false),
        }))
    }

    pub fn kind(&self) -> WorkerKind {
        self.0.kind
    }

    pub fn name(&self) -> &'static str {
        self.0.kind.as_str()
    }

    /// The worker is alive and its loop turned.
    pub fn beat(&self) {
        self.0
            .last_beat_ms
            .store(crate::now_ms(), Ordering::Relaxed);
    }

    pub fn set(&self, status: WorkerStatus) {
        self.beat();
        *lock(&self.0.status) = status;
    }

    pub fn status(&self) -> WorkerStatus {
        lock(&self.0.status).clone()
    }

    /// The progress watchdog's verdict: `Some(why)` while records wait and nothing is read.
    pub fn set_stalled(&self, why: Option<String>) {
        self.0.is_stalled.store(why.is_some(), Ordering::SeqCst);
        *lock(&self.0.stalled) = why;
    }

    /// The worker read something: any stall is over.
    pub fn progressed(&self) {
        if self.0.is_stalled.load(Ordering::Relaxed) {
            self.set_stalled(None);
        }
    }

    pub fn stalled(&self) -> Option<String> {
        lock(&self.0.stalled).clone()
    }

    fn silent_for(&self) -> Duration {
        let ms = crate::now_ms() - self.0.last_beat_ms.load(Ordering::Relaxed);
        Duration::from_millis(ms.max(0) as u64)
    }
}

pub struct Health {
    view: Arc<StoreView>,
    /// The command ledger: job routes and action answers read it, so an instance whose
    /// ledger is still loading is not ready (it would answer those with 503).
    ledger: Arc<crate::commands::ledger::Ledger>,
    workers: Mutex<Vec<Worker>>,
    kafka_reachable: AtomicBool,
    /// A problem with the store topic's configuration (cleared once fixed).
    store_config_breach: Mutex<Option<String>>,
    /// Entries the view holds were deleted from the topic: sticky, entries are lost.
    store_truncated: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Health {
    pub fn new(view: Arc<StoreView>, ledger: Arc<crate::commands::ledger::Ledger>) -> Health {
        Health {
            view,
            ledger,
            workers: Mutex::new(Vec::new()),
            kafka_reachable: AtomicBool::new(false),
            store_config_breach: Mutex::new(None),
            store_truncated: Mutex::new(None),
        }
    }

    /// A new worker, watched from now on.
    pub fn register(&self, kind: WorkerKind) -> Worker {
        let w = Worker::detached(kind);
        lock(&self.workers).push(w.clone());
        w
    }

    /// Why the process must stop: a worker that cannot be restarted.
    pub fn fatal(&self) -> Option<String> {
        lock(&self.workers).iter().find_map(|w| match w.status() {
            WorkerStatus::Dead(why) => Some(format!("worker `{}` stopped: {why}", w.name())),
            _ => None,
        })
    }

    fn worker_problems(&self, why: &mut Vec<String>) {
        for w in lock(&self.workers).iter() {
            match w.status() {
                WorkerStatus::Dead(e) => why.push(format!("worker `{}` stopped: {e}", w.name())),
                WorkerStatus::Restarting(e) => why.push(format!(
                    "worker `{}` is restarting after an error: {e}",
                    w.name()
                )),
                WorkerStatus::Running if w.stalled().is_some() => why.push(format!(
                    "worker `{}` is stalled: {}",
                    w.name(),
                    w.stalled().unwrap_or_default()
                )),
                WorkerStatus::Running => {
                    let silent = w.silent_for();
                    if silent >= STALL_AFTER {
                        why.push(format!(
                            "worker `{}` has not made progress for {}s",
                            w.name(),
                            silent.as_secs()
                        ));
                    }
                }
            }
        }
    }

    pub fn set_kafka_reachable(&self, ok: bool) {
        self.kafka_reachable.store(ok, Ordering::SeqCst);
    }

    pub fn kafka_reachable(&self) -> bool {
        self.kafka_reachable.load(Ordering::SeqCst)
    }

    pub fn set_store_config_breach(&self, breach: Option<String>) {
        *lock(&self.store_config_breach) = breach;
    }

    pub fn set_store_truncated(&self, what: String) {
        lock(&self.store_truncated).get_or_insert(what);
    }

    /// `Ok` when ready to serve; otherwise every reason it is not.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let mut why = Vec::new();
        if !self.kafka_reachable() {
            why.push("Kafka is not reachable".to_string());
        }
        if !self.view.is_caught_up() {
            why.push("the store view has not caught up with the store topic yet".to_string());
        }
        if !self.ledger.is_caught_up() {
            why.push("the command ledger has not caught up with the results topic yet".to_string());
        }
        if let Some(b) = lock(&self.store_config_breach).as_ref() {
            why.push(format!("store topic integrity: {b}"));
        }
        if let Some(t) = lock(&self.store_truncated).as_ref() {
            why.push(format!("store topic integrity: {t}"));
        }
        self.worker_problems(&mut why);
        if why.is_empty() {
            Ok(())
        } else {
            Err(why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarting_stalled_or_dead_worker_makes_the_service_unready_naming_it() {
        let view = Arc::new(StoreView::new());
        view.set_caught_up();
        let ledger = Arc::new(crate::commands::ledger::Ledger::new());
        ledger.progress.set_caught_up();
        let health = Health::new(view, ledger);
        health.set_kafka_reachable(true);
        let ingest = health.register(WorkerKind::Ingest);
        assert_eq!(health.readiness(), Ok(()));

        ingest.set(WorkerStatus::Restarting("broker down".into()));
        let why = health.readiness().unwrap_err();
        assert!(
            why[0].contains("`ingest`") && why[0].contains("broker down"),
            "{why:?}"
        );
        assert_eq!(health.fatal(), None);

        ingest.set(WorkerStatus::Running);
        ingest
            .0
            .last_beat_ms
            .store(crate::now_ms() - 61_000, Ordering::Relaxed);
        let why = health.readiness().unwrap_err();
        assert!(why[0].contains("has not made progress for 6"), "{why:?}");
        ingest.beat();
        assert_eq!(health.readiness(), Ok(()));

        // Alive, but reading nothing while records wait: not ready until it reads again,
        // across a restart of its pipeline.
        ingest.set_stalled(Some("read nothing for 12s while 40 records wait".into()));
        let why = health.readiness().unwrap_err();
        assert!(
            why[0].contains("`ingest` is stalled") && why[0].contains("40 records"),
            "{why:?}"
        );
        ingest.set(WorkerStatus::Running);
        assert!(health.readiness().is_err(), "a restart alone ends no stall");
        ingest.progressed();
        assert_eq!(health.readiness(), Ok(()));

        ingest.set(WorkerStatus::Dead("panicked 3 times".into()));
        assert!(health.readiness().unwrap_err()[0].contains("stopped"));
        assert!(health.fatal().is_some_and(|f| f.contains("`ingest`")));
    }
}
