//! The rule author's workbench: `anning tune` (one rule parameter swept over a range,
//! every value scored against a truth file, in one pass over the input) and `anning diff`
//! (the actions two packs take on the same input: gained, lost and changed, by rule and
//! target).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use anning_detector::mask::mask_key;
use anning_detector::{Action, Enricher, Registry};
use anning_rules::{Dim, Pack, RuleKind};
use serde::Serialize;

use crate::runtime::Serial;
use crate::score::{self, ActionRow};
use crate::source::{self, Input};
use anning_fixtures::synth::Truth;

/// `NAME=FROM..TO:STEP` → (name, values). Values run from FROM up to TO inclusive.
pub fn parse_sweep(s: &str) -> Result<(String, Vec<f64>), String> {
    let bad = || format!("`{s}`: expected NAME=FROM..TO:STEP, e.g. threshold=4..12:2 or band=0.85..0.95:0.05");
    let (name, range) = s.split_once('=').ok_or_else(bad)?;
    let (span, step) = range.split_once(':').ok_or_else(bad)?;
    let (from, to) = span.split_once("..").ok_or_else(bad)?;
    let num = |x: &str| x.trim().parse::<f64>().map_err(|_| bad());
    let (from, to, step) = (num(from)?, num(to)?, num(step)?);
    if step.is_nan() || step <= 0.0 || to < from || ((to - from) / step) > 1000.0 {
        return Err(format!("`{s}`: STEP must be positive, TO at least FROM, and at most 1000 values"));
    }
    let n = ((to - from) / step + 1e-9).floor() as usize;
    let values = (0..=n).map(|i| from + i as f64 * step).map(|v| (v * 1e9).round() / 1e9).collect();
    Ok((name.trim().to_string(), values))
}

/// The parameters `tune` can sweep, by rule kind.
pub const TUNABLE: &str = "rate: threshold, sequential; near_limit: limit, band, k, n; ratio: ratio, min; unsubscribe: threshold";

/// `pack` with rule `rule`'s `param` set to `v`, checked as the compiler would. Its hash
/// is the pack's mixed with the change, so its actions say which variant took them.
pub fn variant(pack: &Pack, rule: &str, param: &str, v: f64) -> Result<Pack, String> {
    let mut p = pack.clone();
    let r = p
        .rules
        .iter_mut()
        .find(|r| r.id == rule)
        .ok_or_else(|| format!("no rule `{rule}` in pack `{}`", pack.name))?;
    let whole = |what: &str| -> Result<u64, String> {
        if v >= 1.0 && v.fract() == 0.0 {
            Ok(v as u64)
        } else {
            Err(format!("`{what}` = {v} must be a whole number of at least 1"))
        }
    };
    match (&mut r.kind, param) {
        (RuleKind::Rate { threshold, .. }, "threshold") => *threshold = whole("threshold")?,
        (RuleKind::Rate { sequential, .. }, "sequential") => *sequential = Some(whole("sequential")?),
        (RuleKind::NearLimit { limit, lo, band, .. }, "limit") => {
            *limit = whole("limit")?;
            *lo = ((*band * *limit as f64).ceil() as u64).max(1);
        }
        (RuleKind::NearLimit { limit, lo, band, .. }, "band") => {
            if !(v > 0.0 && v < 1.0) {
                return Err(format!("`band` = {v} must be between 0 and 1"));
            }
            *band = v;
            *lo = ((v * *limit as f64).ceil() as u64).max(1);
        }
        (RuleKind::NearLimit { k, n, .. }, "k") => {
            *k = whole("k")? as u32;
            if *k > *n {
                return Err(format!("`k` = {v} is more than `n` = {n}"));
            }
        }
        (RuleKind::NearLimit { k, n, .. }, "n") => {
            *n = whole("n")? as u32;
            if *k > *n {
                return Err(format!("`n` = {v} is less than `k` = {k}"));
            }
        }
        (RuleKind::Ratio { ratio, .. }, "ratio") => {
            if v.is_nan() || v <= 0.0 {
                return Err(format!("`ratio` = {v} must be positive"));
            }
            *ratio = v;
        }
        (RuleKind::Ratio { min, .. }, "min") => *min = whole("min")?,
        (RuleKind::Unsubscribe { threshold, .. }, "threshold") => *threshold = whole("threshold")?,
        (kind, other) => {
            return Err(format!(
                "rule `{rule}` ({}) has no tunable parameter `{other}`; tunable: {TUNABLE}",
                kind.name()
            ));
        }
    }
    let mut h = xxhash_rust::xxh3::Xxh3::with_seed(pack.hash);
    h.update(format!("{rule}\0{param}\0{v}").as_bytes());
    p.hash = h.digest();
    Ok(p)
}

