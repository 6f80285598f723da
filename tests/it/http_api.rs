//! The HTTP API in Upstash Workflow's DLQ dialect: every action is a command whose runs are the
//! ones the answer names — exactly once on the executions topic — and every bad request gets
//! its status and a message that says what is wrong.

use crate::common;

use std::collections::{HashMap, HashSet};

use common::{failure_event, TestApp, TOKEN};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use workflow_dlq::wire::{
    ids::dlq_id_for_event,
    pb::{self, failure_callback_info::State, workflow_execution::Kind},
};

async fn call(app: &TestApp, method: Method, path: &str) -> (StatusCode, Value) {
    let r = app
        .request(method.clone(), path)
        .send()
        .await
        .expect("HTTP");
    let status = r.status();
    let body = r.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn ok(app: &TestApp, method: Method, path: &str) -> Value {
    let (status, body) = call(app, method.clone(), path).await;
    assert_eq!(status, StatusCode::OK, "{method} {path}: {body}");
    body
}

/// Runs a bulk call to the end of its cursor; returns every answer.
async fn follow(app: &TestApp, method: Method, path: &str) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let p = match &cursor {
            Some(c) => format!("{path}{sep}cursor={c}"),
            None => path.to_string(),
        };
        let body = ok(app, method.clone(), &p).await;
        cursor = body["cursor"].as_str().map(str::to_string);
        pages.push(body);
        if cursor.is_none() {
            return pages;
        }
    }
}

fn run_ids(v: &Value) -> Vec<String> {
    v["workflowRuns"]
        .as_array()
        .expect("workflowRuns")
        .iter()
        .map(|r| r["workflowRunId"].as_str().expect("run id").to_string())
        .collect()
}

