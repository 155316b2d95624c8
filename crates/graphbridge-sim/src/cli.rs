//! `graphbridge simulate`: arguments and the run from start to report.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args as ClapArgs, ValueEnum};

use super::issuer::Issuer;
use super::report::{ProcessUsage, Report};
use super::run::{run, RetryPolicy, RunOptions};
use super::verify::{verify, Target};
use super::workload::{Workload, WorkloadConfig};
use graphbridge_core::config::Config;
use graphbridge_core::crypto::encrypt::Recipient;
use graphbridge_core::crypto::keyring::certificate_der;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum VerifyKind {
    File,
    Kafka,
    Nats,
}

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Bridge base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: String,
    /// The certificate Graph encrypts for (PEM or DER): `<id>.crt` from `keys generate`.
    #[arg(long)]
    pub cert: PathBuf,
    /// Its encryptionCertificateId.
    #[arg(long)]
    pub cert_id: String,
    /// The subscription's clientState.
    #[arg(long, env = "GRAPHBRIDGE_SIM_CLIENT_STATE", hide_env_values = true)]
    pub client_state: String,
    /// Number of notification items to send.
    #[arg(long)]
    pub count: Option<u64>,
    /// Or: seconds to run.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Items per second (0 = as fast as the concurrency allows).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Items per POST.
    #[arg(long, default_value_t = 20)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 3)]
    pub tenants: usize,
    #[arg(long, default_value_t = 20)]
    pub teams: usize,
    #[arg(long, default_value_t = 50)]
    pub chats: usize,
    /// Fraction of bad items (wrong clientState, tampered signature, unknown certificate id).
    #[arg(long, default_value_t = 0.0)]
    pub bad_fraction: f64,
    /// Reuse one wrapped key for all items (measures the bridge without RSA work).
    #[arg(long)]
    pub reuse_key: bool,
    /// Build every batch before sending any (needs --count): while the load runs the
    /// simulator then only sends, leaving the cores to the bridge. For capacity measurements.
    #[arg(long, requires = "count")]
    pub pregenerate: bool,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// First retry backoff in milliseconds (doubles per attempt; Graph-like).
    #[arg(long, default_value_t = 1000)]
    pub retry_base_ms: u64,
    /// Give an item up after retrying this long (Graph: 4 hours).
    #[arg(long, default_value_t = 14_400)]
    pub give_up_s: u64,
    /// Read back the bridge's output (named by --config's sink section) and check it.
    #[arg(long, value_enum)]
    pub verify: Option<VerifyKind>,
    /// Our app id, the audience of the validation tokens (the bridge's graph.app_ids).
    #[arg(long, default_value = DEFAULT_APP_ID)]
    pub app_id: String,
    /// Where to serve the token issuer's OpenID metadata and JWKS (the bridge's
    /// graph.validation_tokens.openid_config_url is http://ADDR/.well-known/openid-configuration).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub issuer_listen: String,
    /// Keep the token signing key in this file so successive runs sign with the same key.
    #[arg(long)]
    pub issuer_key: Option<PathBuf>,
    /// Send no validation tokens (for bridges with graph.validation_tokens.required = false).
    #[arg(long)]
    pub no_tokens: bool,
    /// The bridge's pid, for its CPU seconds and peak RSS.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Act as Graph failing to deliver: never send this fraction of the good notifications,
    /// then POST a `missed` lifecycle notification for the subscription (backfill's test).
    #[arg(long, default_value_t = 0.0)]
    pub drop_fraction: f64,
    /// Fraction of new messages whose text carries a test payment card number (what a DLP
    /// service flags; see examples/dlp_service.rs).
    #[arg(long, default_value_t = 0.0)]
    pub sensitive_fraction: f64,
    /// Deliver as Graph does to Azure Event Hubs: write each collection as one event to the hub
    /// named by --config's [eventhubs] (brokers, topic, properties) instead of POSTing to --target.
    #[cfg(feature = "kafka")]
    #[arg(long, requires = "count")]
    pub to_hub: bool,
}

/// The app id the simulator's tokens are addressed to unless --app-id says otherwise.
pub const DEFAULT_APP_ID: &str = "5a9e7c1d-0b3f-4e2a-9c6d-7f8e9a0b1c2d";

impl Args {
    /// Whether the bridge reads what was sent after the simulator's part is done (a hub).
    fn waits_for_the_bridge(&self) -> bool {
        #[cfg(feature = "kafka")]
        return self.to_hub;
        #[cfg(not(feature = "kafka"))]
        return false;
    }

