//! Running a batch with its keys' memory fetched ahead.
//!
//! Most of a shard's time went to waiting for memory: the first touch of a key's bucket in
//! a table of a million keys misses every cache. [`Engine::process_batch`] routes each
//! record a few places ahead of its turn (which dims want it, its key's hash, whether this
//! shard owns it), asks the CPU to fetch that key's control bytes and bucket, and keeps the
//! routes, so the record finds its key in cache and is not routed twice. The records still
//! run one by one in order through [`Engine::process`]: the state, the actions and their
//! order are exactly those of calling `process` on each.
//!
//! Routing needs a pass over the dim's rules per record, and every shard made it for every
//! record. A [`Keyer`] where records are made (replay's reader, the daemon's batches) routes
//! each record once for all shards; `process_batch` then takes those [`Routes`] and each
//! shard keeps only the keys it owns.
//!
//! The addresses come from hashbrown's table layout (control bytes after the buckets,
//! bucket `i` at `ctrl − (i + 1) · size`), which is not its API. The layout is checked on
//! two entries whenever the table has grown; a prefetch of a wrong address is ignored by
//! the CPU and changes nothing but speed.

use std::sync::Arc;

use anning_rules::Pack;
use hashbrown::HashTable;
use smallvec::SmallVec;

use super::{DimState, Engine, Entry, dim_rules, dim_seed, owned, push_key, route, route_by};
use crate::action::Action;
use crate::record::Record;

/// How many records ahead keys are fetched: enough to cover a memory round trip while
/// the records between run.
const AHEAD: usize = 8;

/// A record routed ahead of its turn: its address (to check it is the one processed next)
/// and, per dim, (hash, wanted) as [`route`] gives them, (0, 0) where it gives none.
pub(super) struct Routed {
    rec: usize,
    pub(super) routes: SmallVec<[(u64, u64); 8]>,
}

/// A record's keys as routing finds them before any shard takes its share: per dim of the
/// pack, (key hash, a bit per rule slot that wants the record), (0, 0) where no rule wants
/// it or it has no key there. Made by a [`Keyer`], taken by [`Engine::process_batch`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    /// The hash of the pack they were made for: an engine running another pack routes the
    /// record itself.
    pack: u64,
    pub(super) dims: SmallVec<[(u64, u64); 8]>,
}

/// Routes records once for every shard of engines running one pack.
#[derive(Debug, Clone)]
pub struct Keyer {
    pack: Arc<Pack>,
    /// Per dim: its rules (indices into `pack.rules`, in the engine's slot order) and seed.
    dims: Vec<(Vec<usize>, u64)>,
}

impl Keyer {
    pub fn new(pack: Arc<Pack>) -> Self {
        let dims = (0..pack.dims.len())
            .map(|d| (dim_rules(&pack, d), dim_seed(&pack.dims[d])))
            .collect();
        Keyer { pack, dims }
    }

    /// The pack routed for.
    pub fn pack(&self) -> &Arc<Pack> {
        &self.pack
    }

    /// `rec`'s routes, for any shard of any number.
    pub fn routes(&self, rec: &Record) -> Routes {
        let dims = self
            .dims
            .iter()
            .enumerate()
            .map(|(d, (rules, seed))| route_by(&self.pack, rules, *seed, d, 0, 1, rec).unwrap_or((0, 0)))
            .collect();
        Routes {
            pack: self.pack.hash,
            dims,
        }
    }

    /// The dims `rec` is keyed under by rules that want it: (dim index, key with its parts
    /// joined by `+`, key hash), read off its [`routes`](Self::routes). What the scale-out
    /// router re-keys by.
    pub fn keys(&self, rec: &Record) -> Vec<(usize, String, u64)> {
        self.routes(rec)
            .dims
            .iter()
            .enumerate()
            .filter(|(_, (_, wanted))| *wanted != 0)
            .filter_map(|(d, &(hash, _))| {
                let mut key = String::new();
                push_key(&self.pack.dims[d], rec, &mut key).then_some((d, key, hash))
            })
            .collect()
    }
}

/// Where a table's control bytes are, for the bucket count it had when found.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Base {
    buckets: usize,
    ctrl: Option<usize>,
}

impl Base {
    /// Finds the control bytes of `table` again if it has grown (or shrunk) since.
    fn refresh(&mut self, table: &HashTable<Entry>) {
        let buckets = table.num_buckets();
        if buckets != self.buckets {
            *self = Base {
                buckets,
                ctrl: ctrl_of(table),
            };
        }
    }

    /// Asks for the cache lines a lookup of `hash` first touches.
    fn prefetch(&self, hash: u64) {
        let Some(ctrl) = self.ctrl else { return };
        // hashbrown starts probing at the hash's low bits.
        let pos = (hash as usize) & (self.buckets - 1);
        let size = std::mem::size_of::<Entry>();
        let bucket = ctrl.wrapping_sub((pos + 1) * size);
        prefetch(ctrl.wrapping_add(pos));
        prefetch(bucket);
        prefetch(bucket.wrapping_add(64));
    }
}

/// The address of `table`'s control bytes, from two entries' addresses and bucket indices;
/// `None` when the table holds fewer than two entries or the layout is not the one assumed.
fn ctrl_of(table: &HashTable<Entry>) -> Option<usize> {
    let size = std::mem::size_of::<Entry>();
    let mut it = table.iter();
    let (a, b) = (it.next()?, it.next()?);
    let at = |e: &Entry| -> Option<usize> {
        let i = table.find_bucket_index(e.hash, |x| std::ptr::eq(x, e))?;
        Some(e as *const Entry as usize + (i + 1) * size)
    };
    let ctrl = at(a)?;
    (at(b)? == ctrl).then_some(ctrl)
}

