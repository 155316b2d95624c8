//! The subscription controller against the local Graph stand-in, with a real `serve` as the
//! notification endpoint: create after the handshake, renewal under a fast clock, 404 and
//! vanished subscriptions recreated, 409 adopted, ownership, throttling, lifecycle events
//! through Kafka and in-process (file sink), credentials.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::secure::{self, per_listener, Kafka, Nats};
use common::*;
use graphbridge::subscriptions::controller::{Action, Controller, ControllerError};
use graphbridge::subscriptions::{self, Listeners};
use graphbridge_core::config::subscriptions::{HumanDuration, Model, SubscriptionItem};
use graphbridge_core::config::{Config, Secret};
use graphbridge_core::telemetry::Metrics;
use graphbridge_event::v1::LifecycleEvent;
use graphbridge_graph_api::clock::{Clock, FastClock, SystemClock};
use graphbridge_sim::graph_api::{Fault, GraphStandIn, StandInOptions};
use serde_json::{json, Value};
use tokio::net::TcpListener;

const TENANT: &str = "8afd02d6-ebdd-4270-a515-c749898ea5c5";

async fn standin(opts: StandInOptions) -> (GraphStandIn, String) {
    let g = GraphStandIn::new(opts);
    let base = g.serve(TcpListener::bind("127.0.0.1:0").await.unwrap());
    (g, base)
}

fn item(name: &str, resource: &str, bridge: &str, lifecycle: bool) -> SubscriptionItem {
    SubscriptionItem {
        name: name.into(),
        resource: resource.into(),
        model: None,
        change_types: vec!["created".into(), "updated".into(), "deleted".into()],
        tenant_id: None,
        notification_url: format!("{bridge}/notifications"),
        lifecycle_url: lifecycle.then(|| format!("{bridge}/lifecycle")),
        certificate_id: Some(SYNTH_ID.into()),
        lifetime: None,
        include_resource_data: true,
    }
}

/// Points the controller part of `cfg` at the stand-in, with the given items.
fn controller_config(cfg: &mut Config, graph: &str, items: Vec<SubscriptionItem>) {
    cfg.graph.api_base = format!("{graph}/v1.0");
    cfg.graph.auth.authority = graph.to_string();
    cfg.graph.auth.tenant_id = Some(TENANT.into());
    cfg.graph.auth.client_id = Some(StandInOptions::default().client_id);
    cfg.graph.auth.client_secret = Some(Secret::new(StandInOptions::default().client_secret));
    cfg.subscriptions.items = items;
}

fn controller(cfg: &Config, clock: Arc<dyn Clock>) -> (Controller, Arc<Metrics>) {
    let metrics = Metrics::new();
    let c = subscriptions::build(cfg, clock, metrics.clone(), None).expect("controller builds");
    (c, metrics)
}

fn created(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Created { id, .. } => Some(id.clone()),
            _ => None,
        })
        .collect()
}

