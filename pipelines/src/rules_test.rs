//! `anning rules test`: rule tests written beside a pack, in the spirit of
//! `promtool test rules` and `vector test`. Records in (inline, or a compact repetition),
//! expected actions out, and targets that must not be acted on.
//!
//! ```toml
//! # default.tests.toml, beside default.toml
//! registry = """
//! port,sp,class,signatures
//! 10690000001,900001,marketing,京东
//! """
//!
//! [[test]]
//! name = "a dodger's SIM sending loan bait is throttled within minutes"
//! records = ['{"ts":"2026-11-10T08:00:00Z","type":"sms","src":"13800000001","dst":"13900000002","text":"在吗"}']
//!
//! [[test.repeat]]        # 10 messages over 5 minutes, to scattered numbers
//! record = { type = "sms", src = "17000000001", dst = "1390{s7}", text = "额度待领取 t.cn/x 回T退订" }
//! start = "2026-11-10T08:00:00Z"
//! count = 10
//! over = "5m"
//! rounds = 1             # repeat the round…
//! every = "1h"           # …this often
//!
//! [[test.expect]]
//! rule = "subscriber-commercial"
//! action = "throttle"
//! dim = "src"
//! key = "17000000001"
//! by = "+5m"             # at or before: RFC 3339, or relative to the first record
//!
//! [[test.absent]]        # no throttle or suspension of this target (by any rule;
//! dim = "src"            # `rule` to name one, `alerts = true` to forbid alerts too,
//! key = "13800000001"    # `before` to look only at actions before a time)
//! ```
//!
//! In a repeated record's strings, `{n}` is the record's number (0, 1, … across rounds),
//! `{n7}` the same zero-padded to 7 digits, `{s7}` a 7-digit number distinct for each `n`
//! but not consecutive (scattered destinations), `{k}` the number within the round and
//! `{r}` the round.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anning_detector::mask::mask_key;
use anning_detector::{Action, Enricher, Record, Registry};
use anning_rules::duration::parse_duration_ms;
use anning_rules::time::parse_rfc3339;
use anning_rules::{ActionKind, Pack};
use serde::Deserialize;

use crate::decode::Reject;
use crate::source::{self, Sink};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    /// The pack under test, relative to the test file (default: `X.toml` for `X.tests.toml`).
    pack: Option<String>,
    /// Port registry (CSV text) shared by every test.
    registry: Option<String>,
    #[serde(default)]
    test: Vec<TestCase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestCase {
    name: String,
    /// Registry for this test instead of the file's.
    registry: Option<String>,
    #[serde(default)]
    records: Vec<String>,
    #[serde(default)]
    repeat: Vec<Repeat>,
    #[serde(default)]
    expect: Vec<Expect>,
    #[serde(default)]
    absent: Vec<Absent>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Repeat {
    record: toml::Table,
    start: String,
    count: u64,
    over: Option<String>,
    #[serde(default = "one")]
    rounds: u64,
    every: Option<String>,
}

fn one() -> u64 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    rule: String,
    action: String,
    dim: String,
    key: String,
    by: Option<String>,
    /// The ladder level the action must have.
    level: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Absent {
    rule: Option<String>,
    dim: String,
    key: String,
    /// Only actions before this time count (RFC 3339 or `+DURATION`).
    before: Option<String>,
    /// Also no alerts.
    #[serde(default)]
    alerts: bool,
}

/// The outcome of one test file.
#[derive(Debug, Default)]
pub struct Report {
    pub passed: Vec<String>,
    /// (test name, what went wrong).
    pub failed: Vec<(String, String)>,
    /// Tests left out by `--run`.
    pub filtered: usize,
    /// Rule ids of the pack that no test expects an action from.
    pub untested: Vec<String>,
}

/// A test file that cannot be run: where and what.
#[derive(Debug, thiserror::Error)]
pub enum TestFileError {
    #[error("{path}: cannot read: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("{0}")]
    Pack(#[from] anning_rules::PackError),
}

/// The test file for `path`: `path` itself when it is a `.tests.toml`, else the
/// `NAME.tests.toml` beside the pack `NAME.toml`.
pub fn tests_path(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.ends_with(".tests.toml") {
        return path.to_path_buf();
    }
    let stem = name.strip_suffix(".toml").unwrap_or(name);
    path.with_file_name(format!("{stem}.tests.toml"))
}

/// The rule ids the tests beside pack `path` expect an action from, without running them;
/// `None` when there is no test file.
pub fn expected_rules(path: &Path) -> Result<Option<std::collections::BTreeSet<String>>, TestFileError> {
    let tpath = tests_path(path);
    let shown = tpath.display().to_string();
    let text = match std::fs::read_to_string(&tpath) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(TestFileError::Read { path: shown, source }),
    };
    let file: TestFile = toml::from_str(&text).map_err(|e| TestFileError::Invalid {
        path: shown,
        message: located(&text, &e),
    })?;
    Ok(Some(
        file.test.iter().flat_map(|t| t.expect.iter().map(|e| e.rule.clone())).collect(),
    ))
}

/// Runs the tests for `path` (a pack or its test file); `filter` keeps tests whose name
/// contains it.
pub fn run_file(path: &Path, filter: Option<&str>) -> Result<Report, TestFileError> {
    let tpath = tests_path(path);
    let shown = tpath.display().to_string();
    let text = std::fs::read_to_string(&tpath).map_err(|source| TestFileError::Read {
        path: shown.clone(),
        source,
    })?;
    let file: TestFile = toml::from_str(&text).map_err(|e| TestFileError::Invalid {
        path: shown.clone(),
        message: located(&text, &e),
    })?;
    let pack_path = match &file.pack {
        Some(p) => tpath.with_file_name(p),
        None => {
            let name = tpath.file_name().and_then(|n| n.to_str()).unwrap_or("");
            tpath.with_file_name(format!("{}.toml", name.trim_end_matches(".tests.toml")))
        }
    };
    let pack = anning_rules::load(&pack_path)?;
    let invalid = |message: String| TestFileError::Invalid {
        path: shown.clone(),
        message,
    };
    let shared = match &file.registry {
        Some(csv) => Registry::parse(csv).map_err(|e| invalid(format!("registry: {}", e[0])))?,
        None => Registry::default(),
    };
    let mut report = Report::default();
    let mut expected_rules = std::collections::BTreeSet::new();
    for t in &file.test {
        for e in &t.expect {
            expected_rules.insert(e.rule.clone());
        }
        if filter.is_some_and(|f| !t.name.contains(f)) {
            report.filtered += 1;
            continue;
        }
        let own;
        let registry = match &t.registry {
            Some(csv) => {
                own = Registry::parse(csv).map_err(|e| invalid(format!("test \"{}\": registry: {}", t.name, e[0])))?;
                &own
            }
            None => &shared,
        };
        match run_case(&pack, registry, t) {
            Ok(()) => report.passed.push(t.name.clone()),
            Err(why) => report.failed.push((t.name.clone(), why)),
        }
    }
    report.untested = pack
        .rules
        .iter()
        .filter(|r| !expected_rules.contains(&r.id))
        .map(|r| r.id.clone())
        .collect();
    Ok(report)
}

/// A TOML error as `line:col: message`.
fn located(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().to_string();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("{line}:{col}: {msg}")
        }
        None => msg,
    }
}

