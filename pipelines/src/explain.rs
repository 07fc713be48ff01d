//! `anning explain ACTION_ID`: why an action was taken, from the audit log.
//!
//! The rule as it was (its table in the archived pack), the figures that tipped it, the
//! tipping record and, given the traffic, more records of the target from the rule's window,
//! the target's escalation history (actions and releases), and whether the action is still
//! in force. Subscriber numbers are masked unless `raw`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anning_detector::mask::{mask_key, mask_record_json};
use anning_detector::{Enricher, Record, Registry};
use anning_rules::time::format_rfc3339;
use anning_rules::{Dim, NumberPlan};
use serde_json::{Value, json};

use crate::audit::{self, Entry};
use crate::decode::Reject;
use crate::source::{self, Input};

/// Whether the action holds at the time asked about.
#[derive(Debug, Clone, PartialEq)]
pub enum Standing {
    /// An alert: tells the NOC, enforces nothing.
    AlertOnly,
    /// In force until the given time.
    InForce {
        until: Option<i64>,
    },
    Lapsed {
        at: i64,
    },
    Released {
        at: i64,
        by: String,
        reason: String,
    },
    /// Not yet taken at the time asked about.
    NotYet,
}

/// Everything `explain` shows.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub action: Entry,
    /// The rule's table from the archived pack, verbatim (`None`: pack not archived, or the
    /// rule is `release`).
    pub rule_text: Option<String>,
    pub evidence: Value,
    /// The tipping record, masked unless raw.
    pub record: Option<Value>,
    /// Records of the target from the rule's window before the action (given traffic).
    pub samples: Vec<Value>,
    /// Every audit entry of the same target, oldest first.
    pub history: Vec<Entry>,
    pub at: i64,
    pub standing: Standing,
    /// How to show the target (masked unless raw).
    pub shown_key: String,
}

/// What went wrong, naming the file or the id.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("{0}")]
    Audit(#[from] std::io::Error),
    #[error("no action {id} in the audit log at {dir} ({entries} entries)")]
    NotFound { id: String, dir: PathBuf, entries: usize },
    #[error("{0}")]
    Input(#[from] source::SourceError),
}

/// Options of [`explain`].
pub struct Ask<'a> {
    pub audit: &'a Path,
    pub id: &'a str,
    /// Event or wall-clock time (ms) at which to judge whether the action holds.
    pub at: i64,
    /// Traffic to take sample records from.
    pub inputs: &'a [Input],
    pub registry: &'a Registry,
    pub samples: usize,
    pub raw: bool,
}

pub fn explain(ask: &Ask<'_>) -> Result<Explanation, ExplainError> {
    let entries = audit::read(ask.audit)?;
    let Some(action) = entries.iter().find(|e| e.id == ask.id).cloned() else {
        return Err(ExplainError::NotFound {
            id: ask.id.to_string(),
            dir: ask.audit.to_path_buf(),
            entries: entries.len(),
        });
    };
    let source = audit::pack_source(ask.audit, &action.pack);
    let pack = source
        .as_deref()
        .and_then(|s| anning_rules::compile_named("archived pack", s).ok())
        .unwrap_or_else(anning_rules::default_pack);
    let plan = &pack.number_plan;
    let dim = Dim::parse(&action.dim).ok();
    let shown_key = match (&dim, ask.raw) {
        (Some(d), false) => mask_key(d, &action.key, plan),
        _ => action.key.clone(),
    };
    let rule_text = source.as_deref().and_then(|s| rule_table(s, &action.rule));
    let evidence = serde_json::from_str(&action.evidence).unwrap_or(Value::String(action.evidence.clone()));
    let record = action
        .record
        .as_deref()
        .and_then(|r| serde_json::from_str::<Value>(r).ok())
        .map(|v| mask_record(v, plan, ask.raw));
    let history: Vec<Entry> = entries
        .iter()
        .filter(|e| e.dim == action.dim && e.key == action.key)
        .cloned()
        .collect();
    let standing = standing(&action, &history, ask.at);
    let samples = match (&dim, ask.inputs.is_empty()) {
        (Some(d), false) => {
            let window = pack.rules.iter().find(|r| r.id == action.rule).map_or(3_600_000, |r| r.window_ms);
            let mut s = Samples {
                dim: d,
                key: &action.key,
                from: action.ts - window,
                to: action.ts,
                keep: ask.samples,
                found: Vec::new(),
                matched: 0,
            };
            let en = Enricher::new(&pack, ask.registry);
            for i in ask.inputs {
                source::read(i, en, &mut s)?;
            }
            s.found
                .into_iter()
                .filter_map(|r| serde_json::from_str::<Value>(&r).ok())
                .map(|v| mask_record(v, plan, ask.raw))
                .collect()
        }
        _ => Vec::new(),
    };
    Ok(Explanation {
        action,
        rule_text,
        evidence,
        record,
        samples,
        history,
        at: ask.at,
        standing,
        shown_key,
    })
}

