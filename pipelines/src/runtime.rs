//! The sharded runtime shared by replay (and, later, the daemon).
//!
//! One router thread reads the input; JSON Lines are decoded, enriched and routed once for
//! all shards ([`Keyer`]) on decoding threads a chunk of lines at a time (CSV and Parquet
//! on the router itself). The router takes the records back in input order, joins them,
//! keeps the stream's watermark (a record a join changed is routed again), and broadcasts
//! batches of `(record, watermark, routes)` to N shard workers over bounded crossbeam
//! channels. Each worker runs one [`Engine`] that owns the `(dim, key)` pairs whose hash
//! falls to it, so each key's state sees exactly its own records with the same watermarks
//! whatever N is. Actions are merged and sorted by (ts, dim, key, rule, id): the output is
//! byte-identical for every thread count.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::thread;

use anning_detector::engine::{Keyer, Routes};
use anning_detector::{Action, Engine, EngineStats, Enricher, Record, Registry, Stamped, Stamper};
use anning_rules::Pack;
use crossbeam_channel::{Sender, bounded};

use crate::decode::pool::Decoders;
use crate::decode::{Reject, RejectReason};
use crate::source::{self, Input, SourceError};

/// Records per batch sent to the shards.
pub const BATCH: usize = 4096;
/// Threads decoding JSON Lines and Parquet beside the reading thread and the shards.
const DECODERS: usize = 2;
/// How many rejects the summary keeps as samples.
pub const SAMPLES: usize = 5;

type Batch = Arc<Vec<(Record, i64, Routes)>>;
/// How many sent batches the router keeps to use again (more than the shards' queues hold).
const RECYCLED: usize = 64;

/// Where rejects go besides the counts: e.g. a JSON Lines file.
pub trait RejectSink {
    fn write(&mut self, r: &Reject);
}

impl RejectSink for () {
    fn write(&mut self, _: &Reject) {}
}

/// Counts for the summary.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// Decoded records per kind (sms, dlr, call, complaint), including late ones.
    pub by_type: [u64; 4],
    pub rejects: BTreeMap<RejectReason, u64>,
    pub samples: Vec<Reject>,
    /// Late records admitted at the watermark (`admit` policy).
    pub late_admitted: u64,
    /// Inputs that could not be read to the end, with the error.
    pub input_errors: Vec<String>,
}

impl Counts {
    pub fn records(&self) -> u64 {
        self.by_type.iter().sum()
    }

    pub fn rejected(&self) -> u64 {
        self.rejects.values().sum()
    }
}

/// The result of a run.
pub struct Outcome {
    /// Sorted by (ts, dim, key, rule, id).
    pub actions: Vec<Action>,
    pub counts: Counts,
    /// Per shard.
    pub shards: Vec<EngineStats>,
}

/// Observes the run's progress (a progress bar).
pub trait Progress {
    fn input(&mut self, _name: &str, _len: u64) {}
    fn advance(&mut self, _done: u64) {}
}

impl Progress for () {}

struct Router<'a, R: RejectSink, P: Progress> {
    en: Enricher<'a>,
    /// Delivery reports to their messages, replies to their port's signature (input
    /// order), then the watermark.
    stamper: Stamper,
    keyer: Arc<Keyer>,
    /// Name of the input being read, for rejects raised here.
    input: String,
    batch: Vec<(Record, i64, Routes)>,
    /// Batches sent, oldest first: once every shard has run one, its buffer (and the
    /// records' memory, freed here rather than across threads) is used for a new batch.
    sent: VecDeque<Batch>,
    txs: Vec<Sender<Batch>>,
    counts: Counts,
    rejects: &'a mut R,
    progress: &'a mut P,
}

impl<R: RejectSink, P: Progress> Router<'_, R, P> {
    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let next = match self.sent.front_mut().and_then(Arc::get_mut) {
            Some(done) => {
                let mut v = std::mem::take(done);
                self.sent.pop_front();
                v.clear();
                v
            }
            None => Vec::with_capacity(BATCH),
        };
        let batch: Batch = Arc::new(std::mem::replace(&mut self.batch, next));
        for tx in &self.txs {
            // A worker only stops early if it panicked; the join below reports that.
            let _ = tx.send(Arc::clone(&batch));
        }
        if self.sent.len() >= RECYCLED {
            self.sent.pop_front();
        }
        self.sent.push_back(batch);
    }
}

impl<R: RejectSink, P: Progress> Router<'_, R, P> {
    /// `routes`: made by a decoding thread before the joins, else `None`.
    fn stamp(&mut self, r: Record, routes: Option<Routes>, line: u64) {
        self.counts.by_type[r.kind as usize] += 1;
        match self.stamper.stamp(r, self.en) {
            Stamped::Process { rec, wm, clamped, joined } => {
                if clamped {
                    self.counts.late_admitted += 1;
                }
                let routes = match routes {
                    Some(routes) if !joined => routes,
                    _ => self.keyer.routes(&rec),
                };
                self.batch.push((rec, wm, routes));
                if self.batch.len() >= BATCH {
                    self.flush();
                }
            }
            Stamped::Late { rec: r, behind } => {
                let reject = Reject {
                    source: self.input.clone(),
                    line,
                    col: None,
                    field: Some("ts"),
                    reason: RejectReason::Late,
                    detail: format!("{} record {behind} ms older than the watermark", r.kind.name()),
                    raw: Some(r.to_json()),
                };
                source::Sink::reject(self, reject);
            }
        }
    }
}

