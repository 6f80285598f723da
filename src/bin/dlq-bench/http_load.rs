//! `http-load`: many concurrent clients mixing list, get and actions against the real service
//! binary for a fixed time (issue 17). The service runs as a child process — `workflow-dlq
//! serve`, next to this binary — so the memory sampled (`/proc/<pid>/status`) is the service's
//! alone, not the load generator's. Per route: count, answers by status, p50/p99/max latency of
//! the 2xx answers. Then every action is checked: answered 2xx → applied exactly once (one
//! execution of its kind on the executions topic for a restart or resume, the entry gone);
//! shed (the documented 503 with `Retry-After`) → not applied at all.
//!
//! Fails (exit 1) on a transport error, on any answer but 2xx or a documented 503, and on an
//! action applied twice, applied though shed, or answered 2xx and not applied.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use prost::Message as _;
use rand::Rng;
use rdkafka::{
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer},
    Message, Offset, TopicPartitionList,
};
use reqwest::{Method, StatusCode};
use workflow_dlq::{wire::pb, Config};

use crate::{data, measure::percentile, tag, Args, PARTITIONS};

/// `serve` refuses tokens under 16 characters.
const TOKEN: &str = "bench-http-load-token";
const ROUTES: [&str; 5] = ["list", "get", "restart", "resume", "delete"];

/// The service child, killed and reaped when dropped (a failed run leaves nothing behind).
struct ServiceChild {
    child: Child,
    base: String,
    bootstrap: String,
}

impl Drop for ServiceChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_service(a: &Args, cfg: &Config, log: &std::path::Path) -> ServiceChild {
    let bin = match &a.service_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .expect("own path")
            .with_file_name("workflow-dlq"),
    };
    let t = &cfg.topics;
    let bootstrap = if a.embedded {
        String::new()
    } else {
        a.bootstrap.clone()
    };
    let log_file = std::fs::File::create(log).expect("service log file");
    let mut child = Command::new(&bin)
        .arg("serve")
        .env("DLQ_KAFKA_BOOTSTRAP", &bootstrap)
        .env("DLQ_HTTP_ADDR", "127.0.0.1:0")
        .env("DLQ_API_TOKEN", TOKEN)
        .env("DLQ_TOPIC_FAILURES", &t.failures)
        .env("DLQ_TOPIC_STORE", &t.store)
        .env("DLQ_TOPIC_COMMANDS", &t.commands)
        .env("DLQ_TOPIC_EXECUTIONS", &t.executions)
        .env("DLQ_TOPIC_RESULTS", &t.results)
        .env("DLQ_TOPIC_REJECTED", &t.rejected)
        .env("DLQ_GROUP_ID", &cfg.group_id)
        .env("DLQ_INSTANCE_ID", &cfg.instance_id)
        .env("DLQ_PARTITIONS", PARTITIONS.to_string())
        .env(
            "DLQ_TXN_MAX_INTERVAL",
            humantime::format_duration(a.txn_max_interval).to_string(),
        )
        // Every action is a command; a generous rate, so pacing is not what is measured.
        .env("DLQ_MAX_PER_SECOND", "100000")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let (mut base, mut embedded) = (String::new(), String::new());
    for line in lines.by_ref() {
        let line = line.expect("service stdout");
        if let Some(b) = line.strip_prefix("embedded Kafka broker listening on ") {
            embedded = b.trim().to_string();
        }
        if let Some(url) = line.strip_prefix("HTTP API on ") {
            base = url.trim().to_string();
            break;
        }
    }
    assert!(
        !base.is_empty(),
        "the service did not start: see {}",
        log.display()
    );
    // Keep draining stdout, so the service never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    ServiceChild {
        bootstrap: if a.embedded { embedded } else { bootstrap },
        child,
        base,
    }
}

/// The child's resident set size in kB, from `/proc/<pid>/status`.
fn rss_kb_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// How one request ended.
enum Outcome {
    Ok,
    /// The documented load-shed answer: 503 with `Retry-After`, acted on nothing.
    Shed(Duration),
    /// Another documented 503 (not ready, or no answer from the command consumer in 20 s:
    /// the action may still be applied, once).
    Unavailable,
    /// Anything else: a failure of the run.
    Other(u16, String),
    Transport(String),
}

