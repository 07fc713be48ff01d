//! Snapshots of a shard's keyed state, for the daemon's checkpoints.
//!
//! A snapshot names each dimension, and each rule slot by its rule id and a fingerprint of
//! what its state means (key, records, window and measure: what a reload compares). So a
//! snapshot taken under one pack restores under another as a reload would carry it over:
//! slots whose rule kept its meaning keep their counters and ladders, the others start empty
//! and are counted. Entries carry their key hash, so any number of shards can take them back.
//!
//! The encoding (serde) is the caller's: the daemon writes postcard inside a checksummed,
//! versioned file.

use std::borrow::Cow;

use serde::ser::{SerializeStruct, Serializer};
use xxhash_rust::xxh3::xxh3_64;

use super::*;

/// What a rule's per-key state means, as a hash: equal fingerprints and rule ids let state
/// move between packs (compare [`reload`](super::reload)).
pub(super) fn fingerprint(pack: &Pack, rule: &Rule) -> u64 {
    let kind = match &rule.kind {
        RuleKind::Rate { distinct, sequential, .. } => format!("rate {distinct:?} {}", sequential.is_some()),
        RuleKind::NearLimit { n, .. } => format!("near_limit {n} {}", pack.lateness_ms),
        RuleKind::Ratio { numerator, .. } => format!("ratio {numerator:?}"),
        RuleKind::Unsubscribe { .. } => "unsubscribe".into(),
    };
    let targets: Vec<String> = rule.targets.iter().map(|&t| pack.dims[t].name()).collect();
    let text = format!(
        "{kind}|{}|{}|{}|{:?}|{targets:?}",
        pack.dims[rule.dim].name(),
        rule.window_ms,
        rule.slide_ms,
        rule.filter
    );
    xxh3_64(text.as_bytes())
}

/// A shard's state, borrowed for serializing ([`Engine::snapshot`]).
pub struct ShardSnapshot<'a> {
    engine: &'a Engine,
}

struct DimOut<'a> {
    engine: &'a Engine,
    d: usize,
}

struct Entries<'a> {
    pack: &'a Pack,
    ds: &'a DimState,
}

/// A key as a snapshot holds it: cold keys are written warm (their records run through
/// their windows), so a snapshot holds slots only.
#[derive(Serialize)]
struct EntryOut<'a> {
    hash: u64,
    key: &'a str,
    slots: Cow<'a, [RuleSlot]>,
    active: &'a Option<Box<Active>>,
}

impl Serialize for ShardSnapshot<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("ShardSnapshot", 1)?;
        let dims: Vec<DimOut<'_>> = (0..self.engine.dims.len()).map(|d| DimOut { engine: self.engine, d }).collect();
        st.serialize_field("dims", &dims)?;
        st.end()
    }
}

impl Serialize for DimOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let pack = &self.engine.pack;
        let ds = &self.engine.dims[self.d];
        let rules: Vec<(&str, u64)> = ds
            .rules
            .iter()
            .map(|&r| (pack.rules[r].id.as_str(), fingerprint(pack, &pack.rules[r])))
            .collect();
        let mut st = s.serialize_struct("Dim", 3)?;
        st.serialize_field("dim", &pack.dims[self.d].name())?;
        st.serialize_field("rules", &rules)?;
        st.serialize_field("entries", &Entries { pack, ds })?;
        st.end()
    }
}

impl Serialize for Entries<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ds = self.ds;
        s.collect_seq(ds.table.iter().map(|e| EntryOut {
            hash: e.hash(ds.seed),
            key: &e.key,
            slots: match &ds.cold {
                Some(plan) if e.is_cold() => Cow::Owned(plan.warm(self.pack, &ds.rules, &ds.suspect_slot, &e.log).into_vec()),
                _ => Cow::Borrowed(&e.slots),
            },
            active: &e.active,
        }))
    }
}

/// A shard's state read back from a snapshot, to [`Engine::restore`].
#[derive(Debug, Deserialize)]
pub struct ShardState {
    dims: Vec<DimIn>,
}

