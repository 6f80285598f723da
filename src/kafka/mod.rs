//! Kafka plumbing: client settings, the embedded broker, topic creation and the transactional
//! batch that gives ingest and commands their exactly-once commit.

pub mod awaited;
pub mod embedded;
pub mod lag;
pub mod partitioner;
pub mod pipeline;
pub mod progress;
pub mod reachability;
pub mod rejected;
pub mod settle;
pub mod tail;
pub mod topics;
pub mod txn;
pub mod watchdog;

use std::{collections::BTreeMap, time::Duration};

use rdkafka::{
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer},
};
use secrecy::{ExposeSecret, SecretString};

/// Keyed records go where the Java client would put them (murmur2), so the store and the command
/// topic stay co-partitioned by `dlqId` whoever produces to them.
pub const PARTITIONER: &str = "murmur2_random";

/// How to reach the cluster: the bootstrap plus the user's librdkafka properties.
#[derive(Debug, Clone)]
pub struct KafkaConn {
    pub bootstrap: String,
    pub properties: BTreeMap<String, KafkaProperty>,
    /// The embedded mock broker: no compaction, no transaction markers, no committed offsets
    /// through transactions.
    pub embedded: bool,
    pub client_id: String,
    /// Largest record a producer of ours writes (`--max-record-bytes` plus envelope room).
    pub max_record_bytes: usize,
}

/// Property names whose values are secrets: never logged, never shown by `/v1/status`.
pub fn is_secret_property(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["password", "secret", "jaas", "token", "key"]
        .iter()
        .any(|s| n.contains(s))
        && !n.ends_with(".location")
}

/// The value of a librdkafka property. Those whose name says they are secret
/// ([`is_secret_property`]) are held as a [`SecretString`]: `Debug` and [`KafkaProperty::shown`]
/// print `<redacted>`, and only [`KafkaConn::client_config`] hands the value to librdkafka.
#[derive(Clone)]
pub enum KafkaProperty {
    Plain(String),
    Secret(SecretString),
}

impl KafkaProperty {
    /// Secret or plain, by the property's name.
    pub fn new(name: &str, value: impl Into<String>) -> KafkaProperty {
        let value = value.into();
        if is_secret_property(name) {
            KafkaProperty::Secret(value.into())
        } else {
            KafkaProperty::Plain(value)
        }
    }

    /// The value as logs and `/v1/status` may show it.
    pub fn shown(&self) -> &str {
        match self {
            KafkaProperty::Plain(v) => v,
            KafkaProperty::Secret(_) => "<redacted>",
        }
    }

    fn expose(&self) -> &str {
        match self {
            KafkaProperty::Plain(v) => v,
            KafkaProperty::Secret(s) => s.expose_secret(),
        }
    }
}

impl std::fmt::Debug for KafkaProperty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.shown())
    }
}

/// How much a consumer fetches at once, unless the user's properties say otherwise
/// ([`KafkaConn::set_fetch_sizes`]).
///
/// A backlog (ingest's, a replay of the store) moves in larger fetches than librdkafka's 1 MiB
/// per partition: a cold start of 1,000,000 entries took several times longer with it. A
/// response is read into one buffer of its size; at librdkafka's default of 50 MiB a response
/// over several partitions is larger than glibc's largest mmap threshold (32 MiB), so each
/// was a fresh mapping whose pages the kernel faulted in and zeroed, then unmapped. At most
/// 16 MiB, it comes from the fetch thread's heap and reuses its pages: in a cold start of
/// 1,000,000 entries the fetch thread went from 30–34% of a core to 16–20% (issue 13).
///
/// Not set when the user sizes messages or responses themselves: librdkafka refuses a
/// `fetch.max.bytes` under `message.max.bytes`, and sizes it from that when it is not given.
const FETCH_PER_PARTITION: (&str, &str) = ("max.partition.fetch.bytes", "8388608");
const FETCH_PER_RESPONSE: (&str, &str) = ("fetch.max.bytes", "16777216");
const SIZES_MESSAGES: [&str; 2] = ["message.max.bytes", "receive.message.max.bytes"];

