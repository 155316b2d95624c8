//! The file sink: JSON Lines, events in one file and dead letters in another, appended and
//! fsynced before a batch counts as accepted. The embedded default: no broker needed.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::{lock, Record, Sink, SinkError, Stream};
use crate::config::FileSinkConfig;

pub struct FileSink {
    files: Arc<Mutex<Files>>,
}

struct Files {
    events: File,
    deadletters: File,
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
        Ok(FileSink {
            files: Arc::new(Mutex::new(Files {
                events: open_append(&cfg.path)?,
                deadletters: open_append(&cfg.deadletter_path)?,
            })),
        })
    }
}

fn lines<'a>(records: impl Iterator<Item = &'a Record>) -> Vec<u8> {
    let mut buf = Vec::new();
    for r in records {
        buf.extend_from_slice(&r.payload);
        buf.push(b'\n');
    }
    buf
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
        let files = self.files.clone();
        // One write and one fsync per file per batch, off the reactor.
        tokio::task::spawn_blocking(move || {
            let mut guard = lock(&files);
            let f = &mut *guard;
            for (file, buf) in [(&mut f.events, &events), (&mut f.deadletters, &dead)] {
                if !buf.is_empty() {
                    file.write_all(buf)
                        .and_then(|_| file.sync_data())
                        .map_err(|e| SinkError::Retryable(format!("file sink write: {e}")))?;
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| SinkError::Retryable(format!("file sink task: {e}")))?
    }

    fn kind(&self) -> &'static str {
        "file"
    }
}