#[tokio::test]
async fn actions_answer_with_exactly_the_runs_they_republish() {
    let app = TestApp::spawn(common::test_config()).await;
    let events: Vec<pb::FailureEvent> = (0..24).map(failure_event).collect();
    app.ingest(&events, 0).await;
    let id = |i: usize| dlq_id_for_event(&events[i].event_id);
    let mut answered: HashMap<String, (Kind, String)> = HashMap::new();

    // One restart, with every override header.
    let r = app
        .request(
            Method::POST,
            &format!("/v2/workflows/dlq/restart/{}", id(0)),
        )
        .header("Upstash-Retries", "1")
        .header("Upstash-Delay", "30s")
        .header("Upstash-Retry-Delay", "1000")
        .header("Upstash-Flow-Control-Key", "tenant-a")
        .header(
            "Upstash-Flow-Control-Value",
            "parallelism=2, rate=5, period=10s",
        )
        .header("Upstash-Label", "redriven,http")
        .header(
            "Upstash-Failure-Callback",
            "https://app.example.com/api/failed",
        )
        .send()
        .await
        .expect("restart");
    assert_eq!(r.status(), StatusCode::OK);
    let run: Value = r.json().await.expect("JSON");
    assert!(run["workflowCreatedAt"].as_i64().unwrap_or(0) > 0, "{run}");
    answered.insert(
        run["workflowRunId"].as_str().expect("id").into(),
        (Kind::Restart, id(0)),
    );

    // One resume; the failure callback of one; two resumed by id list.
    let run = ok(
        &app,
        Method::POST,
        &format!("/v2/workflows/dlq/resume/{}", id(1)),
    )
    .await;
    answered.insert(
        run["workflowRunId"].as_str().unwrap().into(),
        (Kind::Resume, id(1)),
    );
    let run = ok(
        &app,
        Method::POST,
        &format!("/v2/workflows/dlq/callback/{}", id(2)),
    )
    .await;
    answered.insert(
        run["workflowRunId"].as_str().unwrap().into(),
        (Kind::FailureCallback, id(2)),
    );
    let both = ok(
        &app,
        Method::POST,
        &format!("/v2/workflows/dlq/resume?dlqIds={}&dlqIds={}", id(3), id(4)),
    )
    .await;
    let runs = both["workflowRuns"].as_array().expect("runs");
    assert_eq!(runs.len(), 2, "{both}");
    for r in runs {
        let dlq = r["dlqId"].as_str().unwrap().to_string();
        answered.insert(
            r["workflowRunId"].as_str().unwrap().into(),
            (Kind::Resume, dlq),
        );
    }
    assert!(both.get("cursor").is_none(), "an id list has no next page");

    // One deleted by id.
    let gone = ok(&app, Method::DELETE, &format!("/v2/dlq/{}", id(5))).await;
    assert_eq!(gone, json!({"deleted": 1}));
    let (status, _) = call(&app, Method::GET, &format!("/v2/dlq/{}", id(5))).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a deleted entry is gone at once"
    );

    // Restart by filter, 3 per page, following the cursor: label-0 holds the even events.
    let pages = follow(
        &app,
        Method::POST,
        "/v2/workflows/dlq/restart?label=label-0&count=3",
    )
    .await;
    let mut by_filter = Vec::new();
    for page in &pages {
        assert!(run_ids(page).len() <= 3, "{page}");
        for r in page["workflowRuns"].as_array().unwrap() {
            let dlq = r["dlqId"].as_str().unwrap().to_string();
            by_filter.push(dlq.clone());
            answered.insert(
                r["workflowRunId"].as_str().unwrap().into(),
                (Kind::Restart, dlq),
            );
        }
    }
    // (The entry whose callback was re-run stays in the DLQ, so the filter finds it too.)
    let expected: HashSet<String> = (6..24).chain([2]).filter(|i| i % 2 == 0).map(id).collect();
    assert_eq!(by_filter.iter().cloned().collect::<HashSet<_>>(), expected);
    assert_eq!(by_filter.len(), expected.len(), "each entry restarted once");

    // Delete everything left, 4 per page.
    let left = app.service.view.len();
    let pages = follow(&app, Method::DELETE, "/v2/workflows/dlq?count=4").await;
    let deleted: u64 = pages.iter().map(|p| p["deleted"].as_u64().unwrap()).sum();
    assert_eq!(deleted as usize, left, "{pages:?}");
    // The callback re-run kept its entry (marked in progress); deleting all removed it too.
    assert_eq!(app.service.view.len(), 0);
    assert_eq!(
        ok(&app, Method::GET, "/v2/dlq").await,
        json!({"messages": []})
    );

    // The executions topic holds exactly the runs the answers named, each once.
    let execs = app.executions();
    let seen: Vec<&str> = execs.iter().map(|e| e.workflow_run_id.as_str()).collect();
    assert_eq!(seen.len(), answered.len(), "no extra executions: {seen:?}");
    for e in &execs {
        let (kind, dlq) = answered
            .get(&e.workflow_run_id)
            .unwrap_or_else(|| panic!("execution {} was never answered", e.workflow_run_id));
        assert_eq!(e.kind, *kind as i32, "{}", e.workflow_run_id);
        assert_eq!(&e.source_dlq_id, dlq);
    }
    let restarted = execs.iter().find(|e| e.source_dlq_id == id(0)).unwrap();
    assert_eq!(restarted.retries, 1);
    assert_eq!(restarted.delay, "30s");
    assert_eq!(restarted.retry_delay, "1000");
    assert_eq!(restarted.labels, ["redriven", "http"]);
    assert_eq!(
        restarted.failure_callback,
        "https://app.example.com/api/failed"
    );
    let fc = restarted.flow_control.as_ref().expect("flow control");
    assert_eq!(
        (fc.key.as_str(), fc.parallelism, fc.rate, fc.period_seconds),
        ("tenant-a", 2, 5, 10)
    );
    let resumed = execs.iter().find(|e| e.source_dlq_id == id(1)).unwrap();
    assert_eq!(resumed.steps.len(), 3, "resume replays the completed steps");
    app.stop().await;
}

