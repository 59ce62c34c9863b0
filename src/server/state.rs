//! What the handlers, the reloader and the probes share: the values in use, the metrics, the
//! request limits and the readiness flags.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use crate::config::Values;
use crate::metrics::Metrics;

/// State shared by the handlers, the reloader and the probes.
#[derive(Debug)]
pub struct AppState {
    values: RwLock<Arc<Values>>,
    /// The server's metrics registry.
    pub metrics: Arc<Metrics>,
    pub(crate) max_body_bytes: usize,
    pub(crate) request_timeout: Duration,
    ready: AtomicBool,
    shutting_down: AtomicBool,
}

impl AppState {
    /// Not ready until [`AppState::set_ready`].
    pub fn new(
        values: Values,
        metrics: Arc<Metrics>,
        max_body_bytes: usize,
        request_timeout: Duration,
    ) -> Self {
        Self {
            values: RwLock::new(Arc::new(values)),
            metrics,
            max_body_bytes,
            request_timeout,
            ready: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// The values in use now (a reload swaps them for later requests only).
    pub fn values(&self) -> Arc<Values> {
        self.values
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Swaps in reloaded values.
    pub fn set_values(&self, values: Values) {
        *self.values.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(values);
    }

    /// Marks configuration and certificate as loaded.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Marks the start of shutdown; `/readyz` fails from now on.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// True from the shutdown signal on.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Loaded and not shutting down: what `/readyz` answers.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.shutting_down.load(Ordering::SeqCst)
    }
}