/// Polls `cond` every 20 ms until it holds, at most `bound`.
async fn until(bound: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while !cond() {
        assert!(Instant::now() < deadline, "not within {bound:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn lifecycle_event(sub_id: &str, kind: &str) -> LifecycleEvent {
    common::lifecycle_event(TENANT, sub_id, kind)
}

fn label_value(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
}

#[tokio::test]
async fn fresh_start_creates_every_desired_subscription_after_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    let serve = Running::start(&cfg).await;
    let (graph, base) = standin(StandInOptions::default()).await;
    let mut channel = item("channels", "/teams/getAllMessages", &serve.base, true);
    channel.model = Some(Model::A);
    let mut chats = item("chats", "chats/getAllMessages", &serve.base, false);
    chats.model = Some(Model::B);
    chats.lifetime = Some(HumanDuration::parse("3d").unwrap());
    controller_config(&mut cfg, &base, vec![channel, chats]);
    let (mut c, metrics) = controller(&cfg, Arc::new(SystemClock));

    let report = c.reconcile().await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(created(&report.actions).len(), 2, "{:?}", report.actions);
    // Graph's handshake on both URLs of the first, the notification URL of the second.
    assert_eq!(graph.handshakes(), 3);
    let subs = graph.subscriptions();
    let now = chrono::Utc::now();
    let cert = base64::engine::general_purpose::STANDARD.encode(
        graphbridge_core::crypto::keyring::certificate_der(&read("synthetic/certificate.pem"))
            .unwrap(),
    );
    let chat = subs
        .iter()
        .find(|s| s.resource == "/chats/getAllMessages?model=B")
        .unwrap();
    let chan = subs
        .iter()
        .find(|s| s.resource == "/teams/getAllMessages?model=A")
        .unwrap();
    for s in [chat, chan] {
        assert_eq!(s.change_type, "created,updated,deleted");
        assert_eq!(s.client_state.as_deref(), Some(REAL_CLIENT_STATE));
        assert_eq!(s.encryption_certificate.as_deref(), Some(cert.as_str()));
        assert_eq!(s.encryption_certificate_id.as_deref(), Some(SYNTH_ID));
        assert_eq!(s.notification_url, format!("{}/notifications", serve.base));
    }
    // Without a lifecycle URL Graph allows an hour; with one, three days.
    let hours = |s: &graphbridge_graph_api::subscriptions::Subscription| {
        (s.expiration_date_time - now).num_minutes() as f64 / 60.0
    };
    assert!((0.9..=1.0).contains(&hours(chat)), "{}", hours(chat));
    assert!((71.0..=72.0).contains(&hours(chan)), "{}", hours(chan));
    assert_eq!(chat.lifecycle_notification_url, None);

    let text = metrics.render();
    assert_eq!(
        metric_value(&text, "graphbridge_subscriptions_unhealthy"),
        Some(0.0)
    );
    let left = label_value(
        &text,
        "graphbridge_subscription_expiry_seconds{subscription=\"channels\"}",
    )
    .unwrap();
    assert!(left > 70.0 * 3600.0, "{left}");

    // A second round changes nothing: every action is idempotent.
    let again = c.reconcile().await;
    assert!(
        again.actions.is_empty() && again.errors.is_empty(),
        "{again:?}"
    );
    assert_eq!(graph.subscriptions().len(), 2);
    serve.shutdown().await;
}

#[tokio::test]
async fn event_hubs_subscriptions_are_created_without_a_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    let (graph, base) = standin(StandInOptions::default()).await;
    let hub = "EventHub:https://contoso.servicebus.windows.net/eventhubname/graph?tenantId=t1";
    let mut it = item("hub", "/teams/getAllMessages", "unused", false);
    it.notification_url = hub.into();
    it.lifecycle_url = Some(hub.into());
    controller_config(&mut cfg, &base, vec![it]);
    // On, to show it is skipped for Event Hubs URLs rather than off.
    cfg.subscriptions.preflight_handshake = true;
    let (mut c, _) = controller(&cfg, Arc::new(SystemClock));
    let report = c.reconcile().await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(created(&report.actions).len(), 1);
    assert_eq!(graph.handshakes(), 0, "Graph makes no handshake with a hub");
    let subs = graph.subscriptions();
    assert_eq!(subs[0].notification_url, hub);
    assert_eq!(subs[0].lifecycle_notification_url.as_deref(), Some(hub));
}

#[tokio::test]
async fn an_endpoint_that_fails_the_handshake_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    let (graph, base) = standin(StandInOptions::default()).await;
    // Nothing listens there.
    let dead = one_item_at_a_dead_endpoint(&mut cfg, &base);
    let (mut c, metrics) = controller(&cfg, Arc::new(SystemClock));
    let report = c.reconcile().await;
    let (_, e) = &report.errors[0];
    assert!(matches!(e, ControllerError::Handshake { .. }), "{e}");
    assert!(
        e.to_string().contains(&format!("{dead}/notifications")),
        "{e}"
    );
    assert_eq!(graph.count("POST", "/v1.0/subscriptions", 201), 0);

    // Without our own check Graph's 400 is reported with both URLs.
    cfg.subscriptions.preflight_handshake = false;
    let (mut c, _) = controller(&cfg, Arc::new(SystemClock));
    let report = c.reconcile().await;
    let (_, e) = &report.errors[0];
    assert!(matches!(e, ControllerError::Validation { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("{dead}/notifications")) && msg.contains("validation request failed"),
        "{msg}"
    );
    assert_eq!(graph.count("POST", "/v1.0/subscriptions", 400), 1);
    assert!(metrics.render().contains(
        "graphbridge_subscription_failures_total{subscription=\"x\",reason=\"handshake\"} 1"
    ));
    assert!(graph.subscriptions().is_empty());
}

