//! Retention: writes tombstones for entries past their `expires_at`. Several instances may sweep
//! at once: a tombstone written twice is still one deletion, and ingest refuses to re-create a
//! tombstoned entry, so no interleaving resurrects one.

use std::{sync::Arc, time::Duration};

use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use super::StoreView;
use crate::{
    events::{EntriesExpired, Event},
    kafka::KafkaConn,
};

pub struct Sweeper {
    pub conn: KafkaConn,
    pub topic: String,
    pub view: Arc<StoreView>,
    pub interval: Duration,
}

impl Sweeper {
    #[tracing::instrument(name = "sweeper", skip_all, fields(topic = %self.topic))]
    pub async fn run(self, shutdown: CancellationToken) {
        let producer: FutureProducer = match self.conn.idempotent_producer_config().create() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(
                    error = self.conn.mask(&e.to_string()),
                    "retention sweeper: cannot create a producer; entries will not expire"
                );
                return;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
            if !self.view.is_caught_up() {
                continue;
            }
            let expired = self.view.expired_ids(crate::now_ms());
            if expired.is_empty() {
                continue;
            }
            let mut written = 0u64;
            let sends = expired.iter().map(|id| {
                producer.send(
                    FutureRecord::<str, [u8]>::to(&self.topic).key(id.as_str()),
                    Duration::from_secs(10),
                )
            });
            for r in futures::future::join_all(sends).await {
                match r {
                    Ok(_) => written += 1,
                    Err((e, _)) => {
                        tracing::warn!(error = %e, "retention sweeper: tombstone not written; retried next sweep")
                    }
                }
            }
            EntriesExpired { count: written }.emit();
        }
    }
}
