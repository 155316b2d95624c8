//! Hot reload of the keys directory: a Kubernetes secret update adds `<new-id>.pem` (or
//! removes a retired key) without a restart. The directory is polled, not watched: secret
//! mounts swap a `..data` symlink, which inotify reports unreliably. A directory that fails to
//! load keeps the previous keyring in service and is reported, never half-applied.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use super::keyring::Keyring;
use crate::secret::Secret;
use crate::telemetry::Metrics;

/// Names, sizes and modification times of the directory's files: changes when a key is
/// added, removed or replaced.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            let meta = std::fs::metadata(&path).ok()?; // follows symlinks, as the loader does
            meta.is_file()
                .then(|| (path, meta.len(), meta.modified().ok()))
        })
        .collect();
    files.sort();
    files
}

pub struct KeyReloader {
    pub dir: PathBuf,
    pub password: Option<Secret>,
    pub interval: Duration,
}

impl KeyReloader {
    /// Polls every `interval` and swaps in a new keyring when the directory changed.
    pub fn spawn(
        self,
        keyring: Arc<ArcSwap<Keyring>>,
        metrics: Arc<Metrics>,
    ) -> tokio::task::JoinHandle<()> {
        metrics.keys_loaded.set(keyring.load().len() as i64);
        tokio::spawn(async move {
            let mut seen = fingerprint(&self.dir);
            loop {
                tokio::time::sleep(self.interval).await;
                let now = fingerprint(&self.dir);
                if now == seen {
                    continue;
                }
                match Keyring::load_dir(&self.dir, self.password.as_ref()) {
                    Ok(new) => {
                        let ids: Vec<String> = new.ids().map(String::from).collect();
                        tracing::info!(?ids, "keys directory changed: keyring reloaded");
                        metrics.keys_loaded.set(new.len() as i64);
                        keyring.store(Arc::new(new));
                        seen = now;
                    }
                    Err(e) => {
                        // Keep serving with the old keys; retry on the next change or tick.
                        metrics.key_reload_failures.inc();
                        tracing::error!(error = %e, "keys directory changed but does not load; keeping the previous keys");
                    }
                }
            }
        })
    }
}
