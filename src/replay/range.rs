//! Ranges to replay: per partition `[from, to)`, given as offsets (`P:O,P:O` or one value for
//! every partition) or as times resolved with Kafka's offsetsForTimes. The end is exclusive so
//! that a stopped replay resumes at `--from-offset <next>` with the same `--to-offset` and two
//! adjacent ranges never overlap.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};

use super::ReplayError;

const TIMEOUT: Duration = Duration::from_secs(15);

/// One position in a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Offset(i64),
    /// The low watermark: the oldest record still kept.
    Earliest,
    /// The high watermark when the replay starts: the next record to be written.
    Latest,
}

impl std::str::FromStr for Position {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "earliest" | "beginning" => Ok(Position::Earliest),
            "latest" | "end" => Ok(Position::Latest),
            n => n
                .parse::<i64>()
                .ok()
                .filter(|o| *o >= 0)
                .map(Position::Offset)
                .ok_or_else(|| {
                    format!("{n:?} is not an offset (a number, `earliest` or `latest`)")
                }),
        }
    }
}

/// `--from-offset` / `--to-offset`: one position for every partition, or `P:O,P:O` for the
/// listed partitions only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetSpec {
    All(Position),
    Partitions(BTreeMap<i32, Position>),
}

impl std::str::FromStr for OffsetSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if !s.contains(':') {
            return Ok(OffsetSpec::All(s.parse()?));
        }
        let mut map = BTreeMap::new();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (p, o) = part
                .split_once(':')
                .ok_or_else(|| format!("{part:?}: expected PARTITION:OFFSET"))?;
            let p: i32 = p
                .trim()
                .parse()
                .ok()
                .filter(|p| *p >= 0)
                .ok_or_else(|| format!("{p:?} is not a partition number"))?;
            if map.insert(p, o.parse()?).is_some() {
                return Err(format!("partition {p} is given twice"));
            }
        }
        if map.is_empty() {
            return Err("no PARTITION:OFFSET pairs".into());
        }
        Ok(OffsetSpec::Partitions(map))
    }
}

impl OffsetSpec {
    /// The partitions this spec names (None: every partition).
    fn partitions(&self) -> Option<Vec<i32>> {
        match self {
            OffsetSpec::All(_) => None,
            OffsetSpec::Partitions(m) => Some(m.keys().copied().collect()),
        }
    }

    fn get(&self, partition: i32) -> Option<Position> {
        match self {
            OffsetSpec::All(p) => Some(*p),
            OffsetSpec::Partitions(m) => m.get(&partition).copied(),
        }
    }
}

/// Where a range starts or ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    Offsets(OffsetSpec),
    /// The first record whose timestamp is at or after this time.
    Time(DateTime<Utc>),
}

/// Parses an RFC 3339 time (`2026-11-30T12:00:00Z`, any offset).
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time (e.g. 2026-11-30T12:00:00Z): {e}"))
}

/// One partition's range `[from, to)` and the watermarks seen when it was resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PartitionRange {
    pub partition: i32,
    pub from: i64,
    pub to: i64,
}

