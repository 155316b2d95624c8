//! A clean stop: on SIGINT or SIGTERM (Ctrl-C, `kill`, `timeout`, a Kubernetes Job's end) the
//! replay finishes the batch in flight (so the target confirmed everything before the printed
//! position), then stops and prints `--from-offset` arguments that continue without a gap or a
//! duplicate, and exits with [`EXIT_INTERRUPTED`]. A second signal exits at once (the position
//! printed by the first stop would then be unknown, so nothing is printed).

use std::sync::Arc;

use tokio::sync::watch;

use super::range::format_spec;
use super::source::Source;

/// Exit status of a replay stopped by a signal before the end of its range: 75, EX_TEMPFAIL
/// ("try again"): the summary's `resume` arguments continue it. 0 is a finished replay (or one
/// stopped by `--max-messages`), 1 an error.
pub const EXIT_INTERRUPTED: u8 = 75;

/// Stop requests for a running replay: the CLI wires SIGINT and SIGTERM to it; tests call `stop`.
#[derive(Clone)]
pub struct Stop {
    tx: Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
}

impl Default for Stop {
    fn default() -> Self {
        let (tx, rx) = watch::channel(false);
        Stop {
            tx: Arc::new(tx),
            rx,
        }
    }
}

impl Stop {
    pub fn stop(&self) {
        let _ = self.tx.send(true);
    }

    pub fn requested(&self) -> bool {
        *self.rx.borrow()
    }

    /// Completes once a stop is requested.
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// A Stop requested by SIGINT (Ctrl-C) or SIGTERM; a second signal exits at once with
    /// 128 + its number, as a shell reports a process killed by it.
    pub fn on_signals() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        let stop = Stop::default();
        let s = stop.clone();
        let (mut int, mut term) = (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        );
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
            eprintln!("\n{name}: stopping after the batch in flight (again to abort)");
            s.stop();
            let code = tokio::select! {
                _ = int.recv() => 130,
                _ = term.recv() => 143,
            };
            std::process::exit(code);
        });
        Ok(stop)
    }
}

/// The arguments that continue the replay from where `source` is: every partition's next
/// offset and its end.
pub fn resume_args(source: &Source) -> String {
    let next = source.next_offsets();
    let ends = source.ranges().map(|r| (r.partition, r.to));
    format!(
        "--from-offset {} --to-offset {}",
        format_spec(next.iter().map(|(p, o)| (*p, *o))),
        format_spec(ends)
    )
}
