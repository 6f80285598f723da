//! Checks a `RecoveryCommand` before anything acts on it: a command id, a known action, and
//! exactly one selector — an empty id list or a filter with no field is never "everything".

use crate::{
    store::EntryFilter,
    wire::pb::{recovery_command::Action, recovery_command::Selector, RecoveryCommand},
};

/// What a valid command selects.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    Ids(Vec<String>),
    Filter(Box<EntryFilter>),
    All,
}

impl Selection {
    /// The bounded label for metrics.
    pub fn label(&self) -> crate::events::CommandSelector {
        use crate::events::CommandSelector;
        match self {
            Selection::Ids(ids) if ids.len() == 1 => CommandSelector::Id,
            Selection::Ids(_) => CommandSelector::Ids,
            Selection::Filter(_) => CommandSelector::Filter,
            Selection::All => CommandSelector::All,
        }
    }
}

/// Why a command was refused; `code()` is its bounded label.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Invalid {
    #[error("command_id is required")]
    MissingCommandId,
    #[error("unknown or unspecified action ({0})")]
    UnknownAction(i32),
    #[error("exactly one selector is required: dlq_ids, filter or all")]
    NoSelector,
    #[error("the dlq_ids selector is empty; use `all` to act on every entry")]
    EmptyIds,
    #[error("the filter has no field set; use `all` to act on every entry")]
    EmptyFilter,
    #[error("`all` must be true when it is the selector")]
    AllFalse,
    #[error("invalid filter: {0}")]
    Filter(String),
    #[error("max_per_second must be zero (service default) or a positive number")]
    Rate,
    #[error("`{field}` is {len} bytes, at most {max} allowed")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
}

impl Invalid {
    pub fn code(&self) -> &'static str {
        match self {
            Invalid::MissingCommandId => "missing_command_id",
            Invalid::UnknownAction(_) => "unknown_action",
            Invalid::NoSelector => "no_selector",
            Invalid::EmptyIds => "empty_ids",
            Invalid::EmptyFilter => "empty_filter",
            Invalid::AllFalse => "all_false",
            Invalid::Filter(_) => "invalid_filter",
            Invalid::Rate => "invalid_rate",
            Invalid::TooLong { .. } => "too_long",
        }
    }
}

/// A command that passed validation.
#[derive(Debug, Clone)]
pub struct ValidCommand {
    pub action: Action,
    pub selection: Selection,
}

/// Longest id (command id, dlqId, run id) accepted: ids are keys and are copied into results.
pub const MAX_ID_LEN: usize = 512;
/// Longest free text (reason, URLs, delays) accepted.
pub const MAX_TEXT_LEN: usize = 4096;

fn bounded(field: &'static str, value: &str, max: usize) -> Result<(), Invalid> {
    if value.len() > max {
        return Err(Invalid::TooLong {
            field,
            len: value.len(),
            max,
        });
    }
    Ok(())
}

/// Every field that is copied into what the service writes (results, executions, sub-commands)
/// is bounded, so no command can make the service write a record the topics refuse — a write
/// that fails on every retry would stall the command consumer.
fn check_sizes(cmd: &RecoveryCommand) -> Result<(), Invalid> {
    bounded("command_id", &cmd.command_id, MAX_ID_LEN)?;
    bounded("requested_by", &cmd.requested_by, MAX_ID_LEN)?;
    bounded("reason", &cmd.reason, MAX_TEXT_LEN)?;
    if let Some(Selector::DlqIds(ids)) = &cmd.selector {
        for id in &ids.ids {
            bounded("dlq_ids[]", id, MAX_ID_LEN)?;
        }
    }
    for (id, run) in &cmd.new_run_ids {
        bounded("new_run_ids key", id, MAX_ID_LEN)?;
        bounded("new_run_ids value", run, MAX_ID_LEN)?;
    }
    if let Some(o) = &cmd.overrides {
        bounded("overrides.delay", &o.delay, 64)?;
        bounded("overrides.retry_delay", &o.retry_delay, 64)?;
        bounded(
            "overrides.failure_callback",
            &o.failure_callback,
            MAX_TEXT_LEN,
        )?;
        if let Some(fc) = &o.flow_control {
            bounded("overrides.flow_control.key", &fc.key, MAX_ID_LEN)?;
        }
        if o.labels.len() > 64 {
            return Err(Invalid::TooLong {
                field: "overrides.labels (count)",
                len: o.labels.len(),
                max: 64,
            });
        }
        for l in &o.labels {
            bounded("overrides.labels[]", l, 256)?;
        }
    }
    Ok(())
}

