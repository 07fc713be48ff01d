//! Anning's rule language: rule packs written in TOML by rule authors, parsed into a raw
//! form that only describes what was written, then validated and compiled into the form the
//! engine runs. The engine never sees an unvalidated rule. Every problem in a pack is
//! reported at once, each as `file:line:col: message` naming the field and the bad value.
//!
//! The shipped packs live in `rules/packs/`; [`DEFAULT_PACK`] is the one `anning` uses when
//! no `--rules` is given.
//!
//! # Layout
//! - [`duration`]: `5m`, `1h30m` durations.
//! - [`diag`]: diagnostics with line and column.
//! - [`raw`]: the serde form of a pack, every field optional and spanned.
//! - [`compile`](mod@compile): raw → validated, collecting every error.
//! - [`lint`]: warnings about packs that compile (`rules check`).
//! - [`model`]: the compiled pack: dimensions, filters, rule kinds, ladders, number plan.
//! - [`text`]: text normalisation, content classes, unsubscribe words, fingerprints.
//! - [`time`]: RFC 3339 timestamps.

pub mod compile;
pub mod diag;
pub mod duration;
pub mod lint;
pub mod model;
pub mod raw;
pub mod text;
pub mod time;

use std::fmt;
use std::path::Path;

pub use compile::compile;
pub use diag::Diagnostic;
pub use model::*;

/// Source of the shipped default pack (`rules/packs/default.toml`).
pub const DEFAULT_PACK: &str = include_str!("../packs/default.toml");
/// Name shown for the default pack in diagnostics.
pub const DEFAULT_PACK_PATH: &str = "rules/packs/default.toml";

/// A pack that failed to compile: where it came from and every problem in it.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// The pack file could not be read.
    #[error("{path}: cannot read rule pack: {source}")]
    Read { path: String, source: std::io::Error },
    /// The pack was read but has problems; each is printed as `file:line:col: message`.
    #[error("{}", render(.path, .diagnostics))]
    Invalid { path: String, diagnostics: Vec<Diagnostic> },
}

fn render(path: &str, diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for (i, d) in diags.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("{path}:{d}"));
    }
    out
}

impl PackError {
    /// The problems as `file:line:col: message` lines.
    pub fn lines(&self) -> Vec<String> {
        match self {
            PackError::Read { .. } => vec![self.to_string()],
            PackError::Invalid { path, diagnostics } => diagnostics.iter().map(|d| format!("{path}:{d}")).collect(),
        }
    }
}

/// Compiles pack source, naming `path` in errors.
pub fn compile_named(path: &str, source: &str) -> Result<Pack, PackError> {
    compile(source).map_err(|diagnostics| PackError::Invalid {
        path: path.to_string(),
        diagnostics,
    })
}

/// Reads and compiles a pack file.
pub fn load(path: &Path) -> Result<Pack, PackError> {
    let shown = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|source| PackError::Read {
        path: shown.clone(),
        source,
    })?;
    compile_named(&shown, &source)
}

/// Adds the `[[allow]]` entries of an allowlist file (TOML, nothing but `[[allow]]`
/// tables) to `pack`. The pack's hash then covers the allowlist too, so actions say which
/// allowlist was in force.
pub fn merge_allowlist(pack: &mut Pack, path: &str, source: &str) -> Result<(), PackError> {
    let frag = compile_named(path, source)?;
    if !frag.rules.is_empty() {
        return Err(PackError::Invalid {
            path: path.to_string(),
            diagnostics: vec![Diagnostic {
                line: frag.rule_pos[0].0,
                col: frag.rule_pos[0].1,
                message: "an allowlist file holds only [[allow]] tables; rules belong in the pack".into(),
            }],
        });
    }
    for mut a in frag.allow {
        let dim = frag.dims[a.dim].clone();
        a.dim = match pack.dims.iter().position(|d| *d == dim) {
            Some(i) => i,
            None => {
                pack.dims.push(dim);
                pack.dims.len() - 1
            }
        };
        pack.allow.push(a);
    }
    let mut h = xxhash_rust::xxh3::Xxh3::with_seed(pack.hash);
    h.update(source.as_bytes());
    pack.hash = h.digest();
    pack.source = format!("{}\n\n# ---- allowlist {path}\n{source}", pack.source).into();
    Ok(())
}

/// Reads an allowlist file and merges it into `pack` ([`merge_allowlist`]).
pub fn load_allowlist(pack: &mut Pack, path: &Path) -> Result<(), PackError> {
    let shown = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|source| PackError::Read {
        path: shown.clone(),
        source,
    })?;
    merge_allowlist(pack, &shown, &source)
}

/// The pack at `rules` (the shipped one when `None`) with the allowlist file at `allowlist`
/// merged in: what replay and the daemon run.
pub fn load_with_allowlist(rules: Option<&Path>, allowlist: Option<&Path>) -> Result<Pack, PackError> {
    let mut pack = match rules {
        Some(p) => load(p)?,
        None => default_pack(),
    };
    if let Some(a) = allowlist {
        load_allowlist(&mut pack, a)?;
    }
    Ok(pack)
}

/// The shipped default pack, compiled.
pub fn default_pack() -> Pack {
    compile_named(DEFAULT_PACK_PATH, DEFAULT_PACK).expect("the shipped default pack compiles (tested)")
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.id, self.kind.name())
    }
}
