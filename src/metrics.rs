//! Every metric the service exports (DESIGN §7), named and described in one place.
//! Labels are low-cardinality: never a run id or a dlq id.

use std::sync::OnceLock;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const ENTRIES: &str = "dlq_entries";
pub const OLDEST_ENTRY_AGE: &str = "dlq_oldest_entry_age_seconds";
pub const INGESTED: &str = "dlq_ingested_total";
pub const REJECTED: &str = "dlq_rejected_total";
pub const COMMANDS: &str = "dlq_commands_total";
pub const ITEMS: &str = "dlq_items_total";
pub const REPUBLISHED: &str = "dlq_republished_total";
pub const EXPIRED: &str = "dlq_expired_total";
pub const CONSUMER_LAG: &str = "dlq_consumer_lag";
pub const INGEST_LATENCY: &str = "dlq_ingest_latency_seconds";
pub const COMMAND_LATENCY: &str = "dlq_command_latency_seconds";
pub const TRANSACTIONS: &str = "dlq_transactions_total";
pub const HTTP_REQUESTS: &str = "dlq_http_requests_total";
pub const STORE_INTEGRITY_ERRORS: &str = "dlq_store_integrity_errors_total";

/// Buckets for failure-time → stored: ingest commits every ~100 ms, but a failure can sit in the
/// input topic for minutes while the service is down.
const INGEST_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
const COMMAND_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder once per process (several services in one test process
/// share it) and describes every metric.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(INGEST_LATENCY.into()), INGEST_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(COMMAND_LATENCY.into()), COMMAND_BUCKETS)
                })
                .map(|b| b.build_recorder());
            let recorder = match recorder {
                Ok(r) => r,
                // Only an empty bucket list errors; ours are constants.
                Err(_) => PrometheusBuilder::new().build_recorder(),
            };
            let handle = recorder.handle();
            // A recorder may already be installed (e.g. by a test); ours still renders.
            let _ = metrics::set_global_recorder(recorder);
            describe_all();
            handle
        })
        .clone()
}

fn describe_all() {
    describe_gauge!(ENTRIES, Unit::Count, "Entries in the DLQ store view.");
    describe_gauge!(
        OLDEST_ENTRY_AGE,
        Unit::Seconds,
        "Age of the oldest entry in the DLQ."
    );
    describe_counter!(INGESTED, Unit::Count, "Failure events stored in the DLQ.");
    describe_counter!(
        REJECTED,
        Unit::Count,
        "Input records rejected, by topic and reason."
    );
    describe_counter!(
        COMMANDS,
        Unit::Count,
        "Recovery commands, by action, selector and outcome."
    );
    describe_counter!(
        ITEMS,
        Unit::Count,
        "Per-entry command outcomes, by action and status."
    );
    describe_counter!(
        REPUBLISHED,
        Unit::Count,
        "Runs republished to the executions topic, by kind."
    );
    describe_counter!(
        EXPIRED,
        Unit::Count,
        "Entries removed because their retention ran out."
    );
    describe_gauge!(
        CONSUMER_LAG,
        Unit::Count,
        "Records not yet consumed, by input topic."
    );
    describe_histogram!(
        INGEST_LATENCY,
        Unit::Seconds,
        "From the failure's time to stored."
    );
    describe_histogram!(
        COMMAND_LATENCY,
        Unit::Seconds,
        "From a command's request to its result."
    );
    describe_counter!(TRANSACTIONS, Unit::Count, "Kafka transactions, by outcome.");
    describe_counter!(
        HTTP_REQUESTS,
        Unit::Count,
        "HTTP requests, by route and status."
    );
    describe_counter!(
        STORE_INTEGRITY_ERRORS,
        Unit::Count,
        "Breaches of the store topic's integrity (retention set, records deleted)."
    );
}

pub fn transaction(outcome: &'static str) {
    counter!(TRANSACTIONS, "outcome" => outcome).increment(1);
}

pub fn rejected(topic: &str, reason: &'static str) {
    counter!(REJECTED, "topic" => topic.to_string(), "reason" => reason).increment(1);
}

pub fn ingested(count: u64) {
    counter!(INGESTED).increment(count);
}

pub fn ingest_latency(seconds: f64) {
    histogram!(INGEST_LATENCY).record(seconds);
}

pub fn expired(count: u64) {
    counter!(EXPIRED).increment(count);
}

pub fn store_integrity_error() {
    counter!(STORE_INTEGRITY_ERRORS).increment(1);
}

pub fn consumer_lag(topic: &str, lag: i64) {
    gauge!(CONSUMER_LAG, "topic" => topic.to_string()).set(lag as f64);
}

pub fn entries(count: usize, oldest_age_seconds: f64) {
    gauge!(ENTRIES).set(count as f64);
    gauge!(OLDEST_ENTRY_AGE).set(oldest_age_seconds);
}

pub fn http_request(route: String, status: u16) {
    counter!(HTTP_REQUESTS, "route" => route, "status" => status.to_string()).increment(1);
}

pub fn command(action: &'static str, selector: &'static str, outcome: &'static str) {
    counter!(COMMANDS, "action" => action, "selector" => selector, "outcome" => outcome)
        .increment(1);
}

pub fn item(action: &'static str, status: &'static str) {
    counter!(ITEMS, "action" => action, "status" => status).increment(1);
}

pub fn republished(kind: &'static str) {
    counter!(REPUBLISHED, "kind" => kind).increment(1);
}

pub fn command_latency(seconds: f64) {
    histogram!(COMMAND_LATENCY).record(seconds);
}
