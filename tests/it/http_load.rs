//! The HTTP API under many concurrent clients: every answer is a 2xx or the documented load-shed
//! 503 (with `Retry-After`), nothing fails in transport, and every action answered 2xx acted
//! exactly once while a shed action acted not at all. The bounds are set low so the shedding
//! certainly happens; speed is the bench's business (`dlq-bench http-load`), not this test's.
//!
//! Actions are what is shed for sure: each holds its slot while it waits for its command's
//! result. A read is admitted, answered and (if small) written within one poll, so reads
//! overlap only across worker threads and their shedding is not asserted here (the unit tests
//! of `http::limit` prove it).

use crate::common;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use common::{failure_event, TestApp, TOKEN};
use reqwest::{Method, StatusCode};
use workflow_dlq::wire::{ids::dlq_id_for_event, pb};

const CLIENTS: usize = 200;
const RUN_FOR: Duration = Duration::from_secs(5);
const ENTRIES: usize = 600;

/// What one request was and how it was answered.
#[derive(Debug)]
struct Answer {
    route: &'static str,
    /// The entry an action named, with its action.
    acted_on: Option<(String, pb::workflow_execution::Kind)>,
    status: StatusCode,
    retry_after: Option<String>,
    body: String,
}

// Several workers, so requests really overlap in the service as they do in production.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_clients_get_2xx_or_the_documented_503_and_actions_act_once() {
    let mut cfg = common::test_config();
    cfg.http_max_inflight_reads = 2;
    cfg.http_max_inflight_actions = 4;
    let app = TestApp::spawn(cfg).await;
    let events: Vec<pb::FailureEvent> = (0..ENTRIES).map(failure_event).collect();
    app.ingest(&events, 0).await;
    let ids: Vec<String> = events
        .iter()
        .map(|e| dlq_id_for_event(&e.event_id))
        .collect();
    // Reads by id only name entries no action touches (a deleted entry would be a 404); each
    // action takes the next entry of its own pool, so no entry is acted on twice.
    let (read_ids, act_ids): (Vec<_>, Vec<_>) = ids
        .iter()
        .cloned()
        .enumerate()
        .partition(|(i, _)| i % 4 == 0);
    let read_ids: Arc<Vec<String>> = Arc::new(read_ids.into_iter().map(|(_, id)| id).collect());
    let act_ids: Arc<Vec<String>> = Arc::new(act_ids.into_iter().map(|(_, id)| id).collect());
    let next_act = Arc::new(AtomicUsize::new(0));
    let answers = Arc::new(Mutex::new(Vec::<Answer>::new()));
    let transport_errors = Arc::new(Mutex::new(Vec::<String>::new()));
    // One connection pool for every client, as a service calling the DLQ would have.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let deadline = Instant::now() + RUN_FOR;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (http, base) = (http.clone(), app.base.clone());
        let (read_ids, act_ids, next_act) = (read_ids.clone(), act_ids.clone(), next_act.clone());
        let (answers, transport_errors) = (answers.clone(), transport_errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            let mut cursor: Option<String> = None;
            while Instant::now() < deadline {
                i += CLIENTS;
                // 6 in 10 list (filtered, following cursors), 3 get, 1 acts.
                let (route, method, path, acted_on) = match i % 10 {
                    0 => match act_ids.get(next_act.fetch_add(1, Ordering::Relaxed)) {
                        Some(id) => {
                            let (verb, kind) = match (i / 10) % 3 {
                                0 => ("restart", Some(pb::workflow_execution::Kind::Restart)),
                                1 => ("resume", Some(pb::workflow_execution::Kind::Resume)),
                                _ => ("delete", None),
                            };
                            let (method, path) = match kind {
                                Some(_) => (Method::POST, format!("/v2/workflows/dlq/{verb}/{id}")),
                                None => (Method::DELETE, format!("/v2/workflows/dlq/{id}")),
                            };
                            let what = kind.unwrap_or(pb::workflow_execution::Kind::Unspecified);
                            (verb, method, path, Some((id.clone(), what)))
                        }
                        None => (
                            "get",
                            Method::GET,
                            format!("/v2/workflows/dlq/{}", read_ids[i % read_ids.len()]),
                            None,
                        ),
                    },
                    1..=3 => (
                        "get",
                        Method::GET,
                        format!("/v2/workflows/dlq/{}", read_ids[i % read_ids.len()]),
                        None,
                    ),
                    _ => {
                        let mut path = format!("/v2/workflows/dlq?count=20&label=label-{}", i % 2);
                        if let Some(c) = cursor.take() {
                            path = format!("/v2/workflows/dlq?count=20&cursor={c}");
                        }
                        ("list", Method::GET, path, None)
                    }
                };
                let sent = http
                    .request(method, format!("{base}{path}"))
                    .bearer_auth(TOKEN)
                    .send()
                    .await;
                let r = match sent {
                    Ok(r) => r,
                    Err(e) => {
                        transport_errors
                            .lock()
                            .expect("lock")
                            .push(format!("{path}: {e}"));
                        continue;
                    }
                };
                let status = r.status();
                let retry_after = r
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let body = match r.text().await {
                    Ok(b) => b,
                    Err(e) => {
                        transport_errors
                            .lock()
                            .expect("lock")
                            .push(format!("{path} body: {e}"));
                        continue;
                    }
                };
                if route == "list" && status.is_success() {
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    cursor = v["cursor"].as_str().map(str::to_string);
                }
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    // What a well-behaved client does; short here so the test stays short.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                answers.lock().expect("lock").push(Answer {
                    route,
                    acted_on,
                    status,
                    retry_after,
                    body,
                });
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    let transport_errors = std::mem::take(&mut *transport_errors.lock().expect("lock"));
    assert!(
        transport_errors.is_empty(),
        "transport errors: {transport_errors:?}"
    );
    let answers = std::mem::take(&mut *answers.lock().expect("lock"));

    let mut by_route: HashMap<(&str, u16), usize> = HashMap::new();
    for a in &answers {
        *by_route.entry((a.route, a.status.as_u16())).or_default() += 1;
        let shed = a.status == StatusCode::SERVICE_UNAVAILABLE;
        assert!(
            a.status.is_success() || shed,
            "{} answered {}: {}",
            a.route,
            a.status,
            a.body
        );
        if shed {
            assert_eq!(
                a.retry_after.as_deref(),
                Some("1"),
                "{}: {}",
                a.route,
                a.body
            );
            assert!(a.body.contains("overloaded"), "{}: {}", a.route, a.body);
        }
    }
    eprintln!("answers by (route, status): {by_route:?}");
    for route in ["list", "get"] {
        assert!(
            by_route.get(&(route, 200)).copied().unwrap_or(0) > 0,
            "no {route} succeeded: {by_route:?}"
        );
    }
    // Actions: at least one went through (which kinds, on a slow machine, is chance).
    let acted_ok: usize = ["restart", "resume", "delete"]
        .iter()
        .map(|r| by_route.get(&(*r, 200)).copied().unwrap_or(0))
        .sum();
    assert!(acted_ok > 0, "no action succeeded: {by_route:?}");
    let shed_reads =
        by_route.get(&("list", 503)).unwrap_or(&0) + by_route.get(&("get", 503)).unwrap_or(&0);
    let shed_actions: usize = ["restart", "resume", "delete"]
        .iter()
        .map(|r| by_route.get(&(*r, 503)).copied().unwrap_or(0))
        .sum();
    eprintln!("shed: {shed_reads} reads, {shed_actions} actions");
    assert!(
        shed_actions > 0,
        "the action bound never shed: {by_route:?}"
    );

    // Exactly once: each restart or resume answered 2xx wrote one execution of its kind, a
    // shed one wrote none, and a delete answered 2xx took its entry out of the view.
    let mut expected: HashMap<String, pb::workflow_execution::Kind> = HashMap::new();
    let mut not_acted: HashSet<String> = HashSet::new();
    let mut deleted = 0;
    for a in &answers {
        let Some((id, kind)) = &a.acted_on else {
            continue;
        };
        if !a.status.is_success() {
            not_acted.insert(id.clone());
        } else if *kind == pb::workflow_execution::Kind::Unspecified {
            deleted += 1;
            assert!(
                app.service.view.get(id).is_none(),
                "deleted {id} still listed"
            );
        } else {
            expected.insert(id.clone(), *kind);
        }
    }
    let execs = app.executions();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for e in &execs {
        *seen.entry(e.source_dlq_id.clone()).or_default() += 1;
        assert_eq!(
            expected.get(&e.source_dlq_id).map(|k| *k as i32),
            Some(e.kind),
            "an execution for {} that no 2xx action asked for, or of another kind",
            e.source_dlq_id
        );
    }
    assert_eq!(
        execs.len(),
        expected.len(),
        "one execution per action answered 2xx"
    );
    assert!(seen.values().all(|n| *n == 1), "an entry republished twice");
    for id in &not_acted {
        assert!(
            app.service.view.get(id).is_some(),
            "shed action on {id} acted"
        );
    }
    assert_eq!(
        app.service.view.len(),
        ENTRIES - expected.len() - deleted,
        "every acted-on entry, and only those, left the view"
    );
    app.stop().await;
}

