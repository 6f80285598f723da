//! One typed configuration for the whole service.
//!
//! Layers, lowest first: built-in defaults → the optional TOML file (`--config`) → `DLQ_*`
//! environment variables → command-line flags. `DLQ_KAFKA_<PROPERTY>` (and a `[kafka]` table in
//! the file) passes any librdkafka property through, so SASL/TLS clusters need no code change.
//! [`Config::validate`] runs at start and names the setting at fault.
//!
//! Every setting is declared once, in [`Settings`]: clap reads it as flags (with their `DLQ_*`
//! twins) and serde as the file; [`Settings::over`] layers one over the other. Secrets (the API
//! token, secret librdkafka properties) are [`SecretString`]s from the moment they are read.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, ValueEnum};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

pub use crate::kafka::KafkaProperty;

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
///
/// `Debug` shows no secret: the API token and secret Kafka properties print as redacted.
#[derive(Debug, Clone)]
pub struct Config {
    /// `None`: start the embedded (in-memory, development) broker.
    pub kafka_bootstrap: Option<String>,
    /// Extra librdkafka properties, applied to every client; secret ones are held as secrets.
    pub kafka_properties: BTreeMap<String, KafkaProperty>,
    pub http_addr: SocketAddr,
    /// The single admin token (named `default`). `None` and no [`Config::api_tokens`]: a
    /// random one is generated and printed once.
    pub api_token: Option<SecretString>,
    /// Named tokens with scopes (`crate::tokens`).
    pub api_tokens: Vec<crate::tokens::ApiToken>,
    pub retention: Duration,
    pub topics: Topics,
    pub group_id: String,
    /// Stable per instance: names its transactional producers, so a restarted instance fences
    /// its own previous incarnation at once instead of waiting for a transaction timeout.
    pub instance_id: String,
    pub partitions: i32,
    pub replication_factor: i32,
    pub max_per_second: f64,
    /// The redrive guard: an entry whose run was already redriven this many times is parked
    /// (skipped by bulk restart and resume; acted on only by id with `force`). 0: off.
    pub max_redrives: u32,
    pub output_encoding: OutputEncoding,
    pub log_format: LogFormat,
    pub max_record_bytes: usize,
    /// A transaction commits once it holds this many records, or [`Config::txn_max_bytes`] of
    /// output, or is [`Config::txn_max_interval`] old, or the pipeline has nothing more to read.
    pub txn_max_records: usize,
    pub txn_max_bytes: usize,
    pub txn_max_interval: Duration,
    pub sweep_interval: Duration,
    pub guard_interval: Duration,
    pub kafka_connect_timeout: Duration,
    pub shutdown_grace: Duration,
    /// API reads (`GET`) in flight at once; beyond it a read is shed with 503 (`http::limit`).
    pub http_max_inflight_reads: usize,
    /// API actions (`POST`/`DELETE`) in flight at once, each waiting for its command's result;
    /// beyond it an action is shed with 503.
    pub http_max_inflight_actions: usize,
}

const MIB: usize = 1024 * 1024;
/// Upper bound of the in-flight settings: tokio's semaphore takes far more, but a bound this
/// high is no bound at all.
const MAX_INFLIGHT: usize = 100_000;

