//! Every metric the service exports (docs/design.md §7), named, described and bucketed in one
//! place: [`CATALOGUE`]. `docs/metrics.md` is rendered from it (a test fails when the two differ;
//! `UPDATE_DOCS=1 cargo test --lib metrics` rewrites the file).
//!
//! Labels are low-cardinality: never a run id or a dlq id. Series whose label values are known
//! up front are created at zero on start ([`init_series`]), so an alert like
//! `increase(dlq_rejected_total[5m]) > 0` sees the very first rejection instead of a series
//! that appears already at 1.

use std::sync::OnceLock;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::{
    config::Topics,
    events::{
        CommandAction, CommandOutcome, CommandSelector, ItemAction, ItemStatus, RejectReason,
        RepublishKind, StatusClass, TxnOutcome, WorkerKind, WorkerOutcome,
    },
};

pub const ENTRIES: &str = "dlq_entries";
pub const OLDEST_ENTRY_AGE: &str = "dlq_oldest_entry_age_seconds";
pub const INGESTED: &str = "dlq_ingested_total";
pub const REJECTED: &str = "dlq_rejected_total";
pub const NEW_SIGNATURES: &str = "dlq_failure_signatures_new_total";
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
pub const WORKER_RESTARTS: &str = "dlq_worker_restarts_total";

// The bounded label values, documented in the catalogue and pre-created at zero, are the
// variants of the label enums in `crate::events`: the only values an event can emit.
pub const WORKERS: &[&str] = WorkerKind::LABELS;
pub const WORKER_OUTCOMES: &[&str] = WorkerOutcome::LABELS;
pub const ACTIONS: &[&str] = ItemAction::LABELS;
/// `dlq_commands_total` also names commands it could not read or whose action was missing.
pub const COMMAND_ACTIONS: &[&str] = CommandAction::LABELS;
pub const SELECTORS: &[&str] = CommandSelector::LABELS;
pub const COMMAND_OUTCOMES: &[&str] = CommandOutcome::LABELS;
/// Outcomes that mean a command did not do what was asked (alerted on).
pub const COMMAND_FAILURE_OUTCOMES: &[&str] = CommandOutcome::FAILURES;
pub const ITEM_STATUSES: &[&str] = ItemStatus::LABELS;
pub const REPUBLISH_KINDS: &[&str] = RepublishKind::LABELS;
pub const TXN_OUTCOMES: &[&str] = TxnOutcome::LABELS;
pub const STATUS_CLASSES: &[&str] = StatusClass::LABELS;
/// Why a record of either input topic was rejected.
pub const REJECT_REASONS: &[&str] = RejectReason::LABELS;

/// Failure time → stored. Normally well under a second (ingest commits every ~100 ms), but the
/// clock is the platform's `failed_at`, so a backlog after an outage or a slow consumer shows
/// up as minutes to an hour; the top buckets keep those visible instead of lumping them in +Inf.
pub const INGEST_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0,
];
/// A command's request → its final result. One id takes milliseconds (plus the HTTP round
/// trip); a bulk command is paced by `max_per_second`, so 10,000 entries at 10/s take ~17 min.
pub const COMMAND_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0,
    3600.0,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A label and the values it takes.
#[derive(Debug, Clone, Copy)]
pub enum Values {
    /// Exactly these.
    Fixed(&'static [&'static str]),
    /// Bounded, but not a constant list (e.g. a configured topic name, a route template).
    Described(&'static str),
}

#[derive(Debug, Clone, Copy)]
pub struct Def {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Unit,
    pub help: &'static str,
    pub labels: &'static [(&'static str, Values)],
    /// Histograms only.
    pub buckets: &'static [f64],
}

const fn def(
    name: &'static str,
    kind: Kind,
    unit: Unit,
    help: &'static str,
    labels: &'static [(&'static str, Values)],
) -> Def {
    Def {
        name,
        kind,
        unit,
        help,
        labels,
        buckets: &[],
    }
}

const INPUT_TOPIC: Values = Values::Described("the configured failures or commands topic");

