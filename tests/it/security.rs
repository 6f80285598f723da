//! Security: authentication on every API route (table-driven from [`ROUTES`]), nothing leaked
//! without it, the generated token, bounded requests, and Kafka credentials kept out of logs
//! and `/v1/status`. Runs on both brokers.

use crate::common;

use std::{
    io::{BufRead, BufReader, Read},
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::*;

/// Whether a route needs the bearer token.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Auth {
    Required,
    Open,
}

/// Every HTTP route of docs/design.md §5 (`{id}` is replaced by a stored entry's id). Add new
/// routes here: each `Required` one is checked to answer 401 to every bad credential below, and to
/// leak nothing. Routes not served by this build yet (404 "no such route" / 405 with a valid token)
/// are reported as pending and must still not succeed without a token.
const ROUTES: &[(&str, &str, Auth)] = &[
    ("GET", "/healthz", Auth::Open),
    ("GET", "/readyz", Auth::Open),
    ("GET", "/metrics", Auth::Open),
    ("GET", "/v1/status", Auth::Required),
    ("GET", "/openapi.json", Auth::Required),
    ("GET", "/v2/dlq", Auth::Required),
    ("GET", "/v2/dlq?source=workflow&count=100", Auth::Required),
    ("GET", "/v2/workflows/dlq", Auth::Required),
    ("GET", "/v2/dlq/{id}", Auth::Required),
    ("GET", "/v2/workflows/dlq/{id}", Auth::Required),
    ("DELETE", "/v2/dlq/{id}", Auth::Required),
    ("DELETE", "/v2/workflows/dlq/{id}", Auth::Required),
    ("DELETE", "/v2/dlq", Auth::Required),
    ("DELETE", "/v2/workflows/dlq", Auth::Required),
    ("POST", "/v2/workflows/dlq/restart/{id}", Auth::Required),
    ("POST", "/v2/workflows/dlq/resume/{id}", Auth::Required),
    ("POST", "/v2/workflows/dlq/callback/{id}", Auth::Required),
    ("POST", "/v2/workflows/dlq/restart", Auth::Required),
    ("POST", "/v2/workflows/dlq/resume", Auth::Required),
    ("DELETE", "/v2/workflows/dlq/callback/{id}", Auth::Required),
    ("POST", "/v2/dlq/retry/{id}", Auth::Required),
    ("POST", "/v2/dlq/retry", Auth::Required),
    ("GET", "/v2/workflows/dlq/jobs", Auth::Required),
    ("POST", "/v2/workflows/dlq/jobs", Auth::Required),
    ("GET", "/v2/workflows/dlq/jobs/job-x", Auth::Required),
    ("DELETE", "/v2/workflows/dlq/jobs/job-x", Auth::Required),
    ("GET", "/v2/workflows/dlq/groups", Auth::Required),
    (
        "GET",
        "/v2/dlq/groups?signature=0123456789abcdef",
        Auth::Required,
    ),
    (
        "POST",
        "/v2/workflows/dlq/restart/{id}?force=true",
        Auth::Required,
    ),
];

fn bad_authorizations() -> Vec<(String, Option<String>)> {
    let mut one_byte_off = TOKEN.as_bytes().to_vec();
    one_byte_off[0] ^= 1;
    let first = String::from_utf8(one_byte_off).expect("ascii");
    let mut last_off = TOKEN.as_bytes().to_vec();
    let n = last_off.len() - 1;
    last_off[n] ^= 0x20;
    let last = String::from_utf8(last_off).expect("ascii");
    vec![
        ("no Authorization header".into(), None),
        ("wrong token".into(), Some("Bearer wrong-token".into())),
        ("first byte differs".into(), Some(format!("Bearer {first}"))),
        ("last byte differs".into(), Some(format!("Bearer {last}"))),
        (
            "one byte short".into(),
            Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        ),
        ("one byte more".into(), Some(format!("Bearer {TOKEN}x"))),
        ("empty bearer".into(), Some("Bearer ".into())),
        ("token without scheme".into(), Some(TOKEN.into())),
        ("Basic scheme".into(), Some(format!("Basic {TOKEN}"))),
        ("token twice".into(), Some(format!("Bearer {TOKEN}{TOKEN}"))),
    ]
}

