//! The OpenAPI document against the server that serves it: it validates as OpenAPI 3
//! (`openapi-spec-validator`), and schemathesis — a property-based API fuzzer generating
//! requests from the document — finds no 5xx, no undocumented status, no response that breaks
//! its schema, in a bounded run. Both from PyPI, pinned in tests/api-fuzz/requirements.txt.
//! `DLQ_FUZZ_EXAMPLES` scales the run (examples per operation; default 25).

use crate::common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use common::{failure_event, TestApp, TOKEN};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A virtualenv under target/ with the pinned tools, once.
fn tools() -> PathBuf {
    common::python_venv("api-fuzz-venv", "tests/api-fuzz/requirements.txt")
}

#[ignore = "needs python3 with venv and PyPI (schemathesis); .ci/run runs it"]
#[tokio::test]
async fn the_openapi_document_validates_and_schemathesis_finds_no_error() {
    let bin = tokio::task::spawn_blocking(tools).await.expect("tools");
    let app = TestApp::spawn(common::test_config()).await;
    let events: Vec<_> = (0..300).map(failure_event).collect();
    app.ingest(&events, 0).await;

    let dir = root().join("target/api-fuzz");
    std::fs::create_dir_all(&dir).expect("dir");
    let doc = app.get_json("/openapi.json").await;
    let spec = dir.join("openapi.json");
    std::fs::write(&spec, serde_json::to_vec_pretty(&doc).unwrap()).expect("write spec");

    let spec_arg = spec.clone();
    let bin_v = bin.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin_v.join("openapi-spec-validator"))
            .arg(&spec_arg)
            .output()
            .expect("openapi-spec-validator runs")
    })
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "the document is not valid OpenAPI:\n{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("openapi-spec-validator: {}", said.trim());

    // Half of the generated `dlqId`s are real entries, so the fuzzer gets past the 404s.
    let ids: Vec<String> = events
        .iter()
        .map(|e| workflow_dlq::wire::ids::dlq_id_for_event(&e.event_id))
        .collect();
    let config = dir.join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            "[dictionaries.dlq-ids]\nvalues = {}\n\n[parameters]\n\"path.dlqId\" = {{ dictionary = \"dlq-ids\", probability = 0.5 }}\n",
            serde_json::to_string(&ids).unwrap()
        ),
    )
    .expect("config");

    let examples = std::env::var("DLQ_FUZZ_EXAMPLES").unwrap_or_else(|_| "25".into());
    // Two passes: the one-entry routes first, while the seeded entries exist; then the rest,
    // whose bulk calls without a filter act on every entry.
    let mut requests = 0;
    for (pass, selection) in [
        ("one entry", ["--include-path-regex", r"\{dlqId\}"]),
        ("bulk and service", ["--exclude-path-regex", r"\{dlqId\}"]),
    ] {
        let har = dir.join(format!("requests-{}.har", pass.replace(' ', "-")));
        let _ = std::fs::remove_file(&har);
        let (base, har_arg, spec, config, bin, examples) = (
            app.base.clone(),
            har.clone(),
            spec.clone(),
            config.clone(),
            bin.clone(),
            examples.clone(),
        );
        let out = tokio::task::spawn_blocking(move || {
            Command::new(bin.join("schemathesis"))
                // Its cache (`.schemathesis/`) goes beside the config, under target/.
                .current_dir(config.parent().expect("config folder"))
                .arg("--config-file")
                .arg(&config)
                .arg("run")
                .arg(&spec)
                .args(selection)
                .args(["--url", &base])
                .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
                .args([
                    "--checks",
                    "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
                ])
                .args(["--phases", "examples,coverage,fuzzing"])
                .args(["--max-examples", &examples])
                .args(["--workers", "2", "--seed", "1", "--no-color"])
                .args(["--request-timeout", "30"])
                .args(["--report", "har", "--report-har-path"])
                .arg(&har_arg)
                .output()
                .expect("schemathesis runs")
        })
        .await
        .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).to_string();
        println!("---- schemathesis, {pass} ----\n{said}");
        assert!(
            out.status.success(),
            "schemathesis found problems ({pass}):\n{said}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let har: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&har).expect("HAR report")).expect("HAR JSON");
        let entries = har["log"]["entries"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let ok = entries
            .iter()
            .filter(|e| e["response"]["status"].as_u64() == Some(200))
            .count();
        println!(
            "schemathesis ({pass}): {} requests, {ok} answered 200",
            entries.len()
        );
        assert!(
            ok > 10,
            "the fuzzer reached the routes' real work ({pass}): {ok} × 200"
        );
        requests += entries.len();
    }
    println!("schemathesis sent {requests} requests in all");
    assert!(
        requests > 500,
        "a bounded run still sends a real number of requests: {requests}"
    );
    app.stop().await;
}
