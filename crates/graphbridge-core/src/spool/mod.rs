//! The local spool: a write-ahead log of batches the sink could not confirm within the ack
//! budget. Graph gets 202 once a batch is fsynced here; the drainer ([`drain`]) publishes the
//! batches, oldest first, once the broker is back and only then forgets them.
//!
//! Layout of `spool.dir`: segments `<seq>.seg` of [`frame`]d records, each one batch's items
//! exactly as Graph sent them (still encrypted: nothing decrypted is at rest), and `cursor`, the
//! position of the next record to drain (replaced atomically). A new segment is started at
//! every open and when the active one is full; segments behind the cursor are deleted.

pub mod frame;
mod writer;

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::sink::lock;
use crate::telemetry::Metrics;

/// One spooled batch: the items of a request (its validation tokens were already checked).
#[derive(Debug, Serialize, Deserialize)]
pub struct SpooledBatch {
    pub received_at: String,
    pub items: Vec<Box<RawValue>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// `spool.max_bytes` of unpublished batches are waiting: Graph must retry later.
    #[error("spool full ({0} bytes waiting)")]
    Full(u64),
    #[error("spool i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("spool closed")]
    Closed,
}

/// Where a record is: its segment, offset and size, with what the gauges need.
#[derive(Debug, Clone, Copy)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
    pub size: u64,
    pub items: u64,
    pub appended_ms: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Fsynced and not yet published, in append order.
    pending: VecDeque<Position>,
    pending_bytes: u64,
    pending_items: u64,
    /// An append was refused for lack of room and nothing has drained since.
    refused: bool,
    /// Segment being appended to, and its length.
    active: u64,
    active_len: u64,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    state: Mutex<State>,
    /// Woken when records are appended.
    appended: tokio::sync::Notify,
    writer: Mutex<Option<writer::Handle>>,
    metrics: Arc<Metrics>,
}

pub fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.seg"))
}