/// What one pass of [`run_packs`] gave.
pub struct Ran {
    /// Per pack.
    pub actions: Vec<Vec<Action>>,
    pub records: u64,
    /// Records behind the watermark and records the decoder rejected: not in any pack's
    /// actions, so a sweep or a diff says how many.
    pub late: u64,
    pub rejected: u64,
}

/// Runs `packs` over `inputs` in one pass.
pub fn run_packs(packs: &[Arc<Pack>], registry: &Registry, inputs: &[Input]) -> Result<Ran, String> {
    let en = Enricher::new(&packs[0], registry);
    let mut run = Serial::new(packs, en);
    for input in inputs {
        source::read(input, en, &mut run).map_err(|e| e.to_string())?;
    }
    Ok(Ran {
        records: run.records,
        late: run.late,
        rejected: run.rejects,
        actions: run.actions,
    })
}

/// One value of a sweep, scored.
#[derive(Debug, Clone, Serialize)]
pub struct TuneRow {
    pub value: f64,
    /// Actions of the pack (all rules).
    pub actions: u64,
    /// Actions of the swept rule.
    pub rule_actions: u64,
    pub enforced_targets: u64,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub legitimate_harmed: u64,
    pub collateral: u64,
}

fn rows(actions: &[Action]) -> Vec<ActionRow> {
    actions
        .iter()
        .filter(|a| !a.shadow)
        .map(|a| ActionRow {
            id: a.id.clone(),
            ts: a.ts,
            action: match a.action {
                anning_rules::ActionKind::Alert => score::ActionKind::Alert,
                anning_rules::ActionKind::Throttle => score::ActionKind::Throttle,
                anning_rules::ActionKind::Suspend => score::ActionKind::Suspend,
                anning_rules::ActionKind::Release => score::ActionKind::Release,
            },
            dim: a.dim.clone(),
            key: a.key.clone(),
            rule: a.rule.clone(),
        })
        .collect()
}

/// Scores each variant's actions.
pub fn tune_rows(values: &[f64], actions: &[Vec<Action>], rule: &str, truth: &[Truth], pack: &Pack) -> Vec<TuneRow> {
    values
        .iter()
        .zip(actions)
        .map(|(v, acts)| {
            let s = score::score(truth, &rows(acts), Some(&pack.number_plan));
            TuneRow {
                value: *v,
                actions: acts.len() as u64,
                rule_actions: acts.iter().filter(|a| a.rule == rule).count() as u64,
                enforced_targets: s.overall.enforced_targets,
                precision: s.overall.precision,
                recall: s.overall.recall,
                legitimate_harmed: s.overall.legitimate_harmed,
                collateral: s.overall.collateral,
            }
        })
        .collect()
}

fn opt(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.3}"))
}

pub fn render_tune(rule: &str, param: &str, rows: &[TuneRow]) -> String {
    let mut s = format!(
        "{:<10} {:>8} {:>8} {:>9} {:>9} {:>7} {:>9} {:>10}\n",
        param, "actions", rule, "enforced", "precision", "recall", "harmed", "collateral"
    );
    // Keep the header readable when the rule id is long.
    if rule.len() > 8 {
        s = format!(
            "{:<10} {:>8} {:>8} {:>9} {:>9} {:>7} {:>9} {:>10}\n",
            param, "actions", "of rule", "enforced", "precision", "recall", "harmed", "collateral"
        );
    }
    for r in rows {
        let _ = writeln!(
            s,
            "{:<10} {:>8} {:>8} {:>9} {:>9} {:>7} {:>9} {:>10}",
            r.value,
            r.actions,
            r.rule_actions,
            r.enforced_targets,
            opt(r.precision),
            opt(r.recall),
            r.legitimate_harmed,
            r.collateral
        );
    }
    s
}

pub fn tune_csv(param: &str, rows: &[TuneRow]) -> String {
    let mut s = format!("{param},actions,rule_actions,enforced_targets,precision,recall,legitimate_harmed,collateral\n");
    for r in rows {
        let f = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v}"));
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{}",
            r.value,
            r.actions,
            r.rule_actions,
            r.enforced_targets,
            f(r.precision),
            f(r.recall),
            r.legitimate_harmed,
            r.collateral
        );
    }
    s
}

/// What a rule does to one target under one pack.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Taken {
    /// Actions by kind, e.g. `throttle×1 suspend×2`.
    pub kinds: BTreeMap<String, u64>,
    /// Event time of the first action.
    pub first: i64,
}

