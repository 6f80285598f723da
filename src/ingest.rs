//! Ingest: failure events from the failures topic into the store, exactly once.
//!
//! A consumer group (cooperative-sticky) reads `FailureEnvelope`s through the one transactional
//! [`pipeline`]. Each record becomes, in one Kafka transaction with its consumed offset: a `DlqEntry` on the store topic (a failure), an
//! updated entry (a callback report), or a verbatim copy on the rejected topic (anything that
//! can't be decoded or validated). Transactions cover many records: they commit on size or age.
//! Any Kafka error aborts the open transaction and restarts the pipeline from the committed
//! offsets, so a record is never skipped and never stored twice.

use std::{
    collections::{HashSet, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use rdkafka::{
    error::KafkaError,
    message::{BorrowedMessage, Header, Message, OwnedHeaders},
};
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    events::{Event, FailureStored, NewSignature, RecordRejected, RejectReason, StatusClass},
    health::Worker,
    kafka::{
        pipeline, rejected,
        txn::{OutRecord, TxnBatch, TxnError, TxnLimits},
        watchdog::Stall,
        KafkaConn,
    },
    store::{EntryState, StoreView},
    wire::{
        codec::{self, Encoding},
        failure_ref::{entry_with_event, FailureRef},
        ids::dlq_id_for_event,
        pb::{
            failure_callback_info, failure_envelope::Kind, DlqEntry, FailureCallbackReport,
            FailureEnvelope, FailureEvent,
        },
        DecodeError,
    },
};

/// Longest `error_message` kept; longer ones are cut (it is for people, not machines).
const MAX_ERROR_MESSAGE: usize = 4096;
const MAX_ID_LEN: usize = 512;
const MAX_URL_LEN: usize = 4096;

/// Why an input record was rejected. `reason()` is the bounded label.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("record of {size} bytes exceeds the maximum of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("invalid failure event: {0}")]
    Invalid(String),
    #[error("callback report for unknown dlqId `{0}`")]
    UnknownDlqId(String),
}

impl Rejection {
    pub fn reject_reason(&self) -> RejectReason {
        match self {
            Rejection::Decode(e) => e.reject_reason(),
            Rejection::TooLarge { .. } => RejectReason::TooLarge,
            Rejection::Invalid(_) => RejectReason::Invalid,
            Rejection::UnknownDlqId(_) => RejectReason::UnknownDlqId,
        }
    }

    pub fn reason(&self) -> &'static str {
        self.reject_reason().as_str()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
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
}

/// The fields of a failure event whose presence and bounds ingest checks, however the event
/// was read (decoded, or borrowed in place by the fast path).
struct CheckedFields<'a> {
    event_id: &'a str,
    workflow_run_id: &'a str,
    workflow_url: &'a str,
    caller_ip: &'a str,
    failure_callback: &'a str,
    label_count: usize,
    longest_label: usize,
    callback_state: Option<i32>,
}

impl CheckedFields<'_> {
    fn check(&self) -> Result<(), Rejection> {
        let required = [
            ("eventId", self.event_id),
            ("workflowRunId", self.workflow_run_id),
            ("workflowUrl", self.workflow_url),
        ];
        for (name, value) in required {
            if value.trim().is_empty() {
                return Err(Rejection::Invalid(format!("{name} is required")));
            }
        }
        for (name, value, max) in [
            ("eventId", self.event_id, MAX_ID_LEN),
            ("workflowRunId", self.workflow_run_id, MAX_ID_LEN),
            ("workflowUrl", self.workflow_url, MAX_URL_LEN),
            ("callerIp", self.caller_ip, MAX_ID_LEN),
            ("failureCallback", self.failure_callback, MAX_URL_LEN),
        ] {
            if value.len() > max {
                return Err(Rejection::Invalid(format!(
                    "{name} is {} bytes, at most {max} allowed",
                    value.len()
                )));
            }
        }
        if self.label_count > 64 || self.longest_label > 256 {
            return Err(Rejection::Invalid(
                "at most 64 labels of at most 256 bytes each".into(),
            ));
        }
        if let Some(state) = self.callback_state {
            known_callback_state(state)?;
        }
        Ok(())
    }
}

