//! Readiness: Kafka reachable, the store view caught up, and the store topic trustworthy.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, Mutex,
};

use crate::store::StoreView;

pub struct Health {
    view: Arc<StoreView>,
    kafka_reachable: AtomicBool,
    /// A problem with the store topic's configuration (cleared once fixed).
    store_config_breach: Mutex<Option<String>>,
    /// Entries the view holds were deleted from the topic: sticky, entries are lost.
    store_truncated: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Health {
    pub fn new(view: Arc<StoreView>) -> Health {
        Health {
            view,
            kafka_reachable: AtomicBool::new(false),
            store_config_breach: Mutex::new(None),
            store_truncated: Mutex::new(None),
        }
    }

    pub fn set_kafka_reachable(&self, ok: bool) {
        self.kafka_reachable.store(ok, Ordering::SeqCst);
    }

    pub fn kafka_reachable(&self) -> bool {
        self.kafka_reachable.load(Ordering::SeqCst)
    }

    pub fn set_store_config_breach(&self, breach: Option<String>) {
        *lock(&self.store_config_breach) = breach;
    }

    pub fn set_store_truncated(&self, what: String) {
        lock(&self.store_truncated).get_or_insert(what);
    }

    /// `Ok` when ready to serve; otherwise every reason it is not.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let mut why = Vec::new();
        if !self.kafka_reachable() {
            why.push("Kafka is not reachable".to_string());
        }
        if !self.view.is_caught_up() {
            why.push("the store view has not caught up with the store topic yet".to_string());
        }
        if let Some(b) = lock(&self.store_config_breach).as_ref() {
            why.push(format!("store topic integrity: {b}"));
        }
        if let Some(t) = lock(&self.store_truncated).as_ref() {
            why.push(format!("store topic integrity: {t}"));
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why)
        }
    }
}
