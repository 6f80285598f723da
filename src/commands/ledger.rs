//! The command ledger: what every command has done so far, rebuilt from the results topic (the
//! audit trail) by tailing it. It answers "was this command already processed?" across
//! restarts, and collects the per-entry outcomes a bulk command's final result sums up.

use std::{collections::HashMap, sync::RwLock};

use rdkafka::message::{BorrowedMessage, Message};

use crate::{
    kafka::{progress::ReadProgress, tail::TailSink},
    wire::{
        codec,
        pb::{item_outcome::Status, CommandResult, ItemOutcome},
    },
};

/// How the answer to a repeated command begins its items' detail (`Pipeline::duplicate` writes
/// it, the ledger recognises it): one constant, so the two cannot drift apart.
pub const DUPLICATE_DETAIL: &str = "duplicate: ";

/// The most items the ledger keeps in a finished command's answer (as in one result record).
pub const ANSWER_ITEMS_MAX: usize = 1000;

/// One command's progress as the results topic tells it.
#[derive(Debug, Clone, Default)]
pub struct CommandRecord {
    /// A bulk command was fanned out to this many entries.
    pub dispatched: Option<i64>,
    /// Per-entry outcomes seen so far (the first outcome of an entry wins).
    pub items: HashMap<String, ItemOutcome>,
    /// The final result (`done = true`), with the items of the command's progress records
    /// (when there are at most [`ANSWER_ITEMS_MAX`] in all).
    pub finished: Option<CommandResult>,
    pub action: i32,
    pub requested_by: String,
    /// The command's `page_cursor` (on each of its results), for its final result.
    pub page_cursor: String,
    /// A bulk command's entries as matched when its fan-out started (its start record).
    pub total: Option<i64>,
    /// Who asked to cancel the command (a cancel marker was read).
    pub cancel_requested: Option<String>,
    /// Entries the command never acted on because it was canceled (its fan-out record).
    pub not_dispatched: i64,
    /// The command's `requested_at` (ms), as its results echo it.
    pub requested_at: i64,
}

#[derive(Default)]
pub struct Ledger {
    commands: RwLock<HashMap<String, CommandRecord>>,
    /// Woken on every applied result: whoever waits for a command's answer.
    changed: tokio::sync::Notify,
    /// How far the ledger has read the results topic.
    pub progress: ReadProgress,
}

/// A bulk command whose every entry has an outcome: ready for its final result.
#[derive(Debug, Clone)]
pub struct Finishable {
    pub command_id: String,
    pub record: CommandRecord,
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// Records a result (read from the topic, or just committed by this instance). Taken by
    /// value: a progress record's items move into the ledger. A bulk restart's commit cloned
    /// each item here and then dropped the original (with the key's copy, ~10% of the
    /// `commands` thread at 27,000 entries/s).
    pub fn apply(&self, r: CommandResult) {
        self.record(r);
        self.changed.notify_waiters();
    }