/// Every metric, in the order `docs/metrics.md` lists them.
pub const CATALOGUE: &[Def] = &[
    def(
        ENTRIES,
        Kind::Gauge,
        Unit::Count,
        "Entries in the DLQ store view.",
        &[],
    ),
    def(
        OLDEST_ENTRY_AGE,
        Kind::Gauge,
        Unit::Seconds,
        "Age of the oldest entry in the DLQ (0 when empty).",
        &[],
    ),
    def(
        INGESTED,
        Kind::Counter,
        Unit::Count,
        "Failure events stored in the DLQ.",
        &[],
    ),
    def(
        REJECTED,
        Kind::Counter,
        Unit::Count,
        "Input records sent to the rejected topic, by source topic and reason (the failures \
         topic never has `too_long`; the commands topic never has `invalid` or `unknown_dlq_id`).",
        &[
            ("topic", INPUT_TOPIC),
            ("reason", Values::Fixed(REJECT_REASONS)),
        ],
    ),
    def(
        COMMANDS,
        Kind::Counter,
        Unit::Count,
        "Recovery commands, by action, selector and outcome.",
        &[
            ("action", Values::Fixed(COMMAND_ACTIONS)),
            ("selector", Values::Fixed(SELECTORS)),
            ("outcome", Values::Fixed(COMMAND_OUTCOMES)),
        ],
    ),
    def(
        ITEMS,
        Kind::Counter,
        Unit::Count,
        "Per-entry command outcomes, by action and status.",
        &[
            ("action", Values::Fixed(ACTIONS)),
            ("status", Values::Fixed(ITEM_STATUSES)),
        ],
    ),
    def(
        REPUBLISHED,
        Kind::Counter,
        Unit::Count,
        "Runs republished to the executions topic, by kind.",
        &[("kind", Values::Fixed(REPUBLISH_KINDS))],
    ),
    def(
        NEW_SIGNATURES,
        Kind::Counter,
        Unit::Count,
        "Failures of a kind the DLQ did not hold (a signature no entry had) stored by this \
         instance, by the class of their response status: alert on any increase. The signature \
         itself is in the log line and `GET /v2/workflows/dlq/groups`.",
        &[("status_class", Values::Fixed(STATUS_CLASSES))],
    ),
    def(
        EXPIRED,
        Kind::Counter,
        Unit::Count,
        "Entries removed because their retention ran out.",
        &[],
    ),
    def(
        CONSUMER_LAG,
        Kind::Gauge,
        Unit::Count,
        "Records of an input topic the service's consumer group has not committed yet.",
        &[("topic", INPUT_TOPIC)],
    ),
    Def {
        buckets: INGEST_BUCKETS,
        ..def(
            INGEST_LATENCY,
            Kind::Histogram,
            Unit::Seconds,
            "From the failure's time (failed_at, else the record timestamp) to stored.",
            &[],
        )
    },
    Def {
        buckets: COMMAND_BUCKETS,
        ..def(
            COMMAND_LATENCY,
            Kind::Histogram,
            Unit::Seconds,
            "From a command's requested_at to its final result.",
            &[],
        )
    },
    def(
        TRANSACTIONS,
        Kind::Counter,
        Unit::Count,
        "Kafka transactions, by outcome.",
        &[("outcome", Values::Fixed(TXN_OUTCOMES))],
    ),
    def(
        HTTP_REQUESTS,
        Kind::Counter,
        Unit::Count,
        "HTTP requests, by matched route and status.",
        &[
            (
                "route",
                Values::Described("the route template, e.g. /v2/dlq/{dlqId}; `unmatched`"),
            ),
            ("status", Values::Described("the HTTP status code")),
        ],
    ),
    def(
        STORE_INTEGRITY_ERRORS,
        Kind::Counter,
        Unit::Count,
        "Breaches of the store topic's integrity (retention set, records deleted, bad records).",
        &[],
    ),
    def(
        WORKER_RESTARTS,
        Kind::Counter,
        Unit::Count,
        "Worker pipelines that failed, by worker and what followed: `restarted` from committed \
         offsets, `given_up` (it kept panicking; the process exits non-zero), or `stalled` (it \
         read nothing while records waited: not ready, and rebuilt if it lasts; or a new \
         producer waited 30 s for a transaction left open where it writes, counted every 30 s \
         it goes on: see design.md, \"Transactions left open\").",
        &[
            ("worker", Values::Fixed(WORKERS)),
            ("outcome", Values::Fixed(WORKER_OUTCOMES)),
        ],
    ),
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder once per process (several services in one test process
/// share it), describes every metric and creates the series that need no configuration.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let mut builder = Ok(PrometheusBuilder::new());
            for d in CATALOGUE.iter().filter(|d| d.kind == Kind::Histogram) {
                builder = builder.and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(d.name.into()), d.buckets)
                });
            }
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                // Only an empty bucket list errors; ours are constants (a test checks them).
                Err(_) => PrometheusBuilder::new().build_recorder(),
            };
            let handle = recorder.handle();
            // A recorder may already be installed (e.g. by a test); ours still renders.
            let _ = metrics::set_global_recorder(recorder);
            describe_all();
            init_global_series();
            handle
        })
        .clone()
}

