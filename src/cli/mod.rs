//! `workflow-dlq dlq …`: the DLQ from a terminal, over the HTTP API (so it works against any
//! instance, with the same auth and semantics as the SDKs). Bulk operations follow the cursor
//! to the end, with a progress bar on a terminal. `workflow-dlq failures send` ([`send`])
//! produces failure events from JSON lines.
//!
//! Results are written through [`output`]'s writers, never `println!`, so a reader that goes
//! away (`| head -1`) ends the binary quietly instead of with a panic.

mod client;
pub mod output;
pub mod send;

use std::{io::Write, time::Duration};

use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

pub use client::{CliError, DlqClient};
pub use send::{FailuresArgs, FailuresCommand};

#[derive(Debug, Args)]
pub struct DlqArgs {
    /// The service's base URL.
    #[arg(
        long,
        env = "DLQ_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// The API token (`--api-token` of the service).
    #[arg(long, env = "DLQ_API_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: DlqCommand,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List entries, oldest first unless --order latest (one page, or every page with --all).
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Newest or oldest entries first (the server's default: earliest).
        #[arg(long, value_enum)]
        order: Option<Order>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Failure groups: the entries by kind of failure (signature), largest first.
    Groups {
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one entry.
    Get { dlq_id: String },
    /// Restart runs from the beginning: by id, by filter, or --all.
    Restart(ActionArgs),
    /// Resume runs from the point of failure (completed steps are replayed).
    Resume(ActionArgs),
    /// Re-run the failure callback of one entry.
    Callback { dlq_id: String },
    /// Delete entries: by id, by filter, or --all.
    Delete(SelectArgs),
    /// Bulk jobs (started over HTTP or on the command topic): list, show, cancel.
    #[command(subcommand)]
    Jobs(JobsCommand),
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Recent jobs, newest first.
    List {
        /// At most this many (1–100).
        #[arg(long, default_value_t = 20)]
        count: u32,
    },
    /// One job's progress.
    Get { job_id: String },
    /// Cancel a job: nothing is acted on after the cancel; shows the job's final counts.
    Cancel { job_id: String },
}

/// Paging of a listing: one page, or every page with `--all`.
#[derive(Debug, Args, Clone)]
pub struct PageArgs {
    /// Page size (1–100).
    #[arg(long, default_value_t = 100)]
    pub count: u32,
    /// Start after this cursor (from a previous page).
    #[arg(long)]
    pub cursor: Option<String>,
    /// Follow the cursor to the last page.
    #[arg(long)]
    pub all: bool,
}

/// Filters, as the API takes them (repeat a flag for several values).
#[derive(Debug, Args, Default, Clone)]
pub struct FilterArgs {
    /// Entered the DLQ at or after: unix ms or RFC 3339 (`2026-11-28T10:00:00Z`).
    #[arg(long)]
    pub from_date: Option<String>,
    /// Entered the DLQ at or before: unix ms or RFC 3339.
    #[arg(long)]
    pub to_date: Option<String>,
    #[arg(long)]
    pub workflow_url: Vec<String>,
    #[arg(long)]
    pub workflow_run_id: Option<String>,
    #[arg(long)]
    pub workflow_created_at: Option<i64>,
    #[arg(long)]
    pub label: Vec<String>,
    /// CALLBACK_INPROGRESS, CALLBACK_SUCCESS, CALLBACK_FAIL or CALLBACK_CANCELED.
    #[arg(long)]
    pub failure_function_state: Vec<String>,
    #[arg(long)]
    pub caller_ip: Vec<String>,
    #[arg(long)]
    pub flow_control_key: Vec<String>,
    /// A failure signature (`dlq groups`): the entries of that group.
    #[arg(long)]
    pub signature: Vec<String>,
    /// `true`: only parked entries (redriven `--max-redrives` times); `false`: none of them.
    #[arg(long)]
    pub parked: Option<bool>,
}

/// Which entries an action is for.
#[derive(Debug, Args, Clone)]
pub struct SelectArgs {
    /// These entries (at most 100 per call).
    pub dlq_ids: Vec<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Every entry (required when no id and no filter is given).
    #[arg(long)]
    pub all: bool,
    /// Which end the pages start from: newest or oldest entries first (the server's default:
    /// earliest). Not a filter: it never widens or narrows the selection.
    #[arg(long, value_enum)]
    pub order: Option<Order>,
    /// Entries per call when following the cursor (1–100).
    #[arg(long, default_value_t = 100)]
    pub count: u32,
}

#[derive(Debug, Args, Clone)]
pub struct ActionArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// Override the run's retries (`Upstash-Retries`).
    #[arg(long)]
    pub retries: Option<u32>,
    /// Delay the run (`Upstash-Delay`, e.g. `30s`).
    #[arg(long)]
    pub delay: Option<String>,
    /// Retry delay expression (`Upstash-Retry-Delay`).
    #[arg(long)]
    pub retry_delay: Option<String>,
    /// Flow-control key for the new run (`Upstash-Flow-Control-Key`).
    #[arg(long, requires = "set_flow_control_value")]
    pub set_flow_control_key: Option<String>,
    /// Flow-control value for the new run: `parallelism=N, rate=N, period=N`.
    #[arg(long, requires = "set_flow_control_key")]
    pub set_flow_control_value: Option<String>,
    /// Labels for the new run, comma-separated (`Upstash-Label`).
    #[arg(long)]
    pub set_labels: Option<String>,
    /// Failure callback URL for the new run (`Upstash-Failure-Callback`).
    #[arg(long)]
    pub failure_callback: Option<String>,
    /// Act on a parked entry (one redriven `--max-redrives` times) too. One entry id only:
    /// bulk actions always skip parked entries.
    #[arg(long)]
    pub force: bool,
}

/// `--order`: the API's `order` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Order {
    /// Newest entries first (`order=latestFirst`).
    Latest,
    /// Oldest entries first (`order=earliestFirst`).
    Earliest,
}

