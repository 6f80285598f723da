//! The service skeleton: it comes up on its broker, creates its topics, answers status with a
//! token and refuses without one, says clearly when Kafka is down, and stops on SIGTERM.

use crate::common;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{test_config, TestApp, TOKEN};
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    ClientConfig,
};
use workflow_dlq::Service;

#[tokio::test]
async fn status_reports_broker_topics_and_entries_to_a_bearer_of_the_token() {
    let app = TestApp::spawn(test_config()).await;
    let status = app.get_json("/v1/status").await;
    assert_eq!(status["kafka"]["bootstrap"], app.bootstrap());
    assert_eq!(status["kafka"]["embedded"], !common::on_real_broker());
    assert_eq!(status["topics"]["store"], app.topics().store);
    assert_eq!(status["topics"]["failures"], app.topics().failures);
    assert_eq!(status["entries"], 0);
    assert_eq!(status["ready"], true);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    app.stop().await;
}

#[tokio::test]
async fn api_routes_refuse_a_missing_or_wrong_token_but_health_is_open() {
    let app = TestApp::spawn(test_config()).await;
    let url = |p: &str| format!("{}{p}", app.base);
    let no_token = app.http.get(url("/v1/status")).send().await.unwrap();
    assert_eq!(no_token.status(), 401);
    let body: serde_json::Value = no_token.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("bearer token"));

    let mut one_byte_off = TOKEN.to_string().into_bytes();
    let last = one_byte_off.len() - 1;
    one_byte_off[last] ^= 1;
    let wrong = String::from_utf8(one_byte_off).unwrap();
    for token in [wrong.as_str(), "x", ""] {
        let r = app
            .http
            .get(url("/v1/status"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "token {token:?}");
    }
    for open in ["/healthz", "/readyz", "/metrics"] {
        let r = app.http.get(url(open)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{open}");
    }
    app.stop().await;
}

#[tokio::test]
async fn every_topic_of_the_design_is_created_and_the_store_is_compacted() {
    let app = TestApp::spawn(test_config()).await;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", app.bootstrap())
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    let names: Vec<&str> = md.topics().iter().map(|t| t.name()).collect();
    for (_, topic) in app.topics().all() {
        assert!(names.contains(&topic), "{topic} missing from {names:?}");
    }
    if common::on_real_broker() {
        use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
        let admin: AdminClient<_> = ClientConfig::new()
            .set("bootstrap.servers", app.bootstrap())
            .create()
            .unwrap();
        let store = app.topics().store;
        let r = admin
            .describe_configs(&[ResourceSpecifier::Topic(&store)], &AdminOptions::new())
            .await
            .unwrap();
        let resource = r.into_iter().next().unwrap().unwrap();
        let get = |k: &str| resource.get(k).and_then(|e| e.value.clone());
        assert_eq!(get("cleanup.policy").as_deref(), Some("compact"));
        assert_eq!(get("retention.ms").as_deref(), Some("-1"));
    }
    app.stop().await;
}

#[tokio::test]
async fn a_broker_that_is_down_is_named_in_a_bounded_time_and_readyz_says_503() {
    let mut cfg = test_config();
    cfg.kafka_bootstrap = Some("127.0.0.1:1".into());
    cfg.kafka_connect_timeout = Duration::from_secs(3);
    let started = Instant::now();
    let mut service = Service::start(cfg).await.expect("HTTP starts first");
    let ready = reqwest::get(format!("http://{}/readyz", service.http_addr))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("Kafka is not reachable"));

    let err = tokio::time::timeout(Duration::from_secs(30), service.wait())
        .await
        .expect("gives up in a bounded time")
        .expect_err("cannot run without Kafka");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let _ = service.stop().await;
}

/// The binary itself: `serve` with no bootstrap prints the embedded broker's address and the
/// banner, creates the six topics there, and exits cleanly within its bound on SIGTERM.
#[test]
fn serve_on_the_embedded_broker_prints_its_address_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_workflow-dlq"))
        .args([
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--shutdown-grace",
            "5s",
        ])
        .env_remove("DLQ_KAFKA_BOOTSTRAP")
        .env("DLQ_API_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .strip_prefix("embedded Kafka broker listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .to_string();
    let banner: Vec<String> = lines.by_ref().take(6).map(|l| l.unwrap()).collect();
    let banner = banner.join("\n");
    assert!(banner.contains("IN-MEMORY"), "{banner}");
    assert!(banner.contains("exactly-once is NOT provided"), "{banner}");
    assert!(banner.contains("60 MiB"), "{banner}");

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .create()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let md = consumer
            .fetch_metadata(None, Duration::from_secs(5))
            .unwrap();
        let names: Vec<String> = md.topics().iter().map(|t| t.name().to_string()).collect();
        if workflow_dlq::config::Topics::default()
            .all()
            .iter()
            .all(|(_, t)| names.iter().any(|n| n == t))
        {
            break;
        }
        assert!(Instant::now() < deadline, "topics not created: {names:?}");
        std::thread::sleep(Duration::from_millis(200));
    }

    let stopped_at = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            stopped_at.elapsed() < Duration::from_secs(15),
            "did not stop within its bound"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
}

/// A worker that dies and cannot be restarted (here: the ingest worker panics on every start,
/// through the debug-build fault hook) turns `/readyz` 503 naming it, then the process exits
/// non-zero so the orchestrator restarts it — never "ready" with a dead pipeline.
#[tokio::test]
async fn a_dead_worker_turns_readyz_503_naming_it_then_the_process_exits_non_zero() {
    let cfg = test_config();
    let mut child = common::serve_command(&cfg)
        .env("DLQ_API_TOKEN", TOKEN)
        .env("DLQ_TEST_PANIC_WORKER", "ingest")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let base = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("HTTP API on ").map(str::to_string))
        .expect("the HTTP address is printed");
    let mut child = common::ChildGuard::new(child);
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut named = None;
    while named.is_none() && started.elapsed() < Duration::from_secs(60) {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            if status == reqwest::StatusCode::SERVICE_UNAVAILABLE && body.contains("`ingest`") {
                named = Some(body);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = named.expect("/readyz answered 503 naming the ingest worker");
    assert!(body.contains("panicked"), "{body}");
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the process did not exit after its worker died"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success(), "exit status {status}");
}
