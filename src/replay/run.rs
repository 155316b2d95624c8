//! The replay loop: read a batch in range, rebuild it (`--reprocess`), filter, publish, and only
//! then advance each partition's position. Whatever ends the loop — the end of the range,
//! `--max-messages`, SIGINT or a target failure — the summary holds the exact resume point.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::filter::Filter;
use super::item::Item;
use super::progress::{Ending, Progress, Summary};
use super::range::Bound;
use super::reprocess::Reprocessor;
use super::source::{self, Source};
use super::stop::{resume_args, Stop};
use super::target::Target;
use super::ReplayError;
use graphbridge_core::config::Config;

/// Records read and published per step.
const BATCH: usize = 500;
/// Longest wait for the next records before checking the stop signal and the range again.
const FETCH_WAIT: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub enum TargetSpec {
    Kafka(String),
    /// The configured `sink.nats`.
    Nats,
    File(PathBuf),
}

impl TargetSpec {
    /// For the summary: where the records go (or would go).
    pub fn describe(&self) -> String {
        match self {
            TargetSpec::Kafka(t) => format!("kafka topic {t}"),
            TargetSpec::Nats => "nats (sink.nats)".into(),
            TargetSpec::File(p) => format!("file {}", p.display()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub topic: String,
    /// Start (inclusive); None = earliest.
    pub from: Option<Bound>,
    /// End (exclusive); None = the end of the topic when the replay starts.
    pub to: Option<Bound>,
    /// Where to publish; None only in a dry run.
    pub target: Option<TargetSpec>,
    /// Read, rebuild and filter, publish nothing (the target is named, not opened).
    pub dry_run: bool,
    pub reprocess: bool,
    pub filter: Filter,
    /// Source records per second (None = as fast as the target confirms).
    pub rate: Option<f64>,
    /// Stop after reading this many records in range.
    pub max_messages: Option<u64>,
}

#[derive(Default)]
struct Counts {
    read: u64,
    published: u64,
    filtered: u64,
    not_json: u64,
    rejected: BTreeMap<String, u64>,
}

/// Runs a replay until the range is done, `max_messages` were read or `stop` is requested.
/// Errors before anything is read are returned; a failure while publishing ends the replay
/// with [`Ending::Failed`] and a summary that says where to resume.
pub async fn run(cfg: &Config, opts: &Options, stop: &Stop) -> Result<Summary, ReplayError> {
    let k = &cfg.sink.kafka;
    let ranges = source::resolve(k, &opts.topic, opts.from.clone(), opts.to.clone()).await?;
    let reprocessor = opts.reprocess.then(|| Reprocessor::new(cfg)).transpose()?;
    let mut target = match opts.target.as_ref().filter(|_| !opts.dry_run) {
        None => None,
        Some(TargetSpec::Kafka(t)) => Some(Target::kafka(cfg, t)?),
        Some(TargetSpec::Nats) => Some(Target::nats(cfg).await?),
        Some(TargetSpec::File(p)) => Some(Target::file(p)?),
    };
    let to_file = matches!(opts.target, Some(TargetSpec::File(_)));
    let mut src = Source::open(k, &opts.topic, &ranges)?;
    let total: u64 = ranges.iter().map(|r| r.len()).sum();
    let mut progress = Progress::new(opts.max_messages.map_or(total, |m| m.min(total)));
    let mut counts = Counts::default();
    let started = Instant::now();

    let ending = loop {
        if src.done() {
            break Ok(Ending::Complete);
        }
        if stop.requested() {
            break Ok(Ending::Interrupted);
        }
        let want = match opts.max_messages {
            Some(m) if counts.read >= m => break Ok(Ending::MaxMessages),
            Some(m) => BATCH.min((m - counts.read) as usize),
            None => BATCH,
        };
        // Under a rate limit, small batches (about ten a second) keep the pace even.
        let want = match opts.rate {
            Some(r) if r > 0.0 => want.min((r / 10.0).ceil().max(1.0) as usize),
            _ => want,
        };
        // Dropping a fetch on stop loses only records not yet published: positions stay put.
        let batch = tokio::select! {
            b = src.fetch(want, FETCH_WAIT) => match b {
                Ok(b) => b,
                Err(e) => break Err(e),
            },
            _ = stop.wait() => continue,
        };
        if batch.is_empty() {
            continue;
        }
        if let Some(rate) = opts.rate.filter(|r| *r > 0.0) {
            let due =
                started + Duration::from_secs_f64((counts.read + batch.len() as u64) as f64 / rate);
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {}
                _ = stop.wait() => continue,
            }
        }
        let items: Vec<Item> = batch.iter().map(|r| r.item.clone()).collect();
        let out = match &reprocessor {
            None => items,
            Some(r) => match r.run(&items).await {
                Ok(done) => {
                    for (reason, n) in done.rejected {
                        *counts.rejected.entry(reason).or_default() += n;
                    }
                    done.events
                }
                Err(e) => break Err(e),
            },
        };
        let before = out.len();
        let mut selected: Vec<Item> = out
            .into_iter()
            .filter(|i| opts.filter.matches(&i.facts))
            .collect();
        let selected_n = selected.len();
        if to_file {
            // One JSON per line: a record that is not JSON (or has no value) has no line.
            selected.retain_mut(Item::to_json_line);
            counts.not_json += (selected_n - selected.len()) as u64;
        }
        // Not interruptible: a stop waits for the target to confirm the batch in flight.
        if let Some(t) = &mut target {
            if let Err(e) = t.publish(&selected).await {
                break Err(e);
            }
        }
        counts.filtered += (before - selected_n) as u64;
        counts.published += selected.len() as u64;
        counts.read += batch.len() as u64;
        for r in &batch {
            src.advance(r.partition, r.offset);
        }
        progress.advance(batch.len() as u64);
    };
    progress.finish();
    if let Some(t) = target {
        t.close().await;
    }
    let (ending, error) = match ending {
        Ok(e) => (e, None),
        Err(e) => (Ending::Failed, Some(e.to_string())),
    };
    Ok(Summary {
        topic: opts.topic.clone(),
        ending,
        error,
        dry_run: opts.dry_run,
        target: opts.target.as_ref().map(TargetSpec::describe),
        skipped_not_json: counts.not_json,
        reprocess: opts.reprocess,
        read: counts.read,
        published: counts.published,
        filtered: counts.filtered,
        rejected: counts.rejected,
        elapsed_s: progress.elapsed().as_secs_f64(),
        rate_per_s: progress.rate(),
        partitions: Summary::partitions(&ranges, src.next_offsets()),
        resume: (!src.done()).then(|| resume_args(&src)),
    })
}
