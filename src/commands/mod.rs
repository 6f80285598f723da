//! The command consumer: restart, resume, re-run the failure callback of, or delete DLQ
//! entries — by id, ids, filter or all — exactly once.
//!
//! Ownership: the command topic is co-partitioned with the store topic by `dlqId`, so the
//! instance assigned command partition *p* is the only one deciding actions on the entries of
//! store partition *p*. A command for one id that lands on its owner's partition is acted on
//! directly. Any other command (ids, filter, all) is resolved against a snapshot of the view
//! and fanned out, paced by `max_per_second`, as one sub-command per entry keyed by `dlqId`
//! (header [`headers::PARENT`]), which the owner acts on. Each action — the republished
//! execution, the store tombstone or update, the per-entry result and the command's offset —
//! commits in one Kafka transaction. The results topic is the audit trail and, through the
//! [`ledger::Ledger`], the memory of which commands were already processed.

pub mod ledger;
pub mod submit;
pub mod validate;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
    thread,
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
    ledger::Ledger,
    validate::{validate, Selection},
};
use crate::{
    config::Config,
    events::{
        CommandAction, CommandAnswered, CommandEnded, CommandOutcome, CommandSelector, Event,
        ItemActed, ItemAction, ItemStatus, RecordRejected, RejectReason, RepublishKind,
        RunRepublished,
    },
    health::Worker,
    kafka::{
        partitioner::partition_for,
        pipeline::{self, TxnConsumer},
        progress::ReadProgress,
        rejected,
        txn::{lock, OutRecord, TxnBatch, TxnError, TxnLimits, TXN_TIMEOUT},
        KafkaConn,
    },
    republish::{execution, kind_of},
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
    },
};

pub mod headers {
    /// On a sub-command: the id of the bulk command it belongs to.
    pub const PARENT: &str = "dlq.parent-command";
    /// On a record forwarded by ingest: a `FailureCallbackReport` for the entry it is keyed by.
    pub const CALLBACK_REPORT: &str = "dlq.callback-report";
}

/// Results carry at most this many items; bigger sets are reported in several records.
const ITEMS_PER_RESULT: usize = 1000;

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

/// What this instance wrote to the store and the view may not show yet.
#[derive(Debug, Clone, PartialEq)]
enum Written {
    Deleted,
    Updated(Box<DlqEntry>),
}

/// The command worker; runs on its own thread, restarting its pipeline after a Kafka error.
pub struct Commands {
    pub cfg: Arc<Config>,
    pub conn: KafkaConn,
    pub view: Arc<StoreView>,
    pub ledger: Arc<Ledger>,
    /// Committed writes not yet seen by the view (read-your-writes across pipelines).
    overlay: Arc<Mutex<HashMap<String, Written>>>,
    /// Commands this instance finished (before the ledger has read their results back).
    finished: Arc<Mutex<HashSet<String>>>,
}

fn command_action(a: Action) -> CommandAction {
    match a {
        Action::Restart => CommandAction::Restart,
        Action::Resume => CommandAction::Resume,
        Action::RetryFailureCallback => CommandAction::RetryFailureCallback,
        Action::Delete => CommandAction::Delete,
        Action::Unspecified => CommandAction::Unspecified,
    }
}

fn action_label(a: Action) -> &'static str {
    command_action(a).as_str()
}

/// Counts a command's end once the open transaction commits.
fn count_command(
    t: &mut TxnBatch,
    command_id: &str,
    action: Action,
    selector: CommandSelector,
    outcome: CommandOutcome,
) {
    let id = command_id.to_string();
    let action = command_action(action);
    t.on_commit(move || {
        CommandEnded {
            command_id: &id,
            action,
            selector,
            outcome,
        }
        .emit()
    });
}

