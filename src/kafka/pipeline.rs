//! The one transactional pipeline: consume → decide → stage records and offsets → commit on
//! size, bytes, age or idleness → commit before a revoke → on any error abort and restart from
//! the committed offsets → bounded shutdown. Written once; ingest and the command consumer are
//! two [`Handler`]s of it. Every commit point is here (and in the revoke hook of
//! [`TxnConsumerContext`]); the +1 of a committed offset is in [`TxnBatch::consumed`].
//!
//! A handler stages what a record turns into in the open [`TxnBatch`] and marks the record
//! consumed (or holds its offset back, as a bulk command does while it fans out). Nothing a
//! handler does is visible to anyone before the pipeline commits.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    message::BorrowedMessage,
};
use tokio_util::sync::CancellationToken;

use super::{
    txn::{lock, TxnBatch, TxnConsumerContext, TxnError, TxnLimits},
    KafkaConn,
};
use crate::health::Worker;

/// A consumer whose revoke hook commits the pipeline's open transaction.
pub type TxnConsumer = BaseConsumer<TxnConsumerContext>;

/// How long a poll waits when no transaction is open and nothing else is pending.
const POLL_IDLE: Duration = Duration::from_millis(50);
/// With a transaction open, a poll that finds nothing within this long commits it: the
/// pipeline has caught up, so a trickle is committed at once instead of at the interval.
const IDLE_COMMIT_AFTER: Duration = Duration::from_millis(1);
/// How long a poll waits while the handler has work of its own (a bulk command fanning out).
const POLL_BUSY: Duration = Duration::from_millis(5);

/// What one pipeline does with its records.
pub trait Handler {
    type Error: From<TxnError> + From<KafkaError>;

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
/// the open transaction is aborted — by the failing commit or by dropping the batch — and the
/// caller's supervisor starts a fresh pipeline from the committed offsets).
pub fn run<H: Handler>(
    spec: &Spec<'_>,
    txn: &Arc<Mutex<TxnBatch>>,
    consumer: &TxnConsumer,
    handler: &mut H,
    shutdown: &CancellationToken,
    worker: &Worker,
) -> Result<(), H::Error> {
    consumer.subscribe(&[spec.topic])?;
    tracing::info!(
        topic = spec.topic,
        transactional_id = spec.transactional_id,
        "pipeline consuming"
    );
    loop {
        worker.beat();
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
                false
            }
            Some(Err(e)) => {
                tracing::warn!(topic = spec.topic, error = %e, "consumer error");
                true
            }
            None => true,
        };
        handler.turn(consumer, &mut t)?;
        t.poll();
        if t.full(&spec.limits) || (idle && !handler.busy() && t.is_open()) {
            t.commit(consumer)?;
            handler.committed();
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
