//! What the handlers, the reloader and the probes share: the values in use, the metrics, the
//! request limits and the readiness flags.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use crate::config::Values;
use crate::metrics::Metrics;
use crate::rewrite::Memo;

/// Default bound of the rewrite memo: a few ConfigMaps' worth (inputs and outputs), far below
/// the chart's memory limit.
pub const DEFAULT_MEMO_BYTES: usize = 16 * 1024 * 1024;

/// State shared by the handlers, the reloader and the probes.
#[derive(Debug)]
pub struct AppState {
    /// The values in use and the rewrite memo that belongs to them, swapped together.
    values: RwLock<(Arc<Values>, Arc<Memo>)>,
    memo_bytes: usize,
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
            values: RwLock::new((Arc::new(values), Arc::new(metrics.memo(DEFAULT_MEMO_BYTES)))),
            memo_bytes: DEFAULT_MEMO_BYTES,
            metrics,
            max_body_bytes,
            request_timeout,
            ready: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Bounds the rewrite memo (0: no memo); starts a new, empty one.
    #[must_use]
    pub fn with_memo_bytes(mut self, bytes: usize) -> Self {
        self.memo_bytes = bytes;
        let memo = Arc::new(self.metrics.memo(bytes));
        self.values
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .1 = memo;
        self
    }

    /// The values in use now (a reload swaps them for later requests only).
    pub fn values(&self) -> Arc<Values> {
        self.values_and_memo().0
    }

    /// The values in use now and the memo of rewrites made with them.
    pub fn values_and_memo(&self) -> (Arc<Values>, Arc<Memo>) {
        self.values
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Swaps in reloaded values, with a new, empty memo (what was remembered was computed
    /// with the old values).
    pub fn set_values(&self, values: Values) {
        let memo = Arc::new(self.metrics.memo(self.memo_bytes));
        *self.values.write().unwrap_or_else(PoisonError::into_inner) = (Arc::new(values), memo);
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
