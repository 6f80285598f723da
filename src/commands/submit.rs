//! Submitting a command and waiting for its answer: what an HTTP action does. The command is
//! written to the command topic (keyed like any producer of ours would key it) and its final
//! `CommandResult` is read back from the results topic through the [`Ledger`].

use std::{sync::Arc, time::Duration};

use rdkafka::{
    error::KafkaError,
    message::{Header, OwnedHeaders},
};

use super::ledger::Ledger;
use crate::{
    kafka::{
        awaited::{AwaitedProducer, Outgoing},
        KafkaConn,
    },
    wire::{
        codec::{self, Encoding},
        pb::{
            recovery_command::{Ids, Selector},
            CommandResult, RecoveryCommand,
        },
    },
};

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("cannot create the command producer: {0}")]
    Producer(#[source] KafkaError),
    #[error("cannot write command {command_id} to the command topic: {source}")]
    Produce {
        command_id: String,
        #[source]
        source: KafkaError,
    },
    #[error(
        "command {command_id} was written but the command consumer did not answer within \
         {waited:?}; it will still be processed once (check /readyz and the results topic)"
    )]
    NoAnswer {
        command_id: String,
        waited: Duration,
    },
}

/// Writes commands and waits for their final result.
pub struct CommandSubmitter {
    producer: AwaitedProducer,
    topic: String,
    ledger: Arc<Ledger>,
    encoding: Encoding,
}

impl CommandSubmitter {
    pub fn new(
        conn: &KafkaConn,
        topic: String,
        ledger: Arc<Ledger>,
        encoding: Encoding,
    ) -> Result<CommandSubmitter, SubmitError> {
        let mut c = conn.idempotent_producer_config();
        c.set("linger.ms", "0");
        let producer = AwaitedProducer::new(&c, "command-submit").map_err(SubmitError::Producer)?;
        Ok(CommandSubmitter {
            producer,
            topic,
            ledger,
            encoding,
        })
    }

    /// The key a command is written under: a one-id command goes to the partition that owns
    /// the entry (acted on at once); anything else by its id (fanned out from there).
    pub fn key_of(cmd: &RecoveryCommand) -> &str {
        match &cmd.selector {
            Some(Selector::DlqIds(Ids { ids })) if ids.len() == 1 => &ids[0],
            _ => &cmd.command_id,
        }
    }

    /// Writes one record (acks=all, idempotent) with the content-type header, and returns once
    /// Kafka has it; `command_id` names it in the error.
    async fn produce(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        command_id: &str,
        wait: Duration,
    ) -> Result<(), SubmitError> {
        let headers = OwnedHeaders::new().insert(Header {
            key: codec::CONTENT_TYPE,
            value: Some(self.encoding.content_type()),
        });
        let record = Outgoing {
            topic,
            key: key.as_bytes(),
            value: Some(payload),
            headers: Some(headers),
        };
        self.producer
            .send(record, wait)
            .await
            .map_err(|source| SubmitError::Produce {
                command_id: command_id.to_string(),
                source,
            })
    }

    /// Writes `cmd` under its command id and returns once Kafka has it: a bulk job, whose
    /// progress is read from the ledger afterwards.
    pub async fn send(&self, cmd: &RecoveryCommand, wait: Duration) -> Result<(), SubmitError> {
        let payload = codec::encode(cmd, self.encoding);
        let id = cmd.command_id.as_str();
        self.produce(&self.topic, id, &payload, id, wait).await
    }

    /// Asks for the cancel of bulk command `command_id`: a marker on the results topic under
    /// its id (`canceled`, not done), which the command's dispatcher reads through its ledger
    /// — a command on the command topic would wait behind the job itself, whose partition is
    /// paused while it fans out.
    pub async fn cancel(
        &self,
        results_topic: &str,
        command_id: &str,
        requested_by: &str,
        wait: Duration,
    ) -> Result<(), SubmitError> {
        let marker = CommandResult {
            command_id: command_id.to_string(),
            canceled: true,
            requested_by: requested_by.to_string(),
            completed_at: crate::now_ms(),
            ..Default::default()
        };
        let payload = codec::encode(&marker, self.encoding);
        self.produce(results_topic, command_id, &payload, command_id, wait)
            .await
    }

    /// Writes `cmd` (acks=all, idempotent) and waits up to `wait` for its final result.
    /// `keyed_by_command` writes it under its command id even when it names one entry (a
    /// command that may be sent twice: both copies land on one partition, in order).
    pub async fn submit(
        &self,
        cmd: &RecoveryCommand,
        keyed_by_command: bool,
        wait: Duration,
    ) -> Result<CommandResult, SubmitError> {
        let started = tokio::time::Instant::now();
        let payload = codec::encode(cmd, self.encoding);
        let key = if keyed_by_command {
            cmd.command_id.as_str()
        } else {
            Self::key_of(cmd)
        };
        self.produce(&self.topic, key, &payload, &cmd.command_id, wait)
            .await?;
        let deadline = started + wait;
        loop {
            // Subscribe before looking, so an answer applied in between is not missed.
            let changed = self.ledger.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(result) = self.ledger.finished(&cmd.command_id) {
                return Ok(result);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(SubmitError::NoAnswer {
                    command_id: cmd.command_id.clone(),
                    waited: now - started,
                });
            }
            let _ =
                tokio::time::timeout_at(deadline.min(now + Duration::from_millis(200)), changed)
                    .await;
        }
    }
}
