//! The `dlq` command line against a running service: list, restart by filter, delete all —
//! and the runs it prints are exactly the ones republished.

use crate::common;

use std::{collections::HashSet, process::Command};

use common::{failure_event, TestApp, TOKEN};
use workflow_dlq::wire::ids::dlq_id_for_event;

/// Runs `workflow-dlq dlq <args>` against the app; (exit code, stdout, stderr).
async fn dlq(app: &TestApp, args: &[&str]) -> (i32, String, String) {
    let (base, args): (String, Vec<String>) = (
        app.base.clone(),
        args.iter().map(|s| s.to_string()).collect(),
    );
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_workflow-dlq"))
            .arg("dlq")
            .args(["--url", &base])
            .env("DLQ_API_TOKEN", TOKEN)
            .args(&args)
            .output()
            .expect("the binary runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("join")
}

#[tokio::test]
async fn list_restart_by_filter_and_delete_all_round_trip() {
    let app = TestApp::spawn(common::test_config()).await;
    let events: Vec<_> = (0..12).map(failure_event).collect();
    app.ingest(&events, 0).await;
    let ids: Vec<String> = events
        .iter()
        .map(|e| dlq_id_for_event(&e.event_id))
        .collect();

    // A table with every entry.
    let (code, out, err) = dlq(&app, &["list"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("DLQ ID"), "{out}");
    for id in &ids {
        assert!(out.contains(id.as_str()), "{id} not listed:\n{out}");
    }
    assert!(out.trim_end().ends_with("12 entries"), "{out}");

    // A page, then --all following the cursor, as JSON.
    let (_, out, _) = dlq(&app, &["list", "--count", "5"]).await;
    assert!(out.contains("5 entries; more with --cursor"), "{out}");
    let (_, out, _) = dlq(&app, &["--json", "list", "--count", "5", "--all"]).await;
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["messages"].as_array().unwrap().len(), 12);

    // Restart by filter (label-0: the even events), 2 per call, overrides as flags.
    let (code, out, err) = dlq(
        &app,
        &[
            "--json",
            "restart",
            "--label",
            "label-0",
            "--count",
            "2",
            "--retries",
            "1",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let runs: Vec<serde_json::Value> = serde_json::from_str(&out).expect("JSON runs");
    let restarted: HashSet<&str> = runs.iter().map(|r| r["dlqId"].as_str().unwrap()).collect();
    let even: HashSet<&str> = ids.iter().step_by(2).map(String::as_str).collect();
    assert_eq!(restarted, even);
    let printed: HashSet<String> = runs
        .iter()
        .map(|r| r["workflowRunId"].as_str().unwrap().to_string())
        .collect();
    let execs = app.executions();
    assert_eq!(execs.len(), 6, "one execution per restarted entry");
    assert_eq!(
        execs
            .iter()
            .map(|e| e.workflow_run_id.clone())
            .collect::<HashSet<_>>(),
        printed
    );
    assert!(execs.iter().all(|e| e.retries == 1));

    // Acting on everything needs --all; then delete all.
    let (code, _, err) = dlq(&app, &["delete"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("pass --all to act on every entry"), "{err}");
    let (code, out, err) = dlq(&app, &["delete", "--all", "--count", "4"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "6 entries deleted");
    let (_, out, _) = dlq(&app, &["list"]).await;
    assert!(out.trim_end().ends_with("0 entries"), "{out}");

    // Server errors come back with their status and message, exit code 1.
    let (code, _, err) = dlq(&app, &["get", &ids[0]]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "404 Not Found: DLQ message `{}` was not found",
            ids[0]
        )),
        "{err}"
    );
    let (code, _, err) = dlq(&app, &["--token", "wrong", "list"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("401 Unauthorized: invalid bearer token"),
        "{err}"
    );
    app.stop().await;
}