#[tokio::test]
async fn listing_filters_pages_and_reads_like_upstash() {
    let app = TestApp::spawn(common::test_config()).await;
    let events: Vec<pb::FailureEvent> = (0..10).map(failure_event).collect();
    app.ingest(&events, 0).await;

    let all = follow(
        &app,
        Method::GET,
        "/v2/workflows/dlq?count=3&source=workflow",
    )
    .await;
    assert_eq!(all.len(), 4, "10 entries in pages of 3");
    let listed: Vec<Value> = all
        .iter()
        .flat_map(|p| p["messages"].as_array().unwrap().clone())
        .collect();
    assert_eq!(listed.len(), 10);
    let m = &listed[0];
    for field in [
        "dlqId",
        "workflowRunId",
        "workflowUrl",
        "workflowCreatedAt",
        "createdAt",
        "header",
        "body",
        "maxRetries",
        "notBefore",
        "callerIP",
        "responseStatus",
        "responseHeader",
        "responseBody",
        "failureCallback",
        "failureCallbackInfo",
        "label",
        "labels",
        "failedStep",
        "completedSteps",
        "errorMessage",
        "expiresAt",
        "redriveCount",
    ] {
        assert!(
            m.get(field).is_some(),
            "listed message lacks `{field}`: {m}"
        );
    }
    assert_eq!(m["failureCallbackInfo"]["state"], "CALLBACK_FAIL");

    // OR within a field (repeated or comma-separated), AND across fields.
    let urls = |q: &str| {
        let app = &app;
        let q = q.to_string();
        async move {
            let v = ok(app, Method::GET, &format!("/v2/dlq?{q}")).await;
            v["messages"].as_array().unwrap().len()
        }
    };
    let u0 = "https://app.example.com/api/workflow/0";
    let u1 = "https://app.example.com/api/workflow/1";
    assert_eq!(urls(&format!("workflowUrl={u0}")).await, 3);
    assert_eq!(urls(&format!("workflowUrl={u0}&workflowUrl={u1}")).await, 6);
    assert_eq!(urls(&format!("workflowUrl={u0},{u1}")).await, 6);
    assert_eq!(urls(&format!("workflowUrl={u1}&label=label-0")).await, 0);
    assert_eq!(urls(&format!("workflowUrl={u0}&label=label-0")).await, 3);
    assert_eq!(urls("callerIp=10.0.0.1&flowControlKey=fc-1").await, 1);
    assert_eq!(
        urls("callerIp=10.0.0.1,10.0.0.2&flowControlKey=fc-1").await,
        2
    );
    assert_eq!(urls("workflowRunId=wfr-7").await, 1);
    assert_eq!(urls("failureFunctionState=CALLBACK_SUCCESS").await, 0);

    let one = &listed[4];
    let got = ok(
        &app,
        Method::GET,
        &format!("/v2/workflows/dlq/{}", one["dlqId"].as_str().unwrap()),
    )
    .await;
    assert_eq!(&got, one);
    app.stop().await;
}

/// method, path, headers, body → status, message
type BadRequest = (
    Method,
    String,
    Vec<(&'static str, &'static str)>,
    Option<Vec<u8>>,
    StatusCode,
    String,
);

