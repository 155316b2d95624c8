//! The spool on its own: what is appended survives a crash, a torn tail is cut off without
//! losing any complete record, the cursor only moves on commit, segments behind it are deleted
//! and a full spool refuses instead of dropping.

use crate::common;

use common::spool_segments;
use std::path::Path;
use std::sync::Arc;

use graphbridge_core::spool::{Spool, SpoolError, SpooledBatch};
use graphbridge_core::telemetry::Metrics;
use serde_json::value::RawValue;

fn batch(n: usize, tag: &str) -> SpooledBatch {
    SpooledBatch {
        received_at: format!("2026-11-23T00:00:00.000Z#{tag}"),
        items: (0..n)
            .map(|i| RawValue::from_string(format!(r#"{{"tag":"{tag}","i":{i}}}"#)).unwrap())
            .collect(),
    }
}

fn tags(spool: &Spool) -> Vec<String> {
    spool
        .peek(usize::MAX)
        .iter()
        .map(|p| {
            let b = spool.read(p).expect("readable");
            b.received_at.split('#').nth(1).unwrap().to_string()
        })
        .collect()
}

fn open(dir: &Path, max: u64) -> (Arc<Spool>, Arc<Metrics>) {
    let m = Metrics::new();
    (Spool::open(dir, max, m.clone()).expect("opens"), m)
}

#[tokio::test]
async fn appended_batches_survive_a_restart_until_committed() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, m) = open(dir.path(), 1 << 20);
    for t in ["a", "b", "c"] {
        spool.append(&batch(2, t)).await.unwrap();
    }
    assert_eq!(m.spool_depth_items.get(), 6);
    assert_eq!(tags(&spool), ["a", "b", "c"]);
    // Not closed: the state a crash leaves (every acked append is already fsynced).
    drop(spool);

    let (spool, m) = open(dir.path(), 1 << 20);
    assert_eq!(tags(&spool), ["a", "b", "c"], "all recovered, in order");
    spool.commit(1).unwrap();
    spool.close();

    let (spool, m2) = open(dir.path(), 1 << 20);
    assert_eq!(
        tags(&spool),
        ["b", "c"],
        "the cursor moved past the committed batch"
    );
    assert_eq!(m2.spool_depth_items.get(), 4);
    assert_eq!(m.spool_drained.get(), 2);
    spool.commit(2).unwrap();
    assert!(!spool.backlog());
    spool.append(&batch(1, "d")).await.unwrap();
    assert_eq!(tags(&spool), ["d"]);
    spool.close();
}

#[tokio::test]
async fn a_torn_tail_is_cut_off_and_complete_records_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path(), 1 << 20);
    for t in ["a", "b", "c"] {
        spool.append(&batch(3, t)).await.unwrap();
    }
    let third = spool.peek(3)[2];
    spool.close();
    let seg = spool_segments(dir.path())
        .into_iter()
        .find(|p| std::fs::metadata(p).unwrap().len() > 0)
        .unwrap();
    let full = std::fs::metadata(&seg).unwrap().len();
    assert_eq!(third.offset + third.size, full);

    // A crash in the middle of writing the third record, at several points (inside its
    // header, inside its body, one byte short).
    for cut in [third.offset + 3, third.offset + third.size / 2, full - 1] {
        let copy = tempfile::tempdir().unwrap();
        std::fs::copy(&seg, copy.path().join(seg.file_name().unwrap())).unwrap();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(copy.path().join(seg.file_name().unwrap()))
            .unwrap();
        f.set_len(cut).unwrap();
        drop(f);

        let (spool, m) = open(copy.path(), 1 << 20);
        assert_eq!(tags(&spool), ["a", "b"], "cut at {cut}");
        assert_eq!(m.spool_discarded_bytes.get(), cut - third.offset);
        assert_eq!(m.spool_depth_items.get(), 6);
        // Appending after recovery works and reads back after the recovered ones.
        spool.append(&batch(1, "d")).await.unwrap();
        assert_eq!(tags(&spool), ["a", "b", "d"]);
        spool.close();
        let (spool, _) = open(copy.path(), 1 << 20);
        assert_eq!(tags(&spool), ["a", "b", "d"], "cut at {cut}, reopened");
        spool.close();
    }
}

#[tokio::test]
async fn garbage_after_the_last_record_is_discarded_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path(), 1 << 20);
    spool.append(&batch(1, "a")).await.unwrap();
    spool.close();
    let seg = spool_segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(&[0xff; 40]);
    std::fs::write(&seg, bytes).unwrap();
    let (spool, m) = open(dir.path(), 1 << 20);
    assert_eq!(tags(&spool), ["a"]);
    assert_eq!(m.spool_discarded_bytes.get(), 40);
    spool.close();
}

#[tokio::test]
async fn a_full_spool_refuses_and_keeps_what_it_has() {
    let dir = tempfile::tempdir().unwrap();
    let one = serde_json::to_vec(&batch(10, "x")).unwrap().len() as u64;
    let (spool, m) = open(dir.path(), 4 * one);
    let mut acked = 0;
    let err = loop {
        match spool.append(&batch(10, &format!("b{acked}"))).await {
            Ok(()) => acked += 1,
            Err(e) => break e,
        }
        assert!(acked < 10, "never refused");
    };
    assert!(matches!(err, SpoolError::Full(_)), "{err}");
    assert_eq!(m.spool_full.get(), 1);
    assert_eq!(spool.peek(usize::MAX).len(), acked);
    // Draining makes room again.
    spool.commit(1).unwrap();
    spool.append(&batch(10, "again")).await.unwrap();
    assert_eq!(spool.peek(usize::MAX).len(), acked);
    spool.close();
}

#[tokio::test]
async fn drained_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    // Small spool, so segments are small (an eighth of max_bytes, at least 64 KiB).
    let (spool, _) = open(dir.path(), 1 << 20);
    let mut n = 0;
    while spool_segments(dir.path()).len() < 3 {
        spool.append(&batch(200, &format!("b{n}"))).await.unwrap();
        n += 1;
    }
    spool.commit(n).unwrap();
    assert!(!spool.backlog());
    assert_eq!(
        spool_segments(dir.path()).len(),
        1,
        "only the active segment remains"
    );
    spool.close();
}

#[tokio::test]
async fn concurrent_appends_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, m) = open(dir.path(), 64 << 20);
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let spool = spool.clone();
            tokio::spawn(async move { spool.append(&batch(5, &format!("t{i}"))).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(m.spool_appended.get(), 320);
    let mut got = tags(&spool);
    got.sort();
    let mut want: Vec<String> = (0..64).map(|i| format!("t{i}")).collect();
    want.sort();
    assert_eq!(got, want);
    spool.close();
}

#[tokio::test]
async fn restarts_without_spooling_leave_no_segments_behind() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..5 {
        let (spool, _) = open(dir.path(), 1 << 20);
        spool.close();
    }
    assert_eq!(
        spool_segments(dir.path()).len(),
        1,
        "only the active one of the last start"
    );
}
