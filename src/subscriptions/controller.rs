//! The reconcile loop: desired subscriptions (config) against Graph's. Each round lists the
//! app's subscriptions per tenant, creates what is missing (after checking the endpoint answers
//! the handshake), renews what is due (PATCH, with margin and jitter), replaces what cannot be PATCHed, and deletes what it owns but no longer wants.
//! Every action is idempotent, and a 409 adopts the existing subscription, so two replicas that
//! overlap briefly converge instead of fighting.
//!
//! Lifecycle events act at once: `reauthorizationRequired` renews, `subscriptionRemoved`
//! recreates, `missed` — and any subscription that vanished — publishes `resync_required`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use tokio::sync::{mpsc, watch};

use super::desired::Desired;
use super::planner::{self, chrono_duration as std_to_chrono, Observed, Step, Timing, Tracked};
use super::watermark::Watermarks;
use graphbridge_core::event::v1::{
    CloudEvent, LifecycleData, LifecycleEvent, ResyncGap, LIFECYCLE_SCHEMA, RESYNC_REQUIRED,
    SPEC_VERSION,
};
use graphbridge_core::sink::{Record, Sink};
use graphbridge_core::telemetry::Metrics;
use graphbridge_event::event_id;
use graphbridge_graph_api::clock::{until, Clock};
use graphbridge_graph_api::subscriptions::{same_resource, GraphClient, GraphError, Subscription};

/// Graph retries a delivery for up to 4 hours: anything `missed` happened within that window.

#[derive(Debug, Clone)]
pub struct Options {
    pub renew_margin: Duration,
    pub jitter: Duration,
    pub poll_interval: Duration,
    pub preflight_handshake: bool,
    pub lifecycle_max_age: Duration,
    /// `subscriptions.state_file`: see [`Watermarks`].
    pub state_file: Option<std::path::PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// The endpoint did not answer the validation handshake (checked by us or by Graph).
    #[error("subscription {name}: the validation handshake failed for {url}: {detail}")]
    Handshake {
        name: String,
        url: String,
        detail: String,
    },
    #[error("subscription {name}: Graph could not validate notificationUrl {notification_url}{}: {message}", .lifecycle_url.as_ref().map(|u| format!(" / lifecycleNotificationUrl {u}")).unwrap_or_default())]
    Validation {
        name: String,
        notification_url: String,
        lifecycle_url: Option<String>,
        message: String,
    },
    #[error("subscription {name}: {resource} is already subscribed by this app with notificationUrl {other_url} (id {id}); delete it or use that URL")]
    Conflict {
        name: String,
        resource: String,
        other_url: String,
        id: String,
    },
}

impl ControllerError {
    pub fn reason(&self) -> &'static str {
        match self {
            ControllerError::Graph(e) => e.reason(),
            ControllerError::Handshake { .. } => "handshake",
            ControllerError::Validation { .. } => "validation",
            ControllerError::Conflict { .. } => "conflict",
        }
    }
}

/// What one action did, for `reconcile --once` and logs.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Created {
        name: String,
        id: String,
    },
    Adopted {
        name: String,
        id: String,
    },
    Renewed {
        name: String,
        id: String,
    },
    Deleted {
        id: String,
        resource: String,
    },
    ResyncPublished {
        name: String,
        from: String,
        to: String,
    },
}

#[derive(Debug, Default)]
pub struct Report {
    pub actions: Vec<Action>,
    /// (subscription name or "*", error)
    pub errors: Vec<(String, ControllerError)>,
}

/// A possible gap in notifications, published once a replacement exists.
#[derive(Debug, Clone)]
struct Gap {
    from: DateTime<Utc>,
    cause: String,
    old_id: String,
}

