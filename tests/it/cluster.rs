//! A real 3-node Kafka cluster (`deploy/dev/kafka-cluster.sh`: replication factor 3,
//! `min.insync.replicas` 2): nodes are killed and restarted under the service while it ingests
//! and while it runs a bulk RESTART. Nothing may stall, be lost or happen twice.
//!
//! Runs only when `.ci/run` (or you) says the cluster may be disturbed:
//! `KAFKA_CLUSTER_BOOTSTRAP` set and `DLQ_TEST_KAFKA_CLUSTER_CONTROL=1`; the script is driven
//! with the environment this process inherits (`KAFKA_CLUSTER_PORT`, `KAFKA_CLUSTER_DIR`).
//! `DLQ_CLUSTER_ROUNDS` (1) repeats the whole scenario; `DLQ_CLUSTER_FAILURES` (6,000) sizes it.

use crate::common;

use std::{
    collections::{HashMap, HashSet},
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::*;
use workflow_dlq::wire::{
    ids::dlq_id_for_event,
    pb::{
        self,
        recovery_command::{Action, Selector},
    },
};

fn cluster_bootstrap() -> String {
    let b = std::env::var("KAFKA_CLUSTER_BOOTSTRAP").unwrap_or_default();
    assert!(
        !b.trim().is_empty()
            && std::env::var("DLQ_TEST_KAFKA_CLUSTER_CONTROL").as_deref() == Ok("1"),
        "set KAFKA_CLUSTER_BOOTSTRAP and DLQ_TEST_KAFKA_CLUSTER_CONTROL=1 (as .ci/run does) to \
         let this test kill and restart the nodes of deploy/dev/kafka-cluster.sh"
    );
    b
}

/// Runs `kafka-cluster.sh ARGS` and returns what it printed.
fn cluster(args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/dev/kafka-cluster.sh");
    let started = Instant::now();
    let out = Command::new(script)
        .args(args)
        .output()
        .expect("kafka-cluster.sh runs");
    assert!(
        out.status.success(),
        "kafka-cluster.sh {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("kafka-cluster.sh {args:?} took {:?}", started.elapsed());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn cluster_async(args: &'static [&'static str]) -> String {
    tokio::task::spawn_blocking(move || cluster(args))
        .await
        .expect("kafka-cluster.sh task")
}

/// The node leading (or coordinating) what `args` asks about, retried while the cluster is
/// moving leadership around.
async fn node_of(args: Vec<String>) -> String {
    let started = Instant::now();
    loop {
        let a = args.clone();
        let node = tokio::task::spawn_blocking(move || {
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            cluster(&a)
        })
        .await
        .expect("task");
        if matches!(node.as_str(), "1" | "2" | "3") {
            return node;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no node answers {args:?} (got {node:?})"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Kills node `node` with SIGKILL, waits `down`, starts it again.
async fn crash(node: &str, down: Duration) {
    let n = node.to_string();
    tokio::task::spawn_blocking(move || cluster(&["kill", &n]))
        .await
        .expect("task");
    tokio::time::sleep(down).await;
    let n = node.to_string();
    tokio::task::spawn_blocking(move || cluster(&["start-node", &n]))
        .await
        .expect("task");
}

/// Each change of `/readyz`: time since watching began, ready, the reasons when not.
type ReadinessLog = Arc<Mutex<Vec<(Duration, bool, String)>>>;

/// Every change of `/readyz`: when it was unready and why.
fn watch_readiness(app: &TestApp) -> (ReadinessLog, tokio::task::JoinHandle<()>) {
    let seen = ReadinessLog::default();
    let (http, url, log) = (
        app.http.clone(),
        format!("{}/readyz", app.base),
        seen.clone(),
    );
    let started = Instant::now();
    let task = tokio::spawn(async move {
        loop {
            let (ok, body) = match http.get(&url).send().await {
                Ok(r) => (r.status().is_success(), r.text().await.unwrap_or_default()),
                Err(e) => (false, e.to_string()),
            };
            let reasons = if ok { String::new() } else { body };
            {
                let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                if log.last().map(|(_, o, r)| (*o, r.as_str())) != Some((ok, reasons.as_str())) {
                    log.push((started.elapsed(), ok, reasons));
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    (seen, task)
}

#[ignore = "needs the 3-node cluster (KAFKA_CLUSTER_BOOTSTRAP, DLQ_TEST_KAFKA_CLUSTER_CONTROL=1); .ci/run starts it and runs this"]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_and_coordinator_kills_and_a_rolling_restart_during_ingest_and_bulk_restart_lose_and_double_nothing(
) {
    let bootstrap = cluster_bootstrap();
    let rounds: usize = env_num("DLQ_CLUSTER_ROUNDS", 1);
    let total: usize = env_num("DLQ_CLUSTER_FAILURES", 6_000);
    for round in 1..=rounds {
        eprintln!("---- round {round} of {rounds} ----");
        one_round(&bootstrap, total).await;
    }
}

async fn one_round(bootstrap: &str, total: usize) {
    let app = TestApp::spawn(workflow_dlq::Config {
        kafka_bootstrap: Some(bootstrap.to_string()),
        replication_factor: 3,
        ..test_config()
    })
    .await;
    let topics = app.topics();
    let cfg = app.service.cfg.clone();
    let (readiness, watcher) = watch_readiness(&app);

    // Continuous ingest for ~45 s from an idempotent producer (acks=all), across the kills.
    let events: Vec<pb::FailureEvent> = (0..total).map(failure_event).collect();
    let ids: HashSet<String> = events
        .iter()
        .map(|e| dlq_id_for_event(&e.event_id))
        .collect();
    let publish_for = Duration::from_secs(45);
    let publisher = spawn_publisher(
        idempotent_producer(bootstrap),
        topics.failures.clone(),
        events,
        publish_for,
    );
    eventually(Duration::from_secs(60), "ingest under way", || {
        let view = app.service.view.clone();
        async move { view.len() >= total / 10 }
    })
    .await;

    // 1. The leader of the store topic's partition 0.
    let leader = node_of(vec!["leader".into(), topics.store.clone(), "0".into()]).await;
    eprintln!(
        "killing node {leader}, leader of {} partition 0",
        topics.store
    );
    crash(&leader, Duration::from_secs(8)).await;
    // 2. The transaction coordinator of the ingest producer.
    let txn_id = format!("{}-ingest-{}", cfg.group_id, cfg.instance_id);
    let coordinator = node_of(vec!["coordinator".into(), txn_id.clone()]).await;
    eprintln!("killing node {coordinator}, transaction coordinator of {txn_id}");
    crash(&coordinator, Duration::from_secs(8)).await;

    let chaos_over = Instant::now();
    tokio::time::timeout(Duration::from_secs(300), publisher)
        .await
        .expect("publisher finishes")
        .expect("publisher");
    app.wait_entries(total, Duration::from_secs(180)).await;
    eprintln!(
        "all {total} stored {:?} after the second node came back",
        chaos_over.elapsed()
    );

    // 3. A bulk RESTART of every entry, and a rolling restart of all three nodes under it.
    let mut all = command("cluster-restart-all", Action::Restart, Selector::All(true));
    // Paced to last about as long as the rolling restart (~60 s), so every node restarts under it.
    all.max_per_second = 100.0;
    let p = producer(bootstrap);
    send_command(&p, &topics.commands, &all).await;
    let executions_topic = topics.executions.clone();
    let b = bootstrap.to_string();
    eventually(
        Duration::from_secs(60),
        "the bulk restart under way",
        || {
            let n = read_topic(&b, &executions_topic).len();
            async move { n >= total / 10 }
        },
    )
    .await;
    cluster_async(&["rolling-restart"]).await;
    let rolled = Instant::now();
    let (done, _) = final_result(
        bootstrap,
        &topics.results,
        "cluster-restart-all",
        Duration::from_secs(300),
    )
    .await;
    eprintln!(
        "bulk restart finished {:?} after the rolling restart: {done:?}",
        rolled.elapsed()
    );
    app.wait_entries(0, Duration::from_secs(120)).await;
    watcher.abort();

    // The store topic, read_committed: each failure stored once, then deleted once.
    let mut live: HashMap<String, usize> = HashMap::new();
    let mut last_live: HashMap<String, bool> = HashMap::new();
    for r in read_topic(bootstrap, &topics.store) {
        let key = String::from_utf8(r.key.expect("keyed")).expect("utf-8 key");
        if r.value.is_some() {
            *live.entry(key.clone()).or_default() += 1;
        }
        last_live.insert(key, r.value.is_some());
    }
    let missing = ids.iter().filter(|id| !live.contains_key(*id)).count();
    assert_eq!(missing, 0, "{missing} failures never stored");
    let twice: Vec<_> = live.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    assert!(last_live.values().all(|l| !l), "an entry left in the store");

    // The executions topic: each entry restarted exactly once.
    let execs: Vec<pb::WorkflowExecution> = decode_all(&read_topic(bootstrap, &topics.executions));
    let mut runs: HashMap<&str, usize> = HashMap::new();
    for e in &execs {
        *runs.entry(e.source_dlq_id.as_str()).or_default() += 1;
    }
    let doubled: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(doubled.is_empty(), "runs republished twice: {doubled:?}");
    assert_eq!(runs.len(), total, "every entry restarted");
    assert!(runs.keys().all(|id| ids.contains(*id)));
    assert_eq!(
        (done.matched, done.succeeded),
        (total as i64, total as i64),
        "{done:?}"
    );

    let unready: Vec<_> = readiness
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(t, ok, why)| {
            format!(
                "{:>6.1}s {} {why}",
                t.as_secs_f64(),
                if *ok { "ready" } else { "NOT READY" }
            )
        })
        .collect();
    eprintln!("/readyz over the round:\n{}", unready.join("\n"));
    let restarts: Vec<String> = app
        .metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("dlq_worker_restarts_total") && !l.ends_with(" 0"))
        .map(str::to_string)
        .collect();
    eprintln!("worker restarts: {restarts:?}");
    app.stop().await;
}