#[tokio::test]
async fn renews_before_expiry_under_a_fast_clock() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    let serve = Running::start(&cfg).await;
    // 3000x: the 2 h lifetime lasts 2.4 s, Graph's 10 minutes 0.2 s.
    let clock: Arc<dyn Clock> = Arc::new(FastClock::new(3000));
    let (graph, base) = standin(StandInOptions {
        clock: clock.clone(),
        ..Default::default()
    })
    .await;
    let mut it = item("fast", "/teams/getAllMessages", &serve.base, true);
    it.lifetime = Some(HumanDuration::parse("2h").unwrap());
    controller_config(&mut cfg, &base, vec![it]);
    cfg.subscriptions.renew_margin = HumanDuration::parse("30m").unwrap();
    cfg.subscriptions.jitter = HumanDuration::parse("5m").unwrap();
    cfg.subscriptions.poll_interval = HumanDuration::parse("20m").unwrap();
    let (c, metrics) = controller(&cfg, clock.clone());
    let (_tx, rx) = subscriptions::lifecycle::channel();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(c.run(rx, stopped));

    until(Duration::from_secs(20), "three renewals", || {
        graph.count("PATCH", "/v1.0/subscriptions/", 200) >= 3
    })
    .await;
    let _ = stop.send(true);
    task.await.unwrap();
    assert!(
        graph.expired().is_empty(),
        "a subscription expired: {:?}",
        graph.expired()
    );
    assert_eq!(
        graph.count("POST", "/v1.0/subscriptions", 201),
        1,
        "renewed, never recreated"
    );
    let subs = graph.subscriptions();
    assert_eq!(subs.len(), 1);
    // Each renewal came well after the previous one (margin 30 m of a 2 h lifetime).
    let patches: Vec<Instant> = graph
        .log()
        .iter()
        .filter(|l| l.method == "PATCH")
        .map(|l| l.at)
        .collect();
    for w in patches.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(200),
            "{:?}",
            w[1] - w[0]
        );
    }
    let text = metrics.render();
    let renewals = label_value(
        &text,
        "graphbridge_subscription_renewals_total{subscription=\"fast\"}",
    )
    .unwrap();
    assert!(renewals >= 3.0, "{text}");
    serve.shutdown().await;
}

#[tokio::test]
async fn vanished_and_404_subscriptions_are_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    let serve = Running::start(&cfg).await;
    let (graph, base) = standin(StandInOptions::default()).await;
    controller_config(
        &mut cfg,
        &base,
        vec![item("a", "/chats/getAllMessages", &serve.base, true)],
    );
    let (mut c, metrics) = controller(&cfg, Arc::new(SystemClock));
    let first = created(&c.reconcile().await.actions);
    assert_eq!(first.len(), 1);

    // Gone without a word (expired elsewhere, deleted by an admin): the next round recreates.
    graph.drop_silently(&first[0]).unwrap();
    let report = c.reconcile().await;
    let second = created(&report.actions);
    assert_eq!(second.len(), 1);
    assert_ne!(second[0], first[0]);
    assert!(report
        .actions
        .iter()
        .any(|a| matches!(a, Action::ResyncPublished { .. })));

    // A renewal answered 404 recreates at once.
    graph.drop_silently(&second[0]).unwrap();
    let report = c
        .on_lifecycle(&lifecycle_event(&second[0], "reauthorizationRequired"))
        .await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(graph.count("PATCH", "/v1.0/subscriptions/", 404), 1);
    let third = created(&report.actions);
    assert_eq!(third.len(), 1);
    assert_eq!(graph.subscriptions()[0].id, third[0]);
    assert_eq!(c.subscription_id("a"), Some(third[0].as_str()));
    assert!(metrics.render().contains(
        "graphbridge_subscription_failures_total{subscription=\"a\",reason=\"not_found\"} 1"
    ));
    serve.shutdown().await;
}

#[tokio::test]
async fn a_409_adopts_what_another_replica_created_and_unwanted_ones_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    let serve = Running::start(&cfg).await;
    let (graph, base) = standin(StandInOptions::default()).await;
    controller_config(
        &mut cfg,
        &base,
        vec![item("a", "/teams/getAllMessages", &serve.base, true)],
    );
    let (mut one, _) = controller(&cfg, Arc::new(SystemClock));
    let id = created(&one.reconcile().await.actions).remove(0);

    // The second replica listed before the first created it: its create gets 409.
    graph.stale_lists(1);
    let (mut two, _) = controller(&cfg, Arc::new(SystemClock));
    let report = two.reconcile().await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(
        report.actions,
        vec![Action::Adopted {
            name: "a".into(),
            id: id.clone()
        }]
    );
    assert_eq!(graph.count("POST", "/v1.0/subscriptions", 409), 1);
    assert_eq!(graph.subscriptions().len(), 1);
    assert_eq!(two.subscription_id("a"), Some(id.as_str()));

    // Someone else's subscription (another notification URL) is never touched; ours that the
    // config no longer wants is deleted.
    let mut foreign = graph.get(&id).unwrap();
    foreign.resource = "/chats/getAllMessages".into();
    foreign.notification_url = "https://other.example/notifications".into();
    let foreign_id = graph.insert(TENANT, foreign);
    controller_config(
        &mut cfg,
        &base,
        vec![item(
            "b",
            "/teams/t1/channels/c1/messages",
            &serve.base,
            true,
        )],
    );
    let (mut three, _) = controller(&cfg, Arc::new(SystemClock));
    let report = three.reconcile().await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report
        .actions
        .iter()
        .any(|a| matches!(a, Action::Deleted { id: d, .. } if *d == id)));
    let left: Vec<String> = graph
        .subscriptions()
        .into_iter()
        .map(|s| s.resource)
        .collect();
    assert_eq!(
        left,
        vec!["/chats/getAllMessages", "/teams/t1/channels/c1/messages"]
    );
    assert!(graph.get(&foreign_id).is_some());
    serve.shutdown().await;
}