    pub fn options(&self, issuer: Option<Arc<Issuer>>) -> RunOptions {
        RunOptions {
            target: self.target.trim_end_matches('/').to_string(),
            count: self.count,
            duration: self.duration.map(Duration::from_secs_f64),
            rate: self.rate,
            concurrency: self.concurrency,
            batch_size: self.batch_size.max(1),
            request_timeout: Duration::from_secs(15),
            retry: RetryPolicy {
                base: Duration::from_millis(self.retry_base_ms),
                max: Duration::from_secs(60),
                give_up_after: Duration::from_secs(self.give_up_s),
            },
            issuer,
            stop: None,
            pregenerate: self.pregenerate,
            drop_fraction: self.drop_fraction.clamp(0.0, 1.0),
            graph: None,
        }
    }

    pub fn workload(&self) -> anyhow::Result<Workload> {
        let bytes = std::fs::read(&self.cert)
            .with_context(|| format!("reading {}", self.cert.display()))?;
        let der = certificate_der(&bytes).map_err(anyhow::Error::msg)?;
        let recipient =
            Recipient::from_certificate(&self.cert_id, &der).map_err(anyhow::Error::msg)?;
        Ok(Workload::new(
            WorkloadConfig {
                tenants: self.tenants,
                teams: self.teams,
                chats: self.chats,
                bad_fraction: self.bad_fraction.clamp(0.0, 1.0),
                seed: self.seed,
                subscription_id: format!("00000000-5157-4000-8000-{:012x}", self.seed),
                client_state: self.client_state.clone(),
                reuse_key: self.reuse_key,
                sensitive_fraction: self.sensitive_fraction.clamp(0.0, 1.0),
            },
            recipient,
        ))
    }
}

/// A producer for the configured hub (`[eventhubs]`: its brokers and properties; the
/// connection string as Event Hubs' Kafka endpoint takes it).
#[cfg(feature = "kafka")]
fn hub(cfg: &Config) -> anyhow::Result<super::run::Hub> {
    let h = &cfg.eventhubs;
    let cc = graphbridge_core::sink::kafka::KafkaSink::eventhubs_config(h, &[]);
    Ok(super::run::Hub {
        producer: cc.create().context("hub producer")?,
        topic: h.topic.clone(),
    })
}

pub fn verify_target(kind: VerifyKind, cfg: &Config) -> Target {
    match kind {
        VerifyKind::File => Target::File(cfg.sink.file.path.clone()),
        VerifyKind::Kafka => Target::Kafka(cfg.sink.kafka.clone()),
        VerifyKind::Nats => Target::Nats(cfg.sink.nats.clone()),
    }
}

/// Runs the simulation and prints the report; returns whether the run was good.
pub async fn main(args: Args, config: Option<&Path>) -> anyhow::Result<bool> {
    let target = match args.verify {
        Some(kind) => Some(verify_target(kind, &Config::load(config)?)),
        None => None,
    };
    let issuer = if args.no_tokens {
        None
    } else {
        let issuer = Arc::new(Issuer::new(&args.app_id, args.issuer_key.as_deref())?);
        let listener = tokio::net::TcpListener::bind(&args.issuer_listen)
            .await
            .with_context(|| format!("binding the token issuer on {}", args.issuer_listen))?;
        eprintln!("token issuer: {}", issuer.serve(listener)?);
        Some(issuer)
    };
    let before = args.pid.and_then(ProcessUsage::read);
    let started = std::time::Instant::now();
    // Ctrl-C ends the load early: batches in flight finish, then the report (and --verify)
    // covers what was sent.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: finishing the batches in flight");
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let opts = RunOptions {
        stop: Some(stop),
        ..args.options(issuer)
    };
    #[cfg(feature = "kafka")]
    let mut outcomes = if args.to_hub {
        let hub = hub(&Config::load(config)?)?;
        super::run::run_hub(opts, args.workload()?, &hub).await?
    } else {
        run(opts, args.workload()?).await?
    };
    #[cfg(not(feature = "kafka"))]
    let mut outcomes = run(opts, args.workload()?).await?;
    let usage = || {
        args.pid
            .and_then(ProcessUsage::read)
            .map(|after| after.since(before.as_ref()))
    };
    let mut bridge = usage();
    let verification = match &target {
        Some(t) => {
            // A webhook's 2xx means published, unless the bridge spooled the batch: that is
            // published when the spool drains. An event in a hub is read by the bridge later.
            // In those two cases the check is repeated until it passes (bounded).
            let later = args.waits_for_the_bridge() || outcomes.spooled_items > 0;
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            loop {
                let v = verify(t, &outcomes.acked, &outcomes.may_repeat).await?;
                if v.passed || !later || std::time::Instant::now() >= deadline {
                    break Some(v);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        None => None,
    };
    if args.waits_for_the_bridge() {
        // The bridge reads the hub after the writes: its work (CPU and wall-clock time) lasts
        // until the check passed, so that is what the throughput figures count.
        bridge = usage();
        outcomes.elapsed = started.elapsed();
    }
    let report = Report::new(&outcomes, bridge, verification);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(report.ok())
}
