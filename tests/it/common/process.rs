//! `graphbridge serve` as a separate process, for what only a process can show: `kill -9`,
//! SIGTERM and the exit code.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use graphbridge_core::config::{Config, OneOrMany};

pub struct Bridge {
    child: Child,
    pub base: String,
    pub admin: String,
    pub log: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes `cfg` as a TOML file the binary reads. Secrets serialize redacted, so the client
/// states go to a `client_state_file` instead.
pub fn write_config(cfg: &Config, dir: &Path) -> PathBuf {
    let mut cfg = cfg.clone();
    let states: Vec<String> = cfg
        .client_states()
        .unwrap()
        .iter()
        .map(|s| s.expose().to_string())
        .collect();
    let states_file = dir.join("client-states");
    std::fs::write(&states_file, states.join("\n")).unwrap();
    cfg.graph.client_state = OneOrMany::Many(vec![]);
    cfg.graph.client_state_file = Some(states_file);
    // Broker secrets read from files stay in their files (the process reads them again).
    if cfg.sink.kafka.sasl_password_file.is_some() {
        cfg.sink.kafka.sasl_password = None;
    }
    if cfg.sink.nats.password_file.is_some() {
        cfg.sink.nats.password = None;
    }
    if cfg.eventhubs.connection_string_file.is_some() {
        cfg.eventhubs.connection_string = None;
    }
    let path = dir.join(format!("graphbridge-{}.toml", super::unique("cfg")));
    std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
    path
}

impl Bridge {
    /// Starts `serve` on free loopback ports and waits until `/healthz` answers.
    pub async fn start(cfg: &Config, dir: &Path) -> Bridge {
        Self::start_args(cfg, dir, &["serve"]).await
    }

    /// [`Bridge::start`] with other arguments after `--config` (e.g. `serve --source eventhubs`).
    pub async fn start_args(cfg: &Config, dir: &Path, args: &[&str]) -> Bridge {
        let mut cfg = cfg.clone();
        cfg.server.listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        cfg.server.admin_listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let path = write_config(&cfg, dir);
        let log = dir.join(format!("{}.log", super::unique("serve")));
        let child = Command::new(env!("CARGO_BIN_EXE_graphbridge"))
            .arg("--config")
            .arg(&path)
            .args(args)
            .env("RUST_LOG", "info,rdkafka=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("graphbridge serve starts");
        let bridge = Bridge {
            child,
            base: format!("http://{}", cfg.server.listen),
            admin: format!("http://{}", cfg.server.admin_listen),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = graphbridge_core::http::client()
                .get(format!("{}/healthz", bridge.admin))
                .send()
                .await
            {
                if r.status() == 200 {
                    return bridge;
                }
            }
            assert!(
                Instant::now() < deadline,
                "serve did not come up: {}",
                bridge.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal by name (`TERM`, `KILL`).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit, at most `bound`.
    pub async fn wait_exit(&mut self, bound: Duration) -> ExitStatus {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "serve did not exit within {bound:?}: {}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls a metric on the admin port until `done` holds, at most `bound`.
    pub async fn wait_metric(&self, name: &str, bound: Duration, done: impl Fn(f64) -> bool) {
        super::wait_metric(&self.admin, name, bound, done).await
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
