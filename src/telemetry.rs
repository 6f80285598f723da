//! Logging: `tracing` with structured fields, as text or JSON lines (`--log-format`).
//! `RUST_LOG` filters (default `info`).
//!
//! A JSON line carries the event's fields at the top level, `span` (the innermost span, with its
//! fields) and `spans` (the whole chain, outermost first): e.g. `service{instance}` →
//! `pipeline{pipeline}` → `command{command_id, action, partition, offset}`, or
//! `http{method, route, status}` for a request.

use tracing_subscriber::{fmt, fmt::MakeWriter, util::SubscriberInitExt, EnvFilter};

use crate::config::LogFormat;

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,librdkafka=warn,rdkafka=warn"))
}

/// The JSON-lines subscriber, writing to `writer`.
fn json<W>(filter: EnvFilter, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(true)
        .with_thread_names(true)
        .finish()
}

/// Installs the global subscriber (and the `log` bridge, for rdkafka's records); a second call
/// is a no-op.
pub fn init(format: LogFormat) {
    match format {
        LogFormat::Json => {
            let _ = json(filter(), std::io::stderr).try_init();
        }
        LogFormat::Text => {
            let _ = fmt()
                .with_env_filter(filter())
                .with_writer(std::io::stderr)
                .try_init();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buf {
        type Writer = Buf;
        fn make_writer(&'w self) -> Buf {
            self.clone()
        }
    }

    #[test]
    fn json_lines_carry_the_span_chain_and_fields() {
        let buf = Buf::default();
        let subscriber = json(EnvFilter::new("info"), buf.clone());
        tracing::subscriber::with_default(subscriber, || {
            let _service = tracing::info_span!("service", instance = "dlq-0").entered();
            let _cmd =
                tracing::info_span!("command", command_id = "c-1", action = "restart").entered();
            tracing::info!(matched = 3, "command resolved");
        });
        let out = String::from_utf8(buf.0.lock().expect("buffer").clone()).expect("UTF-8");
        let line: serde_json::Value =
            serde_json::from_str(out.lines().next().expect("one line")).expect("a JSON line");
        assert_eq!(line["message"], "command resolved");
        assert_eq!(line["matched"], 3);
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["span"]["name"], "command");
        assert_eq!(line["span"]["command_id"], "c-1");
        assert_eq!(line["spans"][0]["name"], "service");
        assert_eq!(line["spans"][0]["instance"], "dlq-0");
        assert_eq!(line["spans"][1]["action"], "restart");
        assert!(line["timestamp"].is_string());
    }
}
