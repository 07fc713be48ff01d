//! The analysts' desk: `anning explain`, `anning release`, `anning query`, `anning report`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::audit::{self, Entry};
use crate::explain::{self, Ask};
use crate::runtime;

/// `--at`: RFC 3339 or epoch ms, as a record's `ts` is read.
pub fn parse_time(s: &str) -> Result<i64, String> {
    anning_detector::record::parse_ts_text(s).map_err(|e| format!("{s:?}: {e}"))
}

#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    /// The action's id (16 hex digits).
    pub id: String,
    /// The audit log (written by `anning replay --audit` or the daemon's audit_dir).
    #[arg(long, value_name = "DIR")]
    pub audit: PathBuf,
    /// Traffic to take more records of the target from (its window before the action).
    #[arg(long = "input", value_name = "FILE")]
    pub inputs: Vec<String>,
    #[arg(long, value_name = "CSV")]
    pub registry: Option<PathBuf>,
    /// When to judge whether the action still holds (RFC 3339 or epoch ms). Default: now.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub at: Option<i64>,
    /// Sample records to show at most.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub samples: usize,
    /// Show subscriber numbers as recorded instead of masked.
    #[arg(long)]
    pub raw: bool,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn explain(args: ExplainArgs) -> Result<ExitCode> {
    let registry = match super::load_registry(args.registry.as_deref()) {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let inputs = if args.inputs.is_empty() {
        Vec::new()
    } else {
        runtime::parse_inputs(&args.inputs)?
    };
    let ask = Ask {
        audit: &args.audit,
        id: &args.id,
        at: args.at.unwrap_or_else(audit::now_ms),
        inputs: &inputs,
        registry: &registry,
        samples: args.samples,
        raw: args.raw,
    };
    let x = match explain::explain(&ask) {
        Ok(x) => x,
        Err(e @ explain::ExplainError::NotFound { .. }) => {
            eprintln!("anning explain: {e}");
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &explain::to_json(&x))?;
        writeln!(out)?;
    } else {
        write!(out, "{}", explain::render(&x))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct ReleaseArgs {
    /// The id of the action to lift (its target is released).
    pub id: String,
    /// The audit log holding the action; the release is written there.
    #[arg(long, value_name = "DIR")]
    pub audit: PathBuf,
    /// Why (the appeal's outcome), kept in the log.
    #[arg(long)]
    pub reason: String,
    /// Who decided, kept in the log.
    #[arg(long)]
    pub author: String,
    /// When the release takes effect (RFC 3339 or epoch ms). Default: now.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub at: Option<i64>,
}

/// Records a manual release in the audit log (for actions from replays, or a daemon that
/// is not reachable; a running daemon takes releases on `POST /actions/release`).
pub fn release(args: ReleaseArgs) -> Result<ExitCode> {
    let entries = audit::read(&args.audit)?;
    let Some(a) = entries.iter().find(|e| e.id == args.id) else {
        eprintln!("anning release: no action {} in the audit log at {}", args.id, args.audit.display());
        return Ok(ExitCode::from(1));
    };
    if a.action == "release" || a.action == "alert" {
        eprintln!("anning release: {} is {} {}: nothing to lift", a.id, article(&a.action), a.action);
        return Ok(ExitCode::from(1));
    }
    let at = args.at.unwrap_or_else(audit::now_ms);
    let id = release_id(&a.id, at, &args.author);
    let e = Entry {
        id: id.clone(),
        ts: at,
        action: "release".into(),
        dim: a.dim.clone(),
        key: a.key.clone(),
        rule: "release".into(),
        level: 0,
        rate: None,
        until: None,
        reason: format!("Released: {}", args.reason),
        evidence: serde_json::json!({ "lifted": a.id, "lifted_action": a.action, "was_until": a.until }).to_string(),
        pack: a.pack.clone(),
        shadow: false,
        record: None,
        origin: "cli".into(),
        author: Some(args.author.clone()),
        recorded_at: audit::now_ms(),
    };
    let mut w = audit::Writer::open(&args.audit, "cli", audit::DEFAULT_RETENTION_DAYS)?;
    w.push(e);
    let f = w.flush()?;
    let lapsed = a.until.is_some_and(|u| u <= at);
    println!(
        "release {id} of {} {} recorded in {}{}",
        a.dim,
        anning_detector::mask::mask_number(&a.key),
        f.files.first().map(|p| p.display().to_string()).unwrap_or_default(),
        if lapsed { " (the action had already lapsed)" } else { "" }
    );
    Ok(ExitCode::SUCCESS)
}

fn article(w: &str) -> &'static str {
    if w.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" }
}

/// A release's id: deterministic in what it releases, when and by whom.
pub fn release_id(lifted: &str, at: i64, author: &str) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::with_seed(0x0072_656c_6561_7365);
    h.update(lifted.as_bytes());
    h.update(&at.to_le_bytes());
    h.update(author.as_bytes());
    format!("{:016x}", h.digest())
}

#[cfg(feature = "sql")]
pub use with_sql::*;

#[cfg(feature = "sql")]
mod with_sql {
    use std::io::IsTerminal;
    use std::path::Path;

    use anyhow::Context;

    use super::super::Bar;
    use super::*;
    use crate::sql::output::{self, OutFormat};
    use crate::sql::{self, Desk, report};

    #[derive(clap::Args, Debug)]
    pub struct QueryArgs {
        /// The SQL statement. Tables: each --table, `audit` (--audit), and the ready views
        /// (`top_talkers`, `hourly_counts`, `near_limit`, `hourly_histogram` over a table
        /// named `traffic`; `actions_per_rule_hour` over `audit` or `actions`). Without SQL,
        /// lists the tables and their columns.
        pub sql: Option<String>,
        /// NAME=PATH: a traffic file (.jsonl, .csv, .parquet), an actions file, or a
        /// directory of Parquet files. Repeatable.
        #[arg(long = "table", value_name = "NAME=PATH", value_parser = sql::parse_table)]
        pub tables: Vec<(String, PathBuf)>,
        /// The audit log, as table `audit`.
        #[arg(long, value_name = "DIR")]
        pub audit: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = OutFormat::Table)]
        pub format: OutFormat,
        /// The rule pack whose number plan classifies addresses and whose near-limit rule
        /// sets the views' limit. Default: the shipped pack.
        #[arg(long, value_name = "PATH")]
        pub rules: Option<PathBuf>,
        #[arg(long, value_name = "CSV")]
        pub registry: Option<PathBuf>,
        /// Show subscriber numbers as recorded instead of masked.
        #[arg(long)]
        pub raw: bool,
        #[arg(long, value_name = "N", default_value_t = super::super::default_threads())]
        pub threads: usize,
        /// No progress or timing on stderr.
        #[arg(long, short)]
        pub quiet: bool,
    }

    fn bar(quiet: bool) -> Bar {
        Bar::bytes(quiet, "{spinner} reading {msg} [{bar:30}] {bytes}/{total_bytes} ({eta})")
    }

    fn spinner(quiet: bool, msg: &str) -> Option<indicatif::ProgressBar> {
        (!quiet && std::io::stderr().is_terminal()).then(|| {
            let s = indicatif::ProgressBar::new_spinner();
            s.set_style(indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("static template"));
            s.set_message(msg.to_string());
            s.enable_steady_tick(std::time::Duration::from_millis(120));
            s
        })
    }

    fn say_loaded(desk: &Desk, quiet: bool) {
        if quiet {
            return;
        }
        for l in &desk.loaded {
            let rejected: u64 = l.rejects.values().sum();
            if l.how == "traffic" {
                eprintln!("{}: {} ({} records, {rejected} rejected)", l.name, l.path, l.records);
                for s in &l.samples {
                    eprintln!("  {s}");
                }
            } else {
                eprintln!("{}: {} ({})", l.name, l.path, l.how);
            }
        }
    }

    fn pack_and_registry(
        rules: Option<&Path>,
        registry: Option<&Path>,
    ) -> Result<(anning_rules::Pack, anning_detector::Registry), ExitCode> {
        Ok((super::super::load_pack(rules)?, super::super::load_registry(registry)?))
    }

    pub fn query(args: QueryArgs) -> Result<ExitCode> {
        let (pack, registry) = match pack_and_registry(args.rules.as_deref(), args.registry.as_deref()) {
            Ok(x) => x,
            Err(code) => return Ok(code),
        };
        let started = std::time::Instant::now();
        let mut desk = Desk::new(&pack, args.threads)?;
        let mut progress = bar(args.quiet);
        let mut tables = args.tables.clone();
        if let Some(a) = &args.audit {
            tables.push(("audit".into(), a.clone()));
        }
        for (name, path) in &tables {
            desk.register(name, path, &pack, &registry, &mut progress)
                .with_context(|| format!("table {name}"))?;
        }
        if let Some(b) = &progress.0 {
            b.finish_and_clear();
        }
        let views = desk.add_views()?;
        let loaded_in = started.elapsed();
        say_loaded(&desk, args.quiet);
        let sql = match &args.sql {
            Some(s) => s.clone(),
            None => {
                if !args.quiet && !views.is_empty() {
                    eprintln!("views: {}", views.join(", "));
                }
                "SELECT table_name, column_name, data_type FROM information_schema.columns \
                 WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
                    .into()
            }
        };
        let spin = spinner(args.quiet, "running the query");
        let t = std::time::Instant::now();
        let result = desk.query(&sql, args.raw);
        if let Some(s) = spin {
            s.finish_and_clear();
        }
        let batches = match result {
            Ok(b) => b,
            Err(e) => {
                eprintln!("anning query: {e}");
                return Ok(ExitCode::from(1));
            }
        };
        let ran_in = t.elapsed();
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        output::write(&batches, args.format, &mut out)?;
        out.flush()?;
        if !args.quiet {
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            eprintln!(
                "{rows} rows; tables loaded in {:.2} s, query {:.3} s",
                loaded_in.as_secs_f64(),
                ran_in.as_secs_f64()
            );
        }
        Ok(ExitCode::SUCCESS)
    }

    #[derive(clap::Args, Debug)]
    pub struct ReportArgs {
        /// Traffic files (.jsonl, .csv, .parquet), read as one table `traffic`.
        #[arg(required = true)]
        pub inputs: Vec<PathBuf>,
        /// Directory to write index.html into (created).
        #[arg(long, value_name = "DIR")]
        pub out: PathBuf,
        /// Actions to report (JSON Lines from `anning replay --out`). Default: replay the
        /// inputs with --rules now.
        #[arg(long, value_name = "FILE", conflicts_with = "audit")]
        pub actions: Option<PathBuf>,
        /// Take the actions from this audit log instead.
        #[arg(long, value_name = "DIR")]
        pub audit: Option<PathBuf>,
        #[arg(long, value_name = "PATH")]
        pub rules: Option<PathBuf>,
        #[arg(long, value_name = "CSV")]
        pub registry: Option<PathBuf>,
        /// Bars in each top list.
        #[arg(long, value_name = "N", default_value_t = 15)]
        pub top: usize,
        /// Rows of the actions table at most.
        #[arg(long, value_name = "N", default_value_t = 500)]
        pub rows: usize,
        #[arg(long)]
        pub raw: bool,
        #[arg(long, value_name = "N", default_value_t = super::super::default_threads())]
        pub threads: usize,
        #[arg(long, short)]
        pub quiet: bool,
    }

    pub fn report(args: ReportArgs) -> Result<ExitCode> {
        let (pack, registry) = match pack_and_registry(args.rules.as_deref(), args.registry.as_deref()) {
            Ok(x) => x,
            Err(code) => return Ok(code),
        };
        let started = std::time::Instant::now();
        let mut desk = Desk::new(&pack, args.threads)?;
        let mut progress = bar(args.quiet);
        if args.inputs.len() != 1 {
            anyhow::bail!("anning report takes one traffic file (merge several with `cat` for JSON Lines)");
        }
        desk.register("traffic", &args.inputs[0], &pack, &registry, &mut progress)
            .context("table traffic")?;
        if let Some(b) = &progress.0 {
            b.finish_and_clear();
        }
        let pack_hash = match (&args.actions, &args.audit) {
            (Some(a), _) => {
                desk.register("recorded", a, &pack, &registry, &mut ()).context("table actions")?;
                sql::taken_only(&desk, "recorded", "actions")?;
                format!("{} (actions from {})", pack.hash_hex(), a.display())
            }
            (None, Some(dir)) => {
                desk.register("recorded", dir, &pack, &registry, &mut ()).context("table actions")?;
                sql::taken_only(&desk, "recorded", "actions")?;
                format!("as recorded in the audit log {}", dir.display())
            }
            (None, None) => {
                let spin = spinner(args.quiet, "replaying the traffic through the rules");
                let inputs = runtime::parse_inputs(&[args.inputs[0].to_string_lossy().to_string()])?;
                let pack = std::sync::Arc::new(pack.clone());
                let outcome = runtime::run(
                    std::sync::Arc::clone(&pack),
                    &registry,
                    &inputs,
                    args.threads.max(1),
                    &mut (),
                    &mut (),
                );
                if let Some(s) = spin {
                    s.finish_and_clear();
                }
                let acted: Vec<_> = outcome.actions.into_iter().filter(|a| !a.shadow).collect();
                sql::register_actions(&desk, "actions", &acted)?;
                format!("{} ({})", pack.hash_hex(), pack.name)
            }
        };
        desk.add_views()?;
        let spin = spinner(args.quiet, "computing the figures");
        let mut f = report::figures(&desk, args.raw, args.top, args.rows)?;
        if let Some(s) = spin {
            s.finish_and_clear();
        }
        let traffic = &desk.loaded[0];
        f.title = format!("Anning report: {}", file_name(&args.inputs[0]));
        f.inputs = args.inputs.iter().map(|p| p.display().to_string()).collect();
        f.records = if traffic.how == "traffic" {
            traffic.records
        } else {
            crate::sql::output::rows(&desk.query("SELECT count(*) FROM traffic", true)?)?
                .first()
                .and_then(|r| r[0].parse().ok())
                .unwrap_or(0)
        };
        f.rejected = traffic.rejects.values().sum();
        f.pack = pack_hash;
        std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
        let page = args.out.join("index.html");
        std::fs::write(&page, report::html(&f)).with_context(|| format!("cannot write {}", page.display()))?;
        if !args.quiet {
            eprintln!(
                "{}: {} records, {} actions, in {:.1} s",
                page.display(),
                f.records,
                f.actions_total,
                started.elapsed().as_secs_f64()
            );
        }
        Ok(ExitCode::SUCCESS)
    }

    fn file_name(p: &Path) -> String {
        p.file_name()
            .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned())
    }
}
