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

use super::{DimState, Engine, Entry, dim_rules, dim_seed, key_hash_of, owned, push_key, route, wanted_by};
use crate::action::Action;
use crate::record::{Record, Slot};

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
    /// The tests of `err` and `dur` the pack's filters make, one bit each in a record's
    /// [`class_of`]; `None` when there are too many for it (records are then routed
    /// without remembering).
    tests: Option<Vec<Test>>,
}

/// Which rules of each dim want a record ([`Keyer::wanted`]), remembered per record class
/// on each thread for the pack of the given hash: most records are of a few classes (a
/// subscriber's text, a port's, a delivery report), and every rule's filter ran on every
/// record.
struct Wanted {
    pack: u64,
    by_class: hashbrown::HashMap<u64, SmallVec<[u64; 8]>>,
}

/// Classes remembered per thread; records of classes beyond are routed without.
const CLASSES: usize = 4096;

thread_local! {
    static WANTED: std::cell::RefCell<Wanted> = std::cell::RefCell::new(Wanted {
        pack: 0,
        by_class: hashbrown::HashMap::new(),
    });
}

/// A test a filter makes of a record's `err` or `dur`.
#[derive(Debug, Clone, PartialEq)]
enum Test {
    /// `err` is one of these.
    Err(Vec<String>),
    /// `dur` is below this.
    Below(f64),
}

/// Bits of [`class_of`] left for the pack's [`Test`]s.
const TESTS: usize = 10;

/// Everything the pack's filters read of a record, packed: its kind, address classes, port
/// class (and whether it has a port), status, answered, content classes, licensed, whether
/// it unsubscribes, then one bit per test of `err` or `dur` (`tests`, at most [`TESTS`]).
/// Two records of one class are wanted by the same rules.
fn class_of(rec: &Record, tests: &[Test]) -> u64 {
    let opt = |b: Option<bool>| b.map_or(0, |b| 1 + b as u64);
    let mut class = rec.kind.bit() as u64
        | (rec.src_class.bit() as u64) << 8
        | (rec.dst_class.bit() as u64) << 16
        | (rec.port_class.bit() as u64) << 24
        | (rec.get(Slot::Port).is_some() as u64) << 32
        | (rec.status.map_or(0, |s| s.bit()) as u64) << 33
        | opt(rec.answered) << 41
        | (rec.content as u64) << 43
        | opt(rec.licensed) << 51
        | (rec.unsubscribe as u64) << 53;
    for (i, t) in tests.iter().enumerate() {
        let passed = match t {
            Test::Err(errs) => rec.get(Slot::Err).is_some_and(|e| errs.iter().any(|x| x == e)),
            Test::Below(m) => rec.dur.is_some_and(|d| d < *m),
        };
        class |= (passed as u64) << (54 + i);
    }
    class
}

impl Keyer {
    pub fn new(pack: Arc<Pack>) -> Self {
        let dims = (0..pack.dims.len())
            .map(|d| (dim_rules(&pack, d), dim_seed(&pack.dims[d])))
            .collect();
        let mut tests = Vec::new();
        for rule in &pack.rules {
            let numerator = match &rule.kind {
                anning_rules::RuleKind::Ratio { numerator, .. } => Some(numerator),
                _ => None,
            };
            for f in std::iter::once(&rule.filter).chain(numerator) {
                let made = [f.err.clone().map(Test::Err), f.max_dur.map(Test::Below)];
                for t in made.into_iter().flatten() {
                    if !tests.contains(&t) {
                        tests.push(t);
                    }
                }
            }
        }
        let tests = (tests.len() <= TESTS).then_some(tests);
        Keyer { pack, dims, tests }
    }

    /// Per dim, a bit per rule slot that wants `rec`.
    fn wanted(&self, rec: &Record) -> SmallVec<[u64; 8]> {
        let compute = || self.dims.iter().map(|(rules, _)| wanted_by(&self.pack, rules, rec)).collect();
        let Some(tests) = &self.tests else {
            return compute();
        };
        let class = class_of(rec, tests);
        WANTED.with_borrow_mut(|w| {
            if w.pack != self.pack.hash {
                w.pack = self.pack.hash;
                w.by_class.clear();
            }
            if let Some(wanted) = w.by_class.get(&class) {
                return wanted.clone();
            }
            let wanted: SmallVec<[u64; 8]> = compute();
            if w.by_class.len() < CLASSES {
                w.by_class.insert(class, wanted.clone());
            }
            wanted
        })
    }

