//! Logging setup and the Prometheus metrics served on the admin port.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::config::{LogFormat, TelemetryConfig};

/// Colour codes only when a person is watching: a terminal, and no `NO_COLOR` (no-color.org).
/// In a file, a pipe or a container log they are noise that breaks grep and log parsers.
fn ansi(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Trace export failed to start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTLP trace exporter: {0}")]
    Otlp(String),
}

/// Keeps the OTLP pipeline alive; dropping it exports what is still buffered (bounded by the
/// exporter's timeout), so the last requests before a shutdown are not lost.
#[must_use = "dropping the guard stops trace export"]
pub struct TracingGuard {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

#[cfg(feature = "otlp")]
impl Drop for TracingGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("graphbridge: flushing traces: {e}");
            }
        }
    }
}

/// Starts `tracing` output for every verb: JSON for log pipelines, pretty for people (colour
/// only on a terminal); RUST_LOG overrides the level. Spans are exported over OTLP/HTTP when
/// `telemetry.otlp_endpoint` is set. The log filter applies to logs only: this crate's spans
/// (down to DEBUG, where the per-item span is, so that INFO logs do not pay for one per item)
/// and its events at INFO are exported whatever `log_level` says, so quiet logs do not mean
/// empty traces.
pub fn init_tracing(cfg: &TelemetryConfig) -> Result<TracingGuard, TelemetryError> {
    use tracing_subscriber::{prelude::*, EnvFilter, Layer};
    let log_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.log_level));
    use std::io::IsTerminal;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR"),
        ));
    let fmt = match cfg.log_format {
        LogFormat::Json => fmt.json().boxed(),
        LogFormat::Pretty => fmt.compact().boxed(),
    };
    #[cfg(feature = "otlp")]
    let (otel, guard) = {
        let provider = match &cfg.otlp_endpoint {
            Some(url) => Some(otlp_provider(url)?),
            None => None,
        };
        let otel = provider.as_ref().map(|p| {
            use opentelemetry::trace::TracerProvider as _;
            use tracing_subscriber::filter;
            tracing_opentelemetry::layer()
                .with_tracer(p.tracer("graphbridge"))
                .with_filter(filter::filter_fn(|m| {
                    let max = if m.is_span() {
                        filter::LevelFilter::DEBUG
                    } else {
                        filter::LevelFilter::INFO
                    };
                    m.target().starts_with("graphbridge") && *m.level() <= max
                }))
        });
        (otel, TracingGuard { provider })
    };
    #[cfg(not(feature = "otlp"))]
    let (otel, guard) = match &cfg.otlp_endpoint {
        Some(_) => {
            return Err(TelemetryError::Otlp(
                "this build has no trace export (cargo feature `otlp`)".into(),
            ))
        }
        None => (None::<tracing_subscriber::layer::Identity>, TracingGuard {}),
    };
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(log_filter))
        .with(otel)
        .try_init();
    Ok(guard)
}

/// A batching OTLP/HTTP protobuf exporter to `<endpoint>/v1/traces`.
#[cfg(feature = "otlp")]
fn otlp_provider(
    endpoint: &str,
) -> Result<opentelemetry_sdk::trace::SdkTracerProvider, TelemetryError> {
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    // The exporter builds its own reqwest client, which needs the process's TLS provider.
    crate::http::install_crypto_provider();
    let base = endpoint.trim_end_matches('/');
    let url = if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    };
    // The exporter's blocking HTTP client owns a runtime of its own, which must not be created
    // (or later dropped) on an async worker thread: build it on a plain thread.
    let exporter = std::thread::spawn(move || {
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url)
            .build()
    })
    .join()
    .map_err(|_| TelemetryError::Otlp("exporter construction panicked".into()))?
    .map_err(|e| TelemetryError::Otlp(e.to_string()))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("graphbridge");
    }
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

