//! `serve` end to end over real HTTP with the file sink: handshake, a mixed batch, bad input.

use crate::common;

use common::*;
use graphbridge_core::config::Config;
use graphbridge_core::graph::envelope::ChangeType;
use graphbridge_core::graph::resource::Conversation;
use graphbridge_sim::generate::{lifecycle_item, tamper, MessageSpec};
use serde_json::{json, Value};

fn chat_spec(id: i64, change: ChangeType) -> MessageSpec {
    MessageSpec {
        modified_ms: id + 5,
        ..MessageSpec::new(
            "9f4ebab6-520d-49c0-85cc-7b25c78d4a93",
            Conversation::Chat {
                chat_id: "19:aa_bb@unq.gbl.spaces".into(),
            },
            id,
            change,
            "<p>Hi <b>there</b> &amp; welcome ✓</p>",
        )
    }
}

fn item0(path: &str) -> Value {
    json(path)["value"][0].clone()
}

#[tokio::test]
async fn handshake_echoes_the_url_decoded_token_as_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Running::start(&test_config(dir.path())).await;
    for path in ["/notifications", "/lifecycle"] {
        // Encoded by hand: Graph sends %-escapes and '+' must survive as a literal plus.
        let url = format!(
            "{}{path}?validationToken=Validation%3A%20Token%2Bx%20%3Cb%3Ehi%3C%2Fb%3E%26y%3D1",
            srv.base
        );
        let resp = graphbridge_core::http::client()
            .post(url)
            .header("content-type", "text/plain")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        assert_eq!(
            resp.text().await.unwrap(),
            "Validation: Token+x <b>hi</b>&y=1"
        );
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn mixed_batch_yields_exactly_the_expected_events_and_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(dir.path());
    let srv = Running::start(&cfg).await;
    let recipient = synthetic_recipient();

    let real = item0("sdk-core-channel-reply/constructed_notification_envelope.json");
    let synth = item0("synthetic/chat_notification.json");
    let fresh = chat_spec(1_700_000_000_000, ChangeType::Created).notification(
        "sub-1",
        SYNTH_CLIENT_STATE,
        &recipient,
    );
    let mut wrong_state = synth.clone();
    wrong_state["clientState"] = json!("guessed-state");
    let mut tampered = chat_spec(1_700_000_000_100, ChangeType::Updated).notification(
        "sub-1",
        SYNTH_CLIENT_STATE,
        &recipient,
    );
    tamper(&mut tampered["encryptedContent"]);
    let mut unknown_cert = synth.clone();
    unknown_cert["encryptedContent"]["encryptionCertificateId"] = json!("retired-cert");
    let lifecycle = lifecycle_item(
        "sub-1",
        "t1",
        SYNTH_CLIENT_STATE,
        "subscriptionRemoved",
        "2030-01-01T00:00:00Z",
    );

    let batch = json!({"value": [real, wrong_state, synth, tampered, unknown_cert, fresh, lifecycle], "validationTokens": []});
    let resp = srv.post_json("/notifications", &batch).await;
    assert_eq!(resp.status(), 202);
    let summary: Value = resp.json().await.unwrap();
    assert_eq!(summary["events"], 3);
    assert_eq!(summary["lifecycle"], 1);
    assert_eq!(
        summary["rejected"],
        json!(["client_state", "signature_mismatch", "unknown_certificate"])
    );

    let events = jsonl(&cfg.sink.file.path);
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), e["subject"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("graph.teams.message.created", "messages/1625126194597"),
            ("graph.teams.message.created", "messages/1612289992105"),
            ("graph.teams.message.created", "messages/1700000000000"),
            (
                "graph.subscription.subscriptionRemoved",
                "subscriptions/sub-1"
            ),
        ]
    );
    for e in &events {
        assert_valid_event(e);
    }
    // The real RSA-4096 channel reply, normalized.
    let reply = &events[0]["data"];
    assert_eq!(
        reply["conversation"],
        json!({"kind": "channel", "team_id": "79852646-8963-4d32-95f1-e0c5237d37fa", "channel_id": "19:etTE40ziboDEfQ1v0B96_nCVjGUsZ77LQa5KRb0cukQ1@thread.tacv2"})
    );
    assert_eq!(reply["reply_to_id"], "1625067617497");
    assert_eq!(reply["body"]["plain_text"], "Hello World");
    assert_eq!(
        reply["from"],
        json!({"kind": "user", "id": "a660dbf8-1ebf-4be9-be48-19c602bf5194", "display_name": "MOD Administrator"})
    );
    assert_eq!(events[0]["source"], "/tenants/8afd02d6-ebdd-4270-a515-c749898ea5c5/teams/79852646-8963-4d32-95f1-e0c5237d37fa/channels/19:etTE40ziboDEfQ1v0B96_nCVjGUsZ77LQa5KRb0cukQ1@thread.tacv2");
    assert_eq!(
        events[1]["data"]["body"]["plain_text"],
        "héllo ✓ multi-byte UTF-8"
    );
    assert_eq!(
        events[2]["data"]["body"]["plain_text"],
        "Hi there & welcome ✓"
    );

    let dead = jsonl(&cfg.sink.file.deadletter_path);
    let reasons: Vec<&str> = dead.iter().map(|d| d["reason"].as_str().unwrap()).collect();
    assert_eq!(
        reasons,
        vec!["client_state", "signature_mismatch", "unknown_certificate"]
    );
    for d in &dead {
        // Still encrypted, secret redacted.
        assert!(d["item"]["encryptedContent"]["data"].is_string());
        assert_eq!(d["item"]["clientState"], "<redacted>");
    }
    let raw_dead = std::fs::read_to_string(&cfg.sink.file.deadletter_path).unwrap();
    assert!(!raw_dead.contains(SYNTH_CLIENT_STATE) && !raw_dead.contains("guessed-state"));

    // A Graph redelivery of the same batch yields the same message event ids. The lifecycle
    // notification in it carries no id of Graph's: each receipt is a signal of its own.
    let again = srv.post_json("/notifications", &batch).await;
    assert_eq!(again.status(), 202);
    let all = jsonl(&cfg.sink.file.path);
    let is_message = |e: &&Value| {
        e["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("graph.teams."))
    };
    let first: Vec<&Value> = all[..4]
        .iter()
        .filter(is_message)
        .map(|e| &e["id"])
        .collect();
    let second: Vec<&Value> = all[4..]
        .iter()
        .filter(is_message)
        .map(|e| &e["id"])
        .collect();
    assert_eq!(first.len(), 3);
    assert_eq!(first, second);
    let lifecycle: Vec<&Value> = all
        .iter()
        .filter(|e| !is_message(e))
        .map(|e| &e["id"])
        .collect();
    assert_eq!(lifecycle.len(), 2);
    assert_ne!(lifecycle[0], lifecycle[1]);

    let metrics = srv.metrics().await;
    assert!(
        metrics.contains("graphbridge_rejected_total{reason=\"signature_mismatch\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("graphbridge_accepted_total 8"),
        "{metrics}"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn edits_and_deletes_become_updated_and_deleted_events() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(dir.path());
    let srv = Running::start(&cfg).await;
    let r = synthetic_recipient();
    let items: Vec<Value> = [
        ChangeType::Created,
        ChangeType::Updated,
        ChangeType::Deleted,
    ]
    .iter()
    .enumerate()
    .map(|(i, c)| {
        let mut s = chat_spec(1_700_000_000_000, *c);
        s.modified_ms += i as i64 * 1000;
        s.notification("sub-2", SYNTH_CLIENT_STATE, &r)
    })
    .collect();
    // A delete without content: Graph may send only the resource.
    let mut bare_delete = chat_spec(1_700_000_009_999, ChangeType::Deleted).notification(
        "sub-2",
        SYNTH_CLIENT_STATE,
        &r,
    );
    bare_delete
        .as_object_mut()
        .unwrap()
        .remove("encryptedContent");
    let mut all = items.clone();
    all.push(bare_delete);
    assert_eq!(
        srv.post_json("/notifications", &json!({"value": all}))
            .await
            .status(),
        202
    );
    let events = jsonl(&cfg.sink.file.path);
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["data"]["change_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, vec!["created", "updated", "deleted", "deleted"]);
    let ids: std::collections::HashSet<&str> =
        events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 4, "distinct changes get distinct ids");
    assert!(events[2]["data"]["deleted_at"].is_string());
    assert_eq!(events[3]["data"]["body"], Value::Null);
    for e in &events {
        assert_valid_event(e);
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_classified_answers_and_nothing_reaches_the_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.server.max_body_bytes = 64 * 1024;
    let srv = Running::start(&cfg).await;
    let client = graphbridge_core::http::client();
    let url = format!("{}/notifications", srv.base);

    let resp = client
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = client
        .post(&url)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    let resp = client
        .post(&url)
        .header("content-type", "application/json")
        .body(vec![b' '; 65 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let resp = client
        .post(&url)
        .header("content-type", "application/json")
        .body(vec![0xff, 0xfe, b'{'])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // Item-level problems: each becomes a dead letter with its own reason.
    let r = synthetic_recipient();
    let good = chat_spec(1_700_000_000_000, ChangeType::Created);
    let mut bad_b64 = good.notification("s", SYNTH_CLIENT_STATE, &r);
    bad_b64["encryptedContent"]["dataKey"] = json!("@@not base64@@");
    let not_chat = good.notification_with(
        "s",
        SYNTH_CLIENT_STATE,
        &serde_json::to_value(r.encrypt(b"{\"hello\":1}")).unwrap(),
    );
    let mismatch = {
        let mut other = good.clone();
        other.message_id = "999".into();
        // Encrypt message 999 but claim it is 1700000000000: the HMAC does not cover the resource.
        good.notification_with(
            "s",
            SYNTH_CLIENT_STATE,
            &serde_json::to_value(r.encrypt(&serde_json::to_vec(&other.chat_message()).unwrap()))
                .unwrap(),
        )
    };
    let mut unsupported = good.notification("s", SYNTH_CLIENT_STATE, &r);
    unsupported["resource"] = json!("users('u1')/events('e1')");
    let missing_fields = json!({"changeType": "created"});
    let batch = json!({"value": [bad_b64, not_chat, mismatch, unsupported, missing_fields]});
    let resp = srv.post_json("/notifications", &batch).await;
    assert_eq!(resp.status(), 202);
    let summary: Value = resp.json().await.unwrap();
    assert_eq!(
        summary["rejected"],
        json!([
            "bad_base64",
            "not_chat_message",
            "resource_mismatch",
            "unsupported_resource",
            "malformed_item"
        ])
    );
    assert!(jsonl(&cfg.sink.file.path).is_empty());
    assert_eq!(jsonl(&cfg.sink.file.deadletter_path).len(), 5);

    // Still healthy afterwards.
    let health = graphbridge_core::http::client()
        .get(format!("{}/healthz", srv.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let metrics = srv.metrics().await;
    for reason in ["bad_json", "content_type", "bad_base64", "malformed_item"] {
        assert!(
            metrics.contains(&format!("reason=\"{reason}\"")),
            "{reason} missing in {metrics}"
        );
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn readiness_needs_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    let srv = Running::start(&cfg).await;
    assert_eq!(srv.admin_status("/readyz").await, 200);
    srv.shutdown().await;

    let empty = dir.path().join("empty-keys");
    std::fs::create_dir_all(&empty).unwrap();
    cfg.graph.keys_dir = empty;
    let srv = Running::start(&cfg).await;
    let resp = graphbridge_core::http::client()
        .get(format!("{}/readyz", srv.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.text().await.unwrap().contains("no keys"));
    srv.shutdown().await;
}

#[tokio::test]
async fn start_fails_clearly_on_missing_keys_dir_and_missing_client_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::defaults();
    cfg.graph.keys_dir = dir.path().join("nope");
    let err = graphbridge::app::build(&cfg)
        .await
        .err()
        .expect("must fail")
        .to_string();
    assert!(
        err.contains("graph.client_state") && err.contains("graph.keys_dir"),
        "{err}"
    );
}