#[tokio::test]
async fn throttling_waits_for_retry_after_and_quota_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    let serve = Running::start(&cfg).await;
    let (graph, base) = standin(StandInOptions::default()).await;
    controller_config(
        &mut cfg,
        &base,
        vec![
            item("a", "/teams/getAllMessages", &serve.base, true),
            item("b", "/chats/getAllMessages", &serve.base, true),
        ],
    );
    cfg.subscriptions.poll_interval = HumanDuration::parse("1h").unwrap();
    graph.inject(Fault {
        method: Some(reqwest::Method::POST),
        status: 429,
        retry_after_s: Some(1),
    });
    let (c, metrics) = controller(&cfg, Arc::new(SystemClock));
    let (_tx, rx) = subscriptions::lifecycle::channel();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(c.run(rx, stopped));
    until(Duration::from_secs(15), "both created", || {
        graph.subscriptions().len() == 2
    })
    .await;
    let _ = stop.send(true);
    task.await.unwrap();

    let log = graph.log();
    let throttled = log
        .iter()
        .find(|l| l.status == 429)
        .expect("the 429 was served");
    let after: Vec<_> = log.iter().filter(|l| l.at > throttled.at).collect();
    assert!(!after.is_empty());
    // Nothing at all was sent to Graph until Retry-After had passed.
    for l in &after {
        assert!(
            l.at - throttled.at >= Duration::from_secs(1),
            "{l:?} {:?}",
            l.at - throttled.at
        );
    }
    assert!(metrics.render().contains("reason=\"throttled\"} 1"));

    // 403 (quota or missing permission) is its own reason, with a hint in the error.
    controller_config(
        &mut cfg,
        &base,
        vec![item("c", "/teams/t/channels/c/messages", &serve.base, true)],
    );
    graph.inject(Fault {
        method: Some(reqwest::Method::POST),
        status: 403,
        retry_after_s: None,
    });
    let (mut c, metrics) = controller(&cfg, Arc::new(SystemClock));
    let report = c.reconcile().await;
    let msg = report.errors[0].1.to_string();
    assert!(
        msg.contains("quota") && msg.contains("permissions"),
        "{msg}"
    );
    assert!(metrics.render().contains("reason=\"forbidden\"} 1"));
    serve.shutdown().await;
}

