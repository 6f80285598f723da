//! Kafka security: the service on a broker that only speaks TLS with SASL/SCRAM-SHA-512
//! (`KAFKA_SECURITY=sasl_ssl deploy/dev/kafka.sh start`: certificates made with the JDK's
//! keytool, a SCRAM user created at format time). Every client the service makes (admin,
//! readers, group consumers, transactional and idempotent producers) gets the same
//! `security.protocol` / `sasl.*` / `ssl.ca.location` through `KafkaConn`; a wrong password
//! or a CA that did not sign the broker's certificate stops `serve` at start-up with an error
//! naming the cause, instead of a retry loop behind a `/healthz` that answers 200.
//!
//! `KAFKA_SECURE_CLIENT_PROPERTIES` names the broker's `client.properties` (librdkafka
//! properties, `bootstrap.servers` included; `kafka.sh client-properties` prints its path).

use std::{
    collections::BTreeMap,
    io::Read,
    process::Stdio,
    time::{Duration, Instant},
};

use rdkafka::{config::ClientConfig, producer::FutureProducer};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use workflow_dlq::{kafka::KafkaProperty, wire::ids::dlq_id_for_event};

use crate::common::{self, failure_event, ChildGuard, TestApp};

const IGNORE: &str = "needs Java (keytool) and the secured broker: .ci/run starts it";

/// The secured broker's client settings: (bootstrap, librdkafka properties without it).
fn secure_client() -> (String, BTreeMap<String, String>) {
    let path = std::env::var("KAFKA_SECURE_CLIENT_PROPERTIES").unwrap_or_else(|_| {
        panic!(
            "this test needs the secured broker: KAFKA_SECURE_CLIENT_PROPERTIES=$(KAFKA_SECURITY=\
             sasl_ssl deploy/dev/kafka.sh client-properties) ({IGNORE})"
        )
    });
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut props: BTreeMap<String, String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let bootstrap = props
        .remove("bootstrap.servers")
        .expect("bootstrap.servers in client.properties");
    for k in [
        "security.protocol",
        "sasl.mechanisms",
        "sasl.username",
        "sasl.password",
        "ssl.ca.location",
    ] {
        assert!(props.contains_key(k), "{k} missing from {path}");
    }
    (bootstrap, props)
}

fn secure_producer(bootstrap: &str, props: &BTreeMap<String, String>) -> FutureProducer {
    let mut c = ClientConfig::new();
    for (k, v) in props {
        c.set(k, v);
    }
    c.set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("partitioner", "murmur2_random")
        .create()
        .expect("SASL_SSL producer")
}

#[tokio::test]
#[ignore = "needs Java (keytool) and the secured broker: .ci/run starts it"]
async fn stores_failures_and_acts_on_a_command_over_sasl_ssl() {
    let (bootstrap, props) = secure_client();
    let mut cfg = common::test_config();
    cfg.kafka_bootstrap = Some(bootstrap.clone());
    cfg.kafka_properties = props
        .iter()
        .map(|(k, v)| (k.clone(), KafkaProperty::new(k, v.as_str())))
        .collect();
    let app = TestApp::spawn(cfg).await;
    // The password is held as a secret: /v1/status shows the settings, not it.
    let status = app.get_json("/v1/status").await.to_string();
    assert!(!status.contains(&props["sasl.password"]), "{status}");

    // Ingest (group consumer + transactional producer) and the store reader.
    let p = secure_producer(&bootstrap, &props);
    let topic = app.topics().failures;
    let events: Vec<_> = (0..5).map(failure_event).collect();
    for ev in &events {
        common::publish(&p, &topic, ev, false).await;
    }
    app.wait_entries(events.len(), Duration::from_secs(30))
        .await;

    // A command: HTTP → command topic → the command pipeline (its own group consumer and
    // transactional producer) → results topic → the ledger's reader → the answer.
    let id = dlq_id_for_event(&events[0].event_id);
    let r = app
        .request(Method::POST, &format!("/v2/workflows/dlq/restart/{id}"))
        .send()
        .await
        .expect("restart");
    let code = r.status();
    let run: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(code, StatusCode::OK, "restart over SASL_SSL: {run}");
    assert!(run["workflowRunId"].as_str().is_some(), "{run}");
    app.wait_entries(events.len() - 1, Duration::from_secs(30))
        .await;
    app.stop().await;
}