#[derive(Default)]
struct RouteStats {
    /// Latency of each 2xx answer.
    ok_ms: Vec<f64>,
    shed: u64,
    unavailable: u64,
    /// Any other status: each one fails the run.
    other: HashMap<u16, u64>,
    transport: u64,
}

impl RouteStats {
    fn requests(&self) -> u64 {
        self.ok_ms.len() as u64
            + self.shed
            + self.unavailable
            + self.other.values().sum::<u64>()
            + self.transport
    }
}

#[derive(Default)]
struct Shared {
    stats: HashMap<&'static str, RouteStats>,
    /// (dlq id, route) of every action, and how it ended: 2 = ok, 1 = unavailable, 0 = shed.
    actions: Vec<(String, &'static str, u8)>,
    failures: Vec<String>,
}

async fn call(http: &reqwest::Client, method: Method, url: &str) -> (Outcome, String) {
    let r = match http.request(method, url).bearer_auth(TOKEN).send().await {
        Ok(r) => r,
        Err(e) => return (Outcome::Transport(e.to_string()), String::new()),
    };
    let status = r.status();
    let retry_after = r
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = match r.text().await {
        Ok(b) => b,
        Err(e) => return (Outcome::Transport(format!("body: {e}")), String::new()),
    };
    let outcome = match (status, retry_after) {
        (s, _) if s.is_success() => Outcome::Ok,
        (StatusCode::SERVICE_UNAVAILABLE, Some(secs)) if body.contains("overloaded") => {
            Outcome::Shed(Duration::from_secs(secs))
        }
        (StatusCode::SERVICE_UNAVAILABLE, _) => Outcome::Unavailable,
        (s, _) => Outcome::Other(s.as_u16(), body.chars().take(300).collect()),
    };
    (outcome, body)
}

/// The next page's cursor of a list answer, found without parsing the page: the load
/// generator shares the 2 cores with the service, and parsing 100 entries per page to read
/// one field would take CPU the service could use. `cursor` is the answer's last field and
/// no entry field has that name.
fn page_cursor(body: &str) -> Option<String> {
    let at = body.rfind("\"cursor\":\"")? + "\"cursor\":\"".len();
    let len = body[at..].find('"')?;
    Some(body[at..at + len].to_string())
}

/// Every entry id, by paging through the whole DLQ.
async fn all_ids(http: &reqwest::Client, base: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{base}/v2/workflows/dlq?count=100&cursor={c}"),
            None => format!("{base}/v2/workflows/dlq?count=100"),
        };
        let (outcome, body) = call(http, Method::GET, &url).await;
        assert!(matches!(outcome, Outcome::Ok), "listing for ids: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("list JSON");
        for m in v["messages"].as_array().into_iter().flatten() {
            ids.extend(m["dlqId"].as_str().map(str::to_string));
        }
        cursor = v["cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            return ids;
        }
    }
}

async fn entries(http: &reqwest::Client, base: &str) -> u64 {
    let (_, body) = call(http, Method::GET, &format!("{base}/v1/status")).await;
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["entries"].as_u64())
        .unwrap_or(0)
}