impl KafkaConn {
    /// Base settings for any client: the user's properties first, then ours.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        for (k, v) in &self.properties {
            c.set(k, v.expose());
        }
        c.set("bootstrap.servers", &self.bootstrap);
        c.set("client.id", &self.client_id);
        c
    }

    /// Sets each of `settings` the user's properties do not.
    fn set_unless_given(&self, c: &mut ClientConfig, settings: &[(&str, &str)]) {
        for (k, v) in settings {
            if !self.properties.contains_key(*k) {
                c.set(*k, *v);
            }
        }
    }

    /// [`FETCH_PER_PARTITION`] and [`FETCH_PER_RESPONSE`], as far as the user's properties
    /// leave them to us.
    fn set_fetch_sizes(&self, c: &mut ClientConfig) {
        self.set_unless_given(c, &[FETCH_PER_PARTITION]);
        if !SIZES_MESSAGES
            .iter()
            .any(|k| self.properties.contains_key(*k))
        {
            self.set_unless_given(c, &[FETCH_PER_RESPONSE]);
        }
    }

    /// A consumer in group `group` for transactional processing. The settings our exactly-once
    /// logic depends on are forced after the user's properties.
    pub fn group_consumer_config(&self, group: &str) -> ClientConfig {
        let mut c = self.client_config();
        // A crashed instance's partitions move on after 6 s (the brokers' default minimum,
        // `group.min.session.timeout.ms`) rather than the 45 s default: the first lever of
        // failover (RELIABILITY.md, "Failover"); the user may still choose otherwise.
        self.set_unless_given(
            &mut c,
            &[
                ("session.timeout.ms", "6000"),
                ("heartbeat.interval.ms", "1500"),
            ],
        );
        self.set_fetch_sizes(&mut c);
        c.set("group.id", group)
            // Offsets are committed only inside our transactions.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // Never read an aborted write of our own or anyone else's.
            .set("isolation.level", "read_committed")
            // Incremental rebalances: a joining instance doesn't stop everyone's work.
            .set("partition.assignment.strategy", "cooperative-sticky")
            // librdkafka's 1 s pause after a full prefetch queue stalls a backlog for nothing.
            .set("fetch.queue.backoff.ms", "10")
            .set("auto.offset.reset", "earliest");
        c
    }

    /// A client that only asks where partitions end, counting the records of transactions
    /// still open. A read_committed client is answered the last stable offset instead, which
    /// stops before the first open transaction: a killed instance's can hold it there for the
    /// transaction timeout while later commits on the same partition are already visible on
    /// other partitions. Waiting for a reader to pass *this* end means every write made so far
    /// is resolved and seen, whichever way its transaction ended.
    pub fn end_offsets_config(&self) -> ClientConfig {
        let mut c = self.reader_config();
        c.set("isolation.level", "read_uncommitted");
        c
    }

    /// A consumer that reads whole topics by assignment (no group), committed data only.
    pub fn reader_config(&self) -> ClientConfig {
        let mut c = self.client_config();
        self.set_fetch_sizes(&mut c);
        c.set("group.id", format!("{}-reader", self.client_id))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            // When the prefetch queue is full librdkafka waits this long before fetching again
            // (default 1 s): a replay that applies slower than the broker serves stalled for
            // whole seconds at a time.
            .set("fetch.queue.backoff.ms", "10");
        c
    }

    /// Bounds every producer's batches below what the topics we create accept
    /// ([`topics::topic_max_message_bytes`]): a batch of several large rejected records must
    /// not exceed the topic's limit, or the whole transaction fails again on every retry.
    pub fn bound_batches(&self, c: &mut ClientConfig) {
        let topic_limit = topics::topic_max_message_bytes(self.max_record_bytes);
        c.set("batch.size", self.max_record_bytes.to_string())
            .set("message.max.bytes", topic_limit.max(1_000_000).to_string());
    }

    /// A plain idempotent producer (for writes that need no transaction, e.g. expiry tombstones).
    pub fn idempotent_producer_config(&self) -> ClientConfig {
        let mut c = self.client_config();
        c.set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("partitioner", PARTITIONER);
        self.bound_batches(&mut c);
        c
    }

    /// The user's properties with secrets masked, for logs and `/v1/status`.
    pub fn redacted_properties(&self) -> BTreeMap<String, String> {
        self.properties
            .iter()
            .map(|(k, v)| (k.clone(), v.shown().to_string()))
            .collect()
    }

    /// `text` with the value of each of this connection's secret properties replaced by
    /// `<redacted>`. librdkafka's configuration errors quote the value of the property at fault
    /// (`Client config error: … sasl.password <value>`): every error from a client built on
    /// this connection passes through here before it is logged or shown. Values shorter than
    /// 4 bytes are left alone: they would mangle unrelated text (and are no secret worth the
    /// name).
    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        for v in self.properties.values() {
            if let KafkaProperty::Secret(secret) = v {
                let secret = secret.expose_secret();
                if secret.len() >= 4 && out.contains(secret) {
                    out = out.replace(secret, "<redacted>");
                }
            }
        }
        out
    }
}

