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
    Filter(EntryFilter),
    All,
}

impl Selection {
    /// The bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Selection::Ids(ids) if ids.len() == 1 => "id",
            Selection::Ids(_) => "ids",
            Selection::Filter(_) => "filter",
            Selection::All => "all",
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
        }
    }
}

/// A command that passed validation.
#[derive(Debug, Clone)]
pub struct ValidCommand {
    pub action: Action,
    pub selection: Selection,
}

pub fn validate(cmd: &RecoveryCommand) -> Result<ValidCommand, Invalid> {
    if cmd.command_id.trim().is_empty() {
        return Err(Invalid::MissingCommandId);
    }
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
            Selection::Filter(compiled)
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
    fn ids_are_trimmed_and_deduplicated() {
        let ids = Selector::DlqIds(Ids {
            ids: vec!["a".into(), " a ".into(), "b".into()],
        });
        let v = validate(&cmd(Some(ids))).unwrap();
        assert_eq!(v.selection, Selection::Ids(vec!["a".into(), "b".into()]));
    }
}
