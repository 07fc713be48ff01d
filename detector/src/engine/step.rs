//! One rule's window update for one record: shared by the live path and by warming a cold
//! key (replaying the records it held, see `cold`).

use std::borrow::Cow;

use super::cold::{ColdPlan, Event};
use super::*;

/// What a window update reads of a record.
pub(super) enum Input<'a> {
    Live(&'a Record),
    /// A record a cold key held, with its dimension's plan.
    Cold(&'a Event, &'a ColdPlan),
}

impl Input<'_> {
    fn ts(&self) -> i64 {
        match self {
            Input::Live(r) => r.ts,
            Input::Cold(e, _) => e.ts,
        }
    }

    /// The value of field `f` (what `distinct` rules count).
    fn value(&self, f: Field) -> Option<Cow<'_, str>> {
        match self {
            Input::Live(r) => r.field(f).map(Cow::Borrowed),
            Input::Cold(e, plan) => {
                debug_assert_eq!(plan.value, Some(f), "a cold plan holds its dim's one distinct field");
                e.value().map(Cow::Owned)
            }
        }
    }

    /// The destination as a number (what `sequential` rules compare).
    fn dst_number(&self) -> Option<u64> {
        match self {
            Input::Live(r) => r.dst().and_then(as_number),
            Input::Cold(e, plan) => {
                debug_assert_eq!(plan.value, Some(Field::Dst), "sequential rules make the cold value dst");
                e.number()
            }
        }
    }

    /// Whether slot `i`'s rule filter (`den`) or a ratio's numerator (`num`) matches.
    fn ratio_match(&self, i: usize, rule: &Rule, numerator: &Filter) -> (bool, bool) {
        match self {
            Input::Live(r) => (matches(&rule.filter, r), matches(numerator, r)),
            Input::Cold(e, plan) => plan.ratio_bits(e, i),
        }
    }
}

/// Updates slot `i` of `slots` (rule `rules[i]`) with `input` at watermark `wm`; returns the
/// hit, if the rule's condition holds, and the suspicion that scaled it.
pub(super) fn step<'p>(
    pack: &'p Pack,
    rules: &[usize],
    suspect_slot: &[Option<usize>],
    slots: &mut [RuleSlot],
    i: usize,
    input: &Input<'_>,
    wm: i64,
) -> (Option<Hit>, Option<&'p anning_rules::Suspect>) {
    let rule = &pack.rules[rules[i]];
    let ts = input.ts();
    // Suspicion from another rule of this dim (complaints): a lower threshold and a higher
    // starting rung while that rule holds for this key.
    let suspected = rule.suspect.as_ref().filter(|s| {
        let j = suspect_slot[i].expect("suspect rules share the dim");
        holds(&pack.rules[s.rule], &slots[j].window, ts)
    });
    let scale = |t: u64| suspected.map_or(t, |s| ((t as f64 * s.factor).ceil() as u64).max(1));
    let slot = &mut slots[i];
    if matches!(slot.window, Window::Unused) {
        slot.window = new_window(rule, pack.lateness_ms);
    }
    let bin = ts.div_euclid(rule.slide_ms);
    let hit = match (&rule.kind, &mut slot.window) {
        (RuleKind::Rate { threshold, .. }, Window::Count(w)) => {
            let count = w.add(bin);
            (count >= scale(*threshold)).then_some(Hit::Rate { count })
        }
        (
            RuleKind::Rate {
                threshold,
                distinct: Some(f),
                ..
            },
            Window::Distinct(d),
        ) => match input.value(*f) {
            Some(v) => {
                let (w, samples) = &mut **d;
                let count = w.add(bin, xxhash_rust::xxh3::xxh3_64(v.as_bytes()));
                let threshold = scale(*threshold);
                // Only keys near the threshold keep names: the latest values are the ones
                // that tipped it.
                if count + SAMPLES as u64 > threshold {
                    let seen = samples.iter().position(|x| *x == *v).and_then(|i| samples.remove(i));
                    samples.push_back(seen.unwrap_or_else(|| v.as_ref().into()));
                    if samples.len() > SAMPLES {
                        samples.pop_front();
                    }
                }
                (count >= threshold).then_some(Hit::Distinct { count })
            }
            None => None,
        },
        (
            RuleKind::Rate {
                threshold,
                sequential: Some(d),
                ..
            },
            Window::Sequential { count, last },
        ) => match input.dst_number() {
            Some(n) => {
                let close = last.is_some_and(|l| l.abs_diff(n) <= *d);
                *last = Some(n);
                let c = if close { count.add(bin) } else { count.at(bin) };
                (close && c >= scale(*threshold)).then_some(Hit::Rate { count: c })
            }
            None => None,
        },
        (RuleKind::NearLimit { limit, lo, k, n, .. }, Window::Near(w)) => {
            let wm_bin = wm.div_euclid(rule.slide_ms);
            w.observe(bin, wm_bin, *lo, *limit, *k, *n).map(Hit::Near)
        }
        (
            RuleKind::Ratio {
                numerator,
                ratio,
                min,
                below,
            },
            Window::Ratio(r),
        ) => {
            let (num, den) = &mut **r;
            let (is_den, is_num) = input.ratio_match(i, rule, numerator);
            let d = if is_den { den.add(bin) } else { den.at(bin) };
            let n = if is_num { num.add(bin) } else { num.at(bin) };
            let r = n as f64 / d.max(1) as f64;
            let tipped = if *below { r <= *ratio } else { r >= *ratio };
            (d >= *min && tipped).then_some(Hit::Ratio { num: n, den: d })
        }
        (
            RuleKind::Unsubscribe {
                grace_ms,
                remember_ms,
                threshold,
            },
            Window::Unsubscribe(u),
        ) => match input {
            Input::Live(rec) => unsubscribe(u, rec, bin, *grace_ms, *remember_ms, scale(*threshold), &pack.number_plan),
            Input::Cold(..) => unreachable!("dims with unsubscribe rules keep no cold keys"),
        },
        _ => unreachable!("slot built for its rule"),
    };
    (hit, suspected)
}

