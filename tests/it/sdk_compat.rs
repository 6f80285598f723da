//! Upstash's own SDKs against workflow-dlq: the real `@upstash/workflow` and `@upstash/qstash`
//! npm packages (`tests/sdk/workflow-dlq.mjs`, `tests/sdk/qstash-dlq.mjs`) and the real `qstash`
//! PyPI package (`tests/sdk/qstash_dlq.py`), installed from their registries on first use. The scripts assert what each SDK call returns;
//! this side checks the executions topic holds exactly the runs the SDK was given, once each.

use crate::common;

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    process::Command,
};

use common::{failure_event, TestApp, TOKEN};
use workflow_dlq::wire::{ids::dlq_id_for_event, pb::workflow_execution::Kind};

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk")
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `npm ci` from the committed lock file, once.
fn node_sdk() {
    let modules = sdk_dir().join("node_modules/@upstash");
    if !modules.join("workflow").exists() || !modules.join("qstash").exists() {
        run(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(sdk_dir()),
            "npm ci (tests/sdk)",
        );
    }
}

/// A virtualenv under target/ with the pinned `qstash`, once.
fn python_sdk() -> PathBuf {
    common::python_venv("sdk-venv", "tests/sdk/requirements.txt").join("python")
}

#[ignore = "needs node + npm and the npm registry; .ci/run runs it"]
#[tokio::test]
async fn upstash_workflow_npm_client_lists_restarts_resumes_retries_and_deletes() {
    node_sdk();
    let app = TestApp::spawn(common::test_config()).await;
    let events: Vec<_> = (0..32).map(failure_event).collect();
    app.ingest(&events, 0).await;
    let ids: Vec<String> = events
        .iter()
        .map(|e| dlq_id_for_event(&e.event_id))
        .collect();
    let urls: Vec<String> = (0..4)
        .map(|i| format!("https://app.example.com/api/workflow/{i}"))
        .collect();

    let base = app.base.clone();
    let (ids_json, urls_json) = (
        serde_json::to_string(&ids).unwrap(),
        serde_json::to_string(&urls).unwrap(),
    );
    let stdout = tokio::task::spawn_blocking(move || {
        run(
            Command::new("node")
                .arg("workflow-dlq.mjs")
                .current_dir(sdk_dir())
                .env("DLQ_BASE_URL", base)
                .env("DLQ_TOKEN", TOKEN)
                .env("DLQ_IDS", ids_json)
                .env("DLQ_URLS", urls_json),
            "node tests/sdk/workflow-dlq.mjs",
        )
    })
    .await
    .expect("SDK script");
    println!("SDK report: {stdout}");
    let report: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("report JSON");

    // Every run the SDK was handed, with the kind of call that returned it.
    let mut returned: HashMap<String, Kind> = HashMap::new();
    for call in report["calls"].as_array().expect("calls") {
        let kind = Kind::from_str_name(call["kind"].as_str().unwrap()).expect("kind");
        for run in call["runs"].as_array().unwrap() {
            let id = run.as_str().unwrap().to_string();
            assert!(
                returned.insert(id.clone(), kind).is_none(),
                "run {id} returned twice"
            );
        }
    }
    // 1 + 1 + 2 restarted/resumed by id, 1 callback, 7 by URL filter, 6 by `all`.
    assert_eq!(returned.len(), 18, "{report}");
    assert_eq!(report["deleted"], 3 + 12);

    let execs = app.executions();
    let published: Vec<&str> = execs.iter().map(|e| e.workflow_run_id.as_str()).collect();
    assert_eq!(
        published.iter().copied().collect::<HashSet<_>>().len(),
        published.len(),
        "an execution was published twice"
    );
    assert_eq!(published.len(), returned.len(), "executions: {published:?}");
    for e in &execs {
        let kind = returned
            .get(&e.workflow_run_id)
            .unwrap_or_else(|| panic!("{} was published but never returned", e.workflow_run_id));
        assert_eq!(e.kind, *kind as i32, "{}", e.workflow_run_id);
    }
    let first = execs.iter().find(|e| e.source_dlq_id == ids[0]).unwrap();
    assert_eq!(
        first.retries, 2,
        "the SDK's `retries` reaches the execution"
    );
    assert_eq!(app.service.view.len(), 0);
    app.stop().await;
}

