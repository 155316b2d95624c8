//! The PATCH of one verdict, with the configured rate limit, Graph's `Retry-After` and backoff.
//! Throttling, network errors, token trouble and 5xx are waited out (the verdict is not done,
//! so the position does not move); 400, 403, 404 and other 4xx are final.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::time::{Interval, MissedTickBehavior};

use graphbridge_core::config::Config;
use graphbridge_core::telemetry::Metrics;
use graphbridge_event::verdict::VerdictEvent;
use graphbridge_graph_api::subscriptions::{GraphClient, GraphError};

/// What Graph finally said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Ok {
        status: u16,
        attempts: u32,
    },
    /// Graph refused it for good: dead letters.
    Refused {
        reason: &'static str,
        status: u16,
        error: String,
        attempts: u32,
    },
}

/// Whether a failed call is worth another attempt, and the wait before it.
enum Next {
    Retry {
        cause: &'static str,
        after: Option<Duration>,
    },
    Final {
        reason: &'static str,
        status: u16,
    },
}

fn classify(e: &GraphError) -> Next {
    let retry = |cause, after| Next::Retry { cause, after };
    match e {
        GraphError::Throttled { retry_after, .. } => retry("throttled", Some(*retry_after)),
        GraphError::Network(_) => retry("network", None),
        // A wrong secret is fixed by the operator, not by dead-lettering every verdict.
        GraphError::Auth(_) => retry("auth", None),
        GraphError::Other { status, .. } if *status >= 500 => retry("server", None),
        GraphError::NotFound(_) => Next::Final {
            reason: "not_found",
            status: 404,
        },
        GraphError::Forbidden(_) => Next::Final {
            reason: "forbidden",
            status: 403,
        },
        GraphError::BadRequest { .. } => Next::Final {
            reason: "bad_request",
            status: 400,
        },
        GraphError::Duplicate(_) => Next::Final {
            reason: "graph_error",
            status: 409,
        },
        GraphError::Other { status, .. } => Next::Final {
            reason: "graph_error",
            status: *status,
        },
    }
}

/// Graph's words without our own prefix (the `GraphError` texts are worded for subscriptions).
fn graph_message(e: &GraphError) -> String {
    match e {
        GraphError::NotFound(m) | GraphError::Forbidden(m) | GraphError::Duplicate(m) => m.clone(),
        GraphError::BadRequest { message } | GraphError::Other { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

pub struct Applier {
    cfg: Config,
    clients: HashMap<String, GraphClient>,
    pace: Option<Interval>,
    max_backoff: Duration,
    metrics: Arc<Metrics>,
}

impl Applier {
    pub fn new(cfg: &Config, metrics: Arc<Metrics>) -> Self {
        let rate = cfg.verdicts.rate_per_second;
        let pace = (rate > 0.0).then(|| {
            let mut i = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            i.set_missed_tick_behavior(MissedTickBehavior::Delay);
            i
        });
        Applier {
            cfg: cfg.clone(),
            clients: HashMap::new(),
            pace,
            max_backoff: Duration::from_secs(cfg.verdicts.max_backoff_s.max(1)),
            metrics,
        }
    }

    fn client(&mut self, tenant: &str) -> Result<&GraphClient, String> {
        if !self.clients.contains_key(tenant) {
            let c = crate::graph_client(&self.cfg, tenant).map_err(|e| e.to_string())?;
            self.clients.insert(tenant.to_string(), c);
        }
        Ok(&self.clients[tenant])
    }

    /// PATCHes `v` until Graph gives a final answer; `None` when `stop` turned true first
    /// (the verdict is then not done).
    pub async fn apply(
        &mut self,
        v: &VerdictEvent,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Applied> {
        let path = v.data.message.graph_path();
        let body = v.data.policy_violation.to_graph();
        let mut attempts = 0;
        let mut backoff = Duration::from_millis(500);
        loop {
            if let Some(pace) = &mut self.pace {
                tokio::select! {
                    _ = pace.tick() => {}
                    _ = stop.wait_for(|s| *s) => return None,
                }
            }
            attempts += 1;
            let metrics = self.metrics.clone();
            let result = match self.client(&v.data.message.tenant_id) {
                Ok(client) => {
                    let started = Instant::now();
                    let r = client.patch_policy_violation(&path, &body).await;
                    metrics
                        .verdicts
                        .patch_latency
                        .observe(started.elapsed().as_secs_f64());
                    r
                }
                Err(e) => Err(GraphError::Network(format!("graph client: {e}"))),
            };
            let wait = match result {
                Ok(status) => return Some(Applied::Ok { status, attempts }),
                Err(e) => match classify(&e) {
                    Next::Final { reason, status } => {
                        return Some(Applied::Refused {
                            reason,
                            status,
                            error: graph_message(&e),
                            attempts,
                        })
                    }
                    Next::Retry { cause, after } => {
                        metrics.verdicts.retry(cause);
                        let wait = after.unwrap_or(backoff);
                        if after.is_none() {
                            backoff = (backoff * 2).min(self.max_backoff);
                        }
                        tracing::warn!(verdict = %v.id, error = %e, retry_in = ?wait, "verdict not applied yet; retrying");
                        wait
                    }
                },
            };
            // Graph's Retry-After is per app: nothing is sent before it passes.
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return None,
            }
        }
    }
}
