//! The controller's notion of time. Production uses the system clock; tests (and the Graph
//! stand-in) share a fast clock so days of subscription lifetime pass in seconds while the
//! controller keeps its real margins and Graph's real 10-minute rule.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
    /// Waits `d` of this clock's time.
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()>;
    /// Real time that `d` of this clock's time takes.
    fn real(&self, d: Duration) -> Duration {
        d
    }
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(d))
    }
}

/// Starts at the real time and runs `factor` times faster.
pub struct FastClock {
    start_real: Instant,
    start: DateTime<Utc>,
    factor: u32,
}

impl FastClock {
    pub fn new(factor: u32) -> Self {
        FastClock {
            start_real: Instant::now(),
            start: Utc::now(),
            factor: factor.max(1),
        }
    }
}

impl Clock for FastClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = self.start_real.elapsed() * self.factor;
        self.start + chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::MAX)
    }
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(self.real(d)))
    }
    fn real(&self, d: Duration) -> Duration {
        d / self.factor
    }
}

/// `to - from` as a std duration, zero when `to` is not later.
pub fn until(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    (to - from).to_std().unwrap_or(Duration::ZERO)
}