pub struct Controller {
    desired: Vec<Desired>,
    clients: HashMap<String, GraphClient>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    opts: Options,
    http: reqwest::Client,
    resync_sink: Option<Arc<dyn Sink>>,
    tracked: HashMap<String, Tracked>,
    gaps: HashMap<String, Gap>,
    /// No Graph call before this (429/503 Retry-After).
    throttled_until: Option<DateTime<Utc>>,
    /// Earliest next attempt for subscriptions whose last action failed.
    retry_at: HashMap<String, DateTime<Utc>>,
    /// Resync events not yet accepted by the sink.
    pending: Vec<Record>,
    /// Per subscription id: delivery known good up to then (`missed` windows start there).
    watermarks: Watermarks,
    /// In-process backfill's queue (file and stdout sinks).
    resync_tap: Option<tokio::sync::mpsc::Sender<LifecycleEvent>>,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Controller {
    pub fn new(
        desired: Vec<Desired>,
        clients: HashMap<String, GraphClient>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        opts: Options,
        resync_sink: Option<Arc<dyn Sink>>,
    ) -> Self {
        Controller {
            desired,
            clients,
            clock,
            metrics,
            http: graphbridge_graph_api::subscriptions::http_client(),
            resync_sink,
            tracked: HashMap::new(),
            gaps: HashMap::new(),
            throttled_until: None,
            retry_at: HashMap::new(),
            pending: Vec::new(),
            watermarks: Watermarks::load(opts.state_file.as_deref()),
            resync_tap: None,
            opts,
        }
    }

    pub fn desired(&self) -> &[Desired] {
        &self.desired
    }

    /// The id of the subscription kept for `name`, if any.
    pub fn subscription_id(&self, name: &str) -> Option<&str> {
        self.tracked.get(name).map(|t| t.id.as_str())
    }

    fn timing(&self) -> Timing {
        Timing {
            renew_margin: self.opts.renew_margin,
            jitter: self.opts.jitter,
        }
    }

    /// A renewal time for `d` expiring at `expires_at`, the jitter rolled now.
    fn renew_at(&self, d: &Desired, expires_at: DateTime<Utc>) -> DateTime<Utc> {
        self.timing().renew_at(d, expires_at, roll())
    }

    fn track(&mut self, d: &Desired, s: &Subscription) {
        let fresh = self.renew_at(d, s.expiration_date_time);
        let prev = self.tracked.get(&d.name);
        let t = planner::tracked(prev, s, self.clock.now(), fresh);
        self.remember(&d.name, t);
    }

    fn remember(&mut self, name: &str, t: Tracked) {
        self.tracked.insert(name.to_string(), t);
        self.retry_at.remove(name);
    }

    fn fail(&mut self, report: &mut Report, name: &str, e: ControllerError) {
        tracing::warn!(subscription = name, error = %e, "subscription action failed");
        self.metrics.subscriptions.failed(name, e.reason());
        let backoff = self.opts.poll_interval.min(Duration::from_secs(60));
        let mut retry = self.clock.now() + std_to_chrono(backoff);
        if let ControllerError::Graph(GraphError::Throttled { retry_after, .. }) = &e {
            // Graph said when: nothing before, and no later than needed.
            retry = self.clock.now() + std_to_chrono(*retry_after);
            self.throttled_until = Some(retry);
        }
        // A renewal that failed is due again at the retry time, not at once (no busy loop).
        if let Some(t) = self.tracked.get_mut(name) {
            t.renew_at = t.renew_at.max(retry);
        }
        self.retry_at.insert(name.to_string(), retry);
        report.errors.push((name.to_string(), e));
    }

    fn throttled(&self) -> bool {
        self.throttled_until.is_some_and(|t| self.clock.now() < t)
    }

    /// One full round over every tenant. Errors are per subscription and in the report.
    pub async fn reconcile(&mut self) -> Report {
        let mut report = Report::default();
        // Retries that are due happen in this round; failures set new ones.
        let now = self.clock.now();
        self.retry_at.retain(|_, t| *t > now);
        self.flush_pending().await;
        let mut tenants: Vec<String> = self.desired.iter().map(|d| d.tenant_id.clone()).collect();
        tenants.sort();
        tenants.dedup();
        for tenant in tenants {
            if self.throttled() {
                break;
            }
            self.reconcile_tenant(&tenant, &mut report).await;
        }
        self.update_gauges();
        // Complete and clean: every tenant listed, every step done (not cut short by Graph's
        // throttling), no error. A wedged or failing loop stops moving this.
        if report.errors.is_empty() && !self.throttled() {
            let now = self.clock.now();
            self.metrics
                .subscriptions
                .last_reconcile
                .set(now.timestamp_millis() as f64 / 1000.0);
        }
        report
    }

    /// Lists the tenant's subscriptions and carries out the round's steps until Graph
    /// throttles: each desired item planned ([`planner::plan_item`]) when it is reached, with the
    /// time then and what the earlier steps left, then the deletions ([`planner::deletions`]).
    async fn reconcile_tenant(&mut self, tenant: &str, report: &mut Report) {
        let desired: Vec<Desired> = self
            .desired
            .iter()
            .filter(|d| d.tenant_id == tenant)
            .cloned()
            .collect();
        let listed = match self.clients[tenant].list().await {
            Ok(l) => l,
            Err(e) => return self.list_failed(tenant, &desired, e.into(), report),
        };
        for d in &desired {
            if self.throttled() {
                return;
            }
            let now = self.clock.now();
            let step = planner::plan_item(d, &self.observed(&listed), now);
            if let Some(step) = step {
                self.execute(tenant, step, now, report).await;
            }
        }
        for step in planner::deletions(&desired, &listed) {
            if self.throttled() {
                return;
            }
            let now = self.clock.now();
            self.execute(tenant, step, now, report).await;
        }
    }

    /// What the planner needs to know besides the desired state.
    fn observed<'l>(&self, listed: &'l [Subscription]) -> Observed<'l, '_> {
        Observed {
            listed,
            tracked: &self.tracked,
            retry_at: &self.retry_at,
            timing: self.timing(),
            roll,
        }
    }