/// One (rule, target) whose actions differ between the packs.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub rule: String,
    pub dim: String,
    /// Masked unless asked for raw.
    pub key: String,
    pub a: Option<Taken>,
    pub b: Option<Taken>,
}

/// Per rule: targets gained (only B acts), lost (only A) and changed (both, differently).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RuleDiff {
    pub rule: String,
    pub actions_a: u64,
    pub actions_b: u64,
    pub gained: u64,
    pub lost: u64,
    pub changed: u64,
    pub same: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Diff {
    pub rules: Vec<RuleDiff>,
    pub changes: Vec<Change>,
}

fn taken(actions: &[Action]) -> BTreeMap<(String, String, String), Taken> {
    let mut m: BTreeMap<(String, String, String), Taken> = BTreeMap::new();
    for a in actions {
        let t = m.entry((a.rule.clone(), a.dim.clone(), a.key.clone())).or_insert_with(|| Taken {
            kinds: BTreeMap::new(),
            first: a.ts,
        });
        *t.kinds.entry(a.action.name().to_string()).or_default() += 1;
        t.first = t.first.min(a.ts);
    }
    m
}

/// Compares the actions of pack A and pack B on the same input. Actions are matched by
/// rule and target (their ids differ: each carries its pack's hash).
pub fn diff(a: &[Action], b: &[Action], pack: &Pack, raw: bool) -> Diff {
    let (ta, tb) = (taken(a), taken(b));
    let mut per_rule: BTreeMap<String, RuleDiff> = BTreeMap::new();
    for x in a {
        per_rule.entry(x.rule.clone()).or_default().actions_a += 1;
    }
    for x in b {
        per_rule.entry(x.rule.clone()).or_default().actions_b += 1;
    }
    let mut changes = Vec::new();
    let keys: std::collections::BTreeSet<_> = ta.keys().chain(tb.keys()).cloned().collect();
    for k in keys {
        let (x, y) = (ta.get(&k), tb.get(&k));
        let d = per_rule.entry(k.0.clone()).or_default();
        match (x, y) {
            (Some(x), Some(y)) if x == y => {
                d.same += 1;
                continue;
            }
            (Some(_), Some(_)) => d.changed += 1,
            (Some(_), None) => d.lost += 1,
            (None, Some(_)) => d.gained += 1,
            (None, None) => unreachable!(),
        }
        let shown = match (raw, Dim::parse(&k.1)) {
            (false, Ok(dim)) => mask_key(&dim, &k.2, &pack.number_plan),
            _ => k.2.clone(),
        };
        changes.push(Change {
            rule: k.0.clone(),
            dim: k.1.clone(),
            key: shown,
            a: x.cloned(),
            b: y.cloned(),
        });
    }
    Diff {
        rules: per_rule
            .into_iter()
            .map(|(rule, mut d)| {
                d.rule = rule;
                d
            })
            .collect(),
        changes,
    }
}

pub fn render_diff(d: &Diff, limit: usize) -> String {
    let mut s = format!(
        "{:<34} {:>9} {:>9} {:>7} {:>7} {:>8} {:>7}\n",
        "rule", "actions A", "actions B", "gained", "lost", "changed", "same"
    );
    for r in &d.rules {
        let _ = writeln!(
            s,
            "{:<34} {:>9} {:>9} {:>7} {:>7} {:>8} {:>7}",
            r.rule, r.actions_a, r.actions_b, r.gained, r.lost, r.changed, r.same
        );
    }
    let show = |t: &Option<Taken>| match t {
        None => "-".to_string(),
        Some(t) => {
            let kinds: Vec<String> = t.kinds.iter().map(|(k, n)| format!("{k}×{n}")).collect();
            format!("{} from {}", kinds.join(" "), anning_rules::time::format_rfc3339(t.first))
        }
    };
    for (what, pick) in [("gained", (false, true)), ("lost", (true, false)), ("changed", (true, true))] {
        let list: Vec<&Change> = d.changes.iter().filter(|c| (c.a.is_some(), c.b.is_some()) == pick).collect();
        if list.is_empty() {
            continue;
        }
        let _ = writeln!(s, "\n{what} ({}):", list.len());
        for c in list.iter().take(limit) {
            let _ = writeln!(s, "  {:<34} {}:{}  A: {}  B: {}", c.rule, c.dim, c.key, show(&c.a), show(&c.b));
        }
        if list.len() > limit {
            let _ = writeln!(s, "  … and {} more (--limit)", list.len() - limit);
        }
    }
    s
}
