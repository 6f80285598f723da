//! What a scenario reports: throughput, latency percentiles, peak RSS, and a ratio.

use std::time::Duration;

/// Resident set size now and at peak (kB), from /proc/self/status.
pub fn rss_kb() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets the peak RSS to the current RSS (Linux: `5` to clear_refs).
pub fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[derive(Debug, Clone, Default)]
pub struct Row {
    pub name: String,
    pub records: u64,
    pub seconds: f64,
    /// Records per second (or requests per second).
    pub rate: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub peak_rss_mb: f64,
    pub note: String,
}

impl Row {
    pub fn timed(name: &str, records: u64, took: Duration) -> Row {
        Row {
            name: name.into(),
            records,
            seconds: took.as_secs_f64(),
            rate: records as f64 / took.as_secs_f64().max(1e-9),
            ..Default::default()
        }
    }
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "—".into())
}

/// A markdown table; the ratio column compares each row's rate to the `baseline` row's.
pub fn table(title: &str, rows: &[Row], baseline: usize) {
    let base = rows.get(baseline).map(|r| r.rate).unwrap_or(f64::NAN);
    println!("\n### {title}\n");
    println!("| run | records | seconds | per second | p50 ms | p99 ms | peak RSS MB | × baseline | note |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for (i, r) in rows.iter().enumerate() {
        let ratio = if i == baseline {
            "baseline".to_string()
        } else {
            format!("{:.2}", r.rate / base)
        };
        println!(
            "| {} | {} | {:.2} | {:.0} | {} | {} | {:.0} | {} | {} |",
            r.name,
            r.records,
            r.seconds,
            r.rate,
            ms(r.p50_ms),
            ms(r.p99_ms),
            r.peak_rss_mb,
            ratio,
            r.note
        );
    }
}
