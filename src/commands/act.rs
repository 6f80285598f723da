//! Acting on one entry: the entry as this instance knows it (its own writes first), the
//! freshness wait before deciding on a partition it was just given, and the action itself —
//! decided by [`super::decide`], then written (execution, store update or tombstone) in the
//! open transaction.

use super::*;
use crate::republish::{in_place::EntryInPlace, kind_of};

/// An entry read in place ([`Pipeline::read_in_place`]): what the decision reads, and the run
/// already written from its bytes with its id.
struct InPlace {
    entry: DlqEntry,
    run: Option<(String, Vec<u8>)>,
}

/// How long a decision waits for the view or the ledger to pass a partition's end. A killed
/// instance's open transaction holds readers back until the broker aborts it: the transaction
/// timeout plus the broker's abort check (every 10 s by default).
pub(super) const CATCH_UP_BOUND: Duration = Duration::from_secs(TXN_TIMEOUT.as_secs() + 30);

/// Counts the outcome of an action on one entry once the open transaction commits (an
/// unspecified action or status is never acted on, so never counted).
pub(super) fn count_item(t: &mut TxnBatch, action: Action, status: Status) {
    let action = match action {
        Action::Restart => ItemAction::Restart,
        Action::Resume => ItemAction::Resume,
        Action::RetryFailureCallback => ItemAction::RetryFailureCallback,
        Action::CancelFailureCallback => ItemAction::CancelFailureCallback,
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
    t.count_on_commit(PerEntry::Acted(action, status));
}

impl Pipeline<'_> {
    /// The entry as this instance knows it: its own uncommitted and committed writes first.
    pub(super) fn current(&self, dlq_id: &str) -> Option<DlqEntry> {
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

    /// Commits the open transaction before a wait for a reader to reach a partition's end:
    /// that end counts our own open records too, which no reader passes until they are
    /// committed. Called only where the open transaction holds complete work (between
    /// records, or with every action's outcome already written).
    pub(super) fn commit_open(&mut self, t: &mut TxnBatch) -> Result<(), CommandError> {
        let consumer = self.consumer;
        pipeline::commit_now(self, consumer, t)
    }

    /// Before deciding on entries of `partition` for the first time since we own it, wait
    /// until the view holds everything written there before (e.g. by the previous owner),
    /// including what a transaction still open then turned out to be.
    pub(super) fn ensure_fresh(
        &mut self,
        partition: i32,
        t: &mut TxnBatch,
    ) -> Result<(), CommandError> {
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
    pub(super) fn wait_for_end(
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

    /// Reads the entry in place for bulk redrive's common case — a RESTART or RESUME without
    /// overrides, or a DELETE, of an entry this instance has not written since the view read
    /// it — with the run to republish already written from its bytes
    /// ([`crate::republish::in_place`]). `None`: decode the entry ([`Self::current`]).
    fn read_in_place(
        &self,
        cmd: &RecoveryCommand,
        action: Action,
        dlq_id: &str,
        now: i64,
    ) -> Option<InPlace> {
        let kind = match action {
            Action::Restart | Action::Resume if cmd.overrides.is_none() => kind_of(action),
            Action::Delete => None,
            _ => return None,
        };
        if self.encoding != Encoding::Protobuf
            || self.staged.contains_key(dlq_id)
            || lock(&self.w.overlay).contains_key(dlq_id)
        {
            return None;
        }
        let run_id = kind.map(|_| self.run_id_for(cmd, dlq_id));
        self.w.view.with_raw(dlq_id, |raw| {
            let entry = EntryInPlace::read(raw)?;
            let run = kind.zip(run_id).map(|(kind, run_id)| {
                let value = entry.execution(kind, &run_id, now, &cmd.command_id);
                (run_id, value)
            });
            Some(InPlace {
                entry: entry.for_decision(),
                run,
            })
        })?
    }

    /// The id of the run republished from `dlq_id`: the caller's (so a retried call is
    /// recognised), or a new one.
    fn run_id_for(&self, cmd: &RecoveryCommand, dlq_id: &str) -> String {
        cmd.new_run_ids
            .get(dlq_id)
            .cloned()
            .unwrap_or_else(new_run_id)
    }

    /// Acts on one entry inside the open transaction: decides ([`decide::decide`]) on the
    /// entry as this instance knows it, then writes what the decision says.
    pub(super) fn act(
        &mut self,
        cmd: &RecoveryCommand,
        action: Action,
        dlq_id: &str,
        t: &mut TxnBatch,
    ) -> Result<ItemOutcome, CommandError> {
        let now = crate::now_ms();
        let (entry, mut in_place_run) = match self.read_in_place(cmd, action, dlq_id, now) {
            Some(InPlace { entry, run }) => (Some(entry), run),
            None => (self.current(dlq_id), None),
        };
        let first = match entry {
            None => self.w.ledger.item(&cmd.command_id, dlq_id),
            Some(_) => None,
        };
        let guard = decide::Guard {
            max_redrives: self.w.cfg.max_redrives,
            force: cmd.force,
        };
        let decision = decide::decide(action, dlq_id, entry, first, now, guard);
        let (entry, republish, write) = match decision {
            Decision::NotFound(detail) => {
                count_item(t, action, Status::NotFound);
                return Ok(outcome(dlq_id, Status::NotFound, detail));
            }
            Decision::AlreadyDone(item) => {
                count_item(t, action, Status::Skipped);
                return Ok(item);
            }
            Decision::Parked(detail) => {
                count_item(t, action, Status::Skipped);
                return Ok(outcome(dlq_id, Status::Skipped, detail));
            }
            Decision::Rejected(detail) => {
                count_item(t, action, Status::Rejected);
                return Ok(outcome(dlq_id, Status::Rejected, detail));
            }
            Decision::Act {
                entry,
                republish,
                write,
            } => (entry, republish, write),
        };
        let mut item = outcome(dlq_id, Status::Ok, "");
        if let Some(kind) = republish {
            let (run_id, value) = match in_place_run.take() {
                // Written in place for this same kind (the kind follows from the action).
                Some(run) => run,
                None => {
                    let run_id = self.run_id_for(cmd, dlq_id);
                    let exec = execution(
                        *entry,
                        kind,
                        cmd.overrides.as_ref(),
                        run_id.clone(),
                        now,
                        &cmd.command_id,
                    );
                    (run_id, codec::encode(&exec, self.encoding))
                }
            };
            self.send_execution(&run_id, value, kind, t)?;
            item.workflow_run_id = run_id;
            item.workflow_created_at = now;
        }
        self.write_entry(dlq_id, write, t)?;
        count_item(t, action, Status::Ok);
        Ok(item)
    }

    /// Writes an entry's new state (or its tombstone) to the store, remembered until the view
    /// shows it.
    pub(super) fn write_entry(
        &mut self,
        dlq_id: &str,
        written: Written,
        t: &mut TxnBatch,
    ) -> Result<(), CommandError> {
        let value = match &written {
            Written::Deleted => None,
            Written::Updated(e) => Some(codec::encode(e.as_ref(), self.encoding)),
        };
        t.send(OutRecord {
            topic: &self.w.cfg.topics.store,
            key: Some(dlq_id.as_bytes().into()),
            // A tombstone has no content to type (and an empty header list is an allocation).
            headers: value.as_ref().map(|_| self.content_type()),
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

    /// Sends the run `run_id` (an encoded `WorkflowExecution` of `kind`) to the executions
    /// topic, keyed by its run id.
    pub(super) fn send_execution(
        &self,
        run_id: &str,
        value: Vec<u8>,
        kind: crate::wire::pb::workflow_execution::Kind,
        t: &mut TxnBatch,
    ) -> Result<(), CommandError> {
        t.send(OutRecord {
            topic: &self.w.cfg.topics.executions,
            key: Some(run_id.as_bytes().into()),
            value: Some(value),
            headers: Some(self.content_type()),
        })?;
        use crate::wire::pb::workflow_execution::Kind;
        let kind = match kind {
            Kind::Restart => RepublishKind::Restart,
            Kind::Resume => RepublishKind::Resume,
            Kind::FailureCallback => RepublishKind::FailureCallback,
            // An execution always has a kind (`republish::kind_of`); nothing to count otherwise.
            Kind::Unspecified => return Ok(()),
        };
        t.count_on_commit(PerEntry::Republished(kind));
        Ok(())
    }
}
