//! `Engine::reload`: an identical pack changes nothing; a changed threshold keeps the
//! counters; a changed window starts empty; a rule that is gone loses its state.

use std::sync::Arc;

use anning_detector::{Action, Engine, Verdict, Watermark};
use anning_rules::{Pack, compile};

use crate::support::sms;

const DAY: i64 = 1_794_268_800_000;

fn pack(threshold: u64, window: &str) -> Arc<Pack> {
    Arc::new(
        compile(&format!(
            r#"
[[rule]]
id = "volume"
kind = "rate"
dim = "src"
when = {{ type = ["sms"] }}
window = "{window}"
slide = "1m"
threshold = {threshold}
ladder = [{{ action = "throttle", rate = 0.1, for = "1h" }}]

[[rule]]
id = "fanout"
kind = "rate"
dim = "src"
window = "1h"
slide = "1m"
threshold = 50
distinct = "dst"
ladder = [{{ action = "alert", for = "1h" }}]
"#
        ))
        .unwrap(),
    )
}

/// 200 messages from one subscriber to scattered numbers, one every 10 s.
fn records(p: &Pack) -> Vec<anning_detector::Record> {
    (0..200)
        .map(|i| {
            sms(
                p,
                DAY + i * 10_000,
                "13800000001",
                &format!("139{:08}", (i * 7919) % 100_000_000),
                &format!("m{i}"),
            )
        })
        .collect()
}

/// Runs the records through one engine, switching to `to` (if any) before record `at`.
fn run(from: Arc<Pack>, to: Option<(usize, Arc<Pack>)>) -> Vec<Action> {
    let recs = records(&from);
    let mut e = Engine::new(Arc::clone(&from), 0, 1);
    let mut wm = Watermark::new(from.lateness_ms, from.late_policy);
    let mut out = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        if let Some((at, p)) = &to
            && i == *at
        {
            e.reload(Arc::clone(p));
        }
        if let Verdict::Process { wm, .. } = wm.observe(r.ts) {
            e.process(r, wm, &mut out);
        }
    }
    out
}

fn fired(actions: &[Action], rule: &str) -> Vec<String> {
    actions
        .iter()
        .filter(|a| a.rule == rule)
        .map(|a| a.evidence["records"][0].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn an_identical_pack_changes_nothing() {
    let p = pack(150, "1h");
    let plain = run(Arc::clone(&p), None);
    let reloaded = run(Arc::clone(&p), Some((100, pack(150, "1h"))));
    assert_eq!(plain, reloaded);
    assert_eq!(fired(&plain, "volume"), ["m149"]);
}

#[test]
fn a_changed_threshold_keeps_the_counters() {
    // 120 messages under the old threshold of 150; the new threshold of 130 is reached by
    // the 130th message in all, not the 130th after the reload.
    let out = run(pack(150, "1h"), Some((120, pack(130, "1h"))));
    assert_eq!(fired(&out, "volume"), ["m129"]);
    // The unchanged rule kept its distinct values across the reload too.
    assert_eq!(fired(&out, "fanout"), ["m49"]);
}

#[test]
fn a_changed_window_starts_empty_and_other_rules_keep_theirs() {
    let out = run(pack(150, "1h"), Some((120, pack(50, "2h"))));
    assert_eq!(fired(&out, "volume"), ["m169"], "50 messages after the reload");
    assert_eq!(fired(&out, "fanout"), ["m49"]);
}

#[test]
fn a_removed_rule_loses_its_state_and_reports_it() {
    let p = pack(150, "1h");
    let recs = records(&p);
    let mut e = Engine::new(Arc::clone(&p), 0, 1);
    let mut out = Vec::new();
    for r in &recs[..10] {
        e.process(r, r.ts - 60_000, &mut out);
    }
    let only_fanout = Arc::new(
        compile("[[rule]]\nid = \"fanout\"\nkind = \"rate\"\ndim = \"src\"\nwindow = \"1h\"\nslide = \"1m\"\nthreshold = 50\ndistinct = \"dst\"\nladder = [{ action = \"alert\", for = \"1h\" }]\n").unwrap(),
    );
    let r = e.reload(only_fanout);
    assert_eq!((r.kept, r.dropped), (1, 1));
    assert_eq!(e.stats().fired.len(), 1);
}
