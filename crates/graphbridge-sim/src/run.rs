//! Driving a bridge as Graph would: the validation handshake, then batches of encrypted
//! notifications at a rate, with Graph-like retries (exponential backoff, `Retry-After`), and
//! every item's final outcome recorded.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::issuer::Issuer;
use super::workload::{Expect, Item, Workload};

/// Contains characters that must be URL-encoded, as Graph's real tokens do.
pub const HANDSHAKE_TOKEN: &str = "Validation: Token+Sim &<b>not html</b>=ok ✓";

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// First backoff; doubles on every failed attempt.
    pub base: Duration,
    pub max: Duration,
    /// After this long an item is given up, as Graph does after 4 hours.
    pub give_up_after: Duration,
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Bridge base URL, e.g. `http://127.0.0.1:8080`.
    pub target: String,
    /// Stop after this many items…
    pub count: Option<u64>,
    /// …or after this long (whichever comes first; one of them is required).
    pub duration: Option<Duration>,
    /// Items per second; 0 sends as fast as the concurrency allows.
    pub rate: f64,
    pub concurrency: usize,
    pub batch_size: usize,
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    /// Signs one validation token per tenant of each batch, as Graph does (None: send none).
    pub issuer: Option<Arc<Issuer>>,
    /// Stops sending new batches once set (batches in flight still finish), for callers that
    /// end the load on an event rather than a count or a clock.
    pub stop: Option<Arc<AtomicBool>>,
    /// Build every batch (encryption, signatures, tokens) before the clock starts, so that
    /// while the load runs the simulator only sends: its own work then does not compete with
    /// the bridge for the cores. Needs a count.
    pub pregenerate: bool,
    /// Graph's failure to deliver: this fraction of the good notifications is never sent, and
    /// after the run a `missed` lifecycle notification goes to `{target}/lifecycle` for their
    /// subscription, as Graph sends one. The withheld ids are in [`Outcomes::dropped`].
    pub drop_fraction: f64,
    /// Every generated message is also put into this stand-in's message store, as Graph holds
    /// the messages it notifies about (what backfill reads).
    pub graph: Option<crate::graph_api::GraphStandIn>,
}

/// Everything the run observed.
#[derive(Debug, Default)]
pub struct Outcomes {
    pub items_sent: u64,
    pub batches: u64,
    pub requests: u64,
    pub retried_requests: u64,
    /// Expectations of the items the bridge acknowledged with 2xx.
    pub acked: Vec<Expect>,
    /// Items given up after retrying for `give_up_after`.
    pub failed_items: u64,
    /// Dead-letter reasons the bridge reported, counted.
    pub rejected: BTreeMap<String, u64>,
    /// Acknowledged items the bridge spooled (its sink could not confirm them in time).
    pub spooled_items: u64,
    /// Batches whose reported rejections differ from what the simulator planned.
    pub mismatched_batches: u64,
    /// Seconds of each acknowledged request (the attempt that got 2xx).
    pub ack_latencies: Vec<f64>,
    /// Event ids the bridge may rightly have published more than once: their batch was sent
    /// again after a non-2xx or a timeout (the first attempt may have reached the broker), or
    /// it was spooled after a direct publish that did not confirm in time.
    pub may_repeat: HashSet<String>,
    /// Event ids of the notifications withheld (`drop_fraction`): only backfill brings them.
    pub dropped: Vec<String>,
    pub elapsed: Duration,
}

/// Performs Graph's validation handshake on both URLs; fails loudly on a wrong answer.
pub async fn handshake(client: &reqwest::Client, target: &str) -> anyhow::Result<()> {
    for path in ["/notifications", "/lifecycle"] {
        let resp = client
            .post(format!("{target}{path}"))
            .query(&[("validationToken", HANDSHAKE_TOKEN)])
            .header("content-type", "text/plain")
            .send()
            .await
            .with_context(|| format!("handshake request to {target}{path}"))?;
        let status = resp.status();
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp.text().await?;
        if status != 200 || !ctype.starts_with("text/plain") || body != HANDSHAKE_TOKEN {
            bail!("handshake on {path} failed: Graph expects 200 text/plain with the URL-decoded token, got {status} {ctype:?} {body:?}");
        }
    }
    Ok(())
}