/// Counts the outcome of an action on one entry once the open transaction commits (an
/// unspecified action or status is never acted on, so never counted).
fn count_item(t: &mut TxnBatch, action: Action, status: Status) {
    let action = match action {
        Action::Restart => ItemAction::Restart,
        Action::Resume => ItemAction::Resume,
        Action::RetryFailureCallback => ItemAction::RetryFailureCallback,
        Action::Delete => ItemAction::Delete,
        Action::Unspecified => return,
    };
    let status = match status {
        Status::Ok => ItemStatus::Ok,
        Status::NotFound => ItemStatus::NotFound,
        Status::Rejected => ItemStatus::Rejected,
        Status::Skipped => ItemStatus::Skipped,
        Status::Unspecified => return,
    };
    t.on_commit(move || ItemActed { action, status }.emit());
}

fn outcome(dlq_id: &str, status: Status, detail: impl Into<String>) -> ItemOutcome {
    ItemOutcome {
        dlq_id: dlq_id.to_string(),
        status: status as i32,
        detail: detail.into(),
        ..Default::default()
    }
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

/// A bulk command being fanned out.
struct Job {
    cmd: RecoveryCommand,
    action: Action,
    selector: CommandSelector,
    topic: String,
    partition: i32,
    offset: i64,
    ids: VecDeque<String>,
    /// Entries to fan out now.
    total: usize,
    /// Entries the command covers, including those acted on before a restart.
    matched: usize,
    rate: f64,
    started: Instant,
    sent: usize,
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
            finished: Arc::default(),
        }
    }

    /// Starts the worker; it consumes once the view and the ledger have caught up with their
    /// topics: a decision is only as good as the state it is made on.
    pub fn spawn(
        self,
        worker: Worker,
        shutdown: CancellationToken,
    ) -> std::io::Result<thread::JoinHandle<()>> {
        crate::kafka::supervise(
            worker,
            self.conn.clone(),
            shutdown,
            move |shutdown, worker| self.run_pipeline(shutdown, worker),
        )
    }

    fn run_pipeline(
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
        pipeline::run(&spec, &txn, &consumer, &mut p, shutdown, worker)
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

/// How long a decision waits for the view or the ledger to pass a partition's end. A killed
/// instance's open transaction holds readers back until the broker aborts it: the transaction
/// timeout plus the broker's abort check (every 10 s by default).
const CATCH_UP_BOUND: Duration = Duration::from_secs(TXN_TIMEOUT.as_secs() + 30);

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
    /// Bulk commands whose final result is written but not yet committed.
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

    fn rebalanced(&mut self, _consumer: &pipeline::TxnConsumer) {
        self.after_rebalance();
    }

    fn committed(&mut self) {
        self.staged.clear();
        self.processed_staged.clear();
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
    fn after_rebalance(&mut self) {
        self.fresh.clear();
        // The open transaction was committed before the revoke: its writes are in the overlay.
        self.staged.clear();
        self.processed_staged.clear();
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

    /// The entry as this instance knows it: its own uncommitted and committed writes first.
    fn current(&self, dlq_id: &str) -> Option<DlqEntry> {
        let written = self
            .staged
            .get(dlq_id)
            .cloned()
            .or_else(|| lock(&self.w.overlay).get(dlq_id).cloned());
        match written {
            Some(Written::Deleted) => None,
            Some(Written::Updated(e)) => Some(*e),
            None => self.w.view.get(dlq_id),
        }
    }

    fn limits(&self) -> TxnLimits {
        TxnLimits::of(&self.w.cfg)
    }

    /// Commits the open transaction before a wait for a reader to reach a partition's end:
    /// that end counts our own open records too, which no reader passes until they are
    /// committed. Called only where the open transaction holds complete work (between
    /// records, or with every action's outcome already written).
    fn commit_open(&mut self, t: &mut TxnBatch) -> Result<(), CommandError> {
        let consumer = self.consumer;
        pipeline::commit_now(self, consumer, t)
    }

    /// Before deciding on entries of `partition` for the first time since we own it, wait
    /// until the view holds everything written there before (e.g. by the previous owner),
    /// including what a transaction still open then turned out to be.
    fn ensure_fresh(&mut self, partition: i32, t: &mut TxnBatch) -> Result<(), CommandError> {
        if self.fresh.contains(&partition) {
            return Ok(());
        }
        self.commit_open(t)?;
        self.wait_for_end(
            &self.w.cfg.topics.store,
            partition,
            &self.w.view.progress,
            |want| CommandError::ViewBehind { partition, want },
        )?;
        self.fresh.insert(partition);
        Ok(())
    }

    /// Waits, within [`CATCH_UP_BOUND`], until a reader (`progress`) has read `partition` of
    /// `topic` up to the partition's end now, open transactions included (see `ends`).
    fn wait_for_end(
        &self,
        topic: &str,
        partition: i32,
        progress: &ReadProgress,
        behind: impl FnOnce(i64) -> CommandError,
    ) -> Result<(), CommandError> {
        let (_, end) = self
            .ends
            .fetch_watermarks(topic, partition, Duration::from_secs(10))?;
        let deadline = Instant::now() + CATCH_UP_BOUND;
        if progress.wait_for(partition, end, deadline, || self.worker.beat()) {
            Ok(())
        } else {
            Err(behind(end))
        }
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
        t.send(&rec)?;
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

    /// Waits until the ledger has read the results partition of `command_id` up to its end
    /// now, open transactions included, so every outcome committed for the command is known.
    /// (Up to the stable end only was not enough: behind a killed instance's open transaction
    /// the ledger missed outcomes whose tombstones the view already showed, and a re-read bulk
    /// command under-counted what it matched.)
    fn ensure_ledger_fresh(
        &mut self,
        command_id: &str,
        t: &mut TxnBatch,
    ) -> Result<(), CommandError> {
        self.commit_open(t)?;
        let results = self.w.cfg.topics.results.clone();
        let md = self
            .consumer
            .fetch_metadata(Some(&results), Duration::from_secs(10))?;
        let count = md
            .topics()
            .iter()
            .find(|t| t.name() == results)
            .map_or(0, |t| t.partitions().len() as i32);
        if count == 0 {
            return Ok(());
        }
        let partition = partition_for(command_id.as_bytes(), count);
        self.wait_for_end(&results, partition, &self.w.ledger.progress, |want| {
            CommandError::LedgerBehind { partition, want }
        })
    }

    fn handle(&mut self, m: &BorrowedMessage<'_>, t: &mut TxnBatch) -> Result<(), CommandError> {
        let max = self.w.cfg.max_record_bytes;
        let size = m.payload().map_or(0, <[u8]>::len);
        if size > max {
            let detail = format!("record of {size} bytes exceeds the maximum of {max}");
            return self.reject(m, RejectReason::TooLarge, &detail, t);
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
        let cmd: RecoveryCommand = match codec::decode(ct, m.payload()) {
            Ok(c) => c,
            Err(e) => return self.reject(m, e.reject_reason(), &e.to_string(), t),
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
            Some(parent) => self.sub_command(&parent, &cmd, t)?,
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
        if lock(&self.w.finished).contains(&cmd.command_id)
            || self.w.ledger.is_processed(&cmd.command_id)
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
            self.send_final(&cmd, last, matched, 0, 0, t)?;
            count_command(t, &cmd.command_id, action, selector, CommandOutcome::DryRun);
            return Ok(());
        }
        if let Selection::Ids(ids) = &valid.selection {
            if ids.len() == 1 && partition_for(ids[0].as_bytes(), self.partitions) == m.partition()
            {
                self.ensure_fresh(m.partition(), t)?;
                let item = self.act(&cmd, action, &ids[0], t)?;
                let ok = item.status == Status::Ok as i32;
                self.send_final(&cmd, vec![item], 1, i64::from(ok), i64::from(!ok), t)?;
                let outcome = if ok {
                    CommandOutcome::Ok
                } else {
                    CommandOutcome::Failed
                };
                count_command(t, &cmd.command_id, action, selector, outcome);
                return Ok(());
            }
        }
        // A bulk command re-read after a crash: entries it already acted on are gone from the
        // view, but their outcomes are in the ledger and still count as matched. The snapshot
        // comes first and the ledger is read up to the end after it: an entry acted on in
        // between is then in the snapshot or in the ledger, never in neither.
        let snapshot = self.resolve(&valid.selection);
        self.ensure_ledger_fresh(&cmd.command_id, t)?;
        let done_before = self.w.ledger.item_ids(&cmd.command_id);
        let ids: Vec<String> = snapshot
            .into_iter()
            .filter(|id| !done_before.contains(id))
            .collect();
        let matched = ids.len() + done_before.len();
        if matched == 0 {
            self.send_final(&cmd, Vec::new(), 0, 0, 0, t)?;
            count_command(t, &cmd.command_id, action, selector, CommandOutcome::Ok);
            return Ok(());
        }
        let rate = if cmd.max_per_second > 0.0 {
            cmd.max_per_second
        } else {
            self.w.cfg.max_per_second
        };
        tracing::info!(
            command_id = cmd.command_id,
            action = action_label(action),
            selector = selector.as_str(),
            matched,
            already_done = done_before.len(),
            rate,
            "bulk command: fanning out"
        );
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(m.topic(), m.partition());
        self.consumer.pause(&tpl)?;
        self.jobs.push(Job {
            matched,
            total: ids.len(),
            ids: ids.into(),
            cmd,
            action,
            selector,
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            rate,
            started: Instant::now(),
            sent: 0,
        });
        Ok(())
    }

    /// The snapshot a command acts on. Entries this instance is acting on in the open
    /// transaction stay in it: their outcome is not in the ledger yet, and leaving them out
    /// would under-count what the command matched. Their sub-commands find them acted on.
    fn resolve(&self, selection: &Selection) -> Vec<String> {
        match selection {
            Selection::Ids(ids) => ids.clone(),
            Selection::Filter(f) => self.w.view.matching_ids(f),
            Selection::All => self.w.view.matching_ids(&EntryFilter::all()),
        }
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
            "duplicate: command {} was already processed",
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

    fn sub_command(
        &mut self,
        parent: &str,
        cmd: &RecoveryCommand,
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
            self.ensure_fresh(partition_for(id.as_bytes(), self.partitions), t)?;
            let item = self.act(cmd, action, &id, t)?;
            let mut progress = self.result(cmd, vec![item], 0, false);
            progress.command_id = parent.to_string();
            self.send_result_record(progress, t)?;
        }
        Ok(())
    }

    /// Acts on one entry inside the open transaction.
    fn act(
        &mut self,
        cmd: &RecoveryCommand,
        action: Action,
        dlq_id: &str,
        t: &mut TxnBatch,
    ) -> Result<ItemOutcome, CommandError> {
        let Some(entry) = self.current(dlq_id) else {
            let item = match self.w.ledger.item(&cmd.command_id, dlq_id) {
                Some(first) => ItemOutcome {
                    status: Status::Skipped as i32,
                    detail: "already processed by this command".into(),
                    ..first
                },
                None => outcome(
                    dlq_id,
                    Status::NotFound,
                    format!("DLQ entry `{dlq_id}` was not found"),
                ),
            };
            let status = Status::try_from(item.status).unwrap_or(Status::Unspecified);
            count_item(t, action, status);
            return Ok(item);
        };
        let now = crate::now_ms();
        if entry.expires_at > 0 && entry.expires_at <= now {
            // Expired: the sweeper tombstones it; acting now could resurrect it.
            count_item(t, action, Status::NotFound);
            return Ok(outcome(
                dlq_id,
                Status::NotFound,
                format!("DLQ entry `{dlq_id}` has expired"),
            ));
        }
        if action == Action::Unspecified {
            // Validation refuses it; never let it fall through to a tombstone.
            return Ok(outcome(dlq_id, Status::Rejected, "unspecified action"));
        }
        if action == Action::RetryFailureCallback {
            let ev = entry.event.as_ref();
            let callback = ev.map_or("", |e| e.failure_callback.as_str());
            let state = ev
                .and_then(|e| e.failure_callback_info.as_ref())
                .map_or(0, |i| i.state);
            if callback.is_empty() || state != CbState::CallbackFail as i32 {
                let detail = if callback.is_empty() {
                    "the entry has no failure callback".to_string()
                } else {
                    let name = CbState::try_from(state).map_or("UNKNOWN", |s| s.as_str_name());
                    format!("the failure callback is in state {name}, not CALLBACK_FAIL")
                };
                count_item(t, action, Status::Rejected);
                return Ok(outcome(dlq_id, Status::Rejected, detail));
            }
        }
        let mut item = outcome(dlq_id, Status::Ok, "");
        if let Some(kind) = kind_of(action) {
            let run_id = cmd
                .new_run_ids
                .get(dlq_id)
                .cloned()
                .unwrap_or_else(new_run_id);
            let exec = execution(
                &entry,
                kind,
                cmd.overrides.as_ref(),
                run_id.clone(),
                now,
                &cmd.command_id,
            );
            self.send_execution(&exec, t)?;
            item.workflow_run_id = run_id;
            item.workflow_created_at = now;
        }
        let written = match action {
            // The failure callback is re-run; the entry stays, marked in progress.
            Action::RetryFailureCallback => {
                let mut marked = entry;
                if let Some(info) = marked
                    .event
                    .as_mut()
                    .and_then(|e| e.failure_callback_info.as_mut())
                {
                    info.state = CbState::CallbackInprogress as i32;
                }
                Written::Updated(Box::new(marked))
            }
            _ => Written::Deleted,
        };
        self.write_entry(dlq_id, written, t)?;
        count_item(t, action, Status::Ok);
        Ok(item)
    }

    /// Writes an entry's new state (or its tombstone) to the store, remembered until the view
    /// shows it.
    fn write_entry(
        &mut self,
        dlq_id: &str,
        written: Written,
        t: &mut TxnBatch,
    ) -> Result<(), CommandError> {
        let value = match &written {
            Written::Deleted => None,
            Written::Updated(e) => Some(codec::encode(e.as_ref(), self.encoding)),
        };
        t.send(&OutRecord {
            topic: self.w.cfg.topics.store.clone(),
            key: Some(dlq_id.as_bytes().to_vec()),
            headers: if value.is_some() {
                self.content_type()
            } else {
                OwnedHeaders::new()
            },
            value,
        })?;
        self.staged.insert(dlq_id.to_string(), written.clone());
        let overlay = self.w.overlay.clone();
        let id = dlq_id.to_string();
        t.on_commit(move || {
            lock(&overlay).insert(id, written);
        });
        Ok(())
    }

    fn content_type(&self) -> OwnedHeaders {
        OwnedHeaders::new().insert(Header {
            key: codec::CONTENT_TYPE,
            value: Some(self.encoding.content_type()),
        })
    }

    fn send_execution(
        &self,
        exec: &crate::wire::pb::WorkflowExecution,
        t: &mut TxnBatch,
    ) -> Result<(), CommandError> {
        t.send(&OutRecord {
            topic: self.w.cfg.topics.executions.clone(),
            key: Some(exec.workflow_run_id.as_bytes().to_vec()),
            value: Some(codec::encode(exec, self.encoding)),
            headers: self.content_type(),
        })?;
        use crate::wire::pb::workflow_execution::Kind;
        let kind = match exec.kind() {
            Kind::Restart => RepublishKind::Restart,
            Kind::Resume => RepublishKind::Resume,
            Kind::FailureCallback => RepublishKind::FailureCallback,
            // An execution always has a kind (`republish::kind_of`); nothing to count otherwise.
            Kind::Unspecified => return Ok(()),
        };
        t.on_commit(move || RunRepublished { kind }.emit());
        Ok(())
    }

    fn result(
        &self,
        cmd: &RecoveryCommand,
        items: Vec<ItemOutcome>,
        matched: i64,
        done: bool,
    ) -> CommandResult {
        let succeeded = items
            .iter()
            .filter(|i| i.status == Status::Ok as i32)
            .count() as i64;
        let failed = items
            .iter()
            .filter(|i| i.status == Status::NotFound as i32 || i.status == Status::Rejected as i32)
            .count() as i64;
        CommandResult {
            command_id: cmd.command_id.clone(),
            action: cmd.action,
            dry_run: cmd.dry_run,
            items,
            matched,
            succeeded,
            failed,
            done,
            requested_by: cmd.requested_by.clone(),
            completed_at: crate::now_ms(),
        }
    }

    fn send_result(
        &self,
        cmd: &RecoveryCommand,
        items: Vec<ItemOutcome>,
        matched: i64,
        done: bool,
        t: &mut TxnBatch,
    ) -> Result<(), CommandError> {
        let r = self.result(cmd, items, matched, done);
        self.send_result_record(r, t)
    }

    /// The final result of a command (done = true), remembered as processed once committed.
    fn send_final(
        &mut self,
        cmd: &RecoveryCommand,
        items: Vec<ItemOutcome>,
        matched: i64,
        succeeded: i64,
        failed: i64,
        t: &mut TxnBatch,
    ) -> Result<(), CommandError> {
        let mut r = self.result(cmd, items, matched, true);
        r.succeeded = succeeded.max(r.succeeded);
        r.failed = failed.max(r.failed);
        if cmd.requested_at > 0 {
            let latency = ((crate::now_ms() - cmd.requested_at).max(0) as f64) / 1000.0;
            t.on_commit(move || CommandAnswered { seconds: latency }.emit());
        }
        let finished = self.w.finished.clone();
        let id = cmd.command_id.clone();
        self.processed_staged.insert(id.clone());
        t.on_commit(move || {
            lock(&finished).insert(id);
        });
        self.send_result_record(r, t)
    }

    fn send_result_record(&self, r: CommandResult, t: &mut TxnBatch) -> Result<(), CommandError> {
        t.send(&OutRecord {
            topic: self.w.cfg.topics.results.clone(),
            key: Some(r.command_id.as_bytes().to_vec()),
            value: Some(codec::encode(&r, self.encoding)),
            headers: self.content_type(),
        })?;
        // Read our own results back at once (the ledger applies each result idempotently).
        let ledger = self.w.ledger.clone();
        t.on_commit(move || ledger.apply(&r));
        Ok(())
    }

    /// Fans out the due part of each bulk command, paced by its rate; a fully dispatched
    /// command records how many entries it matched and releases its partition.
    fn advance_jobs(&mut self, t: &mut TxnBatch) -> Result<(), CommandError> {
        if self.jobs.is_empty() {
            return Ok(());
        }
        // Entries on partitions this instance owns are acted on here, in this transaction —
        // what the sub-command would do on arrival, one hop sooner. Ownership is read on this
        // thread, the one that handles rebalances, so it cannot change under the action.
        let owned: HashSet<i32> = self
            .consumer
            .assignment()
            .map(|a| a.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default();
        let mut i = 0;
        while i < self.jobs.len() {
            let due = {
                let j = &self.jobs[i];
                ((j.started.elapsed().as_secs_f64() * j.rate).floor() as usize + 1).min(j.total)
            };
            // A full transaction is committed first (by the caller), then dispatch goes on.
            let (cmd, action) = (self.jobs[i].cmd.clone(), self.jobs[i].action);
            let mut acted = Vec::new();
            while self.jobs[i].sent < due && !t.full(&self.limits()) {
                let Some(id) = self.jobs[i].ids.pop_front() else {
                    break;
                };
                let partition = partition_for(id.as_bytes(), self.partitions);
                if owned.contains(&partition) {
                    if !self.fresh.contains(&partition) && !acted.is_empty() {
                        // The wait commits: what was acted on so far gets its outcome first.
                        let progress = self.result(&cmd, std::mem::take(&mut acted), 0, false);
                        self.send_result_record(progress, t)?;
                    }
                    self.ensure_fresh(partition, t)?;
                    acted.push(self.act(&cmd, action, &id, t)?);
                    t.add_work(1);
                    self.jobs[i].sent += 1;
                    continue;
                }
                let j = &self.jobs[i];
                let mut sub = j.cmd.clone();
                sub.selector = Some(Selector::DlqIds(Ids {
                    ids: vec![id.clone()],
                }));
                sub.new_run_ids = j
                    .cmd
                    .new_run_ids
                    .get(&id)
                    .map(|r| (id.clone(), r.clone()))
                    .into_iter()
                    .collect();
                t.send(&OutRecord {
                    topic: self.w.cfg.topics.commands.clone(),
                    key: Some(id.into_bytes()),
                    value: Some(codec::encode(&sub, self.encoding)),
                    headers: self.content_type().insert(Header {
                        key: headers::PARENT,
                        value: Some(j.cmd.command_id.as_str()),
                    }),
                })?;
                self.jobs[i].sent += 1;
            }
            if !acted.is_empty() {
                // One progress result for the entries acted on here, in this transaction.
                let progress = self.result(&cmd, acted, 0, false);
                self.send_result_record(progress, t)?;
            }
            if self.jobs[i].ids.is_empty() {
                let j = self.jobs.remove(i);
                self.processed_staged.insert(j.cmd.command_id.clone());
                self.send_result(&j.cmd, Vec::new(), j.matched as i64, false, t)?;
                t.consumed(&j.topic, j.partition, j.offset)?;
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(&j.topic, j.partition);
                self.consumer.resume(&tpl)?;
                tracing::info!(
                    command_id = j.cmd.command_id,
                    dispatched = j.total,
                    matched = j.matched,
                    "bulk command fanned out"
                );
                count_command(
                    t,
                    &j.cmd.command_id,
                    j.action,
                    j.selector,
                    CommandOutcome::Dispatched,
                );
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    /// Writes the final result of bulk commands whose every entry has an outcome, for the
    /// commands whose partition this instance owns.
    fn finish_bulk_commands(&mut self, t: &mut TxnBatch) -> Result<(), CommandError> {
        let owned: HashSet<i32> = self
            .consumer
            .assignment()
            .map(|a| a.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default();
        for f in self.w.ledger.finishable() {
            if self.finishing.contains(&f.command_id)
                || !owned.contains(&partition_for(f.command_id.as_bytes(), self.partitions))
            {
                continue;
            }
            let mut items: Vec<ItemOutcome> = f.record.items.into_values().collect();
            items.sort_by(|a, b| a.dlq_id.cmp(&b.dlq_id));
            let matched = f.record.dispatched.unwrap_or(items.len() as i64);
            let cmd = RecoveryCommand {
                command_id: f.command_id.clone(),
                action: f.record.action,
                requested_by: f.record.requested_by.clone(),
                ..Default::default()
            };
            let mut r = self.result(&cmd, Vec::new(), matched, true);
            r.succeeded = items
                .iter()
                .filter(|i| i.status == Status::Ok as i32)
                .count() as i64;
            r.failed = items
                .iter()
                .filter(|i| {
                    i.status == Status::NotFound as i32 || i.status == Status::Rejected as i32
                })
                .count() as i64;
            if items.len() <= ITEMS_PER_RESULT {
                r.items = items;
            }
            let action = Action::try_from(f.record.action).unwrap_or(Action::Unspecified);
            let outcome = if r.failed == 0 {
                CommandOutcome::Ok
            } else {
                CommandOutcome::Failed
            };
            self.finishing.insert(f.command_id.clone());
            self.send_result_record(r, t)?;
            count_command(t, &f.command_id, action, CommandSelector::Bulk, outcome);
            let finished = self.w.finished.clone();
            t.on_commit(move || {
                lock(&finished).insert(f.command_id);
            });
        }
        Ok(())
    }
}
