//! Configuration layers, every shipped config file, and the CLI verbs that need no server.

use std::process::Command;

use graphbridge_core::config::{Config, SinkKind};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_graphbridge"))
}

#[test]
fn every_config_file_in_the_repo_parses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load(Some(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(
        n >= 3,
        "expected the default and example configs, found {n}"
    );
}

#[test]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature
fn environment_overrides_files_and_unknown_keys_are_named() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "gb.toml",
            "[sink]\nkind = \"nats\"\n[graph]\nclient_state = \"a\"\n",
        )?;
        jail.set_env("GRAPHBRIDGE_SINK__KIND", "kafka");
        jail.set_env("GRAPHBRIDGE_SERVER__LISTEN", "127.0.0.1:18080");
        jail.set_env("GRAPHBRIDGE_TEST_KAFKA", "ignored:1");
        // The simulator's own option, read by clap, is not a configuration key.
        jail.set_env("GRAPHBRIDGE_SIM_CLIENT_STATE", "ignored");
        let cfg = Config::load(Some(std::path::Path::new("gb.toml"))).expect("loads");
        assert_eq!(cfg.sink.kind, SinkKind::Kafka);
        assert_eq!(cfg.server.listen.to_string(), "127.0.0.1:18080");
        assert_eq!(cfg.client_states().unwrap()[0].expose(), "a");

        jail.set_env("GRAPHBRIDGE_SINK__KAFKA__BROKERZ", "x");
        let err = Config::load(Some(std::path::Path::new("gb.toml")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("brokerz"), "{err}");
        Ok(())
    });
}

#[test]
fn config_check_prints_redacted_config_and_fails_on_unknown_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "[graph]\nclient_state = [\"very-secret-state\"]\napp_ids = [\"5a9e7c1d-0b3f-4e2a-9c6d-7f8e9a0b1c2d\"]\nkeys_dir = {:?}\n[sink.kafka.properties]\n\"sasl.password\" = \"hunter2\"\n",
            dir.path().join("keys")
        ),
    )
    .unwrap();
    let out = bin()
        .args(["config", "check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("<redacted>")
            && !stdout.contains("very-secret-state")
            && !stdout.contains("hunter2")
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nlisten = \"0.0.0.0:1\"\nlistne = 3\n").unwrap();
    let out = bin()
        .args(["config", "check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("listne"));

    let out = bin()
        .args(["serve", "--config"])
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

#[test]
fn keys_generate_writes_a_usable_key_and_certificate() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["keys", "generate", "--id", "k-2026", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("{name} in {stdout}"))
            .to_string()
    };
    let cert = base64::engine::general_purpose::STANDARD
        .decode(field("encryptionCertificate"))
        .unwrap();
    let ring = graphbridge_core::crypto::keyring::Keyring::load_dir(dir.path(), None).unwrap();
    let key = ring.get("k-2026").unwrap();
    assert_eq!(key.bits(), 2048);
    assert_eq!(
        key.thumbprint().unwrap(),
        field("encryptionCertificateThumbprint")
    );
    // Graph encrypts with the printed certificate; the key in the directory opens it.
    let content = graphbridge_core::crypto::encrypt::Recipient::from_certificate("k-2026", &cert)
        .unwrap()
        .encrypt(b"{}");
    assert_eq!(
        graphbridge_core::crypto::decrypt::decrypt(&ring, &content).unwrap(),
        b"{}"
    );
    // Never overwrites an existing key.
    let again = bin()
        .args(["keys", "generate", "--id", "k-2026", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!again.status.success());
}

#[test]
fn demo_runs_and_reports_success() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["demo", "--dir"])
        .arg(dir.path().join("demo"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("demo ok"), "{stdout}");
    assert!(stdout.contains("signature_mismatch"), "{stdout}");
}

/// Runs the demo with stderr on a pipe, as a container runtime or `2> file` has it.
fn demo_log(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["demo", "--dir"])
        .arg(dir.path().join("demo"))
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

#[test]
fn pretty_logs_have_no_colour_codes_off_a_terminal() {
    let log = demo_log(&[]);
    assert!(log.contains("key loaded"), "the demo logs: {log}");
    assert!(!log.contains('\x1b'), "escape codes in a pipe: {log:?}");
}

#[test]
fn demo_logs_as_the_telemetry_settings_say() {
    let log = demo_log(&[("GRAPHBRIDGE_TELEMETRY__LOG_FORMAT", "json")]);
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 2, "{log}");
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("fields").is_some(),
            "{line}"
        );
    }
}

