//! Failure groups and the redrive guard (issue 15, items 1 and 2): entries grouped by the
//! signature of their failure, a filter and actions by signature, and parked runs.

use crate::common;

use std::{collections::HashSet, time::Duration};

use common::{command, failure_event, final_result, producer, send_command, test_config, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use workflow_dlq::wire::{
    ids::dlq_id_for_event,
    pb::{
        self,
        item_outcome::Status,
        recovery_command::{Action, Selector},
    },
};

const MINUTE: Duration = Duration::from_secs(60);

/// The `n`th failure of kind `kind`: the same endpoint, step and status per kind, and an error
/// message whose ids, numbers, UUIDs, hex and timestamps change with `n`.
fn failure_of_kind(kind: usize, n: usize) -> pb::FailureEvent {
    let mut ev = failure_event(kind * 10_000 + n);
    let (url, step, status, message) = match kind {
        0 => (
            format!("https://app.example.com/api/pay?tenant={n}"),
            "charge",
            502,
            format!(
                "charge {n} failed: card ch_{:x} declined after {} retries",
                n * 7919,
                n % 5
            ),
        ),
        1 => (
            "https://app.example.com/api/ship".to_string(),
            "label",
            500,
            format!(
                "timeout after {}ms calling carrier for order-{n} at 2026-11-{:02}T10:{:02}:{:02}.{:03}Z",
                100 + n,
                1 + n % 28,
                n % 60,
                n % 59,
                n % 1000
            ),
        ),
        _ => (
            "https://app.example.com/api/stock".to_string(),
            "reserve",
            409,
            format!(
                "lock {} on sku 0x{:08x} held by worker {} since {}",
                uuid::Uuid::new_v4(),
                n * 31,
                n % 17,
                1_764_000_000_000u64 + n as u64
            ),
        ),
    };
    ev.workflow_url = url;
    ev.response_status = status;
    ev.error_message = message;
    ev.failed_step = Some(pb::Step {
        step_id: 4,
        step_name: step.into(),
        step_type: "Run".into(),
        ..Default::default()
    });
    ev
}

async fn post(app: &TestApp, path: &str) -> (StatusCode, Value) {
    let r = app
        .request(Method::POST, path)
        .send()
        .await
        .expect("HTTP request");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn count_of(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn three_kinds_of_failure_make_three_groups_and_a_restart_by_signature_acts_on_one() {
    let mut cfg = test_config();
    cfg.max_per_second = 20_000.0;
    let app = TestApp::spawn(cfg).await;
    let events: Vec<_> = (0..3)
        .flat_map(|kind| (0..1000).map(move |n| failure_of_kind(kind, n)))
        .collect();
    app.ingest(&events, 0).await;

    let groups = app.get_json("/v2/workflows/dlq/groups").await;
    let groups = groups["groups"].as_array().expect("groups").clone();
    assert_eq!(groups.len(), 3, "{groups:#?}");
    for g in &groups {
        assert_eq!(g["count"], 1000, "{g}");
        assert!(g["firstSeen"].as_i64() <= g["lastSeen"].as_i64());
        assert!(!g["workflowUrl"].as_str().unwrap().contains('?'), "{g}");
        assert_eq!(g["signature"].as_str().unwrap().len(), 16);
        let sample = app
            .get_json(&format!(
                "/v2/workflows/dlq/{}",
                g["sampleDlqId"].as_str().unwrap()
            ))
            .await;
        assert_eq!(sample["signature"], g["signature"]);
        assert_eq!(sample["errorMessage"], g["errorSample"]);
        assert_eq!(sample["responseStatus"], g["responseStatus"]);
        assert_eq!(
            sample["failedStep"]["stepName"],
            g["failedStep"]["stepName"]
        );
    }
    let sig_of = |status: i64| {
        groups
            .iter()
            .find(|g| g["responseStatus"] == status)
            .and_then(|g| g["signature"].as_str())
            .expect("a group per status")
            .to_string()
    };
    let (pay, ship) = (sig_of(502), sig_of(500));

    // Paged one group at a time, under the QStash prefix too; narrowed by a filter.
    let mut cursor = String::new();
    let mut paged = Vec::new();
    loop {
        let page = app
            .get_json(&format!("/v2/dlq/groups?count=1&cursor={cursor}"))
            .await;
        paged.extend(page["groups"].as_array().unwrap().iter().cloned());
        match page["cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    assert_eq!(paged, groups);
    let narrowed = app
        .get_json("/v2/workflows/dlq/groups?responseStatus=500,409&count=5")
        .await;
    assert_eq!(narrowed["groups"].as_array().unwrap().len(), 2);
    let listed = app
        .get_json(&format!("/v2/workflows/dlq?signature={pay}&count=100"))
        .await;
    let listed = listed["messages"].as_array().unwrap();
    assert_eq!(listed.len(), 100);
    assert!(listed.iter().all(|m| m["signature"] == pay.as_str()));

    // A Kafka command by signature acts on exactly that group.
    let p = producer(&app.bootstrap());
    let by_sig = Selector::Filter(pb::Filter {
        signature: vec![pay.clone()],
        ..Default::default()
    });
    send_command(
        &p,
        &app.topics().commands,
        &command("by-sig", Action::Restart, by_sig),
    )
    .await;
    let (done, _) = final_result(&app.bootstrap(), &app.topics().results, "by-sig", MINUTE).await;
    assert_eq!((done.matched, done.succeeded, done.failed), (1000, 1000, 0));
    let pay_ids: HashSet<String> = events[..1000]
        .iter()
        .map(|e| dlq_id_for_event(&e.event_id))
        .collect();
    let execs = app.executions();
    let acted: HashSet<String> = execs.iter().map(|e| e.source_dlq_id.clone()).collect();
    assert_eq!(execs.len(), 1000);
    assert_eq!(acted, pay_ids);
    app.wait_entries(2000, MINUTE).await;

    // And over HTTP, a page of one group.
    let (status, body) = post(
        &app,
        &format!("/v2/workflows/dlq/restart?signature={ship}&count=10"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["workflowRuns"].as_array().unwrap().len(), 10);
    let execs = app.executions();
    assert_eq!(execs.len(), 1010);
    let ship_ids: HashSet<String> = events[1000..2000]
        .iter()
        .map(|e| dlq_id_for_event(&e.event_id))
        .collect();
    let not_pay: Vec<_> = execs
        .iter()
        .filter(|e| !pay_ids.contains(&e.source_dlq_id))
        .collect();
    assert_eq!(not_pay.len(), 10);
    assert!(not_pay.iter().all(|e| ship_ids.contains(&e.source_dlq_id)));
    let groups = app.get_json("/v2/workflows/dlq/groups").await;
    let counts: Vec<i64> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["count"].as_i64().unwrap())
        .collect();
    assert_eq!(counts, [1000, 990], "the emptied group is gone");

    // Each of the three kinds was new once (metrics are process-wide: other tests add theirs).
    let metrics = app.metrics().await;
    let new = count_of(
        &metrics,
        "dlq_failure_signatures_new_total{status_class=\"5xx\"}",
    ) + count_of(
        &metrics,
        "dlq_failure_signatures_new_total{status_class=\"4xx\"}",
    );
    assert!(new >= 3.0, "{new}");
    app.stop().await;
}

/// What the platform does when a redriven run fails again: the next failure names the entry it
/// was redriven from, carries the chain and the redrive count of the execution it ran.
fn failed_again(exec: &pb::WorkflowExecution, n: usize) -> pb::FailureEvent {
    let mut ev = failure_event(n);
    ev.workflow_run_id = exec.workflow_run_id.clone();
    ev.redrive_count = exec.redrive_count;
    ev.redriven_from_dlq_id = exec.source_dlq_id.clone();
    ev.lineage = exec.lineage.clone();
    ev
}

#[tokio::test]
async fn a_run_redriven_three_times_is_parked_skipped_by_restart_all_and_restarted_with_force() {
    let app = TestApp::spawn(test_config()).await;
    assert_eq!(app.service.cfg.max_redrives, 3, "the default");
    let first = failure_event(1);
    let mut chain = vec![dlq_id_for_event(&first.event_id)];
    app.ingest(&[first], 0).await;
    // Redriven three times, failing each time.
    for round in 0..3 {
        let id = chain.last().unwrap().clone();
        let (status, body) = post(&app, &format!("/v2/workflows/dlq/restart/{id}")).await;
        assert_eq!(status, StatusCode::OK, "round {round}: {body}");
        let exec = app
            .executions()
            .into_iter()
            .find(|e| e.source_dlq_id == id)
            .expect("the execution of the restart");
        assert_eq!(exec.lineage, chain, "the execution carries the chain");
        let again = failed_again(&exec, 100 + round);
        chain.push(dlq_id_for_event(&again.event_id));
        app.ingest(&[again], 0).await;
    }
    let parked = chain.last().unwrap().clone();
    let others: Vec<_> = (200..202).map(failure_event).collect();
    app.ingest(&others, 1).await;

    let entry = app.get_json(&format!("/v2/workflows/dlq/{parked}")).await;
    assert_eq!(entry["parked"], true);
    assert_eq!(entry["redriveCount"], 3);
    assert_eq!(entry["lineage"], serde_json::json!(chain[..3]));
    assert_eq!(entry["redrivenFromDlqId"], chain[2].as_str());
    let listed = app.get_json("/v2/workflows/dlq?parked=true").await;
    let listed = listed["messages"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["dlqId"], parked.as_str());
    let unparked = app.get_json("/v2/workflows/dlq?parked=false").await;
    assert_eq!(unparked["messages"].as_array().unwrap().len(), 2);

    // Restart-all: the two others, not the parked one, and the answer says so.
    let (status, body) = post(&app, "/v2/workflows/dlq/restart").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["workflowRuns"].as_array().unwrap().len(), 2);
    assert_eq!(body["skipped"], 1);
    assert_eq!(body["skippedEntries"][0]["dlqId"], parked.as_str());
    assert_eq!(
        body["skippedEntries"][0]["reason"],
        "parked: redriven 3 times"
    );
    assert_eq!(app.executions().len(), 3 + 2);
    assert!(app.service.view.get(&parked).is_some(), "still in the DLQ");

    // A Kafka command cannot force a filter; one by id without force is skipped.
    let p = producer(&app.bootstrap());
    let mut forced_filter = command(
        "force-filter",
        Action::Restart,
        Selector::Filter(pb::Filter {
            parked: Some(true),
            ..Default::default()
        }),
    );
    forced_filter.force = true;
    send_command(&p, &app.topics().commands, &forced_filter).await;
    let (done, _) = final_result(
        &app.bootstrap(),
        &app.topics().results,
        "force-filter",
        MINUTE,
    )
    .await;
    assert_eq!(done.items[0].status, Status::Rejected as i32);
    assert!(
        done.items[0].detail.starts_with("force_needs_ids"),
        "{:?}",
        done.items[0]
    );
    send_command(
        &p,
        &app.topics().commands,
        &command("by-id", Action::Restart, common::ids(&[&parked])),
    )
    .await;
    let (done, _) = final_result(&app.bootstrap(), &app.topics().results, "by-id", MINUTE).await;
    assert_eq!(done.items[0].status, Status::Skipped as i32);
    assert_eq!(done.items[0].detail, "parked: redriven 3 times");
    assert_eq!(
        (done.succeeded, done.failed),
        (0, 0),
        "skipped counts in neither"
    );
    let (status, body) = post(&app, &format!("/v2/workflows/dlq/restart/{parked}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("parked: redriven 3 times"));
    let (status, _) = post(
        &app,
        &format!("/v2/workflows/dlq/restart/{parked}?force=maybe"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(app.executions().len(), 5, "nothing acted on the parked run");

    // With force, it is restarted, and its execution carries the whole chain.
    let (status, body) = post(
        &app,
        &format!("/v2/workflows/dlq/restart/{parked}?force=true"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let execs = app.executions();
    assert_eq!(execs.len(), 6);
    let forced = execs.iter().find(|e| e.source_dlq_id == parked).unwrap();
    assert_eq!(forced.redrive_count, 4);
    assert_eq!(forced.lineage, chain);
    app.stop().await;
}

#[tokio::test]
async fn the_cli_shows_groups_filters_by_signature_and_forces_a_parked_entry() {
    use crate::cli::dlq;
    let app = TestApp::spawn(test_config()).await;
    let mut events: Vec<_> = (0..2)
        .flat_map(|kind| (0..5).map(move |n| failure_of_kind(kind, n)))
        .collect();
    events[0].redrive_count = 3; // parked
    let parked = dlq_id_for_event(&events[0].event_id);
    app.ingest(&events, 0).await;

    let (code, out, err) = dlq(&app, &["groups"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("COUNT"), "{out}");
    assert!(out.contains("charge") && out.contains("label"), "{out}");
    assert!(out.contains("2 groups"), "{out}");
    let (code, out, err) = dlq(&app, &["--json", "groups", "--count", "1", "--all"]).await;
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).expect("JSON");
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    let pay = groups
        .iter()
        .find(|g| g["responseStatus"] == 502)
        .and_then(|g| g["signature"].as_str())
        .unwrap()
        .to_string();

    let (code, out, _) = dlq(&app, &["--json", "list", "--signature", &pay]).await;
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["messages"].as_array().unwrap().len(), 5);

    // Restarting the group skips the parked entry and says so; --force restarts it.
    let (code, out, err) = dlq(&app, &["--json", "restart", "--signature", &pay]).await;
    assert_eq!(code, 0, "{err}");
    let runs: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(runs.as_array().map(Vec::len), Some(4), "{out}");
    assert!(err.contains("skipped 1 entries"), "{err}");
    let (code, _, err) = dlq(&app, &["restart", "--force", "--all"]).await;
    assert_eq!(code, 2, "a usage error: {err}");
    let (code, out, err) = dlq(&app, &["--json", "restart", "--force", &parked]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&parked), "{out}");
    assert_eq!(app.executions().len(), 5);
    app.stop().await;
}
