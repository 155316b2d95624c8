//! The file sink: JSON Lines, events in one file and dead letters in another, appended and
//! fsynced before a batch counts as accepted. The embedded default: no broker needed.
//!
//! One writer thread owns both files and commits in groups: it takes every batch waiting at
//! the moment, writes them together and fsyncs each file once, then answers all of them.
//! Concurrent requests share one disk flush instead of queueing for one each; no batch is
//! answered before the fsync that covers it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{next_group, Record, Sink, SinkError, Stream};
use crate::config::FileSinkConfig;

/// Most batches written under one fsync.
const GROUP: usize = 256;

pub struct FileSink {
    tx: mpsc::UnboundedSender<Append>,
    /// Groups committed so far: fsync rounds, each covering one or more batches.
    commits: Arc<AtomicU64>,
}

/// One batch's lines for each file (events, dead letters: the order of the writer's files) and
/// where to answer once they are durable.
struct Append {
    lines: [Vec<u8>; 2],
    done: oneshot::Sender<Result<(), SinkError>>,
}

fn open_append(path: &Path) -> Result<File, SinkError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| SinkError::Permanent(format!("cannot create {}: {e}", dir.display())))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| SinkError::Permanent(format!("cannot open {}: {e}", path.display())))
}

impl FileSink {
    pub fn open(cfg: &FileSinkConfig) -> Result<Self, SinkError> {
        let files = [open_append(&cfg.path)?, open_append(&cfg.deadletter_path)?];
        let (tx, rx) = mpsc::unbounded_channel();
        let commits = Arc::new(AtomicU64::new(0));
        let counter = commits.clone();
        // Ends when the sink is dropped: the channel closes once every batch was answered.
        std::thread::Builder::new()
            .name("file-sink-writer".into())
            .spawn(move || run(files, rx, &counter))
            .map_err(|e| SinkError::Permanent(format!("cannot start the file writer: {e}")))?;
        Ok(FileSink { tx, commits })
    }

    /// fsync rounds so far; fewer than the batches published when requests overlapped.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }
}

fn lines<'a>(records: impl Iterator<Item = &'a Record> + Clone) -> Vec<u8> {
    // Sized up front: grown by doubling, a batch's buffer (100+ KB) was copied several times.
    let mut buf = Vec::with_capacity(records.clone().map(|r| r.payload.len() + 1).sum());
    for r in records {
        buf.extend_from_slice(&r.payload);
        buf.push(b'\n');
    }
    buf
}

fn run(mut files: [File; 2], mut rx: mpsc::UnboundedReceiver<Append>, commits: &AtomicU64) {
    while let Some(group) = next_group(&mut rx, GROUP) {
        let result = commit(&mut files, &group);
        commits.fetch_add(1, Ordering::Relaxed);
        for a in group {
            let _ = a.done.send(result.clone().map_err(SinkError::Retryable));
        }
    }
}