impl Default for Config {
    fn default() -> Self {
        Config {
            kafka_bootstrap: None,
            kafka_properties: BTreeMap::new(),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            api_token: None,
            api_tokens: Vec::new(),
            retention: Duration::from_secs(7 * 24 * 3600),
            topics: Topics::default(),
            group_id: "workflow-dlq".into(),
            instance_id: default_instance_id(),
            partitions: 12,
            replication_factor: -1,
            max_per_second: 100.0,
            max_redrives: 3,
            output_encoding: OutputEncoding::Protobuf,
            log_format: LogFormat::Text,
            max_record_bytes: MIB,
            txn_max_records: 50_000,
            txn_max_bytes: 16 * MIB,
            txn_max_interval: Duration::from_millis(100),
            sweep_interval: Duration::from_secs(30),
            guard_interval: Duration::from_secs(30),
            kafka_connect_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            // Actions wait on Kafka (up to 20 s each): 128 keeps the command pipeline's batches
            // full without letting waiters pile up. Reads never wait, so theirs is a safety net.
            http_max_inflight_reads: 256,
            http_max_inflight_actions: 128,
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

/// Flags of `serve`: the config file's path and the [`Settings`].
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML file with the same settings (snake_case keys) and a `[kafka]` table of properties.
    #[arg(long, env = "DLQ_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: Settings,
}

/// Declares [`Settings`] and its layering. Every field is an `Option`: `None` is "not given
/// in this layer", so the next layer down (and finally [`Config::default`]) fills it.
macro_rules! settings {
    (
        $(#[$struct_attr:meta])*
        pub struct Settings {
            $( $(#[$attr:meta])* pub $field:ident: Option<$ty:ty>, )*
        }
    ) => {
        $(#[$struct_attr])*
        pub struct Settings {
            $( $(#[$attr])* pub $field: Option<$ty>, )*
        }

        impl Settings {
            /// `self` over `lower`: every setting `self` gives wins; the rest come from `lower`.
            pub fn over(self, lower: Settings) -> Settings {
                Settings { $( $field: self.$field.or(lower.$field), )* }
            }
        }
    };
}

settings! {
    /// Every setting of `serve`, declared once: the same struct is the command-line flags (each
    /// with its `DLQ_<NAME>` environment twin, which clap reads below the flag) and the TOML
    /// file (snake_case keys, unknown keys refused). Raw values: [`Config::from_settings`]
    /// parses and checks them, naming the setting at fault.
    #[derive(Debug, Clone, Default, Args, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Settings {
        /// Kafka bootstrap servers; unset = start the embedded in-memory broker.
        #[arg(long, env = "DLQ_KAFKA_BOOTSTRAP")]
        pub kafka_bootstrap: Option<String>,
        /// Address of the HTTP API [default: 127.0.0.1:8080].
        #[arg(long, env = "DLQ_HTTP_ADDR")]
        pub http_addr: Option<String>,
        /// Bearer token of the HTTP API (at least 16 characters); unset = generated and
        /// printed once.
        #[arg(long, env = "DLQ_API_TOKEN", hide_env_values = true, value_parser = secret)]
        pub api_token: Option<SecretString>,
        /// Named tokens with scopes: `name:scope:token` entries separated by commas or
        /// newlines; scope `read` (list, get), `operate` (also actions) or `admin`. Entries may
        /// share a name (rotation). The name is recorded as who asked; the token never is.
        #[arg(long, env = "DLQ_API_TOKENS", hide_env_values = true, value_parser = secret)]
        pub api_tokens: Option<SecretString>,
        /// A file of `--api-tokens` entries, one per line (a mounted secret); added to them.
        #[arg(long, env = "DLQ_API_TOKENS_FILE")]
        pub api_tokens_file: Option<PathBuf>,
        /// How long an entry stays in the DLQ, e.g. `7d`, `12h` [default: 7d].
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
        /// Park an entry whose run was already redriven this many times: bulk restart and
        /// resume skip it, only a restart by id with `force` acts on it; 0 turns the guard
        /// off [default: 3, at most 100].
        #[arg(long, env = "DLQ_MAX_REDRIVES")]
        pub max_redrives: Option<u32>,
        #[arg(long, env = "DLQ_OUTPUT_ENCODING", value_enum)]
        pub output_encoding: Option<OutputEncoding>,
        #[arg(long, env = "DLQ_LOG_FORMAT", value_enum)]
        pub log_format: Option<LogFormat>,
        /// Largest input record accepted, in bytes [default: 1048576].
        #[arg(long, env = "DLQ_MAX_RECORD_BYTES")]
        pub max_record_bytes: Option<usize>,
        /// A transaction commits once it holds this many records [default: 50000, at most
        /// 1000000]. It commits at whichever of records, `--txn-max-bytes` or
        /// `--txn-max-interval` is reached first, or as soon as the pipeline has nothing more
        /// to read.
        #[arg(long, env = "DLQ_TXN_MAX_RECORDS")]
        pub txn_max_records: Option<usize>,
        /// A transaction commits once it holds this many bytes of output [default: 16777216
        /// = 16 MiB, between 1 MiB and 256 MiB] (or at the records or interval bound, or when
        /// there is nothing more to read).
        #[arg(long, env = "DLQ_TXN_MAX_BYTES")]
        pub txn_max_bytes: Option<usize>,
        /// A transaction commits once it is this old, e.g. `100ms` [default: 100ms] (or at the
        /// records or bytes bound, or when there is nothing more to read).
        #[arg(long, env = "DLQ_TXN_MAX_INTERVAL")]
        pub txn_max_interval: Option<String>,
        /// How often expired entries are swept [default: 30s].
        #[arg(long, env = "DLQ_SWEEP_INTERVAL")]
        pub sweep_interval: Option<String>,
        /// How often the store topic's settings are checked [default: 30s].
        #[arg(long, env = "DLQ_GUARD_INTERVAL")]
        pub guard_interval: Option<String>,
        /// Give up starting when Kafka can't be reached for this long [default: 30s].
        #[arg(long, env = "DLQ_KAFKA_CONNECT_TIMEOUT")]
        pub kafka_connect_timeout: Option<String>,
        /// Bound on graceful shutdown after SIGTERM/SIGINT [default: 10s].
        #[arg(long, env = "DLQ_SHUTDOWN_GRACE")]
        pub shutdown_grace: Option<String>,
        /// API reads (`GET`) in flight at once; beyond it a read is answered 503 with
        /// `Retry-After: 1` at once [default: 256, between 1 and 100000].
        #[arg(long, env = "DLQ_HTTP_MAX_INFLIGHT_READS")]
        pub http_max_inflight_reads: Option<usize>,
        /// API actions (`POST`/`DELETE`, each waiting for its command's result) in flight at
        /// once; beyond it an action is answered 503 with `Retry-After: 1` at once [default:
        /// 128, between 1 and 100000].
        #[arg(long, env = "DLQ_HTTP_MAX_INFLIGHT_ACTIONS")]
        pub http_max_inflight_actions: Option<usize>,
        /// The file's `[kafka]` table of librdkafka properties (no flag: `DLQ_KAFKA_<PROPERTY>`
        /// sets one from the environment).
        #[arg(skip)]
        #[serde(default, deserialize_with = "kafka_table")]
        pub kafka: Option<BTreeMap<String, KafkaProperty>>,
    }
}

/// clap's parser for a secret flag: the value goes straight into a [`SecretString`].
fn secret(text: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(text.into())
}

/// The `[kafka]` table, each value secret or plain by the property's name.
fn kafka_table<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, KafkaProperty>>, D::Error> {
    let raw = BTreeMap::<String, String>::deserialize(d)?;
    Ok(Some(
        raw.into_iter()
            .map(|(k, v)| {
                let value = KafkaProperty::new(&k, v);
                (k, value)
            })
            .collect(),
    ))
}

/// The environment names of our own settings (`DLQ_KAFKA_BOOTSTRAP`, …), read from the flags'
/// declarations: none of them is a librdkafka property.
fn own_env_names() -> Vec<String> {
    ServeArgs::augment_args(clap::Command::new("serve"))
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect()
}

/// `DLQ_KAFKA_SECURITY_PROTOCOL=SASL_SSL` → `security.protocol=SASL_SSL`; our own settings
/// (`DLQ_KAFKA_BOOTSTRAP`, `DLQ_KAFKA_CONNECT_TIMEOUT`) are not passed through.
pub fn kafka_properties_from_env(
    vars: impl IntoIterator<Item = (String, String)>,
) -> BTreeMap<String, KafkaProperty> {
    let own = own_env_names();
    vars.into_iter()
        .filter(|(k, _)| k.starts_with("DLQ_KAFKA_") && !own.contains(k))
        .map(|(k, v)| {
            let property = k["DLQ_KAFKA_".len()..]
                .to_ascii_lowercase()
                .replace('_', ".");
            let value = KafkaProperty::new(&property, v);
            (property, value)
        })
        .collect()
}

impl Settings {
    /// The TOML file's settings.
    pub fn from_file(path: &std::path::Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::ParseFile {
            path: path.to_path_buf(),
            source,
        })
    }
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
    /// Builds the configuration from the layers, lowest first: defaults, the file the flags
    /// name, the `DLQ_*` environment (its `DLQ_KAFKA_<PROPERTY>` passthrough over the file's
    /// `[kafka]` table), the flags; then validates it.
    pub fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => Settings::from_file(path)?,
            None => Settings::default(),
        };
        // clap has already put each `DLQ_*` variable under its flag.
        let mut cfg = Config::from_settings(args.settings.clone().over(file))?;
        cfg.kafka_properties
            .extend(kafka_properties_from_env(std::env::vars()));
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses the raw settings, filling what none gives from [`Config::default`]. Errors name
    /// the setting; [`Config::validate`] checks ranges and relations afterwards.
    pub fn from_settings(s: Settings) -> Result<Config, ConfigError> {
        let d = Config::default();
        let http_addr = match s.http_addr {
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
        let td = d.topics;
        let mut api_tokens = match &s.api_tokens {
            Some(text) => {
                crate::tokens::parse(text.expose_secret()).map_err(|e| invalid("api_tokens", e))?
            }
            None => Vec::new(),
        };
        if let Some(path) = &s.api_tokens_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                invalid(
                    "api_tokens_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            api_tokens
                .extend(crate::tokens::parse(&text).map_err(|e| invalid("api_tokens_file", e))?);
        }
        Ok(Config {
            kafka_bootstrap: s.kafka_bootstrap.filter(|b| !b.trim().is_empty()),
            kafka_properties: s.kafka.unwrap_or_default(),
            http_addr,
            api_token: s.api_token,
            api_tokens,
            retention: dur("retention", s.retention, d.retention)?,
            topics: Topics {
                failures: s.topic_failures.unwrap_or(td.failures),
                store: s.topic_store.unwrap_or(td.store),
                commands: s.topic_commands.unwrap_or(td.commands),
                executions: s.topic_executions.unwrap_or(td.executions),
                results: s.topic_results.unwrap_or(td.results),
                rejected: s.topic_rejected.unwrap_or(td.rejected),
            },
            group_id: s.group_id.unwrap_or(d.group_id),
            instance_id: s.instance_id.unwrap_or(d.instance_id),
            partitions: s.partitions.unwrap_or(d.partitions),
            replication_factor: s.replication_factor.unwrap_or(d.replication_factor),
            max_per_second: s.max_per_second.unwrap_or(d.max_per_second),
            max_redrives: s.max_redrives.unwrap_or(d.max_redrives),
            output_encoding: s.output_encoding.unwrap_or(d.output_encoding),
            log_format: s.log_format.unwrap_or(d.log_format),
            max_record_bytes: s.max_record_bytes.unwrap_or(d.max_record_bytes),
            txn_max_records: s.txn_max_records.unwrap_or(d.txn_max_records),
            txn_max_bytes: s.txn_max_bytes.unwrap_or(d.txn_max_bytes),
            txn_max_interval: dur("txn_max_interval", s.txn_max_interval, d.txn_max_interval)?,
            sweep_interval: dur("sweep_interval", s.sweep_interval, d.sweep_interval)?,
            guard_interval: dur("guard_interval", s.guard_interval, d.guard_interval)?,
            kafka_connect_timeout: dur(
                "kafka_connect_timeout",
                s.kafka_connect_timeout,
                d.kafka_connect_timeout,
            )?,
            shutdown_grace: dur("shutdown_grace", s.shutdown_grace, d.shutdown_grace)?,
            http_max_inflight_reads: s
                .http_max_inflight_reads
                .unwrap_or(d.http_max_inflight_reads),
            http_max_inflight_actions: s
                .http_max_inflight_actions
                .unwrap_or(d.http_max_inflight_actions),
        })
    }

    /// Checks values and the relations between them; the error names the setting at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(token) = &self.api_token {
            if token.expose_secret().len() < 16 {
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
        if self.max_redrives > crate::store::filter::MAX_REDRIVES_LIMIT {
            return Err(invalid("max_redrives", "must be between 0 (off) and 100"));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.max_record_bytes) {
            return Err(invalid(
                "max_record_bytes",
                "must be between 1024 and 67108864 bytes",
            ));
        }
        if !(1..=1_000_000).contains(&self.txn_max_records) {
            return Err(invalid("txn_max_records", "must be between 1 and 1000000"));
        }
        if !(MIB..=256 * MIB).contains(&self.txn_max_bytes) {
            return Err(invalid(
                "txn_max_bytes",
                "must be between 1048576 (1 MiB) and 268435456 (256 MiB) bytes",
            ));
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
        for (setting, value) in [
            ("http_max_inflight_reads", self.http_max_inflight_reads),
            ("http_max_inflight_actions", self.http_max_inflight_actions),
        ] {
            if !(1..=MAX_INFLIGHT).contains(&value) {
                return Err(invalid(setting, "must be between 1 and 100000"));
            }
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
    use clap::FromArgMatches;

    use super::*;

    /// `serve` parsed from `argv` as clap parses it, except that its environment twins are
    /// read from `env` instead of the process environment (which parallel tests must not
    /// change): each `DLQ_*` value sits under its flag, as clap's own `env` does.
    fn parse(argv: &[&str], env: &[(&str, &str)]) -> ServeArgs {
        let cmd = ServeArgs::augment_args(clap::Command::new("serve")).mut_args(|a| {
            let given = a
                .get_env()
                .and_then(|name| env.iter().find(|(k, _)| name == std::ffi::OsStr::new(k)))
                .map(|(_, v)| -> &'static str { Box::leak(v.to_string().into_boxed_str()) });
            let a = a.env(None::<&str>);
            match given {
                Some(v) => a.default_value(v),
                None => a,
            }
        });
        let matches = cmd
            .try_get_matches_from(std::iter::once("serve").chain(argv.iter().copied()))
            .expect("valid flags");
        ServeArgs::from_arg_matches(&matches).expect("valid flags")
    }

    fn file(text: &str) -> Settings {
        toml::from_str(text).expect("valid toml")
    }

    fn layered(argv: &[&str], env: &[(&str, &str)], toml: &str) -> Config {
        let cfg = Config::from_settings(parse(argv, env).settings.over(file(toml))).expect("valid");
        cfg.validate().expect("valid");
        cfg
    }

    #[test]
    fn env_passthrough_maps_names_to_librdkafka_properties() {
        let props = kafka_properties_from_env([
            ("DLQ_KAFKA_SECURITY_PROTOCOL".into(), "SASL_SSL".into()),
            ("DLQ_KAFKA_SASL_MECHANISMS".into(), "SCRAM-SHA-512".into()),
            ("DLQ_KAFKA_SASL_PASSWORD".into(), "hunter2-secret".into()),
            ("DLQ_KAFKA_BOOTSTRAP".into(), "ignored:9092".into()),
            ("DLQ_KAFKA_CONNECT_TIMEOUT".into(), "5s".into()),
            ("DLQ_HTTP_ADDR".into(), "ignored".into()),
        ]);
        assert_eq!(props.len(), 3, "{props:?}");
        assert_eq!(props["security.protocol"].shown(), "SASL_SSL");
        assert_eq!(props["sasl.mechanisms"].shown(), "SCRAM-SHA-512");
        assert!(matches!(
            props["sasl.password"],
            KafkaProperty::Secret(ref s) if s.expose_secret() == "hunter2-secret"
        ));
        assert!(!format!("{props:?}").contains("hunter2"));
    }

    #[test]
    fn every_setting_has_a_flag_and_its_env_twin() {
        let cmd = ServeArgs::augment_args(clap::Command::new("serve"));
        let mut count = 0;
        for arg in cmd.get_arguments() {
            let long = arg.get_long().expect("every setting is a long flag");
            let env = format!("DLQ_{}", long.to_ascii_uppercase().replace('-', "_"));
            assert_eq!(arg.get_env(), Some(std::ffi::OsStr::new(&env)), "--{long}");
            count += 1;
        }
        // `--config` and the 30 settings (the `[kafka]` table has no flag).
        assert_eq!(count, 31);
        let help = cmd.clone().render_long_help().to_string();
        for flag in [
            "--txn-max-bytes",
            "--txn-max-records",
            "--shutdown-grace",
            "--config",
        ] {
            assert!(help.contains(flag), "{flag} missing from --help");
        }
    }

    #[test]
    fn max_redrives_comes_from_any_layer_and_is_bounded() {
        assert_eq!(layered(&[], &[], "").max_redrives, 3);
        assert_eq!(layered(&[], &[], "max_redrives = 5").max_redrives, 5);
        assert_eq!(
            layered(&[], &[("DLQ_MAX_REDRIVES", "0")], "max_redrives = 5").max_redrives,
            0
        );
        assert_eq!(
            layered(&["--max-redrives", "7"], &[("DLQ_MAX_REDRIVES", "0")], "").max_redrives,
            7
        );
        let too_many =
            Config::from_settings(parse(&["--max-redrives", "101"], &[]).settings).expect("parses");
        assert!(too_many
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_redrives"));
    }

    #[test]
    fn in_flight_bounds_come_from_any_layer_and_are_bounded() {
        let cfg = layered(&[], &[], "");
        assert_eq!(
            (cfg.http_max_inflight_reads, cfg.http_max_inflight_actions),
            (256, 128)
        );
        let cfg = layered(
            &["--http-max-inflight-actions", "9"],
            &[("DLQ_HTTP_MAX_INFLIGHT_READS", "7")],
            "http_max_inflight_reads = 5\nhttp_max_inflight_actions = 6",
        );
        assert_eq!(
            (cfg.http_max_inflight_reads, cfg.http_max_inflight_actions),
            (7, 9)
        );
        for (flag, value) in [
            ("--http-max-inflight-reads", "0"),
            ("--http-max-inflight-actions", "0"),
            ("--http-max-inflight-reads", "100001"),
        ] {
            let cfg = Config::from_settings(parse(&[flag, value], &[]).settings).expect("parses");
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains("`http_max_inflight_"), "{flag} {value}: {err}");
        }
    }

    #[test]
    fn flags_win_over_file_and_defaults_fill_the_rest() {
        let cfg = layered(
            &["--retention", "2h"],
            &[],
            "retention = \"1d\"\ngroup_id = \"from-file\"\n[kafka]\n\"linger.ms\" = \"5\"",
        );
        assert_eq!(cfg.retention, Duration::from_secs(7200));
        assert_eq!(cfg.group_id, "from-file");
        assert_eq!(cfg.kafka_properties["linger.ms"].shown(), "5");
        assert_eq!(cfg.topics, Topics::default());
        assert_eq!(cfg.txn_max_records, 50_000);
        assert_eq!(cfg.txn_max_bytes, 16 * 1024 * 1024);
        assert_eq!(cfg.txn_max_interval, Duration::from_millis(100));
    }

    #[test]
    fn env_beats_file_and_flag_beats_env() {
        let toml = "retention = \"1d\"\ngroup_id = \"from-file\"\npartitions = 3\n\
                    txn_max_bytes = 2097152";
        let env = [
            ("DLQ_RETENTION", "2d"),
            ("DLQ_GROUP_ID", "from-env"),
            ("DLQ_TXN_MAX_BYTES", "4194304"),
        ];
        let cfg = layered(&[], &env, toml);
        assert_eq!(
            cfg.retention,
            Duration::from_secs(2 * 24 * 3600),
            "env over file"
        );
        assert_eq!(cfg.group_id, "from-env", "env over file");
        assert_eq!(cfg.txn_max_bytes, 4 * 1024 * 1024, "env over file");
        assert_eq!(cfg.partitions, 3, "the file where env is silent");

        let cfg = layered(
            &["--group-id", "from-flag", "--txn-max-bytes=8388608"],
            &env,
            toml,
        );
        assert_eq!(cfg.group_id, "from-flag", "flag over env");
        assert_eq!(cfg.txn_max_bytes, 8 * 1024 * 1024, "flag over env");
        assert_eq!(cfg.retention, Duration::from_secs(2 * 24 * 3600));
    }

    #[test]
    fn a_bad_value_names_the_setting() {
        let args = parse(&["--retention", "seven days"], &[]);
        let err = Config::from_settings(args.settings).unwrap_err();
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
    fn transaction_bounds_are_validated() {
        let check = |cfg: Config| cfg.validate().map_err(|e| e.to_string());
        assert!(check(Config::default()).is_ok());
        for (records, ok) in [(0, false), (1, true), (1_000_000, true), (1_000_001, false)] {
            let r = check(Config {
                txn_max_records: records,
                ..Config::default()
            });
            assert_eq!(r.is_ok(), ok, "txn_max_records = {records}: {r:?}");
            if let Err(e) = r {
                assert!(e.contains("`txn_max_records`"), "{e}");
            }
        }
        for (bytes, ok) in [
            (MIB - 1, false),
            (MIB, true),
            (256 * MIB, true),
            (256 * MIB + 1, false),
        ] {
            let r = check(Config {
                txn_max_bytes: bytes,
                ..Config::default()
            });
            assert_eq!(r.is_ok(), ok, "txn_max_bytes = {bytes}: {r:?}");
            if let Err(e) = r {
                assert!(e.contains("`txn_max_bytes`"), "{e}");
            }
        }
    }

    #[test]
    fn secrets_never_print() {
        const TOKEN: &str = "token-from-a-flag-0123456789";
        const PASSWORD: &str = "pw-from-the-file-xyz";
        let cfg = layered(
            &["--api-token", TOKEN],
            &[],
            &format!("[kafka]\n\"sasl.password\" = \"{PASSWORD}\"\n\"sasl.username\" = \"me\""),
        );
        assert_eq!(
            cfg.api_token.as_ref().map(|t| t.expose_secret()),
            Some(TOKEN)
        );
        let debug = format!("{cfg:?}");
        assert!(!debug.contains(TOKEN), "{debug}");
        assert!(!debug.contains(PASSWORD), "{debug}");
        assert!(debug.contains("\"me\""), "{debug}");
        let args = format!("{:?}", parse(&["--api-token", TOKEN], &[]));
        assert!(!args.contains(TOKEN), "{args}");
        let named = format!("ops:operate:{TOKEN}");
        let cfg = layered(&["--api-tokens", &named], &[], "");
        assert_eq!(cfg.api_tokens.len(), 1);
        assert_eq!(cfg.api_tokens[0].name, "ops");
        assert!(!format!("{cfg:?}").contains(TOKEN));
        assert!(!format!("{:?}", parse(&["--api-tokens", &named], &[])).contains(TOKEN));
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        assert!(toml::from_str::<Settings>("retension = \"1d\"").is_err());
        assert!(toml::from_str::<Settings>("config = \"x.toml\"").is_err());
    }
}
