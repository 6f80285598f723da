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

/// A partition being asked about: its end once known, then its last stable offset.
struct Asking<'t> {
    topic: &'t str,
    partition: i32,
    end: Option<i64>,
    stable: Option<i64>,
}

impl Asking<'_> {
    /// Known to have no transaction left open from before we looked.
    fn settled(&self) -> bool {
        matches!((self.stable, self.end), (Some(stable), Some(end)) if stable >= end)
    }
}

/// Waits until every transaction open on `topics` now has ended (`Ok(true)`), for at most
/// `within`, or until `go_on` (asked between questions, each bounded) says stop (`Ok(false)`).
/// A question the brokers fail to answer (a topic just created has no leader for a moment) is
/// asked again; still unanswered after `within`, it is the error.
pub fn wait_for_open_transactions(
    conn: &KafkaConn,
    topics: &[String],
    within: Duration,
    go_on: impl Fn() -> bool,
) -> Result<bool, SettleError> {
    let started = Instant::now();
    let failed = |topic: &str, source| SettleError::Ask {
        topic: topic.to_string(),
        source,
    };
    // read_committed: the brokers answer the last stable offset. read_uncommitted: the end.
    let stable: BaseConsumer = conn.reader_config().create().map_err(|e| failed("", e))?;
    let ends: BaseConsumer = conn
        .end_offsets_config()
        .create()
        .map_err(|e| failed("", e))?;
    let mut unlisted: Vec<&str> = topics.iter().map(String::as_str).collect();
    let mut asking: Vec<Asking<'_>> = Vec::new();
    let mut last_error = None;
    loop {
        unlisted.retain(
            |&topic| match ends.fetch_metadata(Some(topic), ASK_TIMEOUT) {
                Ok(md) => {
                    let listed = md.topics().iter().filter(|t| t.name() == topic);
                    for p in listed.flat_map(|t| t.partitions()) {
                        asking.push(Asking {
                            topic,
                            partition: p.id(),
                            end: None,
                            stable: None,
                        });
                    }
                    false
                }
                Err(e) => {
                    last_error = Some(failed(topic, e));
                    true
                }
            },
        );
        for p in &mut asking {
            if !go_on() {
                return Ok(false);
            }
            if p.end.is_none() {
                match ends.fetch_watermarks(p.topic, p.partition, ASK_TIMEOUT) {
                    Ok((_, end)) => p.end = Some(end),
                    Err(e) => {
                        last_error = Some(failed(p.topic, e));
                        continue;
                    }
                }
            }
            match stable.fetch_watermarks(p.topic, p.partition, ASK_TIMEOUT) {
                Ok((_, at)) => p.stable = Some(at),
                Err(e) => last_error = Some(failed(p.topic, e)),
            }
        }
        asking.retain(|p| !p.settled());
        if unlisted.is_empty() && asking.is_empty() {
            return Ok(true);
        }
        if started.elapsed() >= within {
            let unanswered = !unlisted.is_empty()
                || asking.iter().any(|p| p.end.is_none() || p.stable.is_none());
            return Err(match (unanswered, last_error) {
                (true, Some(e)) => e,
                _ => SettleError::StillOpen {
                    waited: started.elapsed(),
                    open: asking
                        .iter()
                        .map(|p| OpenPartition {
                            topic: p.topic.to_string(),
                            partition: p.partition,
                            stable: p.stable.unwrap_or(-1),
                            end: p.end.unwrap_or(-1),
                        })
                        .collect(),
                },
            });
        }
        std::thread::sleep(ASK_AGAIN_AFTER);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing open (a fresh topic): settled at the first look. A stop is heard between
    /// questions. Real broker when `KAFKA_BOOTSTRAP` is set, else the embedded one (whose
    /// transactions are faked: the wait itself is shown on the real one, `tests/it/stalls.rs`).
    #[test]
    fn nothing_open_is_settled_at_once_and_a_stop_is_heard() {
        let (_broker, conn, topic) = crate::kafka::test_broker("settle", 3);
        let topics = [topic];
        let started = Instant::now();
        let settled = wait_for_open_transactions(&conn, &topics, SETTLE_WITHIN, || true);
        assert!(matches!(settled, Ok(true)), "{settled:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let stopped = wait_for_open_transactions(&conn, &topics, SETTLE_WITHIN, || false);
        assert!(matches!(stopped, Ok(false)), "{stopped:?}");
    }

    /// Brokers that never answer: asked again until the bound, then the error names the topic.
    #[test]
    fn unanswered_questions_are_asked_again_then_fail_naming_the_topic() {
        let conn = KafkaConn {
            bootstrap: "127.0.0.1:1".into(),
            properties: Default::default(),
            embedded: false,
            client_id: "settle-test".into(),
            max_record_bytes: 1 << 20,
        };
        let within = Duration::from_millis(300);
        let started = Instant::now();
        let r = wait_for_open_transactions(&conn, &["t.out".to_string()], within, || true);
        assert!(
            matches!(&r, Err(SettleError::Ask { topic, .. }) if topic == "t.out"),
            "{r:?}"
        );
        assert!(started.elapsed() >= within);
    }
}
