//! A real Prometheus (Debian's `prometheus` package) scrapes a running service: what it stores
//! is what operators see. Also: every metric that an alert rule or the Grafana dashboard names
//! exists in the service's `/metrics`.
//!
//! Without a `prometheus` binary the end-to-end test says so and passes, except in CI (`CI`
//! set), where it fails: `.ci/run` installs the package. `PROMETHEUS_BIN` picks another binary.

use crate::common;

use std::{
    collections::BTreeSet,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    command, eventually, failure_event, final_result, ids, producer, publish, publish_raw,
    send_command, test_config, TestApp,
};
use workflow_dlq::wire::{ids::dlq_id_for_event, pb::recovery_command::Action};

const MINUTE: Duration = Duration::from_secs(60);

/// The metrics are process-wide (one recorder): the tests here run one service at a time so
/// `dlq_entries` is the entry count of the service Prometheus scrapes.
static ONE_SERVICE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn prometheus_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PROMETHEUS_BIN") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("prometheus"))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A Prometheus process with its own storage; killed and cleaned up on drop.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    base: String,
    http: reqwest::Client,
}

impl Prometheus {
    /// Scrapes `target` every second as job `workflow-dlq` and evaluates the shipped alert
    /// rules every second.
    async fn start(bin: &Path, target: &str) -> Prometheus {
        let dir = std::env::temp_dir().join(common::unique("prometheus"));
        std::fs::create_dir_all(dir.join("data")).expect("temp dir");
        let rules = repo("deploy/prometheus/alerts.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: workflow-dlq\n    scrape_timeout: 1s\n    \
             static_configs:\n      - targets: [\"{target}\"]\n",
            rules = rules.display(),
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("config");
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
        let child = Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        let p = Prometheus {
            child,
            dir,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let ready = format!("{}/-/ready", p.base);
        let http = p.http.clone();
        eventually(Duration::from_secs(30), "Prometheus ready", || {
            let (http, ready) = (http.clone(), ready.clone());
            async move {
                http.get(&ready)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .await;
        p
    }

    /// `/api/v1/query`: the instant vector's samples as (labels, value).
    async fn query(&self, expr: &str) -> Vec<(serde_json::Value, f64)> {
        let r = self
            .http
            .get(format!("{}/api/v1/query", self.base))
            .query(&[("query", expr)])
            .send()
            .await
            .expect("query Prometheus");
        let body: serde_json::Value = r.json().await.expect("JSON answer");
        assert_eq!(body["status"], "success", "query {expr}: {body}");
        body["data"]["result"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .map(|s| {
                        let v = s["value"][1]
                            .as_str()
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(f64::NAN);
                        (s["metric"].clone(), v)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until `expr` evaluates to exactly one sample equal to `want`.
    async fn wait_value(&self, expr: &str, want: f64) {
        let started = Instant::now();
        let mut last = Vec::new();
        while started.elapsed() < MINUTE {
            last = self.query(expr).await;
            if last.len() == 1 && last[0].1 == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!(
            "Prometheus: `{expr}` is {last:?}, not {want}; its log:\n{}",
            self.log()
        );
    }

    /// The value of `expr` once it is exactly one sample.
    async fn value(&self, expr: &str) -> f64 {
        let started = Instant::now();
        loop {
            let samples = self.query(expr).await;
            if samples.len() == 1 {
                return samples[0].1;
            }
            assert!(
                started.elapsed() < MINUTE,
                "Prometheus: `{expr}` is {samples:?}; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Metrics are process-global, so the counts it checks include every service in the process:
/// run it with no other test beside it (`cargo test --test it -- --include-ignored
/// prometheus::`, as .ci/run does).
#[ignore = "needs Debian's prometheus (or PROMETHEUS_BIN) and no other test in its process; .ci/run runs it alone"]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_scrapes_entries_and_command_counters() {
    let bin = prometheus_binary().expect(
        "no prometheus binary: apt-get install prometheus (.ci/run does), or set PROMETHEUS_BIN",
    );
    let _one = ONE_SERVICE.lock().await;
    let started = Instant::now();
    let app = TestApp::spawn(test_config()).await;
    let prom = Prometheus::start(&bin, &app.service.http_addr.to_string()).await;
    let job = r#"job="workflow-dlq""#;
    // Scraped, and the series an alert needs exist before anything happened (the counters are
    // per process, so the test compares increases, not absolute values).
    prom.wait_value(&format!("up{{{job}}}"), 1.0).await;
    let ingested = format!("dlq_ingested_total{{{job}}}");
    let latency_count = format!("dlq_ingest_latency_seconds_count{{{job}}}");
    let commands_ok =
        format!(r#"dlq_commands_total{{{job}, action="delete", selector="id", outcome="ok"}}"#);
    let items_ok = format!(r#"dlq_items_total{{{job}, action="delete", status="ok"}}"#);
    let command_latency_count = format!("dlq_command_latency_seconds_count{{{job}}}");
    let before = [
        prom.value(&ingested).await,
        prom.value(&latency_count).await,
        prom.value(&commands_ok).await,
        prom.value(&items_ok).await,
        prom.value(&command_latency_count).await,
    ];
    prom.value(&format!(
        r#"dlq_commands_total{{{job}, action="delete", selector="id", outcome="failed"}}"#
    ))
    .await;

    const N: usize = 7;
    let p = producer(&app.bootstrap());
    let events: Vec<_> = (0..N).map(failure_event).collect();
    let topic = app.topics().failures;
    for ev in &events {
        publish(&p, &topic, ev, false).await;
    }
    app.wait_entries(N, MINUTE).await;

    prom.wait_value(&format!("dlq_entries{{{job}}}"), N as f64)
        .await;
    prom.wait_value(&ingested, before[0] + N as f64).await;
    prom.wait_value(&latency_count, before[1] + N as f64).await;
    // The arrival alert of deploy/prometheus/alerts.yml fires in a real Prometheus.
    prom.wait_value(
        r#"count(ALERTS{alertname="DlqNewEntries", alertstate="firing"})"#,
        1.0,
    )
    .await;

    // One command: delete one entry by id.
    let victim = dlq_id_for_event(&events[0].event_id);
    let cmd = command(&common::unique("cmd"), Action::Delete, ids(&[&victim]));
    send_command(&p, &app.topics().commands, &cmd).await;
    let (result, _) = final_result(
        &app.bootstrap(),
        &app.topics().results,
        &cmd.command_id,
        MINUTE,
    )
    .await;
    assert_eq!(result.succeeded, 1, "{result:?}");

    prom.wait_value(&commands_ok, before[2] + 1.0).await;
    prom.wait_value(&items_ok, before[3] + 1.0).await;
    prom.wait_value(&command_latency_count, before[4] + 1.0)
        .await;
    prom.wait_value(&format!("dlq_entries{{{job}}}"), (N - 1) as f64)
        .await;
    // No command failed, so the failure alert stays quiet.
    assert!(prom
        .query(r#"ALERTS{alertname="DlqCommandFailures"}"#)
        .await
        .is_empty());

    // Every query of the dashboard is valid PromQL in this Prometheus and finds data.
    for expr in dashboard_exprs() {
        let expr = expr.replace("$__rate_interval", "1m");
        let samples = prom.query(&expr).await;
        assert!(
            !samples.is_empty() || expr.contains("histogram_quantile"),
            "dashboard query finds nothing: {expr}"
        );
    }
    eprintln!(
        "prometheus e2e: {N} entries and 1 command seen through Prometheus in {:?}",
        started.elapsed()
    );
    drop(prom);
    app.stop().await;
}

/// Every `dlq_*` metric an alert rule or the dashboard names is in `/metrics` of a service that
/// ingested, rejected and ran a command.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_metric_in_rules_and_dashboard_is_exported() {
    let _one = ONE_SERVICE.lock().await;
    let app = TestApp::spawn(test_config()).await;
    let p = producer(&app.bootstrap());
    let ev = failure_event(1);
    publish(&p, &app.topics().failures, &ev, false).await;
    publish_raw(
        &p,
        &app.topics().failures,
        Some(b"k"),
        b"\xff not protobuf",
        None,
        None,
    )
    .await;
    app.wait_entries(1, MINUTE).await;
    let cmd = command(
        &common::unique("cmd"),
        Action::Delete,
        ids(&[&dlq_id_for_event(&ev.event_id)]),
    );
    send_command(&p, &app.topics().commands, &cmd).await;
    final_result(
        &app.bootstrap(),
        &app.topics().results,
        &cmd.command_id,
        MINUTE,
    )
    .await;

    let mut exported = BTreeSet::new();
    eventually(MINUTE, "consumer lag measured", || {
        let metrics = app.metrics();
        async { metrics.await.contains("dlq_consumer_lag{") }
    })
    .await;
    for line in app.metrics().await.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        exported.insert(base_name(name).to_string());
    }

    let mut named = BTreeSet::new();
    for expr in alert_exprs().into_iter().chain(dashboard_exprs()) {
        named.extend(metric_names(&expr));
    }
    assert!(named.len() >= 10, "few metrics found in rules: {named:?}");
    let missing: Vec<_> = named.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "named in deploy/prometheus/alerts.yml or deploy/grafana but not exported: {missing:?}\n\
         exported: {exported:?}"
    );
    // And every metric of the catalogue is exported from the start.
    for d in workflow_dlq::metrics::CATALOGUE {
        assert!(exported.contains(d.name), "{} not in /metrics", d.name);
    }
    app.stop().await;
}

fn base_name(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

/// The `dlq_*` identifiers of a PromQL expression, histogram suffixes stripped.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("dlq_") {
        let preceded_by_ident = rest[..i]
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        if !preceded_by_ident {
            out.insert(base_name(&tail[..end]).to_string());
        }
        rest = &tail[end..];
    }
    out
}

fn alert_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(repo("deploy/prometheus/alerts.yml")).expect("alerts.yml");
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("alerts.yml is YAML");
    let mut out = Vec::new();
    for group in doc["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            out.push(rule["expr"].as_str().expect("expr").to_string());
        }
    }
    out
}

fn dashboard_exprs() -> Vec<String> {
    let text =
        std::fs::read_to_string(repo("deploy/grafana/workflow-dlq.json")).expect("dashboard");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut out = Vec::new();
    for panel in doc["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().into_iter().flatten() {
            out.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    assert!(!out.is_empty());
    out
}
