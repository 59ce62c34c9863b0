//! Re-reads the values file and the certificate/key when their contents change.
//!
//! A mounted Kubernetes Secret or ConfigMap changes by swapping a `..data` symlink, which
//! inotify on the file paths does not see reliably; comparing contents on a timer does, and
//! costs a few small reads every interval.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::AppState;
use super::tls::{self, CertResolver};
use crate::config::Values;
use crate::metrics::ReloadKind;

/// The values file and the bytes now in use.
#[derive(Debug)]
pub struct ValuesFile {
    /// The mounted values file.
    pub path: PathBuf,
    /// Its bytes as last loaded (a change is a difference in bytes, not in mtime).
    pub last: Vec<u8>,
}

/// The certificate and key files and the bytes now in use.
#[derive(Debug)]
pub struct CertFiles {
    /// The PEM certificate chain.
    pub cert: PathBuf,
    /// The PEM private key.
    pub key: PathBuf,
    /// Both files' bytes as last loaded.
    pub last: (Vec<u8>, Vec<u8>),
}

/// What to watch. `None` parts (built-in values, self-signed certificate) never change.
#[derive(Debug, Default)]
pub struct Watched {
    /// The values file, when one was given.
    pub values: Option<ValuesFile>,
    /// The certificate pair, when files were given.
    pub cert: Option<CertFiles>,
}

/// Polls every `interval` until `stop` turns true.
pub async fn run(
    mut watched: Watched,
    state: Arc<AppState>,
    resolver: Arc<CertResolver>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    if watched.values.is_none() && watched.cert.is_none() {
        return;
    }
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate; the files were just loaded
    loop {
        tokio::select! {
            _ = ticker.tick() => poll_once(&mut watched, &state, &resolver).await,
            _ = super::stopped(&mut stop) => return,
        }
    }
}

/// One poll: reload what changed. A broken new values file is remembered so it is reported
/// once, not every interval; a broken certificate pair is retried (the second file of a
/// non-atomic update may simply not be there yet).
pub async fn poll_once(watched: &mut Watched, state: &AppState, resolver: &CertResolver) {
    if let Some(v) = watched.values.as_mut() {
        match tokio::fs::read(&v.path).await {
            Ok(bytes) if bytes != v.last => {
                match Values::from_file_bytes(&v.path, &bytes) {
                    Ok(values) => {
                        state.set_values(values);
                        state.metrics.reload(ReloadKind::values, true);
                        tracing::info!(path = %v.path.display(), "values file reloaded");
                    }
                    Err(e) => {
                        state.metrics.reload(ReloadKind::values, false);
                        tracing::error!(error = %e, "values file changed but is invalid; keeping the last good values");
                    }
                }
                v.last = bytes;
            }
            Ok(_) => {}
            Err(e) => {
                // A missing file mid-swap is retried on the next tick; not counted as a failure
                // until the contents actually change to something unusable.
                tracing::debug!(path = %v.path.display(), error = %e, "cannot read values file");
            }
        }
    }
    if let Some(c) = watched.cert.as_mut() {
        let read = {
            let (cert, key) = (c.cert.clone(), c.key.clone());
            tokio::task::spawn_blocking(move || tls::read_pair(&cert, &key)).await
        };
        match read {
            Ok(Ok(pair)) if pair != c.last => {
                match tls::load_pem(&pair.0, &pair.1, &c.cert, &c.key) {
                    Ok(loaded) => {
                        resolver.set(loaded.key);
                        if let Some(t) = loaded.not_after {
                            state.metrics.set_certificate_expiry(t);
                        }
                        state.metrics.reload(ReloadKind::certificate, true);
                        tracing::info!(serial = %loaded.serial, not_after = %crate::logging::rfc3339(loaded.not_after), "serving certificate reloaded");
                        c.last = pair;
                    }
                    Err(e) => {
                        state.metrics.reload(ReloadKind::certificate, false);
                        tracing::warn!(error = %e, "certificate changed but cannot be used (yet); keeping the current one");
                    }
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot read certificate files"),
            Err(e) => tracing::warn!(error = %e, "certificate reload task failed"),
        }
    }
}
