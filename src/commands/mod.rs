//! The command consumer: restart, resume, re-run the failure callback of, or delete DLQ
//! entries — by id, ids, filter or all — exactly once.
//!
//! Ownership: the command topic is co-partitioned with the store topic by `dlqId`, so the
//! instance assigned command partition *p* is the only one deciding actions on the entries of
//! store partition *p*. A command for one id that lands on its owner's partition is acted on
//! directly. Any other command (ids, filter, all) is resolved against a snapshot of the view
//! and fanned out, paced by `max_per_second`: entries this instance owns are acted on at once,
//! the others are sent as one sub-command per entry keyed by `dlqId` (header
//! [`headers::PARENT`]), which their owner acts on. Each action — the republished execution, the
//! store tombstone or update, the per-entry result and the command's offset — commits in one
//! Kafka transaction.
//!
//! By concern, top to bottom: this file reads a command record and dispatches it (the
//! [`pipeline::Handler`]); [`decide`] decides what an action does to one entry (pure); `act`
//! carries that out; `bulk` resolves, paces and finishes bulk commands; `results` writes the
//! results topic, which [`ledger::Ledger`] reads back as the memory of processed commands;
//! [`validate`] checks a command; [`submit`] is the HTTP side that writes one and awaits it.

mod act;
mod bulk;
pub mod decide;
pub mod ledger;
mod results;
pub mod submit;
pub mod validate;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders},
    TopicPartitionList,
};
use tokio_util::sync::CancellationToken;

use self::{
    act::count_item,
    bulk::Job,
    decide::{Decision, Written},
    ledger::Ledger,
    results::{count_command, outcome, ITEMS_PER_RESULT},
    validate::{validate, Selection},
};
use crate::{
    config::Config,
    events::{
        CommandAction, CommandAnswered, CommandEnded, CommandOutcome, CommandSelector, Event,
        ItemAction, ItemStatus, PerEntry, RecordRejected, RejectReason, RepublishKind,
    },
    health::Worker,
    kafka::{
        partitioner::partition_for,
        pipeline::{self, TxnConsumer},
        progress::ReadProgress,
        rejected,
        txn::{lock, OutRecord, TxnBatch, TxnError, TxnLimits, TXN_TIMEOUT},
        watchdog::Stall,
        KafkaConn,
    },
    republish::execution,
    store::{EntryFilter, StoreView},
    wire::{
        codec::{self, Encoding},
        ids::new_run_id,
        pb::{
            failure_callback_info::State as CbState,
            item_outcome::Status,
            recovery_command::{Action, Ids, Selector},
            CommandResult, DlqEntry, FailureCallbackReport, ItemOutcome, RecoveryCommand,
        },
        strict,
    },
};

pub mod headers {
    /// On a sub-command: the id of the bulk command it belongs to.
    pub const PARENT: &str = "dlq.parent-command";
    /// On a sub-command: its bulk command was canceled; answer the entry SKIPPED, act on
    /// nothing.
    pub const CANCELED: &str = "dlq.canceled";
    /// On a record forwarded by ingest: a `FailureCallbackReport` for the entry it is keyed by.
    pub const CALLBACK_REPORT: &str = "dlq.callback-report";
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Txn(#[from] TxnError),
    #[error("consumer error: {0}")]
    Consumer(#[from] KafkaError),
    #[error(
        "a rebalance could not commit the open transaction; restarting from committed offsets"
    )]
    RebalanceCommit,
    #[error(transparent)]
    Stalled(#[from] Stall),
    #[error(
        "the store topic has {store} partitions and the command topic {commands}: they must be \
         equal (co-partitioned by dlqId) for instances to own entries"
    )]
    NotCoPartitioned { store: i32, commands: i32 },
    #[error("the store view did not reach offset {want} of partition {partition} in time")]
    ViewBehind { partition: i32, want: i64 },
    #[error(
        "the command ledger did not reach offset {want} of results partition {partition} in time"
    )]
    LedgerBehind { partition: i32, want: i64 },
}

/// The command worker; runs on its own thread, restarting its pipeline after a Kafka error.
pub struct Commands {
    pub cfg: Arc<Config>,
    pub conn: KafkaConn,
    pub view: Arc<StoreView>,
    pub ledger: Arc<Ledger>,
    /// Committed writes not yet seen by the view (read-your-writes across pipelines).
    overlay: Arc<Mutex<HashMap<String, Written>>>,
}