struct Collect {
    records: Vec<Record>,
    rejects: Vec<Reject>,
}

impl Sink for Collect {
    fn record(&mut self, r: Record, _line: u64) {
        self.records.push(r);
    }
    fn reject(&mut self, r: Reject) {
        self.rejects.push(r);
    }
}

/// The test's records as JSON lines, in time order (ties in the order written).
fn expand(t: &TestCase) -> Result<Vec<(i64, String)>, String> {
    let mut out = Vec::new();
    for (i, line) in t.records.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("records[{i}]: {e}"))?;
        let ts = match &v["ts"] {
            serde_json::Value::Number(n) => n.as_i64().ok_or(format!("records[{i}]: `ts` is not an integer"))?,
            serde_json::Value::String(s) => parse_rfc3339(s).map_err(|e| format!("records[{i}]: `ts`: {e}"))?,
            _ => return Err(format!("records[{i}]: no `ts`")),
        };
        out.push((ts, line.clone()));
    }
    for (j, rep) in t.repeat.iter().enumerate() {
        let at = |what: &str| format!("repeat[{j}]: {what}");
        let start = parse_rfc3339(&rep.start).map_err(|e| at(&format!("`start`: {e}")))?;
        let over = match &rep.over {
            Some(o) => parse_duration_ms(o).map_err(|e| at(&format!("`over`: {e}")))?,
            None => 0,
        };
        let every = match &rep.every {
            Some(o) => parse_duration_ms(o).map_err(|e| at(&format!("`every`: {e}")))?,
            None if rep.rounds > 1 => return Err(at("`rounds` > 1 needs `every`")),
            None => 0,
        };
        if rep.count == 0 || rep.count * rep.rounds > 1_000_000 {
            return Err(at("`count` × `rounds` must be between 1 and 1000000"));
        }
        for r in 0..rep.rounds {
            for k in 0..rep.count {
                let n = r * rep.count + k;
                let ts = start + r as i64 * every + (over as u128 * k as u128 / rep.count as u128) as i64;
                let mut obj = serde_json::Map::new();
                obj.insert("ts".into(), ts.into());
                for (name, v) in &rep.record {
                    let v = match v {
                        toml::Value::String(s) => serde_json::Value::String(
                            s.replace("{n7}", &format!("{n:07}"))
                                .replace("{s7}", &format!("{:07}", (n * 7919 + 12345) % 10_000_000))
                                .replace("{n}", &n.to_string())
                                .replace("{k}", &k.to_string())
                                .replace("{r}", &r.to_string()),
                        ),
                        toml::Value::Integer(i) => (*i).into(),
                        toml::Value::Float(f) => serde_json::json!(f),
                        toml::Value::Boolean(b) => (*b).into(),
                        other => return Err(at(&format!("`record.{name}` = {other}: strings, numbers and booleans only"))),
                    };
                    obj.insert(name.clone(), v);
                }
                out.push((ts, serde_json::Value::Object(obj).to_string()));
            }
        }
    }
    out.sort_by_key(|(ts, _)| *ts);
    Ok(out)
}

