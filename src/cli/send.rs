//! `workflow-dlq failures send [FILE|-]`: failure events from JSON lines onto the failures
//! topic, so a platform team can wire up and try the service without writing a producer.
//!
//! Each non-blank line is one `FailureEnvelope` in the canonical proto3 JSON mapping. Every
//! line is read and checked with ingest's own checks ([`check_record`]) before anything is
//! sent, so a file that cannot be read sends nothing and every invalid line is reported up
//! front, with its number and the reason ingest would have rejected it for. The valid lines are
//! then sent — an invalid line does not hold back the others (issue 14: "valid ones stored, each
//! invalid line reported") — and the exit code is non-zero if any line was invalid or not sent.
//!
//! The Kafka connection is the service's own configuration ([`ServeArgs`]: the same flags,
//! `DLQ_*` variables and `--config` file as `serve`), so the settings a deployment already has
//! work here unchanged, SASL/TLS properties included.

use std::{
    io::{self, BufRead, Write},
    path::PathBuf,
    time::Duration,
};

use clap::{Args, Subcommand};
use futures::{stream::FuturesUnordered, StreamExt};
use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
    util::Timeout,
};

use super::{output, CliError};
use crate::{
    config::{Config, ServeArgs},
    ingest::{check_record, Rejection},
    kafka::{topics::max_message_bytes, KafkaConn},
    wire::{codec, pb::failure_envelope::Kind},
};

/// Deliveries awaited at once: bounds memory for a large file while keeping librdkafka's
/// batches full.
const MAX_IN_FLIGHT: usize = 10_000;

#[derive(Debug, Args)]
pub struct FailuresArgs {
    #[command(subcommand)]
    pub command: FailuresCommand,
}

#[derive(Debug, Subcommand)]
pub enum FailuresCommand {
    /// Produce failure events from JSON lines (one `FailureEnvelope` per line, proto3 JSON) to
    /// the failures topic. Every line is checked first; invalid ones are reported with their
    /// line number and reason, the valid ones are sent. Exit code 1 if any line was invalid or
    /// not sent.
    Send(SendArgs),
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// A file of JSON lines, or `-` for stdin.
    #[arg(default_value = "-")]
    pub input: String,
    /// Check every line and report, but send nothing (no Kafka needed).
    #[arg(long)]
    pub dry_run: bool,
    /// The service's own settings, as `serve` takes them. Used here: the Kafka connection
    /// (`--kafka-bootstrap`, `DLQ_KAFKA_<PROPERTY>`, the file's `[kafka]` table),
    /// `--topic-failures`, `--max-record-bytes` (longer lines are invalid) and
    /// `--kafka-connect-timeout` (how long a send may wait for delivery).
    #[command(flatten, next_help_heading = "Service settings (as `serve`)")]
    pub service: ServeArgs,
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub sent: usize,
    pub invalid: usize,
    /// Valid lines whose delivery failed.
    pub failed: usize,
}

impl Summary {
    /// Every non-blank line was valid and delivered (or, with `--dry-run`, valid).
    pub fn complete(&self) -> bool {
        self.invalid == 0 && self.failed == 0
    }
}

/// A checked line, ready to produce.
#[derive(Debug)]
struct Valid {
    number: usize,
    key: Vec<u8>,
    value: Vec<u8>,
}

#[derive(Debug)]
struct Invalid {
    number: usize,
    reason: Rejection,
}

/// Reads every line of `input` and checks it as ingest would; blank lines are skipped.
/// A line longer than `max` is an error for that line only: at most `max + 2` bytes of it are
/// held, the rest is skipped (a file without newlines must not be read whole into memory).
fn check_lines(mut input: impl BufRead, max: usize) -> io::Result<(Vec<Valid>, Vec<Invalid>)> {
    let (mut valid, mut invalid) = (Vec::new(), Vec::new());
    let mut buf = Vec::new();
    let mut number = 0;
    loop {
        buf.clear();
        // `max` bytes of content plus `\r\n`.
        let read = io::Read::take(input.by_ref(), max as u64 + 2).read_until(b'\n', &mut buf)?;
        if read == 0 {
            break;
        }
        number += 1;
        let ended = buf.last() == Some(&b'\n');
        let mut line = buf.as_slice();
        line = line.strip_suffix(b"\n").unwrap_or(line);
        line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > max {
            // Only possible when `take` stopped us mid-line: the rest of it is skipped.
            let rest = if ended { 0 } else { skip_line(&mut input)? };
            invalid.push(Invalid {
                number,
                reason: Rejection::TooLarge {
                    size: line.len() + rest,
                    max,
                },
            });
            continue;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        // The content type is given, not sniffed: a line is JSON whatever its first byte, and
        // it is sent with the same header, so ingest decodes exactly what was checked here.
        match check_record(Some(codec::JSON.as_bytes()), Some(line), max) {
            Ok(kind) => valid.push(Valid {
                number,
                key: key_of(&kind),
                value: line.to_vec(),
            }),
            Err(reason) => invalid.push(Invalid { number, reason }),
        }
    }
    Ok((valid, invalid))
}

/// The record key, as docs/design.md §2 says producers key the failures topic: a failure by
/// its workflow run id (what the platform uses, so one run's failures stay in order on one
/// partition); a callback report by the `dlqId` it reports on.
fn key_of(kind: &Kind) -> Vec<u8> {
    match kind {
        Kind::Failure(ev) => ev.workflow_run_id.as_bytes().to_vec(),
        Kind::CallbackReport(r) => r.dlq_id.as_bytes().to_vec(),
    }
}

/// Consumes the rest of the current line (through its `\n`); the bytes skipped before it.
fn skip_line(input: &mut impl BufRead) -> io::Result<usize> {
    let mut skipped = 0;
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            return Ok(skipped);
        }
        match buf.iter().position(|b| *b == b'\n') {
            Some(i) => {
                input.consume(i + 1);
                return Ok(skipped + i);
            }
            None => {
                let n = buf.len();
                input.consume(n);
                skipped += n;
            }
        }
    }
}

