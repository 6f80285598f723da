//! `Filter` (docs/design.md §3) compiled for matching, and the opaque list cursor.
//! Several values of one field: OR; several fields: AND; an empty field matches everything.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

use crate::wire::pb::{failure_callback_info::State, Filter};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("unknown failureFunctionState `{0}` (expected one of CALLBACK_INPROGRESS, CALLBACK_SUCCESS, CALLBACK_FAIL, CALLBACK_CANCELED)")]
    UnknownState(String),
    #[error("fromDate {from} is after toDate {to}")]
    DateRange { from: i64, to: i64 },
    #[error("invalid cursor")]
    Cursor,
}

/// A string as the view keeps it: a number standing for it (see [`crate::store::view`]).
pub type Sym = u32;

/// Highest `--max-redrives`; redrive counts are kept clamped just above it, so parked or not is
/// exact for every setting while the counts add few combinations to [`Traits`].
pub const MAX_REDRIVES_LIMIT: u32 = 100;

/// Whether an entry whose run was redriven `redrive_count` times is parked under
/// `max_redrives` (0: the guard is off).
pub fn is_parked(redrive_count: i32, max_redrives: u32) -> bool {
    max_redrives > 0 && i64::from(redrive_count) >= i64::from(max_redrives)
}

/// Fields of an entry that many entries share, kept by the view as one symbol per distinct
/// combination (4 bytes per entry for all seven; a filter on them resolves to the set of
/// combinations it accepts). The strings are the view's symbols. The signature is here too:
/// a DLQ holds few kinds of failure, and it mostly follows the response status anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Traits {
    pub callback_state: i32,
    pub response_status: i32,
    pub topic_name: Sym,
    pub queue_name: Sym,
    pub schedule_id: Sym,
    pub signature: Sym,
    /// `redrive_count` clamped to `0..=MAX_REDRIVES_LIMIT + 1`.
    pub redrives: u8,
}

impl Traits {
    pub fn clamp_redrives(redrive_count: i32) -> u8 {
        redrive_count.clamp(0, MAX_REDRIVES_LIMIT as i32 + 1) as u8
    }
}

impl From<&Traits> for Traits {
    fn from(t: &Traits) -> Traits {
        *t
    }
}

/// The fields of an entry a filter looks at, as the view keeps them: strings as symbols, the
/// run and message ids as hashes (unique per entry, so not worth a symbol).
pub struct FilterKeys<'a> {
    pub created_at: i64,
    pub workflow_url: Sym,
    pub workflow_run_id_hash: u32,
    pub message_id_hash: u32,
    pub workflow_created_at: i64,
    pub labels: &'a [Sym],
    pub traits: Sym,
    pub caller_ip: Sym,
    pub flow_control_key: Sym,
}

/// The hash a run or message id is kept as: one seed per process, which is all the view needs
/// (it compares hashes it made itself, and confirms a hit against the entry's bytes).
pub fn key_hash(id: &str) -> u32 {
    use std::hash::BuildHasher;
    static SEED: std::sync::LazyLock<hashbrown::DefaultHashBuilder> =
        std::sync::LazyLock::new(Default::default);
    SEED.hash_one(id) as u32
}

/// Which end of the listing order comes first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    /// Oldest first (Upstash's default, `earliestFirst`).
    #[default]
    EarliestFirst,
    /// Newest first (`latestFirst`).
    LatestFirst,
}

impl Order {
    pub fn parse(text: &str) -> Option<Order> {
        match text {
            "earliestFirst" | "earliest" => Some(Order::EarliestFirst),
            "latestFirst" | "latest" => Some(Order::LatestFirst),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Order::EarliestFirst => "earliestFirst",
            Order::LatestFirst => "latestFirst",
        }
    }
}

/// A validated filter, ready to match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EntryFilter {
    from_date: Option<i64>,
    to_date: Option<i64>,
    workflow_url: Vec<String>,
    workflow_run_id: Option<String>,
    workflow_created_at: Option<i64>,
    label: Vec<String>,
    callback_state: Vec<i32>,
    caller_ip: Vec<String>,
    flow_control_key: Vec<String>,
    message_id: Option<String>,
    topic_name: Vec<String>,
    schedule_id: Vec<String>,
    queue_name: Vec<String>,
    response_status: Vec<i32>,
    signature: Vec<String>,
    parked: Option<bool>,
}

