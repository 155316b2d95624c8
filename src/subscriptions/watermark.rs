//! When delivery was last known good, per subscription: the start of the window a `missed`
//! lifecycle event reports. Graph retries a delivery for up to 4 hours, so a `missed` covers at
//! most that long; it covers less when the controller knows better: it created the subscription
//! later (nothing could be missed before), or an earlier `missed` already reported everything
//! up to its own arrival. Kept in `subscriptions.state_file` (when set) so that a restarted
//! controller does not forget it; without one, or for a subscription it did not create, the
//! window is the full 4 hours, which may re-fetch more than needed but never less.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::planner::chrono_duration;

/// Graph retries a delivery for up to 4 hours: anything `missed` happened within that window.
pub const GRAPH_RETRY_WINDOW: Duration = Duration::from_secs(4 * 3600);

#[derive(Debug, Default)]
pub struct Watermarks {
    path: Option<PathBuf>,
    by_id: BTreeMap<String, DateTime<Utc>>,
}

impl Watermarks {
    /// Reads `path` (a missing file is an empty state; an unreadable one is logged and
    /// treated as empty: the windows are then the full 4 hours, never too short).
    pub fn load(path: Option<&Path>) -> Self {
        Watermarks {
            path: path.map(Path::to_path_buf),
            by_id: crate::state_file::load(path, "subscription state"),
        }
    }

    /// Where the window of a `missed` for `id` received at `received` starts.
    pub fn missed_from(&self, id: &str, received: DateTime<Utc>) -> DateTime<Utc> {
        let horizon = received - chrono_duration(GRAPH_RETRY_WINDOW);
        self.by_id
            .get(id)
            .map_or(horizon, |&good| good.max(horizon))
    }

    /// Delivery for `id` is known good up to `at`. Entries past Graph's retry window no longer
    /// shorten any window and are dropped. Saved at once (write, fsync, rename).
    pub fn mark(&mut self, id: &str, at: DateTime<Utc>) {
        let horizon = at - chrono_duration(GRAPH_RETRY_WINDOW);
        self.by_id.retain(|_, t| *t > horizon);
        let t = self.by_id.entry(id.to_string()).or_insert(at);
        *t = (*t).max(at);
        if let Err(e) = self.save() {
            tracing::warn!(error = %e, "subscription state not saved; after a restart missed windows fall back to 4 hours");
        }
    }

    fn save(&self) -> std::io::Result<()> {
        crate::state_file::save(self.path.as_deref(), &self.by_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 3, h, m, 0).unwrap()
    }

    #[test]
    fn a_missed_window_reaches_back_to_the_watermark_or_four_hours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut w = Watermarks::load(Some(&path));
        // Unknown: Graph's whole retry window.
        assert_eq!(w.missed_from("s1", at(12, 0)), at(8, 0));
        w.mark("s1", at(11, 30));
        assert_eq!(w.missed_from("s1", at(12, 0)), at(11, 30));
        // Older than the retry window: the window is the shorter one.
        assert_eq!(w.missed_from("s1", at(16, 0)), at(12, 0));

        // A restarted controller reads it back.
        let again = Watermarks::load(Some(&path));
        assert_eq!(again.missed_from("s1", at(12, 0)), at(11, 30));
        assert_eq!(again.missed_from("s2", at(12, 0)), at(8, 0));
    }

    #[test]
    fn marks_only_move_forward_and_old_ones_are_dropped() {
        let mut w = Watermarks::load(None);
        w.mark("s1", at(11, 0));
        w.mark("s1", at(10, 0));
        assert_eq!(w.missed_from("s1", at(12, 0)), at(11, 0));
        w.mark("s2", at(16, 0));
        assert!(!w.by_id.contains_key("s1"), "past the retry window");
    }
}
