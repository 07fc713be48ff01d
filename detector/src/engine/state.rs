//! A key's state: the dimensions' plans, a rule's fresh window, and when an entry is idle
//! (indistinguishable from a fresh one, so it may be evicted).

use super::*;

pub(super) fn dim_states(pack: &Pack) -> Vec<DimState> {
    (0..pack.dims.len())
        .map(|d| {
            let rules = dim_rules(pack, d);
            let history = rules
                .iter()
                .map(|&r| history_ms(&pack.rules[r], pack.lateness_ms))
                .max()
                .unwrap_or(0);
            let sweep_every = (history / 4).max(60_000);
            let suspect_slot = rules
                .iter()
                .map(|&r| pack.rules[r].suspect.as_ref().and_then(|s| rules.iter().position(|&x| x == s.rule)))
                .collect();
            DimState {
                cold: ColdPlan::new(pack, &rules),
                suspect_slot,
                rules,
                table: HashTable::new(),
                sweep_every,
                next_sweep: i64::MIN,
                seed: dim_seed(&pack.dims[d]),
                base: ahead::Base::default(),
            }
        })
        .collect()
}

/// Indices into `pack.rules` of the rules keyed by dim `d`, in pack order: a key's rule
/// slots, and the bits of a route's `wanted`.
pub(super) fn dim_rules(pack: &Pack, d: usize) -> Vec<usize> {
    (0..pack.rules.len()).filter(|&r| pack.rules[r].dim == d).collect()
}

/// How much event time a rule's state reaches back.
pub(super) fn history_ms(rule: &Rule, lateness_ms: i64) -> i64 {
    match rule.kind {
        RuleKind::Rate { .. } => rule.window_ms + lateness_ms,
        RuleKind::NearLimit { n, .. } => (n as i64 + 1) * rule.window_ms + lateness_ms,
        RuleKind::Ratio { .. } | RuleKind::Unsubscribe { .. } => rule.window_ms + lateness_ms,
    }
}

pub(super) fn empty_slot() -> RuleSlot {
    RuleSlot {
        window: Window::Unused,
        ladder: Ladder::default(),
        acted: None,
    }
}

/// A rule's window for one key, made when the rule first matches a record of the key.
pub(super) fn new_window(rule: &Rule, lateness_ms: i64) -> Window {
    let w = rule.bins();
    match rule.kind {
        RuleKind::Rate { sequential: Some(_), .. } => Window::Sequential {
            count: SlidingCount::new(w),
            last: None,
        },
        RuleKind::Rate { distinct: None, .. } => Window::Count(SlidingCount::new(w)),
        RuleKind::Rate { distinct: Some(_), .. } => Window::Distinct(Box::new((SlidingDistinct::new(w), VecDeque::new()))),
        RuleKind::Ratio { .. } => Window::Ratio(Box::new((SlidingCount::new(w), SlidingCount::new(w)))),
        RuleKind::Unsubscribe { .. } => Window::Unsubscribe(Box::new(Unsubscribed {
            since: Default::default(),
            violations: SlidingCount::new(w),
            recent: VecDeque::new(),
        })),
        RuleKind::NearLimit { n, .. } => {
            let lateness_bins = (lateness_ms + rule.slide_ms - 1) / rule.slide_ms + 1;
            Window::Near(Box::new(NearLimit::new(w, n as usize, lateness_bins as usize)))
        }
    }
}

/// A watermark below which rule `rule`'s `window` is certainly not idle in the sense of
/// [`is_idle`] (its records still count toward a window ending there); `i64::MIN` when it
/// gives no bound. Windows only move forward, so the bound holds until the key is evicted.
pub(super) fn busy_until(rule: &Rule, window: &Window) -> i64 {
    // The first idle bin `b` is watermark `b · slide`.
    let at = |bin: Option<i64>| bin.map_or(i64::MIN, |b| b.saturating_mul(rule.slide_ms));
    let ring = |r: &crate::window::BinRing| at(r.empty_from());
    match window {
        Window::Unused => i64::MIN,
        Window::Count(c) | Window::Sequential { count: c, .. } => ring(c.ring()),
        Window::Distinct(d) => ring(d.0.ring()),
        Window::Ratio(r) => ring(r.0.ring()).max(ring(r.1.ring())),
        Window::Near(n) => at(n.idle_bin()),
        Window::Unsubscribe(u) => ring(u.violations.ring()),
    }
}

/// Whether an entry is indistinguishable from a fresh one for every record at or after `wm`
/// (`wm_bins[i]`: `wm`'s bin for rule slot `i`).
pub(super) fn is_idle(pack: &Pack, rules: &[usize], e: &Entry, wm: i64, wm_bins: &[i64]) -> bool {
    if e.active.as_ref().is_some_and(|a| a.until > wm) {
        return false;
    }
    rules.iter().zip(e.slots.iter()).zip(wm_bins).all(|((&r, s), &wm_bin)| {
        let rule = &pack.rules[r];
        let window_idle = match &s.window {
            Window::Unused => true,
            Window::Count(w) => w.ring().is_empty_at(wm_bin),
            Window::Distinct(d) => d.0.ring().is_empty_at(wm_bin),
            Window::Near(w) => w.is_idle_at(wm_bin),
            Window::Sequential { count, .. } => count.ring().is_empty_at(wm_bin),
            Window::Ratio(r) => r.0.ring().is_empty_at(wm_bin) && r.1.ring().is_empty_at(wm_bin),
            Window::Unsubscribe(u) => {
                let remember = match rule.kind {
                    RuleKind::Unsubscribe { remember_ms, .. } => remember_ms,
                    _ => 0,
                };
                u.violations.ring().is_empty_at(wm_bin) && u.since.values().all(|&t| t + remember <= wm)
            }
        };
        let acted_idle = s
            .acted
            .as_ref()
            .is_none_or(|a| a.values().all(|(l, act)| act.until <= wm && l.is_idle_at(wm, &pack.escalation)));
        window_idle && acted_idle && s.ladder.is_idle_at(wm, &pack.escalation)
    })
}