pub fn validate(cmd: &RecoveryCommand) -> Result<ValidCommand, Invalid> {
    if cmd.command_id.trim().is_empty() {
        return Err(Invalid::MissingCommandId);
    }
    check_sizes(cmd)?;
    let action = match Action::try_from(cmd.action) {
        Ok(Action::Unspecified) | Err(_) => return Err(Invalid::UnknownAction(cmd.action)),
        Ok(a) => a,
    };
    if !(cmd.max_per_second.is_finite() && cmd.max_per_second >= 0.0) {
        return Err(Invalid::Rate);
    }
    let selection = match &cmd.selector {
        None => return Err(Invalid::NoSelector),
        Some(Selector::DlqIds(ids)) => {
            let mut list: Vec<String> = Vec::with_capacity(ids.ids.len());
            for id in ids.ids.iter().map(|i| i.trim()).filter(|i| !i.is_empty()) {
                if !list.iter().any(|have| have == id) {
                    list.push(id.to_string());
                }
            }
            if list.is_empty() {
                return Err(Invalid::EmptyIds);
            }
            Selection::Ids(list)
        }
        Some(Selector::Filter(f)) => {
            let compiled = EntryFilter::compile(f).map_err(|e| Invalid::Filter(e.to_string()))?;
            if compiled.is_empty() {
                return Err(Invalid::EmptyFilter);
            }
            Selection::Filter(Box::new(compiled))
        }
        Some(Selector::All(true)) => Selection::All,
        Some(Selector::All(false)) => return Err(Invalid::AllFalse),
    };
    Ok(ValidCommand { action, selection })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::pb::{recovery_command::Ids, Filter};

    fn cmd(selector: Option<Selector>) -> RecoveryCommand {
        RecoveryCommand {
            command_id: "c".into(),
            action: Action::Restart as i32,
            selector,
            ..Default::default()
        }
    }

    #[test]
    fn each_malformed_command_is_refused_with_its_reason() {
        let mut no_id = cmd(Some(Selector::All(true)));
        no_id.command_id = " ".into();
        assert_eq!(validate(&no_id).unwrap_err(), Invalid::MissingCommandId);
        let mut no_action = cmd(Some(Selector::All(true)));
        no_action.action = 0;
        assert_eq!(validate(&no_action).unwrap_err(), Invalid::UnknownAction(0));
        no_action.action = 99;
        assert_eq!(
            validate(&no_action).unwrap_err(),
            Invalid::UnknownAction(99)
        );
        assert_eq!(validate(&cmd(None)).unwrap_err(), Invalid::NoSelector);
        let empty = Selector::DlqIds(Ids {
            ids: vec!["".into()],
        });
        assert_eq!(validate(&cmd(Some(empty))).unwrap_err(), Invalid::EmptyIds);
        let no_field = Selector::Filter(Filter::default());
        assert_eq!(
            validate(&cmd(Some(no_field))).unwrap_err(),
            Invalid::EmptyFilter
        );
        assert_eq!(
            validate(&cmd(Some(Selector::All(false)))).unwrap_err(),
            Invalid::AllFalse
        );
        let mut bad_rate = cmd(Some(Selector::All(true)));
        bad_rate.max_per_second = -1.0;
        assert_eq!(validate(&bad_rate).unwrap_err(), Invalid::Rate);
    }

    #[test]
    fn fields_copied_into_outputs_are_bounded() {
        let long = "x".repeat(MAX_ID_LEN + 1);
        let mut c = cmd(Some(Selector::All(true)));
        c.command_id = long.clone();
        assert_eq!(validate(&c).unwrap_err().code(), "too_long");
        let c = cmd(Some(Selector::DlqIds(Ids {
            ids: vec!["a".into(), long.clone()],
        })));
        assert_eq!(validate(&c).unwrap_err().code(), "too_long");
        let mut c = cmd(Some(Selector::All(true)));
        c.overrides = Some(crate::wire::pb::Overrides {
            labels: vec!["l".into(); 65],
            ..Default::default()
        });
        assert_eq!(validate(&c).unwrap_err().code(), "too_long");
        let mut c = cmd(Some(Selector::All(true)));
        c.requested_by = long;
        assert_eq!(validate(&c).unwrap_err().code(), "too_long");
    }

    #[test]
    fn ids_are_trimmed_and_deduplicated() {
        let ids = Selector::DlqIds(Ids {
            ids: vec!["a".into(), " a ".into(), "b".into()],
        });
        let v = validate(&cmd(Some(ids))).unwrap();
        assert_eq!(v.selection, Selection::Ids(vec!["a".into(), "b".into()]));
    }
}
