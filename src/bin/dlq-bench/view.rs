//! The view alone, in process (no broker): failure groups and a page by signature at 1,000,000
//! entries of 40 kinds, and the view's memory over payload — the groups budget of issue 15
//! (≤ 10 ms p99) measured where nothing else competes for the view.

use std::time::Instant;

use workflow_dlq::{
    signature,
    store::{EntryFilter, StoreView},
    wire::pb,
};

use crate::measure::{percentile, rss_kb};

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

pub fn groups() {
    let (rss_before, _) = rss_kb();
    let v = StoreView::new();
    v.set_max_redrives(3);
    let started = Instant::now();
    for i in 0..ENTRIES {
        v.upsert(i as i32 % 12, i as i64, &entry(i));
    }
    let (rss_after, _) = rss_kb();
    let over = (rss_after.saturating_sub(rss_before) * 1024) as f64 - v.payload_bytes() as f64;
    println!(
        "\n## view groups, in process: {ENTRIES} entries loaded in {:.1} s; payload {} B/entry, \
         RSS over payload {:.0} B/entry\n",
        started.elapsed().as_secs_f64(),
        v.payload_bytes() / ENTRIES,
        over / ENTRIES as f64
    );
    let sig = v
        .groups(&EntryFilter::all(), None, 1)
        .groups
        .first()
        .map(|g| g.signature.clone())
        .unwrap_or_default();
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