#[derive(Debug, Deserialize)]
struct DimIn {
    dim: String,
    rules: Vec<(String, u64)>,
    entries: Vec<EntryIn>,
}

#[derive(Debug, Deserialize)]
struct EntryIn {
    hash: u64,
    key: Box<str>,
    slots: Vec<RuleSlot>,
    active: Option<Active>,
}

impl ShardState {
    /// Keys held.
    pub fn keys(&self) -> u64 {
        self.dims.iter().map(|d| d.entries.len() as u64).sum()
    }

    /// Regroups the states of any number of shards into `shards` states, each holding the
    /// keys [`shard_of`] gives that shard: a snapshot taken with 4 threads restores into 2.
    pub fn split(parts: Vec<ShardState>, shards: usize) -> Vec<ShardState> {
        let mut out: Vec<ShardState> = (0..shards).map(|_| ShardState { dims: Vec::new() }).collect();
        for part in parts {
            for dim in part.dims {
                let mut by_shard: Vec<Vec<EntryIn>> = (0..shards).map(|_| Vec::new()).collect();
                for e in dim.entries {
                    by_shard[shard_of(e.hash, shards as u64) as usize].push(e);
                }
                for (s, entries) in by_shard.into_iter().enumerate() {
                    if !entries.is_empty() {
                        out[s].dims.push(DimIn {
                            dim: dim.dim.clone(),
                            rules: dim.rules.clone(),
                            entries,
                        });
                    }
                }
            }
        }
        out
    }
}

/// What a restore took back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    /// Keys restored.
    pub keys: u64,
    /// (key, rule) states restored.
    pub kept: u64,
    /// (key, rule) states left out: their rule is gone or its state means something else now.
    pub dropped: u64,
    /// Keys another shard owns (left to it).
    pub foreign: u64,
}

impl Engine {
    /// This shard's keyed state, to serialize. Counters of [`EngineStats`] are not part of
    /// it; they describe this process.
    pub fn snapshot(&self) -> ShardSnapshot<'_> {
        ShardSnapshot { engine: self }
    }

    /// Takes back the keys of `state` this shard owns (see [`ShardState::split`]); slots are
    /// matched by rule id and fingerprint, so the pack may have changed since.
    pub fn restore(&mut self, state: ShardState) -> Restored {
        let pack = Arc::clone(&self.pack);
        let mut done = Restored::default();
        for dim in state.dims {
            let Some(d) = pack.dims.iter().position(|x| x.name() == dim.dim) else {
                done.dropped += dim.entries.iter().map(|e| e.slots.len() as u64).sum::<u64>();
                continue;
            };
            let ds = &mut self.dims[d];
            let from: Vec<Option<usize>> = ds
                .rules
                .iter()
                .map(|&r| {
                    let want = (pack.rules[r].id.as_str(), fingerprint(&pack, &pack.rules[r]));
                    dim.rules.iter().position(|(id, fp)| (id.as_str(), *fp) == want)
                })
                .collect();
            let seed = ds.seed;
            for e in dim.entries {
                if shard_of(e.hash, self.shards) != self.shard {
                    done.foreign += 1;
                    continue;
                }
                let hash = key_hash(seed, &[&e.key]);
                if ds.table.find(hash, |x| *x.key == *e.key).is_some() {
                    continue;
                }
                let mut old: Vec<Option<RuleSlot>> = e.slots.into_iter().map(Some).collect();
                let slots: Box<[RuleSlot]> = from
                    .iter()
                    .map(|f| match f.and_then(|i| old.get_mut(i).and_then(Option::take)) {
                        Some(s) => {
                            done.kept += 1;
                            s
                        }
                        None => empty_slot(),
                    })
                    .collect();
                done.dropped += old.iter().filter(|s| s.is_some()).count() as u64;
                done.keys += 1;
                let entry = Entry::warm(CompactString::from(&*e.key), slots, e.active.map(Box::new));
                ds.table.insert_unique(hash, entry, |x| x.hash(seed));
            }
        }
        done
    }
}