    /// A future that completes at the next applied result (pin it and `enable()` it before
    /// looking at the ledger, so nothing applied in between is missed).
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    fn record(&self, mut r: CommandResult) {
        let mut all = self.commands.write().unwrap_or_else(|p| p.into_inner());
        // The id is copied once per command, not once per result read.
        if !all.contains_key(&r.command_id) {
            all.insert(r.command_id.clone(), CommandRecord::default());
        }
        let Some(rec) = all.get_mut(&r.command_id) else {
            return;
        };
        if r.canceled && !r.done {
            // A cancel marker (`http::jobs`): it says who asked, and nothing of the progress.
            if rec.cancel_requested.is_none() {
                rec.cancel_requested = Some(r.requested_by);
            }
            return;
        }
        if rec.requested_at == 0 {
            rec.requested_at = r.requested_at;
        }
        rec.action = r.action;
        if rec.requested_by.is_empty() {
            rec.requested_by = r.requested_by.clone();
        }
        if rec.page_cursor.is_empty() {
            rec.page_cursor = r.page_cursor.clone();
        }
        // The answer to a duplicate (`Pipeline::duplicate`: every item SKIPPED as
        // "duplicate: …"). Other SKIPPED items — a parked entry left alone — are a command's
        // own first outcome, which its waiter needs.
        let duplicate_answer = !r.items.is_empty()
            && r.items.iter().all(|i| {
                i.status == Status::Skipped as i32 && i.detail.starts_with(DUPLICATE_DETAIL)
            });
        if r.done && duplicate_answer {
            // The answer to a repeated delivery: it says nothing about the first one's progress.
        } else if r.done {
            if rec.finished.is_none() {
                // A final result carries only the items not reported before (each item is in
                // exactly one record of a command): the answer an HTTP action reads is this
                // record with the items of the command's progress records put back, sorted by
                // `dlqId`. Bounded like a record: a larger command is answered by its totals.
                let mut in_final = std::mem::take(&mut r.items);
                let final_ids: std::collections::HashSet<&str> =
                    in_final.iter().map(|i| i.dlq_id.as_str()).collect();
                let mut items: Vec<ItemOutcome> = std::mem::take(&mut rec.items)
                    .into_values()
                    .filter(|i| !final_ids.contains(i.dlq_id.as_str()))
                    .collect();
                drop(final_ids);
                items.append(&mut in_final);
                items.sort_by(|a, b| a.dlq_id.cmp(&b.dlq_id));
                if items.len() <= ANSWER_ITEMS_MAX {
                    r.items = items;
                }
                rec.finished = Some(r);
            }
            // The per-entry outcomes are in the answer now; keep memory small.
            rec.items.clear();
            rec.items.shrink_to_fit();
        } else if r.items.is_empty() && r.total > 0 {
            rec.total = Some(r.total);
        } else if r.items.is_empty() {
            rec.dispatched = Some(r.matched);
            rec.not_dispatched = r.not_dispatched;
        } else if rec.finished.is_none() {
            // The first outcome of an entry wins; one read back again changes nothing and
            // costs no copy.
            for item in r.items {
                if !rec.items.contains_key(&item.dlq_id) {
                    rec.items.insert(item.dlq_id.clone(), item);
                }
            }
        }
    }

    /// True once a cancel of the command was asked for (and read).
    pub fn cancel_requested(&self, command_id: &str) -> bool {
        let all = self.commands.read().unwrap_or_else(|p| p.into_inner());
        all.get(command_id)
            .is_some_and(|r| r.cancel_requested.is_some())
    }

    /// One command's record as the ledger has it (a job's progress).
    pub fn record_of(&self, command_id: &str) -> Option<CommandRecord> {
        let all = self.commands.read().unwrap_or_else(|p| p.into_inner());
        all.get(command_id).cloned()
    }

    /// The bulk commands (jobs) known, newest first, at most `limit`.
    pub fn jobs(&self, limit: usize) -> Vec<(String, CommandRecord)> {
        let all = self.commands.read().unwrap_or_else(|p| p.into_inner());
        // Sorted by reference first: only the records listed are cloned (a running job's
        // record holds every outcome so far).
        let mut jobs: Vec<(&String, &CommandRecord)> = all
            .iter()
            .filter(|(_, r)| r.total.is_some() || r.dispatched.is_some())
            .collect();
        jobs.sort_by(|a, b| (b.1.requested_at, b.0).cmp(&(a.1.requested_at, a.0)));
        jobs.into_iter()
            .take(limit)
            .map(|(id, r)| (id.clone(), r.clone()))
            .collect()
    }

    /// True when the command was finished, or (bulk) fully fanned out.
    pub fn is_processed(&self, command_id: &str) -> bool {
        let all = self.commands.read().unwrap_or_else(|p| p.into_inner());
        all.get(command_id)
            .is_some_and(|r| r.finished.is_some() || r.dispatched.is_some())
    }

