//! Wiring: starts every part of the service and stops them within a bounded time.
//!
//! [`Service::start`] binds the HTTP listener first (so `/readyz` answers 503 while Kafka is
//! unreachable), starts the embedded broker when no bootstrap is configured, then connects in
//! the background: reachability (bounded by `kafka_connect_timeout`), topics, the store reader,
//! ingest, the store guard and the retention sweeper.

use std::{net::SocketAddr, sync::Arc, thread, time::Duration};

use secrecy::SecretString;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    commands::{
        ledger::{Ledger, LedgerSink},
        submit::CommandSubmitter,
        Commands,
    },
    config::Config,
    events::WorkerKind,
    health::Health,
    http::{self, AppState},
    ingest::Ingest,
    kafka::{
        self,
        embedded::{EmbeddedBroker, MOCK_PARTITION_BYTES},
        topics::{ensure_topics, topic_specs, TopicCreator},
        KafkaConn,
    },
    metrics,
    store::{guard::StoreGuard, reader, sweeper::Sweeper, StoreView},
};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Embedded(#[from] kafka::embedded::EmbeddedError),
    #[error("Kafka at {bootstrap} is not reachable after {waited:?}: {detail}")]
    KafkaUnreachable {
        bootstrap: String,
        waited: Duration,
        detail: String,
    },
    /// Wrong credentials or an untrusted certificate: said at once, not retried until the
    /// connect timeout (see [`kafka::AccessDenied`]).
    #[error("Kafka at {bootstrap} refused the connection: {cause}")]
    KafkaAccessDenied {
        bootstrap: String,
        cause: kafka::AccessDenied,
    },
    #[error("invalid Kafka client setting (DLQ_KAFKA_* / [kafka]): {0}")]
    KafkaConfig(String),
    #[error("cannot create the topics on {bootstrap}: {source}")]
    Topics {
        bootstrap: String,
        #[source]
        source: kafka::topics::TopicError,
    },
    #[error("cannot start a worker thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error("the service task failed: {0}")]
    Task(String),
    #[error("{0}; exiting so the process is restarted (the topics hold every state)")]
    WorkerDead(String),
}

/// A running service. Stop it with [`Service::stop`]; [`Service::wait`] ends on a fatal error.
pub struct Service {
    pub http_addr: SocketAddr,
    /// The configured token, or the one generated at start (`expose_secret()` to print it).
    /// The admin `default` token (`--api-token`, or generated); `None` when only named tokens
    /// are configured.
    pub api_token: Option<SecretString>,
    pub kafka_bootstrap: String,
    pub view: Arc<StoreView>,
    pub health: Arc<Health>,
    pub cfg: Arc<Config>,
    shutdown: CancellationToken,
    runner: Option<JoinHandle<Result<(), ServiceError>>>,
    http: Option<JoinHandle<()>>,
    /// Dropped last: the embedded broker outlives every client of it.
    embedded: Option<EmbeddedBroker>,
}