struct Shared {
    workload: Workload,
    /// Withheld notifications: (tenant, event id).
    dropped: Vec<(String, String)>,
    produced: u64,
    next_slot: Instant,
    outcomes: Outcomes,
    /// Batches built before the start (`pregenerate`), in sending order.
    ready: VecDeque<Batch>,
}

/// A batch as sent: the request body, and its items' expectations.
struct Batch {
    items: Vec<Item>,
    body: Vec<u8>,
}

impl Batch {
    fn new(mut items: Vec<Item>, issuer: Option<&Issuer>) -> Self {
        let body = collection(&items, issuer);
        // From here on only the expectations are needed; a pregenerated run holds many batches.
        for i in &mut items {
            i.json = Value::Null;
        }
        Batch { items, body }
    }
}

/// The notification collection Graph sends for `items`, in a POST body or as one Event Hubs
/// event: the items and one validation token per tenant (none without an issuer).
pub fn collection(items: &[Item], issuer: Option<&Issuer>) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "value": items.iter().map(|i| &i.json).collect::<Vec<_>>(),
        "validationTokens": tokens(issuer, items),
    }))
    .expect("json")
}

/// Whether Graph "loses" this item: a deterministic share of the good ones, by event id.
fn withheld(opts: &RunOptions, item: &Item) -> bool {
    match &item.expect {
        Expect::Event(id) if opts.drop_fraction > 0.0 => {
            let h = u64::from_str_radix(id.get(..16).unwrap_or("0"), 16).unwrap_or(0);
            (h as f64 / u64::MAX as f64) < opts.drop_fraction
        }
        _ => false,
    }
}

/// Stores the items' messages in the stand-in and takes out the withheld ones.
fn as_graph_would(
    opts: &RunOptions,
    items: Vec<Item>,
    dropped: &mut Vec<(String, String)>,
) -> Vec<Item> {
    if let Some(g) = &opts.graph {
        for i in &items {
            if let Some(m) = &i.message {
                g.put_message(&i.tenant_id, m.clone());
            }
        }
    }
    items
        .into_iter()
        .filter(|i| {
            let w = withheld(opts, i);
            if let (true, Expect::Event(id)) = (w, &i.expect) {
                dropped.push((i.tenant_id.clone(), id.clone()));
            }
            !w
        })
        .collect()
}

/// The size of the next batch, given the items produced so far.
fn next_batch_size(opts: &RunOptions, produced: u64) -> usize {
    let left = opts.count.map_or(u64::MAX, |c| c.saturating_sub(produced));
    left.min(opts.batch_size as u64) as usize
}

/// Unfinished batch: built already, or items still to be put into a body.
enum Next {
    Ready(Batch),
    Items(Vec<Item>),
}

enum Attempt {
    Accepted(Value, f64),
    Retry(Option<Duration>),
}

async fn attempt(client: &reqwest::Client, url: &str, body: &[u8], timeout: Duration) -> Attempt {
    let started = Instant::now();
    let sent = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .timeout(timeout)
        .send()
        .await;
    match sent {
        Ok(resp) if resp.status().is_success() => {
            let summary = resp.json().await.unwrap_or(Value::Null);
            Attempt::Accepted(summary, started.elapsed().as_secs_f64())
        }
        Ok(resp) => Attempt::Retry(
            resp.headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .map(Duration::from_secs),
        ),
        Err(_) => Attempt::Retry(None),
    }
}

fn record(o: &mut Outcomes, items: Vec<Item>, summary: &Value, latency: f64) {
    o.ack_latencies.push(latency);
    // A spooled batch is acknowledged before it is processed: its rejections are not known
    // yet, and the verifier checks its items in the sink later like any other's.
    if let Some(n) = summary["spooled"].as_u64().filter(|n| *n > 0) {
        o.spooled_items += n;
        o.may_repeat.extend(event_ids(&items));
        o.acked.extend(items.into_iter().map(|i| i.expect));
        return;
    }
    let reported: Vec<String> = summary["rejected"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let planned: Vec<&str> = items
        .iter()
        .filter_map(|i| match &i.expect {
            Expect::Rejected(reason, _) => Some(*reason),
            Expect::Event(_) => None,
        })
        .collect();
    if reported != planned {
        o.mismatched_batches += 1;
        tracing::warn!(
            ?reported,
            ?planned,
            "bridge rejected other items than planned"
        );
    }
    for r in reported {
        *o.rejected.entry(r).or_default() += 1;
    }
    o.acked.extend(items.into_iter().map(|i| i.expect));
}

fn event_ids(items: &[Item]) -> impl Iterator<Item = String> + '_ {
    items.iter().filter_map(|i| match &i.expect {
        Expect::Event(id) => Some(id.clone()),
        Expect::Rejected(..) => None,
    })
}

