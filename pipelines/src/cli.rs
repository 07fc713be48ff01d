//! The `anning` command line (`contract/cli.md`).

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anning_detector::Registry;
use anning_rules::Pack;
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::decode::Reject;
use crate::runtime::{self, Progress, RejectSink};

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
    /// Shard worker threads. Output is identical for every value.
    #[arg(long, value_name = "N", default_value_t = default_threads())]
    pub threads: usize,
    /// Keep every rejected record, with its reason and position, as JSON Lines in FILE.
    #[arg(long, value_name = "FILE")]
    pub rejects: Option<PathBuf>,
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
    },
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs the command line; the exit code says how it went.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replay(args) => replay(args),
        Command::Rules {
            command: RulesCommand::Check { path },
        } => rules_check(&path),
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

fn rules_check(path: &Path) -> Result<ExitCode> {
    match anning_rules::load(path) {
        Ok(pack) => {
            println!(
                "{}: ok: pack `{}` ({}), {} rules",
                path.display(),
                pack.name,
                pack.hash_hex(),
                pack.rules.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            for line in e.lines() {
                println!("{line}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

struct JsonlRejects(BufWriter<File>, Option<std::io::Error>);

impl RejectSink for JsonlRejects {
    fn write(&mut self, r: &Reject) {
        if self.1.is_none() {
            let res = serde_json::to_writer(&mut self.0, r)
                .map_err(std::io::Error::from)
                .and_then(|_| self.0.write_all(b"\n"));
            if let Err(e) = res {
                self.1 = Some(e);
            }
        }
    }
}

struct Bar(Option<indicatif::ProgressBar>);

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

fn replay(args: ReplayArgs) -> Result<ExitCode> {
    let pack = match load_pack(args.rules.as_deref()) {
        Ok(p) => Arc::new(p),
        Err(code) => return Ok(code),
    };
    let registry = match load_registry(args.registry.as_deref()) {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let inputs = runtime::parse_inputs(&args.inputs)?;
    for i in &inputs {
        if let Some(p) = &i.path
            && !p.exists()
        {
            anyhow::bail!("{}: no such input file", p.display());
        }
    }
    let mut rejects = match &args.rejects {
        Some(p) => Some(JsonlRejects(
            BufWriter::new(File::create(p).with_context(|| format!("cannot create {}", p.display()))?),
            None,
        )),
        None => None,
    };
    let show = !args.quiet && std::io::stderr().is_terminal();
    let mut bar = Bar(show.then(|| {
        let b = indicatif::ProgressBar::new(1);
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})")
                .expect("static template")
                .progress_chars("=> "),
        );
        b
    }));

    let started = Instant::now();
    let threads = args.threads.max(1);
    let outcome = match &mut rejects {
        Some(r) => runtime::run(Arc::clone(&pack), &registry, &inputs, threads, r, &mut bar),
        None => runtime::run(Arc::clone(&pack), &registry, &inputs, threads, &mut (), &mut bar),
    };
    let elapsed = started.elapsed();
    if let Some(b) = &bar.0 {
        b.finish_and_clear();
    }
    if let Some(JsonlRejects(mut w, err)) = rejects {
        if let Some(e) = err {
            return Err(e).context("cannot write rejects");
        }
        w.flush().context("cannot write rejects")?;
    }

    let write = |w: &mut dyn Write| -> std::io::Result<()> {
        for a in &outcome.actions {
            serde_json::to_writer(&mut *w, a)?;
            w.write_all(b"\n")?;
        }
        w.flush()
    };
    match &args.out {
        Some(p) => {
            let mut f = BufWriter::new(File::create(p).with_context(|| format!("cannot create {}", p.display()))?);
            write(&mut f).with_context(|| format!("cannot write {}", p.display()))?;
        }
        None => write(&mut BufWriter::new(std::io::stdout().lock()))?,
    }
    if !args.quiet {
        eprint!("{}", crate::summary::render(&outcome, &pack, threads, elapsed));
    }
    Ok(if outcome.counts.input_errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