fn segments(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut seqs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse().ok())
        {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Makes created, renamed and deleted entries of `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn now_ms() -> u64 {
    chrono::Utc::now().timestamp_millis().max(0) as u64
}

/// The drain cursor: the next record to publish is at (`segment`, `offset`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Cursor {
    segment: u64,
    offset: u64,
}

impl Cursor {
    fn load(dir: &Path) -> Option<Cursor> {
        let text = std::fs::read(dir.join("cursor")).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Write-then-rename, so a crash leaves the old cursor or the new one, never half of one.
    fn store(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join("cursor.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(self).expect("cursor serializes"))?;
        f.sync_data()?;
        std::fs::rename(&tmp, dir.join("cursor"))?;
        sync_dir(dir)
    }
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, recovering what earlier runs left: every complete
    /// record after the cursor is pending again; a torn tail is cut off (it was never acked).
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Spool>, SpoolError> {
        std::fs::create_dir_all(dir)?;
        let cursor = Cursor::load(dir).unwrap_or_default();
        let mut state = State::default();
        let mut last = cursor.segment;
        for seq in segments(dir)? {
            last = last.max(seq);
            let path = segment_path(dir, seq);
            if seq < cursor.segment {
                std::fs::remove_file(&path)?;
                continue;
            }
            let buf = std::fs::read(&path)?;
            let start = if seq == cursor.segment {
                cursor.offset as usize
            } else {
                0
            };
            let (frames, end) = frame::scan(&buf, start);
            for (offset, f) in &frames {
                state.pending.push_back(Position {
                    segment: seq,
                    offset: *offset as u64,
                    size: f.size() as u64,
                    items: f.items.into(),
                    appended_ms: f.appended_ms,
                });
                state.pending_bytes += f.size() as u64;
                state.pending_items += u64::from(f.items);
            }
            if end < buf.len() {
                let discarded = (buf.len() - end) as u64;
                tracing::warn!(
                    segment = %path.display(),
                    offset = end,
                    discarded,
                    "spool: incomplete record at the end of a segment discarded (never acknowledged)"
                );
                metrics.spool_discarded_bytes.inc_by(discarded);
            }
            if frames.is_empty() {
                // Fully drained, empty (a start with nothing to spool) or only a torn record.
                std::fs::remove_file(&path)?;
            } else if end < buf.len() {
                let f = std::fs::OpenOptions::new().write(true).open(&path)?;
                f.set_len(end as u64)?;
                f.sync_all()?;
            }
        }
        state.active = last + 1;
        let file = File::create_new(segment_path(dir, state.active))?;
        sync_dir(dir)?;
        if !state.pending.is_empty() {
            tracing::info!(
                batches = state.pending.len(),
                items = state.pending_items,
                bytes = state.pending_bytes,
                "spool: recovered unpublished batches; draining them first"
            );
        }
        let spool = Arc::new(Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            // Small enough that drained segments are deleted soon, large enough to be rare.
            segment_bytes: (max_bytes / 8).clamp(64 << 10, 64 << 20),
            state: Mutex::new(state),
            appended: tokio::sync::Notify::new(),
            writer: Mutex::new(None),
            metrics,
        });
        let handle = writer::spawn(spool.clone(), file);
        *lock(&spool.writer) = Some(handle);
        spool.update_gauges();
        Ok(spool)
    }

    /// Appends a batch and returns once it is fsynced (group commit with concurrent appends).
    pub async fn append(&self, batch: &SpooledBatch) -> Result<(), SpoolError> {
        let json = serde_json::to_vec(batch).expect("spooled batch serializes");
        let appended_ms = now_ms();
        let record = frame::encode(batch.items.len() as u32, appended_ms, &json);
        let sender = lock(&self.writer)
            .as_ref()
            .map(|w| w.sender())
            .ok_or(SpoolError::Closed)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        sender
            .send(writer::Append {
                record,
                items: batch.items.len() as u64,
                appended_ms,
                done: tx,
            })
            .map_err(|_| SpoolError::Closed)?;
        rx.await.map_err(|_| SpoolError::Closed)?
    }

    /// Whether batches are waiting: new ones then queue behind them, keeping the order.
    pub fn backlog(&self) -> bool {
        !lock(&self.state).pending.is_empty()
    }

    /// Whether the spool takes more batches: less than 15/16 full and nothing refused since
    /// the last drain (for `/readyz`).
    pub fn has_room(&self) -> bool {
        let s = lock(&self.state);
        !s.refused && s.pending_bytes <= self.max_bytes - self.max_bytes / 16
    }

    /// The oldest waiting records, at most `n`.
    pub fn peek(&self, n: usize) -> Vec<Position> {
        let s = lock(&self.state);
        s.pending.iter().take(n).copied().collect()
    }

    /// Reads and checks one record (blocking file i/o).
    pub fn read(&self, at: &Position) -> std::io::Result<SpooledBatch> {
        use std::os::unix::fs::FileExt;
        let f = File::open(segment_path(&self.dir, at.segment))?;
        let mut buf = vec![0; at.size as usize];
        f.read_exact_at(&mut buf, at.offset)?;
        let frame = frame::decode(&buf).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "record fails its checksum")
        })?;
        serde_json::from_slice(frame.json).map_err(std::io::Error::other)
    }

    /// Forgets the `n` oldest records once the sink has confirmed them: moves the cursor
    /// durably, and only then drops them from the pending list and the gauges and deletes the
    /// segments behind it (blocking file i/o). Until the cursor is on disk the metrics show the
    /// records as waiting, as a restart would find them; if it cannot be written they stay
    /// pending in memory too and are published again (consumers dedupe by event id).
    pub fn commit(&self, n: usize) -> std::io::Result<()> {
        // Only the drainer removes from the front, so the first `n` stay put while the cursor
        // is written; appends at the back land after it.
        let (n, cursor) = {
            let s = lock(&self.state);
            let n = n.min(s.pending.len());
            let cursor = match s.pending.get(n) {
                Some(p) => Cursor {
                    segment: p.segment,
                    offset: p.offset,
                },
                None => Cursor {
                    segment: s.active,
                    offset: s.active_len,
                },
            };
            (n, cursor)
        };
        cursor.store(&self.dir)?;
        let drained_items = {
            let mut guard = lock(&self.state);
            let s = &mut *guard;
            s.refused &= n == 0;
            let mut items = 0;
            for p in s.pending.drain(..n) {
                s.pending_bytes -= p.size;
                s.pending_items -= p.items;
                items += p.items;
            }
            items
        };
        self.metrics.spool_drained.inc_by(drained_items);
        self.update_gauges();
        for seq in segments(&self.dir)? {
            if seq >= cursor.segment {
                break;
            }
            std::fs::remove_file(segment_path(&self.dir, seq))?;
        }
        Ok(())
    }

    /// Depth, size and the age of the oldest waiting batch.
    pub fn update_gauges(&self) {
        let s = lock(&self.state);
        let m = &self.metrics;
        m.spool_depth_items.set(s.pending_items as i64);
        m.spool_depth_bytes.set(s.pending_bytes as i64);
        let age = s.pending.front().map_or(0.0, |p| {
            now_ms().saturating_sub(p.appended_ms) as f64 / 1000.0
        });
        m.spool_oldest_age.set(age);
    }

    /// Waits for the writer to finish what it was given; appends afterwards fail. Every
    /// acknowledged append is already fsynced, so nothing is left to flush.
    pub fn close(&self) {
        let handle = lock(&self.writer).take();
        if let Some(h) = handle {
            h.join();
        }
    }

    pub(crate) fn appended(&self) -> &tokio::sync::Notify {
        &self.appended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> SpooledBatch {
        SpooledBatch {
            received_at: "2026-01-01T00:00:00.000Z".into(),
            items: (0..n)
                .map(|i| RawValue::from_string(format!("{{\"n\":{i}}}")).unwrap())
                .collect(),
        }
    }

    /// The depth a restart would find: what the gauges must show.
    fn durable_depth(dir: &Path) -> i64 {
        let metrics = Metrics::new();
        let reopened = Spool::open(dir, 1 << 20, metrics.clone()).unwrap();
        reopened.close();
        metrics.spool_depth_items.get()
    }

    #[tokio::test]
    async fn the_gauges_drop_only_once_the_cursor_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let spool = Spool::open(dir.path(), 1 << 20, metrics.clone()).unwrap();
        for _ in 0..3 {
            spool.append(&batch(10)).await.unwrap();
        }
        assert_eq!(metrics.spool_depth_items.get(), 30);

        // The cursor cannot be written (its temporary name is taken by a directory): the two
        // published batches were not forgotten durably, so they are not forgotten at all.
        std::fs::create_dir(dir.path().join("cursor.tmp")).unwrap();
        assert!(spool.commit(2).is_err());
        assert_eq!(metrics.spool_depth_items.get(), 30);
        assert_eq!(metrics.spool_drained.get(), 0);
        assert_eq!(spool.peek(10).len(), 3, "still to be published");

        std::fs::remove_dir(dir.path().join("cursor.tmp")).unwrap();
        spool.commit(2).unwrap();
        assert_eq!(metrics.spool_depth_items.get(), 10);
        assert_eq!(metrics.spool_drained.get(), 20);
        spool.close();
        assert_eq!(
            durable_depth(dir.path()),
            10,
            "what the gauge showed is what is on disk"
        );
    }
}
