//! The Kafka command contract seen from the real Java client (issue 14): `tests/java`, a Maven
//! project with kafka-clients and protobuf-java from Maven Central, run against the real
//! binary on the real broker. It produces failures and commands in Kafka transactions with the
//! default partitioner, reads results, executions and the store `read_committed`, and parses
//! everything the service writes with protobuf-java's strict `JsonFormat.parser()`; see
//! `ContractClient.java` for what it asserts. This side then checks the executions topic again.

use crate::common;

use std::{
    collections::HashSet,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::{decode_all, read_topic, spawn_binary, test_config, wait_ready_at};
use workflow_dlq::{config::OutputEncoding, wire::pb};

const FAILURES: usize = 200;
const RESTARTS: usize = 20;

#[ignore = "needs a real Kafka broker, Java 17 and Maven (Maven Central); .ci/run runs it"]
#[tokio::test]
async fn the_java_client_gets_exact_executions_and_an_answer_for_every_command() {
    real_broker_only!();
    let mut cfg = test_config();
    // JSON, so the Java side parses what the service writes with JsonFormat's strict parser.
    cfg.output_encoding = OutputEncoding::Json;
    let (_service, base) = spawn_binary(&cfg);
    wait_ready_at(&reqwest::Client::new(), &base, Duration::from_secs(60)).await;

    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("java-{}", cfg.instance_id));
    std::fs::create_dir_all(&tmp).expect("temp dir");
    let descriptors = tmp.join("descriptors.bin");
    std::fs::write(&descriptors, workflow_dlq::wire::DESCRIPTOR_SET).expect("descriptor set");
    let pom = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/java/pom.xml");
    let t = &cfg.topics;
    let started = Instant::now();
    let out = Command::new("mvn")
        .args(["-B", "-q", "-Dstyle.color=never", "-f"])
        .arg(&pom)
        .arg(format!(
            "-Dbuild.dir={}",
            Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join("java")
                .display()
        ))
        .args(["compile", "exec:java"])
        .env(
            "BOOTSTRAP",
            cfg.kafka_bootstrap.as_deref().unwrap_or_default(),
        )
        .env("DESCRIPTORS", &descriptors)
        .env("TOPIC_FAILURES", &t.failures)
        .env("TOPIC_STORE", &t.store)
        .env("TOPIC_COMMANDS", &t.commands)
        .env("TOPIC_RESULTS", &t.results)
        .env("TOPIC_EXECUTIONS", &t.executions)
        .env("FAILURES", FAILURES.to_string())
        .env("RESTARTS", RESTARTS.to_string())
        .output()
        .expect("mvn starts (Maven is installed by .ci/run)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the Java contract client failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    println!("java client run: {:.1} s", started.elapsed().as_secs_f64());

    // The same, as this side reads it: exactly one execution per RESTART, nothing for the
    // rejected commands (one of which, lenient, would have restarted all 200).
    let bootstrap = cfg.kafka_bootstrap.clone().unwrap_or_default();
    let execs: Vec<pb::WorkflowExecution> = decode_all(&read_topic(&bootstrap, &t.executions));
    let sources: HashSet<&str> = execs.iter().map(|e| e.source_dlq_id.as_str()).collect();
    assert_eq!(execs.len(), RESTARTS, "exactly the runs asked for");
    assert_eq!(sources.len(), RESTARTS);
    let rejected = read_topic(&bootstrap, &t.rejected);
    assert!(
        rejected.is_empty(),
        "every bad command had a readable id: {rejected:?}"
    );
}
