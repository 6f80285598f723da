//! A producer whose sends are awaited (HTTP actions' commands, the sweeper's tombstones), with
//! its delivery reports served by a thread that sleeps while nothing is in flight.
//!
//! Why not rust-rdkafka's `FutureProducer`: its thread polls in slices of 100 ms, and each
//! slice ends polling with a zero timeout until its deadline, because the deadline's remainder
//! is cut to whole milliseconds (0.39: `BaseProducer::poll`, `Timeout::as_millis`). That is
//! ~1% of a core per producer, idle or not; the service had two, over half of an idle
//! instance's CPU (9 of 10 ms/s each, from `/proc/<pid>/task/*/stat`).

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use rdkafka::{
    config::ClientConfig,
    error::{KafkaError, KafkaResult},
    message::OwnedHeaders,
    producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext},
    types::RDKafkaErrorCode,
    ClientContext,
};
use tokio::sync::oneshot;

/// While records are in flight, the poller serves their reports this often.
const IN_FLIGHT_POLL: Duration = Duration::from_millis(1);
/// While none are, it still serves errors and logs this often (a send wakes it at once).
const IDLE_POLL: Duration = Duration::from_millis(100);
/// Events served per turn while records are in flight (one report may cover many records).
const EVENTS_PER_TURN: usize = 64;

/// Hands each record's delivery report to the task awaiting it.
pub struct Deliveries;

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<oneshot::Sender<KafkaResult<()>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, waiter: Self::DeliveryOpaque) {
        // The waiter may be gone (its request was dropped): nobody to tell.
        let _ = waiter.send(result.as_ref().map(|_| ()).map_err(|(e, _)| e.clone()));
    }
}

/// A record to write: borrowed key and value (none: a tombstone), optional headers.
pub struct Outgoing<'a> {
    pub topic: &'a str,
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
    pub headers: Option<OwnedHeaders>,
}

pub struct AwaitedProducer {
    producer: Arc<BaseProducer<Deliveries>>,
    stop: Arc<AtomicBool>,
    /// Turns of the poller so far (tests read it: an idle poller sleeps).
    turns: Arc<AtomicU64>,
    poller: Option<JoinHandle<()>>,
}

impl AwaitedProducer {
    /// `name` names the poller thread.
    pub fn new(config: &ClientConfig, name: &str) -> KafkaResult<AwaitedProducer> {
        let producer: Arc<BaseProducer<Deliveries>> =
            Arc::new(config.create_with_context(Deliveries)?);
        let stop = Arc::new(AtomicBool::new(false));
        let turns = Arc::new(AtomicU64::new(0));
        let poller = {
            let (producer, stop, turns) = (producer.clone(), stop.clone(), turns.clone());
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || serve(&producer, &stop, &turns))
                .map_err(|e| KafkaError::ClientCreation(format!("poller thread: {e}")))?
        };
        Ok(AwaitedProducer {
            producer,
            stop,
            turns,
            poller: Some(poller),
        })
    }

    /// Writes `rec` and returns once Kafka has it (or refused it). A full local queue is waited
    /// out for up to `queue_wait`, as `FutureProducer::send` did.
    pub async fn send(&self, rec: Outgoing<'_>, queue_wait: Duration) -> KafkaResult<()> {
        let (tx, rx) = oneshot::channel();
        let mut record = BaseRecord::with_opaque_to(rec.topic, Box::new(tx)).key(rec.key);
        if let Some(v) = rec.value {
            record = record.payload(v);
        }
        if let Some(h) = rec.headers {
            record = record.headers(h);
        }
        let deadline = Instant::now() + queue_wait;
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < deadline =>
                {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
        if let Some(poller) = &self.poller {
            poller.thread().unpark();
        }
        // The report's sender is dropped unanswered only if the producer is torn down first.
        rx.await.unwrap_or(Err(KafkaError::Canceled))
    }

    /// Turns the poller has taken so far.
    pub fn poller_turns(&self) -> u64 {
        self.turns.load(Ordering::Relaxed)
    }
}

impl Drop for AwaitedProducer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(poller) = self.poller.take() {
            poller.thread().unpark();
            let _ = poller.join();
        }
    }
}

/// The poller: serves reports every [`IN_FLIGHT_POLL`] while records are in flight, and
/// otherwise sleeps until a send wakes it (or [`IDLE_POLL`]).
fn serve(producer: &BaseProducer<Deliveries>, stop: &AtomicBool, turns: &AtomicU64) {
    while !stop.load(Ordering::Relaxed) {
        turns.fetch_add(1, Ordering::Relaxed);
        // `poll` with a zero timeout serves at most one event and does not wait.
        for _ in 0..EVENTS_PER_TURN {
            producer.poll(Duration::ZERO);
        }
        if producer.in_flight_count() > 0 {
            std::thread::sleep(IN_FLIGHT_POLL);
        } else {
            std::thread::park_timeout(IDLE_POLL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records are written and their sends answered; an idle poller sleeps between turns
    /// (`FutureProducer`'s thread polled without waiting for the last millisecond of every
    /// 100 ms, thousands of turns a second).
    /// `test_broker` runs a runtime of its own: the sends run on another.
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn a_send_is_answered_and_an_idle_poller_sleeps() {
        let (_broker, conn, topic) =
            crate::kafka::test_broker("awaited", crate::Config::default().partitions);
        let producer = AwaitedProducer::new(&conn.idempotent_producer_config(), "test-poller")
            .expect("producer");
        for i in 0..3u8 {
            let out = Outgoing {
                topic: &topic,
                key: &[i],
                value: (i != 2).then_some(&b"value"[..]),
                headers: None,
            };
            block_on(producer.send(out, Duration::from_secs(10))).expect("delivered");
        }
        let before = producer.poller_turns();
        std::thread::sleep(Duration::from_millis(500));
        let idle_turns = producer.poller_turns() - before;
        assert!(
            idle_turns <= 10,
            "{idle_turns} poller turns in 500 ms idle: it should sleep {IDLE_POLL:?} a turn"
        );
    }

    #[test]
    fn a_record_kafka_refuses_is_an_error_not_a_hang() {
        let (_broker, conn, topic) =
            crate::kafka::test_broker("awaited-refused", crate::Config::default().partitions);
        let producer =
            AwaitedProducer::new(&conn.idempotent_producer_config(), "test-poller").expect("p");
        let too_big = vec![0u8; 20 << 20];
        let out = Outgoing {
            topic: &topic,
            key: b"k",
            value: Some(&too_big),
            headers: None,
        };
        let sent = block_on(async {
            tokio::time::timeout(
                Duration::from_secs(30),
                producer.send(out, Duration::from_secs(1)),
            )
            .await
        })
        .expect("answered within 30 s");
        assert!(sent.is_err(), "a 20 MiB record was accepted");
    }
}