impl Order {
    /// The query pair. Only sent when `--order` is given, so a server without the parameter
    /// still answers every command that does not use it.
    fn query(order: Option<Order>) -> Option<(String, String)> {
        let value = match order? {
            Order::Latest => "latestFirst",
            Order::Earliest => "earliestFirst",
        };
        Some(("order".into(), value.into()))
    }
}

impl FilterArgs {
    fn is_empty(&self) -> bool {
        self.query().map(|q| q.is_empty()).unwrap_or(false)
    }

    /// The query pairs of these filters.
    pub fn query(&self) -> Result<Vec<(String, String)>, CliError> {
        let mut q = Vec::new();
        for (name, v) in [("fromDate", &self.from_date), ("toDate", &self.to_date)] {
            if let Some(v) = v {
                q.push((name.to_string(), time_ms(name, v)?.to_string()));
            }
        }
        let many = [
            ("workflowUrl", &self.workflow_url),
            ("label", &self.label),
            ("failureFunctionState", &self.failure_function_state),
            ("callerIp", &self.caller_ip),
            ("flowControlKey", &self.flow_control_key),
            ("signature", &self.signature),
        ];
        for (name, values) in many {
            q.extend(values.iter().map(|v| (name.to_string(), v.clone())));
        }
        if let Some(v) = &self.workflow_run_id {
            q.push(("workflowRunId".into(), v.clone()));
        }
        if let Some(v) = self.workflow_created_at {
            q.push(("workflowCreatedAt".into(), v.to_string()));
        }
        if let Some(v) = self.parked {
            q.push(("parked".into(), v.to_string()));
        }
        Ok(q)
    }
}

/// Unix ms, or an RFC 3339 time.
fn time_ms(name: &str, v: &str) -> Result<i64, CliError> {
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(ms);
    }
    humantime::parse_rfc3339_weak(v)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .ok_or_else(|| {
            CliError::Usage(format!(
                "--{} must be unix milliseconds or an RFC 3339 time, got `{v}`",
                name.replace("Date", "-date").to_lowercase()
            ))
        })
}