/// The `[[rule]]` table (with its sub-tables) whose id is `id`, as written.
pub fn rule_table(source: &str, id: &str) -> Option<String> {
    let lines: Vec<&str> = source.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == "[[rule]]" {
            let mut j = i + 1;
            while j < lines.len() {
                let t = lines[j].trim_start();
                let header = lines[j].starts_with('[');
                if header && !(t.starts_with("[rule.") || t.starts_with("[[rule.")) {
                    break;
                }
                j += 1;
            }
            // Trailing comments and blank lines belong to whatever follows.
            let mut end = j;
            while end > i + 1 && (lines[end - 1].trim().is_empty() || lines[end - 1].trim_start().starts_with('#')) {
                end -= 1;
            }
            let block = &lines[i..end];
            let names_it = block.iter().any(|l| {
                let l = l.trim();
                l.strip_prefix("id")
                    .map(|rest| rest.trim_start().strip_prefix('=').map(str::trim))
                    .is_some_and(|v| v == Some(&format!("\"{id}\"")) || v == Some(&format!("'{id}'")))
            });
            if names_it {
                return Some(block.join("\n"));
            }
            i = j;
        } else {
            i += 1;
        }
    }
    None
}

fn mask_record(mut v: Value, plan: &NumberPlan, raw: bool) -> Value {
    if !raw {
        mask_record_json(&mut v, plan);
    }
    v
}

fn standing(action: &Entry, history: &[Entry], at: i64) -> Standing {
    if at < action.ts {
        return Standing::NotYet;
    }
    if action.action == "alert" || action.action == "release" {
        return Standing::AlertOnly;
    }
    let until = action.until.unwrap_or(i64::MAX);
    let release = history
        .iter()
        .find(|e| e.action == "release" && e.ts >= action.ts && e.ts < until.min(at.saturating_add(1)));
    if let Some(r) = release {
        return Standing::Released {
            at: r.ts,
            by: r.author.clone().unwrap_or_else(|| "?".into()),
            reason: r.reason.clone(),
        };
    }
    if at < until {
        Standing::InForce { until: action.until }
    } else {
        Standing::Lapsed { at: until }
    }
}

struct Samples<'a> {
    dim: &'a Dim,
    key: &'a str,
    from: i64,
    to: i64,
    keep: usize,
    /// The latest `keep` matching records, as JSON.
    found: Vec<String>,
    matched: u64,
}

impl source::Sink for Samples<'_> {
    fn record(&mut self, r: Record, _line: u64) {
        if r.ts < self.from || r.ts > self.to || self.keep == 0 {
            return;
        }
        let mut parts = self.key.splitn(self.dim.parts.len(), '+');
        if self.dim.parts.iter().all(|f| r.field(*f) == parts.next()) {
            self.matched += 1;
            if self.found.len() == self.keep {
                self.found.remove(0);
            }
            self.found.push(r.to_json());
        }
    }

    fn reject(&mut self, _r: Reject) {}
}

fn t(ms: i64) -> String {
    format_rfc3339(ms)
}

