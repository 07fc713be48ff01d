//! The `anning` command line (`contract/cli.md`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anning_detector::Registry;
use anning_rules::Pack;
use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::runtime::Progress;

mod desk;
mod kafka;
mod labelled;
mod replay;
mod rules;

pub use desk::release_id;

#[derive(Parser, Debug)]
#[command(name = "anning", version, about = "Carrier-side streaming detector for SMS and voice-call spam")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run recorded traffic through the detector in event time; actions as JSON Lines.
    Replay(ReplayArgs),
    /// Work with rule packs.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Write synthetic labelled traffic: abuse patterns beside their legitimate look-alikes.
    Gen(GenArgs),
    /// Score actions against a truth file: recall and time to act per pattern, precision,
    /// legitimate entities harmed.
    Score(ScoreArgs),
    /// Sweep one rule parameter over a range: actions, precision, recall and legitimate
    /// entities harmed per value, against a truth file, in one pass over the input.
    Tune(TuneArgs),
    /// The actions two packs take on the same input: gained, lost and changed, by rule
    /// and target.
    Diff(DiffArgs),
    /// The NOC service: consume records from Kafka, produce actions to Kafka.
    Daemon(DaemonArgs),
    /// Write records from files (JSON Lines) to a Kafka topic, optionally at a set rate.
    Produce(ProduceArgs),
    /// Print a topic's messages as they arrive (actions, dead letters), one a line.
    Tail(TailArgs),
    /// Why an action was taken: the rule as it was, the figures that tipped it, sample
    /// records, the target's escalation history, and whether it still holds (audit log).
    Explain(desk::ExplainArgs),
    /// Record a manual release (appeal upheld) of an action in the audit log.
    Release(desk::ReleaseArgs),
    /// SQL over traffic files, actions and the audit log (DataFusion).
    #[cfg(feature = "sql")]
    Query(desk::QueryArgs),
    /// One HTML page with plots about traffic and the actions taken on it.
    #[cfg(feature = "sql")]
    Report(desk::ReportArgs),
}

#[derive(clap::Args, Debug)]
pub struct TailArgs {
    /// Default: actions.
    #[arg(long, value_name = "T", default_value = "actions")]
    pub topic: String,
    #[arg(long, value_name = "HOSTS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Start at the topic's beginning instead of its end.
    #[arg(long)]
    pub from_beginning: bool,
    /// Stop after N messages.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Print each message's headers (a dead letter's reason) before it.
    #[arg(long)]
    pub headers: bool,
}