#[tokio::test]
async fn every_bad_request_gets_its_status_and_message() {
    let app = TestApp::spawn(common::test_config()).await;
    let mut done = failure_event(1);
    done.failure_callback_info = Some(pb::FailureCallbackInfo {
        state: State::CallbackSuccess as i32,
        ..Default::default()
    });
    let known = dlq_id_for_event(&done.event_id);
    app.ingest(&[done], 0).await;
    let many_ids: String = (0..101).map(|i| format!("dlqIds=d{i}&")).collect();

    let cases: Vec<BadRequest> = vec![
        (Method::GET, "/v2/dlq?count=abc".into(), vec![], None, StatusCode::BAD_REQUEST,
         "`count` must be an integer, got `abc`".into()),
        (Method::GET, "/v2/dlq?count=101".into(), vec![], None, StatusCode::BAD_REQUEST,
         "`count` must be between 1 and 100, got 101".into()),
        (Method::GET, "/v2/workflows/dlq?fromDate=today".into(), vec![], None, StatusCode::BAD_REQUEST,
         "`fromDate` must be an integer, got `today`".into()),
        (Method::GET, "/v2/dlq?failureFunctionState=DONE".into(), vec![], None, StatusCode::BAD_REQUEST,
         "unknown failureFunctionState `DONE` (expected one of CALLBACK_INPROGRESS, CALLBACK_SUCCESS, CALLBACK_FAIL, CALLBACK_CANCELED)".into()),
        (Method::GET, "/v2/dlq?label=".into(), vec![], None, StatusCode::BAD_REQUEST,
         "`label` must not be empty".into()),
        (Method::GET, "/v2/dlq?cursor=%25%25".into(), vec![], None, StatusCode::BAD_REQUEST,
         "invalid cursor `%%`".into()),
        (Method::GET, "/v2/dlq?lable=x".into(), vec![], None, StatusCode::BAD_REQUEST,
         "unknown query parameter `lable`".into()),
        (Method::POST, "/v2/workflows/dlq/restart?dlqIds=".into(), vec![], None, StatusCode::BAD_REQUEST,
         "`dlqIds` must not be empty".into()),
        (Method::POST, format!("/v2/workflows/dlq/resume?dlqIds={known}&label=x"), vec![], None,
         StatusCode::BAD_REQUEST, "give either `dlqIds` or filters, not both".into()),
        (Method::DELETE, format!("/v2/dlq?{many_ids}"), vec![], None, StatusCode::BAD_REQUEST,
         "at most 100 `dlqIds` per call, got 101".into()),
        (Method::POST, format!("/v2/workflows/dlq/restart/{known}"), vec![("Upstash-Retries", "many")], None,
         StatusCode::BAD_REQUEST, "`Upstash-Retries` must be an integer between 0 and 1000, got `many`".into()),
        (Method::POST, "/v2/workflows/dlq/resume".into(), vec![("Upstash-Flow-Control-Value", "rate=1")], None,
         StatusCode::BAD_REQUEST, "`Upstash-Flow-Control-Key` and `Upstash-Flow-Control-Value` go together".into()),
        (Method::DELETE, "/v2/dlq".into(), vec![], Some(b"{not json".to_vec()), StatusCode::BAD_REQUEST,
         "the body must be JSON like {\"dlqIds\": [\"…\"]}: key must be a string at line 1 column 2".into()),
        (Method::DELETE, "/v2/dlq".into(), vec![], Some(b"{\"dlqIds\": []}".to_vec()), StatusCode::BAD_REQUEST,
         "`dlqIds` must not be empty".into()),
        (Method::DELETE, "/v2/dlq".into(), vec![], Some(vec![b' '; 70 * 1024]), StatusCode::PAYLOAD_TOO_LARGE,
         "the request body is larger than 65536 bytes".into()),
        (Method::GET, "/v2/dlq/dlq-nope".into(), vec![], None, StatusCode::NOT_FOUND,
         "DLQ message `dlq-nope` was not found".into()),
        (Method::DELETE, "/v2/workflows/dlq/dlq-nope".into(), vec![], None, StatusCode::NOT_FOUND,
         "DLQ message `dlq-nope` was not found".into()),
        (Method::POST, "/v2/workflows/dlq/restart/dlq-nope".into(), vec![], None, StatusCode::NOT_FOUND,
         "DLQ message `dlq-nope` was not found".into()),
        (Method::POST, "/v2/workflows/dlq/callback/dlq-nope".into(), vec![], None, StatusCode::NOT_FOUND,
         "DLQ message `dlq-nope` was not found".into()),
        (Method::POST, format!("/v2/workflows/dlq/restart?dlqIds={known},dlq-a,dlq-b"), vec![], None,
         StatusCode::NOT_FOUND, "Some DLQ messages were not found: dlq-a, dlq-b".into()),
        (Method::POST, format!("/v2/workflows/dlq/callback/{known}"), vec![], None, StatusCode::BAD_REQUEST,
         format!("DLQ message `{known}` cannot be acted on: the failure callback is in state CALLBACK_SUCCESS, not CALLBACK_FAIL")),
        (Method::DELETE, format!("/v2/workflows/dlq/callback/{known}"), vec![], None, StatusCode::BAD_REQUEST,
         format!("DLQ message `{known}` cannot be acted on: no failure callback in progress to cancel (state CALLBACK_SUCCESS)")),
        (Method::POST, "/v2/dlq/retry/dlq-nope".into(), vec![], None, StatusCode::NOT_FOUND,
         "DLQ message `dlq-nope` was not found".into()),
        (Method::POST, "/v2/dlq/retry?topicName=".into(), vec![], None, StatusCode::BAD_REQUEST,
         "`topicName` must not be empty".into()),
        (Method::GET, "/v2/dlq?responseStatus=abc".into(), vec![], None, StatusCode::BAD_REQUEST,
         "`responseStatus` must be integers, got `abc`".into()),
        (Method::GET, "/v2/dlq?order=random".into(), vec![], None, StatusCode::BAD_REQUEST,
         "`order` must be `latestFirst` or `earliestFirst`, got `random`".into()),
        (Method::POST, format!("/v2/dlq/retry/{known}"), vec![("Idempotency-Key", "a"), ("Upstash-Deduplication-Id", "b")], None,
         StatusCode::BAD_REQUEST, "`upstash-deduplication-id` and `idempotency-key` differ; send one".into()),
        (Method::PUT, "/v2/dlq".into(), vec![], None, StatusCode::METHOD_NOT_ALLOWED,
         "method not allowed on this route".into()),
        (Method::GET, "/v3/nothing".into(), vec![], None, StatusCode::NOT_FOUND, "no such route".into()),
    ];
    for (method, path, headers, body, status, message) in cases {
        let mut req = app.request(method.clone(), &path);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let r = req.send().await.expect("HTTP");
        let got = r.status();
        let text = r.text().await.unwrap_or_default();
        assert_eq!(got, status, "{method} {path}: {text}");
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}"));
        assert_eq!(v, json!({ "error": message }), "{method} {path}");
    }
    assert!(
        app.executions().is_empty(),
        "no bad request acted on anything"
    );
    assert_eq!(app.service.view.len(), 1);

    // Without a token, or with a wrong one: 401, and no entry in the answer.
    for auth in [None, Some("Bearer wrong"), Some("Basic abc")] {
        let mut req = app
            .http
            .post(format!("{}/v2/workflows/dlq/restart", app.base));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.expect("HTTP");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        let v: Value = r.json().await.expect("JSON");
        assert!(v["error"].as_str().unwrap().contains("bearer token"), "{v}");
    }
    assert!(app.executions().is_empty());
    let _ = TOKEN;
    app.stop().await;
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_the_server_serves() {
    let app = TestApp::spawn(common::test_config()).await;
    let doc = app.get_json("/openapi.json").await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");
    for (path, methods) in [
        ("/v2/dlq", vec!["get", "delete"]),
        ("/v2/workflows/dlq", vec!["get", "delete"]),
        ("/v2/dlq/{dlqId}", vec!["get", "delete"]),
        ("/v2/workflows/dlq/{dlqId}", vec!["get", "delete"]),
        ("/v2/workflows/dlq/restart", vec!["post"]),
        ("/v2/workflows/dlq/resume", vec!["post"]),
        ("/v2/workflows/dlq/restart/{dlqId}", vec!["post"]),
        ("/v2/workflows/dlq/resume/{dlqId}", vec!["post"]),
        ("/v2/workflows/dlq/callback/{dlqId}", vec!["post", "delete"]),
        ("/v2/dlq/retry", vec!["post"]),
        ("/v2/dlq/retry/{dlqId}", vec!["post"]),
        ("/v2/workflows/dlq/groups", vec!["get"]),
        ("/v2/dlq/groups", vec!["get"]),
        ("/v2/workflows/dlq/jobs", vec!["get", "post"]),
        ("/v2/workflows/dlq/jobs/{jobId}", vec!["get", "delete"]),
        ("/v1/status", vec!["get"]),
        ("/openapi.json", vec!["get"]),
        ("/healthz", vec!["get"]),
        ("/readyz", vec!["get"]),
        ("/metrics", vec!["get"]),
    ] {
        let item = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} is not documented"));
        for m in methods {
            assert!(item.get(m).is_some(), "{m} {path} is not documented");
        }
    }
    assert_eq!(
        paths.len(),
        20,
        "documented routes: {:?}",
        paths.keys().collect::<Vec<_>>()
    );
    let r = app
        .http
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test]
async fn a_command_nobody_answers_is_a_clear_error_naming_it() {
    use std::{sync::Arc, time::Duration};
    use workflow_dlq::{
        commands::{ledger::Ledger, submit::CommandSubmitter},
        kafka::KafkaConn,
        wire::codec::Encoding,
    };
    let app = TestApp::spawn(common::test_config()).await;
    // A ledger nobody feeds: the answer never arrives.
    let conn = KafkaConn {
        bootstrap: app.bootstrap(),
        properties: Default::default(),
        embedded: app.service.is_embedded(),
        client_id: "test-submitter".into(),
        max_record_bytes: 1 << 20,
    };
    let submitter = CommandSubmitter::new(
        &conn,
        app.topics().commands,
        Arc::new(Ledger::new()),
        Encoding::Protobuf,
    )
    .expect("producer");
    let cmd = common::command(
        "c-unanswered",
        pb::recovery_command::Action::Delete,
        common::ids(&["dlq-none"]),
    );
    let started = std::time::Instant::now();
    let err = submitter
        .submit(&cmd, false, Duration::from_secs(1))
        .await
        .expect_err("no answer");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        err.to_string().starts_with(
            "command c-unanswered was written but the command consumer did not answer within"
        ),
        "{err}"
    );
    app.stop().await;
}