    /// Listing failed: every item of the tenant counts it; retried after a backoff (or when
    /// Graph said, when it throttled).
    fn list_failed(
        &mut self,
        tenant: &str,
        desired: &[Desired],
        e: ControllerError,
        report: &mut Report,
    ) {
        for d in desired {
            self.metrics.subscriptions.failed(&d.name, e.reason());
        }
        let backoff = self.opts.poll_interval.min(Duration::from_secs(60));
        let mut retry = self.clock.now() + std_to_chrono(backoff);
        if let ControllerError::Graph(GraphError::Throttled { retry_after, .. }) = &e {
            retry = self.clock.now() + std_to_chrono(*retry_after);
            self.throttled_until = Some(retry);
        }
        self.retry_at.insert(format!("*list {tenant}"), retry);
        tracing::warn!(tenant, error = %e, "listing subscriptions failed");
        report.errors.push(("*".into(), e));
    }

    async fn execute(
        &mut self,
        tenant: &str,
        step: Step<'_>,
        now: DateTime<Utc>,
        report: &mut Report,
    ) {
        let (d, result) = match step {
            Step::Keep {
                desired: d,
                tracked,
                renew,
            } => {
                self.remember(&d.name, tracked);
                let result = if renew {
                    self.renew(d, report).await
                } else {
                    Ok(())
                };
                (d, result)
            }
            Step::Replace { desired: d, old } => {
                (d, self.replace(tenant, d, old, now, report).await)
            }
            Step::Create {
                desired: d,
                vanished,
            } => (d, self.recreate(d, vanished, report).await),
            Step::Delete { subscription } => {
                return self.delete_unwanted(tenant, subscription, report).await;
            }
        };
        if let Err(e) = result {
            self.fail(report, &d.name, e);
        }
    }

    /// Deletes `s`, ours but no longer desired. A failure counts for "*".
    async fn delete_unwanted(&mut self, tenant: &str, s: &Subscription, report: &mut Report) {
        match self.clients[tenant].delete(&s.id).await {
            Ok(()) => {
                tracing::info!(id = %s.id, resource = %s.resource, "deleted a subscription no longer desired");
                report.actions.push(Action::Deleted {
                    id: s.id.clone(),
                    resource: s.resource.clone(),
                });
            }
            Err(e) => self.fail(report, "*", e.into()),
        }
    }