    /// The pack routed for.
    pub fn pack(&self) -> &Arc<Pack> {
        &self.pack
    }

    /// `rec`'s routes, for any shard of any number: per dim, as [`route`] gives them for one
    /// shard of one.
    pub fn routes(&self, rec: &Record) -> Routes {
        let wanted = self.wanted(rec);
        let dims = self
            .dims
            .iter()
            .zip(wanted)
            .enumerate()
            .map(|(d, ((_, seed), wanted))| match wanted {
                0 => (0, 0),
                _ => key_hash_of(&self.pack.dims[d], *seed, rec).map_or((0, 0), |hash| (hash, wanted)),
            })
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
    fn refresh(&mut self, table: &HashTable<Entry>, seed: u64) {
        let buckets = table.num_buckets();
        if buckets != self.buckets {
            *self = Base {
                buckets,
                ctrl: ctrl_of(table, seed),
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
fn ctrl_of(table: &HashTable<Entry>, seed: u64) -> Option<usize> {
    let size = std::mem::size_of::<Entry>();
    let mut it = table.iter();
    let (a, b) = (it.next()?, it.next()?);
    let at = |e: &Entry| -> Option<usize> {
        let i = table.find_bucket_index(e.hash(seed), |x| std::ptr::eq(x, e))?;
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
    ds.base.refresh(&ds.table, ds.seed);
    ds.base.prefetch(hash);
}

#[cfg(test)]
mod tests {
    use anning_rules::{DlrStatus, RecordKind};

    use super::*;
    use crate::record::{Enricher, RecordBuilder};
    use crate::registry::Registry;

    /// Records of every class the filters tell apart: each kind; subscribers, registered ports
    /// of each class and unknown ports, on either side; texts of each content class and
    /// unsubscribe replies; signatures licensed or not; each status and a few `err` values;
    /// calls answered or not, shorter and longer than the packs' `max_dur`s.
    fn records(pack: &Pack, n: usize) -> Vec<Record> {
        let registry =
            Registry::parse("port,sp,class,signatures\n10690001,901,marketing,京东\n10690002,902,otp,银行\n10690003,903,notify,\n")
                .unwrap();
        let en = Enricher::new(pack, &registry);
        let addrs = ["13800138000", "13900139001", "10690001", "10690002", "10690003", "10690999", ""];
        let texts = [
            "【京东】双11爆款直降，领券满299减50，回T退订",
            "【银行】您的验证码是123456，5分钟内有效",
            "您中奖了，请点击链接领取佣金",
            "TD",
            "在吗，晚上一起吃饭吧",
            "",
        ];
        let errs = ["", "unknown_subscriber", "absent", "E1"];
        let (mut b, mut x) = (RecordBuilder::default(), 0x9E37_79B9_7F4A_7C15u64);
        let mut pick = |k: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % k as u64) as usize
        };
        (0..n)
            .map(|i| {
                b.clear();
                b.set(Slot::Id, &format!("m{i}"));
                b.set(Slot::Src, addrs[pick(addrs.len())]);
                b.set(Slot::Dst, addrs[pick(addrs.len())]);
                b.set(Slot::Text, texts[pick(texts.len())]);
                b.set(Slot::Sig, ["", "京东", "银行", "某店"][pick(4)]);
                b.set(Slot::Err, errs[pick(errs.len())]);
                b.set(Slot::Cell, "46000-1");
                b.set(Slot::Imei, "860000000000001");
                let kind = [RecordKind::Sms, RecordKind::Dlr, RecordKind::Call, RecordKind::Complaint][pick(4)];
                let status = [
                    None,
                    Some(DlrStatus::Delivered),
                    Some(DlrStatus::Undeliverable),
                    Some(DlrStatus::Expired),
                ][pick(4)];
                let answered = [None, Some(true), Some(false)][pick(3)];
                let dur = [None, Some(0.0), Some(9.5), Some(10.0), Some(60.0)][pick(5)];
                b.finish(en, 1_794_297_600_000 + i as i64, kind, status, answered, dur)
            })
            .collect()
    }

    /// The routes a keyer makes (remembered by record class where it can) are those each
    /// dim's rules give a record routed on its own, for the default pack (whose ratio rules
    /// test `err` and `dur`), for a pack with more such tests than a class holds (routed
    /// without remembering), with keyers of both packs taking turns on one thread, and past
    /// the classes a thread remembers.
    #[test]
    fn routes_remembered_by_class_are_those_of_each_record() {
        let default = Arc::new(anning_rules::default_pack());
        let mut many = String::new();
        for i in 0..=TESTS {
            many.push_str(&format!(
                "[[rule]]\nid = \"r{i}\"\nkind = \"ratio\"\ndim = \"src\"\nwhen = {{ type = [\"dlr\", \"call\"] }}\n\
                 numerator = {{ type = [\"call\"], max_dur = {} }}\nwindow = \"10m\"\nslide = \"1m\"\nratio = 0.5\nmin = 3\n\
                 ladder = [{{ action = \"alert\", for = \"1m\" }}]\n",
                i + 1
            ));
        }
        let many = Arc::new(anning_rules::compile(&many).expect("compiles"));
        // The default pack's rules wanting everything, under another hash: what it remembers
        // would be wrong for the default pack.
        let mut any = anning_rules::compile(&format!("{}\n# another pack\n", anning_rules::DEFAULT_PACK)).unwrap();
        for r in any.rules.iter_mut() {
            r.filter = anning_rules::Filter::ANY;
        }
        // And one rule for records with an unregistered port on either side.
        any.rules[0].filter.port_class = anning_rules::PortClass::Unknown.bit();
        let (k1, k2, k3) = (
            Keyer::new(Arc::clone(&default)),
            Keyer::new(Arc::clone(&many)),
            Keyer::new(Arc::new(any)),
        );
        assert!(
            k1.tests.as_ref().is_some_and(|t| !t.is_empty()),
            "the default pack tests err and dur: {:?}",
            k1.tests
        );
        assert!(k2.tests.is_none(), "more tests than a class holds");
        // More classes than a thread remembers: those beyond are routed without.
        let recs = records(&default, 15_000);
        for (i, rec) in recs.iter().enumerate() {
            for keyer in [&k1, &k2, &k3] {
                // Turns of 100 records: the thread's classes are for one pack at a time.
                if (i / 100) % 2 == 1 && std::ptr::eq(keyer, &k3) {
                    continue;
                }
                let pack = keyer.pack();
                let alone: SmallVec<[(u64, u64); 8]> = keyer
                    .dims
                    .iter()
                    .enumerate()
                    .map(|(d, (rules, seed))| super::super::key::route_by(pack, rules, *seed, d, 0, 1, rec).unwrap_or((0, 0)))
                    .collect();
                assert_eq!(keyer.routes(rec).dims, alone, "record {i}: {rec:?}");
            }
        }
        let ported = |class| recs.iter().filter(|r| r.get(Slot::Port).is_some() && r.port_class == class).count();
        assert!(ported(anning_rules::PortClass::Unknown) > 100 && ported(anning_rules::PortClass::Otp) > 100);
        let wanted: std::collections::HashSet<SmallVec<[u64; 8]>> = recs.iter().map(|r| k1.wanted(r)).collect();
        assert!(wanted.len() > 10, "records wanted by {} sets of rules", wanted.len());
        let classes = WANTED.with_borrow(|w| (w.pack == default.hash).then(|| w.by_class.len()));
        assert_eq!(classes, Some(CLASSES), "classes remembered, up to the cap");
    }

    /// The layout prefetching relies on holds for the hashbrown this is built with: every
    /// entry sits where `ctrl_of` says bucket `i` is. If an upgrade changes it, prefetching
    /// silently stops helping; this test says so.
    #[test]
    fn bucket_addresses_follow_the_control_bytes() {
        let mut table: HashTable<Entry> = HashTable::new();
        let seed = 7;
        assert_eq!(ctrl_of(&table, seed), None);
        for k in 0..5000u64 {
            let e = Entry::warm(k.to_string().into(), Box::default(), None);
            table.insert_unique(e.hash(seed), e, |e| e.hash(seed));
        }
        let ctrl = ctrl_of(&table, seed).expect("hashbrown's layout as assumed");
        let size = std::mem::size_of::<Entry>();
        for e in table.iter() {
            let i = table.find_bucket_index(e.hash(seed), |x| std::ptr::eq(x, e)).unwrap();
            assert_eq!(ctrl - (i + 1) * size, e as *const Entry as usize);
        }
        let mut base = Base::default();
        base.refresh(&table, seed);
        assert_eq!((base.buckets, base.ctrl), (table.num_buckets(), Some(ctrl)));
    }
}