/// Checks a failure event's required fields and bounds; trims what may be trimmed.
pub fn validate_failure(mut ev: FailureEvent) -> Result<FailureEvent, Rejection> {
    CheckedFields {
        event_id: &ev.event_id,
        workflow_run_id: &ev.workflow_run_id,
        workflow_url: &ev.workflow_url,
        caller_ip: &ev.caller_ip,
        failure_callback: &ev.failure_callback,
        label_count: ev.labels.len(),
        longest_label: ev.labels.iter().map(String::len).max().unwrap_or(0),
        callback_state: ev.failure_callback_info.as_ref().map(|i| i.state),
    }
    .check()?;
    if ev.error_message.len() > MAX_ERROR_MESSAGE {
        let mut cut = MAX_ERROR_MESSAGE;
        while !ev.error_message.is_char_boundary(cut) {
            cut -= 1;
        }
        ev.error_message.truncate(cut);
    }
    Ok(ev)
}

/// An enum value this version does not know is refused, not stored as a number no filter or
/// command can name.
fn known_callback_state(state: i32) -> Result<(), Rejection> {
    match failure_callback_info::State::try_from(state) {
        Ok(_) => Ok(()),
        Err(_) => Err(Rejection::Invalid(format!(
            "unknown failureCallbackInfo.state {state}"
        ))),
    }
}

/// The fast path's checks: a protobuf failure event read in place ([`FailureRef`]) that passes
/// them is stored as it came. `None` when the record is not one the fast path takes (see
/// [`FailureRef`]), or when it needs changing (an error message to cut): [`check_record`]
/// decodes it and decides.
fn check_in_place<'a>(
    content_type: Option<&[u8]>,
    value: Option<&'a [u8]>,
    max_record_bytes: usize,
) -> Option<Result<FailureRef<'a>, Rejection>> {
    let payload = value.filter(|v| v.len() <= max_record_bytes)?;
    if codec::detect(content_type, payload).ok()? != Encoding::Protobuf {
        return None;
    }
    let ev = FailureRef::in_envelope(payload)?;
    if ev.error_message.len() > MAX_ERROR_MESSAGE {
        return None;
    }
    let checked = CheckedFields {
        event_id: ev.event_id,
        workflow_run_id: ev.workflow_run_id,
        workflow_url: ev.workflow_url,
        caller_ip: ev.caller_ip,
        failure_callback: ev.failure_callback,
        label_count: ev.label_count,
        longest_label: ev.longest_label,
        callback_state: ev.callback_state,
    };
    Some(checked.check().map(|()| ev))
}

/// The checks on an input record that need no state: its size, its decoding, a failure's
/// fields and bounds ([`validate_failure`]), a callback report's `info`. Ingest runs them on
/// every record before looking at the store; `workflow-dlq failures send` runs them on every
/// line before producing it, so a line it accepts is one ingest accepts (up to the stateful
/// checks: duplicates, callback reports for entries not stored).
pub fn check_record(
    content_type: Option<&[u8]>,
    value: Option<&[u8]>,
    max_record_bytes: usize,
) -> Result<Kind, Rejection> {
    let size = value.map_or(0, <[u8]>::len);
    if size > max_record_bytes {
        return Err(Rejection::TooLarge {
            size,
            max: max_record_bytes,
        });
    }
    let envelope: FailureEnvelope = codec::decode(content_type, value)?;
    match envelope.kind {
        Some(Kind::Failure(ev)) => Ok(Kind::Failure(validate_failure(ev)?)),
        Some(Kind::CallbackReport(report)) => {
            let Some(info) = report.info.as_ref() else {
                return Err(Rejection::Invalid("callback report without `info`".into()));
            };
            known_callback_state(info.state)?;
            Ok(Kind::CallbackReport(report))
        }
        None => Err(Rejection::Invalid(
            "envelope has neither `failure` nor `callbackReport`".into(),
        )),
    }
}

