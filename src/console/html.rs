//! The console's page frame and the small formatting helpers its pages share. Pages are
//! `maud` templates: every interpolated value is HTML-escaped unless explicitly marked, so
//! attacker-controlled entry text (bodies, headers, error messages) can only ever show as text.
//! Nothing here emits a `style` attribute or an inline script: the Content-Security-Policy
//! forbids both.

use std::time::{Duration, UNIX_EPOCH};

use maud::{html, Markup, DOCTYPE};

use super::session::Session;
use crate::tokens::Scope;

/// Which navigation item is the current page.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Entries,
    Groups,
    Jobs,
    Rejected,
    None,
}

const NAV: [(Nav, &str, &str); 5] = [
    (Nav::Overview, "/console", "Overview"),
    (Nav::Entries, "/console/entries", "Entries"),
    (Nav::Groups, "/console/groups", "Groups"),
    (Nav::Jobs, "/console/jobs", "Jobs"),
    (Nav::Rejected, "/console/rejected", "Rejected"),
];

/// A whole page: head, navigation (when signed in), the page's title and body.
pub fn page(title: &str, nav: Nav, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · workflow-dlq" }
                // An empty icon: no request for /favicon.ico (a 404 in the browser console).
                link rel="icon" href="data:,";
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    span.brand { "workflow-dlq" }
                    @if let Some(s) = session {
                        nav aria-label="Main" {
                            ul {
                                @for (item, href, label) in NAV {
                                    li {
                                        @if item == nav {
                                            a href=(href) aria-current="page" { (label) }
                                        } @else {
                                            a href=(href) { (label) }
                                        }
                                    }
                                }
                            }
                        }
                        div.who {
                            span #who { (s.name) " · " (s.scope.as_str()) }
                            form method="post" action="/console/signout" {
                                input type="hidden" name="csrf" value=(s.csrf);
                                button #sign-out type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// Whether this session may act (restart, resume, retry, delete, cancel jobs).
pub fn can_act(s: &Session) -> bool {
    s.scope >= Scope::Operate
}

/// Unix ms as an RFC 3339 UTC time; "—" for unset.
pub fn time(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(ms) if ms > 0 => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        _ => "—".to_string(),
    }
}

/// A span of milliseconds, rounded to whole minutes past an hour (or seconds below one).
pub fn span(ms: i64) -> String {
    let secs = (ms / 1000).max(0) as u64;
    let rounded = if secs >= 3600 { secs - secs % 60 } else { secs };
    humantime::format_duration(Duration::from_secs(rounded)).to_string()
}

/// Longest body shown on a page; the rest is cut (the JSON API has it all).
const SHOWN_BYTES: usize = 64 * 1024;

/// Bytes as text for a `<pre>`: pretty-printed when they are JSON, as-is when UTF-8, a note
/// with base64 otherwise.
pub fn body_text(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "(empty)".to_string();
    }
    let cut = &bytes[..bytes.len().min(SHOWN_BYTES)];
    let note = if bytes.len() > SHOWN_BYTES {
        format!("\n… ({} bytes in all; cut here)", bytes.len())
    } else {
        String::new()
    };
    match std::str::from_utf8(cut) {
        Ok(text) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) if bytes.len() <= SHOWN_BYTES && (v.is_object() || v.is_array()) => {
                serde_json::to_string_pretty(&v).unwrap_or_else(|_| text.to_string())
            }
            _ => format!("{text}{note}"),
        },
        Err(_) => {
            use base64::{engine::general_purpose::STANDARD, Engine};
            format!(
                "(binary, {} bytes; base64)\n{}{note}",
                bytes.len(),
                STANDARD.encode(cut)
            )
        }
    }
}

/// A one-line preview of free text for a table cell.
pub fn preview(text: &str, max_chars: usize) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max_chars + 1)
        .collect();
    if one_line.chars().count() > max_chars {
        format!("{}…", one_line.chars().take(max_chars).collect::<String>())
    } else {
        one_line
    }
}

/// A path segment, percent-encoded (ids come from the data, so they are encoded before they
/// go into a link; `maud` escapes the attribute, this keeps the URL meaning what it says).
pub fn seg(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The bar chart of arrivals per minute as an SVG (no script, no style attribute): one bar
/// per bucket, the newest on the right, with a text summary for screen readers.
pub fn arrivals_svg(buckets: &[u64], minutes_per_bucket: u64) -> Markup {
    const W: usize = 720;
    const H: u64 = 120;
    let n = buckets.len().max(1);
    let bar = (W / n).max(1);
    let peak = buckets.iter().copied().max().unwrap_or(0).max(1);
    let total: u64 = buckets.iter().sum();
    let hours = (buckets.len() as u64 * minutes_per_bucket) as f64 / 60.0;
    let summary = format!(
        "{total} arrivals in the last {hours} h; peak {} per {minutes_per_bucket} min",
        buckets.iter().copied().max().unwrap_or(0)
    );
    html! {
        figure.chart {
            svg #arrivals viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(summary)
                preserveAspectRatio="none" {
                title { (summary) }
                rect.chart-bg x="0" y="0" width=(W) height=(H) {}
                @for (i, v) in buckets.iter().enumerate() {
                    @if *v > 0 {
                        @let h = (*v * (H - 4) / peak).max(2);
                        rect.bar x=(i * bar) y=(H - h) width=(bar.saturating_sub(1).max(1)) height=(h) {
                            title { (v) }
                        }
                    }
                }
            }
            figcaption { (summary) " (oldest on the left)" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attacker_text_is_escaped_and_json_is_pretty() {
        let evil = "<img src=x onerror=alert(1)>";
        let out = html! { p { (evil) } pre { (body_text(evil.as_bytes())) } }.into_string();
        assert!(!out.contains("<img"), "{out}");
        assert!(out.contains("&lt;img src=x onerror=alert(1)&gt;"), "{out}");
        assert_eq!(body_text(br#"{"a":1}"#), "{\n  \"a\": 1\n}");
        assert_eq!(body_text(b"plain"), "plain");
        assert!(body_text(&[0xff, 0xfe]).starts_with("(binary, 2 bytes"));
    }

    #[test]
    fn segments_previews_and_times() {
        assert_eq!(seg("dlq-ab_1.x"), "dlq-ab_1.x");
        assert_eq!(seg("a/b?c"), "a%2Fb%3Fc");
        assert_eq!(preview("a\nbcdef", 3), "a b…");
        assert_eq!(time(0), "—");
        assert_eq!(time(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(span(90_000), "1m 30s");
    }
}
