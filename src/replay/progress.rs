//! Progress on a terminal (stderr: count, rate and ETA, redrawn in place about once a second)
//! and the final summary, printed for people or as JSON (`--json`) for scripts.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::range::PartitionRange;

pub struct Progress {
    total: u64,
    done: u64,
    started: Instant,
    last_draw: Instant,
    tty: bool,
}

impl Progress {
    /// Draws only when stderr is a terminal: logs and CI output stay clean.
    pub fn new(total: u64) -> Self {
        let now = Instant::now();
        Progress {
            total,
            done: 0,
            started: now,
            last_draw: now,
            tty: std::io::stderr().is_terminal(),
        }
    }

    pub fn advance(&mut self, n: u64) {
        self.done += n;
        if self.tty && self.last_draw.elapsed() >= Duration::from_secs(1) {
            self.last_draw = Instant::now();
            let _ = write!(std::io::stderr(), "\r\x1b[2K{}", self.line());
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Records per second since the start.
    pub fn rate(&self) -> f64 {
        let s = self.started.elapsed().as_secs_f64();
        if s > 0.0 {
            self.done as f64 / s
        } else {
            0.0
        }
    }

    fn line(&self) -> String {
        let rate = self.rate();
        let left = self.total.saturating_sub(self.done);
        let eta = if rate > 0.0 {
            format!("{:.0}s", left as f64 / rate)
        } else {
            "?".into()
        };
        let pct = if self.total > 0 {
            100.0 * self.done as f64 / self.total as f64
        } else {
            100.0
        };
        format!(
            "replay: {}/{} ({pct:.1}%) {rate:.0} msg/s ETA {eta}",
            self.done, self.total
        )
    }

    /// Clears the progress line before the summary.
    pub fn finish(&self) {
        if self.tty {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}

/// Why the replay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// Every partition reached its end.
    Complete,
    /// SIGINT or SIGTERM (or the caller's stop signal).
    Interrupted,
    /// `--max-messages` records were read.
    MaxMessages,
    /// Reading, rebuilding or publishing failed (see `error`); nothing after `next` was
    /// published.
    Failed,
}

impl Ending {
    /// The process's exit status: 0 when the requested work is done, 1 when it failed,
    /// [`EXIT_INTERRUPTED`](super::stop::EXIT_INTERRUPTED) when a signal stopped it early.
    pub fn exit_code(self) -> u8 {
        match self {
            Ending::Complete | Ending::MaxMessages => 0,
            Ending::Failed => 1,
            Ending::Interrupted => super::stop::EXIT_INTERRUPTED,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Ending::Complete => "complete",
            Ending::Interrupted => "interrupted",
            Ending::MaxMessages => "stopped at --max-messages",
            Ending::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionSummary {
    pub partition: i32,
    pub from: i64,
    pub to: i64,
    /// First offset not yet published: the resume point.
    pub next: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub topic: String,
    pub ending: Ending,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub dry_run: bool,
    /// Where the records went, or in a dry run would go (None: a dry run without a target).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub reprocess: bool,
    /// Source records read in range.
    pub read: u64,
    /// Records published to the target (in a dry run: that would have been).
    pub published: u64,
    /// Records the filters left out.
    pub filtered: u64,
    /// `--to-file`: records left out because their value is not JSON (or empty).
    pub skipped_not_json: u64,
    /// With `--reprocess`: items the current code or configuration rejects, by reason.
    pub rejected: BTreeMap<String, u64>,
    pub elapsed_s: f64,
    pub rate_per_s: f64,
    pub partitions: Vec<PartitionSummary>,
    /// Arguments that continue an unfinished replay exactly where it stopped (None when
    /// complete): `--from-offset <next> --to-offset <to>`.
    pub resume: Option<String>,
}

impl Summary {
    pub fn partitions(
        ranges: &[PartitionRange],
        next: &BTreeMap<i32, i64>,
    ) -> Vec<PartitionSummary> {
        ranges
            .iter()
            .map(|r| PartitionSummary {
                partition: r.partition,
                from: r.from,
                to: r.to,
                next: next.get(&r.partition).copied().unwrap_or(r.from),
            })
            .collect()
    }

    /// For people, on stderr.
    pub fn print_human(&self) {
        let mut e = std::io::stderr().lock();
        let verb = if self.dry_run {
            "would publish"
        } else {
            "published"
        };
        let _ = writeln!(
            e,
            "replay of {} {}: read {}, {verb} {}, filtered out {} in {:.1}s ({:.0} msg/s)",
            self.topic,
            self.ending.as_str(),
            self.read,
            self.published,
            self.filtered,
            self.elapsed_s,
            self.rate_per_s
        );
        if let Some(t) = &self.target {
            let _ = writeln!(e, "  target: {t}");
        }
        if self.skipped_not_json > 0 {
            let _ = writeln!(
                e,
                "  skipped {} records whose value is not JSON (the file holds one JSON per line)",
                self.skipped_not_json
            );
        }
        for (reason, n) in &self.rejected {
            let _ = writeln!(e, "  rejected by the current code: {n} {reason}");
        }
        for p in &self.partitions {
            let _ = writeln!(
                e,
                "  partition {}: [{}, {}) next {}",
                p.partition, p.from, p.to, p.next
            );
        }
        if let Some(err) = &self.error {
            let _ = writeln!(e, "failed: {err}");
        }
        if let Some(r) = &self.resume {
            let _ = writeln!(e, "resume with: {r}");
        }
    }
}
