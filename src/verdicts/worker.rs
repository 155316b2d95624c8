//! The loop: one verdict at a time, in input order (so verdicts on one message keep theirs):
//! read, check, PATCH until Graph's final answer, publish the dead letter (if any) and the
//! audit event, and only then move the input's position. A worker killed anywhere in between
//! reads that verdict again and applies it again, which Graph takes as a no-op.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::apply::{Applied, Applier};
use super::io::{Delivery, Input, Out, Output};
use super::verdict::{self, Refused};
use graphbridge_core::config::Config;
use graphbridge_core::event::v1::CloudEvent;
use graphbridge_core::telemetry::Metrics;
use graphbridge_event::event_id;
use graphbridge_event::verdict::{AuditData, MessageRef, AUDIT_SCHEMA, AUDIT_TYPE};

/// `ce_type` header of verdict dead letters.
pub const DEADLETTER_TYPE: &str = "dev.graphbridge.teams.message.verdict.deadletter.v1";

/// Source attribute of audit events.
pub const AUDIT_SOURCE: &str = "/graphbridge/verdicts";

/// What became of one record, before it is written down.
pub struct Outcome {
    pub verdict_id: Option<String>,
    pub message: Option<MessageRef>,
    pub applied: Result<u16, Failure>,
    pub attempts: u32,
}

pub struct Failure {
    pub reason: &'static str,
    pub status: Option<u16>,
    pub error: String,
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Outcome {
    /// A record refused before Graph; its id when it has one, so the audit names it.
    fn refused(r: Refused, payload: &[u8]) -> Self {
        let verdict_id = serde_json::from_slice::<Value>(payload)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_string));
        Outcome {
            verdict_id,
            message: None,
            applied: Err(Failure {
                reason: r.reason,
                status: None,
                error: r.error,
            }),
            attempts: 0,
        }
    }

    fn outcome(&self) -> &'static str {
        if self.applied.is_ok() {
            "applied"
        } else {
            "failed"
        }
    }

    /// The audit event; its id is the same for the same verdict and outcome, so an audit
    /// written twice (a worker killed before it committed) dedupes.
    pub fn audit(&self, payload: &[u8], latency: Duration) -> CloudEvent<AuditData> {
        let about = match &self.verdict_id {
            Some(id) => id.clone(),
            None => event_id("unreadable", &String::from_utf8_lossy(payload), "", ""),
        };
        let (status, reason, error) = match &self.applied {
            Ok(s) => (Some(*s), None, None),
            Err(f) => (f.status, Some(f.reason.to_string()), Some(f.error.clone())),
        };
        let decided_at = now();
        CloudEvent {
            specversion: graphbridge_core::event::v1::SPEC_VERSION.into(),
            id: event_id("verdict-audit", &about, self.outcome(), ""),
            source: AUDIT_SOURCE.into(),
            ty: AUDIT_TYPE.into(),
            subject: match &self.message {
                Some(m) => format!("messages/{}", m.message_id),
                None => "verdicts/unreadable".into(),
            },
            time: decided_at.clone(),
            datacontenttype: "application/json".into(),
            dataschema: AUDIT_SCHEMA.into(),
            graphbridgeorigin: None,
            data: AuditData {
                schema_version: 1,
                verdict_id: self.verdict_id.clone(),
                outcome: self.outcome().into(),
                reason,
                message: self.message.clone(),
                graph_status: status,
                error,
                attempts: self.attempts,
                latency_ms: latency.as_millis() as u64,
                decided_at,
            },
        }
    }

    /// The dead letter of a failed verdict: the reason, Graph's answer and the record as read.
    pub fn dead_letter(&self, payload: &[u8]) -> Option<Value> {
        let f = self.applied.as_ref().err()?;
        let verdict = serde_json::from_slice::<Value>(payload)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(payload).into_owned()));
        Some(json!({
            "reason": f.reason,
            "error": f.error,
            "graph_status": f.status,
            "verdict_id": self.verdict_id,
            "failed_at": now(),
            "verdict": verdict,
        }))
    }

    fn key(&self) -> &str {
        self.message
            .as_ref()
            .map(|m| m.key())
            .unwrap_or("unreadable")
    }
}

/// Checks and applies one record; `None` when stopped before Graph's final answer.
pub async fn decide(
    applier: &mut Applier,
    payload: &[u8],
    stop: &mut watch::Receiver<bool>,
) -> Option<Outcome> {
    let v = match verdict::parse(payload) {
        Ok(v) => v,
        Err(r) => return Some(Outcome::refused(r, payload)),
    };
    let applied = applier.apply(&v, stop).await?;
    let (applied, attempts) = match applied {
        Applied::Ok { status, attempts } => (Ok(status), attempts),
        Applied::Refused {
            reason,
            status,
            error,
            attempts,
        } => (
            Err(Failure {
                reason,
                status: Some(status),
                error,
            }),
            attempts,
        ),
    };
    Some(Outcome {
        verdict_id: Some(v.id),
        message: Some(v.data.message),
        applied,
        attempts,
    })
}

/// Writes the dead letter and the audit event, retrying while the broker is away; false
/// when stopped first.
async fn record(
    output: &Output,
    o: &Outcome,
    d: &Delivery,
    latency: Duration,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let audit = o.audit(&d.payload, latency);
    let audit_json = serde_json::to_vec(&audit).expect("events serialize");
    let dead = o
        .dead_letter(&d.payload)
        .map(|v| serde_json::to_vec(&v).expect("JSON serializes"));
    // Its own id: with NATS both share one stream, whose Nats-Msg-Id deduplication would
    // otherwise drop the audit event as a copy of the dead letter.
    let dead_id = format!("deadletter-{}", audit.id);
    let mut backoff = Duration::from_millis(200);
    loop {
        let mut result = Ok(());
        if let Some(dead) = &dead {
            result = output
                .publish(Out::DeadLetter, o.key(), &dead_id, DEADLETTER_TYPE, dead)
                .await;
        }
        if result.is_ok() {
            result = output
                .publish(Out::Audit, o.key(), &audit.id, AUDIT_TYPE, &audit_json)
                .await;
        }
        match result {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "verdicts: audit or dead letter not published; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|s| *s) => return false,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Applies verdicts from `input` until `stop` turns true or the input ends.
pub async fn run(
    cfg: &Config,
    mut input: Input,
    output: Output,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut applier = Applier::new(cfg, metrics.clone());
    loop {
        let next = tokio::select! {
            d = input.next(&metrics) => d,
            _ = stop.wait_for(|s| *s) => break,
        };
        let Some(d) = next else { break };
        let started = Instant::now();
        let Some(o) = decide(&mut applier, &d.payload, &mut stop).await else {
            break;
        };
        if !record(&output, &o, &d, started.elapsed(), &mut stop).await {
            break;
        }
        match &o.applied {
            Ok(status) => {
                metrics.verdicts.done("applied", "ok");
                tracing::info!(verdict = ?o.verdict_id, status, attempts = o.attempts, "verdict applied");
            }
            Err(f) => {
                metrics.verdicts.done("failed", f.reason);
                tracing::warn!(verdict = ?o.verdict_id, reason = f.reason, status = ?f.status, error = %f.error, "verdict dead-lettered");
            }
        }
        input.done(d, &metrics).await;
    }
    input.close();
}