fn open(input: &str) -> Result<Box<dyn BufRead>, CliError> {
    if input == "-" {
        return Ok(Box::new(io::stdin().lock()));
    }
    let file = std::fs::File::open(PathBuf::from(input)).map_err(|source| CliError::Input {
        what: input.to_string(),
        source,
    })?;
    Ok(Box::new(io::BufReader::new(file)))
}

/// Runs `failures send`: checks, reports, sends, prints the summary on `out`.
pub async fn run(args: SendArgs, out: &mut dyn Write) -> Result<Summary, CliError> {
    let cfg = Config::load(&args.service)?;
    // Refused before reading: a user piping a large file learns it at once.
    let bootstrap = match (&cfg.kafka_bootstrap, args.dry_run) {
        (Some(b), _) => Some(b.clone()),
        (None, true) => None,
        (None, false) => {
            return Err(CliError::Usage(
                "no Kafka to send to: give --kafka-bootstrap (or DLQ_KAFKA_BOOTSTRAP, or \
                 kafka_bootstrap in --config); a `serve` on the embedded broker prints its \
                 address at start"
                    .into(),
            ))
        }
    };
    let what = if args.input == "-" {
        "stdin".to_string()
    } else {
        args.input.clone()
    };
    // Read in place, blocking: this one-thread runtime has nothing else to do until every line
    // is checked (no Kafka client exists yet).
    let (valid, invalid) = check_lines(open(&args.input)?, cfg.max_record_bytes)
        .map_err(|source| CliError::Input { what, source })?;
    for bad in &invalid {
        output::warn(format_args!("line {}: {}", bad.number, bad.reason));
    }
    let mut summary = Summary {
        invalid: invalid.len(),
        ..Summary::default()
    };
    let Some(bootstrap) = bootstrap.filter(|_| !args.dry_run) else {
        let line = format!(
            "valid {}, invalid {} (dry run: nothing sent)",
            valid.len(),
            summary.invalid
        );
        return print_summary(out, &line).map(|()| summary);
    };
    if !valid.is_empty() {
        let (sent, failed) = produce(&cfg, bootstrap, &valid).await?;
        summary.sent = sent;
        summary.failed = failed;
    }
    let mut line = format!("sent {}, invalid {}", summary.sent, summary.invalid);
    if summary.failed > 0 {
        line.push_str(&format!(", not sent {}", summary.failed));
    }
    print_summary(out, &line).map(|()| summary)
}

/// The summary line. A reader that has gone away does not change the outcome: the exit code
/// still says whether every line was valid and sent, so a broken pipe is not an error here.
fn print_summary(out: &mut dyn Write, line: &str) -> Result<(), CliError> {
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(CliError::Output(e)),
        _ => Ok(()),
    }
}