/// Whether a `ratio` rule's condition holds for its key over the window ending at `ts`.
pub(super) fn holds(rule: &Rule, window: &Window, ts: i64) -> bool {
    let (RuleKind::Ratio { ratio, min, below, .. }, Window::Ratio(r)) = (&rule.kind, window) else {
        return false;
    };
    let (num, den) = &**r;
    let bin = ts.div_euclid(rule.slide_ms);
    let from = bin - rule.bins() as i64 + 1;
    let (n, d) = (num.ring().range_sum(from, bin), den.ring().range_sum(from, bin));
    let r = n as f64 / d.max(1) as f64;
    d >= *min && if *below { r <= *ratio } else { r >= *ratio }
}

/// An unsubscribe rule's step for one record of its signature.
pub(super) fn unsubscribe(
    u: &mut Unsubscribed,
    rec: &Record,
    bin: i64,
    grace_ms: i64,
    remember_ms: i64,
    threshold: u64,
    plan: &anning_rules::NumberPlan,
) -> Option<Hit> {
    if rec.unsubscribe {
        let who = xxhash_rust::xxh3::xxh3_64(rec.src()?.as_bytes());
        match u.since.get_mut(&who) {
            Some(t) if *t + remember_ms > rec.ts => *t = (*t).min(rec.ts),
            Some(t) => *t = rec.ts,
            None => {
                u.since.insert(who, rec.ts);
            }
        }
        if u.since.len() > 1024 && u.since.len().is_power_of_two() {
            u.since.retain(|_, t| *t + remember_ms > rec.ts);
        }
        return None;
    }
    let dst = rec.dst()?;
    let since = *u.since.get(&xxhash_rust::xxh3::xxh3_64(dst.as_bytes()))?;
    if rec.ts < since + grace_ms || rec.ts >= since + remember_ms {
        return None;
    }
    let count = u.violations.add(bin);
    u.recent
        .push_back((rec.ts, mask_addr(dst, plan), rec.get(Slot::Port).unwrap_or("").to_string()));
    if u.recent.len() > RECENT_VIOLATIONS {
        u.recent.pop_front();
    }
    (count >= threshold).then(|| Hit::Unsubscribe {
        count,
        recent: u.recent.iter().cloned().collect(),
    })
}
