//! Test harness: every integration test runs against `KAFKA_BOOTSTRAP` when it is set (the real
//! Apache Kafka started by `deploy/dev/kafka.sh`), and otherwise against the service's own
//! embedded broker. Each test gets its own topics, group and instance id, so tests run in
//! parallel on one broker.

#![allow(dead_code)]

use std::{
    collections::HashMap,
    future::Future,
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use rdkafka::{
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer},
    message::{Header, Message, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
    Offset, TopicPartitionList,
};
use workflow_dlq::{config::Topics, wire::pb, Config, Service};

pub const TOKEN: &str = "test-token-0123456789abcdef";

/// The real broker's address, when the suite runs against one.
pub fn real_bootstrap() -> Option<String> {
    std::env::var("KAFKA_BOOTSTRAP")
        .ok()
        .filter(|b| !b.trim().is_empty())
}

pub fn on_real_broker() -> bool {
    real_bootstrap().is_some()
}

/// Tests that need what only a real broker has (restarts, crashes, committed offsets,
/// compaction, volume) are `#[ignore = "needs a real Kafka broker …"]`, so plain `cargo test`
/// reports them as ignored with the reason. First line of such a test: run with `--ignored` but without a real broker, it fails saying
/// so (it would otherwise prove nothing and read as a pass).
#[macro_export]
macro_rules! real_broker_only {
    () => {
        assert!(
            common::on_real_broker(),
            "this test needs the real broker: set KAFKA_BOOTSTRAP (deploy/dev/kafka.sh start)"
        );
    };
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A configuration with private topics, group and instance, on the test's broker.
pub fn test_config() -> Config {
    let id = unique("t");
    Config {
        kafka_bootstrap: real_bootstrap(),
        http_addr: "127.0.0.1:0".parse().expect("literal address"),
        api_token: Some(TOKEN.into()),
        topics: Topics::with_suffix(&id),
        group_id: format!("dlq-{id}"),
        instance_id: id,
        partitions: 3,
        txn_max_interval: Duration::from_millis(50),
        guard_interval: Duration::from_millis(500),
        sweep_interval: Duration::from_millis(500),
        kafka_connect_timeout: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(10),
        ..Config::default()
    }
}

pub struct TestApp {
    pub service: Service,
    pub http: reqwest::Client,
    pub base: String,
}

impl TestApp {
    pub async fn spawn(cfg: Config) -> TestApp {
        if std::env::var_os("TEST_LOG").is_some() {
            workflow_dlq::telemetry::init(workflow_dlq::config::LogFormat::Text);
        }
        let service = Service::start(cfg).await.expect("service starts");
        let base = format!("http://{}", service.http_addr);
        let app = TestApp {
            service,
            http: reqwest::Client::new(),
            base,
        };
        app.wait_ready(Duration::from_secs(60)).await;
        app
    }

    pub fn bootstrap(&self) -> String {
        self.service.kafka_bootstrap.clone()
    }

    pub fn topics(&self) -> Topics {
        self.service.cfg.topics.clone()
    }

    pub async fn wait_ready(&self, timeout: Duration) {
        wait_ready_at(&self.http, &self.base, timeout).await;
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("HTTP request")
    }

    /// A request with the token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
    }

    /// Publishes `events` and waits until the view holds them all (plus `already` entries).
    pub async fn ingest(&self, events: &[pb::FailureEvent], already: usize) {
        let p = producer(&self.bootstrap());
        let topic = self.topics().failures;
        for chunk in events.chunks(200) {
            let sends = chunk.iter().map(|ev| publish(&p, &topic, ev, false));
            futures::future::join_all(sends).await;
        }
        self.wait_entries(already + events.len(), Duration::from_secs(60))
            .await;
    }

    /// Every execution written so far (committed).
    pub fn executions(&self) -> Vec<pb::WorkflowExecution> {
        decode_all(&read_topic(&self.bootstrap(), &self.topics().executions))
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let r = self.get(path).await;
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.expect("JSON body")
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    pub async fn wait_entries(&self, n: usize, timeout: Duration) {
        let view = self.service.view.clone();
        eventually(timeout, &format!("{n} entries in the view"), || {
            let view = view.clone();
            async move { view.len() == n }
        })
        .await;
    }

    pub async fn stop(self) {
        self.service.stop().await.expect("clean stop");
    }
}

/// Polls `{base}/readyz` until it answers 2xx, or fails the test.
pub async fn wait_ready_at(http: &reqwest::Client, base: &str, timeout: Duration) {
    let url = format!("{base}/readyz");
    eventually(timeout, &format!("{base} ready"), || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            http.get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
}

/// Polls `check` until it holds, or fails the test naming `what`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < timeout {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {timeout:?} waiting for: {what}");
}

/// A plain producer that partitions keyed records as the Java client does (murmur2).
pub fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("partitioner", "murmur2_random")
        .create()
        .expect("producer")
}

/// A realistic failure event: headers, body, three completed steps with outputs.
pub fn failure_event(n: usize) -> pb::FailureEvent {
    let header = |v: &str| pb::HeaderValues {
        values: vec![v.to_string()],
    };
    pb::FailureEvent {
        event_id: format!("evt-{n}-{}", uuid::Uuid::new_v4().simple()),
        workflow_run_id: format!("wfr-{n}"),
        workflow_url: format!("https://app.example.com/api/workflow/{}", n % 4),
        workflow_created_at: 1_700_000_000_000 + n as i64,
        message_id: format!("msg-{n}"),
        method: "POST".into(),
        header: [
            ("Content-Type".to_string(), header("application/json")),
            ("X-Tenant".to_string(), header(&format!("tenant-{}", n % 3))),
        ]
        .into_iter()
        .collect(),
        body: format!("{{\"order\":{n}}}").into_bytes(),
        max_retries: 3,
        caller_ip: format!("10.0.0.{}", n % 5),
        labels: vec![format!("label-{}", n % 2)],
        flow_control: Some(pb::FlowControl {
            key: format!("fc-{}", n % 2),
            rate: 10,
            parallelism: 2,
            period_seconds: 60,
        }),
        completed_steps: (1..=3)
            .map(|i| pb::Step {
                step_id: i,
                step_name: format!("step-{i}"),
                step_type: "Run".into(),
                out: format!("{{\"result\":{i}}}").into_bytes(),
                concurrent: 1,
                completed_at: 1_700_000_000_000 + i as i64,
            })
            .collect(),
        failed_step: Some(pb::Step {
            step_id: 4,
            step_name: "charge".into(),
            step_type: "Call".into(),
            ..Default::default()
        }),
        response_status: 500,
        response_body: b"upstream failed".to_vec(),
        failure_callback: "https://app.example.com/api/failure".into(),
        failure_callback_info: Some(pb::FailureCallbackInfo {
            state: pb::failure_callback_info::State::CallbackFail as i32,
            response_status: 500,
            ..Default::default()
        }),
        failed_at: workflow_dlq::now_ms(),
        error_message: "step charge failed after 3 retries".into(),
        ..Default::default()
    }
}

pub fn envelope(ev: pb::FailureEvent) -> pb::FailureEnvelope {
    pb::FailureEnvelope {
        kind: Some(pb::failure_envelope::Kind::Failure(ev)),
    }
}

/// Publishes a failure as protobuf (`json = false`) or JSON, keyed by run id like the platform.
pub async fn publish(p: &FutureProducer, topic: &str, ev: &pb::FailureEvent, json: bool) {
    let env = envelope(ev.clone());
    publish_raw(
        p,
        topic,
        Some(ev.workflow_run_id.as_bytes()),
        &if json {
            serde_json::to_vec(&env).expect("json")
        } else {
            prost::Message::encode_to_vec(&env)
        },
        json.then_some("application/json"),
        None,
    )
    .await;
}

pub async fn publish_raw(
    p: &FutureProducer,
    topic: &str,
    key: Option<&[u8]>,
    value: &[u8],
    content_type: Option<&str>,
    partition: Option<i32>,
) {
    let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).payload(value);
    if let Some(k) = key {
        rec = rec.key(k);
    }
    if let Some(ct) = content_type {
        rec = rec.headers(OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some(ct),
        }));
    }
    if let Some(p) = partition {
        rec = rec.partition(p);
    }
    p.send(rec, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .expect("produce");
}

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: HashMap<String, String>,
}

