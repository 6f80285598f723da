//! Outcome events: one type per outcome that logs and counts together (the pattern of Vector's
//! `internal_events`), so a log line and its counter can never disagree.
//!
//! Every label value is a variant of a [`labels!`] enum whose `LABELS` list is what the metrics
//! catalogue ([`crate::metrics::CATALOGUE`]) documents and pre-creates: a label the catalogue
//! does not list cannot be emitted, because no variant spells it.

use metrics::{counter, histogram};

use crate::metrics::{
    COMMANDS, COMMAND_LATENCY, EXPIRED, INGESTED, INGEST_LATENCY, ITEMS, NEW_SIGNATURES, REJECTED,
    REPUBLISHED, STORE_INTEGRITY_ERRORS, TRANSACTIONS, WORKER_RESTARTS,
};

/// A closed set of label values: `as_str` is the label, `LABELS` every one of them in order.
macro_rules! labels {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $label:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub const LABELS: &'static [&'static str] = &[$($label),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $label),+
                }
            }
        }
    };
}

labels!(
    /// How a Kafka transaction ended.
    TxnOutcome {
        Committed => "committed",
        Aborted => "aborted",
        AbortFailed => "abort_failed",
    }
);

labels!(
    /// The worker threads health watches.
    WorkerKind {
        Ingest => "ingest",
        Commands => "commands",
        StoreReader => "store-reader",
        CommandLedger => "command-ledger",
    }
);

labels!(
    /// What the supervisor did after a worker failed.
    WorkerOutcome {
        Restarted => "restarted",
        GivenUp => "given_up",
        Stalled => "stalled",
    }
);

labels!(
    /// Why an input record went to the rejected topic (both input topics).
    RejectReason {
        Empty => "empty",
        ContentType => "content_type",
        Protobuf => "protobuf",
        Json => "json",
        TooLarge => "too_large",
        TooLong => "too_long",
        Invalid => "invalid",
        UnknownDlqId => "unknown_dlq_id",
    }
);

labels!(
    /// The action of a command, as counted (`unknown`: the command could not be read).
    CommandAction {
        Restart => "restart",
        Resume => "resume",
        RetryFailureCallback => "retry_failure_callback",
        CancelFailureCallback => "cancel_failure_callback",
        Delete => "delete",
        Unspecified => "unspecified",
        Unknown => "unknown",
    }
);

labels!(
    /// What a command selected.
    CommandSelector {
        Id => "id",
        Ids => "ids",
        Filter => "filter",
        All => "all",
        Bulk => "bulk",
        Invalid => "invalid",
        Unknown => "unknown",
    }
);

labels!(
    /// How a command ended (or, for a bulk command, that it was fanned out).
    CommandOutcome {
        Ok => "ok",
        Failed => "failed",
        Rejected => "rejected",
        Undecodable => "undecodable",
        Duplicate => "duplicate",
        DryRun => "dry_run",
        Dispatched => "dispatched",
    }
);

impl CommandOutcome {
    /// Outcomes that mean a command did not do what was asked (alerted on).
    pub const FAILURES: &'static [&'static str] = &["failed", "rejected", "undecodable"];
}

labels!(
    /// The action taken on one entry.
    ItemAction {
        Restart => "restart",
        Resume => "resume",
        RetryFailureCallback => "retry_failure_callback",
        CancelFailureCallback => "cancel_failure_callback",
        Delete => "delete",
    }
);

labels!(
    /// The outcome for one entry.
    ItemStatus {
        Ok => "ok",
        NotFound => "not_found",
        Rejected => "rejected",
        Skipped => "skipped",
    }
);

labels!(
    /// What kind of run was republished to the executions topic.
    RepublishKind {
        Restart => "restart",
        Resume => "resume",
        FailureCallback => "failure_callback",
    }
);

labels!(
    /// The class of a failure's response status: a bounded stand-in for the signature, which
    /// is unbounded and so never a label.
    StatusClass {
        Client => "4xx",
        Server => "5xx",
        Other => "other",
    }
);

impl StatusClass {
    pub fn of(status: i32) -> StatusClass {
        match status {
            400..=499 => StatusClass::Client,
            500..=599 => StatusClass::Server,
            _ => StatusClass::Other,
        }
    }
}

