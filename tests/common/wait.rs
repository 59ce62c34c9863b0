//! Bounded polling, one rule for every test: poll until the check yields a value, fail after a
//! bound with the last state the check reported. Nothing sleeps a fixed time to "let things
//! settle". Blocking for the std-thread tests (real Prometheus processes), async for tokio ones.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// Upper bound of a wait on the in-process server. Generous: the machine is shared.
pub const BOUND: Duration = Duration::from_secs(20);

/// When a wait gives up, and what it reports then.
struct Deadline<'a> {
    what: &'a str,
    timeout: Duration,
    at: Instant,
}

impl<'a> Deadline<'a> {
    fn new(what: &'a str, timeout: Duration) -> Self {
        Self {
            what,
            timeout,
            at: Instant::now() + timeout,
        }
    }

    /// `Some(v)` when done; `None` to poll again; an error naming the last state once time is up.
    fn judge<T>(&self, check: Result<Option<T>>) -> Result<Option<T>> {
        let last = match check {
            Ok(Some(v)) => return Ok(Some(v)),
            Ok(None) => "condition not met".to_owned(),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= self.at {
            bail!("{}: not within {:?}; last: {last}", self.what, self.timeout);
        }
        Ok(None)
    }
}

/// Polls `check` every 200 ms until it yields `Some`, failing after `timeout` with the last
/// state `check` reported. Blocks the thread.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Deadline::new(what, timeout);
    loop {
        if let Some(v) = deadline.judge(check())? {
            return Ok(v);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// [`wait_for`] for async checks: polls every 20 ms without blocking the runtime.
pub async fn wait_for_async<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Deadline::new(what, timeout);
    loop {
        if let Some(v) = deadline.judge(check().await)? {
            return Ok(v);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
