//! Tails a whole topic (read_committed, every partition, from the beginning) on its own thread,
//! handing each record to a [`TailSink`]. The sink is told once every partition has reached the
//! end offset it had when tailing started: that is "caught up".
//!
//! The store view and the command ledger are both built this way: the topics are the truth,
//! and every instance rebuilds its state from them.

use std::{
    collections::HashMap,
    thread,
    time::{Duration, Instant},
};

use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    message::{BorrowedMessage, Message},
    Offset, TopicPartitionList,
};
use tokio_util::sync::CancellationToken;

use super::{
    pipeline::BEAT_EVERY,
    watchdog::{ProgressWatch, Stall},
    KafkaConn,
};
use crate::health::Worker;

#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Stalled(#[from] Stall),
}

/// How often positions are read while records flow.
const POSITIONS_EVERY: Duration = Duration::from_millis(20);

/// What a tailed topic feeds.
pub trait TailSink: Send + 'static {
    fn record(&mut self, m: &BorrowedMessage<'_>);
    /// The next offset to read on `partition` (moves past transaction markers too).
    fn position(&mut self, _partition: i32, _next_offset: i64) {}
    fn caught_up(&mut self) {}
    /// Before the replay: how many records the topic holds up to its ends at start (an upper
    /// bound on what the replay brings: superseded records and tombstones count too).
    fn backlog(&mut self, _records: u64) {}
    /// Called before the tail waits for more records: whatever the sink buffered must be
    /// applied now (the store reader hands records to its applier thread in batches).
    fn flush(&mut self) {}
}

/// Starts tailing `topic` into `sink` under [`super::supervise`]; the thread stops when
/// `shutdown` is cancelled. A failed consumer is rebuilt and reads from the beginning again
/// (applying a record twice is harmless for a last-write-wins view).
pub fn spawn<S: TailSink>(
    worker: Worker,
    conn: KafkaConn,
    topic: String,
    mut sink: S,
    shutdown: CancellationToken,
) -> std::io::Result<thread::JoinHandle<()>> {
    let mut caught_up = false;
    super::supervise(worker, conn.clone(), shutdown, move |shutdown, worker| {
        let _span = tracing::info_span!("tail", topic = %topic).entered();
        tail(&conn, &topic, &mut sink, &mut caught_up, shutdown, worker)
    })
}

/// How long a topic or partition the brokers do not know yet is asked about again before the
/// tail fails.
const NEW_TOPIC_WAIT: Duration = Duration::from_secs(10);

/// `ask`'s answer. A topic created a moment ago is unknown to some brokers, or its partitions
/// have no leader, for a moment (`UnknownTopicOrPartition`, `NotLeaderForPartition`,
/// `LeaderNotAvailable`): asked again every 100 ms for up to [`NEW_TOPIC_WAIT`], quietly,
/// instead of failing the tail with an ERROR and a restart at every first start on new topics.
fn ask_until_known<T>(
    topic: &str,
    shutdown: &CancellationToken,
    mut ask: impl FnMut() -> Result<T, KafkaError>,
) -> Result<T, KafkaError> {
    use rdkafka::types::RDKafkaErrorCode::{
        LeaderNotAvailable, NotLeaderForPartition, UnknownTopicOrPartition,
    };
    let started = Instant::now();
    loop {
        match ask() {
            Err(e)
                if matches!(
                    e.rdkafka_error_code(),
                    Some(NotLeaderForPartition | LeaderNotAvailable | UnknownTopicOrPartition)
                ) && started.elapsed() < NEW_TOPIC_WAIT
                    && !shutdown.is_cancelled() =>
            {
                tracing::debug!(topic, error = %e, "not known to the brokers yet; asking again");
                thread::sleep(Duration::from_millis(100));
            }
            answer => return answer,
        }
    }
}

/// `topic`'s partitions; none listed is `UnknownTopicOrPartition`.
fn partitions(consumer: &BaseConsumer, topic: &str) -> Result<Vec<i32>, KafkaError> {
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(KafkaError::MetadataFetch(
            rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
        ));
    }
    Ok(partitions)
}

