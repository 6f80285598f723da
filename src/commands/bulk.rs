//! Bulk commands: the snapshot a command acts on, its fan-out paced by `max_per_second` (entries
//! of partitions this instance owns are acted on here; the others are sent as sub-commands to
//! their owner), and the final result once every entry has an outcome.

use super::*;

/// A bulk command being fanned out.
pub(super) struct Job {
    pub(super) cmd: RecoveryCommand,
    pub(super) action: Action,
    pub(super) selector: CommandSelector,
    pub(super) topic: String,
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) ids: VecDeque<String>,
    /// Entries to fan out now.
    pub(super) total: usize,
    /// Entries the command covers, including those acted on before a restart.
    pub(super) matched: usize,
    pub(super) rate: f64,
    pub(super) started: Instant,
    pub(super) sent: usize,
    /// A cancel was read: what is left is sent as canceled sub-commands, unpaced.
    pub(super) canceled: bool,
    /// Entries sent as canceled sub-commands.
    pub(super) not_dispatched: usize,
}

impl Pipeline<'_> {
    /// Starts a bulk command: resolves what it matches now (less what it acted on before a
    /// restart), then holds its partition (paused, its offset uncommitted) while `advance_jobs`
    /// fans it out.
    pub(super) fn start_bulk(
        &mut self,
        m: &BorrowedMessage<'_>,
        cmd: RecoveryCommand,
        selection: &Selection,
        action: Action,
        selector: CommandSelector,
        t: &mut TxnBatch,
    ) -> Result<(), CommandError> {
        // A bulk command re-read after a crash: entries it already acted on are gone from the
        // view, but their outcomes are in the ledger and still count as matched. The snapshot
        // comes first and the ledger is read up to the end after it: an entry acted on in
        // between is then in the snapshot or in the ledger, never in neither.
        let snapshot = self.resolve(selection);
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
        // The start record: a job's progress has a denominator from the first moment.
        let mut start = self.result(&cmd, Vec::new(), 0, false);
        start.total = matched as i64;
        self.send_result_record(start, t)?;
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
            canceled: false,
            not_dispatched: 0,
        });
        Ok(())
    }

    /// Waits until the ledger has read the results partition of `command_id` up to its end
    /// now, open transactions included, so every outcome committed for the command is known.
    /// (Up to the stable end only was not enough: behind a killed instance's open transaction
    /// the ledger missed outcomes whose tombstones the view already showed, and a re-read bulk
    /// command under-counted what it matched.)
    pub(super) fn ensure_ledger_fresh(
        &mut self,
        command_id: &str,
        t: &mut TxnBatch,
    ) -> Result<(), CommandError> {
        self.commit_open(t)?;
        let results = self.w.cfg.topics.results.clone();
        // Through `ends`: the consumer's connection may be held by a long-poll fetch (see
        // `kafka::watchdog`), which cost every bulk command 500 ms here.
        let md = self
            .ends
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

    /// The snapshot a command acts on. Entries this instance is acting on in the open
    /// transaction stay in it: their outcome is not in the ledger yet, and leaving them out
    /// would under-count what the command matched. Their sub-commands find them acted on.
    pub(super) fn resolve(&self, selection: &Selection) -> Vec<String> {
        match selection {
            Selection::Ids(ids) => ids.clone(),
            Selection::Filter(f) => self.w.view.matching_ids(f),
            Selection::All => self.w.view.matching_ids(&EntryFilter::all()),
        }
    }

    /// Fans out the due part of each bulk command, paced by its rate; a fully dispatched
    /// command records how many entries it matched and releases its partition.
    pub(super) fn advance_jobs(&mut self, t: &mut TxnBatch) -> Result<(), CommandError> {
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
            // A cancel (a marker on the results topic, read by the ledger; at once after a
            // restart, since `start_bulk` reads the ledger to its end): every entry not acted on
            // yet gets a canceled sub-command — through the topic even when this instance owns
            // it, so one sent before the cancel (by an incarnation before a crash, say) is read
            // first and wins — and the final result waits for all of them.
            if !self.jobs[i].canceled
                && self.w.ledger.cancel_requested(&self.jobs[i].cmd.command_id)
            {
                let j = &mut self.jobs[i];
                j.canceled = true;
                tracing::info!(
                    command_id = j.cmd.command_id,
                    acted_or_sent = j.sent,
                    left = j.ids.len(),
                    "bulk command canceled"
                );
            }
            let due = {
                let j = &self.jobs[i];
                if j.canceled {
                    j.total
                } else {
                    ((j.started.elapsed().as_secs_f64() * j.rate).floor() as usize + 1).min(j.total)
                }
            };
            // A full transaction is committed first (by the caller), then dispatch goes on.
            let (cmd, action) = (self.jobs[i].cmd.clone(), self.jobs[i].action);
            let mut acted = Vec::new();
            while self.jobs[i].sent < due && !t.full(&self.limits()) {
                let Some(id) = self.jobs[i].ids.pop_front() else {
                    break;
                };
                let partition = partition_for(id.as_bytes(), self.partitions);
                if self.jobs[i].canceled {
                    let j = &self.jobs[i];
                    let mut sub = j.cmd.clone();
                    sub.selector = Some(Selector::DlqIds(Ids {
                        ids: vec![id.clone()],
                    }));
                    sub.new_run_ids = Default::default();
                    t.send(OutRecord {
                        topic: &self.w.cfg.topics.commands,
                        key: Some(id.into_bytes().into()),
                        value: Some(codec::encode(&sub, self.encoding)),
                        headers: Some(
                            self.content_type()
                                .insert(Header {
                                    key: headers::PARENT,
                                    value: Some(j.cmd.command_id.as_str()),
                                })
                                .insert(Header {
                                    key: headers::CANCELED,
                                    value: Some("1"),
                                }),
                        ),
                    })?;
                    self.jobs[i].sent += 1;
                    self.jobs[i].not_dispatched += 1;
                    continue;
                }
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
                t.send(OutRecord {
                    topic: &self.w.cfg.topics.commands,
                    key: Some(id.into_bytes().into()),
                    value: Some(codec::encode(&sub, self.encoding)),
                    headers: Some(self.content_type().insert(Header {
                        key: headers::PARENT,
                        value: Some(j.cmd.command_id.as_str()),
                    })),
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
                let mut fanned = self.result(&j.cmd, Vec::new(), j.matched as i64, false);
                fanned.not_dispatched = j.not_dispatched as i64;
                self.send_result_record(fanned, t)?;
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
    pub(super) fn finish_bulk_commands(&mut self, t: &mut TxnBatch) -> Result<(), CommandError> {
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
            // Every entry's outcome is already on the results topic, in a progress record: the
            // final one carries the totals only, so each item is in exactly one record of the
            // command and summing items across records counts each once (§4).
            let items: Vec<ItemOutcome> = f.record.items.into_values().collect();
            let matched = f.record.dispatched.unwrap_or(items.len() as i64);
            let cmd = RecoveryCommand {
                command_id: f.command_id.clone(),
                action: f.record.action,
                requested_by: f.record.requested_by.clone(),
                page_cursor: f.record.page_cursor.clone(),
                requested_at: f.record.requested_at,
                ..Default::default()
            };
            let mut r = self.result(&cmd, Vec::new(), matched, true);
            r.canceled = f.record.not_dispatched > 0;
            r.not_dispatched = f.record.not_dispatched;
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
            let action = Action::try_from(f.record.action).unwrap_or(Action::Unspecified);
            let outcome = if r.failed == 0 {
                CommandOutcome::Ok
            } else {
                CommandOutcome::Failed
            };
            self.finishing.insert(f.command_id.clone());
            self.send_result_record(r, t)?;
            count_command(t, &f.command_id, action, CommandSelector::Bulk, outcome);
        }
        Ok(())
    }
}
