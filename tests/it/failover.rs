//! Failover: one of two instances is killed with SIGKILL while failures arrive and while it runs
//! a bulk command. How long until the survivor stores new failures on every partition, and how
//! long until the bulk command moves again — and every entry still acted on exactly once.
//!
//! The times are printed (median and max over `DLQ_FAILOVER_KILLS` kills, 3 by default) for
//! RELIABILITY.md; the test asserts only what must hold (speed belongs to measurements, not to
//! pass/fail): the survivor takes over at all, and nothing is lost or doubled.

use crate::common;

use std::{
    collections::HashMap,
    process::Command,
    time::{Duration, Instant},
};

use common::*;
use workflow_dlq::{
    kafka::partitioner::partition_for,
    wire::{
        ids::dlq_id_for_event,
        pb::{
            self,
            recovery_command::{Action, Selector},
        },
    },
};

/// The client id of the member of `group` assigned `partition` of `topic`, from Kafka's own
/// group tool.
fn owner(bootstrap: &str, group: &str, topic: &str, partition: i32) -> Option<String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/dev/kafka.sh");
    let out = Command::new(script)
        .args([
            "tool",
            "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
            "--bootstrap-server",
            bootstrap,
            "--describe",
            "--group",
            group,
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        (cols.len() >= 9 && cols[1] == topic && cols[2] == partition.to_string())
            .then(|| cols[8].to_string())
            .filter(|c| c != "-")
    })
}

struct Instance {
    child: ChildGuard,
    base: String,
    id: String,
}

