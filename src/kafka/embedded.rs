//! The embedded development broker: librdkafka's mock cluster, in-process, on a real TCP port.
//!
//! `MockCluster` is not `Send`, so a dedicated thread owns it for its whole life and takes
//! requests (create a topic, stop) over a channel. Its limits are real: everything is in memory,
//! each partition keeps at most 5 MiB / 100,000 batches and silently drops the oldest, there is
//! no compaction, no CreateTopics, and transactions are accepted but not applied.

use std::{
    sync::mpsc,
    thread::{self, JoinHandle},
};

use rdkafka::{error::KafkaError, mocking::MockCluster};

/// Bytes one mock partition keeps before dropping its oldest records (`rdkafka_mock.c`).
pub const MOCK_PARTITION_BYTES: u64 = 5 * 1024 * 1024;

enum Request {
    CreateTopic {
        name: String,
        partitions: i32,
        reply: mpsc::Sender<Result<(), KafkaError>>,
    },
    Stop,
}

/// A running embedded broker; dropping it stops the broker.
pub struct EmbeddedBroker {
    bootstrap: String,
    requests: mpsc::Sender<Request>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("cannot start the embedded Kafka broker: {0}")]
    Start(#[source] KafkaError),
    #[error("the embedded Kafka broker thread is gone")]
    Gone,
    #[error("cannot create topic {topic} on the embedded broker: {source}")]
    CreateTopic {
        topic: String,
        #[source]
        source: KafkaError,
    },
}

impl EmbeddedBroker {
    pub fn start() -> Result<EmbeddedBroker, EmbeddedError> {
        let (requests, inbox) = mpsc::channel::<Request>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, KafkaError>>();
        let thread = thread::Builder::new()
            .name("embedded-kafka".into())
            .spawn(move || {
                let cluster = match MockCluster::new(1) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                for request in inbox {
                    match request {
                        Request::CreateTopic {
                            name,
                            partitions,
                            reply,
                        } => {
                            let _ = reply.send(cluster.create_topic(&name, partitions, 1));
                        }
                        Request::Stop => break,
                    }
                }
                drop(cluster);
            })
            .map_err(|e| EmbeddedError::Start(KafkaError::ClientCreation(e.to_string())))?;
        let bootstrap = ready_rx
            .recv()
            .map_err(|_| EmbeddedError::Gone)?
            .map_err(EmbeddedError::Start)?;
        Ok(EmbeddedBroker {
            bootstrap,
            requests,
            thread: Some(thread),
        })
    }

    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// A handle that can create topics from any thread.
    pub fn handle(&self) -> EmbeddedHandle {
        EmbeddedHandle {
            requests: self.requests.clone(),
        }
    }

    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), EmbeddedError> {
        self.handle().create_topic(name, partitions)
    }
}

/// Sends requests to the thread that owns the mock cluster.
#[derive(Clone)]
pub struct EmbeddedHandle {
    requests: mpsc::Sender<Request>,
}

impl EmbeddedHandle {
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), EmbeddedError> {
        let (reply, answer) = mpsc::channel();
        self.requests
            .send(Request::CreateTopic {
                name: name.to_string(),
                partitions,
                reply,
            })
            .map_err(|_| EmbeddedError::Gone)?;
        answer
            .recv()
            .map_err(|_| EmbeddedError::Gone)?
            .map_err(|source| EmbeddedError::CreateTopic {
                topic: name.to_string(),
                source,
            })
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        let _ = self.requests.send(Request::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
