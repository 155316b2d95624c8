//! Small JSON state files the long-running verbs keep beside their broker position (the
//! controller's watermarks, backfill's delta links): read whole at start, replaced whole
//! (write, fsync, rename) on each change, so a crash leaves the old file or the new one.
//! A missing file is an empty state; an unreadable one is logged and treated as empty, which
//! every caller tolerates by doing more work, never less.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The state in `path` (`what` names it in the log), or the empty state.
pub fn load<T: DeserializeOwned + Default>(path: Option<&Path>, what: &str) -> T {
    let Some(p) = path else {
        return T::default();
    };
    match std::fs::read(p) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(file = %p.display(), error = %e, "{what} unreadable; starting empty");
            T::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => T::default(),
        Err(e) => {
            tracing::warn!(file = %p.display(), error = %e, "{what} unreadable; starting empty");
            T::default()
        }
    }
}

/// Replaces the state in `path` (nothing without a path).
pub fn save<T: Serialize>(path: Option<&Path>, state: &T) -> std::io::Result<()> {
    use std::io::Write;
    let Some(path) = path else {
        return Ok(());
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(state).expect("state serializes"))?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