    /// Creates `d`; `vanished`, the one remembered, went without our doing (expired, removed):
    /// notifications since it was last seen alive may be lost.
    async fn recreate(
        &mut self,
        d: &Desired,
        vanished: Option<Tracked>,
        report: &mut Report,
    ) -> Result<(), ControllerError> {
        if let Some(t) = vanished {
            tracing::warn!(subscription = %d.name, id = %t.id, "subscription vanished; recreating");
            self.tracked.remove(&d.name);
            self.gaps.entry(d.name.clone()).or_insert(Gap {
                from: t.confirmed_at,
                cause: "vanished".into(),
                old_id: t.id,
            });
        }
        self.create(d, report).await
    }

    /// Deletes `old`, which a PATCH cannot turn into `d`, and creates `d` anew.
    async fn replace(
        &mut self,
        tenant: &str,
        d: &Desired,
        old: &Subscription,
        now: DateTime<Utc>,
        report: &mut Report,
    ) -> Result<(), ControllerError> {
        tracing::info!(subscription = %d.name, id = %old.id, "change types or lifecycle URL changed: replacing the subscription");
        self.clients[tenant].delete(&old.id).await?;
        report.actions.push(Action::Deleted {
            id: old.id.clone(),
            resource: old.resource.clone(),
        });
        self.gaps.entry(d.name.clone()).or_insert(Gap {
            from: now,
            cause: "replaced".into(),
            old_id: old.id.clone(),
        });
        self.tracked.remove(&d.name);
        self.create(d, report).await
    }

