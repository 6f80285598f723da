//! Upstash's query parameters: filters, paging and `dlqIds`. A field may repeat or hold
//! comma-separated values (OR within a field, AND across fields).
//!
//! Stricter than a lenient web API on purpose: an unknown parameter or an empty value is a 400,
//! never ignored — on a bulk action, a misspelt filter that was ignored would act on everything.

use crate::store::{filter::Order, Cursor, EntryFilter};
use crate::wire::pb::Filter;

use super::ApiError;

/// Page size when `count` is not given, and its maximum.
pub const DEFAULT_COUNT: usize = 100;
pub const MAX_COUNT: usize = 100;
/// Most ids one call may name in `dlqIds`.
pub const MAX_IDS: usize = 100;

/// A parsed query.
#[derive(Debug)]
pub struct DlqQuery {
    /// As given (canonical form for the command's audit trail).
    pub filter: Filter,
    /// The same, compiled for matching.
    pub compiled: EntryFilter,
    pub cursor: Option<Cursor>,
    pub count: usize,
    pub order: Order,
    pub dlq_ids: Vec<String>,
}

/// What an action acts on.
#[derive(Debug)]
pub enum Target {
    /// Exactly these entries (every one must exist).
    Ids(Vec<String>),
    /// One page of the entries matching the filter (all entries when it is empty).
    Page {
        filter: Box<EntryFilter>,
        order: Order,
        cursor: Option<Cursor>,
        count: usize,
    },
}

impl DlqQuery {
    pub fn into_target(self) -> Target {
        if self.dlq_ids.is_empty() {
            Target::Page {
                filter: Box::new(self.compiled),
                order: self.order,
                cursor: self.cursor,
                count: self.count,
            }
        } else {
            Target::Ids(self.dlq_ids)
        }
    }
}

fn int(name: &str, v: &str) -> Result<i64, ApiError> {
    v.trim()
        .parse::<i64>()
        .map_err(|_| ApiError::BadRequest(format!("`{name}` must be an integer, got `{v}`")))
}

/// The values of a multi-value parameter; none at all is an error.
fn values(name: &str, v: &str) -> Result<Vec<String>, ApiError> {
    let vals: Vec<String> = v
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if vals.is_empty() {
        return Err(ApiError::BadRequest(format!("`{name}` must not be empty")));
    }
    Ok(vals)
}

/// The integers of a multi-value parameter.
fn ints(name: &str, v: &str) -> Result<Vec<i32>, ApiError> {
    values(name, v)?
        .iter()
        .map(|x| {
            x.parse::<i32>()
                .map_err(|_| ApiError::BadRequest(format!("`{name}` must be integers, got `{x}`")))
        })
        .collect()
}

fn single(name: &str, v: &str) -> Result<String, ApiError> {
    let v = v.trim();
    if v.is_empty() {
        return Err(ApiError::BadRequest(format!("`{name}` must not be empty")));
    }
    Ok(v.to_string())
}

