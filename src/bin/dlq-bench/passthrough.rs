//! The baselines: a bare rdkafka consume → produce passthrough with no decoding, with and without
//! transactions — without them it is the physical limit the broker and client set; with them it
//! commits the way the service does (at its records / bytes / interval limits, or as soon as
//! nothing more is queued, lingering like its producer and draining deliveries first) — the
//! same pipe with a second consumer reading its output back as it is written (the least any
//! service whose view is fed from its output topic does: the floor of that design, not a
//! limit of Kafka's), and a bare read of a topic.
//!
//! Diagnostics (environment): `BENCH_TRACE=1` prints each transaction's flush / offsets /
//! commit time, `BENCH_FLUSH_FIRST=1` flushes before committing (to see where the time goes),
//! `BENCH_NO_OFFSETS=1` commits without consumer offsets, `BENCH_PROPS=k=v,k=v` adds librdkafka
//! properties to the passthrough's producer.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use rdkafka::{
    config::ClientConfig,
    consumer::{BaseConsumer, CommitMode, Consumer},
    producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer},
    Message, Offset, TopicPartitionList,
};

pub struct Passthrough<'a> {
    pub bootstrap: &'a str,
    pub input: &'a str,
    pub output: &'a str,
    /// Stop after this many records.
    pub records: u64,
    pub transactional: bool,
    pub max_records: usize,
    pub max_bytes: usize,
    pub max_interval: Duration,
    /// A second consumer reads the output back from where it ended; the run ends when it has
    /// read `records` (it only counts them: what a view does with a record is the service's).
    pub read_back: bool,
}

fn consumer(bootstrap: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        // As the service's consumers (`kafka::FETCH_PER_RESPONSE`): a response over glibc's
        // largest mmap threshold (32 MiB) is a fresh mapping each time. At 16 MiB a bare read
        // of 1,000,000 entries cost 1.6–2.1 µs a record in this process; at 50 MiB, 2.8–3.6.
        .set("fetch.max.bytes", "16777216")
        .set("max.partition.fetch.bytes", "10485760")
        .create()
        .expect("consumer")
}

impl Passthrough<'_> {
    /// Moves `records` records; the time from the first record read to the last committed.
    pub fn run(&self) -> Duration {
        let group = format!("bench-pass-{}", uuid::Uuid::new_v4().simple());
        let c = consumer(self.bootstrap, &group);
        c.subscribe(&[self.input]).expect("subscribe");
        let mut pc = ClientConfig::new();
        pc.set("bootstrap.servers", self.bootstrap)
            .set("partitioner", workflow_dlq::kafka::PARTITIONER)
            .set("linger.ms", "5")
            .set("enable.idempotence", "true")
            .set("message.max.bytes", "2000000");
        if self.transactional {
            // The service's producer lingers as long as a transaction lasts and sends what is
            // queued at the commit (src/kafka/txn.rs, `LINGER`); the pipe without transactions
            // keeps librdkafka's default of 5 ms, as kcat does.
            pc.set("transactional.id", &group).set(
                "linger.ms",
                workflow_dlq::kafka::txn::LINGER.as_millis().to_string(),
            );
            if let Ok(v) = std::env::var("BENCH_PROPS") {
                for kv in v.split(',') {
                    if let Some((k, v)) = kv.split_once('=') {
                        pc.set(k, v);
                    }
                }
            }
            if let Ok(v) = std::env::var("BENCH_RETRY_BACKOFF_MS") {
                pc.set("retry.backoff.ms", v);
            }
        }
        let p: ThreadedProducer<DefaultProducerContext> = pc.create().expect("producer");
        let reader = self.read_back.then(|| {
            let from_end = count_from_end(self.bootstrap, self.output);
            let records = self.records;
            std::thread::spawn(move || from_end.wait_for(records, Duration::from_secs(900)))
        });
        if self.transactional {
            p.init_transactions(Duration::from_secs(30)).expect("init");
            p.begin_transaction().expect("begin");
        }
        let mut first: Option<Instant> = None;
        let mut moved = 0u64;
        let mut in_batch = 0usize;
        let mut batch_started = Instant::now();
        let mut next: HashMap<i32, i64> = HashMap::new();
        let commit = |next: &HashMap<i32, i64>, p: &ThreadedProducer<_>| {
            let mut tpl = TopicPartitionList::new();
            for (part, off) in next {
                tpl.add_partition_offset(self.input, *part, Offset::Offset(*off))
                    .expect("offset");
            }
            if self.transactional {
                let meta = c.group_metadata().expect("group metadata");
                let tf = Instant::now();
                if std::env::var_os("BENCH_FLUSH_FIRST").is_some() {
                    p.flush(Duration::from_secs(30)).expect("flush");
                }
                // As the service does (src/kafka/txn.rs): what lingers sent and deliveries
                // drained before the commit, or rust-rdkafka's flush rounds the commit up to a
                // 100 ms poll slice. (This producer's own thread serves the reports.)
                while p.in_flight_count() > 0 {
                    workflow_dlq::kafka::txn::send_queued(p.client(), Duration::from_millis(10));
                }
                let t0 = Instant::now();
                if std::env::var_os("BENCH_NO_OFFSETS").is_none() {
                    p.send_offsets_to_transaction(&tpl, &meta, Duration::from_secs(30))
                        .expect("offsets");
                }
                let t1 = Instant::now();
                p.commit_transaction(Duration::from_secs(30))
                    .expect("commit");
                if std::env::var_os("BENCH_TRACE").is_some() {
                    eprintln!(
                        "flush {:?} offsets {:?} commit {:?}",
                        t0 - tf,
                        t1 - t0,
                        t1.elapsed()
                    );
                }
                p.begin_transaction().expect("begin");
            } else {
                c.commit(&tpl, CommitMode::Async).expect("commit");
            }
        };
        let mut batch_bytes = 0usize;
        while moved < self.records {
            let polled = c.poll(if in_batch > 0 {
                Duration::from_millis(1)
            } else {
                Duration::from_millis(20)
            });
            let idle = polled.is_none();
            if let Some(m) = polled {
                let m = m.expect("consume");
                first.get_or_insert_with(Instant::now);
                let mut rec = BaseRecord::to(self.output).payload(m.payload().unwrap_or_default());
                if let Some(k) = m.key() {
                    rec = rec.key(k);
                }
                batch_bytes += m.payload_len() + m.key().map_or(0, <[u8]>::len);
                crate::data::send_blocking(&p, rec);
                next.insert(m.partition(), m.offset() + 1);
                moved += 1;
                if in_batch == 0 {
                    batch_started = Instant::now();
                }
                in_batch += 1;
            }
            let full = in_batch >= self.max_records
                || batch_bytes >= self.max_bytes
                || batch_started.elapsed() >= self.max_interval;
            if in_batch > 0 && (full || (idle && self.transactional)) {
                commit(&next, &p);
                in_batch = 0;
                batch_bytes = 0;
            }
        }
        if in_batch > 0 {
            commit(&next, &p);
        }
        p.flush(Duration::from_secs(60)).expect("flush");
        if let Some(reader) = reader {
            let read = reader.join().expect("read-back thread");
            assert_eq!(read, self.records, "records read back");
        }
        first.map(|f| f.elapsed()).unwrap_or_default()
    }
}