/// A random API token (256 bits, hex).
pub fn generate_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Service {
    pub async fn start(cfg: Config) -> Result<Service, ServiceError> {
        let prometheus = metrics::install();
        metrics::init_series(&cfg.topics);
        let cfg = Arc::new(cfg);
        let (embedded, bootstrap) = match &cfg.kafka_bootstrap {
            Some(b) => (None, b.clone()),
            None => {
                let broker = EmbeddedBroker::start()?;
                let b = broker.bootstrap().to_string();
                (Some(broker), b)
            }
        };
        let conn = KafkaConn {
            bootstrap: bootstrap.clone(),
            properties: cfg.kafka_properties.clone(),
            embedded: embedded.is_some(),
            client_id: format!("workflow-dlq-{}", cfg.instance_id),
            max_record_bytes: kafka::topics::max_message_bytes(&cfg),
        };
        // The single `--api-token` is the admin `default`; with neither it nor named tokens, one
        // is generated (and printed once by `serve`).
        let api_token = match (&cfg.api_token, cfg.api_tokens.is_empty()) {
            (Some(t), _) => Some(t.clone()),
            (None, true) => Some(generate_token().into()),
            (None, false) => None,
        };
        let mut tokens = cfg.api_tokens.clone();
        if let Some(t) = &api_token {
            tokens.push(crate::tokens::ApiToken {
                name: crate::tokens::DEFAULT_NAME.into(),
                scope: crate::tokens::Scope::Admin,
                token: t.clone(),
            });
        }
        let view = Arc::new(StoreView::new());
        view.set_max_redrives(cfg.max_redrives);
        let ledger = Arc::new(Ledger::new());
        let health = Arc::new(Health::new(view.clone(), ledger.clone()));
        let shutdown = CancellationToken::new();

        let listener =
            TcpListener::bind(cfg.http_addr)
                .await
                .map_err(|source| ServiceError::Bind {
                    addr: cfg.http_addr,
                    source,
                })?;
        let http_addr = listener.local_addr().map_err(|source| ServiceError::Bind {
            addr: cfg.http_addr,
            source,
        })?;
        let commands = CommandSubmitter::new(
            &conn,
            cfg.topics.commands.clone(),
            ledger.clone(),
            cfg.output_encoding.into(),
        )
        // librdkafka's config errors quote the value: never let a secret through.
        .map_err(|e| ServiceError::KafkaConfig(conn.mask(&e.to_string())))?;
        let state = Arc::new(AppState {
            cfg: cfg.clone(),
            view: view.clone(),
            health: health.clone(),
            tokens,
            kafka_bootstrap: bootstrap.clone(),
            prometheus,
            commands,
            ledger: ledger.clone(),
            kafka: conn.clone(),
            in_flight: http::limit::InFlight::new(
                cfg.http_max_inflight_reads,
                cfg.http_max_inflight_actions,
            ),
        });
        let app = http::router(state);
        let http_shutdown = shutdown.clone();
        let http = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { http_shutdown.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
        tracing::info!(%http_addr, "HTTP listening");

        let runner = tokio::spawn(run(
            cfg.clone(),
            conn,
            embedded.as_ref().map(|b| b.handle()),
            view.clone(),
            ledger,
            health.clone(),
            shutdown.clone(),
        ));
        Ok(Service {
            http_addr,
            api_token,
            kafka_bootstrap: bootstrap,
            view,
            health,
            cfg,
            shutdown,
            runner: Some(runner),
            http: Some(http),
            embedded,
        })
    }

    pub fn is_embedded(&self) -> bool {
        self.embedded.is_some()
    }

    /// The start-up banner for the embedded broker: what it is and how much it can hold.
    pub fn embedded_banner(&self) -> Option<String> {
        self.embedded.as_ref().map(|b| {
            let parts = self.cfg.partitions as u64;
            let bytes = parts * MOCK_PARTITION_BYTES;
            format!(
                "embedded Kafka broker listening on {}\n\
                 ┌ EMBEDDED, IN-MEMORY KAFKA (librdkafka mock cluster) — for development only\n\
                 │ nothing is kept on disk: a restart loses every entry\n\
                 │ the store topic holds at most {parts} partitions × 5 MiB = {} MiB (~{} entries of 1 KiB);\n\
                 │   beyond that the broker silently drops the oldest records (the store guard reports it)\n\
                 │ exactly-once is NOT provided here: transactions are accepted but not applied\n\
                 └ point --kafka-bootstrap at a real cluster for production",
                b.bootstrap(),
                bytes / (1024 * 1024),
                bytes / 1100,
            )
        })
    }

    /// Ends when the service fails (e.g. Kafka unreachable at start) or is stopped.
    pub async fn wait(&mut self) -> Result<(), ServiceError> {
        match self.runner.as_mut() {
            Some(r) => {
                let out = r.await.map_err(|e| ServiceError::Task(e.to_string()))?;
                self.runner = None;
                out
            }
            None => Ok(()),
        }
    }

    /// Graceful stop: stop taking work, commit or abort open transactions, close clients.
    pub async fn stop(mut self) -> Result<(), ServiceError> {
        self.shutdown.cancel();
        let grace = self.cfg.shutdown_grace;
        let mut result = Ok(());
        if let Some(r) = self.runner.take() {
            match tokio::time::timeout(grace, r).await {
                Ok(Ok(out)) => result = out,
                Ok(Err(e)) => result = Err(ServiceError::Task(e.to_string())),
                Err(_) => tracing::warn!(?grace, "workers did not stop within the grace period"),
            }
        }
        if let Some(h) = self.http.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), h).await;
        }
        // Let librdkafka clients close before the broker they talk to goes.
        if let Some(b) = self.embedded.take() {
            let _ = tokio::task::spawn_blocking(move || drop(b)).await;
        }
        result
    }
}

