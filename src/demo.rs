//! `graphbridge demo`: the newcomer's first command. Runs `serve` in-process on a free local
//! port with a fresh key and the file sink, talks to it exactly as Graph would (handshake,
//! encrypted notifications, one tampered item, a lifecycle event) and prints what came out.
//! No broker, no network beyond loopback.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use graphbridge_core::config::{Config, OneOrMany, Secret, SinkKind};
use graphbridge_core::crypto::{certgen, encrypt::Recipient};
use graphbridge_core::graph::envelope::ChangeType;
use graphbridge_core::graph::resource::Conversation;
use graphbridge_core::server::AppState;
use graphbridge_sim::generate::{lifecycle_item, tamper, MessageSpec};
use graphbridge_sim::issuer::Issuer;
use graphbridge_sim::run::handshake;

const CLIENT_STATE: &str = "demo-client-state";
const TENANT: &str = "8afd02d6-ebdd-4270-a515-c749898ea5c5";
const SUBSCRIPTION: &str = "7f105c7d-2dc5-4530-97cd-4e7ae6534c07";
const CERT_ID: &str = "demo-key";

/// The messages the demo sends: a channel message, a reply, a chat message, an edit and a delete.
pub fn demo_messages(now_ms: i64) -> Vec<MessageSpec> {
    let channel = Conversation::Channel {
        team_id: "79852646-8963-4d32-95f1-e0c5237d37fa".into(),
        channel_id: "19:etTE40ziboDEfQ1v0B96_nCVjGUsZ77LQa5KRb0cukQ1@thread.tacv2".into(),
    };
    let chat = Conversation::Chat {
        chat_id: "19:8ea0e38b-efb3-4757-924a-5f94061cf8c2_97f62344-57dc-409c-88ad-c4af14158ff5@unq.gbl.spaces".into(),
    };
    let spec = |conversation: &Conversation,
                id: i64,
                reply_to: Option<i64>,
                change,
                html: &str,
                at: i64| MessageSpec {
        reply_to_id: reply_to.map(|r| r.to_string()),
        modified_ms: at,
        ..MessageSpec::new(TENANT, conversation.clone(), id, change, html)
    };
    let (m1, m2, m3) = (now_ms - 60_000, now_ms - 30_000, now_ms - 20_000);
    vec![
        spec(
            &channel,
            m1,
            None,
            ChangeType::Created,
            "<p>Release 2.3 is out 🎉</p>",
            m1,
        ),
        spec(
            &channel,
            m2,
            Some(m1),
            ChangeType::Created,
            "<p>Great work &amp; thanks!</p>",
            m2,
        ),
        spec(
            &chat,
            m3,
            None,
            ChangeType::Created,
            "<p>héllo — lunch at 12?</p>",
            m3,
        ),
        spec(
            &chat,
            m3,
            None,
            ChangeType::Updated,
            "<p>héllo — lunch at 12:30?</p>",
            now_ms - 10_000,
        ),
        spec(&chat, m3, None, ChangeType::Deleted, "", now_ms - 5_000),
    ]
}

/// Default configuration with the file sink in `dir` and a key for `CERT_ID` there.
/// Our app id as the demo's validation tokens name it.
const APP_ID: &str = graphbridge_sim::cli::DEFAULT_APP_ID;

fn demo_config(dir: &Path, openid_config_url: String) -> anyhow::Result<Config> {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys)?;
    let key = certgen::generate(CERT_ID, 2048).map_err(anyhow::Error::msg)?;
    std::fs::write(
        keys.join(format!("{CERT_ID}.pem")),
        key.pkcs8_pem.as_bytes(),
    )?;
    std::fs::write(keys.join(format!("{CERT_ID}.crt")), &key.certificate_pem)?;
    let mut cfg: Config = Config::defaults();
    cfg.graph.client_state = OneOrMany::One(Secret::new(CLIENT_STATE));
    cfg.graph.keys_dir = keys;
    cfg.graph.app_ids = vec![APP_ID.into()];
    cfg.graph.validation_tokens.openid_config_url = openid_config_url;
    cfg.sink.kind = SinkKind::File;
    cfg.sink.file.path = dir.join("events.jsonl");
    cfg.sink.file.deadletter_path = dir.join("deadletter.jsonl");
    Ok(cfg)
}