#[derive(clap::Args, Debug)]
pub struct DaemonArgs {
    /// Settings file (TOML); ANNING_* environment variables and these flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Rule pack (TOML); SIGHUP or `POST /rules/reload` (with admin_token) reloads it.
    #[arg(long, value_name = "PATH")]
    pub rules: Option<PathBuf>,
    /// Allowlist file ([[allow]] tables: dim, key, until, reason, author), reloaded with
    /// the rules.
    #[arg(long, value_name = "FILE")]
    pub allowlist: Option<PathBuf>,
    #[arg(long, value_name = "CSV")]
    pub registry: Option<PathBuf>,
    /// Default 127.0.0.1:9092.
    #[arg(long, value_name = "HOSTS")]
    pub brokers: Option<String>,
    /// Consumer group (default anning).
    #[arg(long, value_name = "ID")]
    pub group: Option<String>,
    /// Default signaling.
    #[arg(long, value_name = "T")]
    pub input_topic: Option<String>,
    /// Default actions.
    #[arg(long, value_name = "T")]
    pub actions_topic: Option<String>,
    /// Would-be actions of rules in shadow mode. Default actions.shadow.
    #[arg(long, value_name = "T")]
    pub shadow_topic: Option<String>,
    /// Default signaling.dlq.
    #[arg(long, value_name = "T")]
    pub dlq_topic: Option<String>,
    /// Admin HTTP address (default 127.0.0.1:9898).
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
    /// Shard worker threads, and as many threads decoding messages (default: the CPUs
    /// available). Actions are the same for every value.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// A librdkafka property for consumer and producer, e.g. -X security.protocol=SASL_SSL.
    #[arg(short = 'X', value_name = "PROP=VALUE")]
    pub kafka: Vec<String>,
    /// The audit log directory (Parquet by day): every action produced and every release.
    #[arg(long, value_name = "DIR")]
    pub audit: Option<PathBuf>,
    /// State checkpoints: restored on start, written every --checkpoint-interval and at shutdown.
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Milliseconds between checkpoints (default 30000).
    #[arg(long, value_name = "MS")]
    pub checkpoint_interval: Option<u64>,
    /// Scale-out: several daemons in one group split the partitions; records are re-keyed
    /// through PREFIX.DIM topics (see `--repartition-prefix`).
    #[arg(long)]
    pub repartition: bool,
    /// Prefix of the internal re-keying topics (default anning.repartition).
    #[arg(long, value_name = "PREFIX")]
    pub repartition_prefix: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct ProduceArgs {
    /// JSON Lines files, or - for stdin; one message per non-blank line.
    pub inputs: Vec<String>,
    #[arg(long, value_name = "HOSTS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    #[arg(long, value_name = "T", default_value = "signaling")]
    pub topic: String,
    /// Messages per second at most (default: as fast as the broker takes them).
    #[arg(long, value_name = "N")]
    pub rate: Option<u64>,
    /// Message key: the value of this record field (default src), so one sender's records
    /// stay in one partition and in order. The partition is the key's hash; a record without
    /// the field but with a `ref` (a delivery report) goes where its message went.
    #[arg(long, value_name = "FIELD", default_value = "src")]
    pub key: String,
    /// A librdkafka property, e.g. -X linger.ms=20.
    #[arg(short = 'X', value_name = "PROP=VALUE")]
    pub kafka: Vec<String>,
    /// Create the topic with N partitions first if it does not exist.
    #[arg(long, value_name = "N")]
    pub partitions: Option<i32>,
}

#[derive(clap::Args, Debug)]
pub struct GenArgs {
    /// `double11` (a full day, every pattern), `abuse`, `legit`, or one pattern's name
    /// (`anning gen list` lists them).
    #[arg(default_value = "double11")]
    pub scenario: String,
    /// Records to write, not counting duplicates (default: 1000000 for double11; for one
    /// pattern, its own records without background chatter).
    #[arg(long, value_name = "N")]
    pub records: Option<u64>,
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// Where to write records: .jsonl, .csv or .parquet (by extension, or --format). Default:
    /// JSON Lines on stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Write the ground truth here (JSON Lines, one labelled entity a line).
    #[arg(long, value_name = "FILE")]
    pub truth: Option<PathBuf>,
    /// Write the port registry CSV here.
    #[arg(long, value_name = "CSV")]
    pub registry: Option<PathBuf>,
    /// Output format; default from the --out extension, as replay reads it (.jsonl, .ndjson,
    /// .json, .csv, .parquet, .pq; another is refused), jsonl when there is none.
    #[arg(long, value_enum)]
    pub format: Option<GenFormat>,
    /// Preset for the knobs below.
    #[arg(long, value_enum, default_value_t = GenDifficulty::Normal)]
    pub difficulty: GenDifficulty,
    /// Dodgers' hourly counts as shares of the limit, e.g. 0.9..0.995.
    #[arg(long, value_name = "LO..HI", value_parser = parse_band)]
    pub dodger_band: Option<(f64, f64)>,
    /// SIMs per farm.
    #[arg(long, value_name = "N")]
    pub farm_sims: Option<u32>,
    /// Each farm SIM's hourly count as shares of the limit, e.g. 0.6..0.9.
    #[arg(long, value_name = "LO..HI", value_parser = parse_band)]
    pub farm_band: Option<(f64, f64)>,
    /// Chance (0..1) of each small edit to a farm message.
    #[arg(long, value_name = "P")]
    pub farm_variation: Option<f64>,
    /// Share of records moved back in event time by up to --disorder-max (out of order).
    #[arg(long, value_name = "SHARE")]
    pub disorder: Option<f64>,
    /// How far back out-of-order records move, e.g. 30s, 2m.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub disorder_max: Option<i64>,
    /// Share of records that arrive after the lateness (5m) has passed.
    #[arg(long, value_name = "SHARE")]
    pub late: Option<f64>,
    /// Share of records written twice (same id, same bytes).
    #[arg(long, value_name = "SHARE")]
    pub dupes: Option<f64>,
    /// No summary on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GenFormat {
    Jsonl,
    Csv,
    Parquet,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GenDifficulty {
    Normal,
    Hard,
}

fn parse_band(s: &str) -> Result<(f64, f64), String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("`{s}`: expected LO..HI, e.g. 0.9..0.995"))?;
    let num = |v: &str| v.trim().parse::<f64>().map_err(|_| format!("`{v}` is not a number"));
    Ok((num(a)?, num(b)?))
}