#[cfg(target_arch = "x86_64")]
fn prefetch(addr: usize) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    // SAFETY: a prefetch is a hint: it reads nothing into the program, and an address
    // that is not mapped is ignored, never a fault.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(addr as *const i8) }
}

#[cfg(not(target_arch = "x86_64"))]
fn prefetch(_addr: usize) {}

impl Engine {
    /// Processes `batch` in order, as [`process`](Self::process) on each record would, with
    /// each key's memory fetched a few records ahead. `get` gives a record, its watermark
    /// and, if the caller made them, its [`Routes`] (those of another pack are not used);
    /// `then(i, actions)` is called after record `i` with the actions it caused (left in
    /// `actions`, for the caller to take).
    pub fn process_batch<'b, T>(
        &mut self,
        batch: &'b [T],
        get: impl Fn(&'b T) -> (&'b Record, i64, Option<&'b Routes>),
        mut then: impl FnMut(usize, &mut Vec<Action>),
    ) {
        self.ahead.clear();
        let pack = Arc::clone(&self.pack);
        let mut actions = Vec::new();
        for item in batch.iter().take(AHEAD) {
            let (rec, _, routes) = get(item);
            self.route_ahead(rec, routes);
        }
        for (i, item) in batch.iter().enumerate() {
            if let Some(next) = batch.get(i + AHEAD) {
                let (rec, _, routes) = get(next);
                self.route_ahead(rec, routes);
            }
            let (rec, wm, routes) = get(item);
            let made = self.made(routes);
            self.process_with(&pack, rec, wm, made, &mut actions);
            then(i, &mut actions);
        }
        self.ahead.clear();
    }

    /// `made` if it was made for this engine's pack, so can be used as it is.
    pub(super) fn made<'r>(&self, made: Option<&'r Routes>) -> Option<&'r Routes> {
        made.filter(|m| m.pack == self.pack.hash && m.dims.len() == self.dims.len())
    }

    /// Fetches the buckets of `rec`'s keys that this shard owns, and their text in the
    /// record. Without usable routes `made`, routes `rec` first and keeps the routes for
    /// [`process`](Self::process) to take when `rec` comes up; with them, keeps nothing
    /// (the routes are read again from `made` then).
    fn route_ahead(&mut self, rec: &Record, made: Option<&Routes>) {
        let made = self.made(made);
        let Engine {
            pack,
            dims,
            shard,
            shards,
            only,
            only_d,
            ahead,
            ..
        } = self;
        let mine = |d: usize| only.is_none() || d == *only_d;
        if let Some(m) = made {
            for (d, (ds, &r)) in dims.iter_mut().zip(&m.dims).enumerate() {
                if let Some((hash, _)) = owned(r, *shard, *shards).filter(|_| mine(d)) {
                    fetch(ds, hash);
                    prefetch_key(pack, d, rec);
                }
            }
            return;
        }
        let mut routes = SmallVec::with_capacity(dims.len());
        for (d, ds) in dims.iter_mut().enumerate() {
            let r = mine(d)
                .then(|| route(pack, ds, d, *shard, *shards, rec))
                .flatten()
                .unwrap_or((0, 0));
            if r.1 != 0 {
                fetch(ds, r.0);
                prefetch_key(pack, d, rec);
            }
            routes.push(r);
        }
        ahead.push_back(Routed {
            rec: rec as *const Record as usize,
            routes,
        });
    }

    /// The routes of `rec` if it was routed ahead and is the next record so routed; any
    /// others are dropped (the caller strayed from the order: they are routed again).
    pub(super) fn take_routed(&mut self, rec: &Record) -> Option<Routed> {
        let front = self.ahead.pop_front()?;
        if front.rec == rec as *const Record as usize {
            Some(front)
        } else {
            self.ahead.clear();
            None
        }
    }
}

/// The text of `rec`'s key under dim `d`, which the lookup compares with the entry's: it
/// lives in the record's own buffer, allocated by another thread.
fn prefetch_key(pack: &Pack, d: usize, rec: &Record) {
    for &f in &pack.dims[d].parts {
        if let Some(at) = rec.field_addr(f) {
            prefetch(at);
        }
    }
}

fn fetch(ds: &mut DimState, hash: u64) {
    ds.base.refresh(&ds.table);
    ds.base.prefetch(hash);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout prefetching relies on holds for the hashbrown this is built with: every
    /// entry sits where `ctrl_of` says bucket `i` is. If an upgrade changes it, prefetching
    /// silently stops helping; this test says so.
    #[test]
    fn bucket_addresses_follow_the_control_bytes() {
        let mut table: HashTable<Entry> = HashTable::new();
        assert_eq!(ctrl_of(&table), None);
        for k in 0..5000u64 {
            let hash = xxhash_rust::xxh3::xxh3_64(&k.to_le_bytes());
            let e = Entry::warm(hash, k.to_string().into(), Box::default(), None);
            table.insert_unique(hash, e, |e| e.hash);
        }
        let ctrl = ctrl_of(&table).expect("hashbrown's layout as assumed");
        let size = std::mem::size_of::<Entry>();
        for e in table.iter() {
            let i = table.find_bucket_index(e.hash, |x| std::ptr::eq(x, e)).unwrap();
            assert_eq!(ctrl - (i + 1) * size, e as *const Entry as usize);
        }
        let mut base = Base::default();
        base.refresh(&table);
        assert_eq!((base.buckets, base.ctrl), (table.num_buckets(), Some(ctrl)));
    }
}
