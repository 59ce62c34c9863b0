//! `rewrite::mutate_object` on the Prometheus server ConfigMap: never panics, the patch applies
//! to the object, touches only `/data/...`, and the patched object needs no further patch.
//!
//! Input: either a whole JSON object (first byte `{`: object decoding is fuzzed too), or the
//! data keys `prometheus.yml`, `recording_rules.yml` and `alerting_rules.yml` separated by NUL
//! bytes, put into a ConfigMap that matches the default `match.configMap`.

#![no_main]

mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::configmap(data));
