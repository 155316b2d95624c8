//! `graphbridge replay`: arguments, and the run from configuration to summary.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{ArgGroup, Args as ClapArgs, Parser, ValueEnum};

use super::filter::Filter;
use super::group;
use super::progress::Ending;
use super::range::{parse_time, Bound, OffsetSpec};
use super::run::{run, Options, TargetSpec};
use super::stop::Stop;
use graphbridge_core::config::Config;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ChangeTypeArg {
    Created,
    Updated,
    Deleted,
}

#[derive(Debug, Clone, ClapArgs)]
#[command(group(ArgGroup::new("target").args(["to_topic", "to_nats", "to_file"])))]
pub struct Args {
    /// Source topic (default: sink.kafka.raw_topic with --reprocess). Brokers and security
    /// properties come from the configuration's sink.kafka section.
    #[arg(long)]
    pub topic: Option<String>,
    /// Start offset (inclusive): one value for every partition, or `P:O,P:O` for only those
    /// partitions; `earliest` and `latest` are accepted. Default: earliest.
    #[arg(long, conflicts_with = "from_time")]
    pub from_offset: Option<OffsetSpec>,
    /// End offset (exclusive), same forms. Default: the end of the topic at the start.
    /// With --reset-group: the group's new position.
    #[arg(long, conflicts_with = "to_time")]
    pub to_offset: Option<OffsetSpec>,
    /// Start at the first record at or after this RFC 3339 time (Kafka offsetsForTimes).
    #[arg(long, value_parser = parse_time)]
    pub from_time: Option<chrono::DateTime<chrono::Utc>>,
    /// End before the first record at or after this RFC 3339 time. With --reset-group: the
    /// group's new position.
    #[arg(long, value_parser = parse_time)]
    pub to_time: Option<chrono::DateTime<chrono::Utc>>,
    /// Publish to this Kafka topic (same key, headers and timestamp).
    #[arg(long)]
    pub to_topic: Option<String>,
    /// Publish to the configured NATS (sink.nats: stream and subject templates), with
    /// Nats-Msg-Id = event id.
    #[arg(long)]
    pub to_nats: bool,
    /// Append the events to this file, one JSON per line.
    #[arg(long)]
    pub to_file: Option<PathBuf>,
    /// Rebuild events from the raw archive with the current code and configuration (clientState,
    /// keys directory, normalization); event ids stay the same.
    #[arg(long)]
    pub reprocess: bool,
    /// Only these tenants (repeatable, or comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub tenant: Vec<String>,
    /// Only these teams' channel messages.
    #[arg(long, value_delimiter = ',')]
    pub team: Vec<String>,
    /// Only these chats' messages (with --team: either).
    #[arg(long, value_delimiter = ',')]
    pub chat: Vec<String>,
    /// Only these change types.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub change_type: Vec<ChangeTypeArg>,
    /// Count what the same command would publish (and with --reset-group: show the offsets)
    /// without changing anything. With a target, the target is named but not touched.
    #[arg(long)]
    pub dry_run: bool,
    /// Source records per second at most.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Stop after reading this many records in range (prints where to resume).
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Instead of replaying: move this consumer group's committed offsets on --topic to
    /// --to-time or --to-offset. Refused while the group has members.
    #[arg(long, value_name = "GROUP", conflicts_with_all = ["from_offset", "from_time", "to_topic", "to_nats", "to_file", "reprocess", "max_messages", "rate"])]
    pub reset_group: Option<String>,
}

/// `replay` arguments from an argument list (tests, scripts): `["replay", "--topic", ...]`.
pub fn parse<I, T>(argv: I) -> Result<Args, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: Args,
    }
    Wrapper::try_parse_from(argv).map(|w| w.args)
}

impl Args {
    fn to_bound(&self) -> Option<Bound> {
        self.to_time
            .map(Bound::Time)
            .or_else(|| self.to_offset.clone().map(Bound::Offsets))
    }

    /// The replay these arguments describe (not for --reset-group).
    pub fn options(&self, cfg: &Config) -> anyhow::Result<Options> {
        let topic = match (&self.topic, self.reprocess) {
            (Some(t), _) => t.clone(),
            (None, true) => cfg
                .sink
                .kafka
                .raw_topic
                .clone()
                .context("--reprocess needs --topic or sink.kafka.raw_topic")?,
            (None, false) => anyhow::bail!("--topic is required"),
        };
        let target = if let Some(t) = &self.to_topic {
            if *t == topic {
                anyhow::bail!("--to-topic must differ from --topic");
            }
            Some(TargetSpec::Kafka(t.clone()))
        } else if self.to_nats {
            Some(TargetSpec::Nats)
        } else {
            self.to_file.clone().map(TargetSpec::File)
        };
        if target.is_none() && !self.dry_run {
            anyhow::bail!("give a target (--to-topic, --to-nats or --to-file) or --dry-run");
        }
        if let (Some(from), Some(to)) = (self.from_time, self.to_time) {
            if from > to {
                anyhow::bail!(
                    "--from-time {} is later than --to-time {}: the range is backwards",
                    from.to_rfc3339(),
                    to.to_rfc3339()
                );
            }
        }
        if self.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
            anyhow::bail!("--rate must be positive");
        }
        Ok(Options {
            topic,
            from: self
                .from_time
                .map(Bound::Time)
                .or_else(|| self.from_offset.clone().map(Bound::Offsets)),
            to: self.to_bound(),
            target,
            dry_run: self.dry_run,
            reprocess: self.reprocess,
            filter: Filter {
                tenants: self.tenant.clone(),
                teams: self.team.clone(),
                chats: self.chat.clone(),
                change_types: self
                    .change_type
                    .iter()
                    .map(|c| format!("{c:?}").to_ascii_lowercase())
                    .collect(),
            },
            rate: self.rate,
            max_messages: self.max_messages,
        })
    }
}

/// Runs the verb. The summary's ending decides the exit status: see [`Ending::exit_code`].
pub async fn main(args: Args, config: Option<&Path>) -> anyhow::Result<Ending> {
    let cfg = Config::load(config)?;
    if let Some(group) = &args.reset_group {
        let topic = args
            .topic
            .as_deref()
            .context("--reset-group needs --topic")?;
        let to = args
            .to_bound()
            .context("--reset-group needs --to-time or --to-offset")?;
        let reset = group::reset(&cfg.sink.kafka, topic, group, to, args.dry_run).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&reset)?);
        } else {
            reset.print_human();
        }
        return Ok(Ending::Complete);
    }
    let opts = args.options(&cfg)?;
    let stop = Stop::on_signals().context("installing the SIGINT/SIGTERM handlers")?;
    let summary = run(&cfg, &opts, &stop).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        summary.print_human();
    }
    Ok(summary.ending)
}