    /// Checks that `url` answers Graph's validation handshake as Graph will check it.
    async fn preflight(&self, name: &str, url: &str) -> Result<(), ControllerError> {
        let token = format!(
            "graphbridge preflight {}&<check>",
            hex::encode(graphbridge_core::crypto::random_bytes::<8>())
        );
        let fail = |detail: String| ControllerError::Handshake {
            name: name.to_string(),
            url: url.to_string(),
            detail,
        };
        let resp = self
            .http
            .post(url)
            .query(&[("validationToken", &token)])
            .header("content-type", "text/plain")
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| fail(format!("no answer: {e}")))?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if status.as_u16() != 200 || body != token {
            return Err(fail(format!(
                "expected 200 with the URL-decoded token, got {status} {:?}",
                body.chars().take(100).collect::<String>()
            )));
        }
        Ok(())
    }

    async fn create(&mut self, d: &Desired, report: &mut Report) -> Result<(), ControllerError> {
        if self.opts.preflight_handshake {
            // Event Hubs URLs get no handshake from Graph, so none is tried here either.
            let urls = std::iter::once(&d.notification_url).chain(d.lifecycle_url.as_ref());
            for url in urls.filter(|u| !graphbridge_graph_api::subscriptions::is_event_hub(u)) {
                self.preflight(&d.name, url).await?;
            }
        }
        let asked_at = self.clock.now();
        let body = d.to_subscription(asked_at);
        match self.clients[&d.tenant_id].create(&body).await {
            Ok(s) => {
                tracing::info!(subscription = %d.name, id = %s.id, expires = %s.expiration_date_time, "subscription created");
                // Nothing can have been missed before it existed.
                self.watermarks.mark(&s.id, asked_at);
                self.track(d, &s);
                report.actions.push(Action::Created {
                    name: d.name.clone(),
                    id: s.id.clone(),
                });
                self.publish_gap(d, Some(s.id.clone()), report).await;
                Ok(())
            }
            // Another replica (or an earlier run whose answer was lost) created it: adopt it.
            Err(GraphError::Duplicate(msg)) => self.adopt(d, msg, report).await,
            Err(GraphError::BadRequest { message }) => Err(ControllerError::Validation {
                name: d.name.clone(),
                notification_url: d.notification_url.clone(),
                lifecycle_url: d.lifecycle_url.clone(),
                message,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// After a 409 on create: adopts the subscription Graph lists for `d` (renewing it when
    /// due), or explains the 409 ([`conflict`]).
    async fn adopt(
        &mut self,
        d: &Desired,
        msg: String,
        report: &mut Report,
    ) -> Result<(), ControllerError> {
        let listed = self.clients[&d.tenant_id].list().await?;
        let Some(s) = listed.iter().find(|s| d.matches(s)) else {
            return Err(conflict(d, &listed, msg));
        };
        tracing::info!(subscription = %d.name, id = %s.id, "409: adopting the existing subscription");
        self.track(d, s);
        report.actions.push(Action::Adopted {
            name: d.name.clone(),
            id: s.id.clone(),
        });
        self.publish_gap(d, Some(s.id.clone()), report).await;
        if self.tracked[&d.name].renew_at <= self.clock.now() {
            // Boxed: renew may create again (404), which may adopt again.
            Box::pin(self.renew(d, report)).await?;
        }
        Ok(())
    }

    /// PATCHes the expiration (and the certificate when it changed), which also reauthorizes.
    /// A 404 recreates.
    async fn renew(&mut self, d: &Desired, report: &mut Report) -> Result<(), ControllerError> {
        let now = self.clock.now();
        let Some(t) = self.tracked.get(&d.name).cloned() else {
            return self.create(d, report).await;
        };
        let cert = d
            .encryption
            .as_ref()
            .map(|e| (e.certificate.as_str(), e.certificate_id.as_str()));
        match self.clients[&d.tenant_id]
            .renew(&t.id, d.expiration(now), cert)
            .await
        {
            Ok(s) => {
                self.renewed(d, t.id, s, report);
                Ok(())
            }
            Err(GraphError::NotFound(_)) => self.recreate_not_found(d, t, report).await,
            Err(e) => Err(e.into()),
        }
    }

    /// Remembers the PATCH that renewed `d`'s subscription `id`, with a fresh renewal time.
    fn renewed(&mut self, d: &Desired, id: String, s: Subscription, report: &mut Report) {
        tracing::info!(subscription = %d.name, id = %id, expires = %s.expiration_date_time, "subscription renewed");
        let s = Subscription {
            id: id.clone(),
            ..s
        };
        self.track(d, &s);
        let renew_at = self.renew_at(d, s.expiration_date_time);
        if let Some(tr) = self.tracked.get_mut(&d.name) {
            tr.renew_at = renew_at;
        }
        self.metrics.subscriptions.renewed(&d.name);
        report.actions.push(Action::Renewed {
            name: d.name.clone(),
            id,
        });
    }

    /// The PATCH found nothing (404): `t` is gone, notifications since it was last seen alive
    /// may be lost; creates `d` anew.
    async fn recreate_not_found(
        &mut self,
        d: &Desired,
        t: Tracked,
        report: &mut Report,
    ) -> Result<(), ControllerError> {
        tracing::warn!(subscription = %d.name, id = %t.id, "renewal: 404, recreating");
        self.metrics.subscriptions.failed(&d.name, "not_found");
        self.tracked.remove(&d.name);
        self.gaps.entry(d.name.clone()).or_insert(Gap {
            from: t.confirmed_at,
            cause: "not_found".into(),
            old_id: t.id,
        });
        self.create(d, report).await
    }

    async fn publish_gap(&mut self, d: &Desired, new_id: Option<String>, report: &mut Report) {
        let Some(gap) = self.gaps.remove(&d.name) else {
            return;
        };
        let to = self.clock.now();
        let record = Record::lifecycle(self.tap_resync(resync_event(d, &gap, to, new_id)));
        report.actions.push(Action::ResyncPublished {
            name: d.name.clone(),
            from: ts(gap.from),
            to: ts(to),
        });
        self.pending.push(record);
        self.flush_pending().await;
    }

    /// Hands a copy of `e` to the in-process backfill (file sink: no broker to carry it).
    fn tap_resync(&self, e: LifecycleEvent) -> LifecycleEvent {
        if let Some(tap) = &self.resync_tap {
            if tap.try_send(e.clone()).is_err() {
                tracing::warn!("in-process backfill queue full or gone; this gap is not filled");
            }
        }
        e
    }

    /// Sends every `resync_required` this controller publishes to `tap` as well (in-process
    /// backfill with the file or stdout sink).
    pub fn tap_resync_events(&mut self, tap: tokio::sync::mpsc::Sender<LifecycleEvent>) {
        self.resync_tap = Some(tap);
    }

    async fn flush_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let Some(sink) = &self.resync_sink else {
            tracing::warn!(
                n = self.pending.len(),
                "no sink for resync_required events; dropped"
            );
            self.pending.clear();
            return;
        };
        match sink.publish(&self.pending).await {
            Ok(()) => {
                self.metrics
                    .published(sink.kind(), self.pending.len() as u64);
                self.pending.clear();
            }
            Err(e) => {
                tracing::warn!(error = %e, "publishing resync_required failed; will retry");
            }
        }
    }

    /// Acts on a lifecycle event from the lifecycle stream (or in-process).
    pub async fn on_lifecycle(&mut self, ev: &LifecycleEvent) -> Report {
        let mut report = Report::default();
        let kind = ev.data.lifecycle_event.as_str();
        if kind == RESYNC_REQUIRED {
            return report; // our own
        }
        let now = self.clock.now();
        let Some(received) = self.received_recently(ev, now) else {
            return report;
        };
        let Some((d, t)) = self.managed(&ev.data.subscription_id, kind) else {
            return report;
        };
        tracing::info!(subscription = %d.name, id = %t.id, event = kind, "lifecycle event");
        let result = match kind {
            "reauthorizationRequired" => {
                self.on_reauthorization_required(&d, now, &mut report).await
            }
            "subscriptionRemoved" => self.on_removed(&d, t, &mut report).await,
            "missed" => {
                self.on_missed(&d, &t, received, &mut report).await;
                Ok(())
            }
            other => {
                tracing::info!(event = other, "lifecycle event not acted on");
                Ok(())
            }
        };
        if let Err(e) = result {
            self.fail(&mut report, &d.name, e);
        }
        self.update_gauges();
        report
    }

    /// When the ingress received `ev` (`now` when it does not say), unless that is longer ago
    /// than `lifecycle_max_age`: then `None`, the event is ignored.
    fn received_recently(&self, ev: &LifecycleEvent, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let received = DateTime::parse_from_rfc3339(&ev.data.received_at)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(now);
        if until(received, Utc::now()) > self.opts.lifecycle_max_age {
            tracing::debug!(id = %ev.id, "old lifecycle event ignored");
            return None;
        }
        Some(received)
    }

    /// The desired item and the remembered state of `subscription_id`, when this controller
    /// keeps it.
    fn managed(&self, subscription_id: &str, kind: &str) -> Option<(Desired, Tracked)> {
        let Some((name, t)) = self.tracked.iter().find(|(_, t)| t.id == subscription_id) else {
            tracing::info!(subscription_id = %subscription_id, event = kind, "lifecycle event for a subscription this controller does not manage");
            return None;
        };
        let d = self
            .desired
            .iter()
            .find(|d| &d.name == name)
            .cloned()
            .expect("tracked names are desired");
        Some((d, t.clone()))
    }

    /// `reauthorizationRequired`: renews now, even right after a renewal (a PATCH is what
    /// Graph asks for); only while Graph throttles this app is the renewal made due instead.
    async fn on_reauthorization_required(
        &mut self,
        d: &Desired,
        now: DateTime<Utc>,
        report: &mut Report,
    ) -> Result<(), ControllerError> {
        if self.throttled() {
            tracing::info!(
                subscription = %d.name,
                "reauthorizationRequired: Graph is throttling this app; renewing once it allows"
            );
            if let Some(tr) = self.tracked.get_mut(&d.name) {
                tr.renew_at = now;
            }
            return Ok(());
        }
        self.renew(d, report).await
    }

    /// `subscriptionRemoved`: `t` is gone since it was last seen alive; creates `d` again now,
    /// or (throttled) leaves it to the next round.
    async fn on_removed(
        &mut self,
        d: &Desired,
        t: Tracked,
        report: &mut Report,
    ) -> Result<(), ControllerError> {
        self.tracked.remove(&d.name);
        self.gaps.entry(d.name.clone()).or_insert(Gap {
            from: t.confirmed_at,
            cause: "subscriptionRemoved".into(),
            old_id: t.id,
        });
        if self.throttled() {
            return Ok(()); // the next round creates it
        }
        self.create(d, report).await
    }

    /// `missed`: publishes `resync_required` for what Graph may have dropped: since delivery was
    /// last known good ([`Watermarks`]), at most Graph's retry window before `received`; the
    /// gap reported, delivery is known good up to `received`.
    async fn on_missed(
        &mut self,
        d: &Desired,
        t: &Tracked,
        received: DateTime<Utc>,
        report: &mut Report,
    ) {
        let gap = Gap {
            from: self.watermarks.missed_from(&t.id, received),
            cause: "missed".into(),
            old_id: t.id.clone(),
        };
        let record = Record::lifecycle(self.tap_resync(resync_event(d, &gap, received, None)));
        self.pending.push(record);
        report.actions.push(Action::ResyncPublished {
            name: d.name.clone(),
            from: ts(gap.from),
            to: ts(received),
        });
        self.flush_pending().await;
        // Known good up to here only once the gap is in the broker: a crash before that must
        // leave the next `missed` covering it too.
        if self.pending.is_empty() {
            self.watermarks.mark(&t.id, received);
        }
    }

    /// Expiry per subscription and the unhealthy count.
    pub fn update_gauges(&self) {
        let now = self.clock.now();
        let mut unhealthy = 0;
        for d in &self.desired {
            match self.tracked.get(&d.name) {
                Some(t) => {
                    let left = (t.expires_at - now).num_milliseconds() as f64 / 1000.0;
                    self.metrics.subscriptions.set_expiry(&d.name, left);
                    if left < self.timing().margin(d).as_secs_f64() {
                        unhealthy += 1;
                    }
                }
                None => {
                    self.metrics.subscriptions.set_expiry(&d.name, 0.0);
                    unhealthy += 1;
                }
            }
        }
        self.metrics.subscriptions.unhealthy.set(unhealthy);
    }

    /// When the next round is due: the poll interval, a renewal, a retry, or the end of a
    /// throttle — whichever comes first.
    fn next_wake(&self, last_round: DateTime<Utc>) -> DateTime<Utc> {
        let mut wake = last_round + std_to_chrono(self.opts.poll_interval);
        for t in self.tracked.values() {
            wake = wake.min(t.renew_at);
        }
        for t in self.retry_at.values() {
            wake = wake.min(*t);
        }
        if let Some(t) = self.throttled_until {
            wake = wake.max(t);
        }
        wake
    }

    /// Runs until `shutdown` turns true: rounds when due, lifecycle events as they come.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<LifecycleEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut last_round = self.clock.now();
        let mut first = true;
        let mut events_open = true;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let now = self.clock.now();
            if first || now >= self.next_wake(last_round) {
                first = false;
                if !self.throttled() {
                    let report = self.reconcile().await;
                    for a in &report.actions {
                        tracing::debug!(?a, "reconcile action");
                    }
                    last_round = self.clock.now();
                }
            }
            let wait = until(self.clock.now(), self.next_wake(last_round));
            // Wake at least every few seconds to keep the expiry gauges current.
            let real = self.clock.real(wait).min(Duration::from_secs(5));
            tokio::select! {
                _ = tokio::time::sleep(real) => {}
                ev = events.recv(), if events_open => match ev {
                    Some(ev) => { self.on_lifecycle(&ev).await; }
                    None => events_open = false,
                },
                _ = shutdown.changed() => {}
            }
            self.update_gauges();
        }
    }
}