fn command_action(a: Action) -> CommandAction {
    match a {
        Action::Restart => CommandAction::Restart,
        Action::Resume => CommandAction::Resume,
        Action::RetryFailureCallback => CommandAction::RetryFailureCallback,
        Action::CancelFailureCallback => CommandAction::CancelFailureCallback,
        Action::Delete => CommandAction::Delete,
        Action::Unspecified => CommandAction::Unspecified,
    }
}

fn action_label(a: Action) -> &'static str {
    command_action(a).as_str()
}

/// A header's value as text.
fn header(m: &BorrowedMessage<'_>, name: &str) -> Option<String> {
    m.headers().and_then(|h| {
        h.iter()
            .find(|hd| hd.key == name)
            .and_then(|hd| hd.value)
            .map(|v| String::from_utf8_lossy(v).to_string())
    })
}

impl Commands {
    pub fn new(
        cfg: Arc<Config>,
        conn: KafkaConn,
        view: Arc<StoreView>,
        ledger: Arc<Ledger>,
    ) -> Self {
        Commands {
            cfg,
            conn,
            view,
            ledger,
            overlay: Arc::default(),
        }
    }

    /// One run of the command pipeline (under [`crate::kafka::supervise`]); it consumes once
    /// the view and the ledger have caught up with their topics: a decision is only as good as
    /// the state it is made on.
    pub fn run_pipeline(
        &self,
        shutdown: &CancellationToken,
        worker: &Worker,
    ) -> Result<(), CommandError> {
        let cfg = &self.cfg;
        let spec = pipeline::Spec {
            conn: &self.conn,
            group: format!("{}.commands", cfg.group_id),
            topic: &cfg.topics.commands,
            transactional_id: format!("{}-commands-{}", cfg.group_id, cfg.instance_id),
            // Runs republished, entries changed or deleted, results, bulk commands' follow-ups,
            // rejected records.
            outputs: vec![
                cfg.topics.executions.clone(),
                cfg.topics.store.clone(),
                cfg.topics.results.clone(),
                cfg.topics.commands.clone(),
                cfg.topics.rejected.clone(),
            ],
            limits: TxnLimits::of(cfg),
        };
        // The producer first: fencing our previous incarnation aborts its open transaction now,
        // not at its timeout, so the store and results topics' read_committed end moves on and
        // the view and ledger can catch up.
        let txn = pipeline::producer(&spec)?;
        for progress in [&self.view.progress, &self.ledger.progress] {
            // In slices, so a shutdown is noticed within one.
            while !progress.wait_caught_up(Instant::now() + Duration::from_millis(500), || {
                worker.beat()
            }) {
                if shutdown.is_cancelled() {
                    return Ok(());
                }
            }
        }
        let consumer = pipeline::consumer(&spec, &txn)?;
        let partitions = self.co_partitioned(&consumer)?;
        let ends: BaseConsumer = self.conn.end_offsets_config().create()?;
        let mut p = Pipeline {
            w: self,
            consumer: &consumer,
            ends: &ends,
            worker,
            encoding: Encoding::from(cfg.output_encoding),
            partitions,
            last_tick: Instant::now(),
            staged: HashMap::new(),
            jobs: Vec::new(),
            fresh: HashSet::new(),
            finishing: HashSet::new(),
            processed_staged: HashSet::new(),
        };
        let result = pipeline::run(&spec, &txn, &consumer, &mut p, shutdown, worker);
        drop(p);
        pipeline::close(consumer);
        result
    }

    fn co_partitioned(&self, consumer: &TxnConsumer) -> Result<i32, CommandError> {
        let count = |topic: &str| -> Result<i32, KafkaError> {
            let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
            Ok(md
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .map_or(0, |t| t.partitions().len() as i32))
        };
        let store = count(&self.cfg.topics.store)?;
        let commands = count(&self.cfg.topics.commands)?;
        if store != commands || store == 0 {
            return Err(CommandError::NotCoPartitioned { store, commands });
        }
        Ok(store)
    }

    /// Drops overlay entries the view now shows.
    fn prune_overlay(&self) {
        let mut overlay = lock(&self.overlay);
        overlay.retain(|id, w| match w {
            Written::Deleted => self.view.state(id) == crate::store::EntryState::Present,
            Written::Updated(e) => self.view.get(id).as_ref() != Some(e.as_ref()),
        });
    }
}