/// Something that happened, logged and counted in one place.
pub trait Event {
    fn emit(self);
}

/// A Kafka transaction committed or was aborted.
pub struct TransactionEnded<'a> {
    pub outcome: TxnOutcome,
    /// Why an abort failed.
    pub error: Option<&'a dyn std::fmt::Display>,
}

impl Event for TransactionEnded<'_> {
    fn emit(self) {
        match (self.outcome, self.error) {
            (TxnOutcome::AbortFailed, Some(e)) => {
                tracing::error!(error = %e, "aborting a transaction failed")
            }
            (outcome, _) => tracing::trace!(outcome = outcome.as_str(), "transaction ended"),
        }
        counter!(TRANSACTIONS, "outcome" => self.outcome.as_str()).increment(1);
    }
}

/// A worker's pipeline failed; it was restarted, or given up.
pub struct WorkerFailed<'a> {
    pub worker: WorkerKind,
    pub outcome: WorkerOutcome,
    pub error: &'a str,
}

impl Event for WorkerFailed<'_> {
    fn emit(self) {
        match self.outcome {
            WorkerOutcome::Restarted => tracing::error!(
                pipeline = self.worker.as_str(),
                error = self.error,
                "pipeline failed; restarting from committed offsets"
            ),
            WorkerOutcome::GivenUp => tracing::error!(
                pipeline = self.worker.as_str(),
                why = self.error,
                "worker given up; the service will exit"
            ),
            WorkerOutcome::Stalled => tracing::error!(
                pipeline = self.worker.as_str(),
                why = self.error,
                "pipeline stalled: records wait and it reads nothing; not ready"
            ),
        }
        counter!(
            WORKER_RESTARTS,
            "worker" => self.worker.as_str(),
            "outcome" => self.outcome.as_str()
        )
        .increment(1);
    }
}

/// The progress watchdog found a pipeline reading nothing while records wait for it (once per
/// stall; counted as a worker outcome `stalled`).
pub struct PipelineStalled<'a> {
    pub worker: WorkerKind,
    pub stall: &'a crate::kafka::watchdog::Stall,
}

impl Event for PipelineStalled<'_> {
    fn emit(self) {
        WorkerFailed {
            worker: self.worker,
            outcome: WorkerOutcome::Stalled,
            error: &self.stall.to_string(),
        }
        .emit();
    }
}

/// An input record was copied to the rejected topic (emitted once that is committed).
pub struct RecordRejected {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub reason: RejectReason,
    pub detail: String,
}

impl Event for RecordRejected {
    fn emit(self) {
        tracing::warn!(
            topic = self.topic,
            partition = self.partition,
            offset = self.offset,
            reason = self.reason.as_str(),
            detail = self.detail,
            "input record rejected"
        );
        counter!(REJECTED, "topic" => self.topic, "reason" => self.reason.as_str()).increment(1);
    }
}

/// A failure event was stored in the DLQ (emitted once committed).
pub struct FailureStored {
    /// From the failure's time to now, when known.
    pub latency_seconds: Option<f64>,
}

impl Event for FailureStored {
    fn emit(self) {
        counter!(INGESTED).increment(1);
        if let Some(l) = self.latency_seconds {
            histogram!(INGEST_LATENCY).record(l);
        }
    }
}

/// A failure of a kind the DLQ did not hold was stored: a new signature (a new group).
pub struct NewSignature {
    pub signature: String,
    pub status_class: StatusClass,
    pub workflow_url: String,
}

impl Event for NewSignature {
    fn emit(self) {
        tracing::warn!(
            signature = %self.signature,
            workflow_url = %self.workflow_url,
            status_class = self.status_class.as_str(),
            "a new kind of failure entered the DLQ"
        );
        counter!(NEW_SIGNATURES, "status_class" => self.status_class.as_str()).increment(1);
    }
}

/// A command ended (or a bulk command was fanned out), once committed.
pub struct CommandEnded<'a> {
    pub command_id: &'a str,
    pub action: CommandAction,
    pub selector: CommandSelector,
    pub outcome: CommandOutcome,
}

