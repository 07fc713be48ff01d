//! Running a new pack without losing what state still means the same.

use super::*;

/// Whether state kept for `old` (of `op`) means the same for `new` (of `np`): same key,
/// records, window and measure. Thresholds, ladders and descriptions may differ.
fn same_state(op: &Pack, old: &Rule, np: &Pack, new: &Rule) -> bool {
    let targets = |p: &Pack, r: &Rule| r.targets.iter().map(|&t| p.dims[t].clone()).collect::<Vec<_>>();
    let kind = match (&old.kind, &new.kind) {
        (
            RuleKind::Rate {
                distinct: a,
                sequential: sa,
                ..
            },
            RuleKind::Rate {
                distinct: b,
                sequential: sb,
                ..
            },
        ) => a == b && sa.is_some() == sb.is_some(),
        (RuleKind::NearLimit { n: a, .. }, RuleKind::NearLimit { n: b, .. }) => a == b && op.lateness_ms == np.lateness_ms,
        (RuleKind::Ratio { numerator: a, .. }, RuleKind::Ratio { numerator: b, .. }) => a == b,
        (RuleKind::Unsubscribe { .. }, RuleKind::Unsubscribe { .. }) => true,
        _ => false,
    };
    kind && op.dims[old.dim] == np.dims[new.dim]
        && old.window_ms == new.window_ms
        && old.slide_ms == new.slide_ms
        && old.filter == new.filter
        && targets(op, old) == targets(np, new)
}

/// What a reload kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// (key, rule) states carried over.
    pub kept: u64,
    /// States of rules whose window changed, or that are gone.
    pub dropped: u64,
}

impl Engine {
    /// Runs `pack` from now on, keeping what state still means the same: a rule with the
    /// same id whose key, records, window and measure are unchanged keeps its counters and
    /// ladders (a changed threshold or ladder applies to them at once); other rules start
    /// empty. Actions in force on a target stay in force. Counters of [`EngineStats`] carry
    /// over by rule id.
    pub fn reload(&mut self, pack: Arc<Pack>) -> Reloaded {
        // Cold keys hold records, not slots: run them with the pack they came under first.
        self.warm_all();
        let old = std::mem::replace(&mut self.pack, Arc::clone(&pack));
        let mut dims = dim_states(&pack);
        if !self.cold_keys {
            dims.iter_mut().for_each(|d| d.cold = None);
        }
        let mut done = Reloaded::default();
        let mut old_dims = std::mem::take(&mut self.dims);
        for (od, ods) in old_dims.iter_mut().enumerate() {
            let nd = pack.dims.iter().position(|x| *x == old.dims[od]);
            // For each rule of the new dim: the slot index of the old rule whose state it keeps.
            let from: Vec<Option<usize>> = match nd {
                Some(nd) => dims[nd]
                    .rules
                    .iter()
                    .map(|&nr| {
                        ods.rules.iter().position(|&or| {
                            old.rules[or].id == pack.rules[nr].id && same_state(&old, &old.rules[or], &pack, &pack.rules[nr])
                        })
                    })
                    .collect(),
                None => Vec::new(),
            };
            for e in ods.table.drain() {
                let Some(nd) = nd else {
                    done.dropped += e.slots.len() as u64;
                    continue;
                };
                let mut old_slots: Vec<Option<RuleSlot>> = e.slots.into_vec().into_iter().map(Some).collect();
                let slots: Box<[RuleSlot]> = dims[nd]
                    .rules
                    .iter()
                    .zip(&from)
                    .map(|(_, f)| match f.and_then(|i| old_slots[i].take()) {
                        Some(s) => {
                            done.kept += 1;
                            s
                        }
                        None => empty_slot(),
                    })
                    .collect();
                done.dropped += old_slots.iter().filter(|s| s.is_some()).count() as u64;
                let seed = dims[nd].seed;
                let entry = Entry::warm(e.key, slots, e.active);
                dims[nd].table.insert_unique(entry.hash(seed), entry, |x| x.hash(seed));
            }
        }
        self.dims = dims;
        if let Some(o) = &self.only {
            self.only_d = pack.dims.iter().position(|x| x.name() == *o).unwrap_or(usize::MAX);
        }
        self.policy = Policy {
            allow: allow_map(&pack),
            ..Default::default()
        };
        let carry = |v: &[u64]| -> Vec<u64> {
            pack.rules
                .iter()
                .map(|r| old.rules.iter().position(|o| o.id == r.id).map_or(0, |i| v[i]))
                .collect()
        };
        self.stats.fired = carry(&self.stats.fired);
        self.stats.suppressed = carry(&self.stats.suppressed);
        self.stats.allowed = carry(&self.stats.allowed);
        self.stats.protected = carry(&self.stats.protected);
        done
    }
}