fn start(cfg: &workflow_dlq::Config, name: &str) -> Instance {
    let id = unique(name);
    let (child, base) = spawn_binary(&workflow_dlq::Config {
        instance_id: id.clone(),
        ..cfg.clone()
    });
    Instance { child, base, id }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[ignore = "needs a real Kafka broker (KAFKA_BOOTSTRAP): group sessions and transaction aborts are the broker's"]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_kill_9_the_survivor_takes_over_ingest_and_a_running_bulk_command_exactly_once() {
    real_broker_only!();
    let kills: usize = env_num("DLQ_FAILOVER_KILLS", 3);
    let cfg = test_config();
    let bootstrap = cfg.kafka_bootstrap.clone().expect("real broker");
    let http = reqwest::Client::new();
    let p = producer(&bootstrap);
    let mut instances = vec![start(&cfg, "one"), start(&cfg, "two")];
    let (mut ingest_times, mut bulk_times) = (Vec::new(), Vec::new());
    let per_round = 400;
    let mut stored_so_far = 0u64;

    for round in 0..kills {
        for i in &instances {
            wait_ready_at(&http, &i.base, Duration::from_secs(60)).await;
        }
        // Failures of this round, then a bulk RESTART of them paced to last ~10 s.
        let events: Vec<pb::FailureEvent> = (0..per_round)
            .map(|n| failure_event(round * 100_000 + n))
            .collect();
        for chunk in events.chunks(200) {
            let sends = chunk
                .iter()
                .map(|ev| publish(&p, &cfg.topics.failures, ev, false));
            futures::future::join_all(sends).await;
        }
        stored_so_far += per_round as u64;
        let base = instances[0].base.clone();
        eventually(
            Duration::from_secs(60),
            "the round's failures stored",
            || {
                let (http, base) = (http.clone(), base.clone());
                async move { status_entries(&http, &base).await == Some(stored_so_far) }
            },
        )
        .await;
        let ids: Vec<String> = events
            .iter()
            .map(|e| dlq_id_for_event(&e.event_id))
            .collect();
        let command_id = format!("failover-{round}");
        let mut restart = command(
            &command_id,
            Action::Restart,
            Selector::DlqIds(pb::recovery_command::Ids { ids: ids.clone() }),
        );
        restart.max_per_second = 40.0;
        send_command(&p, &cfg.topics.commands, &restart).await;
        let executions_of = |bootstrap: String, topic: String, ids: Vec<String>| {
            let execs: Vec<pb::WorkflowExecution> = decode_all(&read_topic(&bootstrap, &topic));
            execs
                .into_iter()
                .filter(|e| ids.contains(&e.source_dlq_id))
                .count()
        };
        let (b, t) = (bootstrap.clone(), cfg.topics.executions.clone());
        eventually(
            Duration::from_secs(60),
            "the bulk command under way",
            || {
                let n = executions_of(b.clone(), t.clone(), ids.clone());
                async move { n >= 40 }
            },
        )
        .await;

        // Kill the instance running the bulk command.
        let partition = partition_for(command_id.as_bytes(), cfg.partitions);
        let group = format!("{}.commands", cfg.group_id);
        let holder = owner(&bootstrap, &group, &cfg.topics.commands, partition)
            .expect("an instance holds the command's partition");
        let victim = instances
            .iter()
            .position(|i| holder == format!("workflow-dlq-{}", i.id))
            .expect("the holder is one of ours");
        let mut dead = instances.remove(victim);
        dead.child.kill().expect("SIGKILL");
        let killed = Instant::now();
        let _ = dead.child.wait();
        let at_kill = executions_of(bootstrap.clone(), t.clone(), ids.clone());
        let survivor = instances[0].base.clone();

        // A probe failure on every partition: stored by the survivor = ingest taken over.
        let probes: Vec<String> = (0..cfg.partitions)
            .map(|partition| {
                let ev = failure_event(round * 100_000 + 90_000 + partition as usize);
                (dlq_id_for_event(&ev.event_id), ev, partition)
            })
            .map(|(id, ev, partition)| {
                let (p, topic) = (p.clone(), cfg.topics.failures.clone());
                tokio::spawn(async move {
                    let env = prost::Message::encode_to_vec(&envelope(ev));
                    publish_raw(&p, &topic, None, &env, None, Some(partition)).await;
                });
                id
            })
            .collect();
        let (mut ingest_took, mut bulk_took) = (None, None);
        while ingest_took.is_none() || bulk_took.is_none() {
            assert!(
                killed.elapsed() < Duration::from_secs(120),
                "no takeover 120 s after the kill (ingest {ingest_took:?}, bulk {bulk_took:?}; \
                 {at_kill} of {per_round} acted on at the kill)"
            );
            if ingest_took.is_none() {
                let mut all = true;
                for id in &probes {
                    let r = http
                        .get(format!("{survivor}/v2/workflows/dlq/{id}"))
                        .bearer_auth(TOKEN)
                        .send()
                        .await;
                    all &= r.is_ok_and(|r| r.status().is_success());
                }
                if all {
                    ingest_took = Some(killed.elapsed());
                }
            }
            if bulk_took.is_none()
                && executions_of(bootstrap.clone(), t.clone(), ids.clone()) > at_kill
            {
                bulk_took = Some(killed.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (ingest_took, bulk_took) = (
            ingest_took.unwrap_or_default(),
            bulk_took.unwrap_or_default(),
        );
        eprintln!(
            "kill {}: ingest taken over after {ingest_took:?}, bulk command moving again after \
             {bulk_took:?} ({at_kill} of {per_round} acted on at the kill)",
            round + 1
        );
        ingest_times.push(ingest_took);
        bulk_times.push(bulk_took);
        stored_so_far += probes.len() as u64;

        // Exactly once: the command finishes, each entry acted on once.
        let (done, _) = final_result(
            &bootstrap,
            &cfg.topics.results,
            &command_id,
            Duration::from_secs(120),
        )
        .await;
        assert_eq!(
            (done.matched, done.succeeded),
            (per_round as i64, per_round as i64),
            "{done:?}"
        );
        let execs: Vec<pb::WorkflowExecution> =
            decode_all(&read_topic(&bootstrap, &cfg.topics.executions));
        let mut runs: HashMap<&str, usize> = HashMap::new();
        for e in &execs {
            *runs.entry(e.source_dlq_id.as_str()).or_default() += 1;
        }
        assert!(
            ids.iter().all(|id| runs.get(id.as_str()) == Some(&1)),
            "an entry of round {round} acted on other than once"
        );
        stored_so_far -= per_round as u64;
        // A fresh instance (a new id: a pure crash failover every time, not a restart).
        instances.push(start(&cfg, "next"));
    }
    eprintln!(
        "failover over {kills} kills: ingest median {:?} max {:?}; bulk median {:?} max {:?}",
        median(&mut ingest_times),
        ingest_times.iter().max().copied().unwrap_or_default(),
        median(&mut bulk_times),
        bulk_times.iter().max().copied().unwrap_or_default(),
    );
}