/// Clients that do not read their answers hold no slot: hyper keeps one answer per connection
/// and reads nothing more from it until that is sent, so such clients cost a buffer each
/// (bounded by the connections) and never shed the others' reads. Probes are never shed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_do_not_read_their_answers_starve_no_one() {
    use tokio::io::AsyncWriteExt;

    let mut cfg = common::test_config();
    cfg.http_max_inflight_reads = 2;
    let app = TestApp::spawn(cfg).await;
    let events: Vec<pb::FailureEvent> = (0..100).map(failure_event).collect();
    app.ingest(&events, 0).await;
    // Four clients (twice the bound) pipeline hundreds of page requests and never read: the
    // answers (tens of MB each) fill the socket buffers and the connections stall.
    let request = format!(
        "GET /v2/workflows/dlq?count=100 HTTP/1.1\r\nHost: dlq\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    );
    let mut slow = Vec::new();
    for _ in 0..4 {
        let mut s = tokio::net::TcpStream::connect(app.service.http_addr)
            .await
            .expect("connect");
        s.write_all(request.repeat(400).as_bytes())
            .await
            .expect("pipelined requests");
        slow.push(s);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..20 {
        let r = app.get("/v2/workflows/dlq?count=10").await;
        assert_eq!(r.status(), StatusCode::OK, "a read shed by stalled readers");
    }
    let ready = app
        .http
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), StatusCode::OK);
    drop(slow);
    app.stop().await;
}
