//! Zero failed admissions through rolling updates and node drains (issue 15): real `promfed
//! serve` processes over real TLS behind a round-robin balancer that keeps a terminating replica
//! in rotation for 1.5 s after its SIGTERM, as endpoint and kube-proxy propagation do. The
//! negative control runs the same with `--shutdown-delay 0` and must see failed calls: the
//! delay, not luck, is what makes the others pass.

#[path = "rollout/harness.rs"]
mod harness;

use std::path::PathBuf;
use std::time::Duration;

use harness::{Disruption, Report, Scenario};

/// How long the balancer keeps a terminating replica in rotation.
const LAG: Duration = Duration::from_millis(1500);

fn scenario(disruption: Disruption, shutdown_delay: Duration) -> Scenario {
    Scenario {
        exe: PathBuf::from(env!("CARGO_BIN_EXE_promfed")),
        disruption,
        shutdown_delay,
        lag: LAG,
        clients: 4,
    }
}

/// One scenario at a time: they measure timing on a shared 2-core machine.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(s: &Scenario) -> Report {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = rt
        .block_on(harness::run(s))
        .unwrap_or_else(|e| panic!("{s:?}: {e}"));
    eprintln!(
        "{:?} delay {:?}: {} calls, {} failed, {} connections routed to terminating replicas, {:?}",
        s.disruption,
        s.shutdown_delay,
        report.calls,
        report.failed,
        report.routed_to_terminating,
        report.took
    );
    report
}

fn assert_no_failed_call(r: &Report) {
    // The scenario exercised what it is about: calls kept arriving at terminating replicas.
    assert!(r.routed_to_terminating > 0, "{r:?}");
    assert!(r.calls > 20, "{r:?}");
    assert_eq!(r.failed, 0, "failed calls: {:#?}", r.failures);
}

#[test]
fn rolling_update_of_every_replica_fails_no_call() {
    let r = run(&scenario(Disruption::Rolling, Duration::from_secs(3)));
    assert_no_failed_call(&r);
}

#[test]
fn node_drain_fails_no_call() {
    let r = run(&scenario(Disruption::NodeDrain, Duration::from_secs(3)));
    assert_no_failed_call(&r);
}

#[test]
fn without_the_delay_calls_fail() {
    let r = run(&scenario(Disruption::Rolling, Duration::ZERO));
    assert!(r.routed_to_terminating > 0, "{r:?}");
    assert!(
        r.failed > 0,
        "with --shutdown-delay 0 the replica stops accepting while it is still in rotation; \
         no call failed, so this test cannot tell the delay works: {r:?}"
    );
}
