//! One shard of the detector: keyed state for the `(dim, key)` pairs it owns, advanced by
//! records in event time.
//!
//! A record is processed with the watermark the router computed for the whole stream at that
//! point, so a key's state depends only on its own records and those watermarks: any number
//! of shards gives the same actions. Keys whose state has gone back to what a fresh key would
//! have (empty windows, ladders decayed, no action in force) are evicted, so memory follows
//! the active keys.
//!
//! Submodules: `key` (key hashes, which rules want a record, which shard owns a key),
//! `state` (a dimension's plan, a fresh window, when a key is idle), `step` (one rule's
//! window update), `cold` (keys that keep their records
//! until one more could tip a rule), `explain` (reasons, evidence, the contract action),
//! `policy` (allowlist and protected ports), `reload` (a new pack, keeping what still means
//! the same), `snapshot` (state to and from checkpoints).

use std::sync::Arc;

use std::collections::{HashMap, VecDeque};

use anning_rules::{ActionKind, Field, Filter, Pack, Rule, RuleKind, Step};
use compact_str::CompactString;
use hashbrown::HashTable;
use serde::{Deserialize, Serialize};
use serde_json::json;
use smallvec::SmallVec;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::action::{Action, action_id};
use crate::escalation::{Active, Ladder, step_for};
use crate::mask::mask_addr;
use crate::near_limit::{NearLimit, NearLimitHit};
use crate::record::{Record, Slot};
use crate::window::{SlidingCount, SlidingDistinct};
use anning_rules::duration::format_duration_ms as dur;

mod ahead;
mod cold;
mod explain;
mod key;
mod policy;
mod reload;
mod snapshot;
mod state;
mod step;

pub use ahead::{Keyer, Routes};
use cold::ColdPlan;
use explain::{Hit, action, explain};
pub(crate) use key::as_number;
pub use key::{dim_seed, key_hash, shard_of};
use key::{key_hash_of, matches, owned, push_key, route, wanted_by};
pub use policy::Allowed;
use policy::{Policy, allow_map};
pub use reload::Reloaded;
pub use snapshot::{Restored, ShardSnapshot, ShardState};
use state::{busy_until, dim_rules, dim_states, empty_slot, is_idle, new_window};

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
    /// Per rule: throttles and suspensions not taken because the target is allowlisted.
    pub allowed: Vec<u64>,
    /// Per rule: throttles and suspensions turned into alerts because the target is a port
    /// of a protected class and the rule is not a misuse rule.
    pub protected: Vec<u64>,
}

/// The state of one rule for one key.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Window {
    /// The rule has not matched a record of this key yet: nothing allocated. Most keys
    /// only ever meet a few of their dimension's rules.
    Unused,
    Count(SlidingCount),
    /// With the latest distinct values (up to [`SAMPLES`], kept once the count is within
    /// that many of the threshold), for evidence: inline up to 24 bytes (a number, an IMEI),
    /// as a key near a low threshold takes a new one with most records.
    Distinct(Box<(SlidingDistinct, VecDeque<CompactString>)>),
    Near(Box<NearLimit>),
    /// Counts records whose `dst` is close to the previous one's.
    Sequential {
        count: SlidingCount,
        last: Option<u64>,
    },
    /// (numerator, denominator).
    Ratio(Box<(SlidingCount, SlidingCount)>),
    Unsubscribe(Box<Unsubscribed>),
}

/// An unsubscribe rule's state for one signature.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Unsubscribed {
    /// xxh3(subscriber) → when they unsubscribed (the first time within `remember`).
    since: hashbrown::HashMap<u64, i64>,
    violations: SlidingCount,
    /// The latest violations, for evidence: (ts, masked subscriber, port).
    recent: VecDeque<(i64, String, String)>,
}

/// Distinct values a `distinct` rule names in its evidence.
const SAMPLES: usize = 10;

/// Evidence kept per unsubscribe rule and signature.
const RECENT_VIOLATIONS: usize = 5;

/// Ladders of the targets a rule with `targets` acted on, keyed by `dim\0key` (looked up at
/// each firing: hashbrown's hasher, not std's SipHash).
type Acted = hashbrown::HashMap<Box<str>, (Ladder, Active)>;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RuleSlot {
    window: Window,
    ladder: Ladder,
    /// For rules with `targets`: the targets acted on from this key.
    acted: Option<Box<Acted>>,
}

