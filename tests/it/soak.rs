//! Soak tests on the real broker: the service as a child process (the real binary), killed with
//! SIGKILL at random moments while failures pour in and bulk commands run; and several
//! instances in one consumer group, one killed and one added during a bulk command.
//!
//! Afterwards the topics are read read_committed and must show: every failure stored exactly
//! once; every republished entry exactly once on the executions topic, matching an OK outcome
//! of its command; no entry both acted on and still stored (the final store state is the replay
//! of the store topic: last value per key, a tombstone = gone); every entry gone was executed
//! or deleted, never both; every command answered with a final result.
//!
//! Scale: `DLQ_SOAK_FAILURES` (20,000), `DLQ_SOAK_KILLS` (10), `DLQ_SOAK_SEED` (random,
//! printed), `DLQ_SOAK_INSTANCE_FAILURES` (6,000 per round of the instances test).

use crate::common;

use std::{
    collections::{HashMap, HashSet},
    process::Child,
    time::{Duration, Instant},
};

use common::*;
use rand::{rngs::StdRng, Rng, SeedableRng};
use workflow_dlq::wire::{
    ids::dlq_id_for_event,
    pb::{self, item_outcome::Status, recovery_command::Action, recovery_command::Selector},
};

/// The two soak tests each load the machine; they take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn events(from: usize, n: usize) -> Vec<pb::FailureEvent> {
    (from..from + n).map(failure_event).collect()
}

fn bulk(id: &str, action: Action, selector: Selector, rate: f64) -> pb::RecoveryCommand {
    pb::RecoveryCommand {
        max_per_second: rate,
        ..command(id, action, selector)
    }
}

fn url_filter(n: usize) -> Selector {
    Selector::Filter(pb::Filter {
        workflow_url: vec![format!("https://app.example.com/api/workflow/{}", n % 4)],
        ..Default::default()
    })
}

fn ip_filter(n: usize) -> Selector {
    Selector::Filter(pb::Filter {
        caller_ip: vec![format!("10.0.0.{}", n % 5)],
        ..Default::default()
    })
}

fn kill(child: &mut Child) {
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
}

/// What the topics say after the run.
struct Verdict {
    /// Entries still stored (the replay's live keys).
    present: HashSet<String>,
    executed: usize,
    deleted: usize,
    tombstones: usize,
    extra_tombstones: usize,
    store_records: usize,
}

