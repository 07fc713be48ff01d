//! One shard of the detector: keyed state for the `(dim, key)` pairs it owns, advanced by
//! records in event time.
//!
//! A record is processed with the watermark the router computed for the whole stream at that
//! point, so a key's state depends only on its own records and those watermarks: any number
//! of shards gives the same actions. Keys whose state has gone back to what a fresh key would
//! have (empty windows, ladders decayed, no action in force) are evicted, so memory follows
//! the active keys.

use std::sync::Arc;

use anning_rules::{ActionKind, Field, Filter, Pack, Rule, RuleKind};
use hashbrown::HashTable;
use serde_json::json;

use crate::action::{Action, action_id};
use crate::escalation::{Active, Ladder, step_for};
use crate::near_limit::{NearLimit, NearLimitHit};
use crate::record::Record;
use crate::window::{SlidingCount, SlidingDistinct};
use anning_rules::duration::format_duration_ms as dur;

/// Counters of one shard.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineStats {
    /// Keys currently held.
    pub keys: u64,
    /// Keys evicted because idle.
    pub evicted: u64,
    /// Per rule (pack order): times the rule's condition held.
    pub fired: Vec<u64>,
    /// Per rule: firings not actioned because the target was already under an equal or
    /// stronger action.
    pub suppressed: Vec<u64>,
}

/// The state of one rule for one key.
#[derive(Debug, Clone)]
enum Window {
    Count(SlidingCount),
    Distinct(SlidingDistinct),
    Near(NearLimit),
}

#[derive(Debug, Clone)]
struct RuleSlot {
    window: Window,
    ladder: Ladder,
}

/// Everything kept for one `(dim, key)`.
#[derive(Debug)]
struct Entry {
    hash: u64,
    key: Box<str>,
    /// One slot per rule of this dim, in [`DimState::rules`] order.
    slots: Box<[RuleSlot]>,
    /// The action the target is under, from whichever rule.
    active: Option<Active>,
}

#[derive(Debug)]
struct DimState {
    /// Indices into `pack.rules` of the rules keyed by this dim.
    rules: Vec<usize>,
    table: HashTable<Entry>,
    /// Event time between sweeps for idle keys.
    sweep_every: i64,
    /// Next watermark at which to sweep.
    next_sweep: i64,
}

/// One shard's detector.
pub struct Engine {
    pack: Arc<Pack>,
    shard: u64,
    shards: u64,
    dims: Vec<DimState>,
    /// Reused buffer for building compound keys.
    scratch: String,
    stats: EngineStats,
}

/// Hash of a key of dim `d` given its parts; also decides which shard owns it.
pub fn key_hash(d: usize, parts: &[&str]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::with_seed(d as u64);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b"+");
        }
        h.update(p.as_bytes());
    }
    h.digest()
}

/// The shard (of `shards`) that owns a key hash.
pub fn shard_of(hash: u64, shards: u64) -> u64 {
    // Mix first so the shard does not fix the low bits the hash table buckets by.
    ((hash.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) * shards) >> 32
}

fn matches(f: &Filter, r: &Record) -> bool {
    f.kinds & r.kind.bit() != 0
        && f.src_class & r.src_class.bit() != 0
        && f.dst_class & r.dst_class.bit() != 0
        && (f.port_class == u8::MAX || (r.get(crate::record::Slot::Port).is_some() && f.port_class & r.port_class.bit() != 0))
        && (f.status == u8::MAX || r.status.is_some_and(|s| f.status & s.bit() != 0))
        && f.answered.is_none_or(|a| r.answered == Some(a))
}

fn noun(f: &Filter) -> &'static str {
    use anning_rules::RecordKind as K;
    match f.kinds {
        k if k == K::Sms.bit() => "messages",
        k if k == K::Call.bit() => "calls",
        k if k == K::Dlr.bit() => "delivery reports",
        k if k == K::Complaint.bit() => "complaints",
        _ => "records",
    }
}

