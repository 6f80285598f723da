//! Ingest: every failure that reaches Kafka is stored once, kept, findable — and bad input is
//! rejected with its reason without stopping anything.

use crate::common;

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use common::{
    barrier, eventually, failure_event, producer, publish, publish_raw, read_topic, test_config,
    TestApp,
};
use prost::Message;
use workflow_dlq::wire::{ids::dlq_id_for_event, pb};

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_thousand_failures_in_protobuf_and_json_are_stored_once_with_every_field_intact() {
    let app = TestApp::spawn(test_config()).await;
    let p = producer(&app.bootstrap());
    let topic = app.topics().failures;
    let events: Vec<pb::FailureEvent> = (0..1000).map(failure_event).collect();
    for (i, ev) in events.iter().enumerate() {
        publish(&p, &topic, ev, i % 2 == 1).await;
    }
    app.wait_entries(1000, MINUTE).await;

    for ev in events.iter().step_by(37) {
        let entry = app
            .service
            .view
            .get(&dlq_id_for_event(&ev.event_id))
            .expect("stored");
        assert_eq!(entry.event.as_ref(), Some(ev), "event kept as sent");
        assert_eq!(entry.source_topic, topic);
        assert!(entry.created_at > 0);
        assert_eq!(
            entry.expires_at - entry.created_at,
            app.service.cfg.retention.as_millis() as i64
        );
    }

    // The same 200 events again, in the other encoding: nothing new.
    for (i, ev) in events.iter().take(200).enumerate() {
        publish(&p, &topic, ev, i % 2 == 0).await;
    }
    let barriers = barrier(&app, &p).await;
    assert_eq!(app.service.view.len(), 1000 + barriers);
    app.stop().await;
}

/// Copies of a failure that arrive right behind it, before the view can show it (the same
/// transaction, most of them), are found duplicates by what the pipeline remembers writing:
/// the store topic holds each failure once.
#[tokio::test]
async fn copies_right_behind_a_failure_are_not_stored_again() {
    let app = TestApp::spawn(test_config()).await;
    let p = producer(&app.bootstrap());
    let topic = app.topics().failures;
    let events: Vec<pb::FailureEvent> = (0..300).map(failure_event).collect();
    let sends = events.iter().enumerate().flat_map(|(i, ev)| {
        let (p, topic) = (&p, &topic);
        // The original, then a copy in each encoding.
        [0, 1, 2].map(move |copy| async move { publish(p, topic, ev, (i + copy) % 2 == 1).await })
    });
    futures::future::join_all(sends).await;
    let barriers = barrier(&app, &p).await;
    assert_eq!(app.service.view.len(), 300 + barriers);

    let mut writes: HashMap<Vec<u8>, usize> = HashMap::new();
    for r in read_topic(&app.bootstrap(), &app.topics().store) {
        if r.value.is_some() {
            *writes.entry(r.key.expect("keyed")).or_default() += 1;
        }
    }
    for ev in &events {
        let id = dlq_id_for_event(&ev.event_id);
        assert_eq!(writes.get(id.as_bytes()), Some(&1), "{id} written once");
    }
    app.stop().await;
}

#[ignore = "needs a real Kafka broker (KAFKA_BOOTSTRAP); .ci/run runs it"]
#[tokio::test]
async fn a_restarted_service_rebuilds_the_same_view_from_the_store_topic() {
    real_broker_only!();
    let cfg = test_config();
    let app = TestApp::spawn(cfg.clone()).await;
    let p = producer(&app.bootstrap());
    for i in 0..1000 {
        publish(&p, &app.topics().failures, &failure_event(i), i % 2 == 0).await;
    }
    app.wait_entries(1000, MINUTE).await;
    let before = app.get_json("/v2/dlq?count=100").await;
    app.stop().await;

    let again = TestApp::spawn(cfg).await;
    again.wait_entries(1000, MINUTE).await;
    assert_eq!(again.get_json("/v2/dlq?count=100").await, before);
    again.stop().await;
}