/// Executions written to `topic` (all of them: the topic is this run's own), read committed:
/// source dlq id → kinds.
fn executions(bootstrap: &str, topic: &str) -> HashMap<String, Vec<i32>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("bench-execs-{}", tag()))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    for p in partitions {
        let (low, high) = c
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("tpl");
        if high > low {
            ends.insert(p, high);
        }
    }
    c.assign(&tpl).expect("assign");
    let mut out: HashMap<String, Vec<i32>> = HashMap::new();
    let started = Instant::now();
    while !ends.is_empty() && started.elapsed() < Duration::from_secs(120) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            if let Some(e) = m
                .payload()
                .and_then(|p| pb::WorkflowExecution::decode(p).ok())
            {
                out.entry(e.source_dlq_id).or_default().push(e.kind);
            }
            if ends
                .get(&m.partition())
                .is_some_and(|e| m.offset() + 1 >= *e)
            {
                ends.remove(&m.partition());
            }
        }
        // Transaction markers take offsets too: the position, not the last record, says done.
        if let Ok(pos) = c.position() {
            for e in pos.elements() {
                if let Offset::Offset(o) = e.offset() {
                    if ends.get(&e.partition()).is_some_and(|end| o >= *end) {
                        ends.remove(&e.partition());
                    }
                }
            }
        }
    }
    assert!(
        ends.is_empty(),
        "the executions topic was not read to its end"
    );
    out
}