fn describe_all() {
    for d in CATALOGUE {
        match d.kind {
            Kind::Counter => describe_counter!(d.name, d.unit, d.help),
            Kind::Gauge => describe_gauge!(d.name, d.unit, d.help),
            Kind::Histogram => describe_histogram!(d.name, d.unit, d.help),
        }
    }
}

/// Series with no labels or a label set fixed by the code, at zero (histograms empty).
fn init_global_series() {
    for name in [INGESTED, EXPIRED, STORE_INTEGRITY_ERRORS] {
        counter!(name).increment(0);
    }
    gauge!(ENTRIES).set(0.0);
    gauge!(OLDEST_ENTRY_AGE).set(0.0);
    // Registering a histogram renders it with empty buckets.
    let _ = histogram!(INGEST_LATENCY);
    let _ = histogram!(COMMAND_LATENCY);
    for outcome in TXN_OUTCOMES {
        counter!(TRANSACTIONS, "outcome" => *outcome).increment(0);
    }
    for worker in WORKERS {
        for outcome in WORKER_OUTCOMES {
            counter!(WORKER_RESTARTS, "worker" => *worker, "outcome" => *outcome).increment(0);
        }
    }
    for kind in REPUBLISH_KINDS {
        counter!(REPUBLISHED, "kind" => *kind).increment(0);
    }
    for class in STATUS_CLASSES {
        counter!(NEW_SIGNATURES, "status_class" => *class).increment(0);
    }
    for action in ACTIONS {
        for status in ITEM_STATUSES {
            counter!(ITEMS, "action" => *action, "status" => *status).increment(0);
        }
        // The outcomes a command of each kind can end in, so a first failure is an increase.
        for (selector, outcome) in [
            ("id", "ok"),
            ("id", "failed"),
            ("bulk", "ok"),
            ("bulk", "failed"),
            ("invalid", "rejected"),
        ] {
            counter!(COMMANDS, "action" => *action, "selector" => selector, "outcome" => outcome)
                .increment(0);
        }
    }
    counter!(COMMANDS, "action" => "unspecified", "selector" => "invalid", "outcome" => "rejected")
        .increment(0);
    counter!(COMMANDS, "action" => "unknown", "selector" => "unknown", "outcome" => "undecodable")
        .increment(0);
}

/// Series labelled by the configured topics, at zero. Called by every service start.
pub fn init_series(topics: &Topics) {
    for reason in REJECT_REASONS {
        counter!(REJECTED, "topic" => topics.failures.clone(), "reason" => *reason).increment(0);
        counter!(REJECTED, "topic" => topics.commands.clone(), "reason" => *reason).increment(0);
    }
}

/// The `/metrics` body: the recorder's metrics, then the standard `process_*` metrics.
pub fn render(handle: &PrometheusHandle) -> String {
    let mut out = handle.render();
    process::render(&mut out);
    out
}

/// The process metrics every Prometheus client library exports (CPU, memory, file descriptors,
/// threads, start time), read from `/proc/self` at scrape time. Elsewhere than Linux: none.
mod process {
    use std::fmt::Write;

    /// Clock ticks per second of `/proc/<pid>/stat` times: USER_HZ, 100 on Linux.
    const TICKS: f64 = 100.0;

    pub fn render(out: &mut String) {
        let mut emit = |name: &str, kind: &str, help: &str, value: f64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n"
            );
        };
        if let Some(stat) = read("/proc/self/stat") {
            // Fields after the parenthesised command name, which may contain spaces.
            let f: Vec<&str> = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().collect())
                .unwrap_or_default();
            // man proc: utime 14, stime 15, num_threads 20, starttime 22, vsize 23 (1-based,
            // counting pid and comm); `f[0]` is field 3.
            let num = |i: usize| f.get(i - 3).and_then(|v| v.parse::<f64>().ok());
            if let (Some(u), Some(s)) = (num(14), num(15)) {
                emit(
                    "process_cpu_seconds_total",
                    "counter",
                    "Total user and system CPU time spent in seconds.",
                    (u + s) / TICKS,
                );
            }
            if let Some(v) = num(23) {
                emit(
                    "process_virtual_memory_bytes",
                    "gauge",
                    "Virtual memory size in bytes.",
                    v,
                );
            }
            if let Some(t) = num(20) {
                emit("process_threads", "gauge", "Number of OS threads.", t);
            }
            let boot = read("/proc/stat").and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime "))
                    .and_then(|v| v.trim().parse::<f64>().ok())
            });
            if let (Some(boot), Some(start)) = (boot, num(22)) {
                emit(
                    "process_start_time_seconds",
                    "gauge",
                    "Start time of the process since unix epoch in seconds.",
                    boot + start / TICKS,
                );
            }
        }
        let rss_kib = read("/proc/self/status").and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
        });
        if let Some(kib) = rss_kib {
            emit(
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                kib * 1024.0,
            );
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            emit(
                "process_open_fds",
                "gauge",
                "Number of open file descriptors.",
                dir.count() as f64,
            );
        }
        let max_fds = read("/proc/self/limits").and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Max open files"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
        });
        if let Some(m) = max_fds {
            emit(
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                m,
            );
        }
    }

    fn read(path: &str) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }
}