impl PartitionRange {
    pub fn len(&self) -> u64 {
        (self.to - self.from).max(0) as u64
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The partitions of `topic` and their (low, high) watermarks.
pub fn watermarks(
    consumer: &impl Consumer,
    topic: &str,
) -> Result<BTreeMap<i32, (i64, i64)>, ReplayError> {
    let md = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .map_err(|e| ReplayError::Kafka(format!("metadata of {topic}: {e}")))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .ok_or_else(|| ReplayError::UnknownTopic(topic.to_string()))?;
    let mut out = BTreeMap::new();
    for p in t.partitions() {
        let w = consumer
            .fetch_watermarks(topic, p.id(), TIMEOUT)
            .map_err(|e| ReplayError::Kafka(format!("watermarks of {topic}/{}: {e}", p.id())))?;
        out.insert(p.id(), w);
    }
    Ok(out)
}

/// The first offset at or after `time` in each partition (the high watermark where every
/// record is older).
pub fn offsets_for_time(
    consumer: &impl Consumer,
    topic: &str,
    marks: &BTreeMap<i32, (i64, i64)>,
    time: DateTime<Utc>,
) -> Result<BTreeMap<i32, i64>, ReplayError> {
    let mut tpl = TopicPartitionList::new();
    for p in marks.keys() {
        tpl.add_partition_offset(topic, *p, Offset::Offset(time.timestamp_millis()))
            .map_err(|e| ReplayError::Kafka(e.to_string()))?;
    }
    let found = consumer
        .offsets_for_times(tpl, TIMEOUT)
        .map_err(|e| ReplayError::Kafka(format!("offsets for {time}: {e}")))?;
    let mut out = BTreeMap::new();
    for e in found.elements() {
        e.error().map_err(|err| {
            ReplayError::Kafka(format!(
                "offset for time in {topic}/{}: {err}",
                e.partition()
            ))
        })?;
        let high = marks[&e.partition()].1;
        let offset = match e.offset() {
            Offset::Offset(o) => o,
            // No record at or after the time: the end.
            _ => high,
        };
        out.insert(e.partition(), offset);
    }
    Ok(out)
}

fn position(p: Position, (low, high): (i64, i64)) -> i64 {
    match p {
        Position::Offset(o) => o,
        Position::Earliest => low,
        Position::Latest => high,
    }
}

/// Resolves `from` and `to` (None: earliest and latest) against the topic as it is now.
/// Offsets before the low watermark were deleted by retention: the range starts at the low
/// watermark (logged). Ends beyond the high watermark stop at it: a replay never waits for
/// records that do not exist yet.
pub fn resolve(
    consumer: &impl Consumer,
    topic: &str,
    from: Option<&Bound>,
    to: Option<&Bound>,
) -> Result<Vec<PartitionRange>, ReplayError> {
    let marks = watermarks(consumer, topic)?;
    let mut chosen: Vec<i32> = marks.keys().copied().collect();
    for b in [from, to].into_iter().flatten() {
        if let Bound::Offsets(spec) = b {
            if let Some(listed) = spec.partitions() {
                for p in &listed {
                    if !marks.contains_key(p) {
                        return Err(ReplayError::Range(format!(
                            "{topic} has no partition {p} (it has {})",
                            marks.len()
                        )));
                    }
                }
                chosen.retain(|p| listed.contains(p));
            }
        }
    }
    let ends = |b: Option<&Bound>, default: Position| -> Result<BTreeMap<i32, i64>, ReplayError> {
        Ok(match b {
            None => marks
                .iter()
                .map(|(p, w)| (*p, position(default, *w)))
                .collect(),
            Some(Bound::Time(t)) => offsets_for_time(consumer, topic, &marks, *t)?,
            Some(Bound::Offsets(spec)) => marks
                .iter()
                .filter_map(|(p, w)| Some((*p, position(spec.get(*p)?, *w))))
                .collect(),
        })
    };
    let starts = ends(from, Position::Earliest)?;
    let stops = ends(to, Position::Latest)?;
    let mut out = Vec::new();
    for p in chosen {
        let (low, high) = marks[&p];
        let (Some(&f), Some(&t)) = (starts.get(&p), stops.get(&p)) else {
            continue;
        };
        // Both ends given and the end before the start: a mistake, not an empty replay that
        // would end "complete" and let a script believe the window was replayed.
        if from.is_some() && to.is_some() && t < f {
            return Err(ReplayError::Range(format!(
                "partition {p}: the end ({t}) is before the start ({f}); the range is backwards"
            )));
        }
        if f < low {
            tracing::warn!(
                partition = p,
                requested = f,
                low,
                "offsets before the low watermark were deleted by retention; starting at it"
            );
        }
        let from = f.clamp(low, high);
        let to = t.min(high).max(from);
        out.push(PartitionRange {
            partition: p,
            from,
            to,
        });
    }
    Ok(out)
}

/// `P:O,P:O` for a set of positions: the form `--from-offset` and `--to-offset` accept.
pub fn format_spec(positions: impl IntoIterator<Item = (i32, i64)>) -> String {
    positions
        .into_iter()
        .map(|(p, o)| format!("{p}:{o}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_specs_parse() {
        assert_eq!(
            "42".parse::<OffsetSpec>().unwrap(),
            OffsetSpec::All(Position::Offset(42))
        );
        assert_eq!(
            "earliest".parse::<OffsetSpec>().unwrap(),
            OffsetSpec::All(Position::Earliest)
        );
        let OffsetSpec::Partitions(m) = "0:5,2:latest".parse::<OffsetSpec>().unwrap() else {
            panic!("per partition")
        };
        assert_eq!(m[&0], Position::Offset(5));
        assert_eq!(m[&2], Position::Latest);
        assert!(!m.contains_key(&1));
        for bad in ["", "x", "-1", "0:5,0:6", "a:1", "0:-3", ","] {
            assert!(bad.parse::<OffsetSpec>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn resume_spec_round_trips() {
        let s = format_spec([(0, 7), (1, 0), (2, 12)]);
        assert_eq!(s, "0:7,1:0,2:12");
        let OffsetSpec::Partitions(m) = s.parse::<OffsetSpec>().unwrap() else {
            panic!()
        };
        assert_eq!(m.len(), 3);
        assert_eq!(m[&2], Position::Offset(12));
    }

    #[test]
    fn times_parse_with_any_offset() {
        let t = parse_time("2026-11-30T13:00:00+01:00").unwrap();
        assert_eq!(t, parse_time("2026-11-30T12:00:00Z").unwrap());
        assert!(parse_time("yesterday").is_err());
    }
}
