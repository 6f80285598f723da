//! Creates the topics of docs/design.md §2 when missing, with the configuration each role needs.

use std::time::Duration;

use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    error::KafkaError,
    types::RDKafkaErrorCode,
};

use super::{embedded::EmbeddedHandle, KafkaConn};
use crate::config::Config;

/// One topic to create: name, partitions and topic-level configuration.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub role: &'static str,
    pub name: String,
    pub partitions: i32,
    pub config: Vec<(&'static str, String)>,
}

/// The store topic's settings. Compacted with no time or size retention: the topic *is* the
/// store, so nothing may age out of it but through our own tombstones. Tombstones are kept as
/// long as entries live (`delete.retention.ms` = retention) so a replayed failure of an entry
/// already recovered is recognised and not stored again.
pub fn store_topic_config(cfg: &Config) -> Vec<(&'static str, String)> {
    vec![
        ("cleanup.policy", "compact".into()),
        ("retention.ms", "-1".into()),
        ("retention.bytes", "-1".into()),
        ("delete.retention.ms", cfg.retention.as_millis().to_string()),
        (
            "max.message.bytes",
            topic_max_message_bytes(max_message_bytes(cfg)).to_string(),
        ),
    ]
}

/// Room for the largest accepted input plus the envelope we add around it: the most any
/// single record of ours holds.
pub fn max_message_bytes(cfg: &Config) -> usize {
    cfg.max_record_bytes + 64 * 1024
}

/// A topic's `max.message.bytes` bounds a whole producer batch, not one record: room for a
/// full batch (`batch.size` = one record's maximum) plus the record that overflows it.
pub fn topic_max_message_bytes(max_record: usize) -> usize {
    2 * max_record + 64 * 1024
}

/// Every topic of docs/design.md §2. The store and the command topic share a partition count so
/// that a command for a `dlqId` lands on the partition whose store entries the same instance owns.
pub fn topic_specs(cfg: &Config) -> Vec<TopicSpec> {
    let t = &cfg.topics;
    let max = topic_max_message_bytes(max_message_bytes(cfg)).to_string();
    let plain = |role, name: &String| TopicSpec {
        role,
        name: name.clone(),
        partitions: cfg.partitions,
        config: vec![("max.message.bytes", max.clone())],
    };
    vec![
        plain("failures", &t.failures),
        TopicSpec {
            role: "store",
            name: t.store.clone(),
            partitions: cfg.partitions,
            config: store_topic_config(cfg),
        },
        plain("commands", &t.commands),
        plain("executions", &t.executions),
        plain("results", &t.results),
        plain("rejected", &t.rejected),
    ]
}

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("cannot create topic {topic}: {detail}")]
    Create { topic: String, detail: String },
    #[error("admin client error: {0}")]
    Admin(#[from] KafkaError),
    #[error(transparent)]
    Embedded(#[from] super::embedded::EmbeddedError),
}

/// Where topics are created: the mock has no CreateTopics, so it goes through its own API.
pub enum TopicCreator<'a> {
    Embedded(&'a EmbeddedHandle),
    Admin(&'a KafkaConn),
}

/// Creates every missing topic; returns the names of those it created.
pub async fn ensure_topics(
    creator: TopicCreator<'_>,
    specs: &[TopicSpec],
    replication_factor: i32,
) -> Result<Vec<String>, TopicError> {
    match creator {
        TopicCreator::Embedded(broker) => {
            let mut created = Vec::new();
            for spec in specs {
                broker.create_topic(&spec.name, spec.partitions)?;
                created.push(spec.name.clone());
            }
            Ok(created)
        }
        TopicCreator::Admin(conn) => {
            let admin: AdminClient<DefaultClientContext> = conn.client_config().create()?;
            // Only ask for what is missing: no CreateTopics call (or ACL) when all exist.
            let existing: Vec<String> = admin
                .inner()
                .fetch_metadata(None, Duration::from_secs(10))?
                .topics()
                .iter()
                .map(|t| t.name().to_string())
                .collect();
            let missing: Vec<&TopicSpec> = specs
                .iter()
                .filter(|s| !existing.contains(&s.name))
                .collect();
            if missing.is_empty() {
                return Ok(Vec::new());
            }
            let new_topics: Vec<NewTopic> = missing
                .iter()
                .map(|s| {
                    s.config.iter().fold(
                        NewTopic::new(
                            &s.name,
                            s.partitions,
                            TopicReplication::Fixed(replication_factor),
                        ),
                        |t, (k, v)| t.set(k, v),
                    )
                })
                .collect();
            let opts = AdminOptions::new()
                .operation_timeout(Some(Duration::from_secs(30)))
                .request_timeout(Some(Duration::from_secs(30)));
            let results = admin.create_topics(&new_topics, &opts).await?;
            let mut created = Vec::new();
            for r in results {
                match r {
                    Ok(name) => created.push(name),
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((topic, code)) => {
                        return Err(TopicError::Create {
                            topic,
                            detail: code.to_string(),
                        })
                    }
                }
            }
            Ok(created)
        }
    }
}
