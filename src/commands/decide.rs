//! What an action does to one entry, decided without side effects (the command path's
//! counterpart of ingest's `Decider`): the caller reads the entry as this instance knows it and
//! the command's earlier outcome for it, and then carries the decision out in its transaction.

use crate::{
    republish::kind_of,
    wire::pb::{
        failure_callback_info::State as CbState, item_outcome::Status, recovery_command::Action,
        workflow_execution::Kind, DlqEntry, ItemOutcome,
    },
};

/// What this instance wrote to the store and the view may not show yet.
#[derive(Debug, Clone, PartialEq)]
pub enum Written {
    Deleted,
    Updated(Box<DlqEntry>),
}

/// The decision for one entry.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Nothing to act on (gone, expired, or never there); the detail says which.
    NotFound(String),
    /// This command acted on the entry before (it was re-read after a restart): that first
    /// outcome, reported as skipped.
    AlreadyDone(ItemOutcome),
    /// The entry is there but the action does not apply to it.
    Rejected(String),
    /// Republish a run of `republish` kind built from `entry` (none for a delete), and write
    /// the entry's new state.
    Act {
        entry: Box<DlqEntry>,
        republish: Option<Kind>,
        write: Written,
    },
}

fn callback_state(entry: &DlqEntry) -> i32 {
    entry
        .event
        .as_ref()
        .and_then(|e| e.failure_callback_info.as_ref())
        .map_or(0, |i| i.state)
}

