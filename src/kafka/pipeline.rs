//! The one transactional pipeline: consume → decide → stage records and offsets → commit on
//! size, bytes, age or idleness → commit before a revoke → on any error abort and restart from
//! the committed offsets → a watchdog on progress (reading nothing while records wait rebuilds
//! the clients, [`super::watchdog`]) → bounded shutdown and close. A new producer's first
//! transaction waits for those left open where it writes ([`super::settle`]). Written once;
//! ingest and the command consumer are two [`Handler`]s of it. Every commit point is here (and
//! in the revoke hook of [`TxnConsumerContext`]); the +1 of a committed offset is in
//! [`TxnBatch::consumed`].
//!
//! A handler stages what a record turns into in the open [`TxnBatch`] and marks the record
//! consumed (or holds its offset back, as a bulk command does while it fans out). Nothing a
//! handler does is visible to anyone before the pipeline commits.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    message::BorrowedMessage,
};
use tokio_util::sync::CancellationToken;

use super::{
    settle::{wait_for_open_transactions, SettleError, SETTLE_WITHIN},
    txn::{lock, TxnBatch, TxnConsumerContext, TxnError, TxnLimits},
    watchdog::{ProgressWatch, Stall},
    KafkaConn,
};
use crate::{
    events::{Event, WorkerFailed, WorkerOutcome},
    health::Worker,
};

/// A consumer whose revoke hook commits the pipeline's open transaction.
pub type TxnConsumer = BaseConsumer<TxnConsumerContext>;

/// How long a poll waits when no transaction is open and nothing else is pending.
const POLL_IDLE: Duration = Duration::from_millis(50);
/// With a transaction open, a poll that finds nothing within this long commits it: the
/// pipeline has caught up, so a trickle is committed at once instead of at the interval.
const IDLE_COMMIT_AFTER: Duration = Duration::from_millis(1);
/// How long a poll waits while the handler has work of its own (a bulk command fanning out).
const POLL_BUSY: Duration = Duration::from_millis(5);
/// A busy pipeline's heartbeat: liveness is judged in seconds.
pub(super) const BEAT_EVERY: Duration = Duration::from_millis(50);
/// How often a busy pipeline serves the producer's delivery reports (every turn when idle).
const DELIVERY_POLL_EVERY: Duration = Duration::from_millis(1);

/// What one pipeline does with its records.
pub trait Handler {
    type Error: From<TxnError> + From<KafkaError> + From<Stall>;

    /// One consumed record: stage its outputs in `txn` and mark it consumed there.
    fn record(
        &mut self,
        consumer: &TxnConsumer,
        m: &BorrowedMessage<'_>,
        txn: &mut TxnBatch,
    ) -> Result<(), Self::Error>;

    /// Every turn of the loop, after the record if any: work that is not a record.
    fn turn(&mut self, _consumer: &TxnConsumer, _txn: &mut TxnBatch) -> Result<(), Self::Error> {
        Ok(())
    }

    /// The assignment changed. Before a revoke the open transaction was committed (`txn` is
    /// then not open); an assignment alone leaves it open.
    fn rebalanced(&mut self, _consumer: &TxnConsumer, _txn: &TxnBatch) {}

    /// The open transaction committed.
    fn committed(&mut self) {}

    /// Work of its own is pending: poll briefly, and do not commit merely because no record
    /// came (the transaction then commits at its limits).
    fn busy(&self) -> bool {
        false
    }

    /// The error for a revoke whose commit failed: the pipeline restarts from committed offsets.
    fn revoke_commit_failed() -> Self::Error;
}

/// Where a pipeline reads and how it commits.
pub struct Spec<'a> {
    pub conn: &'a KafkaConn,
    pub group: String,
    pub topic: &'a str,
    /// Stable per instance and role: a restarted instance fences its previous incarnation.
    pub transactional_id: String,
    /// The topics its transactions write.
    pub outputs: Vec<String>,
    pub limits: TxnLimits,
}

/// The transactional producer first: creating it fences our previous incarnation, whose open
/// transaction is aborted now rather than at its timeout.
pub fn producer(spec: &Spec<'_>) -> Result<Arc<Mutex<TxnBatch>>, TxnError> {
    Ok(Arc::new(Mutex::new(TxnBatch::new(
        spec.conn,
        &spec.transactional_id,
    )?)))
}

/// The group consumer whose revoke hook commits `txn`.
pub fn consumer(spec: &Spec<'_>, txn: &Arc<Mutex<TxnBatch>>) -> Result<TxnConsumer, KafkaError> {
    spec.conn
        .group_consumer_config(&spec.group)
        .create_with_context(TxnConsumerContext::new(txn.clone()))
}

