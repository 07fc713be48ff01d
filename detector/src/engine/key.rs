//! Keys and their owners: a record's key hash under a dimension, which rules of the
//! dimension want the record, and which shard owns the key.

use super::*;

/// The hash seed of a dimension: from its name, so a key keeps its hash (and its shard)
/// across pack reloads that renumber dimensions.
pub fn dim_seed(dim: &anning_rules::Dim) -> u64 {
    xxhash_rust::xxh3::xxh3_64(dim.name().as_bytes())
}

/// Hash of a key of a dim (by its [`dim_seed`]) given its parts; also decides which shard
/// owns it. xxh3 of the parts joined by `+`, hashed in one call (the streaming hasher
/// derives a secret from the seed first, which cost more than the hash).
pub fn key_hash(seed: u64, parts: &[&str]) -> u64 {
    hash_joined(seed, parts.iter().map(|p| Some(*p))).expect("every part given")
}

/// [`key_hash`] of `rec`'s key under `dim`, read from the record without gathering its
/// parts; `None` when it lacks a part (or has it empty).
pub(super) fn key_hash_of(dim: &anning_rules::Dim, seed: u64, rec: &Record) -> Option<u64> {
    hash_joined(seed, dim.parts.iter().map(|f| key_part(rec, *f)))
}

/// xxh3 of `parts` joined by `+`, in one call; `None` when a part is missing.
pub(super) fn hash_joined<'a>(seed: u64, mut parts: impl ExactSizeIterator<Item = Option<&'a str>>) -> Option<u64> {
    if parts.len() == 1 {
        return parts.next()?.map(|p| xxh3_64_with_seed(p.as_bytes(), seed));
    }
    let mut joined = SmallVec::<[u8; 128]>::new();
    for (i, p) in parts.enumerate() {
        if i > 0 {
            joined.push(b'+');
        }
        joined.extend_from_slice(p?.as_bytes());
    }
    Some(xxh3_64_with_seed(&joined, seed))
}

/// A part of a key: `rec`'s field `f`, if present and non-empty.
pub(super) fn key_part(rec: &Record, f: Field) -> Option<&str> {
    rec.field(f).filter(|v| !v.is_empty())
}

/// A route (key hash, rules that want the record) if it wants anything and shard `shard` of
/// `shards` owns its key.
pub(super) fn owned((hash, wanted): (u64, u64), shard: u64, shards: u64) -> Option<(u64, u64)> {
    (wanted != 0 && shard_of(hash, shards) == shard).then_some((hash, wanted))
}

/// The shard (of `shards`) that owns a key hash.
pub fn shard_of(hash: u64, shards: u64) -> u64 {
    // Mix first so the shard does not fix the low bits the hash table buckets by.
    ((hash.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) * shards) >> 32
}

/// Appends `rec`'s key under `dim`, its parts joined by `+`, to `out`; `false` when `rec`
/// lacks a part (or has it empty), `out` then holding part of it.
pub(super) fn push_key(dim: &anning_rules::Dim, rec: &Record, out: &mut String) -> bool {
    for (i, f) in dim.parts.iter().enumerate() {
        let Some(v) = key_part(rec, *f) else {
            return false;
        };
        if i > 0 {
            out.push('+');
        }
        out.push_str(v);
    }
    true
}

pub(super) fn matches(f: &Filter, r: &Record) -> bool {
    crate::filter::matches(f, &r.traits())
}

/// Whether a rule looks at `r` at all.
fn wants(rule: &Rule, r: &Record) -> bool {
    crate::filter::wants(rule, &r.traits())
}

/// What dim `d` does with `rec` on shard `shard` of `shards`: its key's hash and a bit per
/// rule slot that wants the record; `None` when no rule does, the record has no key under
/// `d`, or another shard owns the key.
pub(super) fn route(pack: &Pack, ds: &DimState, d: usize, shard: u64, shards: u64, rec: &Record) -> Option<(u64, u64)> {
    route_by(pack, &ds.rules, ds.seed, d, shard, shards, rec)
}

/// [`route`] given the dim's rules and seed.
pub(super) fn route_by(pack: &Pack, rules: &[usize], seed: u64, d: usize, shard: u64, shards: u64, rec: &Record) -> Option<(u64, u64)> {
    let wanted = wanted_by(pack, rules, rec);
    if wanted == 0 {
        return None;
    }
    owned((key_hash_of(&pack.dims[d], seed, rec)?, wanted), shard, shards)
}

/// A bit per rule of `rules` (a dim's, in slot order) that wants `rec`.
pub(super) fn wanted_by(pack: &Pack, rules: &[usize], rec: &Record) -> u64 {
    let mut wanted: u64 = 0;
    for (i, &r) in rules.iter().enumerate() {
        if wants(&pack.rules[r], rec) {
            wanted |= 1 << i;
        }
    }
    wanted
}

/// A subscriber number as a number, for closeness of destinations, a cold key's values and
/// the joiner's destinations: 1 to 19 ASCII digits (which cannot overflow), read in one pass.
pub(crate) fn as_number(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.bytes().try_fold(0u64, |n, b| {
        let d = b.wrapping_sub(b'0');
        (d <= 9).then_some(n * 10 + d as u64)
    })
}
