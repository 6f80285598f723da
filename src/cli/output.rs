//! What the CLI prints: a readable table by default, JSON with `--json`.

use crate::http::messages::{DlqMessage, WorkflowRun};

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

fn json<T: serde::Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    );
}

pub fn messages(list: &[DlqMessage], cursor: Option<&str>, as_json: bool) {
    if as_json {
        json(&serde_json::json!({ "messages": list, "cursor": cursor }));
        return;
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
    println!(
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
    );
    match cursor {
        Some(c) => println!("{} entries; more with --cursor {c} (or --all)", list.len()),
        None => println!("{} entries", list.len()),
    }
}

pub fn message(m: &DlqMessage, as_json: bool) {
    if as_json {
        json(m);
        return;
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
        println!("{k:<16} {v}");
    }
}

pub fn runs(runs: &[WorkflowRun], as_json: bool) {
    if as_json {
        json(&runs);
        return;
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
    println!("{}", table(&["DLQ ID", "NEW RUN", "CREATED"], &rows));
    println!("{} runs started", runs.len());
}

pub fn deleted(n: u64, as_json: bool) {
    if as_json {
        json(&serde_json::json!({ "deleted": n }));
    } else {
        println!("{n} entries deleted");
    }
}