/// Runs `handler` on `consumer` until `shutdown` (then commits what is open) or an error (then
/// the open transaction is aborted here, before the caller closes the consumer — closing
/// revokes, and the revoke hook would otherwise commit a half-handled record — and the
/// caller's supervisor starts a fresh pipeline from the committed offsets).
pub fn run<H: Handler>(
    spec: &Spec<'_>,
    txn: &Arc<Mutex<TxnBatch>>,
    consumer: &TxnConsumer,
    handler: &mut H,
    shutdown: &CancellationToken,
    worker: &Worker,
) -> Result<(), H::Error> {
    let result = run_loop(spec, txn, consumer, handler, shutdown, worker);
    if result.is_err() {
        lock(txn).abort();
    }
    result
}

fn run_loop<H: Handler>(
    spec: &Spec<'_>,
    txn: &Arc<Mutex<TxnBatch>>,
    consumer: &TxnConsumer,
    handler: &mut H,
    shutdown: &CancellationToken,
    worker: &Worker,
) -> Result<(), H::Error> {
    if !settle(spec, shutdown, worker)? {
        return Ok(());
    }
    consumer.subscribe(&[spec.topic])?;
    let mut watch = ProgressWatch::new(spec.topic, spec.conn);
    tracing::info!(
        topic = spec.topic,
        transactional_id = spec.transactional_id,
        "pipeline consuming"
    );
    // Per-record bookkeeping reads the clock once per turn: at tens of thousands of records a
    // second, the heartbeat, the watchdog, the batch's age and delivery-report polling each
    // reading it (and polling the producer every record) were a tenth of the thread.
    let mut last_beat: Option<Instant> = None;
    let mut last_delivery_poll = Instant::now();
    loop {
        let now = Instant::now();
        if last_beat.is_none_or(|b| now - b >= BEAT_EVERY) {
            worker.beat();
            last_beat = Some(now);
        }
        if shutdown.is_cancelled() {
            // Bounded by the transaction timeout; what fails to commit is re-read.
            if let Err(e) = lock(txn).commit(consumer) {
                tracing::warn!(error = %e, "final commit failed; its records will be re-read");
            }
            return Ok(());
        }
        // Never hold the batch across poll: the revoke hook takes it inside poll.
        let open = lock(txn).is_open();
        let wait = match (handler.busy(), open) {
            (true, _) => POLL_BUSY,
            (false, true) => IDLE_COMMIT_AFTER,
            (false, false) => POLL_IDLE,
        };
        let polled = consumer.poll(wait);
        if consumer.context().is_broken() {
            return Err(H::revoke_commit_failed());
        }
        let mut t = lock(txn);
        if consumer.context().take_rebalanced() {
            handler.rebalanced(consumer, &t);
        }
        let idle = match polled {
            Some(Ok(m)) => {
                handler.record(consumer, &m, &mut t)?;
                watch.progressed_at(worker, now);
                stall_hook(worker, consumer);
                false
            }
            Some(Err(e)) => {
                tracing::warn!(topic = spec.topic, error = %e, "consumer error");
                true
            }
            None => true,
        };
        handler.turn(consumer, &mut t)?;
        if idle || now - last_delivery_poll >= DELIVERY_POLL_EVERY {
            t.poll();
            last_delivery_poll = now;
        }
        if t.full_at(&spec.limits, now) || (idle && !handler.busy() && t.is_open()) {
            t.commit(consumer)?;
            handler.committed();
        }
        if handler.busy() {
            watch.hold();
        } else if idle && !t.is_open() {
            // Never with the batch held: the watchdog asks the brokers (bounded) and a
            // revoke inside those calls takes the batch.
            drop(t);
            watch.check(consumer, worker)?;
        }
    }
}

