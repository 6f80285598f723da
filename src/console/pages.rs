//! The console's read-only pages: overview, entries (list and one), groups, jobs, rejected,
//! and the two small JSON answers the script polls (live count, job progress). Every page is
//! built from the same state the JSON API reads.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{Extension, Path, RawQuery, State},
    response::{IntoResponse, Response},
    Json,
};
use maud::{html, Markup};

use super::{
    console_query, html as h,
    html::{can_act, page as frame, Nav},
    ms_to_input, page,
    session::Session,
    ConsoleError,
};
use crate::{
    http::{
        jobs::{self, JobView},
        query::{parse_groups_query, parse_query},
        AppState,
    },
    signature::url_without_query,
    store::{EntryFilter, StoreView},
    wire::pb::{failure_callback_info::State as CbState, DlqEntry, HeaderValues},
};

/// Rows per list page unless `count` says otherwise.
const LIST_COUNT: &str = "50";
/// Arrivals plot: buckets of this many minutes, this many buckets (3 hours).
const BUCKET_MINUTES: u64 = 1;
const BUCKETS: usize = 180;
/// Consumer lag is measured on demand, within this.
const LAG_WAIT: Duration = Duration::from_secs(4);

fn view_ready(s: &AppState) -> Result<(), ConsoleError> {
    if s.view.is_caught_up() {
        Ok(())
    } else {
        Err(ConsoleError::unavailable(
            "the store view is still loading from Kafka; reload in a moment".into(),
        ))
    }
}

// ---- sign-in ----

pub async fn signin_form() -> Response {
    page(signin_page(None))
}

pub fn signin_page(error: Option<&str>) -> Markup {
    frame(
        "Sign in",
        Nav::None,
        None,
        html! {
            @if let Some(e) = error {
                p.error role="alert" #signin-error { (e) }
            }
            form.card method="post" action="/console/signin" {
                p { "Sign in with an API token (" code { "--api-token" } " or one of "
                    code { "--api-tokens" } "). Its scope decides what you can do here." }
                label for="token" { "API token" }
                input #token type="password" name="token" autocomplete="current-password" required;
                button #sign-in type="submit" { "Sign in" }
            }
        },
    )
}

// ---- overview ----

async fn lag(s: &AppState, group: String, topic: String) -> Option<i64> {
    let conn = s.kafka.clone();
    let work =
        tokio::task::spawn_blocking(move || crate::kafka::lag::group_lag(&conn, &group, &topic));
    match tokio::time::timeout(LAG_WAIT, work).await {
        Ok(Ok(Ok(n))) => Some(n),
        _ => None,
    }
}

pub async fn overview(
    State(s): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
) -> Result<Response, ConsoleError> {
    let now = crate::now_ms();
    let arrivals = s
        .view
        .arrivals(now, BUCKET_MINUTES as i64 * 60_000, BUCKETS);
    let oldest = s.view.list(&EntryFilter::all(), None, 1).entries.pop();
    let groups = s.view.groups(&EntryFilter::all(), None, 5).groups;
    let (ingest_lag, command_lag, rejected) = tokio::join!(
        lag(&s, s.cfg.group_id.clone(), s.cfg.topics.failures.clone()),
        lag(
            &s,
            format!("{}.commands", s.cfg.group_id),
            s.cfg.topics.commands.clone()
        ),
        super::rejected::tail(&s.kafka, &s.cfg.topics.rejected, 0),
    );
    let shown = |n: Option<i64>| n.map_or("unknown".to_string(), |n| n.to_string());
    let body = html! {
        @if !s.view.is_caught_up() {
            p.notice role="status" { "The store view is still loading from Kafka: figures are partial." }
        }
        dl.stats {
            div { dt { "Entries" } dd #stat-entries { (s.view.len()) } }
            div { dt { "Rejected records" } dd #stat-rejected {
                @match &rejected { Ok(t) => (t.total), Err(_) => "unknown" } } }
            div { dt { "Ingest lag" } dd #stat-ingest-lag { (shown(ingest_lag)) } }
            div { dt { "Command lag" } dd { (shown(command_lag)) } }
            div { dt { "Oldest entry" } dd #stat-oldest.small {
                @match &oldest {
                    Some(e) => {
                        a href=(format!("/console/entries/{}", h::seg(&e.dlq_id))) { (h::time(e.created_at)) }
                        br;
                        @if e.expires_at > 0 {
                            "expires in " (h::span(e.expires_at - now))
                        }
                    }
                    None => "none",
                }
            } }
            div { dt { "Kafka" } dd { (if s.health.kafka_reachable() { "reachable" } else { "unreachable" }) } }
        }
        h2 { "Arrivals per minute, last 3 hours" }
        (h::arrivals_svg(&arrivals, BUCKET_MINUTES))
        h2 { "Largest failure groups" }
        (groups_table(&groups, &session, false))
        p { a href="/console/groups" { "All groups" } }
    };
    Ok(page(frame("Overview", Nav::Overview, Some(&session), body)))
}