/// Everything kept for one `(dim, key)`.
#[derive(Debug)]
struct Entry {
    /// Inline up to 24 bytes: compared without leaving the table. Its hash is not kept
    /// (the table asks for it only to grow): [`Entry::hash`].
    key: CompactString,
    /// One slot per rule of this dim, in [`DimState::rules`] order; none while the key is
    /// cold.
    slots: Box<[RuleSlot]>,
    /// The action the target is under, from whichever rule.
    active: Option<Box<Active>>,
    /// A cold key's records (see `cold`); empty once warm.
    log: cold::Log,
    /// A watermark below which the entry is certainly not idle (see `is_idle`): the latest
    /// of its windows' [`busy_until`]s as records came, so a sweep passes over the keys
    /// still in use without reading their windows. `i64::MIN` when restored or reloaded.
    idle_from: i64,
}

impl Entry {
    fn warm(key: CompactString, slots: Box<[RuleSlot]>, active: Option<Box<Active>>) -> Entry {
        Entry {
            key,
            slots,
            active,
            log: cold::Log::new(),
            idle_from: i64::MIN,
        }
    }

    /// The key's hash under its dimension's seed: [`key_hash`] of its parts (the key is
    /// them joined by `+`, which is what `key_hash` hashes).
    fn hash(&self, seed: u64) -> u64 {
        key_hash(seed, &[&self.key])
    }

    fn is_cold(&self) -> bool {
        self.slots.is_empty()
    }

    /// Runs a cold key's records through fresh windows (see `cold`); it holds slots after.
    fn warm_up(&mut self, plan: &ColdPlan, pack: &Pack, rules: &[usize], suspect_slot: &[Option<usize>]) {
        self.slots = plan.warm(pack, rules, suspect_slot, &self.log);
        self.log = cold::Log::new();
        for (&r, s) in rules.iter().zip(self.slots.iter()) {
            self.idle_from = self.idle_from.max(busy_until(&pack.rules[r], &s.window));
        }
    }
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
    /// [`dim_seed`] of this dim.
    seed: u64,
    /// Per rule slot: the slot of the rule it takes suspicion from (`suspect`), if any.
    suspect_slot: Vec<Option<usize>>,
    /// How new keys start cold, if they can.
    cold: Option<ColdPlan>,
    /// Where `table`'s buckets are, for prefetching (see `ahead`).
    base: ahead::Base,
}

/// One shard's detector.
pub struct Engine {
    pack: Arc<Pack>,
    shard: u64,
    shards: u64,
    dims: Vec<DimState>,
    /// Reused buffer for building compound keys.
    scratch: String,
    /// Reused buffer for the `dim\0key` of a rule's target (see `RuleSlot::acted`).
    target: String,
    stats: EngineStats,
    policy: Policy,
    /// Only this dimension's rules (by name), when set: a scale-out task owns one
    /// dimension's keys of one repartition partition.
    only: Option<String>,
    /// The index of `only` in the pack's dims (`usize::MAX` when the pack has no such dim).
    only_d: usize,
    /// Whether new keys may start cold (see `cold`); on unless turned off for comparison.
    cold_keys: bool,
    /// Records routed ahead of their turn by [`Engine::process_batch`], oldest first.
    ahead: VecDeque<ahead::Routed>,
}

impl Engine {
    /// A shard `shard` of `shards` running `pack`.
    pub fn new(pack: Arc<Pack>, shard: usize, shards: usize) -> Self {
        assert!(shard < shards);
        let dims = dim_states(&pack);
        let n = pack.rules.len();
        let allow = allow_map(&pack);
        Engine {
            pack,
            shard: shard as u64,
            shards: shards as u64,
            dims,
            scratch: String::new(),
            target: String::new(),
            stats: EngineStats {
                fired: vec![0; n],
                suppressed: vec![0; n],
                allowed: vec![0; n],
                protected: vec![0; n],
                ..Default::default()
            },
            policy: Policy {
                allow,
                ..Default::default()
            },
            only: None,
            only_d: usize::MAX,
            ahead: VecDeque::new(),
            cold_keys: true,
        }
    }

    /// An engine whose keys are all warm from their first record: the same actions as
    /// with cold keys (what the equivalence tests check), more memory and time.
    pub fn without_cold_keys(mut self) -> Self {
        self.cold_keys = false;
        self.warm_all();
        self.dims.iter_mut().for_each(|d| d.cold = None);
        self
    }

    /// An engine that runs only the rules of the dimension named `dim` (kept across reloads).
    pub fn only(mut self, dim: &str) -> Self {
        self.only = Some(dim.to_string());
        self.only_d = self.pack.dims.iter().position(|x| x.name() == dim).unwrap_or(usize::MAX);
        self
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
        self.process_with(&pack, rec, wm, None, out);
    }