/// One token per distinct tenant of the batch (our single app id), alternating v1 and v2.
fn tokens(issuer: Option<&Issuer>, items: &[Item]) -> Vec<String> {
    let Some(issuer) = issuer else { return vec![] };
    let tenants: std::collections::BTreeSet<&str> =
        items.iter().map(|i| i.tenant_id.as_str()).collect();
    let now = chrono::Utc::now().timestamp();
    tenants
        .into_iter()
        .enumerate()
        .map(|(i, t)| issuer.token(t, i % 2 == 0, now))
        .collect()
}

async fn worker(
    shared: Arc<Mutex<Shared>>,
    opts: Arc<RunOptions>,
    client: reqwest::Client,
    deadline: Option<Instant>,
) {
    let url = format!("{}/notifications", opts.target);
    loop {
        let (next, slot) = {
            let mut s = shared.lock().expect("lock");
            let n = next_batch_size(&opts, s.produced);
            let stopped = opts
                .stop
                .as_ref()
                .is_some_and(|s| s.load(Ordering::Relaxed));
            if n == 0 || stopped || deadline.is_some_and(|d| Instant::now() >= d) {
                return;
            }
            s.produced += n as u64;
            let slot = s.next_slot;
            if opts.rate > 0.0 {
                s.next_slot =
                    slot.max(Instant::now()) + Duration::from_secs_f64(n as f64 / opts.rate);
            }
            let next = match s.ready.pop_front() {
                Some(batch) => Next::Ready(batch),
                None => {
                    let items = (0..n).map(|_| s.workload.next_item()).collect();
                    let mut dropped = std::mem::take(&mut s.dropped);
                    let kept = as_graph_would(&opts, items, &mut dropped);
                    s.dropped = dropped;
                    Next::Items(kept)
                }
            };
            (next, slot)
        };
        tokio::time::sleep_until(slot.into()).await;
        let Batch { items, body } = match next {
            Next::Ready(batch) => batch,
            Next::Items(items) => Batch::new(items, opts.issuer.as_deref()),
        };
        if items.is_empty() {
            continue; // every item of it withheld
        }

        let first = Instant::now();
        let mut backoff = opts.retry.base;
        let mut retries = 0;
        let outcome = loop {
            match attempt(&client, &url, &body, opts.request_timeout).await {
                Attempt::Accepted(summary, latency) => break Some((summary, latency)),
                Attempt::Retry(after) => {
                    if first.elapsed() >= opts.retry.give_up_after {
                        break None;
                    }
                    retries += 1;
                    tokio::time::sleep(after.unwrap_or(backoff).min(opts.retry.max)).await;
                    backoff = (backoff * 2).min(opts.retry.max);
                }
            }
        };
        let mut s = shared.lock().expect("lock");
        let o = &mut s.outcomes;
        o.batches += 1;
        o.items_sent += items.len() as u64;
        o.requests += 1 + retries;
        o.retried_requests += retries;
        if retries > 0 {
            o.may_repeat.extend(event_ids(&items));
        }
        match outcome {
            Some((summary, latency)) => record(o, items, &summary, latency),
            None => o.failed_items += items.len() as u64,
        }
    }
}

/// Every batch of a counted run, in the sizes the workers will take them (smaller by what is
/// withheld), and the withheld notifications.
type Pregenerated = (VecDeque<Batch>, Vec<(String, String)>);

fn pregenerate(opts: &RunOptions, workload: &mut Workload) -> anyhow::Result<Pregenerated> {
    if opts.count.is_none() {
        bail!("--pregenerate needs a --count");
    }
    let mut ready = VecDeque::new();
    let mut dropped = Vec::new();
    let mut produced = 0;
    loop {
        let n = next_batch_size(opts, produced);
        if n == 0 {
            return Ok((ready, dropped));
        }
        produced += n as u64;
        let items = (0..n).map(|_| workload.next_item()).collect();
        let kept = as_graph_would(opts, items, &mut dropped);
        ready.push_back(Batch::new(kept, opts.issuer.as_deref()));
    }
}