struct Pipeline<'a> {
    w: &'a Commands,
    consumer: &'a TxnConsumer,
    /// Asks where partitions end, open transactions included ([`KafkaConn::end_offsets_config`]).
    ends: &'a BaseConsumer,
    worker: &'a Worker,
    encoding: Encoding,
    partitions: i32,
    /// When bulk commands were last checked for their final result.
    last_tick: Instant,
    /// Writes of the open transaction (dropped with it).
    staged: HashMap<String, Written>,
    jobs: Vec<Job>,
    /// Store partitions whose view is known to include everything written before we owned them.
    fresh: HashSet<i32>,
    /// Bulk commands whose final result is written in the open transaction (the ledger has it
    /// once that commits; cleared then).
    finishing: HashSet<String>,
    /// Commands finished or fanned out in the open transaction: a copy read before it commits
    /// is a duplicate too.
    processed_staged: HashSet<String>,
}

/// The command consumer as a [`pipeline::Handler`]: records are commands (or callback reports
/// forwarded by ingest); each turn also fans out bulk commands and finishes those whose every
/// entry has an outcome.
impl pipeline::Handler for Pipeline<'_> {
    type Error = CommandError;

    fn record(
        &mut self,
        _consumer: &pipeline::TxnConsumer,
        m: &BorrowedMessage<'_>,
        t: &mut TxnBatch,
    ) -> Result<(), CommandError> {
        self.handle(m, t)
    }

    fn turn(
        &mut self,
        _consumer: &pipeline::TxnConsumer,
        t: &mut TxnBatch,
    ) -> Result<(), CommandError> {
        self.advance_jobs(t)?;
        if self.last_tick.elapsed() >= Duration::from_millis(200) {
            self.last_tick = Instant::now();
            self.finish_bulk_commands(t)?;
            self.w.prune_overlay();
        }
        Ok(())
    }

    fn rebalanced(&mut self, _consumer: &pipeline::TxnConsumer, t: &TxnBatch) {
        self.after_rebalance(t.is_open());
    }

    fn committed(&mut self) {
        // What the open transaction wrote is now in the overlay and the ledger.
        self.staged.clear();
        self.processed_staged.clear();
        self.finishing.clear();
    }

    fn busy(&self) -> bool {
        !self.jobs.is_empty()
    }

    fn revoke_commit_failed() -> CommandError {
        CommandError::RebalanceCommit
    }
}

