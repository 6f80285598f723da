//! The view alone, in process (no broker): failure groups and a page by signature at 1,000,000
//! entries of 40 kinds, and the view's memory over payload — the groups budget of issue 15
//! (≤ 10 ms p99) measured where nothing else competes for the view.

use std::time::Instant;

use workflow_dlq::{
    console::{pages::list_page, session::Session},
    signature,
    store::{EntryFilter, StoreView},
    tokens::Scope,
    wire::pb,
};

use crate::{
    data,
    measure::{heap_in_use, percentile, rss_kb},
};

const ENTRIES: usize = 1_000_000;
const RUNS: usize = 200;

fn entry(i: usize) -> pb::DlqEntry {
    let created_at = 1_700_000_000_000 + i as i64;
    let mut ev = pb::FailureEvent {
        event_id: format!("e-{i}"),
        workflow_run_id: format!("run-{i}"),
        workflow_url: format!("https://shop.example.com/api/checkout-{}", i % 8),
        labels: vec![format!("label-{}", i % 10)],
        queue_name: format!("queue-{}", i % 4),
        response_status: 503,
        redrive_count: (i % 5) as i32,
        failed_step: Some(pb::Step {
            step_name: ["ship", "notify", "refund", "audit", "sync"][i % 5].into(),
            ..Default::default()
        }),
        error_message: format!("HTTP 503 from carrier for shp_{i:08} after 3 retries"),
        ..Default::default()
    };
    let sig = signature::of_event(&ev);
    ev.event_id = format!("e-{i}");
    pb::DlqEntry {
        dlq_id: format!("dlq-{i:032x}"),
        created_at,
        expires_at: created_at + 3_600_000,
        event: Some(ev),
        signature: sig,
        ..Default::default()
    }
}

fn filter(f: pb::Filter) -> EntryFilter {
    EntryFilter::compile(&f).unwrap_or_default()
}

/// The view with [`ENTRIES`] entries of 40 kinds.
fn loaded() -> StoreView {
    let v = StoreView::new();
    v.set_max_redrives(3);
    for i in 0..ENTRIES {
        v.upsert(i as i32 % 12, i as i64, &entry(i));
    }
    v
}

/// The console's list page (issue 16: page loads ≤ 300 ms at 1,000,000 entries), rendered in
/// process by the handler's own code (`console::pages::list_page`: query parsing, the page of
/// the view, the live count, the HTML) for an operator session — what a page load costs the
/// server, without the network. First pages under several filters, then the pages after them by
/// cursor.
pub fn console() {
    let started = Instant::now();
    let v = loaded();
    println!(
        "\n## console list page, in process: {ENTRIES} entries loaded in {:.1} s\n",
        started.elapsed().as_secs_f64()
    );
    let session = Session {
        name: "bench".into(),
        scope: Scope::Operate,
        expires_at: i64::MAX,
        csrf: "x".repeat(43),
    };
    let sig = largest_group_signature(&v);
    let cases = [
        ("no filter, newest first", String::new()),
        ("no filter, oldest first", "order=earliestFirst".to_string()),
        ("label (1 in 10)", "label=label-3".to_string()),
        ("signature (1 in 40)", format!("signature={sig}")),
        (
            "workflowUrl and queue (1 in 8)",
            "workflowUrl=https://shop.example.com/api/checkout-2&queueName=queue-2".to_string(),
        ),
        ("parked=true (2 in 5)", "parked=true".to_string()),
        ("100 rows, no filter", "count=100".to_string()),
    ];
    println!(
        "| page | first page p50 ms | p99 ms | next pages (20 by cursor) p50 ms | p99 ms | HTML KiB |\n\
         |---|---:|---:|---:|---:|---:|"
    );
    for (name, query) in cases {
        let mut first = Vec::new();
        let mut next = Vec::new();
        let mut bytes = 0;
        for _ in 0..20 {
            let t = Instant::now();
            let Ok((page, mut link)) = list_page(&v, &session, Some(&query)) else {
                println!("| {name} | failed | | | | |");
                return;
            };
            first.push(t.elapsed().as_secs_f64() * 1000.0);
            bytes = page.into_string().len();
            // Follow the "next page" link, as a browser would.
            for _ in 0..20 {
                let Some(href) = link.take() else { break };
                let q = href.split_once('?').map(|(_, q)| q.to_string());
                let t = Instant::now();
                if let Ok((_, l)) = list_page(&v, &session, q.as_deref()) {
                    link = l;
                }
                next.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        first.sort_by(|a, b| a.total_cmp(b));
        next.sort_by(|a, b| a.total_cmp(b));
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} |",
            percentile(&first, 50.0),
            percentile(&first, 99.0),
            percentile(&next, 50.0),
            percentile(&next, 99.0),
            bytes as f64 / 1024.0
        );
    }
}

