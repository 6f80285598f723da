//! One typed configuration for the whole service.
//!
//! Layers, lowest first: built-in defaults → the optional TOML file (`--config`) → `DLQ_*`
//! environment variables → command-line flags. `DLQ_KAFKA_<PROPERTY>` (and a `[kafka]` table in
//! the file) passes any librdkafka property through, so SASL/TLS clusters need no code change.
//! [`Config::validate`] runs at start and names the setting at fault.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, ValueEnum};
use serde::Deserialize;

/// Errors in configuration: each names the setting and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML for this service: {source}")]
    ParseFile {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("setting `{setting}` is invalid: {reason}")]
    Invalid {
        setting: &'static str,
        reason: String,
    },
}

fn invalid(setting: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OutputEncoding {
    #[default]
    Protobuf,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Topic names (docs/design.md §2). Configurable so several deployments can share a cluster.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Topics {
    pub failures: String,
    pub store: String,
    pub commands: String,
    pub executions: String,
    pub results: String,
    pub rejected: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            failures: "workflow.failures".into(),
            store: "workflow.dlq".into(),
            commands: "workflow.dlq.commands".into(),
            executions: "workflow.executions".into(),
            results: "workflow.dlq.results".into(),
            rejected: "workflow.dlq.rejected".into(),
        }
    }
}

impl Topics {
    /// Every topic with a short role name, in docs/design.md §2 order.
    pub fn all(&self) -> [(&'static str, &str); 6] {
        [
            ("failures", &self.failures),
            ("store", &self.store),
            ("commands", &self.commands),
            ("executions", &self.executions),
            ("results", &self.results),
            ("rejected", &self.rejected),
        ]
    }

    /// The same names with a suffix: tests use it to get a private set of topics on one broker.
    pub fn with_suffix(suffix: &str) -> Topics {
        let d = Topics::default();
        Topics {
            failures: format!("{}.{suffix}", d.failures),
            store: format!("{}.{suffix}", d.store),
            commands: format!("{}.{suffix}", d.commands),
            executions: format!("{}.{suffix}", d.executions),
            results: format!("{}.{suffix}", d.results),
            rejected: format!("{}.{suffix}", d.rejected),
        }
    }
}

/// The validated configuration of `workflow-dlq serve`.
#[derive(Debug, Clone)]
pub struct Config {
    /// `None`: start the embedded (in-memory, development) broker.
    pub kafka_bootstrap: Option<String>,
    /// Extra librdkafka properties, applied to every client.
    pub kafka_properties: BTreeMap<String, String>,
    pub http_addr: SocketAddr,
    /// `None`: a random token is generated and printed once.
    pub api_token: Option<String>,
    pub retention: Duration,
    pub topics: Topics,
    pub group_id: String,
    /// Stable per instance: names its transactional producers, so a restarted instance fences
    /// its own previous incarnation at once instead of waiting for a transaction timeout.
    pub instance_id: String,
    pub partitions: i32,
    pub replication_factor: i32,
    pub max_per_second: f64,
    pub output_encoding: OutputEncoding,
    pub log_format: LogFormat,
    pub max_record_bytes: usize,
    pub txn_max_records: usize,
    pub txn_max_interval: Duration,
    pub txn_max_bytes: usize,
    pub sweep_interval: Duration,
    pub guard_interval: Duration,
    pub kafka_connect_timeout: Duration,
    pub shutdown_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kafka_bootstrap: None,
            kafka_properties: BTreeMap::new(),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            api_token: None,
            retention: Duration::from_secs(7 * 24 * 3600),
            topics: Topics::default(),
            group_id: "workflow-dlq".into(),
            instance_id: default_instance_id(),
            partitions: 12,
            replication_factor: -1,
            max_per_second: 100.0,
            output_encoding: OutputEncoding::Protobuf,
            log_format: LogFormat::Text,
            max_record_bytes: 1024 * 1024,
            txn_max_records: 50_000,
            txn_max_interval: Duration::from_millis(100),
            txn_max_bytes: 16 * 1024 * 1024,
            sweep_interval: Duration::from_secs(30),
            guard_interval: Duration::from_secs(30),
            kafka_connect_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

fn default_instance_id() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "workflow-dlq".into())
}

