//! What the CLI prints: a readable table by default, JSON with `--json`.
//!
//! Everything goes through a `Write` and returns its error, never `println!`: `println!`
//! panics when stdout is a closed pipe (`workflow-dlq dlq list | head -1`). The caller maps the
//! error to [`CliError::Output`](super::CliError::Output), and a broken pipe ends the binary
//! quietly.

use std::io::{self, Write};

use crate::http::{
    jobs::JobView,
    messages::{DlqMessage, FailureGroup, WorkflowRun},
};

/// Where results go: stdout, buffered (a long table is many small writes) and locked once.
pub fn stdout() -> io::BufWriter<io::StdoutLock<'static>> {
    io::BufWriter::new(io::stdout().lock())
}

/// A line on stderr that cannot panic: if stderr itself is gone there is nowhere left to
/// report anything, so the error is dropped (`eprintln!` would panic instead).
pub fn warn(args: std::fmt::Arguments<'_>) {
    let mut e = io::stderr().lock();
    let _ = e.write_fmt(args).and_then(|()| e.write_all(b"\n"));
}

fn time(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn cut(s: &str, max: usize) -> String {
    let s = s.replace(['\n', '\r', '\t'], " ");
    if s.chars().count() <= max {
        s
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Columns padded to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(header.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

fn json<T: serde::Serialize>(w: &mut dyn Write, v: &T) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *w, v).map_err(io::Error::from)?;
    writeln!(w)
}

/// Bulk jobs, one row each.
pub fn jobs(w: &mut dyn Write, list: &[JobView], as_json: bool) -> io::Result<()> {
    if as_json {
        return json(w, &serde_json::json!({ "jobs": list }));
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|j| {
            vec![
                j.job_id.clone(),
                j.state.clone(),
                j.action.clone(),
                j.matched.to_string(),
                j.succeeded.to_string(),
                j.failed.to_string(),
                j.skipped.to_string(),
                j.requested_by.clone(),
            ]
        })
        .collect();
    writeln!(
        w,
        "{}",
        table(
            &["JOB", "STATE", "ACTION", "MATCHED", "OK", "FAILED", "SKIPPED", "BY"],
            &rows
        )
    )
}

/// Failure groups, largest first.
pub fn groups(
    w: &mut dyn Write,
    list: &[FailureGroup],
    cursor: Option<&str>,
    as_json: bool,
) -> io::Result<()> {
    if as_json {
        return json(w, &serde_json::json!({ "groups": list, "cursor": cursor }));
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|g| {
            vec![
                g.count.to_string(),
                g.signature.clone(),
                time(g.last_seen),
                g.response_status.to_string(),
                g.failed_step
                    .as_ref()
                    .map(|s| s.step_name.clone())
                    .unwrap_or_default(),
                cut(&g.workflow_url, 40),
                cut(&g.error_pattern, 50),
            ]
        })
        .collect();
    writeln!(
        w,
        "{}",
        table(
            &[
                "COUNT",
                "SIGNATURE",
                "LAST SEEN",
                "STATUS",
                "FAILED STEP",
                "URL",
                "ERROR"
            ],
            &rows
        )
    )?;
    match cursor {
        Some(c) => writeln!(
            w,
            "{} groups; more with --cursor {c} (or --all); act on one with --signature",
            list.len()
        ),
        None => writeln!(w, "{} groups; act on one with --signature", list.len()),
    }
}

pub fn messages(
    w: &mut dyn Write,
    list: &[DlqMessage],
    cursor: Option<&str>,
    as_json: bool,
) -> io::Result<()> {
    if as_json {
        return json(
            w,
            &serde_json::json!({ "messages": list, "cursor": cursor }),
        );
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|m| {
            vec![
                m.dlq_id.clone(),
                time(m.created_at),
                m.workflow_run_id.clone(),
                cut(&m.workflow_url, 40),
                m.failed_step
                    .as_ref()
                    .map(|s| s.step_name.clone())
                    .unwrap_or_default(),
                m.labels.join(","),
                cut(&m.error_message, 40),
            ]
        })
        .collect();
    writeln!(
        w,
        "{}",
        table(
            &[
                "DLQ ID",
                "CREATED",
                "RUN",
                "URL",
                "FAILED STEP",
                "LABELS",
                "ERROR"
            ],
            &rows
        )
    )?;
    match cursor {
        Some(c) => writeln!(
            w,
            "{} entries; more with --cursor {c} (or --all)",
            list.len()
        ),
        None => writeln!(w, "{} entries", list.len()),
    }
}

pub fn message(w: &mut dyn Write, m: &DlqMessage, as_json: bool) -> io::Result<()> {
    if as_json {
        return json(w, m);
    }
    let fields = [
        ("dlqId", m.dlq_id.clone()),
        ("workflowRunId", m.workflow_run_id.clone()),
        ("workflowUrl", m.workflow_url.clone()),
        ("createdAt", time(m.created_at)),
        ("expiresAt", time(m.expires_at)),
        ("responseStatus", m.response_status.to_string()),
        (
            "failedStep",
            m.failed_step
                .as_ref()
                .map(|s| format!("{} ({})", s.step_name, s.step_id))
                .unwrap_or_default(),
        ),
        ("completedSteps", m.completed_steps.len().to_string()),
        ("labels", m.labels.join(",")),
        (
            "failureCallback",
            m.failure_callback.clone().unwrap_or_default(),
        ),
        (
            "callbackState",
            m.failure_callback_info
                .as_ref()
                .map(|i| i.state.clone())
                .unwrap_or_default(),
        ),
        ("redriveCount", m.redrive_count.to_string()),
        ("errorMessage", m.error_message.clone()),
    ];
    for (k, v) in fields {
        writeln!(w, "{k:<16} {v}")?;
    }
    Ok(())
}

pub fn runs(w: &mut dyn Write, runs: &[WorkflowRun], as_json: bool) -> io::Result<()> {
    if as_json {
        return json(w, &runs);
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.dlq_id.clone(),
                r.workflow_run_id.clone(),
                time(r.workflow_created_at),
            ]
        })
        .collect();
    writeln!(w, "{}", table(&["DLQ ID", "NEW RUN", "CREATED"], &rows))?;
    writeln!(w, "{} runs started", runs.len())
}

pub fn deleted(w: &mut dyn Write, n: u64, as_json: bool) -> io::Result<()> {
    if as_json {
        json(w, &serde_json::json!({ "deleted": n }))
    } else {
        writeln!(w, "{n} entries deleted")
    }
}