fn parse_duration(s: &str) -> Result<i64, String> {
    anning_rules::duration::parse_duration_ms(s)
}

#[derive(clap::Args, Debug)]
pub struct ScoreArgs {
    /// The truth file `anning gen --truth` wrote.
    #[arg(long, value_name = "FILE")]
    pub truth: PathBuf,
    /// Actions as JSON Lines (`anning replay --out`).
    #[arg(long, value_name = "FILE")]
    pub actions: PathBuf,
    /// One JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Show subscriber numbers in collateral samples unmasked.
    #[arg(long)]
    pub raw: bool,
}

#[derive(clap::Args, Debug)]
pub struct TuneArgs {
    /// Recorded traffic (as for replay), read once.
    #[arg(required = true)]
    pub inputs: Vec<String>,
    /// The rule to tune.
    #[arg(long, value_name = "ID")]
    pub rule: String,
    /// NAME=FROM..TO:STEP, e.g. threshold=4..12:2 or band=0.85..0.95:0.05.
    #[arg(long, value_name = "SWEEP")]
    pub param: String,
    /// The truth file `anning gen --truth` wrote.
    #[arg(long, value_name = "FILE")]
    pub truth: PathBuf,
    /// Rule pack (TOML). Default: the shipped default pack.
    #[arg(long, value_name = "PATH")]
    pub rules: Option<PathBuf>,
    #[arg(long, value_name = "CSV")]
    pub registry: Option<PathBuf>,
    /// Also write the table as CSV.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    /// Recorded traffic (as for replay).
    #[arg(required = true)]
    pub inputs: Vec<String>,
    /// The two packs: --rules A --rules B.
    #[arg(long = "rules", value_name = "PATH", num_args = 1, required = true)]
    pub rules: Vec<PathBuf>,
    #[arg(long, value_name = "CSV")]
    pub registry: Option<PathBuf>,
    /// Targets listed per category at most.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub limit: usize,
    /// JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Show subscriber numbers unmasked.
    #[arg(long)]
    pub raw: bool,
}

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// Input files (.jsonl/.json/.ndjson, .csv, .parquet), or - for JSON Lines on stdin
    /// (the default). Read in the order given, as one stream.
    pub inputs: Vec<String>,
    /// Rule pack (TOML). Default: the shipped default pack.
    #[arg(long, value_name = "PATH")]
    pub rules: Option<PathBuf>,
    /// Port registry CSV (port,sp,class,signatures).
    #[arg(long, value_name = "CSV")]
    pub registry: Option<PathBuf>,
    /// Where to write actions (JSON Lines). Default: stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Allowlist file ([[allow]] tables: dim, key, until, reason, author): no throttle or
    /// suspension of those targets before their `until`.
    #[arg(long, value_name = "FILE")]
    pub allowlist: Option<PathBuf>,
    /// Where to write the would-be actions of rules in shadow mode (JSON Lines, each with
    /// `"shadow":true`). They never go to --out.
    #[arg(long, value_name = "FILE")]
    pub shadow_out: Option<PathBuf>,
    /// Shard worker threads (the reader and two threads decoding lines run beside them, so
    /// one already keeps two cores busy). Output is identical for every value.
    #[arg(long, value_name = "N", default_value_t = default_threads())]
    pub threads: usize,
    /// Keep every rejected record, with its reason and position, as JSON Lines in FILE.
    #[arg(long, value_name = "FILE")]
    pub rejects: Option<PathBuf>,
    /// Also write every action (shadow ones included) to the audit log in DIR: Parquet
    /// files by day, with the tipping record and the pack (`anning explain`, `anning query`).
    #[arg(long, value_name = "DIR")]
    pub audit: Option<PathBuf>,
    /// Days the audit log keeps, counted back from its newest day.
    #[arg(long, value_name = "DAYS", default_value_t = crate::audit::DEFAULT_RETENTION_DAYS)]
    pub audit_retention: u32,
    /// No summary and no progress bar on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Subcommand, Debug)]
