//! Fencing: an instance frozen (SIGSTOP) past its session timeout while another takes its
//! partitions over, then woken (SIGCONT) still believing it holds them and an open transaction,
//! must not write anything twice nor act on an entry twice. What stops it is Kafka's, not ours:
//! its offsets carry an old group generation (KIP-447), so its transaction cannot commit.

use crate::common;

use std::{
    collections::{HashMap, HashSet},
    process::Command,
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

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

#[ignore = "needs a real Kafka broker (KAFKA_BOOTSTRAP): group generations and transaction fencing are the broker's"]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_frozen_past_its_session_then_woken_writes_nothing_twice_and_acts_on_nothing_twice(
) {
    real_broker_only!();
    let cfg = test_config();
    let bootstrap = cfg.kafka_bootstrap.clone().expect("real broker");
    let (zombie, zombie_base) = spawn_binary(&cfg);
    let (_survivor, base) = spawn_binary(&workflow_dlq::Config {
        instance_id: unique("survivor"),
        ..cfg.clone()
    });
    let http = reqwest::Client::new();
    wait_ready_at(&http, &zombie_base, Duration::from_secs(60)).await;
    wait_ready_at(&http, &base, Duration::from_secs(60)).await;

    // 3,000 failures now; a bulk RESTART of them, paced to last ~15 s (longer with the
    // freezes); 2,000 more failures arriving throughout — so both instances are mid-transaction, on ingest and on commands,
    // when one of them freezes.
    let p = producer(&bootstrap);
    let first = 3_000;
    let later = 2_000;
    let events: Vec<pb::FailureEvent> = (0..first + later).map(failure_event).collect();
    for chunk in events[..first].chunks(500) {
        let sends = chunk
            .iter()
            .map(|ev| publish(&p, &cfg.topics.failures, ev, false));
        futures::future::join_all(sends).await;
    }
    eventually(
        Duration::from_secs(120),
        "the first failures stored",
        || {
            let (http, base) = (http.clone(), base.clone());
            async move { status_entries(&http, &base).await == Some(first as u64) }
        },
    )
    .await;
    let first_ids: HashSet<String> = events[..first]
        .iter()
        .map(|e| dlq_id_for_event(&e.event_id))
        .collect();
    let mut restart = command(
        "zombie-restart",
        Action::Restart,
        Selector::DlqIds(pb::recovery_command::Ids {
            ids: first_ids.iter().cloned().collect(),
        }),
    );
    restart.max_per_second = 100.0;
    send_command(&p, &cfg.topics.commands, &restart).await;
    let late_events = events[first..].to_vec();
    let (p2, topic) = (p.clone(), cfg.topics.failures.clone());
    let publisher = tokio::spawn(async move {
        for chunk in late_events.chunks(25) {
            let sends = chunk.iter().map(|ev| publish(&p2, &topic, ev, false));
            futures::future::join_all(sends).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Freeze one instance past its session timeout (6 s) and its transaction timeout (10 s):
    // the other must carry on without it. Then again, past the session timeout only: it wakes
    // with its transaction still open and its partitions gone — the zombie case.
    for (freeze, must_carry_on) in [
        (Duration::from_secs(20), true),
        (Duration::from_secs(8), false),
    ] {
        signal(zombie.id(), "-STOP");
        let frozen = Instant::now();
        let at_freeze = read_topic(&bootstrap, &cfg.topics.executions).len();
        let entries_at_freeze = status_entries(&http, &base).await.unwrap_or(0);
        tokio::time::sleep(freeze).await;
        let during = read_topic(&bootstrap, &cfg.topics.executions).len();
        let entries_during = status_entries(&http, &base).await.unwrap_or(0);
        signal(zombie.id(), "-CONT");
        eprintln!(
            "frozen {:?}: executions {at_freeze} → {during}, entries {entries_at_freeze} → \
             {entries_during}",
            frozen.elapsed()
        );
        if must_carry_on {
            assert!(
                during > at_freeze || entries_during != entries_at_freeze,
                "the survivor did not carry on while the other instance was frozen"
            );
        }
        tokio::time::sleep(Duration::from_secs(4)).await;
    }

    publisher.await.expect("publisher");
    let (done, _) = final_result(
        &bootstrap,
        &cfg.topics.results,
        "zombie-restart",
        Duration::from_secs(180),
    )
    .await;
    eventually(
        Duration::from_secs(120),
        "the later failures stored",
        || {
            let (http, base) = (http.clone(), base.clone());
            async move { status_entries(&http, &base).await == Some(later as u64) }
        },
    )
    .await;
    // Give the woken instance time to try whatever it held when frozen.
    tokio::time::sleep(Duration::from_secs(5)).await;

    // Store, read_committed: each failure stored once.
    let mut stored: HashMap<Vec<u8>, usize> = HashMap::new();
    for r in read_topic(&bootstrap, &cfg.topics.store) {
        if r.value.is_some() {
            *stored.entry(r.key.expect("keyed")).or_default() += 1;
        }
    }
    assert_eq!(stored.len(), first + later, "every failure stored");
    let twice = stored.values().filter(|n| **n > 1).count();
    assert_eq!(twice, 0, "{twice} failures stored more than once");
    // Executions: each restarted entry republished once, nothing else.
    let execs: Vec<pb::WorkflowExecution> =
        decode_all(&read_topic(&bootstrap, &cfg.topics.executions));
    let mut runs: HashMap<String, usize> = HashMap::new();
    for e in execs {
        *runs.entry(e.source_dlq_id).or_default() += 1;
    }
    let doubled = runs.values().filter(|n| **n > 1).count();
    assert_eq!(doubled, 0, "{doubled} entries acted on twice");
    assert_eq!(runs.len(), first, "every entry of the command acted on");
    assert!(runs.keys().all(|id| first_ids.contains(id)));
    assert_eq!(
        (done.matched, done.succeeded),
        (first as i64, first as i64),
        "{done:?}"
    );
    // The woken instance is still a working member (or rebuilt itself into one).
    wait_ready_at(&http, &zombie_base, Duration::from_secs(60)).await;
}