/// Waits until every published failure is on the store topic and every command has its final
/// result, then checks the exactly-once properties.
async fn verify(
    bootstrap: &str,
    topics: &workflow_dlq::config::Topics,
    published: &[String],
    commands: &[String],
    timeout: Duration,
) -> Verdict {
    let started = Instant::now();
    for id in commands {
        let left = timeout.saturating_sub(started.elapsed());
        final_result(bootstrap, &topics.results, id, left).await;
    }
    // Store topic: records per key in offset order (a key lives on one partition).
    let mut by_key: HashMap<String, Vec<(i64, bool)>> = HashMap::new();
    let mut store_records;
    loop {
        by_key.clear();
        let records = read_topic(bootstrap, &topics.store);
        store_records = records.len();
        for r in records {
            let key = String::from_utf8(r.key.expect("keyed store record")).expect("utf-8 key");
            by_key
                .entry(key)
                .or_default()
                .push((r.offset, r.value.is_some()));
        }
        let missing = published
            .iter()
            .filter(|id| !by_key.contains_key(*id))
            .count();
        if missing == 0 {
            break;
        }
        assert!(
            started.elapsed() < timeout,
            "{missing} published failures never reached the store topic"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut present = HashSet::new();
    let mut tombstones = 0;
    let mut extra_tombstones = 0;
    for (key, recs) in by_key.iter_mut() {
        recs.sort();
        let values = recs.iter().filter(|(_, v)| *v).count();
        assert_eq!(values, 1, "{key} stored {values} times: {recs:?}");
        assert!(recs[0].1, "{key}: a tombstone before the entry: {recs:?}");
        let t = recs.len() - 1;
        tombstones += t.min(1);
        extra_tombstones += t.saturating_sub(1);
        if recs.last().is_some_and(|(_, v)| *v) {
            present.insert(key.clone());
        }
    }
    let published_set: HashSet<&String> = published.iter().collect();
    for key in by_key.keys() {
        assert!(
            published_set.contains(key) || key.starts_with("dlq-"),
            "unknown key {key}"
        );
    }

    // Outcomes: every OK item per command (progress results carry the parent's id).
    let results = decode_all::<pb::CommandResult>(&read_topic(bootstrap, &topics.results));
    let mut ok_items: HashMap<(String, String), pb::ItemOutcome> = HashMap::new();
    let mut deleted: HashSet<String> = HashSet::new();
    for r in &results {
        for i in r.items.iter().filter(|i| i.status == Status::Ok as i32) {
            if r.dry_run {
                continue;
            }
            if r.action == Action::Delete as i32 {
                deleted.insert(i.dlq_id.clone());
            }
            ok_items.insert((r.command_id.clone(), i.dlq_id.clone()), i.clone());
        }
    }
    for c in commands {
        let done = results.iter().find(|r| &r.command_id == c && r.done);
        let done = done.expect("final result");
        assert!(
            done.matched >= done.succeeded,
            "{c}: matched {} < succeeded {}",
            done.matched,
            done.succeeded
        );
    }

    // Executions: exactly one per entry, each backed by an OK outcome naming the same run.
    let executions =
        decode_all::<pb::WorkflowExecution>(&read_topic(bootstrap, &topics.executions));
    let mut executed: HashMap<String, usize> = HashMap::new();
    for e in &executions {
        *executed.entry(e.source_dlq_id.clone()).or_default() += 1;
        let item = ok_items
            .get(&(e.command_id.clone(), e.source_dlq_id.clone()))
            .unwrap_or_else(|| {
                panic!(
                    "execution of {} by {} has no OK outcome",
                    e.source_dlq_id, e.command_id
                )
            });
        assert_eq!(
            item.workflow_run_id, e.workflow_run_id,
            "the outcome names the run"
        );
    }
    let twice: Vec<_> = executed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} entries republished more than once, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
    for id in executed.keys() {
        assert!(by_key.contains_key(id), "executed {id} was never stored");
        assert!(
            !present.contains(id),
            "{id} was executed and is still stored"
        );
        assert!(!deleted.contains(id), "{id} was executed and deleted");
    }
    for id in &deleted {
        assert!(
            !present.contains(id),
            "{id} was deleted and is still stored"
        );
    }
    for (id, _) in by_key.iter().filter(|(id, _)| !present.contains(*id)) {
        assert!(
            executed.contains_key(id) || deleted.contains(id),
            "{id} is gone but was neither executed nor deleted"
        );
    }
    Verdict {
        present,
        executed: executed.len(),
        deleted: deleted.len(),
        tombstones,
        extra_tombstones,
        store_records,
    }
}

/// Waits until every published failure is on the store topic; returns how many are live there.
async fn wait_stored(
    bootstrap: &str,
    topics: &workflow_dlq::config::Topics,
    published: &[String],
    timeout: Duration,
) -> usize {
    let started = Instant::now();
    loop {
        let mut last: HashMap<String, (i64, bool)> = HashMap::new();
        for r in read_topic(bootstrap, &topics.store) {
            let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).to_string();
            let e = last.entry(key).or_insert((r.offset, r.value.is_some()));
            if r.offset >= e.0 {
                *e = (r.offset, r.value.is_some());
            }
        }
        if published.iter().all(|id| last.contains_key(id)) {
            return last.values().filter(|(_, live)| *live).count();
        }
        assert!(
            started.elapsed() < timeout,
            "ingest did not finish in {timeout:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn entries_of(http: &reqwest::Client, base: &str) -> Option<u64> {
    status_entries(http, base).await
}

#[ignore = "needs a real Kafka broker (KAFKA_BOOTSTRAP); .ci/run runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_loop_kill9_during_ingest_and_bulk_commands_nothing_lost_nothing_run_twice() {
    real_broker_only!();
    let _serial = SERIAL.lock().await;
    let failures: usize = env_num("DLQ_SOAK_FAILURES", 20_000);
    let kills: usize = env_num("DLQ_SOAK_KILLS", 10);
    let seed: u64 = env_num(
        "DLQ_SOAK_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs()),
    );
    eprintln!("crash loop: {failures} failures, {kills} kills, DLQ_SOAK_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let cfg = test_config();
    let bootstrap = cfg.kafka_bootstrap.clone().expect("real broker");
    let topics = cfg.topics.clone();
    let http = reqwest::Client::new();

    let evs = events(0, failures);
    let published: Vec<String> = evs.iter().map(|e| dlq_id_for_event(&e.event_id)).collect();
    let p = idempotent_producer(&bootstrap);
    // Topics exist once the first instance is up: start it before publishing.
    let (mut child, mut base) = spawn_binary(&cfg);
    common::wait_ready_at(&http, &base, Duration::from_secs(60)).await;
    let publisher = spawn_publisher(
        p.clone(),
        topics.failures.clone(),
        evs,
        Duration::from_secs(12 * kills as u64),
    );

    let mut commands = Vec::new();
    let mut ready_at_kill = 0;
    for k in 0..kills {
        // A bulk command each round, from filters and id lists over what was published.
        let id = format!("soak-{k}");
        let rate = 500.0;
        let cmd = match k % 4 {
            0 => bulk(&id, Action::Restart, url_filter(k), rate),
            1 => bulk(&id, Action::Delete, ip_filter(k), rate),
            2 => {
                let upto = published.len().min((k + 1) * failures / kills.max(1));
                let picked: Vec<&str> = (0..200)
                    .map(|_| published[rng.random_range(0..upto)].as_str())
                    .collect();
                bulk(&id, Action::Resume, ids(&picked), rate)
            }
            _ => bulk(&id, Action::Restart, ip_filter(k + 2), rate),
        };
        send_command(&p, &topics.commands, &cmd).await;
        commands.push(id);
        // Kill at a random moment: a quarter of the time while it starts (catching up, joining
        // the groups); otherwise once it works again (its caught-up view changes: ingest or
        // commands are writing), a random 0–3 s later.
        let spawned = Instant::now();
        let early = rng.random_bool(0.25);
        if early {
            tokio::time::sleep(Duration::from_millis(rng.random_range(500..5_000))).await;
        } else {
            common::wait_ready_at(&http, &base, Duration::from_secs(120)).await;
            let at_ready = entries_of(&http, &base).await;
            let working = Instant::now();
            while entries_of(&http, &base).await == at_ready
                && working.elapsed() < Duration::from_secs(30)
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..3_000))).await;
        }
        let after = spawned.elapsed();
        let ready = http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        ready_at_kill += usize::from(ready);
        let entries = entries_of(&http, &base).await;
        kill(&mut child);
        eprintln!(
            "kill {}/{kills}: {after:?} after start ({}; ready: {ready}, view: {entries:?} \
             entries), t={:?}",
            k + 1,
            if early {
                "while starting"
            } else {
                "while working"
            },
            started.elapsed()
        );
        (child, base) = spawn_binary(&cfg);
    }
    tokio::time::timeout(Duration::from_secs(300), publisher)
        .await
        .expect("publisher done")
        .expect("publisher");
    common::wait_ready_at(&http, &base, Duration::from_secs(120)).await;
    // Once the commands so far are done, everything is ingested and in the view, a last
    // RESTART of all must leave nothing.
    for id in &commands {
        final_result(&bootstrap, &topics.results, id, Duration::from_secs(300)).await;
    }
    let stored = wait_stored(&bootstrap, &topics, &published, Duration::from_secs(300)).await;
    eventually(
        Duration::from_secs(120),
        "the view holds every stored entry",
        || {
            let (http, base) = (http.clone(), base.clone());
            async move { entries_of(&http, &base).await == Some(stored as u64) }
        },
    )
    .await;
    let final_all = "soak-final-all".to_string();
    send_command(
        &p,
        &topics.commands,
        &bulk(&final_all, Action::Restart, Selector::All(true), 2_000.0),
    )
    .await;
    commands.push(final_all);
    let kills_done = started.elapsed();
    let v = verify(
        &bootstrap,
        &topics,
        &published,
        &commands,
        Duration::from_secs(600),
    )
    .await;
    assert!(
        v.present.is_empty(),
        "{} entries survived the final RESTART of all",
        v.present.len()
    );
    let want = v.present.len() as u64;
    eventually(
        Duration::from_secs(60),
        "the view equals the replay",
        || {
            let (http, base) = (http.clone(), base.clone());
            async move { entries_of(&http, &base).await == Some(want) }
        },
    )
    .await;
    kill(&mut child);
    eprintln!(
        "crash loop held: {failures} failures, {kills} kill -9 ({ready_at_kill} while ready), \
         {} commands; {} executed once each, {} deleted, {} still stored (= the view), \
         {} tombstones (+{} repeated), {} store records; kills done at {kills_done:?}, \
         verified at {:?} (DLQ_SOAK_SEED={seed})",
        commands.len(),
        v.executed,
        v.deleted,
        v.present.len(),
        v.tombstones,
        v.extra_tombstones,
        v.store_records,
        started.elapsed()
    );
}

