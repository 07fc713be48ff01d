//! The default pack against threshold dodgers (aligned to clock hours and shifted) and a
//! one-off greeting round.

use std::sync::Arc;

use anning_detector::Action;
use anning_rules::{ActionKind, default_pack};

use crate::support::{Rng, run, sms};

const HOUR: i64 = 3_600_000;
/// 2026-11-10T00:00:00Z
const DAY: i64 = 1_794_268_800_000;
const DODGER: &str = "13800138000";

/// The `i`-th of a set of distinct recipients that are not consecutive numbers (a sender
/// walking through consecutive numbers is a scanner, which these senders are not).
fn scattered(i: u64) -> String {
    format!("139{:08}", (i * 7919 + 12345) % 100_000_000)
}

/// `counts[h]` messages in hour `h` after `start`, evenly spread, to distinct recipients.
fn hours(pack: &anning_rules::Pack, start: i64, counts: &[u64]) -> Vec<anning_detector::Record> {
    let mut out = Vec::new();
    for (h, &c) in counts.iter().enumerate() {
        for i in 0..c {
            let ts = start + h as i64 * HOUR + (i as i64 * HOUR) / c as i64;
            let dst = scattered(h as u64 * 1000 + i);
            out.push(sms(pack, ts, DODGER, &dst, &format!("m{h}-{i}")));
        }
    }
    out
}

fn enforced(actions: &[Action]) -> Vec<&Action> {
    actions
        .iter()
        .filter(|a| a.key == DODGER && matches!(a.action, ActionKind::Throttle | ActionKind::Suspend))
        .collect()
}

fn check_dodger_caught(offset: i64, seed: u64) {
    let pack = Arc::new(default_pack());
    let mut rng = Rng(seed);
    let counts: Vec<u64> = (0..8).map(|_| rng.range(181, 199)).collect();
    let start = DAY + offset;
    let actions = run(&pack, &hours(&pack, start, &counts));
    let hits = enforced(&actions);
    let first = hits
        .first()
        .unwrap_or_else(|| panic!("dodger {counts:?} at offset {offset} was never throttled: {actions:#?}"));
    assert!(
        first.ts - start <= 3 * HOUR,
        "first enforcement {} min after start, want ≤ 180 (counts {counts:?})",
        (first.ts - start) / 60_000
    );
    assert_eq!(first.rule, "near-limit-hourly");
    assert!(
        first.reason.contains("between 180 and 199 messages against a limit of 200"),
        "{}",
        first.reason
    );
    // Dodging on after the first throttle lapses climbs the ladder.
    assert!(hits.iter().any(|a| a.level >= 2), "no escalation over 8 hours: {hits:#?}");
}

#[test]
fn clock_aligned_dodger_is_throttled_within_three_hours() {
    for seed in 1..6 {
        check_dodger_caught(0, seed);
    }
}

#[test]
fn dodger_shifted_by_half_an_hour_is_throttled_within_three_hours() {
    for seed in 11..16 {
        check_dodger_caught(30 * 60_000, seed);
    }
}

#[test]
fn burst_dodger_whose_hours_straddle_clock_hours_is_caught() {
    // 190 messages packed into the 20 minutes either side of :30, every hour: clock-hour
    // windows see ~95 + ~95 as well, but only windows starting at :10 see each burst whole.
    let pack = Arc::new(default_pack());
    let mut records = Vec::new();
    for h in 0..8 {
        let burst_start = DAY + h * HOUR + 20 * 60_000;
        for i in 0..190 {
            let ts = burst_start + i * 20 * 60_000 / 190;
            records.push(sms(&pack, ts, DODGER, &scattered(i as u64), &format!("b{h}-{i}")));
        }
    }
    let actions = run(&pack, &records);
    let hits = enforced(&actions);
    assert!(!hits.is_empty(), "burst dodger not caught: {actions:#?}");
    assert!(hits[0].ts - DAY <= 3 * HOUR);
}

#[test]
fn one_greeting_round_is_never_throttled() {
    let pack = Arc::new(default_pack());
    // A few messages an hour, and once 195 greetings within one hour.
    let mut counts = vec![3u64; 8];
    counts[2] = 195;
    for offset in [0, 30 * 60_000] {
        let actions = run(&pack, &hours(&pack, DAY + offset, &counts));
        let hits = enforced(&actions);
        assert!(hits.is_empty(), "greeting round was enforced: {hits:#?}");
    }
    // Sent as fast as a phone can (a group send in a few minutes): an alert at most.
    let mut records = Vec::new();
    for i in 0..195 {
        records.push(sms(&pack, DAY + i * 1000, DODGER, &scattered(i as u64), &format!("g{i}")));
    }
    let actions = run(&pack, &records);
    assert!(enforced(&actions).is_empty(), "{actions:#?}");
    assert!(actions.iter().all(|a| a.action == ActionKind::Alert));
    assert!(
        actions.iter().any(|a| a.rule == "subscriber-burst"),
        "a burst should at least alert: {actions:#?}"
    );
}

#[test]
fn over_the_limit_is_throttled_once_not_on_every_record() {
    let pack = Arc::new(default_pack());
    let actions = run(&pack, &hours(&pack, DAY, &[260]));
    let limit: Vec<&Action> = actions.iter().filter(|a| a.rule == "subscriber-hourly-limit").collect();
    assert_eq!(limit.len(), 1, "{limit:#?}");
    assert_eq!(limit[0].action, ActionKind::Throttle);
    assert_eq!(limit[0].evidence["count"], 200);
    assert_eq!(limit[0].until, Some(limit[0].ts + HOUR));
}

#[test]
fn release_lifts_an_action_and_resets_the_ladder() {
    let pack = Arc::new(default_pack());
    let mut engine = anning_detector::Engine::new(Arc::clone(&pack), 0, 1);
    let mut out = Vec::new();
    for r in hours(&pack, DAY, &[210]) {
        let wm = r.ts - pack.lateness_ms;
        engine.process(&r, wm, &mut out);
    }
    let t = out.iter().find(|a| a.action == ActionKind::Throttle).expect("throttled").clone();
    let rel = engine
        .release("src", DODGER, t.ts + 1000, "appeal 42 upheld")
        .expect("something to release");
    assert_eq!(rel.action, ActionKind::Release);
    assert_eq!(rel.evidence["lifted"], "throttle");
    assert!(
        engine.release("src", DODGER, t.ts + 2000, "again").is_none(),
        "nothing left to release"
    );
}