/// A new entry for the store, encoded, with what ingest reports about it.
#[derive(Debug)]
pub struct NewEntry {
    pub dlq_id: String,
    /// The encoded `DlqEntry`: the store record's value.
    pub value: Vec<u8>,
    pub signature: String,
    pub failed_at: i64,
    pub response_status: i32,
    pub workflow_url: String,
}

/// What one input record turns into.
#[derive(Debug)]
pub enum Outcome {
    Store(NewEntry),
    /// A callback report for a stored entry: forwarded to the entry's owner on the command
    /// topic, which applies it in order with the commands on that entry (no lost update).
    ForwardReport(FailureCallbackReport),
    /// Already in the store (or already recovered from it): nothing to write.
    Duplicate,
    Reject(Rejection),
}

/// Decides what a record becomes, without side effects (the pure heart of ingest).
pub struct Decider<'a> {
    pub view: &'a StoreView,
    pub retention: Duration,
    pub max_record_bytes: usize,
    /// Ids this pipeline wrote that the view may not show yet.
    pub recent: &'a RecentWrites,
    /// How the store's entries are written.
    pub encoding: Encoding,
}

impl Decider<'_> {
    pub fn decide(
        &self,
        content_type: Option<&[u8]>,
        value: Option<&[u8]>,
        source: (&str, i32, i64),
        now_ms: i64,
    ) -> Outcome {
        // Most records: a protobuf failure, checked in place and stored as it came.
        if self.encoding == Encoding::Protobuf {
            match check_in_place(content_type, value, self.max_record_bytes) {
                Some(Ok(ev)) => return self.failure_in_place(&ev, source, now_ms),
                Some(Err(r)) => return Outcome::Reject(r),
                None => {}
            }
        }
        match check_record(content_type, value, self.max_record_bytes) {
            Ok(Kind::Failure(ev)) => self.failure(ev, source, now_ms),
            Ok(Kind::CallbackReport(report)) => self.callback_report(report),
            Err(r) => Outcome::Reject(r),
        }
    }

    /// Already stored (or recovered) under this id, by the view's account or this pipeline's.
    fn is_duplicate(&self, dlq_id: &str) -> bool {
        self.recent.contains(dlq_id) || self.view.state(dlq_id) != EntryState::Unknown
    }

    /// Every field of the entry but its event.
    fn entry_head(
        &self,
        dlq_id: String,
        signature: String,
        source: (&str, i32, i64),
        now_ms: i64,
    ) -> DlqEntry {
        let (topic, partition, offset) = source;
        DlqEntry {
            dlq_id,
            // Computed once here and stored: an entry keeps its group when the normaliser
            // changes, and a cold start reads 16 bytes instead of normalising a message.
            signature,
            event: None,
            created_at: now_ms,
            expires_at: now_ms.saturating_add(self.retention.as_millis() as i64),
            source_topic: topic.to_string(),
            source_partition: partition,
            source_offset: offset,
        }
    }

    fn failure_in_place(
        &self,
        ev: &FailureRef<'_>,
        source: (&str, i32, i64),
        now_ms: i64,
    ) -> Outcome {
        let dlq_id = dlq_id_for_event(ev.event_id);
        if self.is_duplicate(&dlq_id) {
            return Outcome::Duplicate;
        }
        let signature = crate::signature::signature(&crate::signature::Parts {
            workflow_url: ev.workflow_url,
            step_name: ev.step_name,
            step_type: ev.step_type,
            response_status: ev.response_status,
            error_message: ev.error_message,
        });
        let head = self.entry_head(dlq_id.clone(), signature.clone(), source, now_ms);
        Outcome::Store(NewEntry {
            dlq_id,
            value: entry_with_event(head, ev.raw),
            signature,
            failed_at: ev.failed_at,
            response_status: ev.response_status,
            workflow_url: ev.workflow_url.to_string(),
        })
    }

    fn failure(&self, ev: FailureEvent, source: (&str, i32, i64), now_ms: i64) -> Outcome {
        let dlq_id = dlq_id_for_event(&ev.event_id);
        if self.is_duplicate(&dlq_id) {
            return Outcome::Duplicate;
        }
        let signature = crate::signature::of_event(&ev);
        let (failed_at, response_status) = (ev.failed_at, ev.response_status);
        let workflow_url = ev.workflow_url.clone();
        let entry = DlqEntry {
            event: Some(ev),
            ..self.entry_head(dlq_id.clone(), signature.clone(), source, now_ms)
        };
        Outcome::Store(NewEntry {
            dlq_id,
            value: codec::encode(&entry, self.encoding),
            signature,
            failed_at,
            response_status,
            workflow_url,
        })
    }

    /// `report` has passed [`check_record`]; what is left is whether its entry exists.
    fn callback_report(&self, report: FailureCallbackReport) -> Outcome {
        if self.view.state(&report.dlq_id) == EntryState::Present
            || self.recent.contains(&report.dlq_id)
        {
            Outcome::ForwardReport(report)
        } else {
            Outcome::Reject(Rejection::UnknownDlqId(
                report.dlq_id.chars().take(MAX_ID_LEN).collect(),
            ))
        }
    }
}