fn nonempty(values: &[String]) -> Vec<String> {
    values
        .iter()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

fn single(value: &str) -> Option<String> {
    Some(value.trim().to_string()).filter(|s| !s.is_empty())
}

impl EntryFilter {
    /// Matches every entry.
    pub fn all() -> EntryFilter {
        EntryFilter::default()
    }

    pub fn compile(f: &Filter) -> Result<EntryFilter, FilterError> {
        let callback_state = nonempty(&f.failure_function_state)
            .iter()
            .map(|s| {
                State::from_str_name(&s.to_ascii_uppercase())
                    .filter(|st| *st != State::Unspecified)
                    .map(|st| st as i32)
                    .ok_or_else(|| FilterError::UnknownState(s.chars().take(64).collect()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let from_date = (f.from_date != 0).then_some(f.from_date);
        let to_date = (f.to_date != 0).then_some(f.to_date);
        if let (Some(from), Some(to)) = (from_date, to_date) {
            if from > to {
                return Err(FilterError::DateRange { from, to });
            }
        }
        let mut response_status = f.response_status.clone();
        response_status.sort_unstable();
        response_status.dedup();
        Ok(EntryFilter {
            from_date,
            to_date,
            workflow_url: nonempty(&f.workflow_url),
            workflow_run_id: single(&f.workflow_run_id),
            workflow_created_at: (f.workflow_created_at != 0).then_some(f.workflow_created_at),
            label: nonempty(&f.label),
            callback_state,
            caller_ip: nonempty(&f.caller_ip),
            flow_control_key: nonempty(&f.flow_control_key),
            message_id: single(&f.message_id),
            topic_name: nonempty(&f.topic_name),
            schedule_id: nonempty(&f.schedule_id),
            queue_name: nonempty(&f.queue_name),
            response_status,
            signature: nonempty(&f.signature),
            parked: f.parked,
        })
    }

    /// True when no field is set: such a filter must never be read as "everything" by a command.
    pub fn is_empty(&self) -> bool {
        *self == EntryFilter::default()
    }

    /// The filter in the view's terms: each wanted string as its symbol. `None` when a field
    /// wants only strings no entry has: nothing can match, and nothing needs to be scanned.
    /// `max_redrives` says which entries are parked.
    pub fn resolve(
        &self,
        symbol: impl Fn(&str) -> Option<Sym>,
        max_redrives: u32,
    ) -> Option<Matcher> {
        let resolve = |wanted: &[String]| -> Option<Vec<Sym>> {
            let syms: Vec<Sym> = wanted.iter().filter_map(|w| symbol(w)).collect();
            (wanted.is_empty() || !syms.is_empty()).then_some(syms)
        };
        Some(Matcher {
            from_date: self.from_date,
            to_date: self.to_date,
            workflow_url: resolve(&self.workflow_url)?,
            workflow_run_id: self
                .workflow_run_id
                .as_ref()
                .map(|r| (key_hash(r), r.clone())),
            message_id: self.message_id.as_ref().map(|r| (key_hash(r), r.clone())),
            workflow_created_at: self.workflow_created_at,
            label: resolve(&self.label)?,
            callback_state: self.callback_state.clone(),
            caller_ip: resolve(&self.caller_ip)?,
            flow_control_key: resolve(&self.flow_control_key)?,
            topic_name: resolve(&self.topic_name)?,
            schedule_id: resolve(&self.schedule_id)?,
            queue_name: resolve(&self.queue_name)?,
            response_status: self.response_status.clone(),
            signature: resolve(&self.signature)?,
            parked: self.parked,
            max_redrives,
            traits_allowed: None,
        })
    }
}

/// An [`EntryFilter`] resolved against the view's symbols: matching compares numbers.
#[derive(Debug, Clone)]
pub struct Matcher {
    from_date: Option<i64>,
    to_date: Option<i64>,
    workflow_url: Vec<Sym>,
    workflow_run_id: Option<(u32, String)>,
    message_id: Option<(u32, String)>,
    workflow_created_at: Option<i64>,
    label: Vec<Sym>,
    callback_state: Vec<i32>,
    caller_ip: Vec<Sym>,
    flow_control_key: Vec<Sym>,
    topic_name: Vec<Sym>,
    schedule_id: Vec<Sym>,
    queue_name: Vec<Sym>,
    response_status: Vec<i32>,
    signature: Vec<Sym>,
    parked: Option<bool>,
    max_redrives: u32,
    /// Per [`Traits`] symbol, whether it is accepted; `None` when no traits field is filtered.
    traits_allowed: Option<Vec<bool>>,
}

impl Matcher {
    /// The wanted symbols of the fields the view keeps per-value lists for, in the order
    /// `[workflow_url, caller_ip, flow_control_key, label, signature]` (empty: the field is not
    /// filtered).
    pub fn indexed(&self) -> [&[Sym]; 5] {
        [
            &self.workflow_url,
            &self.caller_ip,
            &self.flow_control_key,
            &self.label,
            &self.signature,
        ]
    }

    /// True when a field kept in [`Traits`] is filtered.
    pub fn filters_traits(&self) -> bool {
        !(self.callback_state.is_empty()
            && self.response_status.is_empty()
            && self.topic_name.is_empty()
            && self.schedule_id.is_empty()
            && self.queue_name.is_empty()
            && self.signature.is_empty()
            && self.parked.is_none())
    }

    /// Whether an entry with these traits passes the traits fields of the filter.
    pub fn accepts_traits(&self, t: &Traits) -> bool {
        fn any_of<T: PartialEq>(wanted: &[T], have: &T) -> bool {
            wanted.is_empty() || wanted.contains(have)
        }
        any_of(&self.callback_state, &t.callback_state)
            && any_of(&self.response_status, &t.response_status)
            && any_of(&self.topic_name, &t.topic_name)
            && any_of(&self.schedule_id, &t.schedule_id)
            && any_of(&self.queue_name, &t.queue_name)
            && any_of(&self.signature, &t.signature)
            && self
                .parked
                .is_none_or(|p| p == is_parked(t.redrives.into(), self.max_redrives))
    }

    /// True when only traits fields and per-value listed fields are filtered (no date, id or
    /// creation-time field): the view can then count the matches from its tallies.
    pub fn reads_traits_and_lists_only(&self) -> bool {
        self.from_date.is_none()
            && self.to_date.is_none()
            && self.workflow_run_id.is_none()
            && self.message_id.is_none()
            && self.workflow_created_at.is_none()
    }

    /// Whether the traits symbol `t` passes (as [`Matcher::allow_traits`] set; every symbol
    /// passes when no traits field is filtered).
    pub fn allows_traits(&self, t: Sym) -> bool {
        self.traits_allowed
            .as_ref()
            .is_none_or(|a| a.get(t as usize).copied().unwrap_or(false))
    }

    /// Sets which traits symbols pass (see [`Matcher::accepts_traits`]), as the view resolved
    /// them.
    pub fn allow_traits(&mut self, allowed: Vec<bool>) {
        self.traits_allowed = Some(allowed);
    }

    /// True when the entry matches. `ids` gives the entry's run and message ids; it is asked
    /// for only when one is wanted and the hashes agree.
    pub fn matches(&self, k: &FilterKeys<'_>, ids: impl Fn() -> Option<(String, String)>) -> bool {
        fn any_of(wanted: &[Sym], have: Sym) -> bool {
            wanted.is_empty() || wanted.contains(&have)
        }
        self.from_date.is_none_or(|d| k.created_at >= d)
            && self.to_date.is_none_or(|d| k.created_at <= d)
            && any_of(&self.workflow_url, k.workflow_url)
            && self
                .workflow_created_at
                .is_none_or(|t| t == k.workflow_created_at)
            && (self.label.is_empty() || self.label.iter().any(|l| k.labels.contains(l)))
            && self.allows_traits(k.traits)
            && any_of(&self.caller_ip, k.caller_ip)
            && any_of(&self.flow_control_key, k.flow_control_key)
            && self.workflow_run_id.as_ref().is_none_or(|(hash, wanted)| {
                *hash == k.workflow_run_id_hash && ids().is_some_and(|(run, _)| run == *wanted)
            })
            && self.message_id.as_ref().is_none_or(|(hash, wanted)| {
                *hash == k.message_id_hash && ids().is_some_and(|(_, msg)| msg == *wanted)
            })
    }
}

/// Position after the last entry of a page: entries are ordered by `created_at`, then `dlqId`
/// (or the reverse, newest first), so a cursor stays valid while entries come and go around it:
/// it names a position, not an index. It remembers its order, so it cannot be used to page the
/// other way.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub created_at: i64,
    pub dlq_id: String,
    pub latest_first: bool,
}

impl Cursor {
    pub fn order(&self) -> Order {
        if self.latest_first {
            Order::LatestFirst
        } else {
            Order::EarliestFirst
        }
    }

    pub fn encode(&self) -> String {
        let dir = if self.latest_first { "d:" } else { "" };
        URL_SAFE_NO_PAD.encode(format!("{dir}{}:{}", self.created_at, self.dlq_id))
    }

    pub fn decode(text: &str) -> Result<Cursor, FilterError> {
        let raw = URL_SAFE_NO_PAD
            .decode(text.trim())
            .map_err(|_| FilterError::Cursor)?;
        let raw = String::from_utf8(raw).map_err(|_| FilterError::Cursor)?;
        let (latest_first, raw) = match raw.strip_prefix("d:") {
            Some(rest) => (true, rest),
            None => (false, raw.as_str()),
        };
        let (ts, id) = raw.split_once(':').ok_or(FilterError::Cursor)?;
        Ok(Cursor {
            created_at: ts.parse().map_err(|_| FilterError::Cursor)?,
            dlq_id: id.to_string(),
            latest_first,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        for latest_first in [false, true] {
            let c = Cursor {
                created_at: 1_700_000_000_000,
                dlq_id: "dlq-abc".into(),
                latest_first,
            };
            assert_eq!(Cursor::decode(&c.encode()), Ok(c));
        }
        assert_eq!(Cursor::decode("%%%"), Err(FilterError::Cursor));
        assert_eq!(Cursor::decode("bm9jb2xvbg"), Err(FilterError::Cursor));
    }

    #[test]
    fn unknown_callback_states_are_refused() {
        let f = Filter {
            failure_function_state: vec!["CALLBACK_FAIL".into(), "NOPE".into()],
            ..Default::default()
        };
        assert_eq!(
            EntryFilter::compile(&f),
            Err(FilterError::UnknownState("NOPE".into()))
        );
    }

    #[test]
    fn an_unset_filter_is_empty() {
        assert!(EntryFilter::compile(&Filter::default()).unwrap().is_empty());
        let f = Filter {
            label: vec![" ".into()],
            ..Default::default()
        };
        assert!(EntryFilter::compile(&f).unwrap().is_empty());
    }
}