pub fn groups() {
    let (rss_before, _) = rss_kb();
    let started = Instant::now();
    let v = loaded();
    let (rss_after, _) = rss_kb();
    let over = (rss_after.saturating_sub(rss_before) * 1024) as f64 - v.payload_bytes() as f64;
    println!(
        "\n## view groups, in process: {ENTRIES} entries loaded in {:.1} s; payload {} B/entry, \
         RSS over payload {:.0} B/entry\n",
        started.elapsed().as_secs_f64(),
        v.payload_bytes() / ENTRIES,
        over / ENTRIES as f64
    );
    let sig = largest_group_signature(&v);
    let cases = [
        ("groups, no filter", EntryFilter::all(), true),
        (
            "groups, label (1 in 10)",
            filter(pb::Filter {
                label: vec!["label-3".into()],
                ..Default::default()
            }),
            true,
        ),
        (
            "groups, parked=true (2 in 5)",
            filter(pb::Filter {
                parked: Some(true),
                ..Default::default()
            }),
            true,
        ),
        (
            "page of 100, signature (1 in 40)",
            filter(pb::Filter {
                signature: vec![sig],
                ..Default::default()
            }),
            false,
        ),
    ];
    println!("| query | p50 ms | p99 ms | answer |\n|---|---:|---:|---|");
    for (name, filter, groups) in cases {
        let mut answer = 0;
        let mut times: Vec<f64> = (0..RUNS)
            .map(|_| {
                let t = Instant::now();
                answer = if groups {
                    v.groups(&filter, None, 100).groups.len()
                } else {
                    v.list(&filter, None, 100).entries.len()
                };
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        times.sort_by(|a, b| a.total_cmp(b));
        let what = if groups { "groups" } else { "entries" };
        println!(
            "| {name} | {:.2} | {:.2} | {answer} {what} |",
            percentile(&times, 50.0),
            percentile(&times, 99.0)
        );
    }
}

/// The signature of the largest group: the bench's signature filter.
fn largest_group_signature(v: &StoreView) -> String {
    v.groups(&EntryFilter::all(), None, 1)
        .groups
        .first()
        .map(|g| g.signature.clone())
        .unwrap_or_default()
}

/// The view's own memory at each of `sizes` entries of `dlq-bench`'s data, in process: a fresh
/// view replays the stored entries as a cold start does (reserved, lists deferred, built when
/// caught up), and the allocator's bytes in use (glibc's count, chunk headers included) are
/// read before the entries' bytes exist and after the view holds them. Nothing else allocates
/// meanwhile — no client, no broker, no fetch buffer — so unlike the service's RSS this is
/// exact at 10,000 entries, where a megabyte of noise is 100 B per entry.
///
/// The data has 65,536 caller IPs (and 1,000 flow-control keys, 10 labels, 8 URLs, 40
/// signatures): below 65,536 entries each IP is held by one entry, so the view's cost per
/// distinct value shows as cost per entry there.
pub fn memory_curve(sizes: &[u64]) {
    println!(
        "\n## the view alone, in process: heap over payload per entry\n\n         | entries | payload B/entry | heap over payload B/entry |\n|---:|---:|---:|"
    );
    for &n in sizes {
        let Some(before) = heap_in_use() else {
            println!("| {n} | — | no heap count off glibc |");
            continue;
        };
        let v = StoreView::new();
        v.reserve(n);
        v.defer_lists();
        // Blocks of entries' bytes as the store reader makes them (~1 MiB each).
        const BLOCK: usize = 1 << 20;
        let (mut block, mut batch) = (Vec::with_capacity(BLOCK), Vec::new());
        for i in 0..n {
            let (_, raw) = data::stored_entry(i, "curve", 3_600_000);
            if block.len() + raw.len() > BLOCK {
                let full = std::mem::replace(&mut block, Vec::with_capacity(BLOCK));
                v.adopt_block(full).upsert_all(batch.drain(..));
            }
            // (partition, offset) as if written to 12 partitions in turn.
            batch.push((
                (i % 12) as i32,
                (i / 12) as i64,
                block.len() as u32,
                raw.len() as u32,
            ));
            block.extend_from_slice(&raw);
        }
        block.shrink_to_fit();
        v.adopt_block(block).upsert_all(batch.drain(..));
        drop(batch);
        v.set_caught_up();
        let after = heap_in_use().unwrap_or(before);
        let payload = v.payload_bytes() as f64;
        let over = (after as f64 - before as f64 - payload) / n as f64;
        println!("| {n} | {:.0} | {over:.0} |", payload / n as f64);
        drop(v);
    }
}