/// The metrics catalogue as Markdown: what `docs/metrics.md` must contain.
pub fn catalogue_markdown() -> String {
    let mut out = String::from(
        "# Metrics\n\n\
         <!-- Generated from src/metrics.rs (CATALOGUE) by `UPDATE_DOCS=1 cargo test --lib metrics`; \
         a test fails when this file and the code differ. -->\n\n\
         Scraped from `GET /metrics` (Prometheus text format, no authentication). \
         Every name starts with `dlq_`; no label carries a run id or a dlq id. \
         Series whose label values are known up front exist from start, at zero.\n\n\
         | name | type | unit | labels | help |\n|---|---|---|---|---|\n",
    );
    for d in CATALOGUE {
        let labels = if d.labels.is_empty() {
            "—".to_string()
        } else {
            d.labels
                .iter()
                .map(|(l, _)| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            d.name,
            d.kind.as_str(),
            d.unit.as_str(),
            labels,
            d.help
        ));
    }
    out.push_str(
        "\nAlso the standard process metrics, read from `/proc/self` at scrape time (Linux): \
         `process_cpu_seconds_total`, `process_resident_memory_bytes`, \
         `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`, \
         `process_threads`, `process_start_time_seconds`.\n",
    );
    out.push_str("\n## Label values\n\n");
    for d in CATALOGUE.iter().filter(|d| !d.labels.is_empty()) {
        out.push_str(&format!("- `{}`\n", d.name));
        for (l, v) in d.labels {
            let values = match v {
                Values::Fixed(vs) => vs
                    .iter()
                    .map(|v| format!("`{v}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                Values::Described(s) => s.to_string(),
            };
            out.push_str(&format!("  - `{l}`: {values}\n"));
        }
    }
    out.push_str("\n## Histogram buckets (upper bounds, seconds)\n\n");
    for d in CATALOGUE.iter().filter(|d| d.kind == Kind::Histogram) {
        let b = d
            .buckets
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!("- `{}`: {b}, +Inf\n", d.name));
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/metrics.md` is the catalogue rendered; `UPDATE_DOCS=1` rewrites it.
    #[test]
    fn docs_metrics_md_matches_the_catalogue() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md");
        let want = catalogue_markdown();
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(&path, &want).expect("write docs/metrics.md");
            return;
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "docs/metrics.md differs from src/metrics.rs; run `UPDATE_DOCS=1 cargo test --lib metrics`"
        );
    }

    #[test]
    fn process_metrics_render_on_linux() {
        let mut out = String::new();
        process::render(&mut out);
        if cfg!(target_os = "linux") {
            for name in [
                "process_cpu_seconds_total",
                "process_resident_memory_bytes",
                "process_open_fds",
                "process_start_time_seconds",
            ] {
                let value: f64 = out
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name} ")))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{name} missing in {out}"));
                // A short test may not have used a whole clock tick of CPU yet.
                let least = if name == "process_cpu_seconds_total" {
                    0.0
                } else {
                    1.0
                };
                assert!(value >= least, "{name} = {value}");
            }
        }
    }

    #[test]
    fn catalogue_names_are_unique_prefixed_and_bucketed() {
        let mut names: Vec<_> = CATALOGUE.iter().map(|d| d.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CATALOGUE.len(), "duplicate metric name");
        for d in CATALOGUE {
            assert!(d.name.starts_with("dlq_"), "{}", d.name);
            assert_eq!(
                d.name.ends_with("_total"),
                d.kind == Kind::Counter,
                "{}: counters and only counters end in _total",
                d.name
            );
            assert_eq!(
                d.kind == Kind::Histogram,
                !d.buckets.is_empty(),
                "{}",
                d.name
            );
            assert!(
                d.buckets.windows(2).all(|w| w[0] < w[1]),
                "{}: buckets ascend",
                d.name
            );
            for (label, _) in d.labels {
                assert!(
                    !["dlq_id", "dlqId", "run_id", "workflow_run_id", "command_id"].contains(label),
                    "{}: unbounded label {label}",
                    d.name
                );
            }
        }
    }
}
