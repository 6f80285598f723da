//! The `dlq` command line against a running service: list, restart by filter, delete all —
//! and the runs it prints are exactly the ones republished. `failures send` onto the embedded
//! broker; `--order`; and every output path in a pipe whose reader goes away.

use crate::common;

use std::{
    collections::HashSet,
    io::{BufRead, BufReader, Read, Write},
    process::{Command, Stdio},
    time::Duration,
};

use common::{envelope, failure_event, read_topic, TestApp, TOKEN};
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

/// Runs `workflow-dlq failures send <args>` against the app's broker and failures topic, with
/// `stdin` on its standard input; (exit code, stdout, stderr).
async fn send(app: &TestApp, args: &[&str], stdin: Vec<u8>) -> (i32, String, String) {
    let mut argv: Vec<String> = vec!["failures".into(), "send".into()];
    argv.extend(args.iter().map(|s| s.to_string()));
    argv.extend([
        "--kafka-bootstrap".into(),
        app.bootstrap(),
        "--topic-failures".into(),
        app.topics().failures,
    ]);
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_workflow-dlq"))
            .args(&argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary runs");
        let mut input = child.stdin.take().expect("stdin");
        // Written from a thread: a large input must not deadlock against unread output.
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&stdin);
        });
        let out = child.wait_with_output().expect("the binary ends");
        writer.join().expect("stdin writer");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("join")
}

/// The dlqIds the HTTP list shows (every page).
async fn listed_ids(app: &TestApp) -> HashSet<String> {
    let v = app.get_json("/v2/workflows/dlq?count=100").await;
    v["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["dlqId"].as_str().expect("dlqId").to_string())
        .collect()
}

fn json_line(n: usize) -> (String, String, String) {
    let ev = failure_event(n);
    let line = serde_json::to_string(&envelope(ev.clone())).expect("JSON");
    (line, dlq_id_for_event(&ev.event_id), ev.workflow_run_id)
}

#[tokio::test]
async fn failures_send_stores_valid_lines_and_reports_each_invalid_one() {
    let app = TestApp::spawn(common::test_config()).await;
    let (a, a_id, a_run) = json_line(1);
    let (b, b_id, b_run) = json_line(2);
    let (c, c_id, c_run) = json_line(3);
    // Over the default --max-record-bytes (1 MiB), as one line.
    let huge = format!(
        "{{\"failure\":{{\"eventId\":\"big\",\"workflowRunId\":\"r\",\"workflowUrl\":\"https://x\",\
         \"errorMessage\":\"{}\"}}}}",
        "x".repeat(1_100_000)
    );
    let lines = [
        a.as_str(),
        "",
        "{not json",
        b.as_str(),
        r#"{"failure":{"eventId":"e-5","workflowUrl":"https://x"}}"#,
        huge.as_str(),
        "   ",
        r#"{"callbackReport":{"dlqId":"d-1","info":{"state":"CALLBACK_EXPLODED"}}}"#,
        c.as_str(),
    ];
    let path = std::env::temp_dir().join(format!("{}.jsonl", common::unique("failures")));
    std::fs::write(&path, lines.join("\n")).expect("temp file");
    let (code, out, err) = send(&app, &[path.to_str().expect("utf-8 path")], Vec::new()).await;
    let _ = std::fs::remove_file(&path);

    assert_eq!(
        code, 1,
        "invalid lines make the exit code non-zero\n{out}\n{err}"
    );
    assert_eq!(out.trim(), "sent 3, invalid 4", "{err}");
    assert!(err.contains("line 3: invalid JSON: "), "{err}");
    assert!(
        err.contains("line 5: invalid failure event: workflowRunId is required"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "line 6: record of {} bytes exceeds the maximum of 1048576",
            huge.len()
        )),
        "{err}"
    );
    assert!(err.contains("line 8: invalid JSON: "), "{err}");
    assert!(err.contains("CALLBACK_EXPLODED"), "{err}");
    assert_eq!(
        err.lines().count(),
        4,
        "one report per invalid line:\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    // The valid ones are stored, and only they.
    app.wait_entries(3, Duration::from_secs(30)).await;
    let want: HashSet<String> = [a_id, b_id, c_id].into();
    assert_eq!(listed_ids(&app).await, want);
    // Keyed by workflow run id, as the platform keys the failures topic.
    let keys: HashSet<Vec<u8>> = read_topic(&app.bootstrap(), &app.topics().failures)
        .into_iter()
        .filter_map(|r| r.key)
        .collect();
    let runs: HashSet<Vec<u8>> = [a_run, b_run, c_run]
        .into_iter()
        .map(String::into_bytes)
        .collect();
    assert_eq!(keys, runs);
    app.stop().await;
}

#[tokio::test]
async fn failures_send_reads_stdin_and_refuses_to_guess_where_kafka_is() {
    let app = TestApp::spawn(common::test_config()).await;
    let (a, a_id, _) = json_line(1);
    let (b, b_id, _) = json_line(2);
    let (code, out, err) = send(&app, &["-"], format!("{a}\r\n\n{b}\n").into_bytes()).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(out.trim(), "sent 2, invalid 0");
    app.wait_entries(2, Duration::from_secs(30)).await;
    assert_eq!(listed_ids(&app).await, HashSet::from([a_id, b_id]));

    // No bootstrap: a usage error, before reading, rather than a send to nowhere.
    let out = Command::new(env!("CARGO_BIN_EXE_workflow-dlq"))
        .args(["failures", "send", "-"])
        .env_remove("DLQ_KAFKA_BOOTSTRAP")
        .env_remove("DLQ_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no Kafka to send to"));
    app.stop().await;
}