pub async fn run(a: &Args) {
    let t = tag();
    let cfg = crate::bench_config(a, &t);
    if !a.embedded {
        crate::create_topics(&cfg, &[]).await;
    }
    let log = std::env::temp_dir().join(format!("dlq-bench-http-load-{t}.log"));
    let svc = spawn_service(a, &cfg, &log);
    let pid = svc.child.id();
    eprintln!(
        "  service pid {pid} at {} (Kafka {}), log {}",
        svc.base,
        svc.bootstrap,
        log.display()
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(a.clients)
        .build()
        .expect("HTTP client");
    let ready = Instant::now() + Duration::from_secs(120);
    loop {
        let up = http
            .get(format!("{}/readyz", svc.base))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if up {
            break;
        }
        assert!(Instant::now() < ready, "service not ready in 120 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let n = a.entries;
    data::load(&svc.bootstrap, &cfg.topics.failures, n, |i| {
        let ev = data::failure(i, &t);
        (ev.workflow_run_id.clone(), data::envelope_bytes(ev))
    });
    let stored_by = Instant::now() + Duration::from_secs(300);
    while entries(&http, &svc.base).await < n {
        assert!(
            Instant::now() < stored_by,
            "{n} entries not stored in 300 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ids = all_ids(&http, &svc.base).await;
    assert_eq!(ids.len() as u64, n, "every stored entry listed");
    // Gets name only entries no action touches (else a 404 after a delete); actions take
    // their entries one by one from the rest, so none is acted on twice.
    let read_ids: Arc<Vec<String>> = Arc::new(ids.iter().step_by(5).cloned().collect());
    let act_ids: Arc<Vec<String>> = Arc::new(
        ids.iter()
            .enumerate()
            .filter(|(i, _)| i % 5 != 0)
            .map(|(_, id)| id.clone())
            .collect(),
    );
    eprintln!(
        "  {n} entries stored and listed; {} clients for {} s",
        a.clients, a.seconds
    );

    // RSS of the service once a second, from before the first client to after the last.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut samples = vec![rss_kb_of(pid)];
            while sampling.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                samples.push(rss_kb_of(pid));
            }
            samples
        })
    };

    let shared = Arc::new(Mutex::new(Shared::default()));
    let next_act = Arc::new(AtomicUsize::new(0));
    let pool_exhausted = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(a.seconds);
    let mut tasks = Vec::new();
    for _ in 0..a.clients {
        let (http, base) = (http.clone(), svc.base.clone());
        let (read_ids, act_ids) = (read_ids.clone(), act_ids.clone());
        let (shared, next_act, pool_exhausted) =
            (shared.clone(), next_act.clone(), pool_exhausted.clone());
        tasks.push(tokio::spawn(async move {
            let mut cursor: Option<String> = None;
            while Instant::now() < deadline {
                let (roll, pick, filter) = {
                    let mut rng = rand::rng();
                    (
                        rng.random_range(0..100u32),
                        rng.random_range(0..usize::MAX),
                        rng.random_range(0..6u32),
                    )
                };
                let get = |pick: usize| {
                    let id = &read_ids[pick % read_ids.len()];
                    ("get", Method::GET, format!("/v2/workflows/dlq/{id}"), None)
                };
                // 60 % list (filtered, following cursors), 30 % get, 10 % an action.
                let (route, method, path, acted) = if roll < 60 {
                    let path = match cursor.take() {
                        Some(c) => format!("/v2/workflows/dlq?count=100&cursor={c}"),
                        None => match filter {
                            0 => "/v2/workflows/dlq?count=100".to_string(),
                            1 => format!("/v2/workflows/dlq?count=100&label=label-{}", pick % 10),
                            2 => format!("/v2/workflows/dlq?count=50&queueName=queue-{}", pick % 4),
                            3 => format!("/v2/workflows/dlq?count=100&flowControlKey=fc-{}", pick % 1000),
                            4 => format!(
                                "/v2/workflows/dlq?count=20&label=label-{}&workflowUrl=https://shop.example.com/api/workflows/checkout-{}",
                                pick % 10,
                                pick % 8
                            ),
                            _ => "/v2/workflows/dlq?count=100&order=latestFirst".to_string(),
                        },
                    };
                    ("list", Method::GET, path, None)
                } else if roll < 90 {
                    get(pick)
                } else {
                    match act_ids.get(next_act.fetch_add(1, Ordering::Relaxed)) {
                        Some(id) => {
                            let (route, method, path) = match pick % 3 {
                                0 => ("restart", Method::POST, format!("/v2/workflows/dlq/restart/{id}")),
                                1 => ("resume", Method::POST, format!("/v2/workflows/dlq/resume/{id}")),
                                _ => ("delete", Method::DELETE, format!("/v2/workflows/dlq/{id}")),
                            };
                            (route, method, path, Some(id.clone()))
                        }
                        None => {
                            pool_exhausted.store(true, Ordering::Relaxed);
                            get(pick)
                        }
                    }
                };
                let sent = Instant::now();
                let (outcome, body) = call(&http, method, &format!("{base}{path}")).await;
                let ms = sent.elapsed().as_secs_f64() * 1000.0;
                if route == "list" && matches!(outcome, Outcome::Ok) {
                    cursor = page_cursor(&body);
                }
                let mut wait = None;
                {
                    let mut s = shared.lock().expect("stats lock");
                    let stats = s.stats.entry(route).or_default();
                    let kept = match &outcome {
                        Outcome::Ok => {
                            stats.ok_ms.push(ms);
                            2
                        }
                        Outcome::Shed(after) => {
                            stats.shed += 1;
                            wait = Some(*after);
                            0
                        }
                        Outcome::Unavailable => {
                            stats.unavailable += 1;
                            1
                        }
                        Outcome::Other(code, _) => {
                            *stats.other.entry(*code).or_default() += 1;
                            1
                        }
                        Outcome::Transport(_) => {
                            stats.transport += 1;
                            1
                        }
                    };
                    match &outcome {
                        Outcome::Other(code, text) => {
                            s.failures.push(format!("{route} {path}: {code} {text}"))
                        }
                        Outcome::Transport(e) => {
                            s.failures.push(format!("{route} {path}: transport: {e}"))
                        }
                        _ => {}
                    }
                    if let Some(id) = acted {
                        s.actions.push((id, route, kept));
                    }
                }
                // A shed caller waits as it is told (`Retry-After`), as a well-behaved one does.
                if let Some(w) = wait {
                    tokio::time::sleep(w).await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("client task");
    }
    let took = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    let rss = sampler.join().expect("sampler");
    let mut shared = std::mem::take(&mut *shared.lock().expect("stats lock"));

    // ---- what was applied ----
    let execs = {
        let (bootstrap, topic) = (svc.bootstrap.clone(), cfg.topics.executions.clone());
        tokio::task::spawn_blocking(move || executions(&bootstrap, &topic))
            .await
            .expect("executions reader")
    };
    let (mut applied_once, mut unknown_applied) = (0u64, 0u64);
    let gone = futures::stream::iter(shared.actions.clone())
        .map(|(id, _, _)| {
            let (http, base) = (http.clone(), svc.base.clone());
            async move {
                let r = http
                    .get(format!("{base}/v2/workflows/dlq/{id}"))
                    .bearer_auth(TOKEN)
                    .send()
                    .await;
                (id, r.map(|r| r.status()))
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(|(id, status)| (id, status.map(|s| s == StatusCode::NOT_FOUND)))
        .collect::<HashMap<_, _>>();
    for (id, route, kept) in &shared.actions {
        let kinds = execs.get(id).map(Vec::as_slice).unwrap_or_default();
        let want = match *route {
            "restart" => Some(pb::workflow_execution::Kind::Restart as i32),
            "resume" => Some(pb::workflow_execution::Kind::Resume as i32),
            _ => None,
        };
        let left = match gone.get(id) {
            Some(Ok(g)) => *g,
            _ => {
                shared.failures.push(format!("{id}: cannot read it back"));
                continue;
            }
        };
        let applied = match want {
            Some(k) => kinds.iter().filter(|x| **x == k).count(),
            None => usize::from(left),
        };
        let wrong = match kept {
            2 => applied != 1 || !left || kinds.len() != usize::from(want.is_some()),
            0 => applied != 0 || left || !kinds.is_empty(),
            _ => {
                unknown_applied += applied as u64;
                applied > 1 || kinds.len() > 1
            }
        };
        if wrong {
            shared.failures.push(format!(
                "{route} {id} (answer {kept}): {applied} applied, executions {kinds:?}, gone {left}"
            ));
        } else if *kept == 2 {
            applied_once += 1;
        }
    }
    let acted: std::collections::HashSet<&String> =
        shared.actions.iter().map(|(id, _, _)| id).collect();
    let strays = execs.keys().filter(|id| !acted.contains(id)).count();
    if strays > 0 {
        shared
            .failures
            .push(format!("{strays} executions for entries no action named"));
    }

    // ---- report ----
    let total: u64 = shared.stats.values().map(RouteStats::requests).sum();
    println!(
        "\n### http-load: {} clients for {:.1} s over {n} entries ({total} requests, {:.0}/s)\n",
        a.clients,
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64()
    );
    println!(
        "| route | requests | 2xx | 503 shed | other 503 | other | p50 ms | p99 ms | max ms | 2xx/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for route in ROUTES {
        let Some(s) = shared.stats.get_mut(route) else {
            continue;
        };
        s.ok_ms.sort_by(f64::total_cmp);
        let ok = s.ok_ms.len();
        println!(
            "| {route} | {} | {ok} | {} | {} | {} | {:.2} | {:.2} | {:.1} | {:.0} |",
            s.requests(),
            s.shed,
            s.unavailable,
            s.other.values().sum::<u64>() + s.transport,
            percentile(&s.ok_ms, 50.0),
            percentile(&s.ok_ms, 99.0),
            s.ok_ms.last().copied().unwrap_or(f64::NAN),
            ok as f64 / took.as_secs_f64()
        );
    }
    let (start, peak, end) = (
        rss.first().copied().unwrap_or(0),
        rss.iter().copied().max().unwrap_or(0),
        rss.last().copied().unwrap_or(0),
    );
    println!(
        "\nservice RSS (sampled every 1 s, {} samples): start {:.0} MB, peak {:.0} MB, end {:.0} MB",
        rss.len(),
        crate::mb(start),
        crate::mb(peak),
        crate::mb(end)
    );
    println!(
        "actions: {} issued, {applied_once} answered 2xx and applied exactly once; \
         {} shed and not applied; {unknown_applied} applied of those answered another 503{}",
        shared.actions.len(),
        shared.actions.iter().filter(|(_, _, k)| *k == 0).count(),
        if pool_exhausted.load(Ordering::Relaxed) {
            " (the pool of entries to act on ran out: raise --entries)"
        } else {
            ""
        }
    );
    drop(svc);
    if !shared.failures.is_empty() {
        println!("\nFAILED: {} problems", shared.failures.len());
        for f in shared.failures.iter().take(30) {
            println!("  {f}");
        }
        std::process::exit(1);
    }
    println!("\nOK: no transport error, every answer 2xx or the documented 503");
}