fn request(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    auth: Option<&str>,
) -> reqwest::RequestBuilder {
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut r = http.request(m, url).timeout(Duration::from_secs(30));
    if let Some(a) = auth {
        r = r.header("authorization", a);
    }
    if method != "GET" {
        r = r
            .header("content-type", "application/json")
            .body(r#"{"dlqIds":["x"]}"#);
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_route_answers_401_to_every_bad_credential_and_leaks_nothing() {
    let app = TestApp::spawn(test_config()).await;
    let p = producer(&app.bootstrap());
    let mut ev = failure_event(7);
    ev.body = b"SECRET-PAYLOAD-4f1c".to_vec();
    let id = workflow_dlq::wire::ids::dlq_id_for_event(&ev.event_id);
    publish(&p, &app.topics().failures, &ev, false).await;
    app.wait_entries(1, Duration::from_secs(60)).await;

    let bad = bad_authorizations();
    let mut checked = 0;
    for (method, path, auth) in ROUTES {
        let url = format!("{}{}", app.base, path.replace("{id}", &id));
        if *auth == Auth::Open {
            let r = request(&app.http, method, &url, None)
                .send()
                .await
                .expect("open");
            assert_eq!(r.status(), 200, "{method} {path} is open");
            continue;
        }
        for (what, authorization) in &bad {
            let r = request(&app.http, method, &url, authorization.as_deref())
                .send()
                .await
                .expect("response");
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            assert!(
                !body.contains(&id) && !body.contains("SECRET-PAYLOAD"),
                "{method} {path} ({what}) leaked the entry: {body}"
            );
            assert!(
                status == 401 || status == 404 || status == 405,
                "{method} {path} ({what}) answered {status}: {body}"
            );
            if status == 401 {
                let v: serde_json::Value = serde_json::from_str(&body).expect("JSON error");
                assert!(v["error"].is_string(), "{body}");
            }
            checked += 1;
        }
    }
    // Nothing changed without a token (no action taken by a refused request).
    assert!(app.service.view.get(&id).is_some());

    // Which routes this build serves: with the valid token, anything but the router's own
    // "no such route" 404 or a 405. Each served route must have answered 401 above.
    let mut pending = Vec::new();
    for (method, path, auth) in ROUTES.iter().filter(|r| r.2 == Auth::Required) {
        let url = format!("{}{}", app.base, path.replace("{id}", &id));
        let served = match request(&app.http, method, &url, Some(&format!("Bearer {TOKEN}")))
            .send()
            .await
        {
            Ok(r) => {
                let status = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                !(status == 405 || (status == 404 && body.contains("no such route")))
            }
            Err(_) => true, // e.g. a slow action: the route exists
        };
        if served {
            for (what, authorization) in &bad {
                let r = request(&app.http, method, &url, authorization.as_deref())
                    .send()
                    .await
                    .expect("response");
                assert_eq!(r.status(), 401, "{method} {path} ({what}) {auth:?}");
            }
        } else {
            pending.push(format!("{method} {path}"));
        }
    }
    assert!(pending.is_empty(), "routes not served: {pending:?}");
    eprintln!(
        "{checked} refused requests over {} routes, then each route checked served and refused \
         again with every bad token",
        ROUTES.len()
    );
    app.stop().await;
}

#[tokio::test]
async fn bodies_and_headers_are_bounded() {
    let app = TestApp::spawn(test_config()).await;
    let big = vec![b'x'; 2 * workflow_dlq::http::MAX_BODY_BYTES];
    for (method, path) in [
        ("POST", "/v2/workflows/dlq/restart"),
        ("DELETE", "/v2/dlq"),
        ("GET", "/v2/dlq"),
        ("POST", "/v1/status"),
    ] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let r = app
            .http
            .request(m, format!("{}{path}", app.base))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .expect("response");
        assert_eq!(
            r.status(),
            413,
            "{method} {path} with a {} byte body",
            big.len()
        );
    }
    // A 1 MiB header, and 500 headers: refused before any handler runs.
    let huge = "h".repeat(1024 * 1024);
    let r = app
        .http
        .get(format!("{}/v1/status", app.base))
        .bearer_auth(TOKEN)
        .header("x-huge", huge)
        .send()
        .await;
    let status = r.map(|r| r.status().as_u16());
    assert!(
        matches!(status, Ok(431) | Ok(400) | Err(_)),
        "a 1 MiB header: {status:?}"
    );
    eprintln!("a 1 MiB header: {status:?}");
    let mut many = app
        .http
        .get(format!("{}/v1/status", app.base))
        .bearer_auth(TOKEN);
    for i in 0..500 {
        many = many.header(format!("x-h{i}"), "v");
    }
    let status = many.send().await.map(|r| r.status().as_u16());
    assert!(
        matches!(status, Ok(431) | Ok(400) | Err(_)),
        "500 headers: {status:?}"
    );
    eprintln!("500 headers: {status:?}");
    // A 200 KB URL (sent raw: HTTP clients refuse to build it).
    let request = format!(
        "GET /v2/dlq?label={} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n",
        "l".repeat(200 * 1024)
    );
    let base = app.base.clone();
    // The service runs on this test's runtime: block elsewhere.
    let status = tokio::task::spawn_blocking(move || raw_status(&base, &request))
        .await
        .expect("raw request");
    assert_eq!(status.as_deref(), Some("414"), "a 200 KB URL");
    // Still serving.
    assert_eq!(app.get("/v1/status").await.status(), 200);
    app.stop().await;
}

/// Sends a raw request; the status code of the answer, or `None` if the connection was closed.
fn raw_status(base: &str, request: &str) -> Option<String> {
    use std::io::Write;
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let _ = s.write_all(request.as_bytes());
    let mut head = [0u8; 64];
    let n = s.read(&mut head).ok()?;
    let text = String::from_utf8_lossy(&head[..n]).to_string();
    text.split(' ').nth(1).map(str::to_string)
}

/// Runs the binary with `env`, returns the child, the base URL, and everything it printed to
/// stdout before the URL line and after, and to stderr, once stopped.
struct Run {
    child: Child,
    base: String,
    stdout_head: Vec<String>,
    stdout: std::thread::JoinHandle<String>,
    stderr: std::thread::JoinHandle<String>,
}

fn run_binary(cfg: &workflow_dlq::Config, env: &[(&str, &str)]) -> Run {
    let mut cmd = common::serve_command(cfg);
    cmd.env_remove("DLQ_API_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("binary starts");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut stdout_head = Vec::new();
    let mut base = String::new();
    let mut line = String::new();
    while out.read_line(&mut line).unwrap_or(0) > 0 {
        let l = line.trim_end().to_string();
        line.clear();
        stdout_head.push(l.clone());
        if let Some(url) = l.strip_prefix("HTTP API on ") {
            base = url.to_string();
        }
        if !base.is_empty()
            && (l.starts_with("API token") || env.iter().any(|(k, _)| *k == "DLQ_API_TOKEN"))
        {
            break;
        }
    }
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let mut err = child.stderr.take().expect("stderr");
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    Run {
        child,
        base,
        stdout_head,
        stdout,
        stderr,
    }
}

impl Run {
    /// SIGTERM, then everything printed after the start-up lines (stdout, stderr).
    fn stop(mut self) -> (String, String) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
        }
        let _ = self.child.wait();
        (
            self.stdout.join().unwrap_or_default(),
            self.stderr.join().unwrap_or_default(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_token_is_random_printed_once_and_never_logged() {
    let http = reqwest::Client::new();
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let run = run_binary(&test_config(), &[("RUST_LOG", "debug,librdkafka=debug")]);
        let line = run
            .stdout_head
            .iter()
            .find(|l| l.starts_with("API token (generated"))
            .cloned()
            .expect("the generated token is printed");
        let token = line.rsplit(' ').next().expect("token").to_string();
        assert_eq!(token.len(), 64, "256 bits in hex: {token}");
        assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
        // It works, and a request carrying it is not logged with it.
        eventually(Duration::from_secs(60), "ready", || {
            let (http, url) = (http.clone(), format!("{}/readyz", run.base));
            async move {
                http.get(url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .await;
        let ok = http
            .get(format!("{}/v1/status", run.base))
            .bearer_auth(&token)
            .send()
            .await
            .expect("status");
        assert_eq!(ok.status(), 200);
        let status = ok.text().await.expect("body");
        assert!(!status.contains(&token), "/v1/status shows the token");
        let (stdout_rest, stderr) = run.stop();
        let printed = run_count(&token, &stdout_rest) + run_count(&token, &stderr);
        assert_eq!(printed, 0, "the token appears again after its one print");
        assert!(
            stderr.len() > 1000,
            "debug logs were written ({} bytes)",
            stderr.len()
        );
        tokens.push(token);
    }
    assert_ne!(tokens[0], tokens[1], "each start makes a new token");
}

fn run_count(needle: &str, hay: &str) -> usize {
    hay.matches(needle).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_credentials_never_appear_in_logs_or_status() {
    const SECRETS: [&str; 2] = ["sasl-pw-Zq81xX", "ssl-key-pw-Pt42yY"];
    // SASL/TLS settings pass through to librdkafka; with the (plaintext) test broker the
    // service still runs, and the secrets must stay secret whatever we or librdkafka log at
    // debug level.
    let run = run_binary(
        &test_config(),
        &[
            ("DLQ_API_TOKEN", TOKEN),
            ("RUST_LOG", "debug,librdkafka=debug,rdkafka=debug"),
            ("DLQ_LOG_FORMAT", "json"),
            ("DLQ_KAFKA_SASL_USERNAME", "dlq-user"),
            ("DLQ_KAFKA_SASL_PASSWORD", SECRETS[0]),
            ("DLQ_KAFKA_SSL_KEY_PASSWORD", SECRETS[1]),
        ],
    );
    let http = reqwest::Client::new();
    eventually(Duration::from_secs(60), "ready", || {
        let (http, url) = (http.clone(), format!("{}/readyz", run.base));
        async move {
            http.get(url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    let mut shown = String::new();
    for path in ["/v1/status", "/metrics", "/readyz", "/openapi.json"] {
        let r = http
            .get(format!("{}{path}", run.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("response");
        shown.push_str(&r.text().await.unwrap_or_default());
    }
    let head = run.stdout_head.join("\n");
    let (stdout, stderr) = run.stop();
    assert!(shown.contains("\"version\""), "status was read: {shown}");
    for s in SECRETS {
        for (what, text) in [
            ("stdout", &head),
            ("stdout", &stdout),
            ("logs", &stderr),
            ("status/metrics", &shown),
        ] {
            assert!(!text.contains(s), "{s} appears in {what}");
        }
    }
    eprintln!(
        "{} bytes of debug logs, {} of stdout, {} of status/metrics: no credential in them",
        stderr.len(),
        head.len() + stdout.len(),
        shown.len()
    );

    // A secret setting librdkafka refuses: its configuration error quotes the value. The
    // service must stop at once with the property named and the value masked.
    const REFUSED: &str = "oauth-secret-Mk93zZ";
    let started = std::time::Instant::now();
    let mut run = run_binary(
        &test_config(),
        &[
            ("DLQ_API_TOKEN", TOKEN),
            ("RUST_LOG", "debug"),
            ("DLQ_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET", REFUSED),
        ],
    );
    let mut exited = None;
    while started.elapsed() < Duration::from_secs(30) && exited.is_none() {
        exited = run.child.try_wait().expect("wait");
        std::thread::sleep(Duration::from_millis(100));
    }
    let code = exited.map(|s| s.code());
    let head = run.stdout_head.join("\n");
    let (stdout, stderr) = run.stop();
    let all = format!("{head}\n{stdout}\n{stderr}");
    assert!(
        !all.contains(REFUSED),
        "the refused secret was printed: {all}"
    );
    if let Some(code) = code {
        assert_ne!(code, Some(0));
        assert!(stderr.contains("<redacted>"), "{stderr}");
        eprintln!(
            "refused secret setting: exit {code:?} after {:?}, value masked",
            started.elapsed()
        );
    } else {
        // A build with OAuth/OIDC support accepts the setting: then it only must not be shown.
        eprintln!("this librdkafka build accepts OAuth/OIDC settings; checked it is not logged");
    }
}