async fn post(client: &reqwest::Client, url: String, body: &Value) -> anyhow::Result<(u16, Value)> {
    let resp = client.post(url).json(body).send().await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Runs the demo; output goes to `dir` (created), or a fresh temp directory.
pub async fn run(dir: Option<PathBuf>) -> anyhow::Result<()> {
    let dir = dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("graphbridge-demo-{}", std::process::id()))
    });
    if dir.join("events.jsonl").exists() {
        bail!(
            "{} already holds demo output; pass another --dir",
            dir.display()
        );
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Microsoft's token service, played by the simulator's issuer on a local port.
    let issuer = Arc::new(Issuer::new(APP_ID, None)?);
    let openid = issuer.serve(TcpListener::bind("127.0.0.1:0").await?)?;
    let cfg = demo_config(&dir, openid)?;
    let state: Arc<AppState> = crate::app::build(&cfg).await?;
    let public = TcpListener::bind("127.0.0.1:0").await?;
    let admin = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", public.local_addr()?);
    let admin_base = format!("http://{}", admin.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::app::run(state, public, admin, async {
        let _ = stopped.await;
    }));
    println!(
        "graphbridge demo: serving on {base} (admin {admin_base}), file sink in {}",
        dir.display()
    );

    let client = graphbridge_core::http::client();
    handshake(&client, &base).await?;
    println!("  handshake       ok on /notifications and /lifecycle (URL-decoded token echoed as text/plain)");
    // Ready once the token signing keys are fetched (the first fetch starts with the server).
    let mut ready = reqwest::StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..50 {
        ready = client
            .get(format!("{admin_base}/readyz"))
            .send()
            .await?
            .status();
        if ready.is_success() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    println!("  readiness       {ready} (keys loaded, token signing keys fetched, sink usable)");

    // What Graph knows: the certificate we would give it in the subscription.
    let cert = graphbridge_core::crypto::keyring::certificate_der(&std::fs::read(
        cfg.graph.keys_dir.join(format!("{CERT_ID}.crt")),
    )?)
    .map_err(anyhow::Error::msg)?;
    let recipient = Recipient::from_certificate(CERT_ID, &cert).map_err(anyhow::Error::msg)?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let messages = demo_messages(now_ms);
    let mut items: Vec<Value> = messages
        .iter()
        .map(|m| m.notification(SUBSCRIPTION, CLIENT_STATE, &recipient))
        .collect();
    let mut tampered = messages[0].clone();
    tampered.message_id = (now_ms - 1_000).to_string();
    let mut bad = tampered.notification(SUBSCRIPTION, CLIENT_STATE, &recipient);
    tamper(&mut bad["encryptedContent"]);
    items.push(bad);

    let (status, summary) = post(
        &client,
        format!("{base}/notifications"),
        &json!({"value": items, "validationTokens": [issuer.token(TENANT, true, now_ms / 1000)]}),
    )
    .await?;
    println!(
        "  notifications   {} items -> HTTP {status} {summary}",
        items.len()
    );
    let lifecycle = json!({"value": [lifecycle_item(SUBSCRIPTION, TENANT, CLIENT_STATE, "reauthorizationRequired", "2030-01-01T00:00:00Z")]});
    let (lstatus, lsummary) = post(&client, format!("{base}/lifecycle"), &lifecycle).await?;
    println!("  lifecycle       1 item  -> HTTP {lstatus} {lsummary}");

    let _ = stop.send(());
    server.await??;

    let events = read_lines(&cfg.sink.file.path);
    let dead = read_lines(&cfg.sink.file.deadletter_path);
    println!(
        "\npublished {} events to {}:",
        events.len(),
        cfg.sink.file.path.display()
    );
    for e in &events {
        let text = e["data"]["body"]["plain_text"].as_str().unwrap_or("");
        println!(
            "  {:<36} {:<28} {}",
            e["type"].as_str().unwrap_or(""),
            e["subject"].as_str().unwrap_or(""),
            text
        );
    }
    println!(
        "rejected {} items to {}:",
        dead.len(),
        cfg.sink.file.deadletter_path.display()
    );
    for d in &dead {
        println!(
            "  {:<36} {}",
            d["reason"].as_str().unwrap_or(""),
            d["detail"].as_str().unwrap_or("")
        );
    }
    if status != 202 || lstatus != 202 || events.len() != messages.len() + 1 || dead.len() != 1 {
        bail!("demo did not produce the expected output");
    }
    println!(
        "\ndemo ok: every valid notification became one event, the tampered one was dead-lettered"
    );
    Ok(())
}
