//! Waiting out the transactions left open on the topics a transactional producer writes, before
//! it writes there again.
//!
//! A transaction ends in two steps: its coordinator records the outcome, then writes a marker
//! (commit or abort) to each partition the transaction wrote. A partition without a leader at
//! that moment gets no marker: the coordinator skips it as it would a deleted topic (Kafka's
//! design since KAFKA-5202). That happens when the only broker, or every replica of the
//! partition, stops or restarts just then (RELIABILITY.md §2). The records stay open for good:
//! read_committed readers stop before them, and no client can end them — only an operator's
//! `kafka-transactions.sh abort`.
//!
//! Worse, the next transaction of the *same producer* (our transactional id, a later epoch) that
//! writes to such a partition ends those records with its own marker. Its commit makes the
//! records of a transaction the coordinator aborted visible beside the copies written again by
//! the retry: a failure stored twice, a command's runs published twice. Its abort drops the
//! records of a transaction the coordinator committed. (Seen with the broker killed
//! mid-ingest: store records written twice, `tests/it/broker_restart.rs`.)
//!
//! So a new producer — every pipeline starts with one, and every abort or failed commit ends
//! its pipeline — writes nothing until every transaction open on its output partitions at that
//! moment has ended: each partition's last stable offset has reached the end the partition had.
//! A live instance's transactions end within its commit interval, a frozen one's within the
//! transaction timeout plus the brokers' sweep of timed-out transactions. One still open after
//! [`SETTLE_WITHIN`] is a [`SettleError::StillOpen`] naming the partitions: the pipeline reports
//! its worker stalled with it (`/readyz`) and waits on, until the transaction ends or an operator
//! aborts it ([`super::pipeline`]). Nothing is written meanwhile: a stall the operator is told
//! about beats a duplicate nobody sees.
//!
//! Left open: markers lost after a commit that *succeeded*. Our next transaction then writes
//! beside them before anything looks; only its own failure (the same outage) brings the check.

use std::time::{Duration, Instant};

use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
};

use super::KafkaConn;

/// How long the transactions open on our outputs may take to end: more than the transaction
/// timeout of our own producers (6 s) plus the brokers' default sweep of timed-out
/// transactions (`transaction.abort.timed.out.transaction.cleanup.interval.ms`, 10 s).
pub const SETTLE_WITHIN: Duration = Duration::from_secs(30);
/// The bound of each question to the brokers.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the partitions still open are asked again.
const ASK_AGAIN_AFTER: Duration = Duration::from_millis(100);

/// A partition whose last stable offset is below the end it had when we looked first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPartition {
    pub topic: String,
    pub partition: i32,
    /// Where the open transaction begins.
    pub stable: i64,
    /// The end it must reach.
    pub end: i64,
}

impl std::fmt::Display for OpenPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}-{} (open from offset {} to {})",
            self.topic, self.partition, self.stable, self.end
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error("cannot ask where {topic} ends: {source}")]
    Ask {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error(
        "a transaction is still open after {}s on {}, where this pipeline writes: it waits \
         for it to end. If it stays, it is a hanging transaction (its markers were lost while the \
         partition had no leader): `kafka-transactions.sh find-hanging` finds it and `abort` \
         ends it (RELIABILITY.md §2)",
        waited.as_secs(),
        list(open)
    )]
    StillOpen {
        waited: Duration,
        open: Vec<OpenPartition>,
    },
}

fn list(open: &[OpenPartition]) -> String {
    let shown: Vec<String> = open.iter().take(5).map(ToString::to_string).collect();
    match open.len() {
        n if n > 5 => format!("{} and {} more", shown.join(", "), n - 5),
        _ => shown.join(", "),
    }
}

/// Waits until every transaction open on `topics` now has ended (`Ok(true)`), for at most
/// `within`, or until `go_on` (asked between questions, each bounded) says stop (`Ok(false)`).
pub fn wait_for_open_transactions(
    conn: &KafkaConn,
    topics: &[String],
    within: Duration,
    go_on: impl Fn() -> bool,
) -> Result<bool, SettleError> {
    let started = Instant::now();
    let asked = |topic: &str| {
        let topic = topic.to_string();
        move |source| SettleError::Ask { topic, source }
    };
    // read_committed: the brokers answer the last stable offset. read_uncommitted: the end.
    let stable: BaseConsumer = conn.reader_config().create().map_err(asked(""))?;
    let ends: BaseConsumer = conn.end_offsets_config().create().map_err(asked(""))?;
    let mut open = Vec::new();
    for topic in topics {
        let md = ends
            .fetch_metadata(Some(topic), ASK_TIMEOUT)
            .map_err(asked(topic))?;
        let partitions = md
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect::<Vec<_>>();
        for partition in partitions {
            if !go_on() {
                return Ok(false);
            }
            let (_, end) = ends
                .fetch_watermarks(topic, partition, ASK_TIMEOUT)
                .map_err(asked(topic))?;
            let (_, stable_end) = stable
                .fetch_watermarks(topic, partition, ASK_TIMEOUT)
                .map_err(asked(topic))?;
            if stable_end < end {
                open.push(OpenPartition {
                    topic: topic.clone(),
                    partition,
                    stable: stable_end,
                    end,
                });
            }
        }
    }
    while !open.is_empty() {
        if started.elapsed() >= within {
            return Err(SettleError::StillOpen {
                waited: started.elapsed(),
                open,
            });
        }
        std::thread::sleep(ASK_AGAIN_AFTER);
        for p in &mut open {
            if !go_on() {
                return Ok(false);
            }
            p.stable = stable
                .fetch_watermarks(&p.topic, p.partition, ASK_TIMEOUT)
                .map_err(asked(&p.topic))?
                .1;
        }
        open.retain(|p| p.stable < p.end);
    }
    Ok(true)
}
