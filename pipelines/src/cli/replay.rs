//! `anning replay`: recorded traffic through the engine, actions out, rejects kept.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};

use super::{Bar, ReplayArgs, load_registry};
use crate::decode::Reject;
use crate::runtime::{self, RejectSink};

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

pub(super) fn replay(args: ReplayArgs) -> Result<ExitCode> {
    let pack = match anning_rules::load_with_allowlist(args.rules.as_deref(), args.allowlist.as_deref()) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            for line in e.lines() {
                eprintln!("{line}");
            }
            return Ok(ExitCode::from(2));
        }
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
    let mut bar = Bar::bytes(
        args.quiet,
        "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
    );

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

    let write = |w: &mut dyn Write, shadow: bool| -> std::io::Result<()> {
        for a in outcome.actions.iter().filter(|a| a.shadow == shadow) {
            serde_json::to_writer(&mut *w, a)?;
            w.write_all(b"\n")?;
        }
        w.flush()
    };
    match &args.out {
        Some(p) => {
            let mut f = BufWriter::new(File::create(p).with_context(|| format!("cannot create {}", p.display()))?);
            write(&mut f, false).with_context(|| format!("cannot write {}", p.display()))?;
        }
        None => write(&mut BufWriter::new(std::io::stdout().lock()), false)?,
    }
    if let Some(p) = &args.shadow_out {
        let mut f = BufWriter::new(File::create(p).with_context(|| format!("cannot create {}", p.display()))?);
        write(&mut f, true).with_context(|| format!("cannot write {}", p.display()))?;
    }
    let audited = match &args.audit {
        Some(dir) => {
            let mut w = crate::audit::Writer::open(dir, "replay", args.audit_retention)?;
            w.archive_pack(&pack)?;
            for a in &outcome.actions {
                w.push_action(a);
            }
            Some(w.flush()?)
        }
        None => None,
    };
    if !args.quiet {
        eprint!("{}", crate::summary::render(&outcome, &pack, threads, elapsed));
        if let (Some(f), Some(dir)) = (&audited, &args.audit) {
            eprintln!(
                "audit:    {} actions in {} files under {}{}",
                f.rows,
                f.files.len(),
                dir.display(),
                if f.pruned.is_empty() {
                    String::new()
                } else {
                    format!(" ({} old days removed)", f.pruned.len())
                }
            );
        }
    }
    Ok(if outcome.counts.input_errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