/// Runs the load: handshake, then batches until the count or duration is reached.
pub async fn run(opts: RunOptions, mut workload: Workload) -> anyhow::Result<Outcomes> {
    if opts.count.is_none() && opts.duration.is_none() {
        bail!("give a --count or a --duration");
    }
    let client = graphbridge_core::http::builder()
        .pool_max_idle_per_host(opts.concurrency)
        .build()?;
    handshake(&client, &opts.target).await?;
    // Seconds of encryption and signing: off the reactor, which also serves the token issuer.
    let (workload, (ready, dropped)) = if opts.pregenerate {
        let o = opts.clone();
        tokio::task::spawn_blocking(move || {
            pregenerate(&o, &mut workload).map(|ready| (workload, ready))
        })
        .await??
    } else {
        (workload, (VecDeque::new(), Vec::new()))
    };
    let (subscription, client_state) = {
        let (s, c) = workload.subscription();
        (s.to_string(), c.to_string())
    };
    let started = Instant::now();
    let deadline = opts.duration.map(|d| started + d);
    let shared = Arc::new(Mutex::new(Shared {
        workload,
        dropped,
        produced: 0,
        next_slot: started,
        outcomes: Outcomes::default(),
        ready,
    }));
    let opts = Arc::new(opts);
    let workers: Vec<_> = (0..opts.concurrency.max(1))
        .map(|_| {
            tokio::spawn(worker(
                shared.clone(),
                opts.clone(),
                client.clone(),
                deadline,
            ))
        })
        .collect();
    for w in workers {
        w.await?;
    }
    let mut s = Arc::try_unwrap(shared)
        .map_err(|_| anyhow::anyhow!("workers still hold the state"))?
        .into_inner()
        .expect("lock");
    s.outcomes.elapsed = started.elapsed();
    if !s.dropped.is_empty() {
        // Graph tells the lifecycle URL it missed some: once per tenant that lost any.
        let tenants: std::collections::BTreeSet<&str> =
            s.dropped.iter().map(|(t, _)| t.as_str()).collect();
        let expires = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
        for tenant in tenants {
            let item = crate::generate::lifecycle_item(
                &subscription,
                tenant,
                &client_state,
                "missed",
                &expires,
            );
            let resp = client
                .post(format!("{}/lifecycle", opts.target))
                .json(&json!({ "value": [item] }))
                .send()
                .await?;
            if !resp.status().is_success() {
                bail!("the bridge answered {} to missed", resp.status());
            }
        }
    }
    s.outcomes.dropped = s.dropped.into_iter().map(|(_, id)| id).collect();
    Ok(s.outcomes)
}

/// Where Graph writes when a subscription's notificationUrl is an event hub: a Kafka topic (the
/// hub through its Kafka endpoint).
#[cfg(feature = "kafka")]
pub struct Hub {
    pub producer: rdkafka::producer::FutureProducer,
    pub topic: String,
}

/// Graph delivering to Event Hubs: `opts.count` items in collections of `opts.batch_size`, one
/// event each (with validation tokens from `opts.issuer`), each awaited until the hub stored
/// it. A stored event counts as acknowledged: the bridge must publish or dead-letter every item.
#[cfg(feature = "kafka")]
pub async fn run_hub(
    opts: RunOptions,
    mut workload: Workload,
    hub: &Hub,
) -> anyhow::Result<Outcomes> {
    let Some(count) = opts.count else {
        bail!("writing to a hub needs a --count");
    };
    let started = Instant::now();
    let mut outcomes = Outcomes::default();
    let mut sent = 0u64;
    while sent < count {
        let n = (opts.batch_size as u64).min(count - sent) as usize;
        let items: Vec<Item> = (0..n).map(|_| workload.next_item()).collect();
        let body = collection(&items, opts.issuer.as_deref());
        let key = format!("event-{}", outcomes.batches);
        hub.producer
            .send(
                rdkafka::producer::FutureRecord::to(&hub.topic)
                    .key(&key)
                    .payload(&body),
                opts.request_timeout,
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("writing to the hub {}: {e}", hub.topic))?;
        sent += n as u64;
        outcomes.items_sent += n as u64;
        outcomes.batches += 1;
        outcomes.requests += 1;
        outcomes.acked.extend(items.into_iter().map(|i| i.expect));
    }
    outcomes.elapsed = started.elapsed();
    Ok(outcomes)
}