/// Ids this pipeline wrote that the view may not show yet, oldest first: a second copy of a
/// failure, read before the view shows the first, is still found a duplicate.
#[derive(Default)]
pub struct RecentWrites {
    ids: hashbrown::HashSet<String>,
    order: VecDeque<(Instant, String)>,
}

/// How long a written id is remembered at most, should the view not show it (a stalled store
/// reader; `/readyz` says so).
const REMEMBER_FOR: Duration = Duration::from_secs(60);
/// Ids checked against the view under one read lock (a few hundred microseconds).
const FORGET_CHUNK: usize = 1024;

impl RecentWrites {
    pub fn contains(&self, dlq_id: &str) -> bool {
        self.ids.contains(dlq_id)
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn insert(&mut self, dlq_id: String, now: Instant) {
        if self.ids.insert(dlq_id.clone()) {
            self.order.push_back((now, dlq_id));
        }
    }

    /// Forgets, from the oldest, the ids the view now shows and those older than
    /// [`REMEMBER_FOR`]. The view applies the store topic in order, so what it shows is at the
    /// front; an id shown behind one not shown yet stays a little longer, which changes no
    /// answer. Each id is looked up in the view about once: the retain this replaces looked up
    /// every remembered id at every commit (12% of the ingest thread at 37,000 records/s,
    /// and read-lock contention with the view's writer).
    pub fn forget_shown(&mut self, view: &StoreView, now: Instant) {
        loop {
            let chunk = self
                .order
                .iter()
                .take(FORGET_CHUNK)
                .map(|(_, id)| id.as_str());
            let shown = view.known_prefix(chunk);
            for (_, id) in self.order.drain(..shown) {
                self.ids.remove(&id);
            }
            if shown < FORGET_CHUNK {
                break;
            }
        }
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < REMEMBER_FOR {
                break;
            }
            if let Some((_, id)) = self.order.pop_front() {
                self.ids.remove(&id);
            }
        }
    }
}

/// Whether `signature` names a kind of failure the DLQ does not hold: no entry of the view has
/// it, and this pipeline has not stored one since (`recent`, which remembers it). True once.
fn first_of_its_kind(view: &StoreView, recent: &mut HashSet<String>, signature: &str) -> bool {
    // `recent` first: most failures are of a kind just stored, answered without the view's lock.
    !recent.contains(signature)
        && !view.has_signature(signature)
        && recent.insert(signature.to_string())
}

