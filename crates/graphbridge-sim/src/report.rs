//! The simulator's report: counts, throughput, ack-latency percentiles, the bridge's CPU and
//! memory (from /proc when given its pid) and the verification result.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::run::Outcomes;
use super::verify::Verification;

/// CPU seconds and peak RSS of a process, from /proc (Linux).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcessUsage {
    pub cpu_seconds: f64,
    pub peak_rss_mib: f64,
    pub rss_mib: f64,
    /// CPU seconds of its live threads by name (`top -H`'s names, at most 15 bytes, so the
    /// crypto workers share one): where the CPU went, e.g. RSA on the workers against HTTP on
    /// the reactor. Threads that ended are not counted.
    pub threads: BTreeMap<String, f64>,
}

impl ProcessUsage {
    pub fn read(pid: u32) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // USER_HZ is 100 on every mainstream Linux architecture.
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib = |name: &str| -> Option<f64> {
            status
                .lines()
                .find(|l| l.starts_with(name))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        };
        Some(ProcessUsage {
            cpu_seconds: ticks / 100.0,
            peak_rss_mib: kib("VmHWM:")? / 1024.0,
            rss_mib: kib("VmRSS:")? / 1024.0,
            threads: thread_cpu(pid),
        })
    }

    /// The CPU used since `before`, with the memory figures of now.
    pub fn since(self, before: Option<&ProcessUsage>) -> Self {
        let Some(before) = before else { return self };
        let threads = self
            .threads
            .into_iter()
            .map(|(name, s)| {
                let earlier = before.threads.get(&name).copied().unwrap_or(0.0);
                (name, s - earlier)
            })
            .collect();
        ProcessUsage {
            cpu_seconds: self.cpu_seconds - before.cpu_seconds,
            threads,
            ..self
        }
    }
}