// The controller's lifecycle consumer and the serve that feeds it, on plaintext and secured
// listeners alike.
per_listener!(reauthorization_required_through_kafka_renews: plaintext => Kafka::Plaintext, sasl_ssl_scram => Kafka::Scram);
async fn reauthorization_required_through_kafka_renews(listener: Kafka) {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("subs");
    let mut cfg = secure::kafka(kafka::kafka_config(dir.path(), &prefix), listener);
    let serve = Running::start(&cfg).await;
    let (graph, base) = standin(StandInOptions::default()).await;
    controller_config(
        &mut cfg,
        &base,
        vec![item("k", "/teams/getAllMessages", &serve.base, true)],
    );
    cfg.subscriptions.poll_interval = HumanDuration::parse("1h").unwrap();
    cfg.subscriptions.consumer_group = unique("subs-group");
    // Make sure the lifecycle topic exists before the controller subscribes to it: a lifecycle
    // event for a subscription the controller does not manage (it must ignore it).
    let stray = graphbridge_sim::generate::lifecycle_item(
        "not-ours",
        TENANT,
        REAL_CLIENT_STATE,
        "reauthorizationRequired",
        "2030-01-01T00:00:00Z",
    );
    assert_eq!(
        serve
            .post_json("/lifecycle", &json!({"value": [stray]}))
            .await
            .status(),
        202
    );

    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_url = format!("http://{}", admin.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run_cfg = cfg.clone();
    let task = tokio::spawn(async move {
        subscriptions::run(
            &run_cfg,
            Arc::new(SystemClock),
            Listeners {
                public: None,
                admin,
            },
            stopped,
        )
        .await
    });
    until(Duration::from_secs(15), "created", || {
        graph.subscriptions().len() == 1
    })
    .await;
    let id = graph.subscriptions()[0].id.clone();
    assert_eq!(graph.count("PATCH", "/v1.0/subscriptions/", 200), 0);

    // Graph → serve /lifecycle → Kafka graph.lifecycle topic → controller → PATCH.
    assert_eq!(
        graph
            .send_lifecycle(&id, "reauthorizationRequired")
            .await
            .unwrap(),
        202
    );
    until(
        Duration::from_secs(40),
        "renewal after reauthorizationRequired",
        || graph.count("PATCH", &format!("/v1.0/subscriptions/{id}"), 200) == 1,
    )
    .await;
    let metrics = common::metrics_at(&admin_url).await;
    assert_eq!(
        label_value(
            &metrics,
            "graphbridge_subscription_renewals_total{subscription=\"k\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        graphbridge_core::http::client()
            .get(format!("{admin_url}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let _ = stop.send(true);
    task.await.unwrap().unwrap();
    assert_eq!(
        graph.subscriptions().len(),
        1,
        "the stray event changed nothing"
    );
    serve.shutdown().await;
}

#[tokio::test]
async fn file_sink_in_process_removed_recreates_and_resync_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    let (graph, base) = standin(StandInOptions::default()).await;
    let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bridge = format!("http://{}", public.local_addr().unwrap());
    controller_config(
        &mut cfg,
        &base,
        vec![item("f", "/chats/getAllMessages", &bridge, true)],
    );
    cfg.subscriptions.poll_interval = HumanDuration::parse("1h").unwrap();
    // Backfill runs in the same process: the chats of this user are read from the stand-in.
    let sender = "c0ffee00-1ebf-4be9-be48-19c602bf5194";
    cfg.backfill.users = vec![sender.into()];
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run_cfg = cfg.clone();
    let task = tokio::spawn(async move {
        let l = Listeners {
            public: Some(public),
            admin,
        };
        subscriptions::run(&run_cfg, Arc::new(SystemClock), l, stopped).await
    });
    until(Duration::from_secs(15), "created", || {
        graph.subscriptions().len() == 1
    })
    .await;
    let old = graph.subscriptions()[0].id.clone();
    let events_path = cfg.sink.file.path.clone();
    // Sent while the subscription is about to go away: no notification ever arrives for them.
    let sent_at = chrono::Utc::now().timestamp_millis();
    let unseen: Vec<graphbridge_sim::generate::MessageSpec> = (0..3)
        .map(|i| {
            let mut s = graphbridge_sim::generate::MessageSpec::new(
                TENANT,
                graphbridge_core::graph::resource::Conversation::Chat {
                    chat_id: "19:inproc@unq.gbl.spaces".into(),
                },
                sent_at + i,
                graphbridge_core::graph::envelope::ChangeType::Created,
                "<p>unseen</p>",
            );
            s.from_id = sender.into();
            graph.put_message(TENANT, s.chat_message());
            s
        })
        .collect();
    while chrono::Utc::now().timestamp_millis() <= sent_at + 3 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let resyncs = || -> Vec<Value> {
        jsonl(&events_path)
            .into_iter()
            .filter(|e| e["type"] == "graph.subscription.resync_required")
            .collect()
    };

    // subscriptionRemoved: recreated, and the gap published.
    assert_eq!(graph.remove(&old).await.unwrap(), 202);
    until(Duration::from_secs(15), "resync_required", || {
        resyncs().len() == 1
    })
    .await;
    let new = graph.subscriptions()[0].id.clone();
    assert_ne!(new, old);
    let ev = &resyncs()[0];
    assert_valid_event(ev);
    let d = &ev["data"];
    assert_eq!(d["subscription_id"], Value::from(old.as_str()));
    assert_eq!(d["tenant_id"], TENANT);
    assert_eq!(d["resync"]["cause"], "subscriptionRemoved");
    assert_eq!(
        d["resync"]["new_subscription_id"],
        Value::from(new.as_str())
    );
    assert_eq!(d["resync"]["resource"], "/chats/getAllMessages");
    assert_eq!(d["resync"]["subscription_name"], "f");
    // ... and the in-process backfill filled the gap into the same file.
    until(Duration::from_secs(15), "backfilled", || {
        let ids: Vec<String> = jsonl(&events_path)
            .into_iter()
            .filter(|e| e["graphbridgeorigin"] == "backfill")
            .map(|e| e["data"]["message_id"].as_str().unwrap_or("").to_string())
            .collect();
        unseen.iter().all(|s| ids.contains(&s.message_id))
    })
    .await;
    assert!(d["resync"]["from"].as_str().unwrap() <= d["resync"]["to"].as_str().unwrap());
    // Graph's own event was published too.
    assert!(jsonl(&events_path)
        .iter()
        .any(|e| e["type"] == "graph.subscription.subscriptionRemoved"));

    // Two reauthorizationRequired in a row, within a minute of each other: each is answered with
    // a PATCH at once. Graph's 10-minute rule is about mixing /reauthorize and PATCH, which the
    // controller never does.
    for _ in 0..2 {
        assert_eq!(
            graph
                .send_lifecycle(&new, "reauthorizationRequired")
                .await
                .unwrap(),
            202
        );
    }
    // missed → resync_required; handled after the two above, so they are done by then.
    assert_eq!(graph.send_lifecycle(&new, "missed").await.unwrap(), 202);
    until(Duration::from_secs(15), "second resync_required", || {
        resyncs().len() == 2
    })
    .await;
    let ev = &resyncs()[1];
    assert_valid_event(ev);
    assert_eq!(ev["data"]["resync"]["cause"], "missed");
    assert_eq!(ev["data"]["subscription_id"], Value::from(new.as_str()));
    assert_eq!(graph.count("PATCH", "/v1.0/subscriptions/", 200), 2);

    let _ = stop.send(true);
    task.await.unwrap().unwrap();
}

async fn cli(config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_graphbridge"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_wrong_client_secret_is_a_clear_error_and_the_cli_verbs_work() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    let serve = Running::start(&cfg).await;
    let (graph, base) = standin(StandInOptions::default()).await;
    controller_config(
        &mut cfg,
        &base,
        vec![item("s", "/teams/getAllMessages", &serve.base, true)],
    );
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, "not-the-secret\n").unwrap();
    cfg.graph.auth.client_secret = None;
    cfg.graph.auth.client_secret_file = Some(secret.clone());
    let path = common::process::write_config(&cfg, dir.path());
    let (ok, _, err) = cli(&path, &["subscriptions", "reconcile", "--once"]).await;
    assert!(!ok);
    for needle in [
        "invalid_client",
        "AADSTS7000215",
        &format!("{base}/{TENANT}/oauth2/v2.0/token"),
        &StandInOptions::default().client_id,
    ] {
        assert!(err.contains(needle), "{needle:?} missing in: {err}");
    }
    assert!(!err.contains("not-the-secret"), "{err}");
    assert!(graph.subscriptions().is_empty());

    // With the right secret (from the file, trailing newline ignored) one round creates it
    // and `list` shows it as the item.
    std::fs::write(
        &secret,
        format!("{}\n", StandInOptions::default().client_secret),
    )
    .unwrap();
    let (ok, out, err) = cli(&path, &["subscriptions", "reconcile", "--once"]).await;
    assert!(ok, "{out}{err}");
    let id = graph.subscriptions()[0].id.clone();
    assert!(out.contains(&format!("created  s: {id}")), "{out}");
    let (ok, out, err) = cli(&path, &["subscriptions", "list"]).await;
    assert!(ok, "{err}");
    assert!(out.contains(&id) && out.contains("item=s"), "{out}");
    serve.shutdown().await;
}

per_listener!(reauthorization_required_through_nats_renews: plaintext => Nats::Plaintext, tls_nkey => Nats::Nkey);
async fn reauthorization_required_through_nats_renews(listener: Nats) {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("subs").replace('-', "");
    let mut cfg = secure::nats(nats::nats_config(dir.path(), &prefix), listener);
    // serve creates the stream the controller's durable consumer reads.
    let serve = Running::start(&cfg).await;
    let (graph, base) = standin(StandInOptions::default()).await;
    controller_config(
        &mut cfg,
        &base,
        vec![item("n", "/chats/getAllMessages", &serve.base, true)],
    );
    cfg.subscriptions.poll_interval = HumanDuration::parse("1h").unwrap();
    cfg.subscriptions.consumer_group = unique("subs-durable");
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run_cfg = cfg.clone();
    let task = tokio::spawn(async move {
        let l = Listeners {
            public: None,
            admin,
        };
        subscriptions::run(&run_cfg, Arc::new(SystemClock), l, stopped).await
    });
    until(Duration::from_secs(15), "created", || {
        graph.subscriptions().len() == 1
    })
    .await;
    let id = graph.subscriptions()[0].id.clone();
    assert_eq!(
        graph
            .send_lifecycle(&id, "reauthorizationRequired")
            .await
            .unwrap(),
        202
    );
    until(Duration::from_secs(20), "renewal through NATS", || {
        graph.count("PATCH", &format!("/v1.0/subscriptions/{id}"), 200) == 1
    })
    .await;
    let _ = stop.send(true);
    task.await.unwrap().unwrap();
    serve.shutdown().await;
}

#[tokio::test]
async fn certificate_credentials_sign_a_client_assertion() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    let serve = Running::start(&cfg).await;
    let cert_der =
        graphbridge_core::crypto::keyring::certificate_der(&read("synthetic/certificate.pem"))
            .unwrap();
    let (graph, base) = standin(StandInOptions {
        certificate_der: Some(cert_der),
        ..Default::default()
    })
    .await;
    controller_config(
        &mut cfg,
        &base,
        vec![item("c", "/teams/getAllMessages", &serve.base, true)],
    );
    cfg.graph.auth.client_secret = None;
    cfg.graph.auth.certificate_file = Some(fixture("synthetic/certificate.pem"));
    cfg.graph.auth.private_key_file = Some(fixture("synthetic/private_key.pem"));
    let (mut c, _) = controller(&cfg, Arc::new(SystemClock));
    let report = c.reconcile().await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(graph.subscriptions().len(), 1);
    // The token is cached: a second round asks for none.
    c.reconcile().await;
    assert_eq!(graph.token_requests(), 1);

    // Another key than the registered certificate's is refused.
    cfg.graph.auth.private_key_file = Some(fixture("sdk-core-channel-reply/private_key.pem"));
    let (mut c, _) = controller(&cfg, Arc::new(SystemClock));
    let msg = c.reconcile().await.errors[0].1.to_string();
    assert!(msg.contains("invalid_client"), "{msg}");
    serve.shutdown().await;
}

#[tokio::test]
async fn a_failing_item_is_retried_after_a_backoff_not_in_a_busy_loop() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    let (graph, base) = standin(StandInOptions::default()).await;
    one_item_at_a_dead_endpoint(&mut cfg, &base);
    cfg.subscriptions.poll_interval = HumanDuration::parse("1h").unwrap();
    let (c, metrics) = controller(&cfg, Arc::new(SystemClock));
    let (_tx, rx) = subscriptions::lifecycle::channel();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(c.run(rx, stopped));
    until(Duration::from_secs(10), "first failure", || {
        metrics.render().contains("reason=\"handshake\"} 1")
    })
    .await;
    // An observation window, not synchronization: a busy loop would list hundreds of times.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop.send(true);
    task.await.unwrap();
    assert_eq!(graph.count("GET", "/v1.0/subscriptions", 200), 1);
    assert!(metrics.render().contains("reason=\"handshake\"} 1"));
    assert_eq!(
        metric_value(&metrics.render(), "graphbridge_subscriptions_unhealthy"),
        Some(1.0)
    );
}

/// A loopback URL nothing listens on (the port is released before use).
/// The controller configured with one subscription whose notification URL nobody answers;
/// returns that URL.
fn one_item_at_a_dead_endpoint(cfg: &mut Config, graph: &str) -> String {
    let dead = dead_url();
    controller_config(
        cfg,
        graph,
        vec![item("x", "/teams/getAllMessages", &dead, true)],
    );
    dead
}

fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

/// The resync signal backfill depends on: a `missed` window reaches back to when delivery was
/// last known good (the subscription's creation, or the previous `missed`), also after a
/// restart; and gaps of one subscription and cause that differ in their window have different
/// event ids (they share one `from` here and differ in `to`).
#[tokio::test]
async fn missed_windows_survive_a_restart_and_each_gap_has_its_own_id() {
    use graphbridge_core::sink::file::FileSink;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    let serve = Running::start(&cfg).await;
    let (_graph, base) = standin(StandInOptions::default()).await;
    controller_config(
        &mut cfg,
        &base,
        vec![item("m", "/chats/getAllMessages", &serve.base, true)],
    );
    cfg.subscriptions.state_file = Some(dir.path().join("subscriptions-state.json"));
    let build = |cfg: &Config| {
        let sink: Arc<dyn graphbridge_core::sink::Sink> =
            Arc::new(FileSink::open(&cfg.sink.file).unwrap());
        subscriptions::build(cfg, Arc::new(SystemClock), Metrics::new(), Some(sink)).unwrap()
    };
    let before_create = chrono::Utc::now();
    let mut first = build(&cfg);
    let id = created(&first.reconcile().await.actions).remove(0);
    drop(first);

    // A restarted controller adopts the subscription it finds listed.
    let mut c = build(&cfg);
    assert!(c.reconcile().await.errors.is_empty());
    let restarted = chrono::Utc::now();
    let windows: Vec<(String, String)> = {
        let mut w = Vec::new();
        for _ in 0..2 {
            let report = c.on_lifecycle(&lifecycle_event(&id, "missed")).await;
            for a in report.actions {
                if let Action::ResyncPublished { from, to, .. } = a {
                    w.push((from, to));
                }
            }
        }
        w
    };
    let parse = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap();
    let (from1, to1) = (parse(&windows[0].0), parse(&windows[0].1));
    // Back to the creation, not to when this process first saw the subscription.
    assert!(
        from1 >= before_create - chrono::Duration::seconds(1) && from1 < restarted,
        "the first window starts at the creation ({before_create}), not the restart ({restarted}): {windows:?}"
    );
    // The second starts where the first ended: that part was reported already.
    assert_eq!(parse(&windows[1].0), to1, "{windows:?}");

    let ids: Vec<String> = jsonl(&cfg.sink.file.path)
        .into_iter()
        .filter(|e| e["type"] == "graph.subscription.resync_required")
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1], "two gaps, two ids");
    serve.shutdown().await;
}