/// Consecutive panics after which a worker is given up (a run that lasted [`SETTLED`] resets
/// the count). A panic is a bug, not weather: retrying forever would hide it behind a service
/// that looks alive.
const MAX_PANICS: u32 = 3;
/// A run this long counts as healthy again.
const SETTLED: Duration = Duration::from_secs(60);

/// Runs a pipeline on its own thread until `shutdown`, and is the one place a worker is
/// restarted. An error (Kafka going away, a failed commit) rebuilds the pipeline after a growing
/// pause (0.5 s … 10 s); a fresh pipeline restarts from committed offsets. A panic is retried
/// too, but after [`MAX_PANICS`] in a row the worker is reported dead and stops, and the
/// service exits non-zero ([`crate::health::Health::fatal`]). `worker` tells health how it is;
/// errors are logged with `conn`'s secrets masked.
pub fn supervise<E: std::fmt::Display>(
    worker: crate::health::Worker,
    conn: KafkaConn,
    shutdown: tokio_util::sync::CancellationToken,
    mut run: impl FnMut(&tokio_util::sync::CancellationToken, &crate::health::Worker) -> Result<(), E>
        + Send
        + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    use crate::{
        events::{Event, WorkerFailed, WorkerOutcome},
        health::WorkerStatus,
    };
    let label = worker.name();
    // Threads don't inherit the current span: the pipeline's span names it as its parent.
    let parent = tracing::Span::current();
    std::thread::Builder::new()
        .name(label.to_string())
        .spawn(move || {
            let _span =
                tracing::info_span!(parent: &parent, "pipeline", pipeline = %label).entered();
            let mut backoff = Duration::from_millis(500);
            let mut panics = 0;
            while !shutdown.is_cancelled() {
                worker.set(WorkerStatus::Running);
                let started = std::time::Instant::now();
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    fault_hook(label);
                    run(&shutdown, &worker)
                }));
                if started.elapsed() >= SETTLED {
                    panics = 0;
                    backoff = Duration::from_millis(500);
                }
                let error = match outcome {
                    Ok(Ok(())) => break,
                    Ok(Err(e)) => conn.mask(&e.to_string()),
                    Err(panic) => {
                        panics += 1;
                        let what = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "a panic".into());
                        if panics >= MAX_PANICS {
                            let why = format!("panicked {panics} times in a row, last: {what}");
                            WorkerFailed {
                                worker: worker.kind(),
                                outcome: WorkerOutcome::GivenUp,
                                error: &why,
                            }
                            .emit();
                            worker.set(WorkerStatus::Dead(why));
                            return;
                        }
                        format!("panicked: {what}")
                    }
                };
                WorkerFailed {
                    worker: worker.kind(),
                    outcome: WorkerOutcome::Restarted,
                    error: &error,
                }
                .emit();
                worker.set(WorkerStatus::Restarting(error));
                let until = std::time::Instant::now() + backoff;
                while std::time::Instant::now() < until && !shutdown.is_cancelled() {
                    worker.beat();
                    std::thread::sleep(Duration::from_millis(50));
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        })
}

/// Test-only fault injection, compiled into debug builds only: `DLQ_TEST_PANIC_WORKER=ingest`
/// makes every start of that worker panic (the dead-worker test drives it).
#[cfg(debug_assertions)]
fn fault_hook(worker: &str) {
    if std::env::var("DLQ_TEST_PANIC_WORKER").is_ok_and(|w| w == worker) {
        panic!("fault injected by DLQ_TEST_PANIC_WORKER");
    }
}

#[cfg(not(debug_assertions))]
fn fault_hook(_worker: &str) {}