/// Appends the group's lines to each file and fsyncs it. A failed write is cut off again
/// (best effort), so the lines of the batches Graph retries follow complete ones.
fn commit(files: &mut [File; 2], group: &[Append]) -> Result<(), String> {
    for (i, file) in files.iter_mut().enumerate() {
        let len: usize = group.iter().map(|a| a.lines[i].len()).sum();
        if len == 0 {
            continue;
        }
        // One batch alone (the usual case on one core) is written as it is, without a copy.
        let joined;
        let buf = match group {
            [one] => &one.lines[i],
            _ => {
                joined = group.iter().fold(Vec::with_capacity(len), |mut all, a| {
                    all.extend_from_slice(&a.lines[i]);
                    all
                });
                &joined
            }
        };
        let start = file.metadata().map(|m| m.len()).ok();
        if let Err(e) = file.write_all(buf).and_then(|()| file.sync_data()) {
            if let Some(len) = start {
                let _ = file.set_len(len);
            }
            return Err(format!("file sink write: {e}"));
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl Sink for FileSink {
    async fn publish(&self, records: &[Record]) -> Result<(), SinkError> {
        // The raw archive is a Kafka feature; the file sink keeps events and dead letters only.
        let events = lines(
            records
                .iter()
                .filter(|r| !matches!(r.stream, Stream::DeadLetter | Stream::Raw)),
        );
        let dead = lines(records.iter().filter(|r| r.stream == Stream::DeadLetter));
        let (done, answer) = oneshot::channel();
        let closed = || SinkError::Retryable("file sink writer stopped".into());
        self.tx
            .send(Append {
                lines: [events, dead],
                done,
            })
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    fn kind(&self) -> &'static str {
        "file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(stream: Stream, payload: &str) -> Record {
        Record {
            stream,
            id: payload.into(),
            key: "k".into(),
            subject_vars: Vec::new(),
            headers: Vec::new(),
            payload: payload.as_bytes().to_vec(),
        }
    }

    fn sink(dir: &Path) -> (FileSink, FileSinkConfig) {
        let cfg = FileSinkConfig {
            path: dir.join("out/events.jsonl"),
            deadletter_path: dir.join("out/dead.jsonl"),
        };
        (FileSink::open(&cfg).unwrap(), cfg)
    }

    #[tokio::test]
    async fn events_and_dead_letters_go_to_their_files_and_the_raw_archive_nowhere() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, cfg) = sink(dir.path());
        let batch = [
            record(Stream::ChatMessages, "a"),
            record(Stream::DeadLetter, "x"),
            record(Stream::Raw, "raw"),
            record(Stream::Lifecycle, "b"),
        ];
        sink.publish(&batch).await.unwrap();
        assert_eq!(std::fs::read_to_string(&cfg.path).unwrap(), "a\nb\n");
        assert_eq!(
            std::fs::read_to_string(&cfg.deadletter_path).unwrap(),
            "x\n"
        );
        assert_eq!(sink.commits(), 1);
    }

    #[tokio::test]
    async fn concurrent_batches_keep_their_lines_together_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, cfg) = sink(dir.path());
        let batches: Vec<Vec<Record>> = (0..20)
            .map(|b| {
                (0..5)
                    .map(|i| record(Stream::ChannelMessages, &format!("{b}-{i}")))
                    .collect()
            })
            .collect();
        let results =
            futures::future::join_all(batches.iter().map(|records| sink.publish(records))).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let text = std::fs::read_to_string(&cfg.path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 100);
        for chunk in lines.chunks(5) {
            let b = chunk[0].split('-').next().unwrap();
            let want: Vec<String> = (0..5).map(|i| format!("{b}-{i}")).collect();
            assert_eq!(chunk, want, "a batch's lines stay together and in order");
        }
    }

    #[test]
    fn batches_waiting_together_share_one_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let files = [
            open_append(&path).unwrap(),
            open_append(&dir.path().join("dead")).unwrap(),
        ];
        let (tx, rx) = mpsc::unbounded_channel();
        let answers: Vec<_> = (0..3)
            .map(|b| {
                let (done, answer) = oneshot::channel();
                let events = format!("{b}\n").into_bytes();
                tx.send(Append {
                    lines: [events, Vec::new()],
                    done,
                })
                .unwrap();
                answer
            })
            .collect();
        drop(tx);
        let commits = AtomicU64::new(0);
        // The three batches are waiting when the writer starts: one group, one fsync round.
        run(files, rx, &commits);
        assert_eq!(commits.load(Ordering::Relaxed), 1);
        for mut answer in answers {
            assert!(matches!(answer.try_recv(), Ok(Ok(()))));
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "0\n1\n2\n");
    }

    #[tokio::test]
    async fn a_failed_write_fails_every_batch_of_its_group_as_retryable() {
        // /dev/full refuses every write with ENOSPC: the disk-full case.
        let cfg = FileSinkConfig {
            path: "/dev/full".into(),
            deadletter_path: "/dev/full".into(),
        };
        let sink = FileSink::open(&cfg).unwrap();
        let batch = [record(Stream::ChatMessages, "a")];
        let err = sink.publish(&batch).await.unwrap_err();
        assert!(matches!(err, SinkError::Retryable(_)), "{err}");
        assert!(err.to_string().contains("file sink write"), "{err}");
    }
}