#[tokio::test]
async fn list_order_latest_lists_newest_first() {
    let app = TestApp::spawn(common::test_config()).await;
    // One at a time, so each entry is stored after the one before.
    let mut ids = Vec::new();
    for n in 0..3 {
        let ev = failure_event(n);
        ids.push(dlq_id_for_event(&ev.event_id));
        app.ingest(&[ev], n).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let listed = |out: &str| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(out).expect("JSON");
        v["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| m["dlqId"].as_str().expect("dlqId").to_string())
            .collect()
    };
    let (code, out, err) = dlq(&app, &["--json", "list", "--order", "latest"]).await;
    assert_eq!(code, 0, "{err}");
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(listed(&out), newest_first);
    let (code, out, err) = dlq(&app, &["--json", "list", "--order", "earliest"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(listed(&out), ids);
    // Page by page, newest first, following the cursor.
    let (code, out, err) = dlq(
        &app,
        &[
            "--json", "list", "--order", "latest", "--count", "1", "--all",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(listed(&out), newest_first);
    app.stop().await;
}

/// `workflow-dlq <args>` with stdout a pipe whose reader reads `keep` lines and then closes it
/// (as `| head -<keep>` does; 0 closes it before the binary writes anything); (exit code,
/// stderr, the lines read).
async fn into_closed_pipe(app: &TestApp, args: &[&str], keep: usize) -> (i32, String, Vec<String>) {
    let (base, args): (String, Vec<String>) = (
        app.base.clone(),
        args.iter().map(|s| s.to_string()).collect(),
    );
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_workflow-dlq"))
            .args(&args)
            .env("DLQ_URL", &base)
            .env("DLQ_API_TOKEN", TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary runs");
        let stdout = child.stdout.take().expect("stdout");
        let mut read = Vec::new();
        let mut lines = BufReader::new(stdout).lines();
        while read.len() < keep {
            match lines.next() {
                Some(Ok(l)) => read.push(l),
                _ => break,
            }
        }
        drop(lines); // the reader goes away
        let mut err = String::new();
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut err)
            .expect("stderr");
        let status = child.wait().expect("the binary ends");
        (status.code().unwrap_or(-1), err, read)
    })
    .await
    .expect("join")
}

#[tokio::test]
async fn every_output_path_ends_quietly_when_its_reader_goes_away() {
    let app = TestApp::spawn(common::test_config()).await;
    // 80 realistic entries: `list --json` is far more than a pipe buffer (64 KiB), so the
    // binary is still writing when the reader leaves, however the two are scheduled.
    let events: Vec<_> = (0..80).map(failure_event).collect();
    app.ingest(&events, 0).await;
    let id = dlq_id_for_event(&events[0].event_id);

    let (code, err, read) = into_closed_pipe(&app, &["dlq", "--json", "list"], 1).await;
    assert_eq!(read, ["{"], "the reader got the start of the output");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err, "", "nothing to say about a reader that left");
    assert_eq!(code, 0, "a reader that leaves early is not a failure");

    // Every other printer, each into a pipe closed before anything is written.
    let paths: [&[&str]; 6] = [
        &["dlq", "list"],
        &["dlq", "list", "--all", "--count", "7"],
        &["dlq", "get", &id],
        &["dlq", "--json", "get", &id],
        &["dlq", "restart", &id],
        &["dlq", "--json", "delete", "--all", "--count", "50"],
    ];
    for args in paths {
        let (code, err, _) = into_closed_pipe(&app, args, 0).await;
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!((code, err.as_str()), (0, ""), "{args:?}");
    }
    // The work was done even though nobody read about it.
    app.wait_entries(0, Duration::from_secs(30)).await;
    assert_eq!(app.executions().len(), 1, "the restart happened once");

    // `failures send` keeps its exit code (the input's verdict) when its reader leaves.
    let dry = |stdin: &'static str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_workflow-dlq"))
            .args(["failures", "send", "--dry-run", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary runs");
        drop(child.stdout.take());
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(stdin.as_bytes()).expect("stdin");
        drop(input);
        let out = child.wait_with_output().expect("the binary ends");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (a, _, _) = json_line(1);
    let valid: &'static str = Box::leak(format!("{a}\n").into_boxed_str());
    assert_eq!(dry(valid), (Some(0), String::new()));
    let (code, err) = dry("nope\n");
    assert_eq!(code, Some(1));
    assert!(err.starts_with("line 1: invalid JSON"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    app.stop().await;
}