type Labels = Vec<(&'static str, String)>;

/// Every metric the bridge exports. Labels are bounded: reasons and sink kinds are fixed sets.
pub struct Metrics {
    registry: Registry,
    /// Notification items received (after the envelope parsed).
    pub received: Counter,
    /// Items that became events (message or lifecycle) and were durably accepted.
    pub accepted: Counter,
    /// Items permanently rejected, by reason; also requests refused whole (bad_json, ...).
    pub rejected: Family<Labels, Counter>,
    /// Records published, by sink kind.
    pub published: Family<Labels, Counter>,
    /// Batches answered 503 (Graph retries), by reason: `ack_budget`, `sink_retryable`,
    /// `sink_permanent`, `spool`, `task`, `token_keys_unavailable`.
    pub unavailable: Family<Labels, Counter>,
    /// Seconds from request start to answer, for answered batches.
    pub ack_latency: Histogram,
    /// Seconds a sink took to accept one batch.
    pub publish_latency: Histogram,
    /// Batches being processed now.
    pub in_flight: Gauge,
    /// Private keys in the keyring.
    pub keys_loaded: Gauge,
    /// Reloads of the keys directory that failed (the previous keys stay in use).
    pub key_reload_failures: Counter,
    /// Items in the spool waiting for the sink, and their bytes on disk.
    pub spool_depth_items: Gauge,
    pub spool_depth_bytes: Gauge,
    /// Seconds since the oldest waiting batch was spooled (0 when empty).
    pub spool_oldest_age: Gauge<f64, AtomicU64>,
    /// Items appended to the spool, and items drained from it to the sink.
    pub spool_appended: Counter,
    pub spool_drained: Counter,
    /// Batches refused because the spool was full (answered 503).
    pub spool_full: Counter,
    /// Bytes of torn records cut off at start-up (never acknowledged).
    pub spool_discarded_bytes: Counter,
    /// Acknowledged batches that could not be read back (disk corruption): data lost, alert.
    pub spool_unreadable: Counter,
    /// Subscription controller, by configured subscription name (bounded by the config).
    pub subscriptions: SubscriptionMetrics,
    /// Backfill (`graphbridge backfill run`).
    pub backfill: BackfillMetrics,
    /// The verdict worker (`graphbridge verdicts run`).
    pub verdicts: VerdictMetrics,
    /// Events read from Azure Event Hubs (`serve --source eventhubs`), by `outcome`: `accepted`,
    /// `validation` (Graph's reachability test, skipped), `deadletter`, `retried`.
    pub eventhubs_events: Family<Labels, Counter>,
}

/// The verdict worker's metrics: outcomes, Graph's PATCH latency and throttling, and how far
/// the worker is behind its input.
pub struct VerdictMetrics {
    /// Verdicts done, by `outcome` (`applied`, `failed`) and `reason` (`ok`, `bad_json`,
    /// `invalid_verdict`, `not_found`, `forbidden`, `bad_request`, `graph_error`).
    pub verdicts: Family<Labels, Counter>,
    /// Seconds of each PATCH call to Graph (every attempt).
    pub patch_latency: Histogram,
    /// Graph's answers that made the worker wait and retry, by `cause` (`throttled`, `network`,
    /// `auth`, `server`).
    pub retries: Family<Labels, Counter>,
    /// Verdicts in the input not yet done (Kafka: high watermark minus position of the
    /// partitions read; JetStream: the consumer's pending count).
    pub consumer_lag: Gauge,
}

impl Default for VerdictMetrics {
    fn default() -> Self {
        VerdictMetrics {
            verdicts: Family::default(),
            patch_latency: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            retries: Family::default(),
            consumer_lag: Gauge::default(),
        }
    }
}

impl VerdictMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "verdicts",
            "Verdicts done, by outcome and reason",
            self.verdicts.clone(),
        );
        r.register(
            "verdict_patch_seconds",
            "Seconds of each policyViolation PATCH to Graph",
            self.patch_latency.clone(),
        );
        r.register(
            "verdict_retries",
            "PATCH calls retried, by cause",
            self.retries.clone(),
        );
        r.register(
            "verdict_consumer_lag",
            "Verdicts waiting in the input",
            self.consumer_lag.clone(),
        );
    }

    pub fn done(&self, outcome: &str, reason: &str) {
        self.verdicts
            .get_or_create(&vec![
                ("outcome", outcome.to_string()),
                ("reason", reason.to_string()),
            ])
            .inc();
    }

    pub fn retry(&self, cause: &str) {
        self.retries
            .get_or_create(&vec![("cause", cause.to_string())])
            .inc();
    }
}