    /// [`process`](Self::process) with the engine's pack held by the caller (an `Arc` clone
    /// per record cost two atomic operations on a counter every shard shares). The keys
    /// this shard owns come from `made` (routes made for this pack, [`Engine::made`]), else
    /// from the routes kept when `rec` was routed ahead, else from routing it now.
    fn process_with(&mut self, pack: &Pack, rec: &Record, wm: i64, made: Option<&Routes>, out: &mut Vec<Action>) {
        let routed = if made.is_none() { self.take_routed(rec) } else { None };
        for d in 0..self.dims.len() {
            if self.only.is_some() && d != self.only_d {
                continue;
            }
            let key = match (made, &routed) {
                (Some(m), _) => owned(m.dims[d], self.shard, self.shards),
                (None, Some(r)) => Some(r.routes[d]).filter(|&(_, wanted)| wanted != 0),
                (None, None) => route(pack, &self.dims[d], d, self.shard, self.shards, rec),
            };
            if let Some((hash, wanted)) = key {
                self.process_dim(pack, d, rec, wm, hash, wanted, out);
            }
            if wm >= self.dims[d].next_sweep {
                self.sweep(pack, d, wm);
            }
        }
    }

    /// Runs the rules of dim `d` wanted by `rec` (a bit per rule slot) on its key (of hash
    /// `hash`), which this shard owns.
    #[allow(clippy::too_many_arguments)]
    fn process_dim(&mut self, pack: &Pack, d: usize, rec: &Record, wm: i64, hash: u64, wanted: u64, out: &mut Vec<Action>) {
        let dim = &pack.dims[d];
        self.scratch.clear();
        if !push_key(dim, rec, &mut self.scratch) {
            debug_assert!(false, "a routed record has its key");
            return;
        }
        let key = self.scratch.as_str();
        let dim_state = &mut self.dims[d];
        let seed = dim_state.seed;
        let entry = match dim_state.table.find_mut(hash, |e| &*e.key == key) {
            Some(e) => e,
            None => {
                // A new key starts cold when its dim allows; its record is logged below.
                let slots = match dim_state.cold {
                    Some(_) => Box::default(),
                    None => dim_state.rules.iter().map(|_| empty_slot()).collect(),
                };
                let e = Entry::warm(key.into(), slots, None);
                dim_state.table.insert_unique(hash, e, |e| e.hash(seed)).into_mut()
            }
        };
        if entry.is_cold() {
            let plan = dim_state.cold.as_ref().expect("cold keys only in dims with a plan");
            if plan.room(entry.log.len())
                && let Some(ev) = plan.event(pack, &dim_state.rules, rec, wm, wanted)
            {
                entry.idle_from = entry.idle_from.max(plan.busy_until(pack, &dim_state.rules, &ev));
                entry.log.push(ev);
                return;
            }
            // One more record could tip a rule, or this one cannot be kept compactly.
            entry.warm_up(plan, pack, &dim_state.rules, &dim_state.suspect_slot);
        }
        for (i, &r) in dim_state.rules.iter().enumerate() {
            if wanted & (1 << i) == 0 {
                continue;
            }
            let (hit, suspected) = step::step(
                pack,
                &dim_state.rules,
                &dim_state.suspect_slot,
                &mut entry.slots,
                i,
                &step::Input::Live(rec),
                wm,
            );
            let rule = &pack.rules[r];
            entry.idle_from = entry.idle_from.max(busy_until(rule, &entry.slots[i].window));
            let slot = &mut entry.slots[i];
            let Some(hit) = hit else { continue };
            self.stats.fired[r] += 1;
            // Explained only once an action goes out: most firings find their target under
            // action already (a million of two million records in a `double11` day).
            let explained = |window: &Window| {
                let (mut reason, mut evidence) = explain(rule, &hit, window, rec, &pack.number_plan);
                if let Some(s) = suspected {
                    let by = &pack.rules[s.rule].id;
                    reason.push_str(&format!(
                        " (suspected: `{by}` holds, threshold × {}, {} rung(s) up)",
                        s.factor, s.levels
                    ));
                    evidence["suspected_by"] = json!(by);
                }
                (reason, evidence)
            };
            let boost = suspected.map_or(0, |s| s.levels);
            if rule.targets.is_empty() {
                let level = slot.ladder.level_at(rec.ts, &pack.escalation) + 1 + boost;
                let Some(step) = self.policy.apply(&mut self.stats, pack, r, d, &entry.key, rec, level) else {
                    continue;
                };
                // A shadow rule climbs its own ladder but never counts as the action in force.
                let covered = !rule.shadow && entry.active.as_ref().is_some_and(|a| a.covers(&step, rec.ts));
                if slot.ladder.in_force(rec.ts) || covered {
                    self.stats.suppressed[r] += 1;
                    continue;
                }
                let until = rec.ts + step.for_ms;
                slot.ladder.acted(level, until);
                let (reason, evidence) = explained(&slot.window);
                out.push(action(
                    pack,
                    rule,
                    &dim.name(),
                    &entry.key,
                    rec.ts,
                    level,
                    &step,
                    &reason,
                    evidence,
                    rec,
                ));
                if !rule.shadow {
                    entry.active = Some(Box::new(Active { step, until }));
                }
                continue;
            }
            // Acting on targets taken from the record: the key that tipped is evidence.
            let mut group_explained: Option<(String, serde_json::Value)> = None;
            for &t in &rule.targets {
                let tdim = &pack.dims[t];
                // `dim\0key`: the target's name in `acted`, its key after the NUL; made in a
                // buffer kept for it, since most firings change nothing.
                let id = &mut self.target;
                id.clear();
                for (i, f) in tdim.parts.iter().enumerate() {
                    if i > 0 {
                        id.push('+');
                    }
                    id.push_str(f.name());
                }
                let at = id.len() + 1;
                id.push('\0');
                if !push_key(tdim, rec, id) {
                    continue;
                }
                let (tname, key) = (&id[..at - 1], &id[at..]);
                let acted = slot.acted.get_or_insert_with(Default::default);
                let (ladder, active) = acted.get(id.as_str()).cloned().unzip();
                let ladder = ladder.unwrap_or_default();
                let level = ladder.level_at(rec.ts, &pack.escalation) + 1 + boost;
                let Some(step) = self.policy.apply(&mut self.stats, pack, r, t, key, rec, level) else {
                    continue;
                };
                if ladder.in_force(rec.ts) || active.as_ref().is_some_and(|a| a.covers(&step, rec.ts)) {
                    self.stats.suppressed[r] += 1;
                    continue;
                }
                let until = rec.ts + step.for_ms;
                let mut ladder = ladder;
                ladder.acted(level, until);
                let (reason, evidence) = group_explained.get_or_insert_with(|| {
                    let (reason, mut evidence) = explained(&slot.window);
                    let key = crate::mask::mask_key(dim, &entry.key, &pack.number_plan);
                    evidence["group"] = json!({ "dim": dim.name(), "key": key });
                    (reason, evidence)
                });
                out.push(action(pack, rule, tname, key, rec.ts, level, &step, reason, evidence.clone(), rec));
                let acted = slot.acted.get_or_insert_with(Default::default);
                acted.insert(id.as_str().into(), (ladder, Active { step, until }));
            }
        }
    }