/// The ingest worker: runs on its own thread, restarting its pipeline after any Kafka error.
pub struct Ingest {
    pub cfg: Arc<Config>,
    pub conn: KafkaConn,
    pub view: Arc<StoreView>,
}

impl Ingest {
    /// One run of the ingest pipeline (under [`crate::kafka::supervise`]).
    pub fn run_pipeline(
        &self,
        shutdown: &CancellationToken,
        worker: &Worker,
    ) -> Result<(), IngestError> {
        let cfg = &self.cfg;
        let spec = pipeline::Spec {
            conn: &self.conn,
            group: cfg.group_id.clone(),
            topic: &cfg.topics.failures,
            transactional_id: format!("{}-ingest-{}", cfg.group_id, cfg.instance_id),
            // Entries, callback reports forwarded to their owner, rejected records.
            outputs: vec![
                cfg.topics.store.clone(),
                cfg.topics.commands.clone(),
                cfg.topics.rejected.clone(),
            ],
            limits: TxnLimits::of(cfg),
        };
        let txn = pipeline::producer(&spec)?;
        let consumer = pipeline::consumer(&spec, &txn)?;
        let mut handler = IngestHandler {
            ingest: self,
            recent: RecentWrites::default(),
            recent_signatures: HashSet::new(),
            encoding: Encoding::from(cfg.output_encoding),
        };
        let result = pipeline::run(&spec, &txn, &consumer, &mut handler, shutdown, worker);
        pipeline::close(consumer);
        result
    }

    fn handle(
        &self,
        m: &BorrowedMessage<'_>,
        txn: &mut TxnBatch,
        recent: &mut RecentWrites,
        recent_signatures: &mut HashSet<String>,
        encoding: Encoding,
    ) -> Result<(), IngestError> {
        let cfg = &self.cfg;
        let content_type = codec::content_type_of(m.headers());
        let now = crate::now_ms();
        let decider = Decider {
            view: &self.view,
            retention: cfg.retention,
            max_record_bytes: cfg.max_record_bytes,
            recent,
            encoding,
        };
        let source = (m.topic(), m.partition(), m.offset());
        match decider.decide(content_type, m.payload(), source, now) {
            Outcome::Store(entry) => {
                let latency = Some(entry.failed_at)
                    .filter(|t| *t > 0)
                    .or_else(|| m.timestamp().to_millis())
                    .map(|t| ((now - t).max(0) as f64) / 1000.0);
                txn.send(OutRecord {
                    topic: &cfg.topics.store,
                    key: Some(entry.dlq_id.as_bytes().into()),
                    value: Some(entry.value),
                    headers: Some(OwnedHeaders::new().insert(Header {
                        key: codec::CONTENT_TYPE,
                        value: Some(encoding.content_type()),
                    })),
                })?;
                recent.insert(entry.dlq_id, Instant::now());
                // A kind of failure neither the view nor this pipeline's recent writes hold.
                // Two instances storing the first two of a new kind at once may both count
                // it: the alert is on any increase, so a double count changes nothing.
                let new_signature =
                    first_of_its_kind(&self.view, recent_signatures, &entry.signature).then(|| {
                        NewSignature {
                            status_class: StatusClass::of(entry.response_status),
                            signature: entry.signature,
                            workflow_url: entry.workflow_url,
                        }
                    });
                txn.on_commit(move || {
                    FailureStored {
                        latency_seconds: latency,
                    }
                    .emit();
                    if let Some(event) = new_signature {
                        event.emit();
                    }
                });
            }
            Outcome::ForwardReport(report) => {
                txn.send(OutRecord {
                    topic: &cfg.topics.commands,
                    key: Some(report.dlq_id.as_bytes().into()),
                    value: Some(codec::encode(&report, encoding)),
                    headers: Some(
                        OwnedHeaders::new()
                            .insert(Header {
                                key: codec::CONTENT_TYPE,
                                value: Some(encoding.content_type()),
                            })
                            .insert(Header {
                                key: crate::commands::headers::CALLBACK_REPORT,
                                value: Some("true"),
                            }),
                    ),
                })?;
            }
            Outcome::Duplicate => {
                tracing::debug!(
                    partition = m.partition(),
                    offset = m.offset(),
                    "duplicate failure event; already stored or recovered"
                );
            }
            Outcome::Reject(reason) => {
                let detail = reason.to_string();
                let record = rejected::record(
                    m,
                    reason.reason(),
                    &detail,
                    &cfg.topics.rejected,
                    cfg.max_record_bytes,
                );
                txn.send(record)?;
                let event = RecordRejected {
                    topic: m.topic().to_string(),
                    partition: m.partition(),
                    offset: m.offset(),
                    reason: reason.reject_reason(),
                    detail,
                };
                txn.on_commit(move || event.emit());
            }
        }
        txn.consumed(m.topic(), m.partition(), m.offset())?;
        Ok(())
    }
}