// ---- entries ----

/// The rows of a list page, plus what its links need.
pub async fn list(
    State(s): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsoleError> {
    view_ready(&s)?;
    let (markup, _) = list_page(&s.view, &session, raw.as_deref())?;
    Ok(page(markup))
}

/// The list page for a console query, and the link to its next page: all of the handler's work
/// but the response, apart so `dlq-bench console` can time it at 1,000,000 entries.
pub fn list_page(
    view: &StoreView,
    session: &Session,
    raw: Option<&str>,
) -> Result<(Markup, Option<String>), ConsoleError> {
    let cq = console_query(raw)?;
    let mut api = form_urlencoded::Serializer::new(cq.filter.clone());
    api.append_pair("count", cq.count.as_deref().unwrap_or(LIST_COUNT));
    // Newest first unless asked otherwise (a cursor carries its own order).
    match (&cq.order, &cq.cursor) {
        (Some(o), _) => {
            api.append_pair("order", o);
        }
        (None, None) => {
            api.append_pair("order", "latestFirst");
        }
        (None, Some(_)) => {}
    }
    if let Some(c) = &cq.cursor {
        api.append_pair("cursor", c);
    }
    let q = parse_query(Some(&api.finish()))?;
    if !q.dlq_ids.is_empty() {
        return Err(ConsoleError::bad_request(
            "`dlqIds` is not a console filter: open an entry by its link".into(),
        ));
    }
    let started = std::time::Instant::now();
    let page_of = view.list_in(&q.compiled, q.order, q.cursor.as_ref(), q.count);
    let matches = view.count(&q.compiled);
    let took = started.elapsed();
    let order = q.order.as_str();
    let paging = |cursor: Option<&str>| {
        let mut p = form_urlencoded::Serializer::new(cq.filter.clone());
        p.append_pair("order", order);
        p.append_pair("count", &q.count.to_string());
        if let Some(c) = cursor {
            p.append_pair("cursor", c);
        }
        format!("/console/entries?{}", p.finish())
    };
    let next = page_of.next.map(|c| paging(Some(&c.encode())));
    let acting = can_act(session);
    let value_of = |name: &str| -> String {
        let vals: Vec<String> = form_urlencoded::parse(cq.filter.as_bytes())
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .collect();
        vals.join(",")
    };
    let rows = html! {
        div.table-wrap {
            table #entries {
                caption.visually-hidden { "DLQ entries" }
                thead { tr {
                    @if acting { th scope="col" {
                        input #select-all type="checkbox" aria-label="Select every entry on this page";
                    } }
                    th scope="col" { "Entered" }
                    th scope="col" { "Workflow" }
                    th scope="col" { "Failed step" }
                    th scope="col" { "Status" }
                    th scope="col" { "Error" }
                    th scope="col" { "Labels" }
                    th scope="col" { "Callback" }
                } }
                tbody {
                    @for e in &page_of.entries {
                        (entry_row(e, acting))
                    }
                    @if page_of.entries.is_empty() {
                        tr { td colspan="8" { "No entries match." } }
                    }
                }
            }
        }
        nav.paging aria-label="Pages" {
            @if q.cursor.is_some() { a #first-page href=(paging(None)) { "First page" } }
            @if let Some(n) = &next { a #next-page href=(n) { "Next page" } }
        }
    };
    let body = html! {
        (filter_form(&value_of, order, q.count))
        p.count role="status" {
            output #match-count data-count-url=(format!("/console/count?{}", cq.filter)) { (matches) }
            " entries match"
            @if !cq.filter.is_empty() { " the filter" }
            " · page built in " (format!("{:.1}", took.as_secs_f64() * 1000.0)) " ms"
        }
        @if acting {
            form #bulk-form method="post" action="/console/bulk" {
                input type="hidden" name="csrf" value=(session.csrf);
                input type="hidden" name="filter" value=(cq.filter);
                (rows)
                (bulk_fields(matches))
            }
        } @else {
            (rows)
        }
    };
    Ok((frame("Entries", Nav::Entries, Some(session), body), next))
}

fn filter_form(value_of: &dyn Fn(&str) -> String, order: &str, count: usize) -> Markup {
    let text = |name: &str, label: &str, hint: &str| {
        html! {
            div.field {
                label for=(format!("f-{name}")) { (label) }
                input id=(format!("f-{name}")) name=(name) type="text" value=(value_of(name)) placeholder=(hint);
            }
        }
    };
    let date = |name: &str, label: &str| {
        html! {
            div.field {
                label for=(format!("f-{name}")) { (label) " (UTC)" }
                input id=(format!("f-{name}")) name=(name) type="datetime-local" value=(ms_to_input(&value_of(name)));
            }
        }
    };
    let cb = value_of("failureFunctionState");
    let parked = value_of("parked");
    html! {
        form #filters.filters method="get" action="/console/entries" role="search" {
            fieldset {
                legend { "Filter" }
                div.grid {
                    (text("workflowUrl", "Workflow URL", "https://…"))
                    (text("workflowRunId", "Run id", "wfr-…"))
                    (text("label", "Label", "a,b"))
                    (text("responseStatus", "Response status", "500,502"))
                    (text("signature", "Signature", "16 hex digits"))
                    div.field {
                        label for="f-failureFunctionState" { "Failure callback" }
                        select #f-failureFunctionState name="failureFunctionState" {
                            option value="" { "any" }
                            @for st in ["CALLBACK_INPROGRESS", "CALLBACK_SUCCESS", "CALLBACK_FAIL", "CALLBACK_CANCELED"] {
                                option value=(st) selected[cb == st] { (st) }
                            }
                        }
                    }
                    (date("fromDate", "Entered from"))
                    (date("toDate", "Entered until"))
                    (text("callerIp", "Caller IP", "10.0.0.1"))
                    (text("flowControlKey", "Flow-control key", ""))
                    (text("messageId", "Message id", "msg-…"))
                    (text("workflowCreatedAt", "Run created at (unix ms)", ""))
                    (text("topicName", "URL group", ""))
                    (text("scheduleId", "Schedule id", ""))
                    (text("queueName", "Queue", ""))
                    div.field {
                        label for="f-parked" { "Parked" }
                        select #f-parked name="parked" {
                            option value="" { "either" }
                            option value="true" selected[parked == "true"] { "parked only" }
                            option value="false" selected[parked == "false"] { "not parked" }
                        }
                    }
                    div.field {
                        label for="f-order" { "Order" }
                        select #f-order name="order" {
                            option value="latestFirst" selected[order == "latestFirst"] { "newest first" }
                            option value="earliestFirst" selected[order == "earliestFirst"] { "oldest first" }
                        }
                    }
                    div.field {
                        label for="f-count" { "Per page" }
                        select #f-count name="count" {
                            @for n in [25usize, 50, 100] {
                                option value=(n) selected[n == count] { (n) }
                            }
                        }
                    }
                }
                div.buttons {
                    button #apply-filter type="submit" { "Apply" }
                    a href="/console/entries" { "Clear" }
                }
            }
        }
    }
}