/// What a rule saw when it fired.
enum Hit {
    Rate { count: u64 },
    Near(NearLimitHit),
}

impl Engine {
    /// A shard `shard` of `shards` running `pack`.
    pub fn new(pack: Arc<Pack>, shard: usize, shards: usize) -> Self {
        assert!(shard < shards);
        let dims = (0..pack.dims.len())
            .map(|d| {
                let rules: Vec<usize> = (0..pack.rules.len()).filter(|&r| pack.rules[r].dim == d).collect();
                let history = rules
                    .iter()
                    .map(|&r| history_ms(&pack.rules[r], pack.lateness_ms))
                    .max()
                    .unwrap_or(0);
                let sweep_every = (history / 4).max(60_000);
                DimState {
                    rules,
                    table: HashTable::new(),
                    sweep_every,
                    next_sweep: i64::MIN,
                }
            })
            .collect();
        let n = pack.rules.len();
        Engine {
            pack,
            shard: shard as u64,
            shards: shards as u64,
            dims,
            scratch: String::new(),
            stats: EngineStats {
                fired: vec![0; n],
                suppressed: vec![0; n],
                ..Default::default()
            },
        }
    }

    pub fn pack(&self) -> &Pack {
        &self.pack
    }

    pub fn stats(&self) -> EngineStats {
        let mut s = self.stats.clone();
        s.keys = self.dims.iter().map(|d| d.table.len() as u64).sum();
        s
    }

    /// Processes one record whose event time is at or after the watermark `wm`; appends any
    /// actions it causes to `out`.
    pub fn process(&mut self, rec: &Record, wm: i64, out: &mut Vec<Action>) {
        let pack = Arc::clone(&self.pack);
        for d in 0..self.dims.len() {
            self.process_dim(&pack, d, rec, wm, out);
            if wm >= self.dims[d].next_sweep {
                self.sweep(&pack, d, wm);
            }
        }
    }