/// Why a create got 409 although Graph lists nothing for `d`: this app subscribed the resource
/// with another notification URL (a conflict the operator must resolve), or plain Graph's 409.
fn conflict(d: &Desired, listed: &[Subscription], msg: String) -> ControllerError {
    match listed
        .iter()
        .find(|s| same_resource(&s.resource, &d.resource))
    {
        Some(other) => ControllerError::Conflict {
            name: d.name.clone(),
            resource: d.resource.clone(),
            other_url: other.notification_url.clone(),
            id: other.id.clone(),
        },
        None => GraphError::Duplicate(msg).into(),
    }
}

/// A `resync_required` lifecycle event: notifications for `d` between the gap's start and `to`
/// may be missing. Its id depends only on the gap, so replicas publishing it dedupe.
fn resync_event(
    d: &Desired,
    gap: &Gap,
    to: DateTime<Utc>,
    new_id: Option<String>,
) -> LifecycleEvent {
    let (from, to) = (ts(gap.from), ts(to));
    let now = ts(Utc::now());
    CloudEvent {
        specversion: SPEC_VERSION.into(),
        // The window and the cause: another gap of the same subscription is another event;
        // only the same gap published again (a retry) has the same id.
        id: event_id(
            &d.tenant_id,
            &format!("subscriptions('{}')", gap.old_id),
            RESYNC_REQUIRED,
            &format!("{}|{}|{}", gap.cause, from, to),
        ),
        source: format!("/tenants/{}/subscriptions/{}", d.tenant_id, gap.old_id),
        ty: format!("graph.subscription.{RESYNC_REQUIRED}").into(),
        subject: format!("subscriptions/{}", gap.old_id),
        time: now.clone(),
        datacontenttype: "application/json".into(),
        dataschema: LIFECYCLE_SCHEMA.into(),
        graphbridgeorigin: None,
        data: LifecycleData {
            schema_version: 1,
            tenant_id: d.tenant_id.clone(),
            subscription_id: gap.old_id.clone(),
            lifecycle_event: RESYNC_REQUIRED.into(),
            subscription_expires_at: None,
            received_at: now,
            resync: Some(ResyncGap {
                from,
                to,
                cause: gap.cause.clone(),
                subscription_name: d.name.clone(),
                resource: d.resource.clone(),
                new_subscription_id: new_id,
            }),
        },
    }
}