impl Pipeline<'_> {
    /// Forgets what a new assignment invalidates and resumes partitions no job holds.
    fn after_rebalance(&mut self, txn_open: bool) {
        self.fresh.clear();
        if !txn_open {
            // Committed before the revoke: its writes are in the overlay and the ledger. (An
            // assignment alone leaves the transaction open, and what it staged stays known.)
            self.staged.clear();
            self.processed_staged.clear();
            self.finishing.clear();
        }
        let assigned: HashSet<i32> = self
            .consumer
            .assignment()
            .map(|a| a.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default();
        // A revoked partition's bulk command is re-read by its new owner.
        self.jobs.retain(|j| assigned.contains(&j.partition));
        // A partition is paused only while its bulk command is being fanned out. An assignment
        // clears only librdkafka's own pause flag, not the application's
        // (`rd_kafka_assignment_add`/`_remove` reset `RD_KAFKA_TOPPAR_F_LIB_PAUSE`), so a
        // partition whose job was dropped (revoked or lost, then given back) stayed paused and
        // its bulk command never resumed (a stall seen on a 3-node cluster): resume every
        // assigned partition without a running job.
        let mut resume = TopicPartitionList::new();
        for p in assigned {
            if !self.jobs.iter().any(|j| j.partition == p) {
                resume.add_partition(&self.w.cfg.topics.commands, p);
            }
        }
        if resume.count() > 0 {
            if let Err(e) = self.consumer.resume(&resume) {
                tracing::warn!(error = %e, "resuming assigned command partitions failed");
            }
        }
    }

    fn limits(&self) -> TxnLimits {
        TxnLimits::of(&self.w.cfg)
    }

    /// Copies a record that can't be acted on to the rejected topic, with the reason.
    fn reject(
        &self,
        m: &BorrowedMessage<'_>,
        reason: RejectReason,
        detail: &str,
        t: &mut TxnBatch,
    ) -> Result<(), CommandError> {
        let cfg = &self.w.cfg;
        let rec = rejected::record(
            m,
            reason.as_str(),
            detail,
            &cfg.topics.rejected,
            cfg.max_record_bytes,
        );
        t.send(rec)?;
        let event = RecordRejected {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            reason,
            detail: detail.to_string(),
        };
        t.on_commit(move || {
            event.emit();
            CommandEnded {
                command_id: "",
                action: CommandAction::Unknown,
                selector: CommandSelector::Unknown,
                outcome: CommandOutcome::Undecodable,
            }
            .emit();
        });
        t.consumed(m.topic(), m.partition(), m.offset())?;
        Ok(())
    }

    fn handle(&mut self, m: &BorrowedMessage<'_>, t: &mut TxnBatch) -> Result<(), CommandError> {
        let max = self.w.cfg.max_record_bytes;
        let size = m.payload().map_or(0, <[u8]>::len);
        if size > max {
            let detail = format!("record of {size} bytes exceeds the maximum of {max}");
            return self.refuse(m, RejectReason::TooLarge, "too_large", &detail, t);
        }
        let ct = codec::content_type_of(m.headers());
        if header(m, headers::CALLBACK_REPORT).is_some() {
            return match codec::decode::<FailureCallbackReport>(ct, m.payload()) {
                Ok(report) => {
                    self.callback_report(report, m.partition(), t)?;
                    t.consumed(m.topic(), m.partition(), m.offset())?;
                    Ok(())
                }
                Err(e) => self.reject(m, e.reject_reason(), &e.to_string(), t),
            };
        }
        let cmd: RecoveryCommand =
            match codec::decode_strict(strict::RECOVERY_COMMAND, ct, m.payload()) {
                Ok(c) => c,
                Err(e) => {
                    return self.refuse(m, e.reject_reason(), e.result_code(), &e.to_string(), t)
                }
            };
        if cmd.command_id.len() > validate::MAX_ID_LEN {
            // No result can be keyed by it (and a cut id could name another command).
            let detail = format!(
                "command_id is {} bytes, at most {} allowed",
                cmd.command_id.len(),
                validate::MAX_ID_LEN
            );
            return self.reject(m, RejectReason::TooLong, &detail, t);
        }
        let parent = header(m, headers::PARENT);
        match parent {
            Some(parent) => {
                let canceled = header(m, headers::CANCELED).is_some();
                self.sub_command(&parent, &cmd, canceled, t)?
            }
            None => self.command(m, cmd, t)?,
        }
        // A bulk command in dispatch holds its own offset until it is fully fanned out.
        if !self
            .jobs
            .iter()
            .any(|j| j.partition == m.partition() && j.offset == m.offset())
        {
            t.consumed(m.topic(), m.partition(), m.offset())?;
        }
        Ok(())
    }

    /// A command that cannot be acted on as it is — too large, undecodable, or naming a field or
    /// enum value the schema does not have: answered with a final rejected result under its
    /// `commandId` when one can be read, so a client waiting on the results topic is told;
    /// copied to the rejected topic (with `reason`) otherwise. Either way in this transaction,
    /// with its offset. `code` and `message` make the result's detail.
    fn refuse(
        &mut self,
        m: &BorrowedMessage<'_>,
        reason: RejectReason,
        code: &str,
        message: &str,
        t: &mut TxnBatch,
    ) -> Result<(), CommandError> {
        let ct = codec::content_type_of(m.headers());
        // A sub-command is ours, and a callback report's field 1 is a dlqId: neither is a
        // client's command to answer. A longer id keys no result (see `handle`).
        let ours =
            header(m, headers::PARENT).is_some() || header(m, headers::CALLBACK_REPORT).is_some();
        let id = codec::command_id_hint(ct, m.payload())
            .filter(|id| id.len() <= validate::MAX_ID_LEN && !ours);
        let Some(command_id) = id else {
            return self.reject(m, reason, message, t);
        };
        // What can still be read (a misspelt field leaves the rest decodable) goes into the
        // result, so it says which action and requester it answers; not from a record too
        // large to be taken in.
        let lenient = if reason == RejectReason::TooLarge {
            RecoveryCommand::default()
        } else {
            codec::decode::<RecoveryCommand>(ct, m.payload()).unwrap_or_default()
        };
        let action = Action::try_from(lenient.action).unwrap_or(Action::Unspecified);
        let cmd = RecoveryCommand {
            command_id,
            action: action as i32,
            dry_run: lenient.dry_run,
            requested_by: Some(lenient.requested_by)
                .filter(|r| r.len() <= validate::MAX_ID_LEN)
                .unwrap_or_default(),
            requested_at: lenient.requested_at,
            ..Default::default()
        };
        if self.w.ledger.is_processed(&cmd.command_id)
            || self.processed_staged.contains(&cmd.command_id)
        {
            // The id was already answered: a re-read (or a re-used id) answers that first
            // outcome, like any duplicate.
            self.duplicate(&cmd, action, CommandSelector::Invalid, t)?;
        } else {
            let detail: String = format!("{code}: {message}").chars().take(1024).collect();
            tracing::warn!(
                command_id = cmd.command_id,
                partition = m.partition(),
                offset = m.offset(),
                error = message,
                "command refused before decoding"
            );
            let item = outcome("", Status::Rejected, detail);
            self.send_final(&cmd, vec![item], 0, 0, 1, t)?;
            count_command(
                t,
                &cmd.command_id,
                action,
                CommandSelector::Invalid,
                CommandOutcome::Rejected,
            );
        }
        t.consumed(m.topic(), m.partition(), m.offset())?;
        Ok(())
    }

    /// Applies a callback report forwarded by ingest, in order with the commands on the entry.
    fn callback_report(
        &mut self,
        report: FailureCallbackReport,
        partition: i32,
        t: &mut TxnBatch,
    ) -> Result<(), CommandError> {
        self.ensure_fresh(partition, t)?;
        let Some(mut entry) = self.current(&report.dlq_id) else {
            tracing::info!(
                dlq_id = report.dlq_id,
                "callback report for an entry no longer stored; dropped"
            );
            return Ok(());
        };
        let canceled = entry
            .event
            .as_ref()
            .and_then(|e| e.failure_callback_info.as_ref())
            .is_some_and(|i| i.state == CbState::CallbackCanceled as i32);
        if canceled {
            // An operator canceled the callback (DELETE …/dlq/callback/{id}): the late end of
            // the canceled run does not overwrite that.
            tracing::info!(
                dlq_id = report.dlq_id,
                "callback report for a canceled failure callback; ignored"
            );
            return Ok(());
        }
        if let Some(ev) = entry.event.as_mut() {
            ev.failure_callback_info = report.info;
        }
        self.write_entry(&report.dlq_id, Written::Updated(Box::new(entry)), t)
    }

    fn command(
        &mut self,
        m: &BorrowedMessage<'_>,
        cmd: RecoveryCommand,
        t: &mut TxnBatch,
    ) -> Result<(), CommandError> {
        let action_raw = Action::try_from(cmd.action).unwrap_or(Action::Unspecified);
        let _span = tracing::info_span!(
            "command",
            command_id = %cmd.command_id,
            action = action_label(action_raw),
            partition = m.partition(),
            offset = m.offset()
        )
        .entered();
        let valid = match validate(&cmd) {
            Ok(v) => v,
            Err(invalid) => {
                tracing::warn!(
                    command_id = cmd.command_id,
                    reason = invalid.code(),
                    "command rejected"
                );
                let item = outcome(
                    "",
                    Status::Rejected,
                    format!("{}: {invalid}", invalid.code()),
                );
                self.send_result(&cmd, vec![item], 0, true, t)?;
                count_command(
                    t,
                    &cmd.command_id,
                    action_raw,
                    CommandSelector::Invalid,
                    CommandOutcome::Rejected,
                );
                return Ok(());
            }
        };
        let action = valid.action;
        let selector = valid.selection.label();
        // A committed final result is in the ledger at once (applied on commit, before the
        // topic is read back), so the ledger and the open transaction say it all.
        if self.w.ledger.is_processed(&cmd.command_id)
            || self.processed_staged.contains(&cmd.command_id)
        {
            return self.duplicate(&cmd, action, selector, t);
        }
        if cmd.dry_run {
            let ids = self.resolve(&valid.selection);
            let items: Vec<ItemOutcome> = ids
                .iter()
                .map(|id| {
                    outcome(
                        id,
                        Status::Ok,
                        format!("dry run: would {}", action_label(action)),
                    )
                })
                .collect();
            let matched = items.len() as i64;
            let mut chunks: Vec<Vec<ItemOutcome>> = items
                .chunks(ITEMS_PER_RESULT)
                .map(<[ItemOutcome]>::to_vec)
                .collect();
            let last = if chunks.len() <= 1 {
                chunks.pop().unwrap_or_default()
            } else {
                Vec::new()
            };
            for chunk in chunks {
                self.send_result(&cmd, chunk, matched, false, t)?;
            }
            // Each item is in one record: the chunks, or the final one when it holds them all.
            // Every item of a dry run is OK ("would …"), so the totals say `matched` succeeded.
            self.send_final(&cmd, last, matched, matched, 0, t)?;
            count_command(t, &cmd.command_id, action, selector, CommandOutcome::DryRun);
            return Ok(());
        }
        if let Selection::Ids(ids) = &valid.selection {
            if ids.len() == 1 && partition_for(ids[0].as_bytes(), self.partitions) == m.partition()
            {
                self.ensure_fresh(m.partition(), t)?;
                let item = self.act(&cmd, action, &ids[0], t)?;
                let ok = item.status == Status::Ok as i32;
                // As a bulk command counts (§3 `CommandResult.failed`): a SKIPPED item — a
                // parked entry left alone — counts in neither, and is not a failed command.
                let failed = item.status == Status::NotFound as i32
                    || item.status == Status::Rejected as i32;
                self.send_final(&cmd, vec![item], 1, i64::from(ok), i64::from(failed), t)?;
                let outcome = if failed {
                    CommandOutcome::Failed
                } else {
                    CommandOutcome::Ok
                };
                count_command(t, &cmd.command_id, action, selector, outcome);
                return Ok(());
            }
        }
        self.start_bulk(m, cmd, &valid.selection, action, selector, t)
    }

    /// A command already processed: report the first outcome as SKIPPED, act on nothing.
    fn duplicate(
        &mut self,
        cmd: &RecoveryCommand,
        action: Action,
        selector: CommandSelector,
        t: &mut TxnBatch,
    ) -> Result<(), CommandError> {
        let detail = format!(
            "{}command {} was already processed",
            ledger::DUPLICATE_DETAIL,
            cmd.command_id
        );
        let items = match self.w.ledger.finished(&cmd.command_id) {
            Some(first) if !first.items.is_empty() => first
                .items
                .into_iter()
                .map(|mut i| {
                    i.status = Status::Skipped as i32;
                    i.detail = detail.clone();
                    i
                })
                .collect(),
            _ => vec![outcome("", Status::Skipped, detail)],
        };
        tracing::info!(command_id = cmd.command_id, "duplicate command skipped");
        self.send_result(cmd, items, 0, true, t)?;
        count_command(
            t,
            &cmd.command_id,
            action,
            selector,
            CommandOutcome::Duplicate,
        );
        Ok(())
    }

    /// One entry of a bulk command, on its owner. `canceled`: the bulk command was canceled
    /// before this entry — it is answered SKIPPED unless it already has an outcome (a
    /// sub-command sent before the cancel, read earlier from this same partition, acted on it).
    fn sub_command(
        &mut self,
        parent: &str,
        cmd: &RecoveryCommand,
        canceled: bool,
        t: &mut TxnBatch,
    ) -> Result<(), CommandError> {
        let _span =
            tracing::info_span!("sub_command", parent, command_id = %cmd.command_id).entered();
        let (action, ids) = match validate(cmd) {
            Ok(v) => match v.selection {
                Selection::Ids(ids) => (v.action, ids),
                _ => (v.action, Vec::new()),
            },
            Err(e) => {
                tracing::warn!(parent, error = %e, "invalid sub-command ignored");
                return Ok(());
            }
        };
        for id in ids {
            let item = if canceled {
                if self.w.ledger.item(parent, &id).is_some() {
                    continue;
                }
                count_item(t, action, Status::Skipped);
                outcome(
                    &id,
                    Status::Skipped,
                    format!("canceled: job {parent} was canceled before this entry was acted on"),
                )
            } else {
                self.ensure_fresh(partition_for(id.as_bytes(), self.partitions), t)?;
                self.act(cmd, action, &id, t)?
            };
            let mut progress = self.result(cmd, vec![item], 0, false);
            progress.command_id = parent.to_string();
            self.send_result_record(progress, t)?;
        }
        Ok(())
    }

    fn content_type(&self) -> OwnedHeaders {
        OwnedHeaders::new().insert(Header {
            key: codec::CONTENT_TYPE,
            value: Some(self.encoding.content_type()),
        })
    }
}