    fn process_dim(&mut self, pack: &Pack, d: usize, rec: &Record, wm: i64, out: &mut Vec<Action>) {
        let dim_state = &self.dims[d];
        let mut wanted: u64 = 0;
        for (i, &r) in dim_state.rules.iter().enumerate() {
            if matches(&pack.rules[r].filter, rec) {
                wanted |= 1 << i;
            }
        }
        if wanted == 0 {
            return;
        }
        let dim = &pack.dims[d];
        let mut parts: [&str; 9] = [""; 9];
        for (i, f) in dim.parts.iter().enumerate() {
            match rec.field(*f) {
                Some(v) if !v.is_empty() => parts[i] = v,
                _ => return,
            }
        }
        let parts = &parts[..dim.parts.len()];
        let hash = key_hash(d, parts);
        if shard_of(hash, self.shards) != self.shard {
            return;
        }
        self.scratch.clear();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                self.scratch.push('+');
            }
            self.scratch.push_str(p);
        }
        let key = self.scratch.as_str();
        let dim_state = &mut self.dims[d];
        let entry = match dim_state.table.find_mut(hash, |e| e.hash == hash && &*e.key == key) {
            Some(e) => e,
            None => {
                let slots = dim_state
                    .rules
                    .iter()
                    .map(|&r| new_slot(&pack.rules[r], pack.lateness_ms))
                    .collect();
                let e = Entry {
                    hash,
                    key: key.into(),
                    slots,
                    active: None,
                };
                dim_state.table.insert_unique(hash, e, |e| e.hash).into_mut()
            }
        };
        for (i, &r) in dim_state.rules.iter().enumerate() {
            if wanted & (1 << i) == 0 {
                continue;
            }
            let rule = &pack.rules[r];
            let slot = &mut entry.slots[i];
            let bin = rec.ts.div_euclid(rule.slide_ms);
            let hit = match (&rule.kind, &mut slot.window) {
                (RuleKind::Rate { threshold, .. }, Window::Count(w)) => {
                    let count = w.add(bin);
                    (count >= *threshold).then_some(Hit::Rate { count })
                }
                (
                    RuleKind::Rate {
                        threshold,
                        distinct: Some(f),
                    },
                    Window::Distinct(w),
                ) => match rec.field(*f) {
                    Some(v) => {
                        let count = w.add(bin, xxhash_rust::xxh3::xxh3_64(v.as_bytes()));
                        (count >= *threshold).then_some(Hit::Rate { count })
                    }
                    None => None,
                },
                (RuleKind::NearLimit { limit, lo, k, n, .. }, Window::Near(w)) => {
                    let wm_bin = wm.div_euclid(rule.slide_ms);
                    w.observe(bin, wm_bin, *lo, *limit, *k, *n).map(Hit::Near)
                }
                _ => unreachable!("slot built for its rule"),
            };
            let Some(hit) = hit else { continue };
            self.stats.fired[r] += 1;
            let level = slot.ladder.level_at(rec.ts, &pack.escalation) + 1;
            let step = step_for(&rule.ladder, level, &pack.escalation);
            if slot.ladder.in_force(rec.ts) || entry.active.as_ref().is_some_and(|a| a.covers(&step, rec.ts)) {
                self.stats.suppressed[r] += 1;
                continue;
            }
            let until = rec.ts + step.for_ms;
            slot.ladder.acted(level, until);
            let dim_name = dim.name();
            let (reason, evidence) = explain(rule, &hit, rec);
            let verb = match step.action {
                ActionKind::Throttle => format!("throttle to {}/s for {}", step.rate.unwrap_or(0.0), dur(step.for_ms)),
                other => format!("{other} for {}", dur(step.for_ms)),
            };
            out.push(Action {
                id: action_id(pack.hash, &rule.id, &dim_name, &entry.key, rec.ts, level, step.action),
                ts: rec.ts,
                action: step.action,
                dim: dim_name,
                key: entry.key.to_string(),
                rule: rule.id.clone(),
                level,
                rate: step.rate,
                until: Some(until),
                reason: format!("{reason}; level {level}: {verb}"),
                evidence,
                pack: pack.hash_hex(),
            });
            entry.active = Some(Active { step, until });
        }
    }

    /// Lifts whatever action `key` of `dim` is under (release on appeal) and resets its
    /// ladders. Returns the `release` action, or `None` when nothing was in force at `ts`.
    pub fn release(&mut self, dim_name: &str, key: &str, ts: i64, reason: &str) -> Option<Action> {
        let d = self.pack.dims.iter().position(|x| x.name() == dim_name)?;
        let parts: Vec<&str> = key.splitn(self.pack.dims[d].parts.len(), '+').collect();
        let hash = key_hash(d, &parts);
        let entry = self.dims[d].table.find_mut(hash, |e| e.hash == hash && &*e.key == key)?;
        let active = entry.active.take().filter(|a| a.until > ts)?;
        for s in entry.slots.iter_mut() {
            s.ladder = Ladder::default();
        }
        Some(Action {
            id: action_id(self.pack.hash, "release", dim_name, key, ts, 0, ActionKind::Release),
            ts,
            action: ActionKind::Release,
            dim: dim_name.to_string(),
            key: key.to_string(),
            rule: "release".into(),
            level: 0,
            rate: None,
            until: None,
            reason: format!("Released: {reason}"),
            evidence: json!({ "lifted": active.step.action.name(), "was_until": active.until }),
            pack: self.pack.hash_hex(),
        })
    }

    /// Whether this shard owns `key` of dim `dim_name`.
    pub fn owns(&self, dim_name: &str, key: &str) -> bool {
        let Some(d) = self.pack.dims.iter().position(|x| x.name() == dim_name) else {
            return false;
        };
        let parts: Vec<&str> = key.splitn(self.pack.dims[d].parts.len(), '+').collect();
        shard_of(key_hash(d, &parts), self.shards) == self.shard
    }

    fn sweep(&mut self, pack: &Pack, d: usize, wm: i64) {
        let ds = &mut self.dims[d];
        let before = ds.table.len();
        let rules = &ds.rules;
        ds.table.retain(|e| !is_idle(pack, rules, e, wm));
        self.stats.evicted += (before - ds.table.len()) as u64;
        ds.next_sweep = wm.saturating_add(ds.sweep_every);
    }
}