/// Backfill's metrics: gaps waiting and done, messages published from Graph's message APIs,
/// and those calls by outcome.
#[derive(Default)]
pub struct BackfillMetrics {
    /// Gaps read and not yet filled.
    pub gaps_open: Gauge,
    /// Gaps filled (everything in them durably published).
    pub gaps_closed: Counter,
    /// Seconds since the oldest open gap was read (0 when none): alert when it grows.
    pub oldest_gap_age: Gauge<f64, AtomicU64>,
    /// Messages fetched from Graph and published as events.
    pub messages: Counter,
    /// Message API reads, by `outcome` (`ok`, `throttled`, `forbidden`, `not_found`, ...).
    pub graph_calls: Family<Labels, Counter>,
}

impl BackfillMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "backfill_gaps_open",
            "Gaps read and not yet filled",
            self.gaps_open.clone(),
        );
        r.register(
            "backfill_gaps_closed",
            "Gaps filled",
            self.gaps_closed.clone(),
        );
        r.register(
            "backfill_oldest_gap_age_seconds",
            "Seconds since the oldest open gap was read",
            self.oldest_gap_age.clone(),
        );
        r.register(
            "backfill_messages",
            "Messages fetched from Graph and published",
            self.messages.clone(),
        );
        r.register(
            "backfill_graph_calls",
            "Message API reads, by outcome",
            self.graph_calls.clone(),
        );
    }

    pub fn graph_call(&self, outcome: &str) {
        self.graph_calls
            .get_or_create(&vec![("outcome", outcome.to_string())])
            .inc();
    }
}

/// The subscription controller's metrics (`graphbridge subscriptions run`).
#[derive(Default)]
pub struct SubscriptionMetrics {
    /// Seconds until each desired subscription expires (negative or absent: missing).
    pub expiry_seconds: Family<Labels, Gauge<f64, AtomicU64>>,
    pub renewals: Family<Labels, Counter>,
    /// Failed Graph operations, by subscription and reason.
    pub failures: Family<Labels, Counter>,
    /// Desired subscriptions missing or expiring within the renew margin: alert when above 0.
    pub unhealthy: Gauge,
    /// Unix time of the last reconcile round that listed every tenant and carried out every
    /// step without an error (0: none yet). Readiness and the staleness alert read it.
    pub last_reconcile: Gauge<f64, AtomicU64>,
}