/// Before the first transaction of a new producer (every pipeline starts with one, and every
/// abort ends its pipeline): every transaction open where it writes must have ended, or our
/// next commit could end a transaction of ours whose markers were lost ([`super::settle`]).
/// Still open after [`SETTLE_WITHIN`], the worker is reported stalled, with what is open
/// where, and the wait goes on: a restart would change nothing. False on shutdown.
fn settle(
    spec: &Spec<'_>,
    shutdown: &CancellationToken,
    worker: &Worker,
) -> Result<bool, TxnError> {
    let go_on = || {
        worker.beat();
        !shutdown.is_cancelled()
    };
    // Only the stall reported here is cleared here: the watchdog's outlives a rebuild until
    // the pipeline reads again.
    let mut reported = false;
    let started = Instant::now();
    loop {
        match wait_for_open_transactions(spec.conn, &spec.outputs, SETTLE_WITHIN, go_on) {
            Ok(settled) => {
                if reported {
                    worker.progressed();
                }
                let waited = started.elapsed();
                if waited >= Duration::from_secs(1) {
                    tracing::info!(
                        waited_ms = waited.as_millis() as u64,
                        "waited for transactions left open where this pipeline writes"
                    );
                }
                return Ok(settled);
            }
            Err(e @ SettleError::StillOpen { .. }) => {
                let why = e.to_string();
                WorkerFailed {
                    worker: worker.kind(),
                    outcome: WorkerOutcome::Stalled,
                    error: &why,
                }
                .emit();
                worker.set_stalled(Some(why));
                reported = true;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Test-only fault injection, compiled into debug builds only: `DLQ_TEST_STALL_WORKER=ingest`
/// pauses that pipeline's partitions once, after its first record, without telling it — the
/// consumer then reads nothing while records pile up, as a consumer left without a fetch
/// position did after a broker restart. The watchdog test drives it.
#[cfg(debug_assertions)]
fn stall_hook(worker: &Worker, consumer: &TxnConsumer) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static DONE: AtomicBool = AtomicBool::new(false);
    if std::env::var("DLQ_TEST_STALL_WORKER").is_ok_and(|w| w == worker.name())
        && !DONE.swap(true, Ordering::SeqCst)
    {
        if let Ok(assigned) = consumer.assignment() {
            let _ = consumer.pause(&assigned);
            tracing::warn!(worker = worker.name(), "fault injected: partitions paused");
        }
    }
}

#[cfg(not(debug_assertions))]
fn stall_hook(_worker: &Worker, _consumer: &TxnConsumer) {}

/// How long closing a group consumer may take before the pipeline goes on without it.
const CLOSE_BOUND: Duration = Duration::from_secs(10);

/// Closes a group consumer on a thread of its own, waiting at most [`CLOSE_BOUND`]. Dropping a
/// group consumer leaves the group and waits until librdkafka says it is closed, with no bound
/// of its own: while the group coordinator cannot be found that can be forever (librdkafka
/// issue 3740), and the supervisor could never rebuild the pipeline. A close that runs out is
/// left to finish in the background (it ends when the coordinator answers; the group drops the
/// member at its session timeout in any case).
pub fn close(consumer: TxnConsumer) {
    if !drop_within(consumer, CLOSE_BOUND) {
        tracing::warn!(
            bound_secs = CLOSE_BOUND.as_secs(),
            "consumer did not close within its bound; going on without it"
        );
    }
}

/// Drops `value` on a thread of its own and waits at most `bound` for it: true if the drop
/// ended in time. A drop that runs out goes on in the background.
fn drop_within<T: Send + 'static>(value: T, bound: Duration) -> bool {
    let (done, dropped) = std::sync::mpsc::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("consumer-close".into())
        .spawn(move || {
            drop(value);
            let _ = done.send(());
        });
    match spawned {
        Ok(_) => dropped.recv_timeout(bound).is_ok(),
        Err(e) => {
            tracing::warn!(error = %e, "no thread to close the consumer on");
            false
        }
    }
}

/// Commits the open transaction now, for a handler about to wait until a reader has passed a
/// partition's end: that end counts the transaction's own records, which no reader passes
/// until they are committed. Call only where the open transaction holds complete work.
pub fn commit_now<H: Handler>(
    handler: &mut H,
    consumer: &TxnConsumer,
    txn: &mut TxnBatch,
) -> Result<(), H::Error> {
    if txn.is_open() {
        txn.commit(consumer)?;
        handler.committed();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stands in for a consumer whose close never hears from its group coordinator.
    struct HangingDrop(Duration);

    impl Drop for HangingDrop {
        fn drop(&mut self) {
            std::thread::sleep(self.0);
        }
    }

    /// The supervisor rebuilds a pipeline only once the old consumer is closed: a close that
    /// hangs must cost its bound, not the pipeline.
    #[test]
    fn a_close_that_hangs_costs_its_bound_and_no_more() {
        let started = Instant::now();
        assert!(!drop_within(
            HangingDrop(Duration::from_secs(30)),
            Duration::from_millis(200)
        ));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(5),
            "waited {took:?}"
        );
        assert!(drop_within(
            HangingDrop(Duration::from_millis(10)),
            Duration::from_secs(5)
        ));
    }
}