/// How much event time a rule's state reaches back.
fn history_ms(rule: &Rule, lateness_ms: i64) -> i64 {
    match rule.kind {
        RuleKind::Rate { .. } => rule.window_ms + lateness_ms,
        RuleKind::NearLimit { n, .. } => (n as i64 + 1) * rule.window_ms + lateness_ms,
    }
}

fn new_slot(rule: &Rule, lateness_ms: i64) -> RuleSlot {
    let w = rule.bins();
    let window = match rule.kind {
        RuleKind::Rate { distinct: None, .. } => Window::Count(SlidingCount::new(w)),
        RuleKind::Rate { distinct: Some(_), .. } => Window::Distinct(SlidingDistinct::new(w)),
        RuleKind::NearLimit { n, .. } => {
            let lateness_bins = (lateness_ms + rule.slide_ms - 1) / rule.slide_ms + 1;
            Window::Near(NearLimit::new(w, n as usize, lateness_bins as usize))
        }
    };
    RuleSlot {
        window,
        ladder: Ladder::default(),
    }
}

/// Whether an entry is indistinguishable from a fresh one for every record at or after `wm`.
fn is_idle(pack: &Pack, rules: &[usize], e: &Entry, wm: i64) -> bool {
    if e.active.as_ref().is_some_and(|a| a.until > wm) {
        return false;
    }
    rules.iter().zip(e.slots.iter()).all(|(&r, s)| {
        let rule = &pack.rules[r];
        let wm_bin = wm.div_euclid(rule.slide_ms);
        let window_idle = match &s.window {
            Window::Count(w) => w.ring().is_empty_at(wm_bin),
            Window::Distinct(w) => w.ring().is_empty_at(wm_bin),
            Window::Near(w) => w.is_idle_at(wm_bin),
        };
        window_idle && s.ladder.is_idle_at(wm, &pack.escalation)
    })
}

fn explain(rule: &Rule, hit: &Hit, rec: &Record) -> (String, serde_json::Value) {
    let record = rec.id().map(str::to_string);
    match (hit, &rule.kind) {
        (Hit::Rate { count }, RuleKind::Rate { threshold, distinct }) => {
            let what = match distinct {
                Some(f) => format!("distinct {} values", f.name()),
                None => noun(&rule.filter).to_string(),
            };
            let reason = format!(
                "{count} {what} in the last {} (sliding by {}), at or above the threshold of {threshold}",
                dur(rule.window_ms),
                dur(rule.slide_ms)
            );
            let mut ev = json!({
                "window": dur(rule.window_ms),
                "slide": dur(rule.slide_ms),
                "count": count,
                "threshold": threshold,
            });
            if let Some(f) = distinct {
                ev["distinct"] = json!(Field::name(*f));
            }
            if let Some(id) = record {
                ev["records"] = json!([id]);
            }
            (reason, ev)
        }
        (Hit::Near(h), RuleKind::NearLimit { limit, lo, band, k, n }) => {
            let reason = format!(
                "{} of the last {n} windows of {} between {lo} and {} {} against a limit of {limit}",
                h.in_band,
                dur(rule.window_ms),
                limit - 1,
                noun(&rule.filter)
            );
            let mut ev = json!({
                "window": dur(rule.window_ms),
                "slide": dur(rule.slide_ms),
                "limit": limit,
                "band": band,
                "near": [lo, limit - 1],
                "k": k,
                "n": n,
                "counts": h.counts,
                "window_end": h.boundary * rule.slide_ms,
            });
            if let Some(id) = record {
                ev["records"] = json!([id]);
            }
            (reason, ev)
        }
        _ => unreachable!("hit matches its rule kind"),
    }
}
