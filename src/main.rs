//! CLI dispatch only.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use graphbridge_core::config::Config;

/// mimalloc instead of glibc's malloc: ~1 µs less per notification, mostly where the crypto
/// workers free what the reactor allocated (docs/performance.md). C libraries (librdkafka,
/// aws-lc) keep glibc's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "graphbridge",
    version,
    about = "Microsoft Graph Teams message notifications → Kafka / NATS"
)]
struct Cli {
    /// Configuration file (default: config/graphbridge.toml when present).
    #[arg(long, global = true, env = "GRAPHBRIDGE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the ingress: Graph's notification and lifecycle URLs plus the admin port, or
    /// (`--source eventhubs`) Graph's notifications from an Azure event hub.
    Serve {
        #[arg(long, value_enum, default_value_t = Source::Webhook)]
        source: Source,
    },
    #[cfg(feature = "sim")]
    /// Run serve in-process with a fresh key and the file sink, drive it like Graph, print the result.
    Demo {
        /// Directory for keys and output (default: a new temp directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    #[cfg(feature = "sim")]
    /// Act as Microsoft Graph toward a running bridge: handshake, encrypted notifications,
    /// retries; a load generator and end-to-end checker (--verify).
    Simulate(Box<graphbridge_sim::cli::Args>),
    #[cfg(feature = "kafka")]
    /// Re-publish a range of a Kafka topic (by offsets or times) to a topic, NATS or a file;
    /// rebuild events from the raw archive (--reprocess); reset a consumer group's offsets.
    Replay(Box<graphbridge::replay::cli::Args>),
    /// Key management.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    #[cfg(feature = "kafka")]
    /// Fill the gaps Graph leaves in notifications from its message APIs, under the event ids
    /// the notifications would have had (`run`: the worker; `fill`: one window now).
    Backfill(Box<graphbridge::backfill::cli::Args>),
    #[cfg(feature = "kafka")]
    /// Apply DLP verdicts to Graph (the message's policyViolation): `run` the worker on the
    /// verdict topic, or `apply` one now.
    Verdicts {
        #[command(subcommand)]
        command: graphbridge::verdicts::cli::Command,
    },
    /// Keep the configured Graph subscriptions alive (create, renew, recreate, delete).
    Subscriptions {
        #[command(subcommand)]
        command: graphbridge::subscriptions::cli::Command,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

/// Where `serve` gets Graph's notifications.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Source {
    /// HTTPS POSTs to /notifications and /lifecycle.
    Webhook,
    /// An Azure event hub (`[eventhubs]`), through its Kafka endpoint.
    Eventhubs,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make an RSA key and self-signed certificate: DIR/ID.pem and DIR/ID.crt.
    Generate {
        /// The encryptionCertificateId to use in subscriptions.
        #[arg(long)]
        id: String,
        #[arg(long, default_value = "keys")]
        out: PathBuf,
        #[arg(long, default_value_t = 2048)]
        bits: usize,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the configuration and print the effective values, secrets redacted.
    Check {
        /// Also check everything `subscriptions run` needs: at least one item, every item
        /// valid (certificates readable), the app's credential readable. No network.
        #[arg(long)]
        subscriptions: bool,
    },
}

fn keys_generate(id: &str, out: &std::path::Path, bits: usize) -> anyhow::Result<()> {
    if id.is_empty() || id.len() > 128 || id.contains(['/', '\\']) || id.starts_with('.') {
        anyhow::bail!("--id must be 1 to 128 characters, without path separators or a leading dot");
    }
    let key = graphbridge_core::crypto::certgen::generate(id, bits).map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let key_path = out.join(format!("{id}.pem"));
    if key_path.exists() {
        anyhow::bail!("{} exists; refusing to overwrite a key", key_path.display());
    }
    write_private(&key_path, key.pkcs8_pem.as_bytes())?;
    std::fs::write(out.join(format!("{id}.crt")), &key.certificate_pem)?;
    eprintln!(
        "wrote {} and {}",
        key_path.display(),
        out.join(format!("{id}.crt")).display()
    );
    println!("encryptionCertificateId: {id}");
    println!("encryptionCertificateThumbprint: {}", key.thumbprint());
    println!("encryptionCertificate: {}", key.encryption_certificate());
    Ok(())
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(bytes)?;
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Making a key needs no configuration (there may be none yet) and logs nothing.
    if let Command::Keys {
        command: KeysCommand::Generate { id, out, bits },
    } = &cli.command
    {
        keys_generate(id, out, *bits)?;
        return Ok(ExitCode::SUCCESS);
    }
    // Every verb logs as `[telemetry]` says (a replay Job logs JSON like the server does), so
    // the configuration is read first; the verbs that need it read it again for their own part.
    let cfg = Config::load(cli.config.as_deref())?;
    let _traces = graphbridge_core::telemetry::init_tracing(&cfg.telemetry)?;
    match cli.command {
        Command::Serve {
            source: Source::Webhook,
        } => graphbridge::app::serve(&cfg).await?,
        #[cfg(feature = "kafka")]
        Command::Serve {
            source: Source::Eventhubs,
        } => graphbridge::app::serve_eventhubs(&cfg).await?,
        #[cfg(not(feature = "kafka"))]
        Command::Serve {
            source: Source::Eventhubs,
        } => anyhow::bail!("this build has no Event Hubs source (cargo feature `kafka`)"),
        #[cfg(feature = "sim")]
        Command::Demo { dir } => graphbridge::demo::run(dir).await?,
        #[cfg(feature = "sim")]
        Command::Simulate(args) => {
            if !graphbridge_sim::cli::main(*args, cli.config.as_deref()).await? {
                anyhow::bail!("simulation found problems (see the report)");
            }
        }
        #[cfg(feature = "kafka")]
        Command::Replay(args) => {
            let ending = graphbridge::replay::cli::main(*args, cli.config.as_deref()).await?;
            return Ok(ExitCode::from(ending.exit_code()));
        }
        #[cfg(feature = "kafka")]
        Command::Backfill(args) => {
            return Ok(ExitCode::from(
                graphbridge::backfill::cli::main(*args, &cfg).await?,
            ))
        }
        #[cfg(feature = "kafka")]
        Command::Verdicts { command } => {
            return Ok(ExitCode::from(
                graphbridge::verdicts::cli::main(command, &cfg).await?,
            ))
        }
        Command::Keys { .. } => unreachable!("handled above"),
        Command::Subscriptions { command } => {
            graphbridge::subscriptions::cli::main(command, &cfg).await?
        }
        Command::Config {
            command: ConfigCommand::Check { subscriptions },
        } => {
            print!("{}", cfg.to_redacted_toml());
            cfg.validate_for_serve()?;
            if subscriptions {
                let (items, _) = graphbridge::subscriptions::check(&cfg)?;
                eprintln!(
                    "subscriptions run: {} item(s), credential readable",
                    items.len()
                );
            } else if !cfg.subscriptions.items.is_empty() {
                graphbridge::subscriptions::desired::from_config(&cfg)?;
            }
            eprintln!("configuration ok");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[tokio::main]
async fn main() -> ExitCode {
    // One TLS crypto provider (aws-lc-rs) for every client and server in the process.
    graphbridge_core::http::install_crypto_provider();
    match run(Cli::parse()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