/// Parses a query string (`None` = no query).
pub fn parse_query(raw: Option<&str>) -> Result<DlqQuery, ApiError> {
    let mut f = Filter::default();
    let mut cursor = None;
    let mut count = DEFAULT_COUNT;
    let mut order = None;
    let mut dlq_ids = Vec::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            // The SDKs send it to say which product's DLQ they mean; this one is workflows.
            "source" => {}
            "cursor" => {
                if !v.trim().is_empty() {
                    cursor = Some(
                        Cursor::decode(&v)
                            .map_err(|_| ApiError::BadRequest(format!("invalid cursor `{v}`")))?,
                    );
                }
            }
            "count" => {
                let n = int("count", &v)?;
                if !(1..=MAX_COUNT as i64).contains(&n) {
                    return Err(ApiError::BadRequest(format!(
                        "`count` must be between 1 and {MAX_COUNT}, got {n}"
                    )));
                }
                count = n as usize;
            }
            "fromDate" => f.from_date = int("fromDate", &v)?,
            "toDate" => f.to_date = int("toDate", &v)?,
            // `url` is the older SDKs' name for it.
            "workflowUrl" | "url" => f.workflow_url.extend(values(&k, &v)?),
            "workflowRunId" => f.workflow_run_id = single("workflowRunId", &v)?,
            "workflowCreatedAt" => f.workflow_created_at = int("workflowCreatedAt", &v)?,
            "label" => f.label.extend(values("label", &v)?),
            "failureFunctionState" => f
                .failure_function_state
                .extend(values("failureFunctionState", &v)?),
            "callerIp" | "callerIP" => f.caller_ip.extend(values(&k, &v)?),
            "flowControlKey" => f.flow_control_key.extend(values("flowControlKey", &v)?),
            // QStash's identity filters.
            "messageId" => f.message_id = single("messageId", &v)?,
            "topicName" => f.topic_name.extend(values("topicName", &v)?),
            "scheduleId" => f.schedule_id.extend(values("scheduleId", &v)?),
            "queueName" => f.queue_name.extend(values("queueName", &v)?),
            "responseStatus" => f.response_status.extend(ints("responseStatus", &v)?),
            "order" => {
                order = Some(Order::parse(v.trim()).ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "`order` must be `latestFirst` or `earliestFirst`, got `{v}`"
                    ))
                })?)
            }
            "dlqIds" | "dlqId" => dlq_ids.extend(values("dlqIds", &v)?),
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter `{other}`"
                )))
            }
        }
    }
    if f.from_date < 0 || f.to_date < 0 {
        return Err(ApiError::BadRequest(
            "`fromDate` and `toDate` are unix milliseconds and must not be negative".into(),
        ));
    }
    if f.from_date > 0 && f.to_date > 0 && f.from_date > f.to_date {
        return Err(ApiError::BadRequest(format!(
            "`fromDate` ({}) is after `toDate` ({})",
            f.from_date, f.to_date
        )));
    }
    let compiled = EntryFilter::compile(&f).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    // A cursor pages in the order it was made in; `order` may be left out on the next calls.
    let order = match (order, &cursor) {
        (Some(o), Some(c)) if o != c.order() => {
            return Err(ApiError::BadRequest(format!(
                "the cursor pages {}, not {}: keep the `order` it was made with",
                c.order().as_str(),
                o.as_str()
            )))
        }
        (Some(o), _) => o,
        (None, Some(c)) => c.order(),
        (None, None) => Order::EarliestFirst,
    };
    if !dlq_ids.is_empty() {
        if !compiled.is_empty() {
            return Err(ApiError::BadRequest(
                "give either `dlqIds` or filters, not both".into(),
            ));
        }
        if cursor.is_some() {
            return Err(ApiError::BadRequest(
                "`cursor` pages through a filter; it cannot be combined with `dlqIds`".into(),
            ));
        }
        dlq_ids.sort();
        dlq_ids.dedup();
        if dlq_ids.len() > MAX_IDS {
            return Err(ApiError::BadRequest(format!(
                "at most {MAX_IDS} `dlqIds` per call, got {}",
                dlq_ids.len()
            )));
        }
    }
    Ok(DlqQuery {
        filter: f,
        compiled,
        cursor,
        count,
        order,
        dlq_ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn repeated_and_comma_separated_values_both_count() {
        let q = parse_query(Some(
            "label=a,b&label=c&source=workflow&count=5&callerIp=1.2.3.4",
        ))
        .unwrap();
        assert_eq!(q.filter.label, ["a", "b", "c"]);
        assert_eq!(q.filter.caller_ip, ["1.2.3.4"]);
        assert_eq!(q.count, 5);
    }

    #[test]
    fn qstash_filters_and_order_are_accepted_and_a_cursor_keeps_its_order() {
        let q = parse_query(
            Some("messageId=m1&topicName=g1,g2&scheduleId=s&queueName=q&responseStatus=500,502&order=latestFirst"))
        .unwrap();
        assert_eq!(q.filter.message_id, "m1");
        assert_eq!(q.filter.topic_name, ["g1", "g2"]);
        assert_eq!(q.filter.response_status, [500, 502]);
        assert_eq!(q.order, Order::LatestFirst);
        let latest = Cursor {
            created_at: 5,
            dlq_id: "dlq-a".into(),
            latest_first: true,
        }
        .encode();
        let q = parse_query(Some(&format!("cursor={latest}"))).unwrap();
        assert_eq!(q.order, Order::LatestFirst, "a cursor carries its order");
        let err = parse_query(Some(&format!("cursor={latest}&order=earliestFirst"))).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn no_ids_and_no_filter_is_one_page_of_everything() {
        let q = parse_query(Some("count=7")).unwrap();
        match q.into_target() {
            Target::Page { filter, count, .. } => {
                assert!(filter.is_empty());
                assert_eq!(count, 7);
            }
            Target::Ids(_) => panic!("expected a page"),
        }
    }

    #[test]
    fn malformed_parameters_are_400_with_a_message() {
        for (query, message) in [
            ("count=abc", "`count` must be an integer, got `abc`"),
            ("count=0", "`count` must be between 1 and 100, got 0"),
            ("count=101", "`count` must be between 1 and 100, got 101"),
            ("fromDate=yesterday", "`fromDate` must be an integer, got `yesterday`"),
            ("fromDate=-1", "`fromDate` and `toDate` are unix milliseconds and must not be negative"),
            ("fromDate=5&toDate=4", "`fromDate` (5) is after `toDate` (4)"),
            ("cursor=%%%", "invalid cursor `%%%`"),
            ("label=", "`label` must not be empty"),
            ("failureFunctionState=NOPE", "unknown failureFunctionState `NOPE` (expected one of CALLBACK_INPROGRESS, CALLBACK_SUCCESS, CALLBACK_FAIL, CALLBACK_CANCELED)"),
            ("lable=x", "unknown query parameter `lable`"),
            ("dlqIds=a&cursor=MTow", "`cursor` pages through a filter; it cannot be combined with `dlqIds`"),
            ("order=newest", "`order` must be `latestFirst` or `earliestFirst`, got `newest`"),
            ("responseStatus=5xx", "`responseStatus` must be integers, got `5xx`"),
            ("messageId=", "`messageId` must not be empty"),
            ("dlqIds=", "`dlqIds` must not be empty"),
            ("dlqIds=a&label=x", "give either `dlqIds` or filters, not both"),
        ] {
            let err = parse_query(Some(query)).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{query}");
            assert_eq!(err.to_string(), message, "{query}");
        }
    }
}