/// A share in [0, 1) of the renewal jitter, from aws-lc's RNG.
fn roll() -> f64 {
    let b = graphbridge_core::crypto::random_bytes::<8>();
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired() -> Desired {
        Desired {
            name: "chats".into(),
            tenant_id: "tenant".into(),
            resource: "/chats/getAllMessages?model=B".into(),
            change_type: "created,updated".into(),
            notification_url: "https://bridge.example.com/notifications".into(),
            lifecycle_url: None,
            encryption: None,
            client_state: "state".into(),
            lifetime: Duration::from_secs(3600),
        }
    }

    #[test]
    fn gaps_with_one_start_and_different_ends_have_different_ids() {
        // As the outside check saw: one subscription, one cause, one `from`, three `to`s.
        let gap = Gap {
            from: "2026-12-03T07:50:01.993Z".parse().unwrap(),
            cause: "missed".into(),
            old_id: "s1".into(),
        };
        let ids: std::collections::HashSet<String> =
            ["07:50:07.499", "07:50:09.002", "07:50:10.505"]
                .iter()
                .map(|t| {
                    let to = format!("2026-12-03T{t}Z").parse().unwrap();
                    resync_event(&desired(), &gap, to, None).id
                })
                .collect();
        assert_eq!(ids.len(), 3);
        // The same gap published again is the same event.
        let to = "2026-12-03T07:50:07.499Z".parse().unwrap();
        assert!(ids.contains(&resync_event(&desired(), &gap, to, None).id));
    }

    #[test]
    fn a_409_without_a_match_names_the_subscription_at_another_url_or_stays_graphs() {
        let d = desired();
        let mut other = d.to_subscription(Utc::now());
        other.id = "s9".into();
        other.notification_url = "https://old.example.com/hook".into();
        match conflict(&d, std::slice::from_ref(&other), "dup".into()) {
            ControllerError::Conflict { other_url, id, .. } => {
                assert_eq!(
                    (other_url.as_str(), id.as_str()),
                    ("https://old.example.com/hook", "s9")
                )
            }
            e => panic!("{e:?}"),
        }
        let e = conflict(&d, &[], "dup".into());
        assert!(
            matches!(e, ControllerError::Graph(GraphError::Duplicate(ref m)) if m == "dup"),
            "{e:?}"
        );
    }
}