impl SubscriptionMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "subscription_expiry_seconds",
            "Seconds until a subscription expires",
            self.expiry_seconds.clone(),
        );
        r.register(
            "subscription_renewals",
            "Subscription renewals (PATCH) that succeeded",
            self.renewals.clone(),
        );
        r.register(
            "subscription_failures",
            "Failed subscription operations, by reason",
            self.failures.clone(),
        );
        r.register(
            "subscriptions_unhealthy",
            "Desired subscriptions missing or expiring within the renew margin",
            self.unhealthy.clone(),
        );
        r.register(
            "subscriptions_last_reconcile_timestamp_seconds",
            "Unix time of the last reconcile round that completed without an error",
            self.last_reconcile.clone(),
        );
    }

    pub fn renewed(&self, name: &str) {
        self.renewals
            .get_or_create(&vec![("subscription", name.to_string())])
            .inc();
    }

    pub fn failed(&self, name: &str, reason: &str) {
        self.failures
            .get_or_create(&vec![
                ("subscription", name.to_string()),
                ("reason", reason.to_string()),
            ])
            .inc();
    }

    pub fn set_expiry(&self, name: &str, seconds: f64) {
        self.expiry_seconds
            .get_or_create(&vec![("subscription", name.to_string())])
            .set(seconds);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("graphbridge"),
            received: Counter::default(),
            accepted: Counter::default(),
            rejected: Family::default(),
            published: Family::default(),
            unavailable: Family::default(),
            ack_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            publish_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            in_flight: Gauge::default(),
            keys_loaded: Gauge::default(),
            key_reload_failures: Counter::default(),
            spool_depth_items: Gauge::default(),
            spool_depth_bytes: Gauge::default(),
            spool_oldest_age: Gauge::default(),
            spool_appended: Counter::default(),
            spool_drained: Counter::default(),
            spool_full: Counter::default(),
            spool_discarded_bytes: Counter::default(),
            spool_unreadable: Counter::default(),
            subscriptions: SubscriptionMetrics::default(),
            backfill: BackfillMetrics::default(),
            verdicts: VerdictMetrics::default(),
            eventhubs_events: Family::default(),
        };
        m.registry.register(
            "received",
            "Notification items received",
            m.received.clone(),
        );
        m.registry.register(
            "accepted",
            "Items durably accepted as events",
            m.accepted.clone(),
        );
        m.registry.register(
            "rejected",
            "Items or requests rejected, by reason",
            m.rejected.clone(),
        );
        m.registry.register(
            "published",
            "Records published, by sink",
            m.published.clone(),
        );
        m.registry.register(
            "unavailable",
            "Batches answered 503, by reason",
            m.unavailable.clone(),
        );
        m.registry.register(
            "ack_latency_seconds",
            "Time to answer a batch",
            m.ack_latency.clone(),
        );
        m.registry.register(
            "publish_latency_seconds",
            "Time for a sink to accept a batch",
            m.publish_latency.clone(),
        );
        m.registry
            .register("in_flight", "Batches in progress", m.in_flight.clone());
        m.registry
            .register("keys_loaded", "Private keys loaded", m.keys_loaded.clone());
        m.registry.register(
            "key_reload_failures",
            "Keys directory reloads that failed",
            m.key_reload_failures.clone(),
        );
        let r = &mut m.registry;
        r.register(
            "spool_depth_items",
            "Items spooled and not yet published",
            m.spool_depth_items.clone(),
        );
        r.register(
            "spool_depth_bytes",
            "Bytes of spooled batches not yet published",
            m.spool_depth_bytes.clone(),
        );
        r.register(
            "spool_oldest_age_seconds",
            "Age of the oldest spooled batch",
            m.spool_oldest_age.clone(),
        );
        r.register(
            "spool_appended_items",
            "Items appended to the spool",
            m.spool_appended.clone(),
        );
        r.register(
            "spool_drained_items",
            "Items drained from the spool to the sink",
            m.spool_drained.clone(),
        );
        r.register(
            "spool_full",
            "Batches refused with 503 because the spool was full",
            m.spool_full.clone(),
        );
        r.register(
            "spool_discarded_bytes",
            "Bytes of torn, never acknowledged records cut off at start",
            m.spool_discarded_bytes.clone(),
        );
        r.register(
            "spool_unreadable",
            "Acknowledged spooled batches that could not be read back",
            m.spool_unreadable.clone(),
        );
        m.subscriptions.register(&mut m.registry);
        m.backfill.register(&mut m.registry);
        m.verdicts.register(&mut m.registry);
        m.registry.register(
            "eventhubs_events",
            "Events read from Event Hubs, by outcome",
            m.eventhubs_events.clone(),
        );
        m
    }
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn reject(&self, reason: &str) {
        self.rejected
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc();
    }

    /// A batch answered 503 for `reason` (`BatchError::unavailable_reason`).
    pub fn unavailable(&self, reason: &str) {
        self.unavailable
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc();
    }

    pub fn eventhubs_event(&self, outcome: &str) {
        self.eventhubs_events
            .get_or_create(&vec![("outcome", outcome.to_string())])
            .inc();
    }

    pub fn published(&self, sink: &str, n: u64) {
        self.published
            .get_or_create(&vec![("sink", sink.to_string())])
            .inc_by(n);
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

/// Holds one unit of a gauge until dropped. A request handler's future is dropped, not run to
/// the end, when its client disconnects; an `inc` paired with a later `dec` would then leak.
#[must_use = "the unit is released when the guard is dropped"]
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    pub fn hold(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::ansi;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(ansi(true, None));
        assert!(!ansi(false, None), "a file or pipe gets no escape codes");
        assert!(!ansi(true, Some("1".into())), "NO_COLOR turns colour off");
        assert!(ansi(true, Some("".into())), "an empty NO_COLOR is unset");
    }
}