/// Sends `method path` with a deduplication header; returns the status and body.
async fn call_keyed(
    app: &TestApp,
    method: Method,
    path: &str,
    header: &'static str,
    key: &str,
) -> (StatusCode, Value) {
    let r = app
        .request(method, path)
        .header(header, key)
        .send()
        .await
        .expect("HTTP");
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_retried_action_with_the_same_deduplication_id_acts_once() {
    let app = TestApp::spawn(common::test_config()).await;
    let events: Vec<_> = (0..12).map(failure_event).collect();
    app.ingest(&events, 0).await;
    let ids: Vec<String> = events
        .iter()
        .map(|e| dlq_id_for_event(&e.event_id))
        .collect();
    let dedup = "upstash-deduplication-id";

    // One entry, retried (QStash) twice with one key: one run, the same answer twice.
    let path = format!("/v2/dlq/retry/{}", ids[0]);
    let (s1, first) = call_keyed(&app, Method::POST, &path, dedup, "k-1").await;
    assert_eq!(s1, StatusCode::CREATED, "{first}");
    let (s2, again) = call_keyed(&app, Method::POST, &path, dedup, "k-1").await;
    assert_eq!(
        s2,
        StatusCode::CREATED,
        "a replay answers the first outcome, not 404: {again}"
    );
    assert_eq!(first["messageId"], again["messageId"]);

    // Two copies of a bulk restart sent at once (a client retrying a slow call), keyed.
    let bulk = format!("/v2/workflows/dlq/restart?dlqIds={},{}", ids[1], ids[2]);
    let (a, b) = tokio::join!(
        call_keyed(&app, Method::POST, &bulk, "idempotency-key", "k-2"),
        call_keyed(&app, Method::POST, &bulk, "idempotency-key", "k-2"),
    );
    assert_eq!(
        (a.0, b.0),
        (StatusCode::OK, StatusCode::OK),
        "{} / {}",
        a.1,
        b.1
    );
    assert_eq!(a.1["workflowRuns"], b.1["workflowRuns"]);
    assert_eq!(a.1["workflowRuns"].as_array().map(Vec::len), Some(2));

    // A keyed page of `all`: the replay answers the same runs and the same cursor, and acts on
    // no further page.
    // (Odd entries only: the even ones below must not be on this page.)
    let page = "/v2/workflows/dlq/resume?count=3&label=label-1";
    let (_, p1) = call_keyed(&app, Method::POST, page, dedup, "k-3").await;
    let (_, p1_again) = call_keyed(&app, Method::POST, page, dedup, "k-3").await;
    assert_eq!(p1, p1_again);
    assert!(p1["cursor"].is_string(), "{p1}");

    // A delete replayed after it succeeded answers `deleted: 1` again, not 404.
    let del = format!("/v2/workflows/dlq/{}", ids[10]);
    let (d1, body1) = call_keyed(&app, Method::DELETE, &del, dedup, "k-4").await;
    let (d2, body2) = call_keyed(&app, Method::DELETE, &del, dedup, "k-4").await;
    assert_eq!(
        (d1, d2),
        (StatusCode::OK, StatusCode::OK),
        "{body1} / {body2}"
    );
    assert_eq!(body2["deleted"], 1);
    // The same key on another request is another command.
    let (s, _) = call_keyed(
        &app,
        Method::POST,
        &format!("/v2/dlq/retry/{}", ids[8]),
        dedup,
        "k-1",
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);

    let runs: Vec<String> = app
        .executions()
        .into_iter()
        .map(|e| e.source_dlq_id)
        .collect();
    let unique: HashSet<&String> = runs.iter().collect();
    assert_eq!(
        unique.len(),
        runs.len(),
        "an entry was acted on twice: {runs:?}"
    );
    assert_eq!(runs.len(), 1 + 2 + 3 + 1, "{runs:?}");
    app.stop().await;
}

#[tokio::test]
async fn latest_first_lists_newest_first_and_a_cursor_keeps_its_order() {
    let app = TestApp::spawn(common::test_config()).await;
    // Ingested in three rounds, so the rounds' `createdAt` differ.
    let mut events = Vec::new();
    for round in 0..3 {
        let batch: Vec<_> = (round * 5..round * 5 + 5).map(failure_event).collect();
        app.ingest(&batch, events.len()).await;
        events.extend(batch);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let ids_of = |pages: &[Value]| -> Vec<String> {
        pages
            .iter()
            .flat_map(|p| p["messages"].as_array().cloned().unwrap_or_default())
            .map(|m| m["dlqId"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let oldest = ids_of(&follow(&app, Method::GET, "/v2/workflows/dlq?count=4").await);
    let newest = ids_of(&follow(&app, Method::GET, "/v2/dlq?count=4&order=latestFirst").await);
    assert_eq!(oldest.len(), 15);
    let mut reversed = oldest.clone();
    reversed.reverse();
    assert_eq!(newest, reversed);
    let round_of = |id: &str| {
        events
            .iter()
            .position(|e| dlq_id_for_event(&e.event_id) == id)
            .map(|n| n / 5)
    };
    assert_eq!(
        round_of(&newest[0]),
        Some(2),
        "the newest round comes first"
    );
    // A newest-first cursor cannot page oldest-first.
    let first = ok(&app, Method::GET, "/v2/dlq?count=4&order=latestFirst").await;
    let cursor = first["cursor"].as_str().expect("cursor");
    let (status, body) = call(
        &app,
        Method::GET,
        &format!("/v2/dlq?cursor={cursor}&order=earliestFirst"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // A bulk delete takes the order too: the newest page goes first.
    let del = ok(&app, Method::DELETE, "/v2/dlq?count=5&order=latestFirst").await;
    assert_eq!(del["deleted"], 5);
    let left = ids_of(&follow(&app, Method::GET, "/v2/dlq").await);
    assert_eq!(left, oldest[..10]);
    app.stop().await;
}

#[tokio::test]
async fn an_in_progress_failure_callback_can_be_canceled_and_its_late_report_is_ignored() {
    use workflow_dlq::wire::pb::failure_envelope::Kind as EnvelopeKind;
    let app = TestApp::spawn(common::test_config()).await;
    let mut ev = failure_event(1);
    ev.failure_callback = "https://app.example.com/on-failure".into();
    ev.failure_callback_info = Some(pb::FailureCallbackInfo {
        state: State::CallbackFail as i32,
        ..Default::default()
    });
    let id = dlq_id_for_event(&ev.event_id);
    app.ingest(&[ev], 0).await;
    let state = |v: &Value| {
        v["failureCallbackInfo"]["state"]
            .as_str()
            .map(str::to_string)
    };

    // Nothing in progress yet: 400.
    let path = format!("/v2/workflows/dlq/callback/{id}");
    let (status, body) = call(&app, Method::DELETE, &path).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // Re-run it (in progress), then cancel it.
    ok(&app, Method::POST, &path).await;
    let entry = ok(&app, Method::GET, &format!("/v2/workflows/dlq/{id}")).await;
    assert_eq!(state(&entry).as_deref(), Some("CALLBACK_INPROGRESS"));
    let r = app
        .request(Method::DELETE, &path)
        .send()
        .await
        .expect("HTTP");
    assert_eq!(r.status(), StatusCode::FOUND, "Upstash documents 302");
    let entry = ok(&app, Method::GET, &format!("/v2/workflows/dlq/{id}")).await;
    assert_eq!(state(&entry).as_deref(), Some("CALLBACK_CANCELED"));
    assert_eq!(entry["failureFunctionState"], "CALLBACK_CANCELED");

    // The canceled run reports its end late: the entry stays canceled.
    let report = pb::FailureEnvelope {
        kind: Some(EnvelopeKind::CallbackReport(pb::FailureCallbackReport {
            dlq_id: id.clone(),
            info: Some(pb::FailureCallbackInfo {
                state: State::CallbackSuccess as i32,
                ..Default::default()
            }),
        })),
    };
    let p = common::producer(&app.bootstrap());
    common::publish_raw(
        &p,
        &app.topics().failures,
        None,
        &prost::Message::encode_to_vec(&report),
        None,
        None,
    )
    .await;
    // Once a record on every failures partition is stored, ingest has forwarded the report (it
    // was written before them); an action on the entry is keyed to the same command partition
    // as the forwarded report, so it is decided after it and says what the report did.
    common::barrier(&app, &p).await;
    let (status, body) = call(&app, Method::POST, &path).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("state CALLBACK_CANCELED"),
        "the late report overwrote the cancel: {body}"
    );
    let entry = ok(&app, Method::GET, &format!("/v2/workflows/dlq/{id}")).await;
    assert_eq!(state(&entry).as_deref(), Some("CALLBACK_CANCELED"));
    // One execution: the callback re-run; the cancel republished nothing.
    assert_eq!(app.executions().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn read_and_operate_tokens_are_held_to_their_scope_on_every_route_and_named_in_results() {
    const READER: &str = "reader-token-0123456789";
    const OPS: &str = "ops-token-0123456789abcdef";
    let mut cfg = common::test_config();
    cfg.api_tokens =
        workflow_dlq::tokens::parse(&format!("reader:read:{READER}\nops:operate:{OPS}"))
            .expect("tokens");
    let app = TestApp::spawn(cfg).await;
    let events: Vec<_> = (0..3).map(failure_event).collect();
    app.ingest(&events, 0).await;
    let id = dlq_id_for_event(&events[0].event_id);

    // Every documented route and method, as the reader: reading works, acting is a 403.
    let doc = app.get_json("/openapi.json").await;
    let open = ["/healthz", "/readyz", "/metrics"];
    let mut acted_on = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        if open.contains(&path.as_str()) {
            continue;
        }
        let concrete = path.replace("{dlqId}", &id).replace("{jobId}", "job-x");
        for (method, _) in item.as_object().expect("methods") {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let r = app
                .http
                .request(m.clone(), format!("{}{concrete}", app.base))
                .bearer_auth(READER)
                .send()
                .await
                .expect("HTTP");
            let status = r.status();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            if m == Method::GET {
                // (No job `job-x`: a 404 — but never 401 or 403.)
                let want = if concrete.contains("job-x") {
                    StatusCode::NOT_FOUND
                } else {
                    StatusCode::OK
                };
                assert_eq!(status, want, "reader: {m} {concrete}: {body}");
            } else {
                acted_on += 1;
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "reader: {m} {concrete}: {body}"
                );
                assert_eq!(
                    body["error"],
                    format!("token `reader` has scope `read`; {m} {concrete} needs `operate`"),
                );
            }
        }
    }
    assert!(acted_on >= 10, "only {acted_on} action routes were tried");
    assert!(app.executions().is_empty(), "a reader acted");
    assert_eq!(app.service.view.len(), 3);

    // The operator acts; the result names the token, never shows it.
    let r = app
        .http
        .post(format!("{}/v2/workflows/dlq/restart/{id}", app.base))
        .bearer_auth(OPS)
        .send()
        .await
        .expect("HTTP");
    assert_eq!(r.status(), StatusCode::OK);
    let results: Vec<pb::CommandResult> =
        common::decode_all(&common::read_topic(&app.bootstrap(), &app.topics().results));
    let mine: Vec<_> = results.iter().filter(|r| r.done).collect();
    assert_eq!(mine.len(), 1, "{results:?}");
    assert_eq!(mine[0].requested_by, "http:ops");
    let raw = common::read_topic(&app.bootstrap(), &app.topics().results);
    for rec in raw {
        let v = rec.value.unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&v).contains(OPS),
            "a token leaked into a result"
        );
    }
    // The single admin token still does everything.
    let (status, _) = call(
        &app,
        Method::DELETE,
        &format!("/v2/dlq/{}", dlq_id_for_event(&events[1].event_id)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    app.stop().await;
}