    /// The command's answer: its final result with every item of the command, progress
    /// records' included (none when more than [`ANSWER_ITEMS_MAX`]).
    pub fn finished(&self, command_id: &str) -> Option<CommandResult> {
        let all = self.commands.read().unwrap_or_else(|p| p.into_inner());
        all.get(command_id).and_then(|r| r.finished.clone())
    }

    /// The outcome already recorded for `dlq_id` under `command_id`, if any.
    pub fn item(&self, command_id: &str, dlq_id: &str) -> Option<ItemOutcome> {
        let all = self.commands.read().unwrap_or_else(|p| p.into_inner());
        all.get(command_id)
            .and_then(|r| r.items.get(dlq_id).cloned())
    }

    /// The entries that already have an outcome under `command_id`.
    pub fn item_ids(&self, command_id: &str) -> std::collections::HashSet<String> {
        let all = self.commands.read().unwrap_or_else(|p| p.into_inner());
        all.get(command_id)
            .map(|r| r.items.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Bulk commands fully dispatched, with an outcome for every entry, not yet finished.
    pub fn finishable(&self) -> Vec<Finishable> {
        let all = self.commands.read().unwrap_or_else(|p| p.into_inner());
        all.iter()
            .filter(|(_, r)| {
                r.finished.is_none() && r.dispatched.is_some_and(|n| r.items.len() as i64 >= n)
            })
            .map(|(id, r)| Finishable {
                command_id: id.clone(),
                record: r.clone(),
            })
            .collect()
    }

    pub fn is_caught_up(&self) -> bool {
        self.progress.is_caught_up()
    }
}

/// Feeds the ledger from the results topic.
pub struct LedgerSink(pub std::sync::Arc<Ledger>);

impl TailSink for LedgerSink {
    fn record(&mut self, m: &BorrowedMessage<'_>) {
        let ct = codec::content_type_of(m.headers());
        match codec::decode::<CommandResult>(ct, m.payload()) {
            Ok(r) => self.0.apply(r),
            Err(e) => {
                tracing::warn!(partition = m.partition(), offset = m.offset(), error = %e, "undecodable command result; skipped")
            }
        }
    }

    fn position(&mut self, partition: i32, next_offset: i64) {
        self.0.progress.advance(partition, next_offset);
    }

    fn caught_up(&mut self) {
        self.0.progress.set_caught_up();
        tracing::info!("command ledger caught up with the results topic");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str) -> ItemOutcome {
        ItemOutcome {
            dlq_id: id.into(),
            status: Status::Ok as i32,
            ..Default::default()
        }
    }

    fn result(items: Vec<ItemOutcome>, matched: i64, done: bool) -> CommandResult {
        CommandResult {
            command_id: "c".into(),
            items,
            matched,
            done,
            ..Default::default()
        }
    }

    #[test]
    fn the_answer_of_a_command_holds_the_items_of_all_its_records_once() {
        let ledger = Ledger::new();
        ledger.apply(result(vec![item("b")], 0, false));
        ledger.apply(result(vec![item("a")], 0, false));
        ledger.apply(result(Vec::new(), 3, false));
        assert!(ledger.is_processed("c"));
        ledger.apply(result(vec![item("c")], 0, false));
        // The final record carries totals and only what was not reported before.
        let mut last = result(Vec::new(), 3, true);
        last.succeeded = 3;
        ledger.apply(last.clone());
        let answer = ledger.finished("c").expect("finished");
        let ids: Vec<&str> = answer.items.iter().map(|i| i.dlq_id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!((answer.matched, answer.succeeded), (3, 3));
        // Read back again (our own result, then the topic's copy): nothing changes.
        ledger.apply(result(vec![item("a")], 0, false));
        ledger.apply(last.clone());
        assert_eq!(ledger.finished("c").expect("finished").items.len(), 3);
    }

    #[test]
    fn a_one_record_command_is_answered_by_its_record() {
        let ledger = Ledger::new();
        ledger.apply(result(vec![item("x")], 1, true));
        assert_eq!(
            ledger.finished("c").expect("finished").items,
            vec![item("x")]
        );
    }
}