#[ignore = "needs a real Kafka broker (KAFKA_BOOTSTRAP); .ci/run runs it"]
#[tokio::test]
async fn killing_the_service_mid_ingest_loses_nothing_and_stores_nothing_twice() {
    real_broker_only!();
    let cfg = test_config();
    let bootstrap = cfg.kafka_bootstrap.clone().expect("real broker");
    let (mut child, base) = common::spawn_binary(&cfg);
    let http = reqwest::Client::new();
    eventually(MINUTE, "first instance ready", || {
        let (http, base) = (http.clone(), base.clone());
        async move {
            http.get(format!("{base}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;

    let p = producer(&bootstrap);
    let topic = cfg.topics.failures.clone();
    let publisher = tokio::spawn({
        let p = p.clone();
        async move {
            for chunk in (0..5000).collect::<Vec<_>>().chunks(100) {
                let sends = chunk.iter().map(|i| {
                    let (p, topic) = (&p, &topic);
                    async move { publish(p, topic, &failure_event(*i), i % 2 == 0).await }
                });
                futures::future::join_all(sends).await;
            }
        }
    });
    eventually(MINUTE, "some entries stored", || {
        let (http, base) = (http.clone(), base.clone());
        async move { common::status_entries(&http, &base).await.unwrap_or(0) >= 1000 }
    })
    .await;
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    publisher.await.expect("all published");
    let at_kill = read_topic(&bootstrap, &cfg.topics.store).len();
    eprintln!("killed with {at_kill} of 5000 entries committed");
    assert!(at_kill < 5000, "the kill must land mid-ingest");

    let (mut child, base) = common::spawn_binary(&cfg);
    eventually(
        Duration::from_secs(120),
        "all 5,000 entries after restart",
        || {
            let (http, base) = (http.clone(), base.clone());
            async move { common::status_entries(&http, &base).await == Some(5000) }
        },
    )
    .await;
    child.kill().expect("stop");
    let _ = child.wait();

    // The store topic itself, committed records only: each entry written exactly once.
    let records = read_topic(&bootstrap, &cfg.topics.store);
    let mut writes: HashMap<Vec<u8>, usize> = HashMap::new();
    for r in records.iter().filter(|r| r.value.is_some()) {
        *writes.entry(r.key.clone().expect("keyed")).or_default() += 1;
    }
    assert_eq!(writes.len(), 5000, "every failure stored");
    let twice: Vec<_> = writes.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} entries written more than once",
        twice.len()
    );
}

/// Malformed input of many kinds, each between valid records.
fn malformed_corpus() -> Vec<(Vec<u8>, Option<&'static str>, &'static str)> {
    let valid = pb::FailureEnvelope {
        kind: Some(pb::failure_envelope::Kind::Failure(failure_event(1))),
    }
    .encode_to_vec();
    let missing = |f: fn(&mut pb::FailureEvent)| {
        let mut ev = failure_event(2);
        f(&mut ev);
        common::envelope(ev).encode_to_vec()
    };
    let mut corpus: Vec<(Vec<u8>, Option<&'static str>, &'static str)> = Vec::new();
    for cut in [1, 5, 17, 60] {
        corpus.push((valid[..valid.len() - cut].to_vec(), None, "protobuf"));
    }
    corpus.push((vec![0xff; 40], None, "protobuf"));
    corpus.push((b"{\"failure\": ".to_vec(), None, "json"));
    corpus.push((
        b"{\"failure\": {\"maxRetries\": \"lots\"}}".to_vec(),
        None,
        "json",
    ));
    corpus.push((
        b"not json at all".to_vec(),
        Some("application/json"),
        "json",
    ));
    corpus.push((b"hello".to_vec(), Some("text/plain"), "content_type"));
    corpus.push((vec![b'['; 5000], Some("application/json"), "json"));
    corpus.push((b"{}".to_vec(), None, "invalid"));
    corpus.push((Vec::new(), None, "invalid"));
    corpus.push((missing(|e| e.event_id.clear()), None, "invalid"));
    corpus.push((missing(|e| e.workflow_run_id.clear()), None, "invalid"));
    corpus.push((missing(|e| e.workflow_url.clear()), None, "invalid"));
    corpus.push((
        missing(|e| e.workflow_url = "u".repeat(10_000)),
        None,
        "invalid",
    ));
    corpus.push((vec![0u8; 100 * 1024], None, "too_large"));
    corpus.push((
        pb::FailureEnvelope {
            kind: Some(pb::failure_envelope::Kind::CallbackReport(
                pb::FailureCallbackReport {
                    dlq_id: "dlq-nope".into(),
                    info: Some(pb::FailureCallbackInfo::default()),
                },
            )),
        }
        .encode_to_vec(),
        None,
        "unknown_dlq_id",
    ));
    corpus
}

#[tokio::test]
async fn malformed_records_go_to_the_rejected_topic_with_their_reason_and_valid_ones_around_them_are_stored(
) {
    let mut cfg = test_config();
    cfg.max_record_bytes = 64 * 1024;
    let app = TestApp::spawn(cfg).await;
    let p = producer(&app.bootstrap());
    let topic = app.topics().failures;
    let corpus = malformed_corpus();
    let mut expected_reasons: HashMap<String, String> = HashMap::new();
    let mut valid = 0;
    let mut n = 0;
    while n < 50 {
        let (bytes, ct, reason) = &corpus[n % corpus.len()];
        let key = format!("bad-{n}");
        publish_raw(&p, &topic, Some(key.as_bytes()), bytes, *ct, None).await;
        expected_reasons.insert(key, reason.to_string());
        publish(&p, &topic, &failure_event(10_000 + n), n % 2 == 0).await;
        valid += 1;
        n += 1;
    }
    app.wait_entries(valid, MINUTE).await;
    let rejected_topic = app.topics().rejected;
    let bootstrap = app.bootstrap();
    let mut rejected = Vec::new();
    eventually(MINUTE, "50 rejected records", || {
        rejected = read_topic(&bootstrap, &rejected_topic);
        let done = rejected.len() >= 50;
        async move { done }
    })
    .await;
    assert_eq!(rejected.len(), 50);
    for r in &rejected {
        let key = String::from_utf8(r.key.clone().unwrap()).unwrap();
        assert_eq!(
            r.headers["dlq.reject.reason"], expected_reasons[&key],
            "{key}"
        );
        assert_eq!(r.headers["dlq.source.topic"], topic);
        assert!(r.headers["dlq.source.offset"].parse::<i64>().is_ok());
        assert!(!r.headers["dlq.reject.detail"].is_empty());
    }
    let metrics = app.metrics().await;
    assert!(metrics.contains("dlq_rejected_total{"), "{metrics}");
    app.stop().await;
}

#[tokio::test]
async fn filters_match_alone_and_combined_and_cursor_pages_return_each_entry_once() {
    let app = TestApp::spawn(test_config()).await;
    let p = producer(&app.bootstrap());
    let events: Vec<_> = (0..1000).map(failure_event).collect();
    for ev in &events {
        publish(&p, &app.topics().failures, ev, false).await;
    }
    app.wait_entries(1000, MINUTE).await;

    // Paging through everything: each entry exactly once, in a stable order.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = app
            .get_json(&format!(
                "/v2/workflows/dlq?count=100&source=workflow&cursor={cursor}"
            ))
            .await;
        let msgs = page["messages"].as_array().unwrap();
        seen.extend(
            msgs.iter()
                .map(|m| m["dlqId"].as_str().unwrap().to_string()),
        );
        match page["cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 1000);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 1000);

    let count = |q: String| {
        let app = &app;
        async move {
            let mut total = 0;
            let mut cursor = String::new();
            loop {
                let page = app
                    .get_json(&format!("/v2/dlq?count=100&{q}&cursor={cursor}"))
                    .await;
                total += page["messages"].as_array().unwrap().len();
                match page["cursor"].as_str() {
                    Some(c) => cursor = c.to_string(),
                    None => return total,
                }
            }
        }
    };
    let expect = |f: &dyn Fn(usize, &pb::FailureEvent) -> bool| {
        events.iter().enumerate().filter(|(i, e)| f(*i, e)).count()
    };
    let url0 = "https://app.example.com/api/workflow/0";
    let url1 = "https://app.example.com/api/workflow/1";
    assert_eq!(
        count(format!("workflowUrl={url0}")).await,
        expect(&|i, _| i % 4 == 0)
    );
    assert_eq!(
        count(format!("workflowUrl={url0},{url1}")).await,
        expect(&|i, _| i % 4 <= 1)
    );
    assert_eq!(
        count(format!("workflowUrl={url0}&workflowUrl={url1}")).await,
        expect(&|i, _| i % 4 <= 1)
    );
    assert_eq!(
        count("label=label-1".into()).await,
        expect(&|i, _| i % 2 == 1)
    );
    assert_eq!(
        count("callerIp=10.0.0.3".into()).await,
        expect(&|i, _| i % 5 == 3)
    );
    assert_eq!(
        count("flowControlKey=fc-0".into()).await,
        expect(&|i, _| i % 2 == 0)
    );
    assert_eq!(count("workflowRunId=wfr-7".into()).await, 1);
    assert_eq!(
        count(format!("workflowCreatedAt={}", 1_700_000_000_000i64 + 9)).await,
        1
    );
    assert_eq!(
        count("failureFunctionState=CALLBACK_FAIL".into()).await,
        1000
    );
    assert_eq!(
        count("failureFunctionState=CALLBACK_SUCCESS".into()).await,
        0
    );
    // AND across fields.
    assert_eq!(
        count(format!(
            "workflowUrl={url1}&callerIp=10.0.0.1,10.0.0.2&label=label-1"
        ))
        .await,
        expect(&|i, _| i % 4 == 1 && (i % 5 == 1 || i % 5 == 2) && i % 2 == 1)
    );
    let now = workflow_dlq::now_ms();
    assert_eq!(count(format!("fromDate={}", now + 60_000)).await, 0);
    assert_eq!(count(format!("toDate={now}")).await, 1000);
    app.stop().await;
}

#[tokio::test]
async fn a_callback_report_flips_the_entrys_callback_state() {
    let app = TestApp::spawn(test_config()).await;
    let p = producer(&app.bootstrap());
    let ev = failure_event(1);
    publish(&p, &app.topics().failures, &ev, false).await;
    app.wait_entries(1, MINUTE).await;
    let dlq_id = dlq_id_for_event(&ev.event_id);
    let report = pb::FailureEnvelope {
        kind: Some(pb::failure_envelope::Kind::CallbackReport(
            pb::FailureCallbackReport {
                dlq_id: dlq_id.clone(),
                info: Some(pb::FailureCallbackInfo {
                    state: pb::failure_callback_info::State::CallbackSuccess as i32,
                    response_status: 200,
                    ..Default::default()
                }),
            },
        )),
    };
    publish_raw(
        &p,
        &app.topics().failures,
        None,
        &report.encode_to_vec(),
        None,
        None,
    )
    .await;
    let view = app.service.view.clone();
    eventually(MINUTE, "callback state CALLBACK_SUCCESS", || {
        let (view, id) = (view.clone(), dlq_id.clone());
        async move {
            view.get(&id)
                .and_then(|e| e.event)
                .and_then(|e| e.failure_callback_info)
                .is_some_and(|i| {
                    i.state == pb::failure_callback_info::State::CallbackSuccess as i32
                })
        }
    })
    .await;
    let listed = app
        .get_json("/v2/workflows/dlq?failureFunctionState=CALLBACK_SUCCESS")
        .await;
    assert_eq!(listed["messages"][0]["dlqId"], dlq_id);
    assert_eq!(
        listed["messages"][0]["failureCallbackInfo"]["state"],
        "CALLBACK_SUCCESS"
    );
    app.stop().await;
}

#[tokio::test]
async fn expired_entries_are_tombstoned_and_a_restart_does_not_bring_them_back() {
    let mut cfg = test_config();
    cfg.retention = Duration::from_secs(2);
    let app = TestApp::spawn(cfg.clone()).await;
    let p = producer(&app.bootstrap());
    let events: Vec<_> = (0..20).map(failure_event).collect();
    for ev in &events {
        publish(&p, &app.topics().failures, ev, false).await;
    }
    app.wait_entries(20, MINUTE).await;
    app.wait_entries(0, MINUTE).await;
    let tombstones: HashSet<Vec<u8>> = read_topic(&app.bootstrap(), &app.topics().store)
        .into_iter()
        .filter(|r| r.value.is_none())
        .filter_map(|r| r.key)
        .collect();
    for ev in &events {
        assert!(tombstones.contains(dlq_id_for_event(&ev.event_id).as_bytes()));
    }
    let metrics = app.metrics().await;
    assert!(metrics.contains("dlq_expired_total"), "{metrics}");
    assert!(metrics.contains("dlq_entries 0"), "{metrics}");
    // A replay of an expired event is recognised, not stored again.
    publish(&p, &app.topics().failures, &events[0], false).await;
    let barriers = barrier(&app, &p).await;
    assert!(app
        .service
        .view
        .get(&dlq_id_for_event(&events[0].event_id))
        .is_none());
    assert!(app.service.view.len() <= barriers);
    app.stop().await;

    if common::on_real_broker() {
        let again = TestApp::spawn(cfg).await;
        for ev in &events {
            assert!(again
                .service
                .view
                .get(&dlq_id_for_event(&ev.event_id))
                .is_none());
        }
        again.stop().await;
    }
}

#[ignore = "needs a real Kafka broker (KAFKA_BOOTSTRAP); .ci/run runs it"]
#[tokio::test]
async fn the_store_guard_fails_readiness_when_the_store_topic_gets_a_retention() {
    real_broker_only!();
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    let app = TestApp::spawn(test_config()).await;
    let p = producer(&app.bootstrap());
    publish(&p, &app.topics().failures, &failure_event(1), false).await;
    app.wait_entries(1, MINUTE).await;
    let admin: AdminClient<_> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", app.bootstrap())
        .create()
        .unwrap();
    let store = app.topics().store;
    let alter = AlterConfig::new(ResourceSpecifier::Topic(&store))
        .set("cleanup.policy", "compact,delete")
        .set("retention.ms", "3600000");
    admin
        .alter_configs(&[alter], &AdminOptions::new())
        .await
        .unwrap()
        .into_iter()
        .for_each(|r| {
            r.unwrap();
        });
    let http = app.http.clone();
    let url = format!("{}/readyz", app.base);
    eventually(MINUTE, "readyz 503 naming the store", || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            match http.get(&url).send().await {
                Ok(r) if r.status() == 503 => r.text().await.is_ok_and(|t| {
                    t.contains("store topic integrity") && t.contains("retention.ms")
                }),
                _ => false,
            }
        }
    })
    .await;
    assert!(app
        .metrics()
        .await
        .contains("dlq_store_integrity_errors_total"));

    // Deleting records the view holds is a truncation: detected too (and sticky).
    let mut offsets = rdkafka::TopicPartitionList::new();
    for partition in 0..app.service.cfg.partitions {
        offsets
            .add_partition_offset(&store, partition, rdkafka::Offset::End)
            .unwrap();
    }
    admin
        .delete_records(&offsets, &AdminOptions::new())
        .await
        .unwrap();
    eventually(MINUTE, "truncation detected", || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            match http.get(&url).send().await {
                Ok(r) => r
                    .text()
                    .await
                    .is_ok_and(|t| t.contains("records were deleted")),
                Err(_) => false,
            }
        }
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_burst_of_large_rejected_records_does_not_stall_ingest() {
    // Ten 60 KiB undecodable records on one partition are batched together on their way to the
    // rejected topic: the batch must still fit the topic, or the transaction fails on every retry.
    let mut cfg = test_config();
    cfg.max_record_bytes = 64 * 1024;
    cfg.txn_max_interval = std::time::Duration::from_millis(500);
    let app = TestApp::spawn(cfg).await;
    // Small batches on the way in, so only the service's own batching is under test.
    let p: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", app.bootstrap())
        .set("batch.size", "100000")
        .create()
        .expect("producer");
    let topic = app.topics().failures;
    let garbage = vec![0xffu8; 60 * 1024];
    let sends = (0..10).map(|_| publish_raw(&p, &topic, None, &garbage, None, Some(0)));
    futures::future::join_all(sends).await;
    let ev = failure_event(1);
    let env = common::envelope(ev.clone()).encode_to_vec();
    publish_raw(&p, &topic, None, &env, None, Some(0)).await;
    app.wait_entries(1, MINUTE).await;
    let rejected = read_topic(&app.bootstrap(), &app.topics().rejected);
    assert_eq!(rejected.len(), 10);
    assert!(rejected
        .iter()
        .all(|r| r.value.as_ref().map(Vec::len) == Some(60 * 1024)));
    app.stop().await;
}