/// Connect, create topics, start the workers, and wait for shutdown. Every log line of the
/// workers carries the instance (JSON logs: `spans`).
#[tracing::instrument(name = "service", skip_all, fields(instance = %cfg.instance_id))]
async fn run(
    cfg: Arc<Config>,
    conn: KafkaConn,
    embedded: Option<kafka::embedded::EmbeddedHandle>,
    view: Arc<StoreView>,
    ledger: Arc<Ledger>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    wait_for_kafka(&conn, cfg.kafka_connect_timeout, &shutdown).await?;
    health.set_kafka_reachable(true);
    if shutdown.is_cancelled() {
        return Ok(());
    }
    let specs = topic_specs(&cfg);
    let creator = match &embedded {
        Some(h) => TopicCreator::Embedded(h),
        None => TopicCreator::Admin(&conn),
    };
    let created = ensure_topics(creator, &specs, cfg.replication_factor)
        .await
        .map_err(|source| ServiceError::Topics {
            bootstrap: conn.bootstrap.clone(),
            source,
        })?;
    if !created.is_empty() {
        tracing::info!(?created, "topics created");
    }

    let threads: Vec<thread::JoinHandle<()>> = vec![
        reader::spawn(
            health.register(WorkerKind::StoreReader),
            conn.clone(),
            cfg.topics.store.clone(),
            view.clone(),
            shutdown.clone(),
        )?,
        {
            let ingest = Ingest {
                cfg: cfg.clone(),
                conn: conn.clone(),
                view: view.clone(),
            };
            kafka::supervise(
                health.register(WorkerKind::Ingest),
                conn.clone(),
                shutdown.clone(),
                move |shutdown, worker| ingest.run_pipeline(shutdown, worker),
            )?
        },
        kafka::tail::spawn(
            health.register(WorkerKind::CommandLedger),
            conn.clone(),
            cfg.topics.results.clone(),
            LedgerSink(ledger.clone()),
            shutdown.clone(),
        )?,
        {
            let commands = Commands::new(cfg.clone(), conn.clone(), view.clone(), ledger.clone());
            kafka::supervise(
                health.register(WorkerKind::Commands),
                conn.clone(),
                shutdown.clone(),
                move |shutdown, worker| commands.run_pipeline(shutdown, worker),
            )?
        },
    ];
    let guard = tokio::spawn(
        StoreGuard {
            conn: conn.clone(),
            topic: cfg.topics.store.clone(),
            view: view.clone(),
            health: health.clone(),
            interval: cfg.guard_interval,
        }
        .run(shutdown.clone()),
    );
    let sweeper = tokio::spawn(
        Sweeper {
            conn: conn.clone(),
            topic: cfg.topics.store.clone(),
            view: view.clone(),
            interval: cfg.sweep_interval,
        }
        .run(shutdown.clone()),
    );

    let reachability = tokio::spawn(kafka::reachability::watch(
        conn.clone(),
        cfg.topics.store.clone(),
        health.clone(),
        shutdown.clone(),
    ));
    let lag = tokio::spawn(kafka::lag::monitor(
        conn.clone(),
        vec![
            (cfg.group_id.clone(), cfg.topics.failures.clone()),
            (
                format!("{}.commands", cfg.group_id),
                cfg.topics.commands.clone(),
            ),
        ],
        Duration::from_secs(10),
        shutdown.clone(),
    ));

    // Until shutdown, or until a worker dies for good: then everything stops in order and the
    // process exits non-zero (a fresh process restarts from the topics).
    let mut fatal = None;
    let mut watch = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = watch.tick() => {
                if let Some(why) = health.fatal() {
                    tracing::error!(why, "a worker cannot be restarted; stopping the service");
                    fatal = Some(why);
                    shutdown.cancel();
                    break;
                }
            }
        }
    }
    let _ = tokio::join!(guard, sweeper, lag, reachability);
    // Worker threads notice the token within one poll interval, then commit and close.
    let _ = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await;
    match fatal {
        Some(why) => Err(ServiceError::WorkerDead(why)),
        None => Ok(()),
    }
}

async fn wait_for_kafka(
    conn: &KafkaConn,
    timeout: Duration,
    shutdown: &CancellationToken,
) -> Result<(), ServiceError> {
    let started = std::time::Instant::now();
    let mut last = String::from("no attempt finished");
    while started.elapsed() < timeout && !shutdown.is_cancelled() {
        let c = conn.clone();
        let attempt = (timeout.saturating_sub(started.elapsed())).min(Duration::from_secs(5));
        match tokio::task::spawn_blocking(move || kafka::probe(&c, attempt)).await {
            Ok(Ok(brokers)) => {
                tracing::info!(bootstrap = conn.bootstrap, brokers, "Kafka reachable");
                return Ok(());
            }
            Ok(Err(kafka::ProbeError::Denied(cause))) => {
                // Credentials and trust do not fix themselves: stop now, naming the cause,
                // rather than retry until the timeout with a /healthz that looks fine. (The
                // probe masked the text with this connection's secrets.)
                return Err(ServiceError::KafkaAccessDenied {
                    bootstrap: conn.bootstrap.clone(),
                    cause,
                });
            }
            Ok(Err(kafka::ProbeError::Kafka(e))) => {
                last = conn.mask(&e.to_string());
                if let rdkafka::error::KafkaError::ClientConfig(..) = e {
                    // A bad property does not fix itself: say so now, not after the timeout.
                    return Err(ServiceError::KafkaConfig(last));
                }
                tracing::warn!(
                    bootstrap = conn.bootstrap,
                    error = last,
                    "Kafka not reachable yet"
                );
            }
            Err(e) => last = e.to_string(),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
    if shutdown.is_cancelled() {
        return Ok(());
    }
    Err(ServiceError::KafkaUnreachable {
        bootstrap: conn.bootstrap.clone(),
        waited: started.elapsed(),
        detail: last,
    })
}
