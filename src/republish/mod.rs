//! Republishing: the `WorkflowExecution` a recovery action sends to the executions topic.

pub mod in_place;

use std::mem::take;

use crate::wire::pb::{
    recovery_command::Action, workflow_execution::Kind, DlqEntry, FailureEvent, Overrides,
    WorkflowExecution,
};

/// The earlier entries of a failed run, oldest first: the chain the platform carried into the
/// failure event (`lineage`), ending with the entry it was redriven from. A platform that sets
/// only `redriven_from_dlq_id` gives a chain of one; the chain is never looked up in the store,
/// where earlier entries are gone (recovered entries are tombstoned).
pub fn lineage(ev: &FailureEvent) -> Vec<String> {
    let mut chain = ev.lineage.clone();
    let from = ev.redriven_from_dlq_id.trim();
    if !from.is_empty() && chain.last().map(String::as_str) != Some(from) {
        chain.push(from.to_string());
    }
    chain
}

/// The execution kind an action republishes, if it republishes at all.
pub fn kind_of(action: Action) -> Option<Kind> {
    match action {
        Action::Restart => Some(Kind::Restart),
        Action::Resume => Some(Kind::Resume),
        Action::RetryFailureCallback => Some(Kind::FailureCallback),
        Action::Delete | Action::CancelFailureCallback | Action::Unspecified => None,
    }
}

/// Builds the new run for `entry`: RESTART from the beginning (no steps), RESUME with the
/// completed steps and their outputs, FAILURE_CALLBACK with the failure context. Overrides
/// replace what they set; everything else is the original run's. Takes the entry: its fields
/// move into the run (a bulk restart built each run from a copy of a copy of the event, and
/// the allocator was nearly half of the command thread).
pub fn execution(
    entry: DlqEntry,
    kind: Kind,
    overrides: Option<&Overrides>,
    new_run_id: String,
    created_at: i64,
    command_id: &str,
) -> WorkflowExecution {
    let DlqEntry { dlq_id, event, .. } = entry;
    let mut ev = event.unwrap_or_default();
    let o = overrides.cloned().unwrap_or_default();
    let nonempty = |s: String| (!s.is_empty()).then_some(s);
    let lineage = {
        let mut chain = lineage(&ev);
        chain.push(dlq_id.clone());
        chain
    };
    // A failure callback carries the whole failure; the other kinds only take its fields.
    let failure = (kind == Kind::FailureCallback).then(|| ev.clone());
    WorkflowExecution {
        workflow_run_id: new_run_id,
        workflow_created_at: created_at,
        kind: kind as i32,
        workflow_url: take(&mut ev.workflow_url),
        method: take(&mut ev.method),
        header: take(&mut ev.header),
        body: take(&mut ev.body),
        steps: match kind {
            Kind::Resume => take(&mut ev.completed_steps),
            _ => Vec::new(),
        },
        retries: o.retries.unwrap_or(ev.max_retries),
        flow_control: o.flow_control.or_else(|| ev.flow_control.take()),
        labels: if o.labels.is_empty() {
            take(&mut ev.labels)
        } else {
            o.labels
        },
        delay: o.delay,
        retry_delay: o.retry_delay,
        failure_callback: nonempty(o.failure_callback)
            .unwrap_or_else(|| take(&mut ev.failure_callback)),
        source_dlq_id: dlq_id,
        source_workflow_run_id: take(&mut ev.workflow_run_id),
        command_id: command_id.to_string(),
        redrive_count: ev.redrive_count.saturating_add(1),
        lineage,
        failure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::pb::{FailureEvent, FlowControl, Step};

    fn entry() -> DlqEntry {
        DlqEntry {
            dlq_id: "d".into(),
            event: Some(FailureEvent {
                workflow_run_id: "old".into(),
                workflow_url: "https://w".into(),
                method: "POST".into(),
                body: b"b".to_vec(),
                max_retries: 3,
                labels: vec!["orig".into()],
                completed_steps: vec![Step {
                    step_id: 1,
                    out: b"o".to_vec(),
                    ..Default::default()
                }],
                failure_callback: "https://cb".into(),
                redrive_count: 4,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn restart_drops_steps_and_resume_keeps_them() {
        let r = execution(entry(), Kind::Restart, None, "n".into(), 1, "c");
        assert!(r.steps.is_empty());
        assert_eq!(r.redrive_count, 5);
        assert_eq!(r.retries, 3);
        assert_eq!(r.labels, ["orig"]);
        assert!(r.failure.is_none());
        let r = execution(entry(), Kind::Resume, None, "n".into(), 1, "c");
        assert_eq!(r.steps.len(), 1);
        assert_eq!(r.steps[0].out, b"o");
    }

    #[test]
    fn the_execution_carries_the_chain_of_earlier_entries_and_this_one() {
        assert!(execution(entry(), Kind::Restart, None, "n".into(), 1, "c")
            .lineage
            .eq(&["d"]));
        let mut e = entry();
        let ev = e.event.as_mut().unwrap();
        ev.redriven_from_dlq_id = "b".into();
        ev.lineage = vec!["a".into()];
        assert_eq!(lineage(ev), ["a", "b"]);
        let r = execution(e.clone(), Kind::Resume, None, "n".into(), 1, "c");
        assert_eq!(r.lineage, ["a", "b", "d"]);
        // A platform that already appended the source to the chain is not doubled.
        let ev = e.event.as_mut().unwrap();
        ev.lineage = vec!["a".into(), "b".into()];
        assert_eq!(lineage(ev), ["a", "b"]);
    }

    #[test]
    fn overrides_replace_only_what_they_set() {
        let o = Overrides {
            retries: Some(0),
            flow_control: Some(FlowControl {
                key: "k".into(),
                ..Default::default()
            }),
            labels: vec!["new".into()],
            delay: "5s".into(),
            ..Default::default()
        };
        let r = execution(entry(), Kind::Restart, Some(&o), "n".into(), 1, "c");
        assert_eq!(r.retries, 0);
        assert_eq!(r.flow_control.unwrap().key, "k");
        assert_eq!(r.labels, ["new"]);
        assert_eq!(r.delay, "5s");
        assert_eq!(r.failure_callback, "https://cb");
    }
}
