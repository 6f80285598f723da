//! Realistic failure events (~1 KiB: headers, a JSON body, three completed steps with outputs)
//! and a fast loader that writes them to a topic.

use std::time::{Duration, Instant};

use prost::Message;
use rdkafka::{
    config::ClientConfig,
    producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer},
};
use workflow_dlq::wire::pb;

pub const LABELS: usize = 10;
pub const FLOW_KEYS: usize = 1000;

fn hv(v: &str) -> pb::HeaderValues {
    pb::HeaderValues {
        values: vec![v.to_string()],
    }
}

/// Failure `n` of a run; `tag` makes event ids unique per bench run.
pub fn failure(n: u64, tag: &str) -> pb::FailureEvent {
    let now = workflow_dlq::now_ms();
    pb::FailureEvent {
        event_id: format!("bench-{tag}-{n}"),
        workflow_run_id: format!("wfr_bench_{tag}_{n:012}"),
        workflow_url: format!("https://shop.example.com/api/workflows/checkout-{}", n % 8),
        workflow_created_at: now - 60_000,
        message_id: format!("msg_{tag}_{n:012}"),
        method: "POST".into(),
        header: [
            ("Content-Type", "application/json"),
            ("User-Agent", "upstash-workflow/1.3 (node 20)"),
            ("X-Request-Id", "5f0c1e7a-8d3b-4a0e-9a61-0b7c2d4e6f81"),
            ("X-Tenant", "tenant-0042"),
            ("Upstash-Workflow-Sdk-Version", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), hv(v)))
        .collect(),
        body: format!(
            "{{\"orderId\":\"ord_{n:012}\",\"customer\":{{\"id\":\"cus_{}\",\"email\":\"buyer{}@example.com\"}},\
             \"items\":[{{\"sku\":\"SKU-1001\",\"qty\":2,\"price\":1999}},{{\"sku\":\"SKU-2002\",\"qty\":1,\"price\":4999}}],\
             \"currency\":\"EUR\",\"shipping\":{{\"method\":\"express\",\"country\":\"DE\"}}}}",
            n % 100_000,
            n % 100_000
        )
        .into_bytes(),
        max_retries: 3,
        not_before: 0,
        caller_ip: format!("10.20.{}.{}", (n / 256) % 256, n % 256),
        labels: vec![format!("label-{}", n % LABELS as u64)],
        flow_control: Some(pb::FlowControl {
            key: format!("fc-{}", n % FLOW_KEYS as u64),
            rate: 50,
            parallelism: 4,
            period_seconds: 60,
        }),
        completed_steps: ["reserve-stock", "authorize-payment", "create-invoice"]
            .iter()
            .enumerate()
            .map(|(i, name)| pb::Step {
                step_id: i as i32 + 1,
                step_name: name.to_string(),
                step_type: "Run".into(),
                out: format!(
                    "{{\"ok\":true,\"ref\":\"{name}-{n:012}\",\"at\":{now},\"detail\":\"step {i} completed\"}}"
                )
                .into_bytes(),
                concurrent: 1,
                completed_at: now - 30_000 + i as i64,
            })
            .collect(),
        failed_step: Some(pb::Step {
            step_id: 4,
            // With the 8 URLs: 40 kinds of failure (signatures), as groups see them.
            step_name: ["ship-order", "notify", "refund", "audit", "sync"][(n % 5) as usize].into(),
            step_type: "Call".into(),
            ..Default::default()
        }),
        response_status: 503,
        response_header: [("Content-Type".to_string(), hv("application/json"))].into(),
        response_body: b"{\"error\":\"carrier API unavailable\",\"retryAfter\":30}".to_vec(),
        failure_callback: "https://shop.example.com/api/workflows/failed".into(),
        failure_callback_info: Some(pb::FailureCallbackInfo {
            state: pb::failure_callback_info::State::CallbackFail as i32,
            response_status: 500,
            ..Default::default()
        }),
        failed_at: now,
        // The shipment id and retry count vary; the signature strips them.
        error_message: format!(
            "HTTP 503 from https://carrier.example.com/v2/shipments/shp_{n:08} after {} retries",
            1 + n % 3
        ),
        redrive_count: 0,
        // QStash's identity: what a QStash-side failure carries (filters match on these).
        topic_name: String::new(),
        queue_name: format!("queue-{}", n % 4),
        schedule_id: String::new(),
        ..Default::default()
    }
}

pub fn envelope_bytes(ev: pb::FailureEvent) -> Vec<u8> {
    pb::FailureEnvelope {
        kind: Some(pb::failure_envelope::Kind::Failure(ev)),
    }
    .encode_to_vec()
}

/// A producer tuned for bulk loading (acks=all: what is loaded is really there).
pub fn loader(bootstrap: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("partitioner", workflow_dlq::kafka::PARTITIONER)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.max.bytes", "2000000")
        .create()
        .expect("bulk producer")
}

/// Sends `record`, waiting while the producer's queue is full.
pub fn send_blocking<K, P>(
    p: &ThreadedProducer<DefaultProducerContext>,
    mut record: BaseRecord<'_, K, P>,
) where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match p.send(record) {
            Ok(()) => return,
            Err((_, r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// Writes `n` records made by `make(i) -> (key, value)`; returns payload bytes.
/// Failure `n` as ingest stores it: its `dlqId` and the stored `DlqEntry`'s bytes.
pub fn stored_entry(n: u64, tag: &str, retention_ms: i64) -> (String, Vec<u8>) {
    let ev = failure(n, tag);
    let id = workflow_dlq::wire::ids::dlq_id_for_event(&ev.event_id);
    let created = ev.failed_at + n as i64;
    let entry = pb::DlqEntry {
        dlq_id: id.clone(),
        signature: workflow_dlq::signature::of_event(&ev),
        event: Some(ev),
        created_at: created,
        expires_at: created + retention_ms,
        source_topic: "workflow.failures".into(),
        source_partition: (n % 12) as i32,
        source_offset: n as i64,
    };
    (id, entry.encode_to_vec())
}

pub fn load(bootstrap: &str, topic: &str, n: u64, make: impl Fn(u64) -> (String, Vec<u8>)) -> u64 {
    let p = loader(bootstrap);
    let started = Instant::now();
    let mut bytes = 0u64;
    for i in 0..n {
        let (key, value) = make(i);
        bytes += value.len() as u64;
        send_blocking(&p, BaseRecord::to(topic).key(&key).payload(&value));
    }
    p.flush(Duration::from_secs(120)).expect("flush");
    eprintln!(
        "  loaded {n} records ({:.0} MB) into {topic} in {:.1}s",
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    bytes
}