impl<R: RejectSink, P: Progress> source::Sink for Router<'_, R, P> {
    fn record(&mut self, r: Record, line: u64) {
        self.stamp(r, None, line);
    }

    fn routed(&mut self, r: Record, routes: Routes, line: u64) {
        self.stamp(r, Some(routes), line);
    }

    fn reject(&mut self, r: Reject) {
        *self.counts.rejects.entry(r.reason).or_default() += 1;
        self.rejects.write(&r);
        if self.counts.samples.len() < SAMPLES {
            self.counts.samples.push(Reject { raw: None, ..r });
        }
    }

    fn progress(&mut self, done: u64) {
        self.progress.advance(done);
    }
}

/// Runs `inputs` in order through `threads` shards of `pack`.
pub fn run(
    pack: Arc<Pack>,
    registry: &Registry,
    inputs: &[Input],
    threads: usize,
    rejects: &mut impl RejectSink,
    progress: &mut impl Progress,
) -> Outcome {
    let threads = threads.max(1);
    let mut txs = Vec::with_capacity(threads);
    let mut workers = Vec::with_capacity(threads);
    for shard in 0..threads {
        let (tx, rx) = bounded::<Batch>(16);
        txs.push(tx);
        let pack = Arc::clone(&pack);
        workers.push(
            thread::Builder::new()
                .name(format!("shard-{shard}"))
                .spawn(move || {
                    let mut engine = Engine::new(pack, shard, threads);
                    let mut actions = Vec::new();
                    for batch in rx {
                        engine.process_batch(&batch, |(rec, wm, routes)| (rec, *wm, Some(routes)), |_, acts| actions.append(acts));
                        // Counted in the engine's stats; replay reports the count.
                        engine.take_allowed();
                    }
                    (actions, engine.stats())
                })
                .expect("spawn shard worker"),
        );
    }

    let en = Enricher::new(&pack, registry);
    let mut decoders = Decoders::new(DECODERS, registry, "line").expect("spawn decoding threads");
    let mut router = Router {
        en,
        stamper: Stamper::new(&pack),
        keyer: Arc::new(Keyer::new(Arc::clone(&pack))),
        input: String::new(),
        batch: Vec::with_capacity(BATCH),
        sent: VecDeque::new(),
        txs,
        counts: Counts::default(),
        rejects,
        progress,
    };
    for input in inputs {
        router.input = input.name();
        router.progress.input(&router.input, input.byte_len());
        let keyer = Arc::clone(&router.keyer);
        let pool = source::Pool {
            decoders: &mut decoders,
            keyer: &keyer,
        };
        if let Err(e) = source::read_pooled(input, en, pool, &mut router) {
            router.counts.input_errors.push(e.to_string());
        }
        router.flush();
    }
    router.flush();
    let counts = std::mem::take(&mut router.counts);
    drop(router);

    let mut actions = Vec::new();
    let mut shards = Vec::new();
    for w in workers {
        let (a, s) = w.join().expect("shard worker panicked");
        actions.extend(a);
        shards.push(s);
    }
    actions.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    Outcome { actions, counts, shards }
}

/// Errors an input can raise before it is read.
pub fn parse_inputs(args: &[String]) -> Result<Vec<Input>, SourceError> {
    if args.is_empty() {
        return Ok(vec![Input::parse("-")?]);
    }
    args.iter().map(|a| Input::parse(a)).collect()
}

/// Several packs over one stream on the calling thread, one shard each: the input-order
/// joins and the watermark once, every record to every engine. For rule tests, tuning
/// sweeps and pack diffs, which compare packs on the same records in one pass; a single
/// shard gives the same actions as any thread count.
pub struct Serial<'a> {
    en: Enricher<'a>,
    stamper: Stamper,
    engines: Vec<Engine>,
    /// Actions per pack, in the order produced.
    pub actions: Vec<Vec<Action>>,
    pub records: u64,
    /// Records behind the watermark, dropped (a `dead-letter` pack) or clamped (`admit`).
    pub late: u64,
    pub rejects: u64,
}

impl<'a> Serial<'a> {
    /// `packs` must share the first pack's lateness, late policy, number plan and joins (a
    /// sweep varies one rule; a diff of packs that differ there runs them apart).
    pub fn new(packs: &[Arc<Pack>], en: Enricher<'a>) -> Self {
        let first = &packs[0];
        Serial {
            en,
            stamper: Stamper::new(first),
            engines: packs.iter().map(|p| Engine::new(Arc::clone(p), 0, 1)).collect(),
            actions: vec![Vec::new(); packs.len()],
            records: 0,
            late: 0,
            rejects: 0,
        }
    }

    pub fn push(&mut self, r: Record) {
        self.records += 1;
        match self.stamper.stamp(r, self.en) {
            Stamped::Process { rec, wm, clamped, .. } => {
                if clamped {
                    self.late += 1;
                }
                for (e, out) in self.engines.iter_mut().zip(self.actions.iter_mut()) {
                    e.process(&rec, wm, out);
                    e.take_allowed();
                }
            }
            Stamped::Late { .. } => self.late += 1,
        }
    }
}

impl source::Sink for Serial<'_> {
    fn record(&mut self, r: Record, _line: u64) {
        self.push(r);
    }
    fn reject(&mut self, _r: Reject) {
        self.rejects += 1;
    }
}