pub enum RulesCommand {
    /// Validate a rule pack; prints every problem as file:line:col: message.
    Check {
        /// The pack file (TOML).
        path: PathBuf,
        /// Fail (exit 1) on warnings too: rules that can never fire or never act first,
        /// throttles that do not bite, unused content classes, rules without tests.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Run a pack's rule tests: records in, expected actions out (NAME.tests.toml beside
    /// NAME.toml, or the test file itself).
    Test {
        /// The pack (its NAME.tests.toml is run) or a .tests.toml file.
        path: PathBuf,
        /// Only tests whose name contains this.
        #[arg(long)]
        run: Option<String>,
    },
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs the command line; the exit code says how it went.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replay(args) => replay::replay(args),
        Command::Rules {
            command: RulesCommand::Check { path, deny_warnings },
        } => rules::check(&path, deny_warnings),
        Command::Rules {
            command: RulesCommand::Test { path, run },
        } => rules::test(&path, run.as_deref()),
        Command::Gen(args) => labelled::r#gen(args),
        Command::Score(args) => labelled::score(args),
        Command::Tune(args) => labelled::tune(args),
        Command::Diff(args) => labelled::diff(args),
        Command::Daemon(args) => kafka::daemon(args),
        Command::Produce(args) => kafka::produce(args),
        Command::Tail(args) => kafka::tail(args),
        Command::Explain(args) => desk::explain(args),
        Command::Release(args) => desk::release(args),
        #[cfg(feature = "sql")]
        Command::Query(args) => desk::query(args),
        #[cfg(feature = "sql")]
        Command::Report(args) => desk::report(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("anning: error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Loads the pack named by `--rules`, or the default pack. Invalid packs print every
/// problem and fail.
pub fn load_pack(path: Option<&Path>) -> Result<Pack, ExitCode> {
    let loaded = match path {
        Some(p) => anning_rules::load(p),
        None => Ok(anning_rules::default_pack()),
    };
    loaded.map_err(|e| {
        for line in e.lines() {
            eprintln!("{line}");
        }
        ExitCode::from(2)
    })
}

/// Loads a registry CSV, printing every bad line as `file:line: message`.
pub fn load_registry(path: Option<&Path>) -> Result<Registry, ExitCode> {
    let Some(path) = path else { return Ok(Registry::default()) };
    let text = std::fs::read_to_string(path).map_err(|e| {
        eprintln!("{}: cannot read registry: {e}", path.display());
        ExitCode::from(2)
    })?;
    Registry::parse(&text).map_err(|errs| {
        for e in errs {
            eprintln!("{}:{}: {}", path.display(), e.line, e.message);
        }
        ExitCode::from(2)
    })
}

/// A byte progress bar on stderr (none when quiet or not a terminal).
struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    fn bytes(quiet: bool, template: &str) -> Bar {
        let show = !quiet && std::io::stderr().is_terminal();
        Bar(show.then(|| {
            let b = indicatif::ProgressBar::new(1);
            b.set_style(
                indicatif::ProgressStyle::with_template(template)
                    .expect("static template")
                    .progress_chars("=> "),
            );
            b
        }))
    }
}

impl Progress for Bar {
    fn input(&mut self, name: &str, len: u64) {
        if let Some(b) = &self.0 {
            b.set_length(len.max(1));
            b.set_position(0);
            b.set_message(name.to_string());
        }
    }

    fn advance(&mut self, done: u64) {
        if let Some(b) = &self.0 {
            b.set_position(done);
        }
    }
}
