//! The integration suite, one binary (one link of librdkafka instead of fourteen), a module per
//! area. Every test runs on the embedded broker, or on the real Apache Kafka named by
//! `KAFKA_BOOTSTRAP` (`deploy/dev/kafka.sh`). Tests that need what only a real broker has, or
//! node / python / prometheus, are `#[ignore = "…"]` with the reason, so plain `cargo test`
//! reports them as skipped; `.ci/run` runs them (`-- --include-ignored`). Two run alone: the
//! broker-restart test stops the broker, and the Prometheus test counts process-global metrics
//! (`--skip broker_restart --skip prometheus::` in the main pass).

#[macro_use]
mod common;

mod api_fuzz;
mod broker_restart;
mod cli;
mod cluster;
mod commands;
mod console;
mod deploy;
mod failover;
mod fencing;
mod foundation;
mod groups;
mod hostile;
mod http_api;
mod http_load;
mod ingest;
mod java_client;
mod jobs;
mod kafka_security;
mod prometheus;
mod sdk_compat;
mod security;
mod soak;
mod stalls;
mod wire_contracts;