fn callback_state(e: &DlqEntry) -> &'static str {
    e.event
        .as_ref()
        .and_then(|ev| ev.failure_callback_info.as_ref())
        .and_then(|i| CbState::try_from(i.state).ok())
        .map_or("", |s| s.as_str_name())
}

fn entry_row(e: &DlqEntry, acting: bool) -> Markup {
    let ev = e.event.clone().unwrap_or_default();
    let href = format!("/console/entries/{}", h::seg(&e.dlq_id));
    html! {
        tr {
            @if acting { td {
                input type="checkbox" name="dlqIds" value=(e.dlq_id)
                    aria-label=(format!("Select {}", e.dlq_id));
            } }
            td { a.entry-link href=(href) { (h::time(e.created_at)) } }
            td.wrap {
                span.url { (url_without_query(&ev.workflow_url)) } br;
                small { (ev.workflow_run_id) }
            }
            td { @if let Some(st) = &ev.failed_step { (st.step_name) } }
            td { @if ev.response_status != 0 { (ev.response_status) } }
            td.wrap.error-cell { (h::preview(&ev.error_message, 120)) }
            td { (ev.labels.join(", ")) }
            td { (callback_state(e)) }
        }
    }
}

/// The action fields shared by the list's bulk form, the group forms and the entry page.
fn override_fields(id_prefix: &str) -> Markup {
    let f = |name: &str, label: &str, hint: &str| {
        let id = format!("{id_prefix}-{name}");
        html! {
            div.field {
                label for=(id) { (label) }
                input id=(id) name=(name) type="text" placeholder=(hint);
            }
        }
    };
    html! {
        details.overrides {
            summary { "Overrides (restart and resume)" }
            div.grid {
                (f("retries", "Retries", "0–1000"))
                (f("delay", "Delay", "30s"))
                (f("retryDelay", "Retry delay", "pow(2, retried) * 1000"))
                (f("flowControlKey", "Flow-control key", "tenant-1"))
                (f("flowControlValue", "Flow-control value", "parallelism=2, rate=10, period=1m"))
                (f("label", "Label", "a,b"))
                (f("failureCallback", "Failure callback URL", "https://…"))
            }
        }
    }
}