/// Produces `lines` to the failures topic and waits for every delivery; (delivered, failed).
/// A failed delivery is reported with its line number.
async fn produce(
    cfg: &Config,
    bootstrap: String,
    lines: &[Valid],
) -> Result<(usize, usize), CliError> {
    let conn = KafkaConn {
        bootstrap,
        properties: cfg.kafka_properties.clone(),
        embedded: false,
        client_id: "workflow-dlq-failures-send".into(),
        max_record_bytes: max_message_bytes(cfg),
    };
    // The service's own producer settings: murmur2 partitioning (as the Java client keys),
    // idempotence, batches bounded below what the topics accept.
    let mut config = conn.idempotent_producer_config();
    let timeout = cfg.kafka_connect_timeout;
    if !conn.properties.contains_key("message.timeout.ms") {
        // librdkafka's default is 5 minutes: an unreachable cluster would hang a terminal that
        // long. `--kafka-connect-timeout` is the service's "give up on Kafka" bound.
        config.set("message.timeout.ms", timeout.as_millis().to_string());
    }
    let producer: FutureProducer = config
        .create()
        .map_err(|e| CliError::Kafka(conn.mask(&e.to_string())))?;
    let topic = cfg.topics.failures.as_str();
    let producer = &producer;
    let mut pending = FuturesUnordered::new();
    let (mut sent, mut failed) = (0, 0);
    let mut settle = |number: usize, r: Result<(), String>| match r {
        Ok(()) => sent += 1,
        Err(e) => {
            failed += 1;
            output::warn(format_args!("line {number}: not sent: {e}"));
        }
    };
    for line in lines {
        if pending.len() >= MAX_IN_FLIGHT {
            if let Some((n, r)) = pending.next().await {
                settle(n, r);
            }
        }
        pending.push(deliver(producer, &conn, topic, line, timeout));
    }
    while let Some((n, r)) = pending.next().await {
        settle(n, r);
    }
    Ok((sent, failed))
}

/// One record, awaited until delivered or failed; (line number, outcome as masked text).
async fn deliver(
    producer: &FutureProducer,
    conn: &KafkaConn,
    topic: &str,
    line: &Valid,
    timeout: Duration,
) -> (usize, Result<(), String>) {
    let record = FutureRecord::to(topic)
        .key(&line.key)
        .payload(&line.value)
        .headers(OwnedHeaders::new().insert(Header {
            key: codec::CONTENT_TYPE,
            value: Some(codec::JSON),
        }));
    let outcome = producer
        .send(record, Timeout::After(timeout))
        .await
        .map(|_| ())
        .map_err(|(e, _)| conn.mask(&e.to_string()));
    (line.number, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"failure":{"eventId":"e1","workflowRunId":"wfr-1","workflowUrl":"https://a.example/wf"}}"#;

    fn check(text: &str, max: usize) -> (Vec<Valid>, Vec<Invalid>) {
        check_lines(io::Cursor::new(text.as_bytes().to_vec()), max).expect("in memory")
    }

    #[test]
    fn each_line_is_checked_as_ingest_checks_it() {
        let report = r#"{"callbackReport":{"dlqId":"d-1","info":{"state":"CALLBACK_SUCCESS"}}}"#;
        let text = format!(
            "{GOOD}\n\n   \n{{\"failure\":{{\"eventId\":\"e2\"}}}}\nnot json\r\n{report}\r\n{{}}\n[1]"
        );
        let (valid, invalid) = check(&text, 1024);
        let numbers: Vec<usize> = valid.iter().map(|v| v.number).collect();
        assert_eq!(numbers, [1, 6]);
        assert_eq!(valid[0].key, b"wfr-1", "a failure is keyed by its run id");
        assert_eq!(valid[1].key, b"d-1", "a report by its dlqId");
        assert_eq!(
            valid[1].value,
            report.as_bytes(),
            "sent verbatim, without \\r"
        );
        let reasons: Vec<(usize, String)> = invalid
            .iter()
            .map(|i| (i.number, i.reason.to_string()))
            .collect();
        assert_eq!(
            reasons[0],
            (4, "invalid failure event: workflowRunId is required".into())
        );
        assert_eq!(reasons[1].0, 5);
        assert!(reasons[1].1.starts_with("invalid JSON"), "{reasons:?}");
        assert_eq!(
            reasons[2],
            (
                7,
                "invalid failure event: envelope has neither `failure` nor `callbackReport`".into()
            )
        );
        // Not sniffed as protobuf: a line is JSON whatever its first byte.
        assert_eq!(reasons[3].0, 8);
        assert!(reasons[3].1.starts_with("invalid JSON"), "{reasons:?}");
        assert_eq!(reasons.len(), 4);
    }

    #[test]
    fn a_line_over_the_limit_is_an_error_for_that_line_only() {
        let long = format!("{{\"failure\":{{\"eventId\":\"{}\"}}}}", "x".repeat(5000));
        let (valid, invalid) = check(&format!("{GOOD}\n{long}\n{GOOD}"), 1024);
        assert_eq!(valid.iter().map(|v| v.number).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(invalid.len(), 1);
        assert_eq!(invalid[0].number, 2);
        assert_eq!(
            invalid[0].reason.to_string(),
            format!("record of {} bytes exceeds the maximum of 1024", long.len())
        );
        // Exactly at the limit (with a CRLF) is fine; one byte over is not.
        let at = format!("{GOOD}{}", " ".repeat(1024 - GOOD.len()));
        let (valid, invalid) = check(&format!("{at}\r\n{at} \n"), 1024);
        assert_eq!((valid.len(), invalid.len()), (1, 1), "{invalid:?}");
        assert_eq!(invalid[0].number, 2);
    }
}
