//! Republishing: the `WorkflowExecution` a recovery action sends to the executions topic.

use crate::wire::pb::{
    recovery_command::Action, workflow_execution::Kind, DlqEntry, Overrides, WorkflowExecution,
};

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
/// replace what they set; everything else is the original run's.
pub fn execution(
    entry: &DlqEntry,
    kind: Kind,
    overrides: Option<&Overrides>,
    new_run_id: String,
    created_at: i64,
    command_id: &str,
) -> WorkflowExecution {
    let ev = entry.event.clone().unwrap_or_default();
    let o = overrides.cloned().unwrap_or_default();
    let nonempty = |s: String| (!s.is_empty()).then_some(s);
    WorkflowExecution {
        workflow_run_id: new_run_id,
        workflow_created_at: created_at,
        kind: kind as i32,
        workflow_url: ev.workflow_url.clone(),
        method: ev.method.clone(),
        header: ev.header.clone(),
        body: ev.body.clone(),
        steps: match kind {
            Kind::Resume => ev.completed_steps.clone(),
            _ => Vec::new(),
        },
        retries: o.retries.unwrap_or(ev.max_retries),
        flow_control: o.flow_control.or_else(|| ev.flow_control.clone()),
        labels: if o.labels.is_empty() {
            ev.labels.clone()
        } else {
            o.labels
        },
        delay: o.delay,
        retry_delay: o.retry_delay,
        failure_callback: nonempty(o.failure_callback)
            .unwrap_or_else(|| ev.failure_callback.clone()),
        source_dlq_id: entry.dlq_id.clone(),
        source_workflow_run_id: ev.workflow_run_id.clone(),
        command_id: command_id.to_string(),
        redrive_count: ev.redrive_count.saturating_add(1),
        failure: (kind == Kind::FailureCallback).then_some(ev),
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
        let r = execution(&entry(), Kind::Restart, None, "n".into(), 1, "c");
        assert!(r.steps.is_empty());
        assert_eq!(r.redrive_count, 5);
        assert_eq!(r.retries, 3);
        assert_eq!(r.labels, ["orig"]);
        assert!(r.failure.is_none());
        let r = execution(&entry(), Kind::Resume, None, "n".into(), 1, "c");
        assert_eq!(r.steps.len(), 1);
        assert_eq!(r.steps[0].out, b"o");
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
        let r = execution(&entry(), Kind::Restart, Some(&o), "n".into(), 1, "c");
        assert_eq!(r.retries, 0);
        assert_eq!(r.flow_control.unwrap().key, "k");
        assert_eq!(r.labels, ["new"]);
        assert_eq!(r.delay, "5s");
        assert_eq!(r.failure_callback, "https://cb");
    }
}
