//! `anning daemon`: the NOC service. Consumes records from Kafka, runs them through the same
//! sharded engine as replay, produces actions (keyed `dim:key`) and dead letters, and commits
//! input offsets only after the actions those records caused are acknowledged.
//!
//! # How a batch goes
//! 1. Poll up to `batch_max` messages for at most `batch_ms`.
//! 2. Decode them: as messages are polled their values are copied into chunks of
//!    1024, which `threads` decoding threads decode, enrich and route meanwhile. As the
//!    chunks come back (during polling for those already back, then the rest), in arrival
//!    order, joins and the partitioned watermark. Bad or late records go to the
//!    dead-letter topic with their original bytes and a reason header.
//! 3. Broadcast the batch to the shard workers; gather the actions, ordered by the record
//!    that caused them and then by (ts, dim, key, rule, id).
//! 4. Produce actions and dead letters (idempotent producer); wait until every one is
//!    acknowledged, producing again what failed.
//! 5. Commit the offsets after the batch's last records. A crash anywhere before this
//!    re-delivers the batch: actions repeat with the same ids, nothing is lost.
//!
//! Batches overlap: the shards run batch `i` while batch `i + 1` is polled and decoded;
//! then `i + 1` goes to the shards (behind `i`) and `i` goes through steps 4 and 5 while
//! they run it. At most two batches are uncommitted at any time. Reloads, releases and
//! checkpoints finish the batch in flight first, so the shards are idle for them.
//!
//! # State on start
//! With `checkpoint_dir`, the newest usable snapshot is restored and each partition it covers
//! is read from the snapshot's offset (see [`crate::checkpoint`]). Other partitions follow
//! `rebuild`: with `"earliest"` (the default) a newly assigned partition is read from its
//! beginning so windows and ladders are rebuilt. Either way, actions caused by records below
//! the group's committed offset were acknowledged before and are not produced again.
//! `/readyz` turns ready when every assigned partition has caught up with its committed
//! offset.

pub mod admin;
mod batch;
mod checkpoints;
pub mod config;
mod decode;
pub mod group;
mod kafka;
pub mod metrics;
mod out;
mod release;
mod reload;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anning_detector::engine::{Keyer, Routes};
use anning_detector::{Action, Enricher, Record, Registry, Verdict};
use anning_rules::Pack;
use anyhow::{Context as _, Result};
use crossbeam_channel::bounded;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::producer::Producer;

use crate::decode::RejectReason;
use batch::{Finish, Pending};
pub use config::{DaemonConfig, Rebuild};
use decode::dead_letter;
use kafka::{Ack, Delivery, Rebalancer, consumer_config, producer};
pub use kafka::{create_topics, ensure_topics};
pub use metrics::Metrics;
use out::{Out, Topic, action_out};
pub use release::{ReleaseAsk, ReleaseRequest};
use reload::reload_pack;
pub use reload::{Reload, ReloadRequest, load_rules};

/// Per record of a batch: where it came from, when it entered Kafka and when it was polled.
struct Meta {
    partition: i32,
    offset: i64,
    /// The message's timestamp (producer create time, ms), else its arrival here.
    ingested_ms: i64,
    /// When this process polled it (the clock is read every few messages, and after every
    /// wait: this is at most a few microseconds early, never late).
    polled: Instant,
}

use crate::audit::now_ms;

/// A record with its watermark, the index of its message's `Meta`, and its routes.
type Item = (Record, i64, u32, Routes);
type Batch = Arc<Vec<Item>>;

/// What shard workers are given: a batch, or a new pack to run from now on.
enum Work {
    Batch(Batch),
    Reload(Arc<Pack>),
    /// Lift whatever `key` of `dim` is under, at event time `ts`.
    Release {
        dim: String,
        key: String,
        ts: i64,
        reason: String,
    },
    /// Serialize the shard's state for a checkpoint.
    Snapshot,
}

/// What shard workers answer: a batch's actions (with the record index that tipped each)
/// and the allowlist's held-back actions, or what a reload kept.
enum Done {
    /// From shard `.0`.
    Batch(usize, Vec<(u32, Action)>, Vec<anning_detector::Allowed>),
    Reloaded(anning_detector::Reloaded),
    /// The owner's `release` action (`None` from the others, or when nothing was in force).
    Released(Option<Action>),
    /// A shard's serialized state and how many keys it holds.
    Snapshot {
        shard: usize,
        part: Result<Vec<u8>, String>,
        keys: u64,
    },
}

