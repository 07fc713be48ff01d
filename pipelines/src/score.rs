//! `anning score`: how well a run's actions match the generator's truth.
//!
//! # Definitions
//! - An *enforcement* is a `throttle` or `suspend` action; its *target* is its `(dim, key)`.
//! - An entity is *acted on* when some enforcement targets one of its `catch` targets;
//!   *time to act* is from the entity's `start` to the first such enforcement (0 when the
//!   enforcement came first).
//! - An enforced target is *abuse* when it is a `catch` or `also` target of an abuse entity
//!   and no `catch` target of a legitimate entity; *legitimate* when it is a `catch` target
//!   of a legitimate entity; *collateral* when no entity names it.
//! - precision = abuse targets ÷ enforced targets; recall = abuse entities acted on ÷ abuse
//!   entities; legitimate harmed = legitimate entities acted on.
//!   Alerts are counted beside, never as enforcement.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;

use anning_detector::mask::mask_key;
use anning_fixtures::synth::{Label, Target, Truth};
use anning_rules::{Dim, NumberPlan};
use serde::{Deserialize, Serialize};

/// A problem in an input file, with its place.
#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}{}: {message}", col.map(|c| format!(":{c}")).unwrap_or_default())]
pub struct InputError {
    pub path: String,
    pub line: u64,
    pub col: Option<u64>,
    pub message: String,
}

fn json_error(path: &Path, line: u64, e: &serde_json::Error) -> InputError {
    let text = e.to_string();
    let message = match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    InputError {
        path: path.display().to_string(),
        line,
        col: Some(e.column() as u64),
        message,
    }
}

fn read_lines(path: &Path) -> Result<String, InputError> {
    std::fs::read_to_string(path).map_err(|e| InputError {
        path: path.display().to_string(),
        line: 0,
        col: None,
        message: format!("cannot read: {e}"),
    })
}

