//! The progress watchdog: a pipeline whose loop turns (its thread is alive and beats) but which
//! reads nothing while committed records wait on its partitions is stalled — nothing is lost on
//! Kafka, but nothing arrives either, and a heartbeat alone does not show it.
//!
//! How it judges: after [`CHECK_EVERY`] without reading a record, it asks the brokers where each
//! assigned partition ends and compares that with the consumer's position. Our consumers read
//! `read_committed`, and librdkafka asks for the end with the client's isolation level, so the
//! end is the last *stable* offset: a transaction still open elsewhere (a frozen instance's)
//! does not count as waiting, and its timeout is not mistaken for a stall. Records waiting for
//! [`REPORT_AFTER`] make the worker stalled in `/readyz` (with how many wait, where); for
//! [`RESTART_AFTER`] the pipeline gives up with a [`Stall`] and its supervisor rebuilds its Kafka
//! clients, which is what recovers a consumer left without a fetch position or a paused
//! partition. The worker stays stalled across the rebuild until it reads again. When the brokers
//! cannot be asked, nothing is judged: `/readyz` already says Kafka is unreachable.
//!
//! The ends are asked through a client of the watchdog's own, never through the pipeline's
//! consumer: a broker answers one request per connection at a time, and a consumer's
//! connection mostly carries a fetch the broker holds for up to `fetch.wait.max.ms` (500 ms)
//! when there is nothing to read — exactly when the watchdog looks. Asked through the consumer,
//! the ends of 12 partitions took 6 s, during which the pipeline read nothing: a command that
//! arrived then waited for it (a 100,000-entry redrive measured 8 s instead of 4).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use rdkafka::{
    consumer::{BaseConsumer, Consumer, ConsumerContext},
    Offset, TopicPartitionList,
};

use super::KafkaConn;
use crate::{
    events::{Event, PipelineStalled},
    health::Worker,
};

/// Quiet this long, the watchdog looks at what waits.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);
/// Records waiting unread this long: the worker is reported stalled.
pub const REPORT_AFTER: Duration = Duration::from_secs(10);
/// Records waiting unread this long: the pipeline rebuilds its clients.
pub const RESTART_AFTER: Duration = Duration::from_secs(30);
/// The bound of each question to the brokers.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A pipeline that read nothing while records waited for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "read nothing for {}s while {waiting} committed records wait on {topic} (partitions \
     {partitions:?}); rebuilding its Kafka clients",
    stalled_for.as_secs()
)]
pub struct Stall {
    pub topic: String,
    pub waiting: i64,
    pub partitions: Vec<i32>,
    pub stalled_for: Duration,
}

/// Committed records the consumer has not read, on its assigned partitions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Waiting {
    pub records: i64,
    pub partitions: Vec<i32>,
}

/// What the watchdog concludes from one look.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Moving,
    Stalled(Stall),
    Restart(Stall),
}

pub struct ProgressWatch {
    topic: String,
    conn: KafkaConn,
    /// Asks where partitions end (read_committed, no fetching: its connection is never held by
    /// a long poll). Made at the first look.
    probe: Option<BaseConsumer>,
    last_progress: Instant,
    last_check: Instant,
    /// First look that found records waiting (since the last progress).
    waiting_since: Option<Instant>,
    reported: bool,
}

impl ProgressWatch {
    pub fn new(topic: &str, conn: &KafkaConn) -> ProgressWatch {
        let now = Instant::now();
        ProgressWatch {
            topic: topic.to_string(),
            conn: conn.clone(),
            probe: None,
            last_progress: now,
            last_check: now,
            waiting_since: None,
            reported: false,
        }
    }

    /// A record was read (or the handler's own work moved) at `now`, read by the caller:
    /// nothing is stalled.
    pub fn progressed_at(&mut self, worker: &Worker, now: Instant) {
        self.last_progress = now;
        self.waiting_since = None;
        self.reported = false;
        worker.progressed();
    }

    /// The handler holds its partitions on purpose (a bulk command fanning out paces itself):
    /// no verdict now, and the quiet time starts again afterwards.
    pub fn hold(&mut self) {
        self.last_progress = Instant::now();
        self.waiting_since = None;
    }