fn action_select(id: &str) -> Markup {
    html! {
        label for=(id) { "Action" }
        select id=(id) name="action" {
            option value="RESTART" { "Restart" }
            option value="RESUME" { "Resume" }
            option value="RETRY_FAILURE_CALLBACK" { "Retry failure callback" }
            option value="DELETE" { "Delete" }
        }
    }
}

fn bulk_fields(matches: u64) -> Markup {
    html! {
        fieldset.bulk {
            legend { "Act in bulk" }
            div.grid {
                div.field { (action_select("bulk-action")) }
                div.field {
                    label for="bulk-rate" { "Entries per second" }
                    input #bulk-rate name="maxPerSecond" type="number" min="0.1" step="any" placeholder="service default";
                }
            }
            (override_fields("bulk"))
            p.hint { "Nothing is done yet: the next page shows how many entries the action would touch and asks to confirm." }
            div.buttons {
                button #act-selected type="submit" name="target" value="selection" {
                    "Selected entries (" output #selected-count { "0" } ")…"
                }
                button #act-filter type="submit" name="target" value="filter" {
                    "All " (matches) " matching…"
                }
            }
        }
    }
}

/// The live count the list page polls.
pub async fn count(
    State(s): State<Arc<AppState>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsoleError> {
    let cq = console_query(raw.as_deref())?;
    let q = parse_query(Some(&cq.filter))?;
    view_ready(&s)?;
    Ok(Json(serde_json::json!({ "count": s.view.count(&q.compiled) })).into_response())
}

fn headers_list(hs: &std::collections::BTreeMap<String, HeaderValues>) -> Markup {
    let sorted: Vec<_> = hs.iter().collect();
    html! {
        @if sorted.is_empty() { p { "(none)" } } @else {
            dl.headers {
                @for (k, v) in sorted {
                    dt { (k) } dd { (v.values.join(", ")) }
                }
            }
        }
    }
}

pub async fn entry(
    State(s): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(dlq_id): Path<String>,
) -> Result<Response, ConsoleError> {
    view_ready(&s)?;
    let e = s
        .view
        .get(&dlq_id)
        .ok_or_else(|| ConsoleError::not_found(format!("DLQ entry `{dlq_id}` was not found")))?;
    Ok(page(entry_page(&s, &session, &e)))
}

fn entry_page(s: &AppState, session: &Session, e: &DlqEntry) -> Markup {
    let ev = e.event.clone().unwrap_or_default();
    let cb = ev.failure_callback_info.clone().unwrap_or_default();
    let cb_state = callback_state(e);
    let parked = crate::store::filter::is_parked(ev.redrive_count, s.cfg.max_redrives);
    let body = html! {
        p.lead { code #dlq-id { (e.dlq_id) } }
        @if can_act(session) {
            form.card #entry-actions method="post" action=(format!("/console/entries/{}/act", h::seg(&e.dlq_id))) {
                input type="hidden" name="csrf" value=(session.csrf);
                h2 { "Actions" }
                (override_fields("one"))
                @if parked {
                    div.field.check {
                        input #force type="checkbox" name="force" value="true";
                        label for="force" { "Act although the entry is parked (redriven " (ev.redrive_count) " times)" }
                    }
                }
                div.buttons {
                    button #restart type="submit" name="action" value="RESTART" { "Restart" }
                    button #resume type="submit" name="action" value="RESUME" { "Resume" }
                    @if cb_state == "CALLBACK_FAIL" {
                        button #retry-callback type="submit" name="action" value="RETRY_FAILURE_CALLBACK" { "Retry failure callback" }
                    }
                    button #delete.danger type="submit" name="action" value="DELETE" { "Delete" }
                }
            }
        }
        section {
            h2 { "Run" }
            dl.kv {
                dt { "Workflow URL" } dd #workflow-url { (ev.workflow_url) }
                dt { "Run id" } dd { (ev.workflow_run_id) }
                dt { "Message id" } dd { (ev.message_id) }
                dt { "Run created" } dd { (h::time(ev.workflow_created_at)) }
                dt { "Entered the DLQ" } dd { (h::time(e.created_at)) }
                dt { "Expires" } dd { (h::time(e.expires_at)) }
                dt { "Failed at" } dd { (h::time(ev.failed_at)) }
                dt { "Caller IP" } dd { (ev.caller_ip) }
                dt { "Labels" } dd { (ev.labels.join(", ")) }
                dt { "Max retries" } dd { (ev.max_retries) }
                dt { "Flow control" } dd {
                    @if let Some(fc) = &ev.flow_control {
                        (fc.key) ": parallelism " (fc.parallelism) ", rate " (fc.rate) " per " (fc.period_seconds) " s"
                    } @else { "—" }
                }
                dt { "Signature" } dd { a href=(format!("/console/entries?signature={}", h::seg(&e.signature))) { (e.signature) } }
                dt { "Redrives" } dd { (ev.redrive_count) @if parked { " (parked)" } }
                dt { "Lineage" } dd {
                    @if ev.lineage.is_empty() { "—" }
                    @for id in &ev.lineage { code { (id) } " " }
                }
                dt { "Source" } dd { (e.source_topic) " [" (e.source_partition) "] @" (e.source_offset) }
            }
        }
        section {
            h2 { "Request" }
            p { code { (ev.method) " " (ev.workflow_url) } }
            h3 { "Headers" }
            (headers_list(&ev.header))
            h3 { "Body" }
            pre #request-body { (h::body_text(&ev.body)) }
        }
        section {
            h2 { "Steps" }
            @if ev.completed_steps.is_empty() { p { "No step completed." } }
            ol.steps {
                @for st in &ev.completed_steps {
                    li {
                        strong { (st.step_name) } " " small { (st.step_type) " · " (h::time(st.completed_at)) }
                        pre { (h::body_text(&st.out)) }
                    }
                }
            }
            h3 { "Failed step" }
            @if let Some(st) = &ev.failed_step {
                p #failed-step { strong { (st.step_name) } " " small { (st.step_type) } }
            } @else { p { "—" } }
        }
        section {
            h2 { "Response" }
            p { "Status " strong #response-status { (ev.response_status) } }
            h3 { "Headers" }
            (headers_list(&ev.response_header))
            h3 { "Body" }
            pre #response-body { (h::body_text(&ev.response_body)) }
            h3 { "Error" }
            pre #error-message { (ev.error_message) }
        }
        section {
            h2 { "Failure callback" }
            dl.kv {
                dt { "URL" } dd { (ev.failure_callback) }
                dt { "State" } dd #callback-state { (cb_state) }
                dt { "Response status" } dd { (cb.response_status) }
            }
        }
    };
    frame("Entry", Nav::Entries, Some(session), body)
}

// ---- groups ----

fn groups_table(groups: &[crate::store::view::Group], session: &Session, actions: bool) -> Markup {
    let acting = actions && can_act(session);
    html! {
        div.table-wrap {
            table.groups {
                thead { tr {
                    th scope="col" { "Entries" }
                    th scope="col" { "Workflow" }
                    th scope="col" { "Failed step" }
                    th scope="col" { "Status" }
                    th scope="col" { "Error" }
                    th scope="col" { "Last seen" }
                    @if acting { th scope="col" { "Act on the group" } }
                } }
                tbody {
                    @if groups.is_empty() { tr { td colspan="7" { "No groups." } } }
                    @for g in groups {
                        @let ev = g.sample.as_ref().and_then(|e| e.event.clone()).unwrap_or_default();
                        tr {
                            td { a href=(format!("/console/entries?signature={}", h::seg(&g.signature))) { (g.count) } }
                            td.wrap { (url_without_query(&ev.workflow_url)) }
                            td { @if let Some(st) = &ev.failed_step { (st.step_name) } }
                            td { (ev.response_status) }
                            td.wrap.error-cell { (h::preview(&crate::signature::normalise_message(&ev.error_message), 120)) }
                            td { (h::time(g.last_seen)) }
                            @if acting {
                                td {
                                    form.inline method="post" action="/console/bulk" {
                                        input type="hidden" name="csrf" value=(session.csrf);
                                        input type="hidden" name="target" value="filter";
                                        input type="hidden" name="filter" value=(format!("signature={}", g.signature));
                                        (action_select(&format!("g-{}", g.signature)))
                                        button type="submit" { "Act…" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub async fn groups(
    State(s): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsoleError> {
    let cq = console_query(raw.as_deref())?;
    let mut api = form_urlencoded::Serializer::new(cq.filter.clone());
    if let Some(c) = &cq.cursor {
        api.append_pair("cursor", c);
    }
    api.append_pair("count", "50");
    let q = parse_groups_query(Some(&api.finish()))?;
    view_ready(&s)?;
    let page_of = s.view.groups(&q.filter, q.cursor.as_ref(), q.count);
    let next = page_of.next.as_ref().map(|c| {
        let mut p = form_urlencoded::Serializer::new(cq.filter.clone());
        p.append_pair("cursor", &c.encode());
        format!("/console/groups?{}", p.finish())
    });
    let body = html! {
        p { "Entries grouped by failure signature (the same kind of failure), largest first. "
            "Acting on a group shows the dry-run count first." }
        (groups_table(&page_of.groups, &session, true))
        @if let Some(n) = next { nav.paging { a href=(n) { "Next page" } } }
    };
    Ok(page(frame("Groups", Nav::Groups, Some(&session), body)))
}

// ---- jobs ----

pub async fn jobs(
    State(s): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
) -> Result<Response, ConsoleError> {
    let list = jobs::recent_jobs(&s, 50);
    let body = html! {
        div.table-wrap {
            table #jobs {
                thead { tr {
                    th scope="col" { "Job" } th scope="col" { "Action" } th scope="col" { "State" }
                    th scope="col" { "Matched" } th scope="col" { "Done" } th scope="col" { "Failed" }
                    th scope="col" { "Skipped" } th scope="col" { "Started" } th scope="col" { "By" }
                } }
                tbody {
                    @if list.is_empty() { tr { td colspan="9" { "No jobs yet." } } }
                    @for j in &list {
                        tr {
                            td { a href=(format!("/console/jobs/{}", h::seg(&j.job_id))) { (j.job_id) } }
                            td { (j.action) @if j.dry_run { " (dry run)" } }
                            td { (j.state) }
                            td { (j.matched) } td { (j.succeeded) } td { (j.failed) } td { (j.skipped) }
                            td { (h::time(j.started_at)) }
                            td { (j.requested_by) }
                        }
                    }
                }
            }
        }
    };
    Ok(page(frame("Jobs", Nav::Jobs, Some(&session), body)))
}

pub async fn job(
    State(s): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(job_id): Path<String>,
) -> Result<Response, ConsoleError> {
    let v = jobs::job_view(&s, &job_id);
    let state = v.as_ref().map_or("pending", |v| v.state.as_str());
    let running = matches!(state, "running" | "pending");
    let n = |f: fn(&JobView) -> i64| v.as_ref().map_or(0, f);
    let body = html! {
        p.lead { code #job-id { (job_id) } }
        div #job data-progress-url=(format!("/console/jobs/{}/progress", h::seg(&job_id))) {
            dl.stats {
                div { dt { "State" } dd #job-state data-field="state" { (state) } }
                div { dt { "Action" } dd data-field="action" { (v.as_ref().map_or("", |v| v.action.as_str())) } }
                div { dt { "Matched" } dd #job-matched data-field="matched" { (n(|v| v.matched)) } }
                div { dt { "Succeeded" } dd #job-succeeded data-field="succeeded" { (n(|v| v.succeeded)) } }
                div { dt { "Failed" } dd #job-failed data-field="failed" { (n(|v| v.failed)) } }
                div { dt { "Skipped" } dd #job-skipped data-field="skipped" { (n(|v| v.skipped)) } }
            }
            label for="job-progress" { "Progress" }
            progress #job-progress max=(n(|v| v.matched).max(1))
                value=(n(|v| v.succeeded + v.failed + v.skipped)) {}
            @if let Some(v) = &v {
                p { "Started " (h::time(v.started_at)) " by " (v.requested_by)
                    @if let Some(c) = &v.cancel_requested_by { " · cancel asked by " (c) } }
                @if !v.failures.is_empty() {
                    h2 { "Failures" }
                    ul { @for f in &v.failures { li { code { (f.dlq_id) } ": " (f.error) } } }
                }
            }
            @if running && can_act(&session) {
                form #cancel-form method="post" action=(format!("/console/jobs/{}/cancel", h::seg(&job_id))) {
                    input type="hidden" name="csrf" value=(session.csrf);
                    button #cancel-job.danger type="submit" { "Cancel job" }
                }
            }
        }
    };
    Ok(page(frame("Job", Nav::Jobs, Some(&session), body)))
}

pub async fn job_progress(State(s): State<Arc<AppState>>, Path(job_id): Path<String>) -> Response {
    match jobs::job_view(&s, &job_id) {
        Some(v) => Json(serde_json::to_value(v).unwrap_or_default()).into_response(),
        None => Json(serde_json::json!({ "jobId": job_id, "state": "pending" })).into_response(),
    }
}

// ---- rejected ----

pub async fn rejected(
    State(s): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
) -> Result<Response, ConsoleError> {
    let tail = super::rejected::tail(&s.kafka, &s.cfg.topics.rejected, 20)
        .await
        .map_err(|e| ConsoleError::unavailable(e.to_string()))?;
    let body = html! {
        p { "Input records that could not be decoded or validated, copied verbatim to "
            code { (s.cfg.topics.rejected) } " (" span #rejected-total { (tail.total) } " in the topic). "
            "The most recent of each partition, newest first." }
        div.table-wrap {
            table #rejected {
                thead { tr {
                    th scope="col" { "When" } th scope="col" { "Reason" } th scope="col" { "Detail" }
                    th scope="col" { "Source" } th scope="col" { "Key" } th scope="col" { "Value" }
                } }
                tbody {
                    @if tail.records.is_empty() { tr { td colspan="6" { "No rejected records." } } }
                    @for r in &tail.records {
                        tr {
                            td { (r.timestamp.map_or("—".to_string(), h::time)) }
                            td { (r.reason) }
                            td.wrap { (h::preview(&r.detail, 300)) }
                            td { (r.source) }
                            td.wrap { (h::preview(&r.key, 80)) }
                            td.wrap { code { (h::preview(&r.value, 300)) } " " small { "(" (r.value_len) " bytes)" } }
                        }
                    }
                }
            }
        }
    };
    Ok(page(frame(
        "Rejected records",
        Nav::Rejected,
        Some(&session),
        body,
    )))
}
