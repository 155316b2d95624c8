//! The spool's only writer: a thread that takes every append waiting at the moment, writes them
//! together and fsyncs once (group commit), so concurrent requests share one disk flush.

use std::fs::File;
use std::io::Write;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{segment_path, sync_dir, Position, Spool, SpoolError};
use crate::sink::{lock, next_group};

/// Most appends written under one fsync.
const GROUP: usize = 512;

pub struct Append {
    pub record: Vec<u8>,
    pub items: u64,
    pub appended_ms: u64,
    pub done: oneshot::Sender<Result<(), SpoolError>>,
}

pub struct Handle {
    tx: mpsc::UnboundedSender<Append>,
    thread: std::thread::JoinHandle<()>,
}

impl Handle {
    pub fn sender(&self) -> mpsc::UnboundedSender<Append> {
        self.tx.clone()
    }

    /// Closes the queue and waits until every queued append is answered.
    pub fn join(self) {
        drop(self.tx);
        let _ = self.thread.join();
    }
}

pub fn spawn(spool: Arc<Spool>, file: File) -> Handle {
    let (tx, rx) = mpsc::unbounded_channel();
    let thread = std::thread::Builder::new()
        .name("spool-writer".into())
        .spawn(move || run(spool, file, rx))
        .expect("spawning the spool writer");
    Handle { tx, thread }
}

fn run(spool: Arc<Spool>, mut file: File, mut rx: mpsc::UnboundedReceiver<Append>) {
    while let Some(group) = next_group(&mut rx, GROUP) {
        if let Err(e) = roll_if_full(&spool, &mut file) {
            tracing::error!(error = %e, "spool: cannot start a new segment");
            fail(group, &e);
            continue;
        }
        // Only this thread adds bytes, so the room seen here cannot shrink before the write.
        let (segment, start, mut room) = {
            let s = lock(&spool.state);
            (
                s.active,
                s.active_len,
                spool.max_bytes.saturating_sub(s.pending_bytes),
            )
        };
        let mut accepted = Vec::with_capacity(group.len());
        for a in group {
            let size = a.record.len() as u64;
            if size <= room {
                room -= size;
                accepted.push(a);
            } else {
                lock(&spool.state).refused = true;
                spool.metrics.spool_full.inc();
                let _ = a.done.send(Err(SpoolError::Full(spool.max_bytes - room)));
            }
        }
        if accepted.is_empty() {
            continue;
        }
        let mut buf = Vec::with_capacity(accepted.iter().map(|a| a.record.len()).sum());
        for a in &accepted {
            buf.extend_from_slice(&a.record);
        }
        if let Err(e) = file.write_all(&buf).and_then(|()| file.sync_data()) {
            // Cut the partial write off so the next records follow complete ones (a full disk,
            // say); if even that fails, the scan at the next start stops at the torn record.
            tracing::error!(error = %e, "spool: write failed; batches not acknowledged");
            let _ = file.set_len(start);
            fail(accepted, &e);
            continue;
        }
        {
            let mut s = lock(&spool.state);
            let mut offset = start;
            for a in &accepted {
                let size = a.record.len() as u64;
                s.pending.push_back(Position {
                    segment,
                    offset,
                    size,
                    items: a.items,
                    appended_ms: a.appended_ms,
                });
                s.pending_bytes += size;
                s.pending_items += a.items;
                offset += size;
            }
            s.active_len = offset;
        }
        let items: u64 = accepted.iter().map(|a| a.items).sum();
        spool.metrics.spool_appended.inc_by(items);
        spool.update_gauges();
        spool.appended.notify_one();
        for a in accepted {
            let _ = a.done.send(Ok(()));
        }
    }
}

fn roll_if_full(spool: &Spool, file: &mut File) -> std::io::Result<()> {
    let next = {
        let s = lock(&spool.state);
        if s.active_len < spool.segment_bytes {
            return Ok(());
        }
        s.active + 1
    };
    *file = File::create_new(segment_path(&spool.dir, next))?;
    sync_dir(&spool.dir)?;
    let mut s = lock(&spool.state);
    s.active = next;
    s.active_len = 0;
    Ok(())
}

fn fail(group: Vec<Append>, e: &std::io::Error) {
    for a in group {
        let _ = a.done.send(Err(SpoolError::Io(std::io::Error::new(
            e.kind(),
            e.to_string(),
        ))));
    }
}