/// `serve` with the secured broker's settings but `change` applied, and the connect timeout at
/// `bound`: must exit non-zero within it (plus start-up slack). Returns its stderr.
fn serve_must_fail(change: (&str, &str), bound: Duration) -> String {
    let (bootstrap, mut props) = secure_client();
    props.insert(change.0.to_string(), change.1.to_string());
    let mut cfg = common::test_config();
    cfg.kafka_bootstrap = Some(bootstrap);
    let mut cmd = common::serve_command(&cfg);
    for (k, v) in &props {
        cmd.env(
            format!("DLQ_KAFKA_{}", k.to_ascii_uppercase().replace('.', "_")),
            v,
        );
    }
    let started = Instant::now();
    let mut child = ChildGuard::new(
        cmd.env("DLQ_API_TOKEN", common::TOKEN)
            .env("DLQ_KAFKA_CONNECT_TIMEOUT", format!("{}s", bound.as_secs()))
            .env("DLQ_LOG_FORMAT", "text")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts"),
    );
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let limit = bound + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            started.elapsed() < limit,
            "serve still running after {limit:?}: a retry loop, not a start-up error"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = started.elapsed();
    let stderr = reader.join().expect("stderr reader");
    assert!(!status.success(), "serve exited 0: {stderr}");
    assert!(
        took < limit,
        "took {took:?}, more than the {bound:?} bound: {stderr}"
    );
    eprintln!("serve failed in {took:?} as it should");
    // The last line is the error `main` prints.
    stderr
}

#[test]
#[ignore = "needs Java (keytool) and the secured broker: .ci/run starts it"]
fn a_wrong_password_is_a_start_up_error_naming_authentication() {
    let wrong = "not-the-password-4f1c";
    let stderr = serve_must_fail(("sasl.password", wrong), Duration::from_secs(10));
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("authentication failed") && last.contains("SCRAM-SHA-512"),
        "the error must name the failed SCRAM authentication: {last}"
    );
    assert!(
        !stderr.contains(wrong),
        "the password must never be printed: {stderr}"
    );
}

#[test]
#[ignore = "needs Java (keytool) and the secured broker: .ci/run starts it"]
fn an_untrusted_ca_is_a_start_up_error_naming_the_certificate() {
    // A CA of our own, made with keytool: it did not sign the broker's certificate.
    let dir = std::env::temp_dir().join(common::unique("rogue-ca"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let keytool = |args: &[&str]| {
        let out = std::process::Command::new("keytool")
            .args(["-J-XX:+UseSerialGC", "-J-XX:TieredStopAtLevel=1"])
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("keytool (JDK) on PATH");
        assert!(
            out.status.success(),
            "keytool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    keytool(&[
        "-genkeypair",
        "-alias",
        "ca",
        "-keyalg",
        "RSA",
        "-keysize",
        "2048",
        "-validity",
        "2",
        "-dname",
        "CN=not the broker's CA",
        "-ext",
        "bc:c=ca:true",
        "-keystore",
        "ca.p12",
        "-storetype",
        "PKCS12",
        "-storepass",
        "changeit",
    ]);
    keytool(&[
        "-exportcert",
        "-rfc",
        "-alias",
        "ca",
        "-keystore",
        "ca.p12",
        "-storepass",
        "changeit",
        "-file",
        "ca.pem",
    ]);
    let ca = dir.join("ca.pem");
    let stderr = serve_must_fail(
        ("ssl.ca.location", ca.to_str().expect("utf-8 path")),
        Duration::from_secs(10),
    );
    let _ = std::fs::remove_dir_all(&dir);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("TLS: certificate verify failed"),
        "the error must name the untrusted certificate: {last}"
    );
}