/// Flags of `serve`; every one has a `DLQ_*` environment twin. All optional so that the file
/// and the defaults can fill what is not given.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML file with the same settings (snake_case keys) and a `[kafka]` table of properties.
    #[arg(long, env = "DLQ_CONFIG")]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers; unset = start the embedded in-memory broker.
    #[arg(long, env = "DLQ_KAFKA_BOOTSTRAP")]
    pub kafka_bootstrap: Option<String>,
    #[arg(long, env = "DLQ_HTTP_ADDR")]
    pub http_addr: Option<String>,
    #[arg(long, env = "DLQ_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// How long an entry stays in the DLQ, e.g. `7d`, `12h`.
    #[arg(long, env = "DLQ_RETENTION")]
    pub retention: Option<String>,
    #[arg(long, env = "DLQ_TOPIC_FAILURES")]
    pub topic_failures: Option<String>,
    #[arg(long, env = "DLQ_TOPIC_STORE")]
    pub topic_store: Option<String>,
    #[arg(long, env = "DLQ_TOPIC_COMMANDS")]
    pub topic_commands: Option<String>,
    #[arg(long, env = "DLQ_TOPIC_EXECUTIONS")]
    pub topic_executions: Option<String>,
    #[arg(long, env = "DLQ_TOPIC_RESULTS")]
    pub topic_results: Option<String>,
    #[arg(long, env = "DLQ_TOPIC_REJECTED")]
    pub topic_rejected: Option<String>,
    #[arg(long, env = "DLQ_GROUP_ID")]
    pub group_id: Option<String>,
    /// Stable name of this instance (default: the host name).
    #[arg(long, env = "DLQ_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Partitions for topics the service creates (store and commands are co-partitioned).
    #[arg(long, env = "DLQ_PARTITIONS")]
    pub partitions: Option<i32>,
    /// Replication factor for created topics; -1 = the broker's default.
    #[arg(long, env = "DLQ_REPLICATION_FACTOR", allow_hyphen_values = true)]
    pub replication_factor: Option<i32>,
    /// Default republish velocity of a command (entries per second).
    #[arg(long, env = "DLQ_MAX_PER_SECOND")]
    pub max_per_second: Option<f64>,
    #[arg(long, env = "DLQ_OUTPUT_ENCODING", value_enum)]
    pub output_encoding: Option<OutputEncoding>,
    #[arg(long, env = "DLQ_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Largest input record accepted, e.g. `1MiB`, in bytes.
    #[arg(long, env = "DLQ_MAX_RECORD_BYTES")]
    pub max_record_bytes: Option<usize>,
    /// A transaction commits after this many records...
    #[arg(long, env = "DLQ_TXN_MAX_RECORDS")]
    pub txn_max_records: Option<usize>,
    /// ...or after this long, whichever comes first (e.g. `100ms`).
    #[arg(long, env = "DLQ_TXN_MAX_INTERVAL")]
    pub txn_max_interval: Option<String>,
    #[arg(long, env = "DLQ_SWEEP_INTERVAL")]
    pub sweep_interval: Option<String>,
    #[arg(long, env = "DLQ_GUARD_INTERVAL")]
    pub guard_interval: Option<String>,
    /// Give up starting when Kafka can't be reached for this long.
    #[arg(long, env = "DLQ_KAFKA_CONNECT_TIMEOUT")]
    pub kafka_connect_timeout: Option<String>,
    /// Bound on graceful shutdown after SIGTERM/SIGINT.
    #[arg(long, env = "DLQ_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<String>,
}

/// The file form: the same settings, snake_case, plus `[kafka]` properties.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    kafka_bootstrap: Option<String>,
    http_addr: Option<String>,
    api_token: Option<String>,
    retention: Option<String>,
    topic_failures: Option<String>,
    topic_store: Option<String>,
    topic_commands: Option<String>,
    topic_executions: Option<String>,
    topic_results: Option<String>,
    topic_rejected: Option<String>,
    group_id: Option<String>,
    instance_id: Option<String>,
    partitions: Option<i32>,
    replication_factor: Option<i32>,
    max_per_second: Option<f64>,
    output_encoding: Option<OutputEncoding>,
    log_format: Option<LogFormat>,
    max_record_bytes: Option<usize>,
    txn_max_records: Option<usize>,
    txn_max_interval: Option<String>,
    sweep_interval: Option<String>,
    guard_interval: Option<String>,
    kafka_connect_timeout: Option<String>,
    shutdown_grace: Option<String>,
    #[serde(default)]
    kafka: BTreeMap<String, String>,
}

/// Environment variables under `DLQ_KAFKA_` that are our own settings, not librdkafka properties.
const OWN_KAFKA_VARS: &[&str] = &["DLQ_KAFKA_BOOTSTRAP", "DLQ_KAFKA_CONNECT_TIMEOUT"];