    /// Call when a poll found nothing. Cheap unless quiet for [`CHECK_EVERY`]; `Err` when the
    /// pipeline must rebuild its clients.
    pub fn check<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        worker: &Worker,
    ) -> Result<(), Stall> {
        let now = Instant::now();
        if now - self.last_progress < CHECK_EVERY || now - self.last_check < CHECK_EVERY {
            return Ok(());
        }
        self.last_check = now;
        if self.probe.is_none() {
            match self.conn.reader_config().create() {
                Ok(probe) => self.probe = Some(probe),
                Err(e) => {
                    tracing::warn!(topic = self.topic, error = %e, "no client to ask where partitions end");
                    return Ok(());
                }
            }
        }
        let Some(waiting) = self
            .probe
            .as_ref()
            .and_then(|probe| waiting(consumer, probe, &self.topic))
        else {
            return Ok(());
        };
        match self.judge(waiting, now) {
            Verdict::Moving => {
                worker.progressed();
                Ok(())
            }
            Verdict::Stalled(stall) => {
                self.report(&stall, worker);
                Ok(())
            }
            Verdict::Restart(stall) => {
                self.report(&stall, worker);
                Err(stall)
            }
        }
    }

    fn report(&mut self, stall: &Stall, worker: &Worker) {
        if !self.reported {
            self.reported = true;
            PipelineStalled {
                worker: worker.kind(),
                stall,
            }
            .emit();
        }
        worker.set_stalled(Some(stall.to_string()));
    }

    fn judge(&mut self, waiting: Waiting, now: Instant) -> Verdict {
        if waiting.records <= 0 {
            self.waiting_since = None;
            return Verdict::Moving;
        }
        let since = *self.waiting_since.get_or_insert(now);
        let stall = Stall {
            topic: self.topic.clone(),
            waiting: waiting.records,
            partitions: waiting.partitions,
            // Counted from the last record read: the records may have waited since then.
            stalled_for: now - self.last_progress,
        };
        let waited = now - since;
        if waited >= RESTART_AFTER {
            Verdict::Restart(stall)
        } else if waited >= REPORT_AFTER {
            Verdict::Stalled(stall)
        } else {
            Verdict::Moving
        }
    }
}