fn tail<S: TailSink>(
    conn: &KafkaConn,
    topic: &str,
    sink: &mut S,
    caught_up: &mut bool,
    shutdown: &CancellationToken,
    worker: &Worker,
) -> Result<(), TailError> {
    let consumer: BaseConsumer = conn.reader_config().create()?;
    let partitions = ask_until_known(topic, shutdown, || partitions(&consumer, topic))?;
    // The end of each partition now: caught up once every partition reaches it.
    let mut pending: HashMap<i32, i64> = HashMap::new();
    let mut backlog = 0u64;
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        let (low, high) = ask_until_known(topic, shutdown, || {
            consumer.fetch_watermarks(topic, p, Duration::from_secs(10))
        })?;
        if high > low {
            pending.insert(p, high);
            backlog += (high - low) as u64;
        }
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    if !*caught_up {
        sink.backlog(backlog);
    }
    consumer.assign(&tpl)?;
    tracing::info!(
        topic,
        partitions = partitions.len(),
        "tailing from the beginning"
    );
    let mut positions_read = Instant::now();
    let mut last_beat: Option<Instant> = None;
    let mut watch = ProgressWatch::new(topic, conn);
    while !shutdown.is_cancelled() {
        // The clock is read once a turn: a replay turns once per record, and the heartbeat,
        // the watchdog and the positions' age each reading it were ~8% of the reader thread.
        let now = Instant::now();
        if last_beat.is_none_or(|b| now - b >= BEAT_EVERY) {
            worker.beat();
            last_beat = Some(now);
        }
        let polled = match consumer.poll(Duration::ZERO) {
            None => {
                sink.flush();
                consumer.poll(Duration::from_millis(100))
            }
            some => some,
        };
        let idle = match polled {
            Some(Ok(m)) => {
                sink.record(&m);
                sink.position(m.partition(), m.offset() + 1);
                watch.progressed_at(worker, now);
                false
            }
            Some(Err(e)) => {
                tracing::warn!(topic, error = %e, "tail consumer error");
                true
            }
            None => true,
        };
        // With read_committed the last offsets may be transaction markers, never delivered
        // as records; librdkafka's position moves past them, so the position is the signal.
        // Reading positions locks every partition: when idle, or every 20 ms while records
        // flow (not per record — that was most of the reader's time on a cold start).
        if !idle && now - positions_read < POSITIONS_EVERY {
            continue;
        }
        positions_read = now;
        if let Ok(positions) = consumer.position() {
            for e in positions.elements() {
                if let Offset::Offset(pos) = e.offset() {
                    sink.position(e.partition(), pos);
                    if pending.get(&e.partition()).is_some_and(|end| pos >= *end) {
                        pending.remove(&e.partition());
                    }
                }
            }
        }
        if !*caught_up && pending.is_empty() {
            *caught_up = true;
            sink.caught_up();
        }
        if idle {
            watch.check(&consumer, worker)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A topic created a moment ago has no leader for a moment: the tail's first questions
    /// wait for one instead of failing (which logged an ERROR and restarted the store reader
    /// and the command ledger at every first start on new topics). Real broker when
    /// `KAFKA_BOOTSTRAP` is set; the embedded one elects its leaders as it creates.
    #[test]
    fn each_partition_of_a_topic_just_created_is_answered() {
        const PARTITIONS: i32 = 12;
        let shutdown = CancellationToken::new();
        for _ in 0..3 {
            let (_broker, conn, topic) = crate::kafka::test_broker("tail-new", PARTITIONS);
            let consumer: BaseConsumer = conn.reader_config().create().expect("consumer");
            let listed = ask_until_known(&topic, &shutdown, || partitions(&consumer, &topic));
            assert_eq!(listed.ok().map(|p| p.len()), Some(PARTITIONS as usize));
            for p in 0..PARTITIONS {
                let answer = ask_until_known(&topic, &shutdown, || {
                    consumer.fetch_watermarks(&topic, p, Duration::from_secs(10))
                });
                if let Err(e) = answer {
                    panic!("{topic}-{p} unanswered: {e}");
                }
            }
        }
    }

    /// A topic that stays unknown is an error after the bound, not a wait without end.
    #[test]
    fn a_topic_that_stays_unknown_fails_after_the_bound() {
        let (_broker, conn, topic) = crate::kafka::test_broker("tail-gone", 1);
        let consumer: BaseConsumer = conn.reader_config().create().expect("consumer");
        let started = Instant::now();
        let missing = format!("{topic}-never-created");
        let answer = ask_until_known(&missing, &CancellationToken::new(), || {
            partitions(&consumer, &missing)
        });
        assert!(answer.is_err(), "{answer:?}");
        assert!(
            started.elapsed() >= NEW_TOPIC_WAIT,
            "{:?}",
            started.elapsed()
        );
    }
}
