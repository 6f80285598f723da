//! Results: the records of the results topic (progress and final), and what a command's end
//! counts. The results topic is the audit trail and, read back by the ledger, the memory of
//! which commands were processed.

use super::*;

/// Results carry at most this many items; bigger sets are reported in several records.
pub(super) const ITEMS_PER_RESULT: usize = 1000;

pub(super) fn outcome(dlq_id: &str, status: Status, detail: impl Into<String>) -> ItemOutcome {
    ItemOutcome {
        dlq_id: dlq_id.to_string(),
        status: status as i32,
        detail: detail.into(),
        ..Default::default()
    }
}

/// Counts a command's end once the open transaction commits.
pub(super) fn count_command(
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

impl Pipeline<'_> {
    pub(super) fn result(
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
            page_cursor: cmd.page_cursor.clone(),
            requested_at: cmd.requested_at,
            canceled: false,
            not_dispatched: 0,
            total: 0,
        }
    }

    pub(super) fn send_result(
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
    pub(super) fn send_final(
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
        self.processed_staged.insert(cmd.command_id.clone());
        self.send_result_record(r, t)
    }

    pub(super) fn send_result_record(
        &self,
        r: CommandResult,
        t: &mut TxnBatch,
    ) -> Result<(), CommandError> {
        t.send(OutRecord {
            topic: &self.w.cfg.topics.results,
            key: Some(r.command_id.as_bytes().into()),
            value: Some(codec::encode(&r, self.encoding)),
            headers: Some(self.content_type()),
        })?;
        // Read our own results back at once (the ledger applies each result idempotently).
        let ledger = self.w.ledger.clone();
        t.on_commit(move || ledger.apply(r));
        Ok(())
    }
}