/// Reads a whole topic from the beginning to its current end, committed records only.
pub fn read_topic(bootstrap: &str, topic: &str) -> Vec<Record> {
    use rdkafka::message::Headers;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .expect("partition");
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .expect("watermarks");
            if high > low {
                ends.insert(p.id(), high);
            }
        }
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let started = Instant::now();
    while !ends.is_empty() && started.elapsed() < Duration::from_secs(60) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|hd| {
                            (
                                hd.key.to_string(),
                                String::from_utf8_lossy(hd.value.unwrap_or_default()).to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(Record {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
                headers,
            });
            if ends
                .get(&m.partition())
                .is_some_and(|e| m.offset() + 1 >= *e)
            {
                ends.remove(&m.partition());
            }
        }
        if let Ok(pos) = consumer.position() {
            for e in pos.elements() {
                if let Offset::Offset(o) = e.offset() {
                    if ends.get(&e.partition()).is_some_and(|end| o >= *end) {
                        ends.remove(&e.partition());
                    }
                }
            }
        }
    }
    out
}

/// Publishes one fresh failure to every partition and waits until all are stored: ingest reads
/// each partition in order, so everything published before is then processed.
pub async fn barrier(app: &TestApp, p: &FutureProducer) -> usize {
    let topic = app.topics().failures;
    let mut ids = Vec::new();
    for partition in 0..app.service.cfg.partitions {
        let ev = failure_event(900_000 + partition as usize);
        ids.push(workflow_dlq::wire::ids::dlq_id_for_event(&ev.event_id));
        let env = prost::Message::encode_to_vec(&envelope(ev));
        publish_raw(p, &topic, None, &env, None, Some(partition)).await;
    }
    let view = app.service.view.clone();
    eventually(Duration::from_secs(60), "barrier records stored", || {
        let (view, ids) = (view.clone(), ids.clone());
        async move { ids.iter().all(|id| view.get(id).is_some()) }
    })
    .await;
    ids.len()
}