/// Ingest as a [`pipeline::Handler`]: each failure record is decided and staged.
struct IngestHandler<'a> {
    ingest: &'a Ingest,
    /// Ids this pipeline wrote that the view may not show yet.
    recent: RecentWrites,
    /// Signatures this pipeline stored that the view may not show yet (counted as new once).
    recent_signatures: HashSet<String>,
    encoding: Encoding,
}

impl pipeline::Handler for IngestHandler<'_> {
    type Error = IngestError;

    fn record(
        &mut self,
        _consumer: &pipeline::TxnConsumer,
        m: &BorrowedMessage<'_>,
        txn: &mut TxnBatch,
    ) -> Result<(), IngestError> {
        self.ingest.handle(
            m,
            txn,
            &mut self.recent,
            &mut self.recent_signatures,
            self.encoding,
        )
    }

    fn committed(&mut self) {
        // Once the view holds a signature it answers for it; until then (or if its entries
        // are gone again) this set does.
        if self.recent_signatures.len() > 1_000 {
            let view = &self.ingest.view;
            self.recent_signatures.retain(|s| !view.has_signature(s));
        }
        self.recent.forget_shown(&self.ingest.view, Instant::now());
    }

    fn revoke_commit_failed() -> IngestError {
        IngestError::RebalanceCommit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::pb::FailureCallbackInfo;
    use prost::Message;

    fn report_record(dlq_id: &str) -> Vec<u8> {
        FailureEnvelope {
            kind: Some(Kind::CallbackReport(FailureCallbackReport {
                dlq_id: dlq_id.into(),
                info: Some(FailureCallbackInfo::default()),
            })),
        }
        .encode_to_vec()
    }

    #[test]
    fn a_signature_is_new_once_and_not_when_the_view_holds_it() {
        let view = StoreView::new();
        let mut recent = HashSet::new();
        let ev = FailureEvent {
            event_id: "e1".into(),
            workflow_url: "https://w".into(),
            error_message: "boom 1".into(),
            ..Default::default()
        };
        let sig = crate::signature::of_event(&ev);
        assert!(first_of_its_kind(&view, &mut recent, &sig));
        assert!(!first_of_its_kind(&view, &mut recent, &sig), "counted once");
        view.upsert(
            0,
            0,
            &DlqEntry {
                dlq_id: "d1".into(),
                signature: sig.clone(),
                event: Some(ev),
                ..Default::default()
            },
        );
        // Another pipeline (or a restart) with nothing remembered: the view answers.
        assert!(!first_of_its_kind(&view, &mut HashSet::new(), &sig));
        // Once no entry holds it, a failure of that kind is new again.
        view.remove("d1");
        assert!(first_of_its_kind(&view, &mut HashSet::new(), &sig));
    }

    /// Ingest only ever creates entries; every change to an existing one goes through its
    /// owner on the command topic, so reports and commands on an entry are applied in order.
    #[test]
    fn a_callback_report_is_forwarded_to_the_entry_owner_never_written_by_ingest() {
        let view = StoreView::new();
        view.upsert(
            0,
            0,
            &DlqEntry {
                dlq_id: "dlq-x".into(),
                event: Some(FailureEvent::default()),
                ..Default::default()
            },
        );
        view.remove("dlq-gone");
        let recent = RecentWrites::default();
        let d = decider(&view, &recent);
        let decide = |id: &str| d.decide(None, Some(&report_record(id)), ("t", 0, 0), 1);
        assert!(matches!(decide("dlq-x"), Outcome::ForwardReport(r) if r.dlq_id == "dlq-x"));
        for unknown in ["dlq-gone", "dlq-never"] {
            assert!(matches!(
                decide(unknown),
                Outcome::Reject(Rejection::UnknownDlqId(_))
            ));
        }
    }

    /// Written ids are forgotten, oldest first, once the view shows them (one not shown yet
    /// keeps those behind it), or once they are older than `REMEMBER_FOR`; until then each
    /// is a duplicate.
    #[test]
    fn written_ids_are_remembered_until_the_view_shows_them() {
        let view = StoreView::new();
        let store = |id: &str| {
            let entry = DlqEntry {
                dlq_id: id.into(),
                ..Default::default()
            };
            view.upsert(0, 0, &entry);
        };
        let t0 = Instant::now();
        let mut recent = RecentWrites::default();
        // More than one chunk of the view's lookups.
        let ids: Vec<String> = (0..FORGET_CHUNK + 10).map(|i| format!("w{i}")).collect();
        for id in &ids {
            recent.insert(id.clone(), t0);
        }
        recent.insert("w0".into(), t0);
        assert_eq!(recent.len(), ids.len(), "an id is remembered once");
        let d = decider(&view, &recent);
        assert!(d.is_duplicate("w5"), "remembered before the view shows it");
        assert!(!d.is_duplicate("never-written"));

        // The view shows all but w3: w0..w2 are forgotten, w3 holds the rest.
        for id in ids.iter().filter(|id| *id != "w3") {
            store(id);
        }
        recent.forget_shown(&view, t0);
        assert_eq!(recent.len(), ids.len() - 3);
        assert!(!recent.contains("w2") && recent.contains("w3") && recent.contains("w4"));
        assert!(
            decider(&view, &recent).is_duplicate("w3"),
            "still remembered"
        );

        store("w3");
        recent.forget_shown(&view, t0);
        assert!(recent.is_empty(), "all shown: nothing left to remember");

        // Never shown: forgotten once older than REMEMBER_FOR, not before.
        recent.insert("lost".into(), t0);
        recent.forget_shown(&view, t0 + REMEMBER_FOR - Duration::from_millis(1));
        assert!(recent.contains("lost"));
        recent.forget_shown(&view, t0 + REMEMBER_FOR);
        assert!(recent.is_empty());
    }

    /// A decider with a minute's retention and a 1 MiB record limit, writing protobuf.
    fn decider<'a>(view: &'a StoreView, recent: &'a RecentWrites) -> Decider<'a> {
        Decider {
            view,
            retention: Duration::from_secs(60),
            max_record_bytes: 1 << 20,
            recent,
            encoding: Encoding::Protobuf,
        }
    }

    fn failure_record(ev: FailureEvent) -> Vec<u8> {
        FailureEnvelope {
            kind: Some(Kind::Failure(ev)),
        }
        .encode_to_vec()
    }

    /// The fast path (checked in place, stored as it came) and the decoding path write the
    /// same entry byte for byte, and refuse the same records for the same reasons.
    #[test]
    fn the_fast_path_stores_and_refuses_exactly_what_decoding_does() {
        let view = StoreView::new();
        let recent = RecentWrites::default();
        let d = decider(&view, &recent);
        let valid = FailureEvent {
            event_id: "e-1".into(),
            workflow_run_id: "wfr_1".into(),
            workflow_url: "https://w.example.com/a?b=1".into(),
            labels: vec!["x".into()],
            failed_step: Some(crate::wire::pb::Step {
                step_name: "charge".into(),
                step_type: "Run".into(),
                ..Default::default()
            }),
            response_status: 502,
            error_message: "timeout after 30s on order 42".into(),
            failed_at: 123,
            failure_callback_info: Some(FailureCallbackInfo {
                state: 3,
                ..Default::default()
            }),
            ..Default::default()
        };
        let source = ("failures", 1, 9);
        let slow = |ev: FailureEvent| match check_record(None, Some(&failure_record(ev)), 1 << 20) {
            Ok(Kind::Failure(ev)) => d.failure(ev, source, 1_000),
            Ok(_) => panic!("not a failure"),
            Err(r) => Outcome::Reject(r),
        };
        let fast = |ev: FailureEvent| {
            let raw = failure_record(ev);
            assert!(
                check_in_place(None, Some(&raw), 1 << 20).is_some(),
                "on the fast path"
            );
            d.decide(None, Some(&raw), source, 1_000)
        };
        let (Outcome::Store(a), Outcome::Store(b)) = (fast(valid.clone()), slow(valid.clone()))
        else {
            panic!("both store a valid failure");
        };
        assert_eq!(a.value, b.value);
        assert_eq!(
            (
                &a.dlq_id,
                &a.signature,
                a.failed_at,
                a.response_status,
                &a.workflow_url
            ),
            (
                &b.dlq_id,
                &b.signature,
                b.failed_at,
                b.response_status,
                &b.workflow_url
            )
        );
        assert_eq!(a.signature, crate::signature::of_event(&valid));
        let stored = DlqEntry::decode(&a.value[..]).expect("decodes");
        assert_eq!(stored.event.as_ref(), Some(&valid));
        assert_eq!(
            (stored.created_at, stored.source_offset),
            (1_000, 9),
            "{stored:?}"
        );

        let invalid = [
            FailureEvent {
                event_id: " ".into(),
                ..valid.clone()
            },
            FailureEvent {
                caller_ip: "x".repeat(MAX_ID_LEN + 1),
                ..valid.clone()
            },
            FailureEvent {
                labels: vec!["l".into(); 65],
                ..valid.clone()
            },
            FailureEvent {
                failure_callback_info: Some(FailureCallbackInfo {
                    state: 99,
                    ..Default::default()
                }),
                ..valid.clone()
            },
        ];
        for ev in invalid {
            let (Outcome::Reject(a), Outcome::Reject(b)) = (fast(ev.clone()), slow(ev)) else {
                panic!("both refuse");
            };
            assert_eq!(a.to_string(), b.to_string());
        }

        // An error message to cut goes the decoding way, and is cut.
        let long = FailureEvent {
            error_message: "é".repeat(MAX_ERROR_MESSAGE),
            ..valid
        };
        let raw = failure_record(long);
        assert!(check_in_place(None, Some(&raw), 1 << 20).is_none());
        let Outcome::Store(cut) = d.decide(None, Some(&raw), source, 1_000) else {
            panic!("stored");
        };
        let stored = DlqEntry::decode(&cut.value[..]).expect("decodes");
        assert_eq!(
            stored.event.map(|e| e.error_message.len()),
            Some(MAX_ERROR_MESSAGE)
        );
        // Bytes that do not decode are refused with prost's reason.
        let mut broken = failure_record(FailureEvent {
            event_id: "é".into(),
            ..Default::default()
        });
        let last = broken.len() - 1;
        broken[last] = 0xff;
        assert!(matches!(
            d.decide(None, Some(&broken), source, 1_000),
            Outcome::Reject(Rejection::Decode(_))
        ));
    }
}