    /// The throttles and suspensions the allowlist held back since the last call.
    pub fn take_allowed(&mut self) -> Vec<Allowed> {
        std::mem::take(&mut self.policy.allowed)
    }

    /// Lifts whatever action `key` of `dim` is under (release on appeal) and resets its
    /// ladders. Returns the `release` action, or `None` when nothing was in force at `ts`.
    pub fn release(&mut self, dim_name: &str, key: &str, ts: i64, reason: &str) -> Option<Action> {
        let d = self.pack.dims.iter().position(|x| x.name() == dim_name)?;
        let parts: Vec<&str> = key.splitn(self.pack.dims[d].parts.len(), '+').collect();
        let hash = key_hash(self.dims[d].seed, &parts);
        let entry = self.dims[d].table.find_mut(hash, |e| &*e.key == key)?;
        let active = entry.active.take().filter(|a| a.until > ts)?;
        for s in entry.slots.iter_mut() {
            s.ladder = Ladder::default();
            s.acted = None;
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
            shadow: false,
            record: None,
        })
    }

    /// Whether this shard owns `key` of dim `dim_name`.
    pub fn owns(&self, dim_name: &str, key: &str) -> bool {
        let Some(d) = self.pack.dims.iter().position(|x| x.name() == dim_name) else {
            return false;
        };
        let parts: Vec<&str> = key.splitn(self.pack.dims[d].parts.len(), '+').collect();
        shard_of(key_hash(dim_seed(&self.pack.dims[d]), &parts), self.shards) == self.shard
    }

    fn sweep(&mut self, pack: &Pack, d: usize, wm: i64) {
        let ds = &mut self.dims[d];
        let before = ds.table.len();
        let (rules, plan) = (&ds.rules, &ds.cold);
        let wm_bins: Vec<i64> = rules.iter().map(|&r| wm.div_euclid(pack.rules[r].slide_ms)).collect();
        let idle = |e: &Entry| match plan {
            Some(plan) if e.is_cold() => plan.idle(pack, rules, &e.log, &wm_bins),
            _ => is_idle(pack, rules, e, wm, &wm_bins),
        };
        // Most keys are still in use: passed over on what the entry itself says, which
        // every test checks against reading the windows.
        ds.table.retain(|e| {
            if wm < e.idle_from {
                debug_assert!(
                    !idle(e),
                    "key {} of dim {d} passed over at {wm} is idle (busy until {})",
                    e.key,
                    e.idle_from
                );
                return true;
            }
            !idle(e)
        });
        self.stats.evicted += (before - ds.table.len()) as u64;
        ds.next_sweep = wm.saturating_add(ds.sweep_every);
    }
}
