//! `anning gen` and `anning score`: labelled traffic and how well actions match it.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};

use super::{DiffArgs, GenArgs, GenDifficulty, GenFormat, ScoreArgs, TuneArgs, load_pack, load_registry};

pub(super) fn r#gen(args: GenArgs) -> Result<ExitCode> {
    use anning_fixtures::synth::{self, Difficulty, JsonlSink, Knobs, Plan, RecordSink};
    if args.scenario == "list" {
        println!("scenarios:");
        for (name, what) in synth::SCENARIOS {
            println!("  {name:<22} {what}");
        }
        println!("patterns (each also a scenario of its own):");
        for p in synth::PATTERNS {
            let label = if p.label == synth::Label::Abuse { "abuse" } else { "legitimate" };
            println!("  {:<22} {label:<10} {}", p.name, p.what);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut knobs = Knobs::new(
        args.seed,
        match args.difficulty {
            GenDifficulty::Normal => Difficulty::Normal,
            GenDifficulty::Hard => Difficulty::Hard,
        },
    );
    knobs.records = args.records;
    if let Some(b) = args.dodger_band {
        knobs.dodger_band = b;
    }
    if let Some(n) = args.farm_sims {
        knobs.farm_sims = n;
    }
    if let Some(b) = args.farm_band {
        knobs.farm_band = b;
    }
    if let Some(v) = args.farm_variation {
        knobs.farm_variation = v;
    }
    if let Some(v) = args.disorder {
        knobs.disorder_share = v;
    }
    if let Some(v) = args.disorder_max {
        knobs.disorder_ms = v;
    }
    if let Some(v) = args.late {
        knobs.late_share = v;
    }
    if let Some(v) = args.dupes {
        knobs.dupes = v;
    }
    let started = Instant::now();
    let plan = match Plan::new(&args.scenario, knobs) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("anning gen: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let format = match (args.format, &args.out) {
        (Some(f), _) => f,
        (None, None) => GenFormat::Jsonl,
        // The extensions replay reads, so a generated file replays under its own name.
        (None, Some(p)) => match (crate::source::Format::of(p), p.extension()) {
            (Some(crate::source::Format::JsonLines), _) | (None, None) => GenFormat::Jsonl,
            (Some(crate::source::Format::Csv), _) => GenFormat::Csv,
            (Some(crate::source::Format::Parquet), _) => GenFormat::Parquet,
            (None, Some(other)) => {
                eprintln!(
                    "anning gen: cannot tell the format of {} from `.{}`: name it .jsonl, .csv or .parquet, or pass --format",
                    p.display(),
                    other.to_string_lossy()
                );
                return Ok(ExitCode::from(2));
            }
        },
    };
    let create = |p: &Path| File::create(p).with_context(|| format!("cannot create {}", p.display()));
    if let Some(p) = &args.truth {
        plan.write_truth(&mut BufWriter::new(create(p)?))
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    if let Some(p) = &args.registry {
        plan.write_registry(&mut BufWriter::new(create(p)?))
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    let show = !args.quiet && std::io::stderr().is_terminal();
    let bar = show.then(|| {
        let b = indicatif::ProgressBar::new(plan.actor_records + plan.background);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} gen {msg} [{bar:30}] {human_pos}/{human_len} records ({elapsed}, eta {eta})",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        b.set_message(plan.scenario.clone());
        b
    });
    let write = |sink: &mut dyn RecordSink| {
        let mut counted = Counted {
            inner: sink,
            bar: &bar,
            n: 0,
        };
        plan.write(&mut counted)
    };
    let stats = match (format, &args.out) {
        (GenFormat::Parquet, None) => anyhow::bail!("Parquet output needs --out FILE"),
        (GenFormat::Parquet, Some(p)) => {
            let mut sink = crate::synth_out::ParquetSink::create(create(p)?)?;
            write(&mut sink).with_context(|| format!("cannot write {}", p.display()))?
        }
        (GenFormat::Csv, Some(p)) => {
            let mut sink = crate::synth_out::CsvSink::new(BufWriter::new(create(p)?))?;
            write(&mut sink).with_context(|| format!("cannot write {}", p.display()))?
        }
        (GenFormat::Csv, None) => write(&mut crate::synth_out::CsvSink::new(std::io::stdout().lock())?)?,
        (GenFormat::Jsonl, Some(p)) => write(&mut JsonlSink::new(create(p)?)).with_context(|| format!("cannot write {}", p.display()))?,
        (GenFormat::Jsonl, None) => write(&mut JsonlSink::new(std::io::stdout().lock()))?,
    };
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    if !args.quiet {
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        let abuse = plan.truth.iter().filter(|t| t.label == synth::Label::Abuse).count();
        eprintln!(
            "anning gen: scenario `{}` seed {}: {} records ({} from the patterns, {} chatter) in {:.2} s ({:.0} records/s), peak RSS {}",
            plan.scenario,
            plan.knobs.seed,
            stats.records,
            plan.actor_records,
            plan.background,
            secs,
            stats.records as f64 / secs,
            crate::summary::peak_rss_bytes().map_or_else(|| "unknown".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0))
        );
        eprintln!(
            "  sms {}, dlr {}, call {}, complaint {}; out of order {}, late {}, duplicates {}",
            stats.by_kind[0], stats.by_kind[1], stats.by_kind[2], stats.by_kind[3], stats.disordered, stats.late, stats.duplicates
        );
        eprintln!(
            "  entities: {abuse} abuse, {} legitimate; {} registered ports",
            plan.truth.len() - abuse,
            plan.registry.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Passes records on and moves the progress bar every 64 k records.
struct Counted<'a> {
    inner: &'a mut dyn anning_fixtures::synth::RecordSink,
    bar: &'a Option<indicatif::ProgressBar>,
    n: u64,
}

impl anning_fixtures::synth::RecordSink for Counted<'_> {
    fn record(&mut self, r: &anning_fixtures::synth::GenRecord) -> std::io::Result<()> {
        self.n += 1;
        if self.n.is_multiple_of(65_536)
            && let Some(b) = self.bar
        {
            b.set_position(self.n);
        }
        self.inner.record(r)
    }

    fn finish(&mut self) -> std::io::Result<()> {
        self.inner.finish()
    }
}

pub(super) fn score(args: ScoreArgs) -> Result<ExitCode> {
    use crate::score;
    let truth = score::read_truth(&args.truth);
    let actions = score::read_actions(&args.actions);
    let (truth, actions) = match (truth, actions) {
        (Ok(t), Ok(a)) => (t, a),
        (t, a) => {
            for e in t.err().into_iter().flatten().chain(a.err().into_iter().flatten()) {
                eprintln!("{e}");
            }
            return Ok(ExitCode::from(2));
        }
    };
    let plan = anning_rules::default_pack().number_plan;
    let s = score::score(&truth, &actions, (!args.raw).then_some(&plan));
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &s)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", score::render(&s))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn tune(args: TuneArgs) -> Result<ExitCode> {
    use crate::workbench;
    use std::sync::Arc;
    let pack = match load_pack(args.rules.as_deref()) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let registry = match load_registry(args.registry.as_deref()) {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let truth = match crate::score::read_truth(&args.truth) {
        Ok(t) => t,
        Err(errs) => {
            for e in errs {
                eprintln!("{e}");
            }
            return Ok(ExitCode::from(2));
        }
    };
    let (param, values) = match workbench::parse_sweep(&args.param) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("anning tune: --param {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let mut packs = Vec::new();
    for v in &values {
        match workbench::variant(&pack, &args.rule, &param, *v) {
            Ok(p) => packs.push(Arc::new(p)),
            Err(e) => {
                eprintln!("anning tune: {e}");
                return Ok(ExitCode::from(2));
            }
        }
    }
    let inputs = crate::runtime::parse_inputs(&args.inputs)?;
    let started = Instant::now();
    let ran = workbench::run_packs(&packs, &registry, &inputs).map_err(anyhow::Error::msg)?;
    let records = ran.records;
    let rows = workbench::tune_rows(&values, &ran.actions, &args.rule, &truth, &pack);
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "rule `{}`, {param} over {} values; {records} records read once",
            args.rule,
            values.len()
        )?;
        write!(out, "{}", workbench::render_tune(&args.rule, &param, &rows))?;
    }
    if let Some(p) = &args.csv {
        std::fs::write(p, workbench::tune_csv(&param, &rows)).with_context(|| format!("cannot write {}", p.display()))?;
    }
    eprintln!(
        "anning tune: {records} records × {} variants in {:.2} s ({} late, {} rejected)",
        values.len(),
        started.elapsed().as_secs_f64(),
        ran.late,
        ran.rejected
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) fn diff(args: DiffArgs) -> Result<ExitCode> {
    use crate::workbench;
    use std::sync::Arc;
    if args.rules.len() != 2 {
        eprintln!("anning diff: give exactly two packs: --rules A --rules B");
        return Ok(ExitCode::from(2));
    }
    let mut packs = Vec::new();
    for p in &args.rules {
        match load_pack(Some(p)) {
            Ok(p) => packs.push(Arc::new(p)),
            Err(code) => return Ok(code),
        }
    }
    let registry = match load_registry(args.registry.as_deref()) {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let inputs = crate::runtime::parse_inputs(&args.inputs)?;
    // One pass when the packs agree on what happens before rules (watermark, joins, number
    // plan); else one pass each.
    let (a, b) = (&packs[0], &packs[1]);
    let shared = a.lateness_ms == b.lateness_ms
        && a.late_policy == b.late_policy
        && a.dlr_join_ms == b.dlr_join_ms
        && format!("{:?}", a.number_plan) == format!("{:?}", b.number_plan)
        && format!("{:?}", a.lexicon) == format!("{:?}", b.lexicon)
        && a.unsubscribe_words == b.unsubscribe_words
        && a.uses_fingerprint() == b.uses_fingerprint();
    let runs = if shared {
        vec![workbench::run_packs(&packs, &registry, &inputs).map_err(anyhow::Error::msg)?]
    } else {
        let mut runs = Vec::new();
        for p in &packs {
            runs.push(workbench::run_packs(std::slice::from_ref(p), &registry, &inputs).map_err(anyhow::Error::msg)?);
        }
        runs
    };
    eprintln!(
        "anning diff: {} records ({} late, {} rejected)",
        runs[0].records, runs[0].late, runs[0].rejected
    );
    let actions: Vec<Vec<anning_detector::Action>> = runs.into_iter().flat_map(|r| r.actions).collect();
    let d = workbench::diff(&actions[0], &actions[1], a, args.raw);
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &d)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "A = {} ({}), B = {} ({})",
            args.rules[0].display(),
            a.hash_hex(),
            args.rules[1].display(),
            b.hash_hex()
        )?;
        write!(out, "{}", workbench::render_diff(&d, args.limit))?;
    }
    Ok(ExitCode::SUCCESS)
}