/// CPU seconds of each live thread of `pid`, summed by thread name, from the nanosecond
/// counters in /proc/PID/task/TID/schedstat.
fn thread_cpu(pid: u32) -> BTreeMap<String, f64> {
    let mut by_name = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let ns = std::fs::read_to_string(dir.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok());
        if let Some(ns) = ns {
            *by_name.entry(name.trim().to_string()).or_insert(0.0) += ns / 1e9;
        }
    }
    by_name
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// Nearest-rank percentiles of seconds, in milliseconds.
pub fn latency(samples: &[f64]) -> Latency {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let at = |q: f64| {
        if s.is_empty() {
            return 0.0;
        }
        let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
        s[rank - 1] * 1000.0
    };
    Latency {
        p50_ms: at(0.50),
        p90_ms: at(0.90),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
        max_ms: at(1.0),
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub items_sent: u64,
    pub items_acked: usize,
    /// Acked items the bridge spooled because its sink could not confirm them in time.
    pub items_spooled: u64,
    pub items_failed: u64,
    pub batches: u64,
    pub requests: u64,
    pub retried_requests: u64,
    pub rejected: BTreeMap<String, u64>,
    pub mismatched_batches: u64,
    pub elapsed_s: f64,
    pub throughput_items_per_s: f64,
    pub ack_latency: Latency,
    /// The bridge's CPU seconds spent during the run and its peak RSS, when its pid was given.
    pub bridge: Option<ProcessUsage>,
    /// Acked items per bridge CPU-second: notifications per second per fully used core.
    pub items_per_cpu_second: Option<f64>,
    pub verification: Option<Verification>,
}

impl Report {
    pub fn new(
        o: &Outcomes,
        bridge: Option<ProcessUsage>,
        verification: Option<Verification>,
    ) -> Self {
        let elapsed = o.elapsed.as_secs_f64();
        Report {
            items_sent: o.items_sent,
            items_acked: o.acked.len(),
            items_spooled: o.spooled_items,
            items_failed: o.failed_items,
            batches: o.batches,
            requests: o.requests,
            retried_requests: o.retried_requests,
            rejected: o.rejected.clone(),
            mismatched_batches: o.mismatched_batches,
            elapsed_s: elapsed,
            throughput_items_per_s: o.acked.len() as f64 / elapsed.max(1e-9),
            ack_latency: latency(&o.ack_latencies),
            items_per_cpu_second: bridge
                .as_ref()
                .filter(|b| b.cpu_seconds > 0.0)
                .map(|b| o.acked.len() as f64 / b.cpu_seconds),
            bridge,
            verification,
        }
    }

    /// The run is good when nothing was lost, the bridge judged every item as planned and,
    /// when verification ran, it passed.
    pub fn ok(&self) -> bool {
        self.items_failed == 0
            && self.mismatched_batches == 0
            && self.verification.as_ref().is_none_or(|v| v.passed)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "sent        {} items in {} batches ({} requests, {} retried)",
            self.items_sent, self.batches, self.requests, self.retried_requests
        )?;
        writeln!(
            f,
            "acked       {} items ({} of them spooled), {} given up",
            self.items_acked, self.items_spooled, self.items_failed
        )?;
        let rejected: Vec<String> = self
            .rejected
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        writeln!(
            f,
            "rejected    {} (as planned: {})",
            if rejected.is_empty() {
                "none".into()
            } else {
                rejected.join(" ")
            },
            self.mismatched_batches == 0
        )?;
        writeln!(
            f,
            "throughput  {:.0} items/s over {:.2} s",
            self.throughput_items_per_s, self.elapsed_s
        )?;
        let l = &self.ack_latency;
        writeln!(
            f,
            "ack latency p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  p99.9 {:.1} ms  max {:.1} ms",
            l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
        )?;
        if let Some(b) = &self.bridge {
            writeln!(f, "bridge      {:.2} CPU s, peak RSS {:.1} MiB (now {:.1} MiB), {:.0} items per CPU-second", b.cpu_seconds, b.peak_rss_mib, b.rss_mib, self.items_per_cpu_second.unwrap_or(0.0))?;
            if self.items_acked > 0 {
                let per_item: Vec<String> = b
                    .threads
                    .iter()
                    .filter(|(_, s)| **s > 0.0)
                    .map(|(name, s)| format!("{name} {:.1}", s * 1e6 / self.items_acked as f64))
                    .collect();
                writeln!(
                    f,
                    "threads     CPU µs per acked item: {}",
                    per_item.join(", ")
                )?;
            }
        }
        if let Some(v) = &self.verification {
            writeln!(
                f,
                "verify      {}: {}/{} events found, {} missing, {} duplicate copies removed ({} not explained by a resend or spooling), {} of {} rejected items published",
                if v.passed { "PASSED" } else { "FAILED" },
                v.found, v.expected, v.missing, v.duplicates, v.unexplained_duplicates, v.forbidden_found, v.rejected_expected_absent
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=1000).map(|i| i as f64 / 1000.0).collect();
        let l = latency(&samples);
        assert_eq!(
            (l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms),
            (500.0, 900.0, 990.0, 999.0, 1000.0)
        );
        assert_eq!(latency(&[]).max_ms, 0.0);
    }

    #[test]
    fn reads_own_process_usage() {
        let u = ProcessUsage::read(std::process::id()).expect("/proc is readable");
        assert!(u.peak_rss_mib > 0.0 && u.peak_rss_mib >= u.rss_mib);
    }

    #[test]
    fn counts_cpu_by_thread_name() {
        // A named thread that has done some work reads the usage while it is still alive.
        let u = std::thread::Builder::new()
            .name("cpu-probe".into())
            .spawn(|| {
                // A fixed amount of work (tens of milliseconds of CPU), not a wall-clock
                // span, so a busy machine cannot starve it below what is asserted.
                let mut x = 0u64;
                for _ in 0..30_000_000 {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
                ProcessUsage::read(std::process::id()).expect("/proc is readable")
            })
            .unwrap()
            .join()
            .unwrap();
        let probe = u.threads.get("cpu-probe").copied().unwrap_or(0.0);
        assert!(probe > 0.005, "{:?}", u.threads);
        let earlier = ProcessUsage {
            threads: BTreeMap::from([("cpu-probe".to_string(), probe / 2.0)]),
            ..Default::default()
        };
        let since = u.since(Some(&earlier));
        assert_eq!(since.threads["cpu-probe"], probe - probe / 2.0);
    }
}