/// Every id a live instance lists (paging through `GET /v2/workflows/dlq`).
async fn listed(http: &reqwest::Client, base: &str) -> Option<HashSet<String>> {
    let mut ids = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/v2/workflows/dlq?count=100&source=workflow");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let r = http.get(&url).bearer_auth(TOKEN).send().await.ok()?;
        if !r.status().is_success() {
            return None;
        }
        let page: serde_json::Value = r.json().await.ok()?;
        for m in page["messages"].as_array()? {
            ids.insert(m["dlqId"].as_str()?.to_string());
        }
        match page["cursor"].as_str() {
            Some(c) if !c.is_empty() => cursor = Some(c.to_string()),
            _ => return Some(ids),
        }
    }
}

struct Instance {
    name: String,
    child: common::ChildGuard,
    base: String,
}

fn start_instance(cfg: &workflow_dlq::Config, name: &str) -> Instance {
    let cfg = workflow_dlq::Config {
        instance_id: format!("{}-{name}", cfg.instance_id),
        ..cfg.clone()
    };
    let (child, base) = spawn_binary(&cfg);
    Instance {
        name: name.to_string(),
        child,
        base,
    }
}

#[ignore = "needs a real Kafka broker (KAFKA_BOOTSTRAP); .ci/run runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_then_three_instances_one_killed_one_added_during_bulk_commands_exactly_once() {
    real_broker_only!();
    let _serial = SERIAL.lock().await;
    let per_round: usize = env_num("DLQ_SOAK_INSTANCE_FAILURES", 6_000);
    let started = Instant::now();
    let cfg = test_config();
    let bootstrap = cfg.kafka_bootstrap.clone().expect("real broker");
    let topics = cfg.topics.clone();
    let http = reqwest::Client::new();
    let p = idempotent_producer(&bootstrap);

    let mut live = vec![start_instance(&cfg, "a"), start_instance(&cfg, "b")];
    for i in &live {
        common::wait_ready_at(&http, &i.base, Duration::from_secs(60)).await;
    }
    let mut published = Vec::new();
    let mut commands = Vec::new();
    let rounds: [(&str, Action, Selector, &str); 2] = [
        (
            "two instances",
            Action::Restart,
            Selector::Filter(pb::Filter {
                workflow_url: (0..2)
                    .map(|n| format!("https://app.example.com/api/workflow/{n}"))
                    .collect(),
                ..Default::default()
            }),
            "c",
        ),
        (
            "three instances",
            Action::Resume,
            Selector::Filter(pb::Filter {
                caller_ip: vec!["10.0.0.0".into(), "10.0.0.1".into()],
                ..Default::default()
            }),
            "e",
        ),
    ];
    for (round, (label, action, selector, newcomer)) in rounds.into_iter().enumerate() {
        if round == 1 {
            // A third instance joins before the round.
            let d = start_instance(&cfg, "d");
            common::wait_ready_at(&http, &d.base, Duration::from_secs(60)).await;
            live.push(d);
        }
        let evs = events(round * 1_000_000, per_round);
        published.extend(evs.iter().map(|e| dlq_id_for_event(&e.event_id)));
        spawn_publisher(
            p.clone(),
            topics.failures.clone(),
            evs,
            Duration::from_secs(2),
        )
        .await
        .expect("published");
        let stored = wait_stored(&bootstrap, &topics, &published, Duration::from_secs(180)).await;
        for i in &live {
            eventually(Duration::from_secs(120), "every view caught up", || {
                let (http, base) = (http.clone(), i.base.clone());
                async move { entries_of(&http, &base).await == Some(stored as u64) }
            })
            .await;
        }
        let id = format!("instances-{round}");
        send_command(&p, &topics.commands, &bulk(&id, action, selector, 600.0)).await;
        commands.push(id.clone());
        // Mid fan-out: kill the last instance, add a new one.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut victim = live.pop().expect("an instance");
        kill(&mut victim.child);
        let added = start_instance(&cfg, newcomer);
        eprintln!(
            "{label}: 2 s into the bulk command, killed {} and added {} (t={:?})",
            victim.name,
            added.name,
            started.elapsed()
        );
        live.push(added);
        let (done, _) =
            final_result(&bootstrap, &topics.results, &id, Duration::from_secs(300)).await;
        let v = verify(
            &bootstrap,
            &topics,
            &published,
            &commands,
            Duration::from_secs(300),
        )
        .await;
        assert_eq!(done.matched, done.succeeded, "{done:?}");
        // Every instance lists the same entries: the replay's.
        for i in &live {
            let want = v.present.clone();
            eventually(
                Duration::from_secs(120),
                &format!("instance {} lists the stored entries", i.name),
                || {
                    let (http, base, want) = (http.clone(), i.base.clone(), want.clone());
                    async move { listed(&http, &base).await == Some(want) }
                },
            )
            .await;
        }
        eprintln!(
            "{label}: held at {:?} — matched {} = succeeded {}; {} executed once each, {} \
             deleted, {} still stored and listed identically by {} instances",
            started.elapsed(),
            done.matched,
            done.succeeded,
            v.executed,
            v.deleted,
            v.present.len(),
            live.len()
        );
    }
    for mut i in live {
        kill(&mut i.child);
    }
}