fn run_case(pack: &Pack, registry: &Registry, t: &TestCase) -> Result<(), String> {
    let lines = expand(t)?;
    let first = lines.first().map(|(ts, _)| *ts).ok_or("the test has no records")?;
    let text: String = lines.iter().map(|(_, l)| format!("{l}\n")).collect();
    let en = Enricher::new(pack, registry);
    let mut sink = Collect {
        records: Vec::new(),
        rejects: Vec::new(),
    };
    source::read_jsonl("records", text.as_bytes(), en, &mut sink).map_err(|e| e.to_string())?;
    if let Some(r) = sink.rejects.first() {
        return Err(format!("a test record was rejected: {r}"));
    }
    let actions = replay(pack, en, sink.records);

    let mut problems = String::new();
    let when = |s: &str| -> Result<i64, String> {
        match s.strip_prefix('+') {
            Some(d) => parse_duration_ms(d)
                .map(|ms| first + ms)
                .map_err(|e| format!("`by` = \"{s}\": {e}")),
            None => parse_rfc3339(s).map_err(|e| format!("`by` = \"{s}\": {e}")),
        }
    };
    for e in &t.expect {
        let by = e.by.as_deref().map(when).transpose()?;
        let kind = ActionKind::from_name(&e.action).ok_or(format!("`action` = \"{}\" is not an action", e.action))?;
        let hit = actions
            .iter()
            .find(|a| a.rule == e.rule && a.action == kind && a.dim == e.dim && a.key == e.key && e.level.is_none_or(|l| a.level == l));
        match (hit, by) {
            (Some(a), Some(by)) if a.ts > by => writeln!(
                problems,
                "  expected {} {} {} by rule {} at or before {}; it came {} s late",
                e.action,
                e.dim,
                e.key,
                e.rule,
                by,
                (a.ts - by) / 1000
            )
            .unwrap(),
            (Some(_), _) => {}
            (None, _) => writeln!(
                problems,
                "  expected {} {} {} by rule {}{}{}; not taken",
                e.action,
                e.dim,
                e.key,
                e.rule,
                e.level.map(|l| format!(" at level {l}")).unwrap_or_default(),
                by.map(|b| format!(" at or before {b}")).unwrap_or_default()
            )
            .unwrap(),
        }
    }
    for a in &t.absent {
        let before = a.before.as_deref().map(when).transpose()?.unwrap_or(i64::MAX);
        for got in actions.iter().filter(|x| {
            x.ts < before
                && x.dim == a.dim
                && x.key == a.key
                && a.rule.as_ref().is_none_or(|r| *r == x.rule)
                && (a.alerts || x.action != ActionKind::Alert)
        }) {
            writeln!(
                problems,
                "  expected no action on {} {}; got {} by rule {}",
                a.dim, a.key, got.action, got.rule
            )
            .unwrap();
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    problems.push_str("  actions taken:\n");
    if actions.is_empty() {
        problems.push_str("    none\n");
    }
    for a in &actions {
        let dim = anning_rules::Dim::parse(&a.dim).expect("engine dims parse");
        writeln!(
            problems,
            "    {} {} {} {} by {} at {}: {}\n      evidence: {}",
            a.action,
            a.dim,
            mask_key(&dim, &a.key, &pack.number_plan),
            a.rate.map(|r| format!("({r}/s)")).unwrap_or_default(),
            a.rule,
            a.ts,
            a.reason,
            a.evidence
        )
        .unwrap();
    }
    Err(problems)
}

/// One shard, in time order, with the pack's watermark and the input-order joins.
fn replay(pack: &Pack, en: Enricher<'_>, records: Vec<Record>) -> Vec<Action> {
    let mut run = crate::runtime::Serial::new(&[std::sync::Arc::new(pack.clone())], en);
    for r in records {
        run.push(r);
    }
    run.actions.pop().unwrap_or_default()
}