/// Counts committed records on a topic from where it ended when made.
pub struct Counter {
    c: BaseConsumer,
}

/// A [`Counter`] of `topic`: assigned to each of its partitions at its end.
pub fn count_from_end(bootstrap: &str, topic: &str) -> Counter {
    let c = consumer(
        bootstrap,
        &format!("bench-count-{}", uuid::Uuid::new_v4().simple()),
    );
    let mut tpl = TopicPartitionList::new();
    for (p, high) in ends_of(&c, topic) {
        tpl.add_partition_offset(topic, p, Offset::Offset(high))
            .expect("assign");
    }
    c.assign(&tpl).expect("assign");
    Counter { c }
}

/// Each partition of `topic` with its end offset now.
fn ends_of(c: &BaseConsumer, topic: &str) -> HashMap<i32, i64> {
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    md.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            let (_, high) = c
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .expect("watermarks");
            (p.id(), high)
        })
        .collect()
}

impl Counter {
    /// Reads until `n` records were seen or `limit` passed; the records seen.
    pub fn wait_for(&self, n: u64, limit: Duration) -> u64 {
        let started = Instant::now();
        let mut seen = 0;
        while seen < n && started.elapsed() < limit {
            if let Some(Ok(_)) = self.c.poll(Duration::from_millis(50)) {
                seen += 1;
            }
        }
        seen
    }
}

/// Reads `topic` from the beginning to its end offsets (read_committed), as fast as a bare
/// consumer can; (records, payload bytes, time).
pub fn bare_read(bootstrap: &str, topic: &str) -> (u64, u64, Duration) {
    let c = consumer(
        bootstrap,
        &format!("bench-read-{}", uuid::Uuid::new_v4().simple()),
    );
    let ends = ends_of(&c, topic);
    let mut tpl = TopicPartitionList::new();
    for p in ends.keys() {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .expect("assign");
    }
    c.assign(&tpl).expect("assign");
    let started = Instant::now();
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut done: HashMap<i32, bool> = ends.iter().map(|(p, e)| (*p, *e == 0)).collect();
    while !done.values().all(|d| *d) {
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m.expect("consume");
            records += 1;
            bytes += m.payload_len() as u64;
            if m.offset() + 1 >= ends[&m.partition()] {
                done.insert(m.partition(), true);
            }
        } else {
            // Positions move past transaction markers without a record.
            if let Ok(pos) = c.position() {
                for e in pos.elements() {
                    if let Offset::Offset(o) = e.offset() {
                        if o >= ends[&e.partition()] {
                            done.insert(e.partition(), true);
                        }
                    }
                }
            }
        }
    }
    (records, bytes, started.elapsed())
}
