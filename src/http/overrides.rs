//! Upstash's override headers on restart and resume, as the command's `Overrides`.

use axum::http::HeaderMap;

use super::ApiError;
use crate::wire::pb::{FlowControl, Overrides};

pub const RETRIES: &str = "upstash-retries";
pub const DELAY: &str = "upstash-delay";
pub const RETRY_DELAY: &str = "upstash-retry-delay";
pub const FLOW_CONTROL_KEY: &str = "upstash-flow-control-key";
pub const FLOW_CONTROL_VALUE: &str = "upstash-flow-control-value";
pub const LABEL: &str = "upstash-label";
pub const FAILURE_CALLBACK: &str = "upstash-failure-callback";

/// Largest retry count accepted (Upstash's own plans stop far below).
const MAX_RETRIES: i64 = 1000;
/// Longest free-text override (URLs, expressions, keys).
const MAX_TEXT: usize = 2048;

fn text(headers: &HeaderMap, name: &str) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(name) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| ApiError::BadRequest(format!("`{name}` must be visible ASCII")))?
        .trim();
    if v.is_empty() {
        return Err(ApiError::BadRequest(format!("`{name}` must not be empty")));
    }
    if v.len() > MAX_TEXT {
        return Err(ApiError::BadRequest(format!(
            "`{name}` is longer than {MAX_TEXT} bytes"
        )));
    }
    Ok(Some(v.to_string()))
}

/// A duration as Upstash writes it: `30s`, `5m`, `1h`, `2d`, or a number of seconds.
fn duration(name: &str, v: &str) -> Result<(), ApiError> {
    let ok = v.parse::<u64>().is_ok() || humantime::parse_duration(v).is_ok();
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "`{name}` must be a duration like `30s`, `5m` or `1h`, got `{v}`"
        )))
    }
}

/// `parallelism=N, rate=N, period=N` (period in seconds or as a duration like `1m`).
fn flow_control(key: String, value: &str) -> Result<FlowControl, ApiError> {
    let mut fc = FlowControl {
        key,
        ..Default::default()
    };
    let bad = |part: &str| {
        ApiError::BadRequest(format!(
            "`Upstash-Flow-Control-Value` must look like `parallelism=N, rate=N, period=N`; \
             cannot read `{part}`"
        ))
    };
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, n) = part.split_once('=').ok_or_else(|| bad(part))?;
        let n = n.trim();
        let number = || {
            n.parse::<i32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| bad(part))
        };
        match name.trim() {
            "parallelism" => fc.parallelism = number()?,
            "rate" => fc.rate = number()?,
            "period" => {
                fc.period_seconds = match n.parse::<i32>() {
                    Ok(s) if s > 0 => s,
                    _ => humantime::parse_duration(n)
                        .ok()
                        .and_then(|d| i32::try_from(d.as_secs()).ok())
                        .filter(|s| *s > 0)
                        .ok_or_else(|| bad(part))?,
                }
            }
            _ => return Err(bad(part)),
        }
    }
    if fc.parallelism == 0 && fc.rate == 0 {
        return Err(ApiError::BadRequest(
            "`Upstash-Flow-Control-Value` needs at least one of parallelism or rate".into(),
        ));
    }
    Ok(fc)
}

/// The overrides the headers ask for; `None` when there are none.
pub fn parse(headers: &HeaderMap) -> Result<Option<Overrides>, ApiError> {
    let mut o = Overrides::default();
    let mut any = false;
    if let Some(v) = text(headers, RETRIES)? {
        let n = v
            .parse::<i64>()
            .ok()
            .filter(|n| (0..=MAX_RETRIES).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "`Upstash-Retries` must be an integer between 0 and {MAX_RETRIES}, got `{v}`"
                ))
            })?;
        o.retries = Some(n as i32);
        any = true;
    }
    if let Some(v) = text(headers, DELAY)? {
        duration("Upstash-Delay", &v)?;
        o.delay = v;
        any = true;
    }
    if let Some(v) = text(headers, RETRY_DELAY)? {
        o.retry_delay = v;
        any = true;
    }
    match (
        text(headers, FLOW_CONTROL_KEY)?,
        text(headers, FLOW_CONTROL_VALUE)?,
    ) {
        (Some(key), Some(value)) => {
            o.flow_control = Some(flow_control(key, &value)?);
            any = true;
        }
        (None, None) => {}
        _ => {
            return Err(ApiError::BadRequest(
                "`Upstash-Flow-Control-Key` and `Upstash-Flow-Control-Value` go together".into(),
            ))
        }
    }
    if let Some(v) = text(headers, LABEL)? {
        o.labels = v
            .split(',')
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        any = true;
    }
    if let Some(v) = text(headers, FAILURE_CALLBACK)? {
        if !(v.starts_with("http://") || v.starts_with("https://")) {
            return Err(ApiError::BadRequest(format!(
                "`Upstash-Failure-Callback` must be an http(s) URL, got `{v}`"
            )));
        }
        o.failure_callback = v;
        any = true;
    }
    Ok(any.then_some(o))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_sdk_headers_become_overrides() {
        let o = parse(&headers(&[
            (RETRIES, "3"),
            (DELAY, "10s"),
            (RETRY_DELAY, "pow(2, retried) * 1000"),
            (FLOW_CONTROL_KEY, "tenant-1"),
            (FLOW_CONTROL_VALUE, "parallelism=2, rate=10, period=1m"),
            (LABEL, "a, b"),
            (FAILURE_CALLBACK, "https://example.com/failed"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(o.retries, Some(3));
        assert_eq!(o.delay, "10s");
        let fc = o.flow_control.unwrap();
        assert_eq!((fc.parallelism, fc.rate, fc.period_seconds), (2, 10, 60));
        assert_eq!(o.labels, ["a", "b"]);
        assert!(parse(&HeaderMap::new()).unwrap().is_none());
    }

    #[test]
    fn bad_headers_are_400_with_a_message() {
        for (pairs, message) in [
            (vec![(RETRIES, "-1")], "`Upstash-Retries` must be an integer between 0 and 1000, got `-1`"),
            (vec![(DELAY, "soon")], "`Upstash-Delay` must be a duration like `30s`, `5m` or `1h`, got `soon`"),
            (vec![(FLOW_CONTROL_KEY, "k")], "`Upstash-Flow-Control-Key` and `Upstash-Flow-Control-Value` go together"),
            (vec![(FLOW_CONTROL_KEY, "k"), (FLOW_CONTROL_VALUE, "speed=3")], "`Upstash-Flow-Control-Value` must look like `parallelism=N, rate=N, period=N`; cannot read `speed=3`"),
            (vec![(FAILURE_CALLBACK, "ftp://x")], "`Upstash-Failure-Callback` must be an http(s) URL, got `ftp://x`"),
        ] {
            let err = parse(&headers(&pairs)).unwrap_err();
            assert_eq!(err.to_string(), message);
        }
    }
}
