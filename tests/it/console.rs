//! The web console (issue 16). The browser tests drive a real headless Chromium over WebDriver
//! (Debian's `chromium` + `chromium-driver`; `.ci/run` installs them), against the service on
//! the embedded broker: sign in, filter, open an entry, restart it (the executions topic gets
//! the run), bulk-delete by filter after the dry-run count, cancel a running job, sign out; a
//! read-only token sees no action; attacker text stays text; the browser logs no error.
//! Screenshots of each page go to `target/console-screenshots/`.
//!
//! The first test needs no browser: the security headers, cookie attributes, CSRF and
//! same-origin checks, and scope enforcement, over plain HTTP.

use std::{
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::{redirect::Policy, StatusCode};
use serde_json::{json, Value};
use workflow_dlq::{tokens::ApiToken, tokens::Scope, wire::pb, Config};

use crate::common::{self, failure_event, ChildGuard, TestApp};

const OPS: &str = "ops-token-0123456789abcdef";
const RO: &str = "read-token-0123456789abcdef";
/// Sets `window.__xss` if it ever runs as markup; shown as text it does nothing.
const XSS: &str = "<img src=x onerror=\"window.__xss=1\"><script>window.__xss=2</script>";
const NEEDS: &str = "needs Debian chromium + chromium-driver (.ci/run installs them)";

fn config() -> Config {
    let mut cfg = common::test_config();
    cfg.api_tokens = vec![
        ApiToken {
            name: "ops".into(),
            scope: Scope::Operate,
            token: OPS.to_string().into(),
        },
        ApiToken {
            name: "ro".into(),
            scope: Scope::Read,
            token: RO.to_string().into(),
        },
    ];
    cfg
}

/// An entry whose every attacker-controlled text is the payload.
fn xss_event() -> pb::FailureEvent {
    let mut ev = failure_event(777);
    ev.error_message = XSS.into();
    ev.body = XSS.as_bytes().to_vec();
    ev.response_body = XSS.as_bytes().to_vec();
    ev.labels = vec!["xss".into()];
    ev.header.insert(
        "X-Evil".into(),
        pb::HeaderValues {
            values: vec![XSS.into()],
        },
    );
    ev
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client")
}

/// Signs in over plain HTTP; the cookie pair (`name=value`) and the Set-Cookie line.
async fn sign_in(http: &reqwest::Client, base: &str, token: &str) -> (String, String) {
    let r = http
        .post(format!("{base}/console/signin"))
        .form(&[("token", token)])
        .send()
        .await
        .expect("sign in");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let set = r.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_string();
    let pair = set.split(';').next().expect("pair").to_string();
    (pair, set)
}

/// The CSRF token rendered into a page's forms.
fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..].split('"').next().expect("value").to_string()
}