/// Readiness of `subscriptions run` follows the last clean reconcile round: red before the
/// first, red after a round with an error, green after a clean one, red again once that is
/// older than three poll intervals (a wedged or failing loop).
#[tokio::test]
async fn readiness_follows_the_last_clean_reconcile_round() {
    use graphbridge::subscriptions::ControllerHealth;
    use graphbridge_core::server::Health;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    let serve = Running::start(&cfg).await;
    // 600x: the 3-minute staleness limit (3 x 1 min) passes in 0.3 s.
    let clock: Arc<dyn Clock> = Arc::new(FastClock::new(600));
    let (graph, base) = standin(StandInOptions {
        clock: clock.clone(),
        ..Default::default()
    })
    .await;
    controller_config(
        &mut cfg,
        &base,
        vec![item("r", "/teams/getAllMessages", &serve.base, true)],
    );
    cfg.subscriptions.poll_interval = HumanDuration::parse("1m").unwrap();
    let (mut c, metrics) = controller(&cfg, clock.clone());
    let health = ControllerHealth {
        metrics: metrics.clone(),
        clock: clock.clone(),
        stale_after: subscriptions::stale_after(&cfg),
    };
    let gauge = "graphbridge_subscriptions_last_reconcile_timestamp_seconds";
    assert_eq!(
        health.ready().await,
        Err("no reconcile round has completed yet".into())
    );

    graph.inject(Fault {
        method: Some(reqwest::Method::POST),
        status: 403,
        retry_after_s: None,
    });
    assert!(!c.reconcile().await.errors.is_empty());
    assert!(health.ready().await.is_err(), "a round with an error");
    assert_eq!(metric_value(&metrics.render(), gauge), Some(0.0));

    // The retry after the 403's backoff: a clean round.
    let clean = loop {
        let report = c.reconcile().await;
        if report.errors.is_empty() && !report.actions.is_empty() {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(matches!(clean.actions[0], Action::Created { .. }));
    assert_eq!(health.ready().await, Ok(()));
    let at = metric_value(&metrics.render(), gauge).unwrap();
    assert!((clock.now().timestamp() as f64 - at).abs() < 120.0, "{at}");

    // No round since: stale after three poll intervals of the controller's clock.
    until(Duration::from_secs(5), "stale", || {
        clock.now().timestamp() as f64 - at > 180.0
    })
    .await;
    let why = health.ready().await.unwrap_err();
    assert!(
        why.starts_with("the last clean reconcile round was"),
        "{why}"
    );
    serve.shutdown().await;
}

/// Two controllers with the same configuration at once (a manual scale-up, a rollout's old and
/// new pod): they neither double-create nor fight. Each creates only after listing, a
/// create that loses the race gets Graph's 409 and adopts the winner's subscription, and
/// neither deletes what the other made (it is desired by both). Over many rounds and renewals
/// under a fast clock: one subscription per item, never deleted or recreated.
#[tokio::test]
async fn two_overlapping_controllers_neither_double_create_nor_fight() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    let serve = Running::start(&cfg).await;
    // 3000x: the 2 h lifetime lasts 2.4 s, a 1-minute poll 20 ms.
    let clock: Arc<dyn Clock> = Arc::new(FastClock::new(3000));
    let (graph, base) = standin(StandInOptions {
        clock: clock.clone(),
        ..Default::default()
    })
    .await;
    let mut items = vec![
        item("teams", "/teams/getAllMessages", &serve.base, true),
        item("chats", "/chats/getAllMessages", &serve.base, true),
    ];
    for it in &mut items {
        it.lifetime = Some(HumanDuration::parse("2h").unwrap());
    }
    controller_config(&mut cfg, &base, items);
    cfg.subscriptions.renew_margin = HumanDuration::parse("30m").unwrap();
    cfg.subscriptions.jitter = HumanDuration::parse("5m").unwrap();
    cfg.subscriptions.poll_interval = HumanDuration::parse("1m").unwrap();
    // Both list before either creates: the race a scale-up starts with.
    graph.stale_lists(2);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (c, _) = controller(&cfg, clock.clone());
        let (_tx, rx) = subscriptions::lifecycle::channel();
        let stopped = stopped.clone();
        tasks.push(tokio::spawn(async move {
            let _keep = _tx;
            c.run(rx, stopped).await
        }));
    }
    until(Duration::from_secs(30), "six renewals", || {
        graph.count("PATCH", "/v1.0/subscriptions/", 200) >= 6
    })
    .await;
    let _ = stop.send(true);
    for t in tasks {
        t.await.unwrap();
    }
    let subs = graph.subscriptions();
    let writes: Vec<String> = graph
        .log()
        .iter()
        .filter(|l| l.method != "GET" && l.method != "PATCH")
        .map(|l| format!("{} {} {}", l.method, l.path, l.status))
        .collect();
    assert_eq!(subs.len(), 2, "{subs:?}");
    assert_eq!(
        graph.count("POST", "/v1.0/subscriptions", 201),
        2,
        "each item created once: {writes:#?}"
    );
    assert!(
        graph.count("POST", "/v1.0/subscriptions", 409) >= 1,
        "the race happened: the loser adopted"
    );
    assert_eq!(graph.count("DELETE", "/v1.0/subscriptions/", 204), 0);
    assert!(graph.expired().is_empty(), "{:?}", graph.expired());
    serve.shutdown().await;
}
