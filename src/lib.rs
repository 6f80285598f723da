//! `workflow-dlq`: a Kafka-native dead letter queue for durable workflow runs.
//!
//! One module per concern: [`config`], wire contracts ([`wire`]), Kafka plumbing ([`kafka`]),
//! [`ingest`], the store view ([`store`]), [`http`], [`metrics`], [`health`], and the wiring
//! that starts and stops them all ([`app`]); [`cli`] is the `dlq` command line over the HTTP API.

pub mod app;
pub mod cli;
pub mod commands;
pub mod config;
pub mod console;
pub mod events;
pub mod health;
pub mod http;
pub mod ingest;
pub mod kafka;
pub mod metrics;
pub mod republish;
pub mod signature;
pub mod store;
pub mod telemetry;
pub mod tokens;
pub mod wire;

pub use app::{Service, ServiceError};
pub use config::Config;

/// Now, in unix milliseconds (the unit of every timestamp on the wire).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