/// Reads a truth file (JSON Lines of [`Truth`]); blank lines are skipped. Every bad line is
/// reported.
pub fn read_truth(path: &Path) -> Result<Vec<Truth>, Vec<InputError>> {
    let text = read_lines(path).map_err(|e| vec![e])?;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut seen: HashMap<String, u64> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Truth>(line) {
            Ok(t) => {
                let mut bad = |message: String| {
                    errors.push(InputError {
                        path: path.display().to_string(),
                        line: n,
                        col: None,
                        message,
                    })
                };
                if t.entity.is_empty() {
                    bad("field `entity` is empty".into());
                } else if let Some(first) = seen.insert(t.entity.clone(), n) {
                    bad(format!("entity `{}` was already labelled on line {first}", t.entity));
                } else if t.catch.is_empty() {
                    bad(format!("entity `{}` has no `catch` targets", t.entity));
                } else if let Some(d) = t.catch.iter().chain(&t.also).find(|t| Dim::parse(&t.dim).is_err()) {
                    bad(format!("entity `{}`: `{}` is not a dimension", t.entity, d.dim));
                } else {
                    out.push(t);
                }
            }
            Err(e) => errors.push(json_error(path, n, &e)),
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// The fields of an action the scorer needs (contract/actions.md).
#[derive(Debug, Clone, Deserialize)]
pub struct ActionRow {
    pub id: String,
    pub ts: i64,
    pub action: ActionKind,
    pub dim: String,
    pub key: String,
    pub rule: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    Alert,
    Throttle,
    Suspend,
    Release,
}

/// Reads actions (JSON Lines); every bad line is reported.
pub fn read_actions(path: &Path) -> Result<Vec<ActionRow>, Vec<InputError>> {
    let text = read_lines(path).map_err(|e| vec![e])?;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<ActionRow>(line) {
            Ok(a) => out.push(a),
            Err(e) => errors.push(json_error(path, i as u64 + 1, &e)),
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatternScore {
    pub pattern: String,
    pub label: Label,
    pub entities: u64,
    /// Entities with a throttle or suspend on one of their catch targets.
    pub acted: u64,
    /// Entities with an alert on a catch target but no enforcement.
    pub alerted_only: u64,
    /// acted ÷ entities.
    pub share_acted: f64,
    /// Median minutes from start to the first enforcement, over the entities acted on.
    pub median_minutes_to_act: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overall {
    pub actions: u64,
    pub enforcements: u64,
    /// Distinct `(dim, key)` targets of throttles and suspensions.
    pub enforced_targets: u64,
    pub abuse_targets: u64,
    pub legitimate_targets: u64,
    pub collateral: u64,
    pub precision: Option<f64>,
    pub abuse_entities: u64,
    pub abuse_acted: u64,
    pub recall: Option<f64>,
    pub legitimate_entities: u64,
    pub legitimate_harmed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    pub patterns: Vec<PatternScore>,
    pub overall: Overall,
    /// Legitimate entities acted on (names), at most 20.
    pub harmed: Vec<String>,
    /// Collateral targets (masked unless raw), at most 20.
    pub collateral_samples: Vec<String>,
}

/// Per pattern while scoring.
#[derive(Default)]
struct Tally {
    entities: u64,
    acted: u64,
    alerted_only: u64,
    /// Minutes to act, per entity acted on.
    delays: Vec<f64>,
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 })
}

/// Scores `actions` against `truth`. `plan` masks subscriber numbers in the samples (pass
/// `None` for raw values).
pub fn score(truth: &[Truth], actions: &[ActionRow], plan: Option<&NumberPlan>) -> Score {
    let enforce = |a: &ActionRow| matches!(a.action, ActionKind::Throttle | ActionKind::Suspend);
    // First enforcement and first alert per target.
    let mut first_enforced: HashMap<Target, i64> = HashMap::new();
    let mut alerted: HashSet<Target> = HashSet::new();
    for a in actions {
        let t = Target {
            dim: a.dim.clone(),
            key: a.key.clone(),
        };
        if enforce(a) {
            let e = first_enforced.entry(t).or_insert(a.ts);
            *e = (*e).min(a.ts);
        } else if a.action == ActionKind::Alert {
            alerted.insert(t);
        }
    }

    let mut by_pattern: BTreeMap<(Label, String), Tally> = BTreeMap::new();
    let mut harmed = Vec::new();
    let mut abuse_named: HashSet<&Target> = HashSet::new();
    let mut legit_named: HashSet<&Target> = HashSet::new();
    for t in truth {
        let row = by_pattern.entry((t.label, t.pattern.clone())).or_default();
        row.entities += 1;
        let first = t.catch.iter().filter_map(|c| first_enforced.get(c)).min();
        if let Some(&ts) = first {
            row.acted += 1;
            row.delays.push(((ts - t.start).max(0)) as f64 / 60_000.0);
            if t.label == Label::Legitimate && harmed.len() < 20 {
                harmed.push(t.entity.clone());
            }
        } else if t.catch.iter().any(|c| alerted.contains(c)) {
            row.alerted_only += 1;
        }
        match t.label {
            Label::Abuse => abuse_named.extend(t.catch.iter().chain(&t.also)),
            Label::Legitimate => legit_named.extend(t.catch.iter()),
        }
    }

    let mut targets: Vec<&Target> = first_enforced.keys().collect();
    targets.sort();
    let (mut abuse_t, mut legit_t, mut collateral, mut samples) = (0u64, 0u64, 0u64, Vec::new());
    for t in &targets {
        if legit_named.contains(t) {
            legit_t += 1;
        } else if abuse_named.contains(t) {
            abuse_t += 1;
        } else {
            collateral += 1;
            if samples.len() < 20 {
                let key = match (plan, Dim::parse(&t.dim)) {
                    (Some(plan), Ok(dim)) => mask_key(&dim, &t.key, plan),
                    _ => t.key.clone(),
                };
                samples.push(format!("{}:{key}", t.dim));
            }
        }
    }

    let mut patterns = Vec::new();
    let (mut abuse_e, mut abuse_a, mut legit_e, mut legit_a) = (0, 0, 0, 0);
    for ((label, pattern), mut row) in by_pattern {
        let (n, acted) = (row.entities, row.acted);
        match label {
            Label::Abuse => {
                abuse_e += n;
                abuse_a += acted;
            }
            Label::Legitimate => {
                legit_e += n;
                legit_a += acted;
            }
        }
        patterns.push(PatternScore {
            pattern,
            label,
            entities: n,
            acted,
            alerted_only: row.alerted_only,
            share_acted: if n == 0 { 0.0 } else { acted as f64 / n as f64 },
            median_minutes_to_act: median(&mut row.delays),
        });
    }
    let enforced = targets.len() as u64;
    Score {
        patterns,
        overall: Overall {
            actions: actions.len() as u64,
            enforcements: actions.iter().filter(|a| enforce(a)).count() as u64,
            enforced_targets: enforced,
            abuse_targets: abuse_t,
            legitimate_targets: legit_t,
            collateral,
            precision: (enforced > 0).then(|| abuse_t as f64 / enforced as f64),
            abuse_entities: abuse_e,
            abuse_acted: abuse_a,
            recall: (abuse_e > 0).then(|| abuse_a as f64 / abuse_e as f64),
            legitimate_entities: legit_e,
            legitimate_harmed: legit_a,
        },
        harmed,
        collateral_samples: samples,
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.digits$}"))
}

/// The table for people.
pub fn render(s: &Score) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<22} {:<10} {:>8} {:>6} {:>11} {:>7} {:>14}",
        "pattern", "label", "entities", "acted", "alert only", "share", "median min"
    );
    for p in &s.patterns {
        let label = match p.label {
            Label::Abuse => "abuse",
            Label::Legitimate => "legitimate",
        };
        let _ = writeln!(
            out,
            "{:<22} {:<10} {:>8} {:>6} {:>11} {:>7.3} {:>14}",
            p.pattern,
            label,
            p.entities,
            p.acted,
            p.alerted_only,
            p.share_acted,
            opt(p.median_minutes_to_act, 1)
        );
    }
    let o = &s.overall;
    let _ = writeln!(
        out,
        "\nactions {}: {} throttles/suspensions on {} targets ({} abuse, {} legitimate, {} collateral)",
        o.actions, o.enforcements, o.enforced_targets, o.abuse_targets, o.legitimate_targets, o.collateral
    );
    let _ = writeln!(
        out,
        "precision {}   recall {} ({} of {} abuse entities)   legitimate harmed {} of {}   collateral {}",
        opt(o.precision, 3),
        opt(o.recall, 3),
        o.abuse_acted,
        o.abuse_entities,
        o.legitimate_harmed,
        o.legitimate_entities,
        o.collateral
    );
    if !s.harmed.is_empty() {
        let _ = writeln!(out, "legitimate entities acted on: {}", s.harmed.join(", "));
    }
    if !s.collateral_samples.is_empty() {
        let _ = writeln!(out, "collateral targets: {}", s.collateral_samples.join(", "));
    }
    out
}
