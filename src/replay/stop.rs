//! A clean stop: on SIGINT the replay finishes the batch in flight (so the target confirmed
//! everything before the printed position), then stops and prints `--from-offset` arguments
//! that continue without a gap or a duplicate. A second SIGINT exits at once (the position
//! printed by the first stop would then be unknown, so nothing is printed).

use std::sync::Arc;

use tokio::sync::watch;

use super::range::format_spec;
use super::source::Source;

/// Stop requests for a running replay: the CLI wires SIGINT to it; tests call `stop`.
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

    /// A Stop requested by SIGINT (Ctrl-C); the second one exits with status 130.
    pub fn on_sigint() -> Self {
        let stop = Stop::default();
        let s = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\nstopping after the batch in flight (Ctrl-C again to abort)");
                s.stop();
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
        stop
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