/// Why the cluster refused us: wrong credentials or a certificate we do not trust. Retrying
/// does not fix either (the Java client, too, treats them as non-retriable), so start-up stops
/// with this rather than waiting out `--kafka-connect-timeout` on a timeout that names nothing.
/// The detail is librdkafka's own text (e.g. `SASL authentication error: … invalid credentials
/// with SASL mechanism SCRAM-SHA-512`, `SSL handshake failed: … certificate verify failed`),
/// which names the broker and the mechanism but never a password; it is masked all the same.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessDenied {
    #[error("authentication failed (check sasl.mechanisms, sasl.username, sasl.password): {0}")]
    Authentication(String),
    #[error(
        "TLS: certificate verify failed (is the broker's certificate signed by the CA in \
         ssl.ca.location, and issued for the bootstrap host?): {0}"
    )]
    CertificateUntrusted(String),
    #[error("TLS: handshake failed: {0}")]
    Tls(String),
}

impl AccessDenied {
    /// The same, with `conn`'s secret values masked in the detail.
    pub fn masked(self, conn: &KafkaConn) -> AccessDenied {
        match self {
            AccessDenied::Authentication(d) => AccessDenied::Authentication(conn.mask(&d)),
            AccessDenied::CertificateUntrusted(d) => {
                AccessDenied::CertificateUntrusted(conn.mask(&d))
            }
            AccessDenied::Tls(d) => AccessDenied::Tls(conn.mask(&d)),
        }
    }

    /// Sorts a librdkafka error log line: `Some` for an authentication or TLS failure.
    pub fn classify_log(message: &str) -> Option<AccessDenied> {
        let m = message.to_string();
        if m.contains("SASL authentication error") || m.contains("SASL authentication failed") {
            Some(AccessDenied::Authentication(m))
        } else if m.contains("certificate verify failed") {
            Some(AccessDenied::CertificateUntrusted(m))
        } else if m.contains("SSL handshake failed") {
            Some(AccessDenied::Tls(m))
        } else {
            None
        }
    }

    /// Sorts a librdkafka error callback: `Some` for an authentication or TLS failure.
    pub fn classify(error: &rdkafka::error::KafkaError, reason: &str) -> Option<AccessDenied> {
        use rdkafka::types::RDKafkaErrorCode as Code;
        AccessDenied::classify_log(reason).or_else(|| match error.rdkafka_error_code() {
            Some(Code::Authentication) => Some(AccessDenied::Authentication(reason.to_string())),
            Some(Code::SSL) => Some(AccessDenied::Tls(reason.to_string())),
            _ => None,
        })
    }
}

/// The probe's client context: remembers the last authentication or TLS failure librdkafka
/// reports. A metadata request that cannot authenticate only fails with a transport error that
/// says nothing about why; the why is in librdkafka's `FAIL` log line for the connection
/// (`…: SASL authentication error: …`, `…: SSL handshake failed: …`), which the log callback
/// gets at once, on librdkafka's thread, before the request is failed. (A consumer's error
/// *events* reach `poll` as bare codes, without that text, so `error()` alone would not do.)
/// Every line is still logged as rdkafka's default context does.
#[derive(Default)]
pub struct ProbeContext {
    denied: std::sync::Mutex<Option<AccessDenied>>,
}

impl ProbeContext {
    pub fn denied(&self) -> Option<AccessDenied> {
        self.denied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn remember(&self, denied: Option<AccessDenied>) {
        if let Some(d) = denied {
            *self.denied.lock().unwrap_or_else(|e| e.into_inner()) = Some(d);
        }
    }
}

impl rdkafka::ClientContext for ProbeContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                self.remember(AccessDenied::classify_log(message));
                tracing::error!(target: "librdkafka", "librdkafka: {fac} {message}");
            }
            L::Warning => tracing::warn!(target: "librdkafka", "librdkafka: {fac} {message}"),
            L::Notice | L::Info => {
                tracing::info!(target: "librdkafka", "librdkafka: {fac} {message}")
            }
            L::Debug => tracing::debug!(target: "librdkafka", "librdkafka: {fac} {message}"),
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.remember(AccessDenied::classify(&error, reason));
        tracing::error!(target: "librdkafka", "librdkafka: {error}: {reason}");
    }
}

impl rdkafka::consumer::ConsumerContext for ProbeContext {}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The request failed and the client was refused on the way: the refusal is the cause.
    #[error(transparent)]
    Denied(AccessDenied),
}