impl ActionArgs {
    fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = Vec::new();
        if let Some(r) = self.retries {
            h.push(("Upstash-Retries", r.to_string()));
        }
        let texts = [
            ("Upstash-Delay", &self.delay),
            ("Upstash-Retry-Delay", &self.retry_delay),
            ("Upstash-Flow-Control-Key", &self.set_flow_control_key),
            ("Upstash-Flow-Control-Value", &self.set_flow_control_value),
            ("Upstash-Label", &self.set_labels),
            ("Upstash-Failure-Callback", &self.failure_callback),
        ];
        for (name, v) in texts {
            if let Some(v) = v {
                h.push((name, v.clone()));
            }
        }
        h
    }
}

fn progress(total: Option<u64>, verb: &str) -> ProgressBar {
    let bar = match total {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template(
                "{spinner} {msg} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} {pos} ({per_sec})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.set_message(verb.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Runs one `dlq` command, printing its result on `out`.
/// Reads pages with `fetch` from `cursor` on — one page, or with `all` every page to the end —
/// and returns their items and the cursor of the page after the last one read.
async fn read_pages<T, F, Fut>(
    query: Vec<(String, String)>,
    mut cursor: Option<String>,
    all: bool,
    fetch: F,
) -> Result<(Vec<T>, Option<String>), CliError>
where
    F: Fn(Vec<(String, String)>) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, Option<String>), CliError>>,
{
    let mut items = Vec::new();
    loop {
        let mut q = query.clone();
        if let Some(c) = &cursor {
            q.push(("cursor".into(), c.clone()));
        }
        let (page, next) = fetch(q).await?;
        items.extend(page);
        cursor = next;
        if !all || cursor.is_none() {
            return Ok((items, cursor));
        }
    }
}

pub async fn run(args: DlqArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let client = DlqClient::new(&args.url, args.token.clone())?;
    let json = args.json;
    match args.command {
        DlqCommand::List {
            filter,
            order,
            page: PageArgs { count, cursor, all },
        } => {
            let mut query = filter.query()?;
            query.extend(Order::query(order));
            query.push(("count".into(), count.to_string()));
            let client = &client;
            let (messages, cursor) = read_pages(query, cursor, all, |q| async move {
                let page = client.list(&q).await?;
                Ok((page.messages, page.cursor))
            })
            .await?;
            output::messages(out, &messages, cursor.as_deref(), json)
        }
        DlqCommand::Groups {
            filter,
            page: PageArgs { count, cursor, all },
        } => {
            let mut query = filter.query()?;
            query.push(("count".into(), count.to_string()));
            let client = &client;
            let (groups, cursor) = read_pages(query, cursor, all, |q| async move {
                let page = client.groups(&q).await?;
                Ok((page.groups, page.cursor))
            })
            .await?;
            output::groups(out, &groups, cursor.as_deref(), json)
        }
        DlqCommand::Get { dlq_id } => output::message(out, &client.get(&dlq_id).await?, json),
        DlqCommand::Jobs(JobsCommand::List { count }) => {
            output::jobs(out, &client.jobs(count).await?.jobs, json)
        }
        DlqCommand::Jobs(JobsCommand::Get { job_id }) => {
            output::jobs(out, &[client.job(&job_id).await?], json)
        }
        DlqCommand::Jobs(JobsCommand::Cancel { job_id }) => {
            output::jobs(out, &[client.cancel_job(&job_id).await?], json)
        }
        DlqCommand::Restart(a) => return act(&client, "restart", a, json, out).await,
        DlqCommand::Resume(a) => return act(&client, "resume", a, json, out).await,
        DlqCommand::Callback { dlq_id } => {
            let run = client.callback(&dlq_id).await?;
            output::runs(out, &[run], json)
        }
        DlqCommand::Delete(select) => {
            let deleted = select_pages(&client, &select, |q| {
                let client = &client;
                async move {
                    let r = client.delete(&q).await?;
                    Ok((r.deleted, r.cursor, Vec::new()))
                }
            })
            .await?
            .0;
            output::deleted(out, deleted, json)
        }
    }
    .and_then(|()| out.flush())
    .map_err(CliError::Output)
}

async fn act(
    client: &DlqClient,
    verb: &str,
    a: ActionArgs,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let headers = a.headers();
    if a.force {
        // The API forces one entry at a time only: a parked run is redriven by name.
        let [dlq_id] = &a.select.dlq_ids[..] else {
            return Err(CliError::Usage(
                "--force acts on one entry: give exactly one entry id".into(),
            ));
        };
        if !a.select.filter.is_empty() || a.select.all {
            return Err(CliError::Usage(
                "--force acts on one entry: no filters or --all".into(),
            ));
        }
        let run = client.act_forced(verb, dlq_id, &headers).await?;
        return output::runs(out, &[run], json)
            .and_then(|()| out.flush())
            .map_err(CliError::Output);
    }
    // Entries the server left alone (parked), summed over the pages.
    let skipped = std::sync::atomic::AtomicU64::new(0);
    let (_, runs) = select_pages(client, &a.select, |q| {
        let headers = headers.clone();
        let skipped = &skipped;
        async move {
            let r = client.act(verb, &q, &headers).await?;
            skipped.fetch_add(r.skipped, std::sync::atomic::Ordering::Relaxed);
            Ok((r.workflow_runs.len() as u64, r.cursor, r.workflow_runs))
        }
    })
    .await?;
    let skipped = skipped.into_inner();
    if skipped > 0 {
        output::warn(format_args!(
            "skipped {skipped} entries (parked: already redriven --max-redrives times); \
             list them with --parked true, act on one with its id and --force"
        ));
    }
    output::runs(out, &runs, json)
        .and_then(|()| out.flush())
        .map_err(CliError::Output)
}

/// Calls `page` for the selected entries: once for ids, else following the cursor to the end.
async fn select_pages<F, Fut>(
    client: &DlqClient,
    s: &SelectArgs,
    mut page: F,
) -> Result<(u64, Vec<crate::http::messages::WorkflowRun>), CliError>
where
    F: FnMut(Vec<(String, String)>) -> Fut,
    Fut: std::future::Future<
        Output = Result<(u64, Option<String>, Vec<crate::http::messages::WorkflowRun>), CliError>,
    >,
{
    let filtered = !s.filter.is_empty();
    if !s.dlq_ids.is_empty() {
        if filtered || s.all {
            return Err(CliError::Usage(
                "give entry ids, or filters, or --all — not several".into(),
            ));
        }
        let mut q: Vec<(String, String)> = s
            .dlq_ids
            .iter()
            .map(|id| ("dlqIds".to_string(), id.clone()))
            .collect();
        q.extend(Order::query(s.order));
        let (n, _, runs) = page(q).await?;
        return Ok((n, runs));
    }
    if !filtered && !s.all {
        return Err(CliError::Usage(
            "no entry ids and no filter: pass --all to act on every entry".into(),
        ));
    }
    if filtered && s.all {
        return Err(CliError::Usage(
            "--all acts on every entry; drop the filters or --all".into(),
        ));
    }
    let total = if s.all {
        client.status_entries().await.ok()
    } else {
        None
    };
    let bar = progress(total, "working");
    let mut base = s.filter.query()?;
    base.extend(Order::query(s.order));
    base.push(("count".into(), s.count.to_string()));
    let (mut done, mut runs, mut cursor) = (0u64, Vec::new(), None::<String>);
    loop {
        let mut q = base.clone();
        if let Some(c) = &cursor {
            q.push(("cursor".into(), c.clone()));
        }
        let (n, next, mut r) = match page(q).await {
            Ok(p) => p,
            Err(e) => {
                bar.abandon_with_message(format!("stopped after {done}"));
                return Err(e);
            }
        };
        done += n;
        runs.append(&mut r);
        bar.set_position(done);
        cursor = next;
        if cursor.is_none() {
            break;
        }
    }
    bar.finish_and_clear();
    Ok((done, runs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Probe {
        #[command(flatten)]
        dlq: DlqArgs,
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Probe::command().debug_assert();
    }

    #[tokio::test]
    async fn order_is_passed_on_list_and_bulk_actions_and_is_not_a_filter() {
        let p = Probe::try_parse_from(["x", "list", "--order", "latest"]).unwrap();
        let DlqCommand::List { order, .. } = p.dlq.command else {
            panic!("list")
        };
        assert_eq!(
            Order::query(order),
            Some(("order".into(), "latestFirst".into()))
        );
        assert_eq!(Order::query(None), None, "not sent unless asked for");

        let client = DlqClient::new("http://127.0.0.1:9", None).unwrap();
        let select = |argv: &[&str]| {
            let p = Probe::try_parse_from(argv).unwrap();
            let DlqCommand::Restart(a) = p.dlq.command else {
                panic!("restart")
            };
            a.select
        };
        // A bulk action by filter carries the order on every page.
        let s = select(&["x", "restart", "--label", "a", "--order", "earliest"]);
        let mut seen = Vec::new();
        select_pages(&client, &s, |q| {
            seen.push(q);
            async { Ok((0, None, Vec::new())) }
        })
        .await
        .unwrap();
        assert!(
            seen[0].contains(&("order".into(), "earliestFirst".into())),
            "{seen:?}"
        );
        // `--order` alone selects nothing: acting on everything still needs --all.
        let s = select(&["x", "restart", "--order", "latest"]);
        let mut calls = 0;
        let err = select_pages(&client, &s, |_| {
            calls += 1;
            async { Ok((0, None, Vec::new())) }
        })
        .await
        .unwrap_err();
        assert!(matches!(err, CliError::Usage(_)), "{err}");
        assert_eq!(calls, 0);
    }

    #[test]
    fn signature_and_parked_are_filters_and_force_needs_one_id() {
        let p = Probe::try_parse_from([
            "x",
            "restart",
            "--signature",
            "00ff00ff00ff00ff",
            "--parked",
            "false",
        ])
        .unwrap();
        let DlqCommand::Restart(a) = p.dlq.command else {
            panic!("restart")
        };
        assert_eq!(
            a.select.filter.query().unwrap(),
            [
                ("signature".to_string(), "00ff00ff00ff00ff".to_string()),
                ("parked".into(), "false".into()),
            ]
        );
        assert!(Probe::try_parse_from(["x", "groups", "--label", "a", "--all"]).is_ok());
    }

    #[tokio::test]
    async fn force_is_refused_without_exactly_one_id() {
        let client = DlqClient::new("http://127.0.0.1:9", None).unwrap();
        for argv in [
            &["x", "restart", "--force", "--all"][..],
            &["x", "restart", "--force", "a", "b"],
            &["x", "resume", "--force", "a", "--label", "l"],
        ] {
            let p = Probe::try_parse_from(argv).unwrap();
            let (verb, a) = match p.dlq.command {
                DlqCommand::Restart(a) => ("restart", a),
                DlqCommand::Resume(a) => ("resume", a),
                _ => panic!("action"),
            };
            let mut out = Vec::new();
            let err = act(&client, verb, a, false, &mut out).await.unwrap_err();
            assert!(matches!(err, CliError::Usage(_)), "{argv:?}: {err}");
        }
    }

    #[test]
    fn filters_become_the_api_query() {
        let p = Probe::try_parse_from([
            "x",
            "list",
            "--label",
            "a",
            "--label",
            "b",
            "--from-date",
            "2026-01-01T00:00:00Z",
        ])
        .unwrap();
        let DlqCommand::List { filter, .. } = p.dlq.command else {
            panic!("list")
        };
        assert_eq!(
            filter.query().unwrap(),
            [
                ("fromDate".to_string(), "1767225600000".to_string()),
                ("label".into(), "a".into()),
                ("label".into(), "b".into()),
            ]
        );
        let bad = FilterArgs {
            to_date: Some("tomorrow".into()),
            ..Default::default()
        };
        assert_eq!(
            bad.query().unwrap_err().to_string(),
            "--to-date must be unix milliseconds or an RFC 3339 time, got `tomorrow`"
        );
    }
}
