//! The webhook's Prometheus metrics, all in one [`Registry`] served on the metrics port.
//! Every label has a small fixed set of values (no uids, names or namespaces), so a busy
//! cluster cannot blow up the series count.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The admission operation, or `Unknown` when the request could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum OperationLabel {
    /// `CREATE`.
    CREATE,
    /// `UPDATE`.
    UPDATE,
    /// `DELETE`.
    DELETE,
    /// `CONNECT`.
    CONNECT,
    /// The request could not be decoded far enough to tell.
    UNKNOWN,
}

/// How one admission request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ResultLabel {
    /// Allowed with a patch.
    patched,
    /// A matching object already in its federated form: allowed, no patch.
    unchanged,
    /// Not an object promfed rewrites (or an operation it ignores): allowed, no patch.
    skipped,
    /// The object could not be rewritten and `onError: deny`.
    denied,
    /// The object could not be rewritten and `onError: allow`: allowed unmodified.
    allowed_on_error,
    /// HTTP 400: the body was not an AdmissionReview v1.
    invalid,
    /// HTTP 413: the body was over the limit.
    too_large,
    /// HTTP 408: the request took longer than the request timeout.
    timeout,
    /// HTTP 500: the response could not be built.
    error,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    operation: OperationLabel,
    result: ResultLabel,
}

/// What was reloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ReloadKind {
    /// The values file.
    values,
    /// The serving certificate and key.
    certificate,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReloadLabels {
    kind: ReloadKind,
}

/// All metrics of the server. Cheap to share behind an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    rewrite_seconds: Histogram,
    patches: Counter,
    patch_bytes: Counter,
    reloads: Family<ReloadLabels, Counter>,
    reload_failures: Family<ReloadLabels, Counter>,
    cert_expiry: Gauge,
    in_flight: Gauge,
    memo_hits: Counter,
    memo_misses: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates the metrics and registers them under the `promfed_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("promfed");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "admission_requests",
            "Admission requests by operation and result",
            requests.clone(),
        );
        // 50 us .. ~400 ms: a rewrite of a realistic ConfigMap takes around a millisecond.
        let rewrite_seconds = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.00005, 2.0, 14),
        );
        registry.register(
            "rewrite_duration_seconds",
            "Time spent deciding one admission review (decode, rewrite, encode)",
            rewrite_seconds.clone(),
        );
        let patches = Counter::default();
        registry.register(
            "patches_sent",
            "Admission responses that carried a JSON patch",
            patches.clone(),
        );
        let patch_bytes = Counter::default();
        registry.register(
            "patch_bytes_sent",
            "Bytes of JSON patch sent in admission responses",
            patch_bytes.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Successful reloads of a changed values file or certificate",
            reloads.clone(),
        );
        let reload_failures = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "config_reload_failures",
            "Failed reloads of a changed values file or certificate; the last good one stays in use",
            reload_failures.clone(),
        );
        // Create the series up front so dashboards and alerts see 0, not "no data".
        for kind in [ReloadKind::values, ReloadKind::certificate] {
            let _ = reloads.get_or_create(&ReloadLabels { kind });
            let _ = reload_failures.get_or_create(&ReloadLabels { kind });
        }
        let cert_expiry = Gauge::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "notAfter of the serving certificate in use, as Unix time",
            cert_expiry.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "admission_requests_in_flight",
            "Admission requests being read or answered now",
            in_flight.clone(),
        );
        let memo_hits = Counter::default();
        registry.register(
            "rewrite_memo_hits",
            "ConfigMap data keys answered from the rewrite memo (the same text seen before)",
            memo_hits.clone(),
        );
        let memo_misses = Counter::default();
        registry.register(
            "rewrite_memo_misses",
            "ConfigMap data keys rewritten because the memo did not hold them",
            memo_misses.clone(),
        );
        Self {
            registry,
            requests,
            rewrite_seconds,
            patches,
            patch_bytes,
            reloads,
            reload_failures,
            cert_expiry,
            in_flight,
            memo_hits,
            memo_misses,
        }
    }

    /// A rewrite memo of `capacity_bytes` whose lookups these metrics count.
    pub fn memo(&self, capacity_bytes: usize) -> crate::rewrite::Memo {
        crate::rewrite::Memo::new(capacity_bytes)
            .counting(self.memo_hits.clone(), self.memo_misses.clone())
    }

    /// Counts one admission request.
    pub fn request(&self, operation: OperationLabel, result: ResultLabel) {
        self.requests
            .get_or_create(&RequestLabels { operation, result })
            .inc();
    }

    /// Records how long one review took, in seconds.
    pub fn rewrite_duration(&self, seconds: f64) {
        self.rewrite_seconds.observe(seconds);
    }

    /// Counts one patch sent, of `bytes` bytes.
    pub fn patch_sent(&self, bytes: usize) {
        self.patches.inc();
        self.patch_bytes.inc_by(bytes as u64);
    }

    /// Counts a reload of `kind`, successful or not.
    pub fn reload(&self, kind: ReloadKind, ok: bool) {
        let family = if ok {
            &self.reloads
        } else {
            &self.reload_failures
        };
        family.get_or_create(&ReloadLabels { kind }).inc();
    }

    /// Sets the expiry of the certificate now in use.
    pub fn set_certificate_expiry(&self, unix_seconds: i64) {
        self.cert_expiry.set(unix_seconds);
    }

    /// Counts a request as in flight until the returned guard is dropped.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// The registry in the Prometheus text exposition format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Decrements the in-flight gauge when dropped (also when the request is cut off).
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counted_series() {
        let m = Metrics::new();
        m.request(OperationLabel::UPDATE, ResultLabel::patched);
        m.reload(ReloadKind::values, false);
        m.set_certificate_expiry(1_900_000_000);
        m.patch_sent(42);
        let text = m.encode().unwrap();
        assert!(
            text.contains(
                r#"promfed_admission_requests_total{operation="UPDATE",result="patched"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"promfed_config_reload_failures_total{kind="values"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("promfed_certificate_expiry_timestamp_seconds 1900000000"),
            "{text}"
        );
        assert!(text.contains("promfed_patch_bytes_sent_total 42"), "{text}");
        assert!(
            text.contains("promfed_rewrite_duration_seconds_bucket"),
            "{text}"
        );
    }
}