/// What waits for `consumer` on its assignment of `topic` (the ends asked through `probe`);
/// `None` when the brokers cannot tell.
fn waiting<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    probe: &BaseConsumer,
    topic: &str,
) -> Option<Waiting> {
    let assignment = consumer.assignment().ok()?;
    let assigned: Vec<i32> = assignment
        .elements_for_topic(topic)
        .iter()
        .map(|e| e.partition())
        .collect();
    if assigned.is_empty() {
        return Some(Waiting::default());
    }
    // The next offset to read: the position once the consumer has read, else where it will
    // start (the committed offset), else the partition's start.
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut unknown = TopicPartitionList::new();
    for e in consumer.position().ok()?.elements_for_topic(topic) {
        match e.offset() {
            Offset::Offset(o) => {
                next.insert(e.partition(), o);
            }
            _ => {
                unknown.add_partition(topic, e.partition());
            }
        }
    }
    if unknown.count() > 0 {
        if let Ok(committed) = consumer.committed_offsets(unknown, PROBE_TIMEOUT) {
            for e in committed.elements() {
                if let Offset::Offset(o) = e.offset() {
                    next.insert(e.partition(), o);
                }
            }
        }
    }
    let mut out = Waiting::default();
    for p in assigned {
        let (low, stable_end) = probe.fetch_watermarks(topic, p, PROBE_TIMEOUT).ok()?;
        let from = next.get(&p).copied().unwrap_or(low).max(low);
        if stable_end > from {
            out.records += stable_end - from;
            out.partitions.push(p);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(records: i64) -> Waiting {
        Waiting {
            records,
            partitions: if records > 0 { vec![1] } else { vec![] },
        }
    }

    fn watch() -> ProgressWatch {
        let conn = KafkaConn {
            bootstrap: "127.0.0.1:1".into(),
            properties: Default::default(),
            embedded: false,
            client_id: "watchdog-test".into(),
            max_record_bytes: 1 << 20,
        };
        ProgressWatch::new("t", &conn)
    }

    #[test]
    fn records_waiting_unread_are_reported_then_restart_the_pipeline_and_reading_ends_it() {
        let mut w = watch();
        let t0 = w.last_progress + CHECK_EVERY;
        // Nothing waits: a quiet pipeline is not stalled, however long.
        assert_eq!(
            w.judge(waiting(0), t0 + Duration::from_secs(600)),
            Verdict::Moving
        );
        // Records wait: a grace (a fetch in flight, a rebalance) before any verdict.
        assert_eq!(w.judge(waiting(40), t0), Verdict::Moving);
        assert_eq!(
            w.judge(waiting(40), t0 + REPORT_AFTER - Duration::from_millis(1)),
            Verdict::Moving
        );
        match w.judge(waiting(40), t0 + REPORT_AFTER) {
            Verdict::Stalled(s) => {
                assert_eq!((s.waiting, s.partitions.clone()), (40, vec![1]));
                assert_eq!(s.stalled_for, CHECK_EVERY + REPORT_AFTER);
                assert!(
                    s.to_string().contains("40 committed records wait on t"),
                    "{s}"
                );
            }
            v => panic!("{v:?}"),
        }
        assert!(matches!(
            w.judge(waiting(41), t0 + RESTART_AFTER),
            Verdict::Restart(_)
        ));
        // The records were read after all (or the partitions moved away): the wait starts over.
        assert_eq!(w.judge(waiting(0), t0 + RESTART_AFTER), Verdict::Moving);
        assert_eq!(
            w.judge(
                waiting(5),
                t0 + RESTART_AFTER + REPORT_AFTER - Duration::from_millis(1)
            ),
            Verdict::Moving
        );
    }

    /// A look at a quiet pipeline must not queue behind its consumer's long-poll fetches (see
    /// the module comment): through the consumer, the ends of 12 partitions took 6 s on Kafka
    /// 4.4, every one waiting out `fetch.wait.max.ms` (500 ms). Real broker when
    /// `KAFKA_BOOTSTRAP` is set (CI's second pass), else the embedded one.
    #[test]
    fn a_look_at_a_quiet_pipeline_does_not_wait_behind_its_consumers_fetches() {
        use rdkafka::{Offset, TopicPartitionList};
        let (_broker, conn, topic) = crate::kafka::test_broker("watchdog-quiet", 12);
        // A consumer of all 12 partitions with nothing to read: its fetches are long polls.
        let consumer: BaseConsumer = conn.reader_config().create().expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..12 {
            tpl.add_partition_offset(&topic, p, Offset::End)
                .expect("partition");
        }
        consumer.assign(&tpl).expect("assign");
        let settle = Instant::now() + Duration::from_secs(2);
        while Instant::now() < settle {
            assert!(consumer.poll(Duration::from_millis(100)).is_none());
        }
        let worker = Worker::detached(crate::events::WorkerKind::Ingest);
        let mut w = ProgressWatch::new(&topic, &conn);
        let mut took = Vec::new();
        for _ in 0..3 {
            let long_ago = Instant::now() - CHECK_EVERY * 2;
            (w.last_progress, w.last_check) = (long_ago, long_ago);
            let _ = consumer.poll(Duration::from_millis(50));
            let started = Instant::now();
            w.check(&consumer, &worker).expect("nothing waits");
            took.push(started.elapsed());
            assert!(w.last_check > long_ago, "the look was made");
        }
        took.sort();
        assert!(
            took[1] < Duration::from_millis(400),
            "a look took {took:?}: it waited behind the consumer's fetches"
        );
    }

    #[test]
    fn progress_clears_a_reported_stall_and_hold_defers_the_verdict() {
        let worker = Worker::detached(crate::events::WorkerKind::Ingest);
        let mut w = watch();
        let t0 = w.last_progress;
        w.judge(waiting(3), t0);
        let stall = match w.judge(waiting(3), t0 + REPORT_AFTER) {
            Verdict::Stalled(s) => s,
            v => panic!("{v:?}"),
        };
        w.report(&stall, &worker);
        assert!(worker.stalled().is_some());
        w.progressed_at(&worker, Instant::now());
        assert_eq!(worker.stalled(), None);
        assert_eq!(w.waiting_since, None);
        w.judge(waiting(3), Instant::now());
        w.hold();
        assert_eq!(w.waiting_since, None, "a held pipeline's wait starts over");
    }
}