/// Asks the cluster for its metadata: the cheapest proof that it is reachable. When the request
/// fails and librdkafka reported an authentication or TLS failure meanwhile, that is the error.
pub fn probe(conn: &KafkaConn, timeout: Duration) -> Result<usize, ProbeError> {
    let mut c = conn.client_config();
    c.set("group.id", "workflow-dlq-probe");
    let consumer: BaseConsumer<ProbeContext> = c.create_with_context(ProbeContext::default())?;
    // Asked in slices of at most 1 s: a refusal comes within the first few hundred ms, and
    // waiting out the whole attempt before looking for it only delays the error.
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let slice = deadline
            .saturating_duration_since(std::time::Instant::now())
            .min(Duration::from_secs(1));
        let e = match consumer.fetch_metadata(None, slice) {
            Ok(md) => return Ok(md.brokers().len()),
            Err(e) => e,
        };
        // rust-rdkafka queues librdkafka's log lines and errors on the client's main queue
        // (`log.queue`): they reach the context only when the consumer is polled. Serve them
        // (a few short polls: nothing is subscribed, so no message can come).
        let mut bare_auth_error = false;
        for _ in 0..5 {
            if consumer.context().denied().is_some() {
                break;
            }
            if let Some(Err(e)) = consumer.poll(Duration::from_millis(20)) {
                bare_auth_error |= e.rdkafka_error_code()
                    == Some(rdkafka::types::RDKafkaErrorCode::Authentication);
            }
        }
        match consumer.context().denied() {
            Some(denied) => return Err(ProbeError::Denied(denied.masked(conn))),
            // The code without the log line (e.g. `log_level` set below 3).
            None if bare_auth_error => {
                return Err(ProbeError::Denied(AccessDenied::Authentication(
                    "the broker refused the SASL credentials".into(),
                )))
            }
            None if std::time::Instant::now() >= deadline => return Err(e.into()),
            None => {}
        }
    }
}