/// Publishes a recovery command keyed as the design says: by `dlqId` for one id, by command id
/// otherwise.
pub async fn send_command(p: &FutureProducer, topic: &str, cmd: &pb::RecoveryCommand) {
    let key = match &cmd.selector {
        Some(pb::recovery_command::Selector::DlqIds(ids)) if ids.ids.len() == 1 => {
            ids.ids[0].clone()
        }
        _ => cmd.command_id.clone(),
    };
    publish_raw(
        p,
        topic,
        Some(key.as_bytes()),
        &prost::Message::encode_to_vec(cmd),
        None,
        None,
    )
    .await;
}

pub fn decode_all<T: prost::Message + Default + serde::de::DeserializeOwned>(
    records: &[Record],
) -> Vec<T> {
    records
        .iter()
        .filter_map(|r| {
            let ct = r.headers.get("content-type").map(|s| s.as_bytes());
            workflow_dlq::wire::decode::<T>(ct, r.value.as_deref()).ok()
        })
        .collect()
}

/// Waits for the final result (`done = true`) of `command_id` and returns every result of it.
pub async fn final_result(
    bootstrap: &str,
    results_topic: &str,
    command_id: &str,
    timeout: Duration,
) -> (pb::CommandResult, Vec<pb::CommandResult>) {
    let started = Instant::now();
    loop {
        let all: Vec<pb::CommandResult> =
            decode_all::<pb::CommandResult>(&read_topic(bootstrap, results_topic))
                .into_iter()
                .filter(|r| r.command_id == command_id)
                .collect();
        if let Some(done) = all.iter().find(|r| r.done) {
            return (done.clone(), all);
        }
        assert!(
            started.elapsed() < timeout,
            "no final result for {command_id} after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn command(
    id: &str,
    action: pb::recovery_command::Action,
    selector: pb::recovery_command::Selector,
) -> pb::RecoveryCommand {
    pb::RecoveryCommand {
        command_id: id.to_string(),
        action: action as i32,
        selector: Some(selector),
        requested_by: "test".into(),
        requested_at: workflow_dlq::now_ms(),
        ..Default::default()
    }
}

pub fn ids(ids: &[&str]) -> pb::recovery_command::Selector {
    pb::recovery_command::Selector::DlqIds(pb::recovery_command::Ids {
        ids: ids.iter().map(|s| s.to_string()).collect(),
    })
}

/// Runs the real binary against the test's topics (for crash tests: it can be killed).
/// `workflow-dlq serve` on the test's broker (embedded when none), topics, group, instance and
/// partitions, on a free HTTP port; no token set.
pub fn serve_command(cfg: &Config) -> Command {
    let t = &cfg.topics;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_workflow-dlq"));
    cmd.arg("serve")
        .env(
            "DLQ_KAFKA_BOOTSTRAP",
            cfg.kafka_bootstrap.as_deref().unwrap_or_default(),
        )
        .env("DLQ_HTTP_ADDR", "127.0.0.1:0")
        .env("DLQ_TOPIC_FAILURES", &t.failures)
        .env("DLQ_TOPIC_STORE", &t.store)
        .env("DLQ_TOPIC_COMMANDS", &t.commands)
        .env("DLQ_TOPIC_EXECUTIONS", &t.executions)
        .env("DLQ_TOPIC_RESULTS", &t.results)
        .env("DLQ_TOPIC_REJECTED", &t.rejected)
        .env("DLQ_GROUP_ID", &cfg.group_id)
        .env("DLQ_INSTANCE_ID", &cfg.instance_id)
        .env("DLQ_PARTITIONS", cfg.partitions.to_string())
        .env(
            "DLQ_OUTPUT_ENCODING",
            match cfg.output_encoding {
                workflow_dlq::config::OutputEncoding::Protobuf => "protobuf",
                workflow_dlq::config::OutputEncoding::Json => "json",
            },
        );
    cmd
}

/// A child service process, SIGKILLed and reaped when dropped: a test that fails midway
/// leaves no instance running behind it.
pub struct ChildGuard(Child);

impl std::ops::Deref for ChildGuard {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl ChildGuard {
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard(child)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn spawn_binary(cfg: &Config) -> (ChildGuard, String) {
    spawn_binary_with(cfg, &[])
}

/// [`spawn_binary`] with extra environment (e.g. a debug-build fault hook).
pub fn spawn_binary_with(cfg: &Config, env: &[(&str, &str)]) -> (ChildGuard, String) {
    // DLQ_TEST_LOG_DIR=<dir> keeps each instance's logs (appended, one file per instance id)
    // for a failure to be read afterwards; they are dropped otherwise.
    let logs = match std::env::var_os("DLQ_TEST_LOG_DIR") {
        Some(dir) => {
            let path = std::path::Path::new(&dir).join(format!("{}.log", cfg.instance_id));
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .expect("instance log file");
            Stdio::from(file)
        }
        None => Stdio::null(),
    };
    let mut child = serve_command(cfg)
        .env("DLQ_API_TOKEN", TOKEN)
        .envs(env.iter().copied())
        // The default transaction sizes: exactly-once must hold at the rates they give.
        .stdout(Stdio::piped())
        .stderr(logs)
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut base = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        if let Some(url) = line.strip_prefix("HTTP API on ") {
            base = url.to_string();
            break;
        }
    }
    (ChildGuard(child), base)
}

pub async fn status_entries(http: &reqwest::Client, base: &str) -> Option<u64> {
    let r = http
        .get(format!("{base}/v1/status"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .ok()?;
    let v: serde_json::Value = r.json().await.ok()?;
    v["entries"].as_u64()
}

/// Where pinned third-party tools are installed: the user's cache (`~/.cache/workflow-dlq`, or
/// `$WORKFLOW_DLQ_TOOL_CACHE`), not `target/`: CI runs in a fresh clone, and reinstalled
/// schemathesis there every run (28 s). `deploy/check.sh` uses the same folder.
pub fn tool_cache() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("WORKFLOW_DLQ_TOOL_CACHE") {
        return dir.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache")));
    match cache {
        Some(cache) => cache.join("workflow-dlq"),
        // No home: the checkout's own target/, as before.
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
    }
}

/// A Python virtualenv `<name>` in the [`tool_cache`] with `requirements` (a file under the
/// repository) installed — once, and again when the file changes. Returns the venv's `bin/`
/// folder.
pub fn python_venv(name: &str, requirements: &str) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = tool_cache().join(name);
    let requirements = root.join(requirements);
    let wanted = std::fs::read_to_string(&requirements).expect("requirements file");
    let marker = venv.join("installed-requirements.txt");
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(wanted.as_str()) {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "python3 -m venv {} failed", venv.display());
        let ok = Command::new(venv.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "pip install -r {} failed", requirements.display());
        std::fs::write(&marker, wanted).expect("marker");
    }
    venv.join("bin")
}

pub fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn idempotent_producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "10")
        .set("partitioner", "murmur2_random")
        // Held and retried through a broker outage, never duplicated (idempotence).
        .set("message.timeout.ms", "300000")
        .create()
        .expect("producer")
}

/// Publishes `events` spread evenly over `over` (keyed by run id), each delivery awaited for up
/// to 300 s — across a broker outage.
pub fn spawn_publisher(
    p: FutureProducer,
    topic: String,
    events: Vec<pb::FailureEvent>,
    over: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        let total = events.len().max(1);
        let mut inflight = Vec::new();
        for (i, ev) in events.into_iter().enumerate() {
            let due = over.mul_f64(i as f64 / total as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
            let (p, topic) = (p.clone(), topic.clone());
            inflight.push(tokio::spawn(async move {
                let value = prost::Message::encode_to_vec(&envelope(ev.clone()));
                p.send(
                    FutureRecord::to(&topic)
                        .key(ev.workflow_run_id.as_bytes())
                        .payload(&value),
                    Duration::from_secs(300),
                )
                .await
                .map_err(|(e, _)| e)
                .expect("published");
            }));
            if inflight.len() >= 2_000 {
                for f in inflight.drain(..) {
                    f.await.expect("publish task");
                }
            }
        }
        for f in inflight {
            f.await.expect("publish task");
        }
    })
}