/// Failure `n` as QStash reports one: a message of a URL group, a queue, sometimes a schedule,
/// and one of four response statuses.
fn qstash_failure(n: usize) -> workflow_dlq::wire::pb::FailureEvent {
    let mut e = failure_event(n);
    e.topic_name = format!("group-{}", n % 2);
    e.queue_name = format!("queue-{}", n % 3);
    e.schedule_id = if n % 5 == 0 {
        "scd_5".into()
    } else {
        String::new()
    };
    e.response_status = [500, 502, 404, 503][n % 4];
    e
}

#[ignore = "needs node + npm and the npm registry; .ci/run runs it"]
#[tokio::test]
async fn upstash_qstash_npm_client_lists_with_every_filter_deletes_and_retries() {
    node_sdk();
    let app = TestApp::spawn(common::test_config()).await;
    let events: Vec<_> = (0..40).map(qstash_failure).collect();
    app.ingest(&events, 0).await;
    let seeded: Vec<serde_json::Value> = events
        .iter()
        .map(|e| {
            serde_json::json!({
                "dlqId": dlq_id_for_event(&e.event_id),
                "messageId": e.message_id,
                "url": e.workflow_url,
                "urlGroup": e.topic_name,
                "queueName": e.queue_name,
                "scheduleId": (!e.schedule_id.is_empty()).then_some(&e.schedule_id),
                "responseStatus": e.response_status,
                "callerIp": e.caller_ip,
                "label": e.labels[0],
                "flowControlKey": e.flow_control.as_ref().map(|f| &f.key),
            })
        })
        .collect();
    let base = app.base.clone();
    let seeded_json = serde_json::to_string(&seeded).unwrap();
    let stdout = tokio::task::spawn_blocking(move || {
        run(
            Command::new("node")
                .arg("qstash-dlq.mjs")
                .current_dir(sdk_dir())
                .env("DLQ_BASE_URL", base)
                .env("DLQ_TOKEN", TOKEN)
                .env("DLQ_SEEDED", seeded_json),
            "node tests/sdk/qstash-dlq.mjs",
        )
    })
    .await
    .expect("SDK script");
    println!("SDK report: {stdout}");
    let report: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("report JSON");
    let retried: Vec<&str> = report["retried"]
        .as_array()
        .expect("retried")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    let unique: HashSet<&str> = retried.iter().copied().collect();
    assert_eq!(
        unique.len(),
        retried.len(),
        "a message id was returned twice"
    );
    let deleted = report["deleted"].as_u64().expect("deleted") as usize;
    assert_eq!(retried.len() + deleted, events.len(), "{report}");

    // The executions topic holds exactly the retried runs, each a resume, once.
    let execs = app.executions();
    let published: Vec<&str> = execs.iter().map(|e| e.workflow_run_id.as_str()).collect();
    assert_eq!(
        published.iter().copied().collect::<HashSet<_>>(),
        unique,
        "executions ≠ the runs the SDK was handed"
    );
    assert_eq!(
        published.len(),
        retried.len(),
        "an execution was published twice"
    );
    assert!(execs.iter().all(|e| e.kind == Kind::Resume as i32));
    assert_eq!(app.service.view.len(), 0);
    app.stop().await;
}

#[ignore = "needs python3 with venv and PyPI; .ci/run runs it"]
#[tokio::test]
async fn qstash_python_client_lists_with_every_filter_gets_and_deletes() {
    let python = tokio::task::spawn_blocking(python_sdk).await.expect("venv");
    let app = TestApp::spawn(common::test_config()).await;
    let events: Vec<_> = (0..10).map(qstash_failure).collect();
    app.ingest(&events, 0).await;
    let ids: Vec<String> = events
        .iter()
        .map(|e| dlq_id_for_event(&e.event_id))
        .collect();
    let base = app.base.clone();
    let ids_json = serde_json::to_string(&ids).unwrap();
    let stdout = tokio::task::spawn_blocking(move || {
        run(
            Command::new(python)
                .arg("qstash_dlq.py")
                .current_dir(sdk_dir())
                .env("DLQ_BASE_URL", base)
                .env("DLQ_TOKEN", TOKEN)
                .env("DLQ_IDS", ids_json),
            "python tests/sdk/qstash_dlq.py",
        )
    })
    .await
    .expect("SDK script");
    println!("SDK report: {stdout}");
    assert_eq!(app.service.view.len(), 7);
    for gone in &ids[..3] {
        assert!(app.service.view.get(gone).is_none(), "{gone} still stored");
    }
    assert!(app.executions().is_empty(), "delete republishes nothing");
    app.stop().await;
}