/// `DLQ_KAFKA_SECURITY_PROTOCOL=SASL_SSL` → `security.protocol=SASL_SSL`.
pub fn kafka_properties_from_env(
    vars: impl IntoIterator<Item = (String, String)>,
) -> BTreeMap<String, String> {
    vars.into_iter()
        .filter(|(k, _)| k.starts_with("DLQ_KAFKA_") && !OWN_KAFKA_VARS.contains(&k.as_str()))
        .map(|(k, v)| {
            let property = k["DLQ_KAFKA_".len()..]
                .to_ascii_lowercase()
                .replace('_', ".");
            (property, v)
        })
        .collect()
}

fn duration(setting: &'static str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        invalid(
            setting,
            format!("`{text}` is not a duration like `7d`, `30s` or `100ms` ({e})"),
        )
    })
}

impl Config {
    /// Builds the configuration from flags (with their env twins already applied by clap),
    /// the file they name, and the `DLQ_KAFKA_*` passthrough, then validates it.
    pub fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
                        path: path.clone(),
                        source,
                    })?;
                toml::from_str::<FileConfig>(&text).map_err(|source| ConfigError::ParseFile {
                    path: path.clone(),
                    source,
                })?
            }
            None => FileConfig::default(),
        };
        let mut cfg = Config::from_layers(args, file)?;
        cfg.kafka_properties
            .extend(kafka_properties_from_env(std::env::vars()));
        cfg.validate()?;
        Ok(cfg)
    }

    fn from_layers(args: &ServeArgs, file: FileConfig) -> Result<Config, ConfigError> {
        let d = Config::default();
        // Flag/env first, then file, then default.
        macro_rules! pick {
            ($field:ident) => {
                args.$field.clone().or(file.$field.clone())
            };
        }
        let http_addr = match pick!(http_addr) {
            Some(a) => a.parse().map_err(|e| {
                invalid(
                    "http_addr",
                    format!("`{a}` is not a socket address like 127.0.0.1:8080 ({e})"),
                )
            })?,
            None => d.http_addr,
        };
        let dur = |setting: &'static str, v: Option<String>, def: Duration| match v {
            Some(t) => duration(setting, &t),
            None => Ok(def),
        };
        let td = Topics::default();
        Ok(Config {
            kafka_bootstrap: pick!(kafka_bootstrap).filter(|b| !b.trim().is_empty()),
            kafka_properties: file.kafka.clone(),
            http_addr,
            api_token: pick!(api_token),
            retention: dur("retention", pick!(retention), d.retention)?,
            topics: Topics {
                failures: pick!(topic_failures).unwrap_or(td.failures),
                store: pick!(topic_store).unwrap_or(td.store),
                commands: pick!(topic_commands).unwrap_or(td.commands),
                executions: pick!(topic_executions).unwrap_or(td.executions),
                results: pick!(topic_results).unwrap_or(td.results),
                rejected: pick!(topic_rejected).unwrap_or(td.rejected),
            },
            group_id: pick!(group_id).unwrap_or(d.group_id),
            instance_id: pick!(instance_id).unwrap_or(d.instance_id),
            partitions: pick!(partitions).unwrap_or(d.partitions),
            replication_factor: pick!(replication_factor).unwrap_or(d.replication_factor),
            max_per_second: pick!(max_per_second).unwrap_or(d.max_per_second),
            output_encoding: pick!(output_encoding).unwrap_or(d.output_encoding),
            log_format: pick!(log_format).unwrap_or(d.log_format),
            max_record_bytes: pick!(max_record_bytes).unwrap_or(d.max_record_bytes),
            txn_max_records: pick!(txn_max_records).unwrap_or(d.txn_max_records),
            txn_max_interval: dur(
                "txn_max_interval",
                pick!(txn_max_interval),
                d.txn_max_interval,
            )?,
            txn_max_bytes: d.txn_max_bytes,
            sweep_interval: dur("sweep_interval", pick!(sweep_interval), d.sweep_interval)?,
            guard_interval: dur("guard_interval", pick!(guard_interval), d.guard_interval)?,
            kafka_connect_timeout: dur(
                "kafka_connect_timeout",
                pick!(kafka_connect_timeout),
                d.kafka_connect_timeout,
            )?,
            shutdown_grace: dur("shutdown_grace", pick!(shutdown_grace), d.shutdown_grace)?,
        })
    }

    /// Checks values and the relations between them; the error names the setting at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(token) = &self.api_token {
            if token.len() < 16 {
                return Err(invalid(
                    "api_token",
                    "must be at least 16 characters (or unset to generate one)",
                ));
            }
        }
        if self.retention < Duration::from_secs(1) {
            return Err(invalid("retention", "must be at least 1s"));
        }
        for (role, name) in self.topics.all() {
            let legal = !name.is_empty()
                && name.len() <= 249
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !legal {
                return Err(ConfigError::Invalid {
                    setting: "topic name",
                    reason: format!(
                        "the {role} topic `{name}` is not a legal Kafka topic name \
                         (1-249 of [a-zA-Z0-9._-])"
                    ),
                });
            }
        }
        let mut names: Vec<&str> = self.topics.all().iter().map(|(_, n)| *n).collect();
        names.sort_unstable();
        names.dedup();
        if names.len() != 6 {
            return Err(invalid(
                "topic name",
                "the six topics must have distinct names",
            ));
        }
        if self.group_id.trim().is_empty() {
            return Err(invalid("group_id", "must not be empty"));
        }
        if self.instance_id.trim().is_empty() {
            return Err(invalid("instance_id", "must not be empty"));
        }
        if !(1..=10_000).contains(&self.partitions) {
            return Err(invalid("partitions", "must be between 1 and 10000"));
        }
        if self.replication_factor == 0 || self.replication_factor < -1 {
            return Err(invalid(
                "replication_factor",
                "must be -1 (broker default) or at least 1",
            ));
        }
        if !(self.max_per_second.is_finite() && self.max_per_second > 0.0) {
            return Err(invalid("max_per_second", "must be a positive number"));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.max_record_bytes) {
            return Err(invalid(
                "max_record_bytes",
                "must be between 1024 and 67108864 bytes",
            ));
        }
        if self.txn_max_records == 0 {
            return Err(invalid("txn_max_records", "must be at least 1"));
        }
        if self.txn_max_interval < Duration::from_millis(1)
            || self.txn_max_interval > Duration::from_secs(10)
        {
            return Err(invalid("txn_max_interval", "must be between 1ms and 10s"));
        }
        if self.sweep_interval < Duration::from_millis(100) {
            return Err(invalid("sweep_interval", "must be at least 100ms"));
        }
        if self.guard_interval < Duration::from_millis(100) {
            return Err(invalid("guard_interval", "must be at least 100ms"));
        }
        if self.kafka_connect_timeout < Duration::from_secs(1) {
            return Err(invalid("kafka_connect_timeout", "must be at least 1s"));
        }
        for forbidden in ["bootstrap.servers", "group.id", "transactional.id"] {
            if self.kafka_properties.contains_key(forbidden) {
                return Err(ConfigError::Invalid {
                    setting: "kafka properties",
                    reason: format!(
                        "`{forbidden}` is set by the service itself; use the dedicated setting"
                    ),
                });
            }
        }
        Ok(())
    }

    pub fn is_embedded(&self) -> bool {
        self.kafka_bootstrap.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_passthrough_maps_names_to_librdkafka_properties() {
        let props = kafka_properties_from_env([
            ("DLQ_KAFKA_SECURITY_PROTOCOL".into(), "SASL_SSL".into()),
            ("DLQ_KAFKA_SASL_MECHANISMS".into(), "SCRAM-SHA-512".into()),
            ("DLQ_KAFKA_BOOTSTRAP".into(), "ignored:9092".into()),
            ("DLQ_HTTP_ADDR".into(), "ignored".into()),
        ]);
        assert_eq!(props.len(), 2);
        assert_eq!(props["security.protocol"], "SASL_SSL");
        assert_eq!(props["sasl.mechanisms"], "SCRAM-SHA-512");
    }

    #[test]
    fn flags_win_over_file_and_defaults_fill_the_rest() {
        let args = ServeArgs {
            retention: Some("2h".into()),
            ..Default::default()
        };
        let file: FileConfig = toml::from_str(
            "retention = \"1d\"\ngroup_id = \"from-file\"\n[kafka]\n\"linger.ms\" = \"5\"",
        )
        .expect("valid toml");
        let cfg = Config::from_layers(&args, file).expect("valid");
        assert_eq!(cfg.retention, Duration::from_secs(7200));
        assert_eq!(cfg.group_id, "from-file");
        assert_eq!(cfg.kafka_properties["linger.ms"], "5");
        assert_eq!(cfg.topics, Topics::default());
    }

    #[test]
    fn a_bad_value_names_the_setting() {
        let args = ServeArgs {
            retention: Some("seven days".into()),
            ..Default::default()
        };
        let err = Config::from_layers(&args, FileConfig::default()).unwrap_err();
        assert!(err.to_string().contains("`retention`"), "{err}");

        let cfg = Config {
            partitions: 0,
            ..Config::default()
        };
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("`partitions`"));

        let mut cfg = Config::default();
        cfg.topics.store = "bad topic!".into();
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("bad topic!"));

        let cfg = Config {
            api_token: Some("short".into()),
            ..Config::default()
        };
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("`api_token`"));
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        assert!(toml::from_str::<FileConfig>("retension = \"1d\"").is_err());
    }
}