#[tokio::test]
async fn console_pages_carry_the_csp_and_forms_need_session_csrf_same_origin_and_scope() {
    let app = TestApp::spawn(config()).await;
    app.ingest(&[failure_event(1)], 0).await;
    let id = app
        .service
        .view
        .list(&workflow_dlq::store::EntryFilter::all(), None, 1)
        .entries[0]
        .dlq_id
        .clone();
    let http = no_redirects();
    let base = &app.base;

    // Not signed in: pages send to the sign-in form; `/` goes to the console.
    let r = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(r.headers()["location"], "/console");
    let r = http
        .get(format!("{base}/console/entries"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/console/signin");
    assert!(r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));

    // A wrong token: 401, no cookie.
    let r = http
        .post(format!("{base}/console/signin"))
        .form(&[("token", "not-a-token-at-all-0000")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get("set-cookie").is_none());

    let (ops, set) = sign_in(&http, base, OPS).await;
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(
        !set.contains(OPS),
        "the token itself is never in the cookie"
    );
    let page = http
        .get(format!("{base}/console/entries/{id}"))
        .header("cookie", &ops)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(csp, workflow_dlq::console::CSP);
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("style=") && !html.contains("<script>"),
        "no inline style or script"
    );
    let csrf = csrf_of(&html);

    let act = |cookie: Option<&str>, csrf: Option<&str>, origin: Option<&str>| {
        let mut req = http.post(format!("{base}/console/entries/{id}/act"));
        if let Some(c) = cookie {
            req = req.header("cookie", c.to_string());
        }
        if let Some(o) = origin {
            req = req.header("origin", o.to_string());
        }
        let mut form = vec![("action", "DELETE".to_string())];
        if let Some(t) = csrf {
            form.push(("csrf", t.to_string()));
        }
        req.form(&form).send()
    };
    // No session, no CSRF token, a foreign origin, a forged cookie: refused, nothing done.
    assert_eq!(
        act(None, Some(&csrf), None).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        act(Some(&ops), None, None).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        act(Some(&ops), Some("x"), None).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        act(Some(&ops), Some(&csrf), Some("https://evil.example"))
            .await
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN
    );
    let forged = format!("{}x", ops);
    assert_eq!(
        act(Some(&forged), Some(&csrf), None)
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // A read-only session: its pages have no action form, and the server refuses anyway.
    let (ro, _) = sign_in(&http, base, RO).await;
    let ro_html = http
        .get(format!("{base}/console/entries/{id}"))
        .header("cookie", &ro)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!ro_html.contains("entry-actions") && !ro_html.contains("/act\""));
    let r = act(Some(&ro), Some(&csrf_of(&ro_html)), None)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("needs `operate`"));
    // The CSRF token of one session does not work for another.
    assert_eq!(
        act(Some(&ro), Some(&csrf), None).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(app.service.view.len(), 1, "nothing was deleted");

    // The operator's own form, same origin: deleted.
    let r = act(Some(&ops), Some(&csrf), Some(base)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("Deleted"));
    assert_eq!(app.service.view.len(), 0);

    // A bulk restart by filter with overrides: the dry run's count, then the job; the
    // execution carries the overrides (parsed by the JSON API's own header parser).
    app.ingest(&[failure_event(2)], 0).await;
    let bulk = |confirm: bool, retries: &'static str| {
        let mut form = vec![
            ("csrf", csrf.clone()),
            ("action", "RESTART".to_string()),
            ("target", "filter".to_string()),
            ("filter", "label=label-0".to_string()),
            ("retries", retries.to_string()),
            ("delay", "10s".to_string()),
            ("label", "console".to_string()),
            ("flowControlKey", "tenant-9".to_string()),
            ("flowControlValue", "parallelism=1, rate=5".to_string()),
        ];
        if confirm {
            form.push(("confirm", "yes".to_string()));
        }
        http.post(format!("{base}/console/bulk"))
            .header("cookie", &ops)
            .form(&form)
            .send()
    };
    let r = bulk(false, "-1").await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("`Upstash-Retries` must be an integer"));
    let r = bulk(false, "2").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let confirm_page = r.text().await.unwrap();
    assert!(
        confirm_page.contains("id=\"dry-run-count\">1<"),
        "{confirm_page}"
    );
    assert!(app.executions().is_empty(), "a dry run acts on nothing");
    let r = bulk(true, "2").await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("/console/jobs/job-"));
    common::eventually(Duration::from_secs(30), "the job's execution", || {
        let execs = app.executions();
        async move { !execs.is_empty() }
    })
    .await;
    let exec = &app.executions()[0];
    assert_eq!((exec.retries, exec.delay.as_str()), (2, "10s"));
    assert_eq!(exec.labels, ["console"]);
    assert_eq!(
        exec.flow_control.as_ref().map(|f| (f.key.as_str(), f.rate)),
        Some(("tenant-9", 5))
    );

    // A record ingest cannot read goes to the rejected topic: the Rejected page reads its tail
    // and shows it (its key is attacker text too: escaped), and the overview counts it.
    let p = common::producer(&app.bootstrap());
    common::publish_raw(
        &p,
        &app.topics().failures,
        Some(b"<b>bad-key</b>"),
        b"\xff not a failure envelope",
        None,
        None,
    )
    .await;
    let mut rejected_page = String::new();
    let started = std::time::Instant::now();
    while !rejected_page.contains("id=\"rejected-total\">1<") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{rejected_page}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        rejected_page = http
            .get(format!("{base}/console/rejected"))
            .header("cookie", &ops)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    }
    assert!(
        rejected_page.contains("&lt;b&gt;bad-key&lt;/b&gt;"),
        "{rejected_page}"
    );
    assert!(!rejected_page.contains("<b>bad-key"));
    assert!(
        rejected_page.contains(&app.topics().failures),
        "the source is named"
    );
    let overview = http
        .get(format!("{base}/console"))
        .header("cookie", &ops)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(overview.contains("id=\"stat-rejected\">1<"), "{overview}");

    let r = http
        .get(format!("{base}/console/nope"))
        .header("cookie", &ops)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.text().await.unwrap().contains("no such console page"));

    // The JSON API's errors stay JSON; a bad console query is an HTML page saying why.
    let r = http
        .get(format!("{base}/console/entries?responseStatus=abc"))
        .header("cookie", &ops)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("`responseStatus` must be integers"));
    app.stop().await;
}