/// The audit log, when configured, with the running pack archived in it.
fn open_audit(cfg: &DaemonConfig, pack: &Pack) -> Result<Option<crate::audit::Writer>> {
    let Some(dir) = &cfg.audit_dir else { return Ok(None) };
    let mut w = crate::audit::Writer::open(dir, "daemon", cfg.audit_retention_days)?;
    w.archive_pack(pack)?;
    Ok(Some(w))
}

pub fn run(
    cfg: &DaemonConfig,
    pack: Arc<Pack>,
    registry: &Registry,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    reload: Reload,
) -> Result<()> {
    let mut pack = pack;
    *metrics.pack.lock().expect("lock") = (pack.name.clone(), pack.hash_hex());
    if cfg.create_topics {
        ensure_topics(cfg)?;
    }
    let (producer, drx) = producer(cfg)?;

    // State from the newest usable snapshot, or fresh.
    let threads = cfg.threads.max(1);
    let checkpoints::Restored {
        mut store,
        engines,
        mut joiner,
        mut wm,
        offsets: resume,
    } = checkpoints::restore(cfg, &pack, threads, &metrics)?;
    let ctx = Rebalancer {
        rebuild: cfg.rebuild,
        topic: cfg.input_topic.clone(),
        resume: resume.clone(),
        metrics: Arc::clone(&metrics),
        committed: Mutex::new(HashMap::new()),
        assigned: Mutex::new(BTreeSet::new()),
        revoked: Mutex::new(Vec::new()),
    };
    let consumer: BaseConsumer<Rebalancer> = consumer_config(cfg)
        .create_with_context(ctx)
        .context("cannot create the Kafka consumer")?;
    consumer.subscribe(&[&cfg.input_topic]).context("cannot subscribe")?;

    // Shard workers: the same engine and sharding as replay.
    let (rtx, rrx) = bounded::<Done>(threads);
    let mut txs = Vec::new();
    let mut workers = Vec::new();
    for (shard, mut engine) in engines.into_iter().enumerate() {
        let (tx, rx) = bounded::<Work>(2);
        txs.push(tx);
        let rtx = rtx.clone();
        workers.push(thread::Builder::new().name(format!("shard-{shard}")).spawn(move || {
            for work in rx {
                let done = match work {
                    Work::Batch(batch) => {
                        let mut out = Vec::new();
                        engine.process_batch(
                            &batch,
                            |(rec, wm, _, routes)| (rec, *wm, Some(routes)),
                            |i, acts| out.extend(acts.drain(..).map(|a| (batch[i].2, a))),
                        );
                        Done::Batch(shard, out, engine.take_allowed())
                    }
                    Work::Reload(p) => Done::Reloaded(engine.reload(p)),
                    Work::Release { dim, key, ts, reason } => Done::Released(engine.release(&dim, &key, ts, &reason)),
                    Work::Snapshot => Done::Snapshot {
                        shard,
                        part: crate::checkpoint::encode_part(&engine.snapshot()).map_err(|e| e.to_string()),
                        keys: engine.stats().keys,
                    },
                };
                if rtx.send(done).is_err() {
                    return;
                }
            }
        })?);
    }
    drop(rtx);

    let mut decoders = decode::Decoders::new(threads, registry, "message")?;
    // Routes each record once for every shard (on the decoding threads), for the pack of
    // the batch.
    let mut keyer = Arc::new(Keyer::new(Arc::clone(&pack)));
    let mut caught_up: BTreeSet<i32> = BTreeSet::new();
    let mut known: BTreeSet<i32> = BTreeSet::new();
    // Where the restored snapshot ended (its audit rows were written up to there).
    let resumed = resume.clone();
    // Next offset to handle per partition, over this process's life.
    let mut done: HashMap<i32, i64> = resume.into_iter().collect();
    let mut audit = open_audit(cfg, &pack)?;
    let mut audit_flushed = Instant::now();
    let mut checkpointed = Instant::now();
    // The offsets the last snapshot covered: an idle daemon writes no new ones.
    let mut snapshotted = done.clone();
    let mut dirty = false;
    tracing::info!(brokers = %cfg.brokers, group = %cfg.group, topic = %cfg.input_topic, "daemon started");
    // The batch the shards are running while the next one is gathered and decoded.
    let mut inflight: Option<Pending> = None;
    // Records in the largest batch gathered.
    let mut most = 0usize;
    // Next offset per partition that the shards' state covers (`done` runs a batch ahead).
    let mut processed: HashMap<i32, i64> = done.clone();
    let fin = Finish {
        cfg,
        rrx: &rrx,
        threads,
        metrics: &metrics,
        consumer: &consumer,
        producer: &producer,
        drx: &drx,
        stop: &stop,
        resumed: &resumed,
        checkpoints: store.is_some(),
        spare: RefCell::new(None),
        early: RefCell::new(Vec::new()),
    };

    while !stop.load(Ordering::Relaxed) {
        // 0. Between batches: a new pack, if asked for. No record is seen by both packs.
        let asked: Vec<ReloadRequest> = reload.requests.try_iter().collect();
        let signalled = reload.signal.swap(false, Ordering::Relaxed);
        let releases: Vec<ReleaseRequest> = reload.releases.try_iter().collect();
        // Reloads and releases need the shards idle: the batch in flight is finished first.
        if (signalled || !asked.is_empty() || !releases.is_empty())
            && let Some(p) = inflight.take()
        {
            fin.finish(p, &pack, &mut audit, &mut audit_flushed, &mut processed)?;
        }
        if signalled || !asked.is_empty() {
            let answer = reload_pack(cfg, &mut pack, &txs, &rrx, threads, &metrics);
            dirty = true;
            for a in asked {
                let _ = a.send(answer.clone());
            }
            if let Some(w) = &mut audit
                && let Err(e) = w.archive_pack(&pack)
            {
                tracing::error!("audit log: cannot archive the pack: {e}");
            }
        }
        let en = Enricher::new(&pack, registry);
        // 1. Gather a batch.
        // The buffer of a finished batch, else one sized like the largest batch yet:
        // growing a vector of records by doubling copied each record again and again, and
        // a new one of megabytes came zeroed from the kernel each time.
        if !Arc::ptr_eq(keyer.pack(), &pack) {
            keyer = Arc::new(Keyer::new(Arc::clone(&pack)));
        }
        let mut records: Vec<Item> = fin.spare.take().unwrap_or_else(|| Vec::with_capacity(most));
        let mut metas: Vec<Meta> = Vec::with_capacity(most);
        // The messages polled, held until the batch is decoded; their values are copied
        // into chunks, decoded on other threads as soon as a chunk is full.
        let mut msgs: Vec<BorrowedMessage<'_>> = Vec::with_capacity(most);
        // When each of them was polled.
        let mut polls: Vec<Instant> = Vec::with_capacity(most);
        let mut chunk = decoders.chunk();
        let mut outs: Vec<Out> = Vec::new();
        // Audit rows of what this batch produces, written once acknowledged.
        let mut audited: Vec<crate::audit::Entry> = Vec::new();
        let shards = release::Shards {
            txs: &txs,
            rrx: &rrx,
            threads,
        };
        let now = wm.current().max(0);
        let answers = release::take(
            releases,
            |ask| release::on_shards(ask, now, &shards),
            &metrics,
            &mut outs,
            &mut audited,
        );
        // State changed without new offsets: the next checkpoint must not be skipped.
        dirty |= !answers.is_empty();
        let mut next_offsets: BTreeMap<i32, i64> = BTreeMap::new();
        let started = Instant::now();
        // With a batch in flight nothing is waited for: when no message has arrived, that
        // batch is finished (its actions go out) before waiting.
        let busy = inflight.as_ref().is_some_and(|p| p.batch.is_some() || !p.outs.is_empty());
        let batch_time = Duration::from_millis(cfg.batch_ms);
        let mut polled = 0u32;
        // What depends on the records before (joins, the watermark) is done in arrival order
        // as chunks come back decoded: during polling for those already back, so that the
        // decoding threads and the shards are not left idle while all of it is done at the
        // end of the batch. Messages `..stamped` are done; `stamp` takes the next ones.
        let mut stamped = 0usize;
        let mut stamp = |decoded: &mut decode::Decoded, msgs: &[BorrowedMessage<'_>], polls: &[Instant], outs: &mut Vec<Out>| {
            let (msgs, polls) = (&msgs[stamped..stamped + decoded.len()], &polls[stamped..]);
            stamped += msgs.len();
            for ((d, m), &polled) in decoded.drain(..).zip(msgs).zip(polls) {
                if !known.contains(&m.partition()) {
                    // Newly assigned partitions hold the watermark back from now on.
                    for p in consumer.context().assigned.lock().expect("lock").iter() {
                        wm.register(*p);
                        known.insert(*p);
                    }
                    known.insert(m.partition());
                }
                let ingested_ms = m.timestamp().to_millis().unwrap_or_else(now_ms);
                match d {
                    Ok((rec, routes)) => {
                        let (mut rec, joined) = joiner.apply_joined(rec, en);
                        let routes = if joined { keyer.routes(&rec) } else { routes };
                        metrics.records_in[rec.kind as usize].fetch_add(1, Relaxed);
                        match wm.observe(m.partition(), rec.ts) {
                            Verdict::Process { ts, wm } => {
                                rec.ts = ts;
                                records.push((rec, wm, metas.len() as u32, routes));
                                metas.push(Meta {
                                    partition: m.partition(),
                                    offset: m.offset(),
                                    ingested_ms,
                                    polled,
                                });
                            }
                            Verdict::Late { behind } => {
                                if !rebuilding(&consumer, m) {
                                    *metrics.rejects.lock().expect("lock").entry(RejectReason::Late.name()).or_default() += 1;
                                    let detail = format!("{} record {behind} ms older than the watermark", rec.kind.name());
                                    outs.push(dead_letter(m, RejectReason::Late.name(), &detail, None));
                                }
                            }
                        }
                    }
                    Err(bad) => {
                        if !rebuilding(&consumer, m) {
                            *metrics.rejects.lock().expect("lock").entry(bad.reason.name()).or_default() += 1;
                            outs.push(dead_letter(m, bad.reason.name(), &bad.detail, bad.col));
                        }
                    }
                }
            }
        };
        // The partition of the last message polled: messages come in runs from one partition
        // (a fetch at a time), so `done` and `next_offsets` are read and written once a run.
        let mut run: Option<Run> = None;
        // The clock is read every 64 messages (once per message it cost 3 % of the loop), and
        // after a wait: a message is taken as polled at the last reading before it.
        let mut clock = started;
        while msgs.len() + outs.len() < cfg.batch_max {
            if polled.is_multiple_of(64) {
                clock = Instant::now();
                if clock - started >= batch_time {
                    break;
                }
            }
            polled += 1;
            // Wait for the first message; after it, take what has already arrived and no
            // more: a batch is what came in while the last one ran (large under load, a
            // few records when quiet), so a record never waits for a batch to fill.
            let wait = if msgs.is_empty() && outs.is_empty() && !busy {
                Duration::from_millis(cfg.batch_ms.min(100))
            } else {
                Duration::ZERO
            };
            let Some(msg) = consumer.poll(wait) else {
                break;
            };
            if !wait.is_zero() {
                clock = Instant::now();
            }
            let m = match msg {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!("consumer: {e}");
                    break;
                }
            };
            // A message this process already handled (re-fetched after a broker outage or a
            // rebalance back to us) is skipped: its effects are in the state and its actions
            // were acknowledged.
            let p = m.partition();
            if run.is_none_or(|r| r.partition != p) {
                end_run(run.take(), &mut done, &mut next_offsets);
                let next = done.get(&p).copied().unwrap_or(i64::MIN);
                run = Some(Run {
                    partition: p,
                    next,
                    took: false,
                });
            }
            let r = run.as_mut().expect("a run");
            if m.offset() < r.next {
                metrics.redelivered.fetch_add(1, Relaxed);
                continue;
            }
            (r.next, r.took) = (m.offset() + 1, true);
            chunk.push(m.payload());
            msgs.push(m);
            polls.push(clock);
            if chunk.len() >= decode::CHUNK {
                let next = decoders.chunk();
                decoders.send(&keyer, std::mem::replace(&mut chunk, next));
                while let Some((mut decoded, back)) = decoders.try_next_decoded() {
                    stamp(&mut decoded, &msgs, &polls, &mut outs);
                    decoders.recycle_with(back, decoded);
                }
            }
        }
        end_run(run, &mut done, &mut next_offsets);
        // Then the rest, as the chunks still out come back decoded.
        decoders.close(&keyer, chunk);
        while let Some((mut decoded, back)) = decoders.next_decoded() {
            stamp(&mut decoded, &msgs, &polls, &mut outs);
            decoders.recycle_with(back, decoded);
        }
        debug_assert_eq!(stamped, msgs.len(), "one decoded result per message");
        drop(msgs);
        for p in ctx_revoked(&consumer) {
            wm.remove(p);
            caught_up.remove(&p);
            known.remove(&p);
        }
        metrics.watermark_ms.store(wm.current().max(0), Relaxed);

        // 2. This batch to the shards, behind the one in flight (each shard runs its batches
        //    in order); it is finished once the next one is gathered.
        let gathered: BTreeSet<i32> = next_offsets.keys().copied().collect();
        most = most.max(records.len());
        let batch = if records.is_empty() {
            None
        } else {
            let batch: Batch = Arc::new(records);
            for tx in &txs {
                tx.send(Work::Batch(Arc::clone(&batch))).context("a shard worker stopped")?;
            }
            Some(batch)
        };
        // 3. The batch before this one, which the shards ran while this one was gathered:
        //    its actions produced and acknowledged, audited, its offsets committed, while
        //    the shards run this one.
        if let Some(p) = inflight.take() {
            fin.finish(p, &pack, &mut audit, &mut audit_flushed, &mut processed)?;
        }
        if let Some(b) = &batch {
            metrics.shard_queue.store(b.len() as i64, Relaxed);
        }
        inflight = Some(Pending {
            batch,
            metas,
            outs,
            audited,
            answers,
            next_offsets,
            started,
        });

        // 5. A checkpoint, when due: the state now covers exactly the records below `done`.
        if let Some(st) = &mut store
            && checkpointed.elapsed() >= Duration::from_millis(cfg.checkpoint_interval_ms)
            && (done != snapshotted || dirty)
        {
            if let Some(p) = inflight.take() {
                fin.finish(p, &pack, &mut audit, &mut audit_flushed, &mut processed)?;
            }
            snapshotted = done.clone();
            dirty = false;
            let shards = release::Shards {
                txs: &txs,
                rrx: &rrx,
                threads,
            };
            checkpoints::take(st, audit.as_mut(), cfg, &pack, &shards, (&joiner, &wm, &done), &metrics)?;
            checkpointed = Instant::now();
        }

        // Readiness and lag.
        // A partition has caught up once this process's state covers its committed offset
        // (records read again, or a snapshot that reaches it).
        let committed = consumer.context().committed.lock().expect("lock").clone();
        for (p, c) in &committed {
            if processed.get(p).is_some_and(|o| o >= c) {
                caught_up.insert(*p);
            }
        }
        let assigned = consumer.context().assigned.lock().expect("lock").clone();
        let ready = !assigned.is_empty()
            && assigned
                .iter()
                .all(|p| caught_up.contains(p) || committed.get(p).copied().unwrap_or(0) == 0);
        metrics.ready.store(ready, Relaxed);
        // Every assigned partition holds the watermark back until it delivers, unless it has
        // nothing to deliver (no lag).
        let lag = metrics.lag.lock().expect("lock").clone();
        for p in &assigned {
            wm.set_idle(*p, lag.get(p).is_some_and(|l| *l == 0) && !gathered.contains(p));
        }
    }

    tracing::info!("stopping: flushing and committing");
    if let Some(p) = inflight.take() {
        fin.finish(p, &pack, &mut audit, &mut audit_flushed, &mut processed)?;
    }
    if let Some(st) = &mut store {
        let shards = release::Shards {
            txs: &txs,
            rrx: &rrx,
            threads,
        };
        checkpoints::take(st, audit.as_mut(), cfg, &pack, &shards, (&joiner, &wm, &done), &metrics)?;
    }
    drop(txs);
    for w in workers {
        let _ = w.join();
    }
    producer.flush(Duration::from_secs(30)).context("flush at shutdown")?;
    if let Some(w) = &mut audit {
        release::flush_audit(w, &metrics);
    }
    Ok(())
}