impl Event for CommandEnded<'_> {
    fn emit(self) {
        let (action, selector, outcome) = (
            self.action.as_str(),
            self.selector.as_str(),
            self.outcome.as_str(),
        );
        if CommandOutcome::FAILURES.contains(&outcome) {
            tracing::warn!(
                command_id = self.command_id,
                action,
                selector,
                outcome,
                "command ended"
            );
        } else {
            tracing::debug!(
                command_id = self.command_id,
                action,
                selector,
                outcome,
                "command ended"
            );
        }
        counter!(COMMANDS, "action" => action, "selector" => selector, "outcome" => outcome)
            .increment(1);
    }
}

/// A command's final result was committed `seconds` after it was requested.
pub struct CommandAnswered {
    pub seconds: f64,
}

impl Event for CommandAnswered {
    fn emit(self) {
        histogram!(COMMAND_LATENCY).record(self.seconds);
    }
}

/// Actions on `count` entries were committed with this status.
pub struct ItemActed {
    pub action: ItemAction,
    pub status: ItemStatus,
    pub count: u64,
}

impl Event for ItemActed {
    fn emit(self) {
        counter!(ITEMS, "action" => self.action.as_str(), "status" => self.status.as_str())
            .increment(self.count);
    }
}

/// `count` runs were republished to the executions topic (committed).
pub struct RunRepublished {
    pub kind: RepublishKind,
    pub count: u64,
}

impl Event for RunRepublished {
    fn emit(self) {
        counter!(REPUBLISHED, "kind" => self.kind.as_str()).increment(self.count);
    }
}

/// What a transaction counts per entry and emits once at its commit, added up by kind
/// ([`crate::kafka::txn::TxnBatch::count_on_commit`]). A bulk restart had emitted two events
/// per entry, each a boxed effect and a labelled counter's lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerEntry {
    Acted(ItemAction, ItemStatus),
    Republished(RepublishKind),
}

impl PerEntry {
    /// Emits `count` of these as their event.
    pub fn emit(self, count: u64) {
        match self {
            PerEntry::Acted(action, status) => ItemActed {
                action,
                status,
                count,
            }
            .emit(),
            PerEntry::Republished(kind) => RunRepublished { kind, count }.emit(),
        }
    }
}

/// Expired entries were tombstoned.
pub struct EntriesExpired {
    pub count: u64,
}

impl Event for EntriesExpired {
    fn emit(self) {
        tracing::info!(count = self.count, "expired entries tombstoned");
        counter!(EXPIRED).increment(self.count);
    }
}

/// The store topic broke a guarantee (retention set, records deleted, a bad record).
pub struct StoreIntegrityBreach<'a> {
    pub what: &'a str,
}

impl Event for StoreIntegrityBreach<'_> {
    fn emit(self) {
        tracing::error!(what = self.what, "store topic integrity breach");
        counter!(STORE_INTEGRITY_ERRORS).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_enum_lists_each_variant_once_and_in_order() {
        fn check<T: Copy>(all: &[T], labels: &[&str], as_str: impl Fn(T) -> &'static str) {
            let from_variants: Vec<&str> = all.iter().map(|v| as_str(*v)).collect();
            assert_eq!(from_variants, labels);
            let mut unique = from_variants.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), labels.len(), "duplicate label in {labels:?}");
        }
        check(TxnOutcome::ALL, TxnOutcome::LABELS, TxnOutcome::as_str);
        check(WorkerKind::ALL, WorkerKind::LABELS, WorkerKind::as_str);
        check(
            RejectReason::ALL,
            RejectReason::LABELS,
            RejectReason::as_str,
        );
        check(
            CommandAction::ALL,
            CommandAction::LABELS,
            CommandAction::as_str,
        );
        check(
            CommandSelector::ALL,
            CommandSelector::LABELS,
            CommandSelector::as_str,
        );
        check(
            CommandOutcome::ALL,
            CommandOutcome::LABELS,
            CommandOutcome::as_str,
        );
        check(ItemAction::ALL, ItemAction::LABELS, ItemAction::as_str);
        check(ItemStatus::ALL, ItemStatus::LABELS, ItemStatus::as_str);
        check(
            RepublishKind::ALL,
            RepublishKind::LABELS,
            RepublishKind::as_str,
        );
        for f in CommandOutcome::FAILURES {
            assert!(CommandOutcome::LABELS.contains(f), "{f}");
        }
    }
}
