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

/// Bytes the allocator has handed out and not had back (glibc's `mallinfo2`: the arenas' bytes
/// in use plus mmapped blocks); `None` off glibc. Unlike RSS it does not count free memory the
/// allocator keeps, so it shows whether a change in RSS per entry is the view's allocations or
/// the heap's holes.
pub fn heap_in_use() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        #[repr(C)]
        struct MallInfo2 {
            arena: usize,
            ordblks: usize,
            smblks: usize,
            hblks: usize,
            hblkhd: usize,
            usmblks: usize,
            fsmblks: usize,
            uordblks: usize,
            fordblks: usize,
            keepcost: usize,
        }
        extern "C" {
            fn mallinfo2() -> MallInfo2;
        }
        // SAFETY: glibc's `mallinfo2` (2.33+) only reads the arenas' statistics under their locks.
        let m = unsafe { mallinfo2() };
        Some((m.uordblks + m.hblkhd) as u64)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// Writes the page cache's dirty pages to disk now (`sync`), and waits for it. The bench loads
/// ~1.4 GB into the broker just before a cold start and its queries; the kernel writes those
/// pages back ~30 s later (`vm.dirty_expire_centisecs`), in the middle of the query rows, where
/// it showed as p99 spikes with the service's code unchanged. Loading the store is the bench's
/// set-up, not the service's work: its writeback is done before anything is timed.
pub fn write_back_now() {
    #[cfg(unix)]
    {
        extern "C" {
            fn sync();
        }
        // SAFETY: `sync` takes no arguments and has no preconditions.
        unsafe { sync() };
    }
}

/// Resets the peak RSS to the current RSS (Linux: `5` to clear_refs).
pub fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// CPU time used so far (µs) by this process and by the Kafka broker on this machine (the
/// first process whose command line runs `kafka.Kafka`; none when the broker is elsewhere).
/// Where a rate is bound by CPU, CPU per record says which side spends it.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    process_us: u64,
    broker_us: Option<u64>,
}

fn cpu_us_of(stat_path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = &stat[stat.rfind(") ")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(ticks * 10_000)
}

fn broker_pid() -> Option<String> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let name = e.file_name().into_string().ok()?;
        name.parse::<u32>().ok()?;
        let cmdline = std::fs::read(format!("/proc/{name}/cmdline")).ok()?;
        String::from_utf8_lossy(&cmdline)
            .contains("kafka.Kafka")
            .then_some(name)
    })
}

impl CpuMark {
    pub fn now() -> CpuMark {
        CpuMark {
            process_us: cpu_us_of("/proc/self/stat").unwrap_or(0),
            broker_us: broker_pid().and_then(|p| cpu_us_of(&format!("/proc/{p}/stat"))),
        }
    }

    /// "process + broker µs per record" since `self`, for a row's note.
    pub fn per_record(&self, records: u64) -> String {
        let now = CpuMark::now();
        let per = |us: u64| us as f64 / records.max(1) as f64;
        let ours = per(now.process_us.saturating_sub(self.process_us));
        match (self.broker_us, now.broker_us) {
            (Some(a), Some(b)) => {
                let broker = per(b.saturating_sub(a));
                format!(
                    "CPU {:.1} µs/record ({ours:.1} bench process + {broker:.1} broker)",
                    ours + broker
                )
            }
            _ => format!("CPU {ours:.1} µs/record (bench process)"),
        }
    }
}

/// Per thread name: nanoseconds on a CPU and waiting for one (runnable, not running), from
/// `/proc/<pid>/task/*/schedstat`, this process's threads by name and the broker's as one.
/// A chain of threads on 2 cores is bound by its busiest link: this says which link, and
/// whether it was working or queued behind the others.
pub struct ThreadMark {
    at: std::time::Instant,
    threads: std::collections::BTreeMap<String, (u64, u64)>,
}

fn schedstats(pid: &str, name_of: impl Fn(&str) -> String) -> Vec<(String, u64, u64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let dir = t.path();
            let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
            let stat = std::fs::read_to_string(dir.join("schedstat")).ok()?;
            let mut f = stat.split_whitespace().map(|v| v.parse::<u64>().ok());
            Some((name_of(comm.trim()), f.next()??, f.next()??))
        })
        .collect()
}

impl ThreadMark {
    pub fn now() -> ThreadMark {
        let mut threads = std::collections::BTreeMap::new();
        let mut all = schedstats("self", str::to_string);
        if let Some(broker) = broker_pid() {
            all.extend(schedstats(&broker, |_| {
                "(broker JVM, all threads)".to_string()
            }));
        }
        for (name, run, wait) in all {
            let e: &mut (u64, u64) = threads.entry(name).or_default();
            e.0 += run;
            e.1 += wait;
        }
        ThreadMark {
            at: std::time::Instant::now(),
            threads,
        }
    }

    /// A table of each thread's share of the window from `self` to `now`, in % of one core: on
    /// a CPU, and runnable but waiting for one. Threads under 2% of both are left out.
    pub fn table(&self, now: &ThreadMark, title: &str) {
        let wall = now.at.duration_since(self.at).as_nanos().max(1) as f64;
        let mut rows: Vec<(String, f64, f64)> = now
            .threads
            .iter()
            .map(|(name, (run, wait))| {
                let (r0, w0) = self.threads.get(name).copied().unwrap_or_default();
                let pct = |a: u64, b: u64| a.saturating_sub(b) as f64 * 100.0 / wall;
                (name.clone(), pct(*run, r0), pct(*wait, w0))
            })
            .filter(|(_, run, wait)| *run >= 2.0 || *wait >= 2.0)
            .collect();
        rows.sort_by(|a, b| b.1.total_cmp(&a.1));
        println!("\n### {title}\n");
        println!("| thread | on a CPU, % of one core | runnable, waiting for a CPU, % |");
        println!("|---|---:|---:|");
        for (name, run, wait) in &rows {
            println!("| {name} | {run:.1} | {wait:.1} |");
        }
        let total: f64 = rows.iter().map(|r| r.1).sum();
        println!("| all of the above | {total:.1} | — |");
    }
}

/// `note` and `more` joined by "; " (either may be empty).
pub fn join_note(note: &str, more: &str) -> String {
    match (note.is_empty(), more.is_empty()) {
        (true, _) => more.to_string(),
        (_, true) => note.to_string(),
        _ => format!("{note}; {more}"),
    }
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