/// Whether a message lies below its partition's committed offset (read again to rebuild
/// state): its dead letter, like its actions, went out before.
/// Messages polled in a row from one partition: the next offset there (skipping what came
/// before it), and whether one was taken.
#[derive(Clone, Copy)]
struct Run {
    partition: i32,
    next: i64,
    took: bool,
}

/// Records where a run of messages ended: the next offset of its partition, once handled
/// (`done`) and to commit after this batch (`next_offsets`), if it took a message.
fn end_run(run: Option<Run>, done: &mut HashMap<i32, i64>, next_offsets: &mut BTreeMap<i32, i64>) {
    if let Some(Run {
        partition,
        next,
        took: true,
    }) = run
    {
        done.insert(partition, next);
        next_offsets.insert(partition, next);
    }
}

fn rebuilding(consumer: &BaseConsumer<Rebalancer>, m: &BorrowedMessage<'_>) -> bool {
    let committed = consumer.context().committed.lock().expect("lock");
    m.offset() < committed.get(&m.partition()).copied().unwrap_or(0)
}

fn ctx_revoked(consumer: &BaseConsumer<Rebalancer>) -> Vec<i32> {
    std::mem::take(&mut *consumer.context().revoked.lock().expect("lock"))
}

/// Reads every header of a message as text (for tests and tools).
pub fn headers_of(m: &impl Message) -> Vec<(String, String)> {
    m.headers()
        .map(|h| {
            h.iter()
                .map(|x| (x.key.to_string(), String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned()))
                .collect()
        })
        .unwrap_or_default()
}