// ---- the browser ----

/// A short pause before looking again (the page was replaced while it was read).
async fn pause(_why: &fantoccini::error::CmdError) {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// chromedriver on `port`, killed on drop, and a headless Chromium session through it.
struct Browser {
    client: Client,
    port: u16,
    session: String,
    _driver: ChildGuard,
}

impl Drop for Browser {
    /// Ends the WebDriver session with a plain blocking request, so chromedriver quits
    /// Chromium also when the test failed (the async client cannot run while a panic unwinds
    /// the test's runtime, and killing chromedriver alone leaves the browser behind).
    fn drop(&mut self) {
        use std::io::{Read, Write};
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                s,
                "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
                 Content-Length: 0\r\n\r\n",
                self.session
            );
            let _ = s.read_to_end(&mut Vec::new());
        }
    }
}

impl Browser {
    async fn start(port: u16) -> Browser {
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts (apt-get install chromium chromium-driver)");
        let driver = ChildGuard::new(driver);
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver on {port}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900"],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("WebDriver session");
        let session = client
            .session_id()
            .await
            .expect("session id")
            .expect("a session");
        Browser {
            client,
            port,
            session,
            _driver: driver,
        }
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("goto");
    }

    async fn css(&self, sel: &str) -> fantoccini::elements::Element {
        let found = self
            .client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(sel))
            .await;
        match found {
            Ok(e) => e,
            Err(e) => {
                // What the browser shows, for the failure to be read.
                self.shot("failure").await;
                let url = self.client.current_url().await.map(|u| u.to_string());
                let src = self.client.source().await.unwrap_or_default();
                panic!(
                    "no `{sel}` on the page {url:?}: {e}\n{}",
                    src.chars().take(3000).collect::<String>()
                )
            }
        }
    }

    async fn count(&self, sel: &str) -> usize {
        self.client
            .find_all(Locator::Css(sel))
            .await
            .expect("find_all")
            .len()
    }

    /// The element's text; found again if the page changed under it (after a click).
    async fn text(&self, sel: &str) -> String {
        let started = Instant::now();
        loop {
            match self.css(sel).await.text().await {
                Ok(t) => return t,
                Err(e) if started.elapsed() < Duration::from_secs(20) => pause(&e).await,
                Err(e) => panic!("text of `{sel}`: {e}"),
            }
        }
    }

    async fn click(&self, sel: &str) {
        self.css(sel).await.click().await.expect("click");
    }

    async fn fill(&self, sel: &str, text: &str) {
        let e = self.css(sel).await;
        e.clear().await.expect("clear");
        e.send_keys(text).await.expect("type");
    }

    /// Waits until the text of `sel` satisfies `ok`.
    async fn wait_text(&self, sel: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let t = self.text(sel).await;
            if ok(&t) {
                return t;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "`{sel}` never became {what}: last `{t}`"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn shot(&self, name: &str) {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }

    /// Waits until the browser is at `path` (a form's submission may still be loading).
    async fn wait_path(&self, path: &str) {
        let started = Instant::now();
        while self.path().await != path {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "never reached {path}: at {}",
                self.path().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn path(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("url")
            .path()
            .to_string()
    }

    /// The browser's console since the last call (chromedriver's log endpoint): errors, CSP
    /// violations, failed loads all show up here.
    async fn log_errors(&self) -> Vec<String> {
        let id = &self.session;
        let v: Value = reqwest::Client::new()
            .post(format!(
                "http://127.0.0.1:{}/session/{id}/se/log",
                self.port
            ))
            .json(&json!({ "type": "browser" }))
            .send()
            .await
            .expect("log endpoint")
            .json()
            .await
            .expect("log JSON");
        let entries = v["value"].as_array().cloned().expect("log entries");
        entries
            .iter()
            .filter(|e| {
                let msg = e["message"].as_str().unwrap_or_default();
                e["level"] == "SEVERE" || msg.contains("Content Security Policy")
            })
            .map(|e| e.to_string())
            .collect()
    }

    async fn assert_no_errors(&self, page: &str) {
        let errors = self.log_errors().await;
        assert!(
            errors.is_empty(),
            "browser console errors on {page}: {errors:#?}"
        );
    }

    async fn xss_never_ran(&self) {
        let v = self
            .client
            .execute("return typeof window.__xss;", vec![])
            .await
            .expect("execute");
        assert_eq!(v, json!("undefined"), "an injected script ran");
    }

    async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

#[tokio::test]
#[ignore = "needs Debian chromium + chromium-driver (.ci/run installs them)"]
async fn an_operator_signs_in_filters_restarts_bulk_deletes_cancels_a_job_and_signs_out() {
    let _ = NEEDS;
    let app = TestApp::spawn(config()).await;
    // 60 ordinary entries (4 workflow URLs, labels label-0/label-1) and the XSS one.
    let mut events: Vec<_> = (0..60).map(failure_event).collect();
    events.push(xss_event());
    app.ingest(&events, 0).await;
    let b = Browser::start(9521).await;
    let base = &app.base;
    let timed = Instant::now();

    // Sign in.
    b.goto(&format!("{base}/console")).await;
    b.wait_path("/console/signin").await;
    b.shot("signin").await;
    b.fill("#token", OPS).await;
    b.click("#sign-in").await;
    assert_eq!(b.text("#who").await, "ops · operate");
    assert_eq!(b.text("#stat-entries").await, "61");
    b.shot("overview").await;
    b.assert_no_errors("overview").await;

    // The list, then a filter (workflow 1 and label-1: entries 1, 5, …, 57 → 15; the XSS
    // entry has workflow 1 too, but its own label).
    b.click("a[href='/console/entries']").await;
    assert_eq!(b.text("#match-count").await, "61");
    b.shot("list").await;
    b.fill("#f-workflowUrl", "https://app.example.com/api/workflow/1")
        .await;
    b.fill("#f-label", "label-1").await;
    b.click("#apply-filter").await;
    assert_eq!(b.wait_text("#match-count", "15", |t| t == "15").await, "15");
    assert_eq!(b.count("#entries tbody tr").await, 15);
    b.assert_no_errors("list").await;

    // Open one and restart it: the executions topic gets the run.
    b.click("#entries tbody tr a.entry-link").await;
    let dlq_id = b.text("#dlq-id").await;
    assert_eq!(
        b.text("#workflow-url").await,
        "https://app.example.com/api/workflow/1"
    );
    assert!(b.text("#request-body").await.contains("\"order\""));
    b.shot("entry").await;
    b.click("#restart").await;
    let result = b.text("#result").await;
    assert!(result.contains("New run"), "{result}");
    let run_id = b.text("code.run-id").await;
    common::eventually(Duration::from_secs(30), "the restart's execution", || {
        let found = app
            .executions()
            .iter()
            .any(|e| e.workflow_run_id == run_id && e.source_dlq_id == dlq_id);
        async move { found }
    })
    .await;
    assert!(
        app.service.view.get(&dlq_id).is_none(),
        "a restarted entry leaves the DLQ"
    );
    b.assert_no_errors("entry").await;

    // Bulk delete by filter: label-0 is the even entries, 30; the dry run counts them first.
    b.goto(&format!("{base}/console/entries?label=label-0"))
        .await;
    assert_eq!(b.text("#match-count").await, "30");
    b.css("#bulk-action")
        .await
        .select_by_value("DELETE")
        .await
        .expect("select");
    b.click("#act-filter").await;
    assert_eq!(b.text("#dry-run-count").await, "30");
    assert_eq!(app.service.view.len(), 60, "a dry run acts on nothing");
    b.shot("confirm").await;
    b.click("#confirm").await;
    b.wait_text("#job-state", "done", |t| t == "done").await;
    assert_eq!(b.text("#job-succeeded").await, "30");
    b.shot("job-done").await;
    common::eventually(Duration::from_secs(30), "30 entries deleted", || {
        let n = app.service.view.len();
        async move { n == 30 }
    })
    .await;
    b.assert_no_errors("bulk delete").await;

    // Two rows ticked, resumed as a selection (the script counts the ticks on the button).
    b.goto(&format!("{base}/console/entries?label=label-1"))
        .await;
    let boxes = b
        .client
        .find_all(Locator::Css("input[name='dlqIds']"))
        .await
        .expect("rows");
    assert!(boxes.len() >= 2);
    boxes[0].click().await.expect("tick");
    boxes[1].click().await.expect("tick");
    b.wait_text("#selected-count", "2", |t| t == "2").await;
    b.css("#bulk-action")
        .await
        .select_by_value("RESUME")
        .await
        .expect("select");
    b.click("#act-selected").await;
    assert_eq!(b.text("#dry-run-count").await, "2");
    b.click("#confirm").await;
    b.wait_text("#job-state", "done", |t| t == "done").await;
    assert_eq!(b.text("#job-succeeded").await, "2");
    common::eventually(Duration::from_secs(30), "28 entries left", || {
        let n = app.service.view.len();
        async move { n == 28 }
    })
    .await;

    // A slow job (1 entry per second) over everything left, canceled while it runs.
    b.goto(&format!("{base}/console/entries")).await;
    b.css("#bulk-action")
        .await
        .select_by_value("RESTART")
        .await
        .expect("select");
    b.fill("#bulk-rate", "1").await;
    b.click("#act-filter").await;
    assert_eq!(b.text("#dry-run-count").await, "28");
    b.click("#confirm").await;
    b.wait_text("#job-state", "running", |t| t == "running")
        .await;
    b.shot("job-running").await;
    b.click("#cancel-job").await;
    assert_eq!(b.text("#job-state").await, "canceled");
    let done: i64 = b.text("#job-succeeded").await.parse().expect("a number");
    assert!(done < 28, "canceled before the end: {done} done");
    assert_eq!(
        b.count("#cancel-job").await,
        0,
        "no cancel button on a finished job"
    );
    b.shot("job-canceled").await;

    // Groups, jobs and rejected pages render (screenshots for review).
    for (href, name) in [
        ("/console/groups", "groups"),
        ("/console/jobs", "jobs"),
        ("/console/rejected", "rejected"),
    ] {
        b.goto(&format!("{base}{href}")).await;
        b.css("main h1").await;
        b.shot(name).await;
        if name == "jobs" {
            // The three jobs, as they ended (dry runs are not listed as jobs).
            let jobs = b.text("#jobs tbody").await;
            assert_eq!(b.count("#jobs tbody tr").await, 3, "{jobs}");
            assert!(jobs.contains("canceled") && jobs.contains("done"), "{jobs}");
        }
    }
    b.assert_no_errors("groups, jobs, rejected").await;

    // Sign out: back to sign-in, and the pages are closed again.
    b.click("#sign-out").await;
    b.wait_path("/console/signin").await;
    b.goto(&format!("{base}/console/entries")).await;
    assert_eq!(b.path().await, "/console/signin");
    b.assert_no_errors("sign out").await;
    eprintln!("operator flow in the browser: {:?}", timed.elapsed());
    b.close().await;
    app.stop().await;
}

#[tokio::test]
#[ignore = "needs Debian chromium + chromium-driver (.ci/run installs them)"]
async fn a_read_only_token_sees_no_action_and_attacker_text_stays_text() {
    let app = TestApp::spawn(config()).await;
    let xss = xss_event();
    app.ingest(&[failure_event(1), xss.clone()], 0).await;
    let xss_id = workflow_dlq::wire::ids::dlq_id_for_event(&xss.event_id);
    let b = Browser::start(9522).await;
    let base = &app.base;

    b.goto(&format!("{base}/console/signin")).await;
    b.fill("#token", RO).await;
    b.click("#sign-in").await;
    assert_eq!(b.text("#who").await, "ro · read");

    // The log check sees errors (a probe), and the CSP is enforced: an inline script put
    // into the page does not run and is reported as a violation.
    b.client
        .execute("console.error('console-log-probe');", vec![])
        .await
        .expect("execute");
    let ran = b
        .client
        .execute(
            "var s = document.createElement('script'); s.textContent = 'window.__csp = 1'; \
             document.body.appendChild(s); return typeof window.__csp;",
            vec![],
        )
        .await
        .expect("execute");
    assert_eq!(
        ran,
        json!("undefined"),
        "an inline script ran despite the CSP"
    );
    let errors = b.log_errors().await.join("\n");
    assert!(errors.contains("console-log-probe"), "{errors}");
    assert!(errors.contains("Content Security Policy"), "{errors}");

    // No action anywhere: the only form that posts is sign-out.
    for path in [
        "/console/entries".to_string(),
        "/console/groups".into(),
        format!("/console/entries/{xss_id}"),
    ] {
        b.goto(&format!("{base}{path}")).await;
        b.css("main h1").await;
        assert_eq!(
            b.count("form[method='post']").await,
            1,
            "{path}: only sign-out posts"
        );
        assert_eq!(
            b.count("input[name='dlqIds']").await,
            0,
            "{path}: nothing to select"
        );
        assert_eq!(
            b.count("#restart, #resume, #delete, #act-filter, #act-selected")
                .await,
            0
        );
        b.xss_never_ran().await;
    }
    b.shot("entry-read-only-xss").await;

    // The payload is shown, as text, wherever the entry's text appears.
    assert_eq!(b.text("#error-message").await, XSS);
    assert_eq!(b.text("#request-body").await, XSS);
    assert_eq!(b.text("#response-body").await, XSS);
    assert_eq!(b.count("main img").await, 0, "no element was injected");
    b.goto(&format!("{base}/console/entries?label=xss")).await;
    assert!(b.text("#entries tbody").await.contains("<img src=x"));
    b.shot("list-read-only-xss").await;
    b.xss_never_ran().await;

    // On a phone's width the pages reflow: nothing wider than the screen but inside the
    // tables' own scroll boxes.
    b.client.set_window_size(390, 844).await.expect("resize");
    for (path, name) in [
        ("/console/entries".to_string(), "list-phone"),
        (format!("/console/entries/{xss_id}"), "entry-phone"),
        ("/console".to_string(), "overview-phone"),
    ] {
        b.goto(&format!("{base}{path}")).await;
        b.css("main h1").await;
        let overflow = b
            .client
            .execute(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
                vec![],
            )
            .await
            .expect("execute");
        assert!(
            overflow.as_i64().unwrap_or(i64::MAX) <= 0,
            "{path} is wider than a phone by {overflow}px"
        );
        b.shot(name).await;
    }
    b.assert_no_errors("read-only pages").await;
    b.close().await;
    app.stop().await;
}