/// Decides `action` on `dlq_id`. `entry` is the entry as this instance knows it (its own
/// writes first); `first` is this command's earlier outcome for it, if the ledger has one.
pub fn decide(
    action: Action,
    dlq_id: &str,
    entry: Option<DlqEntry>,
    first: Option<ItemOutcome>,
    now_ms: i64,
) -> Decision {
    let Some(entry) = entry else {
        return match first {
            Some(first) => Decision::AlreadyDone(ItemOutcome {
                status: Status::Skipped as i32,
                detail: "already processed by this command".into(),
                ..first
            }),
            None => Decision::NotFound(format!("DLQ entry `{dlq_id}` was not found")),
        };
    };
    if entry.expires_at > 0 && entry.expires_at <= now_ms {
        // Expired: the sweeper tombstones it; acting now could resurrect it.
        return Decision::NotFound(format!("DLQ entry `{dlq_id}` has expired"));
    }
    match action {
        // Validation refuses it; never let it fall through to a tombstone.
        Action::Unspecified => Decision::Rejected("unspecified action".into()),
        Action::RetryFailureCallback => {
            let callback = entry
                .event
                .as_ref()
                .map_or("", |e| e.failure_callback.as_str());
            let state = callback_state(&entry);
            if callback.is_empty() {
                return Decision::Rejected("the entry has no failure callback".into());
            }
            if state != CbState::CallbackFail as i32 {
                let name = CbState::try_from(state).map_or("UNKNOWN", |s| s.as_str_name());
                return Decision::Rejected(format!(
                    "the failure callback is in state {name}, not CALLBACK_FAIL"
                ));
            }
            // The failure callback is re-run; the entry stays, marked in progress.
            let mut marked = entry.clone();
            if let Some(info) = marked
                .event
                .as_mut()
                .and_then(|e| e.failure_callback_info.as_mut())
            {
                info.state = CbState::CallbackInprogress as i32;
            }
            Decision::Act {
                entry: Box::new(entry),
                republish: kind_of(action),
                write: Written::Updated(Box::new(marked)),
            }
        }
        Action::CancelFailureCallback => {
            let state = callback_state(&entry);
            if state != CbState::CallbackInprogress as i32 {
                let name = CbState::try_from(state).map_or("UNKNOWN", |s| s.as_str_name());
                return Decision::Rejected(format!(
                    "no failure callback in progress to cancel (state {name})"
                ));
            }
            // Marked canceled; the entry stays, and a late report of the callback's end is
            // ignored (ingest), so the cancel is what the DLQ shows.
            let mut marked = entry.clone();
            if let Some(info) = marked
                .event
                .as_mut()
                .and_then(|e| e.failure_callback_info.as_mut())
            {
                info.state = CbState::CallbackCanceled as i32;
            }
            Decision::Act {
                entry: Box::new(entry),
                republish: None,
                write: Written::Updated(Box::new(marked)),
            }
        }
        Action::Restart | Action::Resume | Action::Delete => Decision::Act {
            entry: Box::new(entry),
            republish: kind_of(action),
            write: Written::Deleted,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::pb::{FailureCallbackInfo, FailureEvent};

    const NOW: i64 = 1_000_000;

    fn entry(expires_at: i64, callback: &str, state: Option<CbState>) -> DlqEntry {
        DlqEntry {
            dlq_id: "dlq-1".into(),
            expires_at,
            event: Some(FailureEvent {
                failure_callback: callback.into(),
                failure_callback_info: state.map(|s| FailureCallbackInfo {
                    state: s as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn restart_and_resume_republish_and_delete_the_entry_delete_only_deletes() {
        for (action, kind) in [
            (Action::Restart, Some(Kind::Restart)),
            (Action::Resume, Some(Kind::Resume)),
            (Action::Delete, None),
        ] {
            let e = entry(NOW + 1, "", None);
            let d = decide(action, "dlq-1", Some(e.clone()), None, NOW);
            assert_eq!(
                d,
                Decision::Act {
                    entry: Box::new(e),
                    republish: kind,
                    write: Written::Deleted
                },
                "{action:?}"
            );
        }
    }

    #[test]
    fn a_missing_entry_is_not_found_unless_this_command_already_acted_on_it() {
        let d = decide(Action::Restart, "dlq-1", None, None, NOW);
        assert!(matches!(d, Decision::NotFound(s) if s.contains("was not found")));

        let first = ItemOutcome {
            dlq_id: "dlq-1".into(),
            status: Status::Ok as i32,
            workflow_run_id: "wfr-first".into(),
            ..Default::default()
        };
        let Decision::AlreadyDone(item) = decide(Action::Restart, "dlq-1", None, Some(first), NOW)
        else {
            panic!("a re-read command reports its first outcome");
        };
        assert_eq!(item.status, Status::Skipped as i32);
        assert_eq!(item.workflow_run_id, "wfr-first");
    }

    #[test]
    fn an_expired_entry_is_never_acted_on() {
        for expires_at in [NOW, NOW - 1] {
            let d = decide(
                Action::Delete,
                "dlq-1",
                Some(entry(expires_at, "", None)),
                None,
                NOW,
            );
            assert!(matches!(d, Decision::NotFound(s) if s.contains("expired")));
        }
        // 0 means it never expires.
        let d = decide(Action::Delete, "dlq-1", Some(entry(0, "", None)), None, NOW);
        assert!(matches!(d, Decision::Act { .. }));
    }

    #[test]
    fn an_unspecified_action_is_rejected_never_a_tombstone() {
        let d = decide(
            Action::Unspecified,
            "dlq-1",
            Some(entry(0, "", None)),
            None,
            NOW,
        );
        assert!(matches!(d, Decision::Rejected(_)));
    }

    #[test]
    fn a_failure_callback_is_retried_only_when_it_failed_and_the_entry_stays_marked() {
        let no_callback = decide(
            Action::RetryFailureCallback,
            "dlq-1",
            Some(entry(0, "", Some(CbState::CallbackFail))),
            None,
            NOW,
        );
        assert!(matches!(no_callback, Decision::Rejected(s) if s.contains("no failure callback")));

        let in_progress = decide(
            Action::RetryFailureCallback,
            "dlq-1",
            Some(entry(0, "https://cb", Some(CbState::CallbackInprogress))),
            None,
            NOW,
        );
        assert!(matches!(in_progress, Decision::Rejected(s) if s.contains("CALLBACK_INPROGRESS")));

        let failed = entry(0, "https://cb", Some(CbState::CallbackFail));
        let Decision::Act {
            entry: acted,
            republish,
            write: Written::Updated(marked),
        } = decide(
            Action::RetryFailureCallback,
            "dlq-1",
            Some(failed.clone()),
            None,
            NOW,
        )
        else {
            panic!("a failed callback is retried and the entry kept");
        };
        assert_eq!(
            *acted, failed,
            "the run is built from the entry as it failed"
        );
        assert_eq!(republish, Some(Kind::FailureCallback));
        let state = marked
            .event
            .and_then(|e| e.failure_callback_info)
            .map(|i| i.state);
        assert_eq!(state, Some(CbState::CallbackInprogress as i32));
    }
}