/// For a lib test: the broker to run on — the real one when `KAFKA_BOOTSTRAP` is set (CI's
/// second pass), else an embedded one, kept alive by the returned handle — with a fresh topic
/// `<prefix>-<uuid>` of `partitions` made on it. Returns (handle, connection, topic).
#[cfg(test)]
pub(crate) fn test_broker(
    prefix: &str,
    partitions: i32,
) -> (Option<embedded::EmbeddedBroker>, KafkaConn, String) {
    let real = std::env::var("KAFKA_BOOTSTRAP").ok();
    let broker = match real {
        Some(_) => None,
        None => Some(embedded::EmbeddedBroker::start().expect("embedded broker")),
    };
    let bootstrap = real.unwrap_or_else(|| {
        broker
            .as_ref()
            .map(|b| b.bootstrap().to_string())
            .unwrap_or_default()
    });
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let topic = format!("{prefix}-{tag}");
    let conn = KafkaConn {
        bootstrap,
        properties: Default::default(),
        embedded: broker.is_some(),
        client_id: topic.clone(),
        max_record_bytes: 1 << 20,
    };
    let spec = topics::TopicSpec {
        name: topic.clone(),
        partitions,
        ..topics::topic_specs(&crate::Config::default())[0].clone()
    };
    let handle = broker.as_ref().map(embedded::EmbeddedBroker::handle);
    let creator = match &handle {
        Some(h) => topics::TopicCreator::Embedded(h),
        None => topics::TopicCreator::Admin(&conn),
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(topics::ensure_topics(creator, &[spec], -1))
        .expect("topic");
    (broker, conn, topic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_sorted_by_librdkafka_text() {
        // librdkafka 2.12's FAIL lines, as seen against Kafka 4.4 (deploy/dev/kafka.sh, sasl_ssl).
        let auth = "sasl_ssl://127.0.0.1:39092/bootstrap: SASL authentication error: \
                    Authentication failed during authentication due to invalid credentials with \
                    SASL mechanism SCRAM-SHA-512 (after 356ms in state AUTH_REQ)";
        let tls = "sasl_ssl://127.0.0.1:39092/bootstrap: SSL handshake failed: \
                   error:0A000086:SSL routines::certificate verify failed: broker certificate \
                   could not be verified (after 154ms in state SSL_HANDSHAKE)";
        let d = AccessDenied::classify_log(auth).expect("auth");
        assert!(matches!(d, AccessDenied::Authentication(_)));
        let shown = d.to_string();
        assert!(shown.starts_with("authentication failed"), "{shown}");
        assert!(shown.contains("SCRAM-SHA-512"), "{shown}");
        let d = AccessDenied::classify_log(tls).expect("tls");
        assert!(
            d.to_string().starts_with("TLS: certificate verify failed"),
            "{d}"
        );
        assert!(matches!(
            AccessDenied::classify_log("ssl://b:9093/1: SSL handshake failed: unexpected eof"),
            Some(AccessDenied::Tls(_))
        ));
        // A broker that is merely down is not a refusal: start-up keeps trying.
        assert_eq!(
            AccessDenied::classify_log("127.0.0.1:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed: Connection refused"),
            None
        );
        // The code alone (an error callback whose text says nothing) still sorts.
        let e =
            rdkafka::error::KafkaError::Global(rdkafka::types::RDKafkaErrorCode::Authentication);
        assert!(matches!(
            AccessDenied::classify(&e, "x"),
            Some(AccessDenied::Authentication(_))
        ));
    }

    fn conn_with(properties: &[(&str, &str)]) -> KafkaConn {
        KafkaConn {
            bootstrap: "127.0.0.1:9".into(),
            properties: properties
                .iter()
                .map(|(k, v)| (k.to_string(), KafkaProperty::new(k, *v)))
                .collect(),
            embedded: false,
            client_id: "t".into(),
            max_record_bytes: 1024,
        }
    }

    #[test]
    fn consumers_fetch_at_most_16_mib_unless_the_user_sizes_messages() {
        use rdkafka::consumer::BaseConsumer;
        let ours = conn_with(&[]);
        for c in [ours.reader_config(), ours.group_consumer_config("g")] {
            assert_eq!(c.get("fetch.max.bytes"), Some("16777216"));
            assert_eq!(c.get("max.partition.fetch.bytes"), Some("8388608"));
            assert!(c.create::<BaseConsumer>().is_ok());
        }
        // librdkafka refuses `fetch.max.bytes` under `message.max.bytes`: a user's 32 MiB
        // messages leave the response size to librdkafka, and the consumers still start.
        let big = conn_with(&[("message.max.bytes", "33554432")]);
        for c in [big.reader_config(), big.group_consumer_config("g")] {
            assert_eq!(c.get("fetch.max.bytes"), None);
            c.create::<BaseConsumer>()
                .expect("a consumer with the user's message size");
        }
        let theirs = conn_with(&[("fetch.max.bytes", "1048576")]);
        assert_eq!(
            theirs.reader_config().get("fetch.max.bytes"),
            Some("1048576")
        );
    }

    #[test]
    fn secrets_are_redacted_but_locations_are_shown() {
        let conn = KafkaConn {
            bootstrap: "b:9092".into(),
            properties: [
                ("sasl.password", "hunter2"),
                ("sasl.username", "me"),
                ("ssl.key.password", "x"),
                ("ssl.key.location", "/etc/key.pem"),
                ("sasl.oauthbearer.client.secret", "s"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), KafkaProperty::new(k, v)))
            .collect(),
            embedded: false,
            client_id: "t".into(),
            max_record_bytes: 1024,
        };
        let shown = conn.redacted_properties();
        assert_eq!(shown["sasl.password"], "<redacted>");
        assert_eq!(shown["ssl.key.password"], "<redacted>");
        assert_eq!(shown["sasl.oauthbearer.client.secret"], "<redacted>");
        assert_eq!(shown["sasl.username"], "me");
        assert_eq!(shown["ssl.key.location"], "/etc/key.pem");
        assert_eq!(
            conn.mask("Client config error: bad sasl.password hunter2"),
            "Client config error: bad sasl.password <redacted>"
        );
        // One-letter values (`x`, `s` above) are not masked: they would mangle every message.
        assert_eq!(conn.mask("sasl.password x"), "sasl.password x");
        // Plain values are not secrets.
        assert_eq!(conn.mask("sasl.username me"), "sasl.username me");
        // Debug never shows a secret; librdkafka alone gets the value.
        let debug = format!("{conn:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("/etc/key.pem"), "{debug}");
        let config = conn.client_config();
        assert_eq!(config.get("sasl.password"), Some("hunter2"));
        assert_eq!(config.get("ssl.key.location"), Some("/etc/key.pem"));
    }
}
