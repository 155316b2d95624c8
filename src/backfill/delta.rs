//! The `@odata.deltaLink` of each channel backfill has read with the delta query, kept in
//! `backfill.state_file` so that the next gap of that channel reads only what changed since.
//! A lost file costs one full read of the channel, never a message.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Default)]
pub struct DeltaLinks {
    path: Option<PathBuf>,
    links: BTreeMap<String, String>,
}

/// The key of a channel's link.
pub fn key(tenant: &str, team: &str, channel: &str) -> String {
    format!("{tenant}/{team}/{channel}")
}

impl DeltaLinks {
    /// Reads `path` (missing or unreadable: empty, and the next reads start over).
    pub fn load(path: Option<&Path>) -> Self {
        DeltaLinks {
            path: path.map(Path::to_path_buf),
            links: crate::state_file::load(path, "backfill state"),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.links.get(key).map(String::as_str)
    }

    /// Keeps `link` for `key`, saved at once (write, fsync, rename); called only after what the
    /// read returned was published.
    pub fn set(&mut self, key: String, link: String) {
        self.links.insert(key, link);
        if let Err(e) = self.save() {
            tracing::warn!(error = %e, "backfill state not saved; the next gap of this channel reads it whole");
        }
    }

    fn save(&self) -> std::io::Result<()> {
        crate::state_file::save(self.path.as_deref(), &self.links)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backfill-state.json");
        let mut links = DeltaLinks::load(Some(&path));
        assert_eq!(links.get(&key("t", "team", "ch")), None);
        links.set(
            key("t", "team", "ch"),
            "https://graph/delta?$deltatoken=7".into(),
        );
        let again = DeltaLinks::load(Some(&path));
        assert_eq!(
            again.get(&key("t", "team", "ch")),
            Some("https://graph/delta?$deltatoken=7")
        );
    }
}