/// The explanation as text for a terminal.
pub fn render(x: &Explanation) -> String {
    let a = &x.action;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "action {}: {} {} {}{} at {} (rule {}, level {}, {}{})",
        a.id,
        a.action,
        a.dim,
        x.shown_key,
        a.rate.map(|r| format!(" to {r}/s")).unwrap_or_default(),
        t(a.ts),
        a.rule,
        a.level,
        a.origin,
        if a.shadow { ", shadow: never enforced" } else { "" }
    );
    let _ = writeln!(o, "  {}", a.reason);
    let _ = writeln!(o, "\nrule {} as it was (pack {}):", a.rule, a.pack);
    match &x.rule_text {
        Some(text) => {
            for l in text.lines() {
                let _ = writeln!(o, "  {l}");
            }
        }
        None => {
            let _ = writeln!(o, "  (the pack is not archived in this audit log)");
        }
    }
    let _ = writeln!(o, "\nwhat tipped it:");
    if let Some(m) = x.evidence.as_object() {
        for (k, v) in m {
            let _ = writeln!(o, "  {k:<12} {v}");
        }
    }
    if let Some(r) = &x.record {
        let _ = writeln!(o, "\ntipping record:\n  {r}");
    }
    if !x.samples.is_empty() {
        let _ = writeln!(o, "\nrecords of the target in the rule's window (latest {}):", x.samples.len());
        for s in &x.samples {
            let _ = writeln!(o, "  {s}");
        }
    }
    let _ = writeln!(o, "\nescalation history of {} {}:", a.dim, x.shown_key);
    for e in &x.history {
        let mark = if e.id == a.id { "*" } else { " " };
        let who = e.author.as_deref().map(|w| format!(" by {w}")).unwrap_or_default();
        let until = e.until.map(|u| format!(" until {}", t(u))).unwrap_or_default();
        let _ = writeln!(o, "{mark} {}  {:<8} level {}  {}{until}{who}", t(e.ts), e.action, e.level, e.rule);
    }
    let standing = match &x.standing {
        Standing::AlertOnly => "not an enforcement (alert or release): nothing to hold".to_string(),
        Standing::InForce { until: Some(u) } => format!("yes: in force until {}", t(*u)),
        Standing::InForce { until: None } => "yes: in force until released".to_string(),
        Standing::Lapsed { at } => format!("no: lapsed at {}", t(*at)),
        Standing::Released { at, by, reason } => format!("no: released at {} by {by} ({reason})", t(*at)),
        Standing::NotYet => "no: not yet taken at that time".to_string(),
    };
    let _ = writeln!(o, "\nin force at {}: {standing}", t(x.at));
    o
}

/// The explanation as one JSON object.
pub fn to_json(x: &Explanation) -> Value {
    let a = &x.action;
    let standing = match &x.standing {
        Standing::AlertOnly => json!({"in_force": false, "why": "alert"}),
        Standing::InForce { until } => json!({"in_force": true, "until": until}),
        Standing::Lapsed { at } => json!({"in_force": false, "why": "lapsed", "at": at}),
        Standing::Released { at, by, reason } => {
            json!({"in_force": false, "why": "released", "at": at, "by": by, "reason": reason})
        }
        Standing::NotYet => json!({"in_force": false, "why": "not yet taken"}),
    };
    json!({
        "id": a.id, "ts": a.ts, "action": a.action, "dim": a.dim, "key": x.shown_key,
        "rule": a.rule, "level": a.level, "rate": a.rate, "until": a.until, "reason": a.reason,
        "pack": a.pack, "origin": a.origin, "shadow": a.shadow,
        "rule_text": x.rule_text, "evidence": x.evidence, "record": x.record, "samples": x.samples,
        "history": x.history.iter().map(|e| json!({
            "id": e.id, "ts": e.ts, "action": e.action, "rule": e.rule, "level": e.level,
            "until": e.until, "author": e.author, "reason": e.reason,
        })).collect::<Vec<_>>(),
        "at": x.at,
        "standing": standing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_rule_table_with_its_subtables() {
        let src = "[pack]\nname = \"p\"\n\n[[rule]]\nid = \"a\"\nwindow = \"1h\"\n[rule.when]\ntype = \"sms\"\n\n# next\n[[rule]]\nid = \"b\"\n[[rule.ladder]]\naction = \"alert\"\n\n[protect]\nport_classes = []\n";
        assert_eq!(
            rule_table(src, "a").unwrap(),
            "[[rule]]\nid = \"a\"\nwindow = \"1h\"\n[rule.when]\ntype = \"sms\""
        );
        assert_eq!(
            rule_table(src, "b").unwrap(),
            "[[rule]]\nid = \"b\"\n[[rule.ladder]]\naction = \"alert\""
        );
        assert_eq!(rule_table(src, "c"), None);
    }
}