/// Broker secrets from files (mounted Secrets; a file wins over a value) or the environment (as
/// a Kubernetes secretKeyRef sets them), never in `config check`'s output. The environment is
/// given to the binary only: set in this process, it would leak into the binaries that
/// concurrent tests start.
#[test]
fn broker_secrets_come_from_files_or_the_environment_and_are_redacted() {
    use graphbridge_core::config::Secret;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kafka-password");
    std::fs::write(&file, "kafka-from-file\n").unwrap();
    let mut cfg = Config::defaults();
    cfg.sink.kafka.sasl_password = Some(Secret::new("kafka-inline"));
    cfg.sink.kafka.sasl_password_file = Some(file);
    cfg.read_secret_files().unwrap();
    assert_eq!(
        cfg.sink.kafka.sasl_password.as_ref().unwrap().expose(),
        "kafka-from-file"
    );
    assert!(!cfg.to_redacted_toml().contains("from-file"));
    cfg.sink.nats.password_file = Some(dir.path().join("missing"));
    let err = cfg.read_secret_files().unwrap_err().to_string();
    assert!(err.contains("missing"), "{err}");

    std::fs::create_dir(dir.path().join("keys")).unwrap();
    let path = dir.path().join("gb.toml");
    std::fs::write(
        &path,
        format!(
            "[graph]\nclient_state = \"state\"\nkeys_dir = {:?}\n[graph.validation_tokens]\nrequired = false\n",
            dir.path().join("keys")
        ),
    )
    .unwrap();
    let out = bin()
        .args(["config", "check", "--config"])
        .arg(&path)
        .env("GRAPHBRIDGE_SINK__KAFKA__SASL_PASSWORD", "kafka-from-env")
        .env("GRAPHBRIDGE_SINK__NATS__PASSWORD", "nats-from-env")
        .env(
            "GRAPHBRIDGE_EVENTHUBS__CONNECTION_STRING",
            "Endpoint=sb://from-env",
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("from-env"), "{stdout}");
    for key in ["sasl_password", "password", "connection_string"] {
        assert!(
            stdout.contains(&format!("{key} = \"<redacted>\"")),
            "{key} set from the environment: {stdout}"
        );
    }
}

/// `config check --subscriptions` checks what `subscriptions run` needs: a config that `serve`
/// accepts but that has no subscription items fails it (the controller would exit at once).
#[test]
fn config_check_for_the_controller_needs_items_and_a_credential() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    let base = format!(
        "[graph]\nclient_state = \"state\"\nkeys_dir = {:?}\n[graph.validation_tokens]\nrequired = false\n",
        dir.path().join("keys")
    );
    let check = |toml: &str, args: &[&str]| {
        let path = dir.path().join(format!("{}.toml", args.len()));
        std::fs::write(&path, toml).unwrap();
        bin()
            .args(["config", "check", "--config"])
            .arg(&path)
            .args(args)
            .output()
            .unwrap()
    };
    assert!(check(&base, &[]).status.success(), "serve's checks pass");
    let out = check(&base, &["--subscriptions"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no [[subscriptions.items]]"), "{stderr}");

    let with_item = format!(
        "{base}[graph.auth]\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret_file = {:?}\n[[subscriptions.items]]\nname = \"a\"\nresource = \"/chats/getAllMessages\"\nnotification_url = \"https://bridge.example.com/notifications\"\ninclude_resource_data = false\n",
        dir.path().join("no-such-secret")
    );
    let out = check(&with_item, &["--subscriptions"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no-such-secret"),
        "the unreadable credential is named: {stderr}"
    );
}
