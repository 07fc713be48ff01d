//! Scale-out (`repartition = true`): several daemons in one consumer group split the work,
//! and any number of them give the same actions as one.
//!
//! # Tasks
//! The group consumes the input topic and one internal topic per dimension of the pack,
//! `PREFIX.DIM` (`anning.repartition.sig-dst` for `sig+dst`). Kafka's group protocol gives
//! each daemon some of their partitions; each partition is a task with its own state.
//! - **Input task** (input partition `p`): decodes, joins (delivery reports to their
//!   messages, replies to their port's signature) and judges lateness with `p`'s own
//!   watermark, then re-keys each record: for every dimension a rule keys it by, the record
//!   goes to partition `shard_of(hash(key), Q)` of that dimension's topic, with its origin
//!   (`p`, offset), `R` = the largest event time `p` has carried so far, and the input
//!   message's Kafka timestamp (headers `anning.p`, `anning.o`, `anning.r`, `anning.t`; the
//!   last only times the action, `anning_ingest_to_action_seconds`, and a record without it
//!   is timed from its own timestamp). After each batch it announces its progress (`R`, and
//!   whether `p` is caught up) to every partition.
//! - **Dimension task** (partition `q` of `PREFIX.DIM`): holds the keys of that dimension
//!   that hash to `q`. It merges what the input tasks sent in the order (`R`, `p`, offset),
//!   releasing a record once every input partition has sent one that sorts after it or
//!   announced that it will, and runs it with watermark `R − lateness`.
//!
//! # Why the actions are the same for any number of daemons
//! Each input partition's sequence is fixed by Kafka, so `R`, lateness and joins are too;
//! the merge order is a function of those sequences alone, and each record's watermark is its
//! own `R − lateness`. A key's state therefore sees the same records, in the same order, with
//! the same watermarks, whichever daemon holds it — and with one input partition this is
//! exactly replay. Repeated deliveries after a failover are recognised by origin offset.
//! An input partition that has been caught up and silent for `idle_ms` stops holding the
//! merge back; if it delivers again, its records join the merge where they arrive (the one
//! case where timing can matter: a partition silent that long while others carry traffic).
//!
//! # State on assignment and revocation
//! With `checkpoint_dir` each task snapshots into `DIR/TASK/` every
//! `checkpoint_interval_ms`, and at revocation, before the partition moves: the next owner
//! restores it and reads only the tail. The directory must be shared by the group's
//! daemons (one host, or a shared volume). Without a snapshot a task rebuilds from its
//! partition's beginning; actions (and re-keyed records) of offsets below the committed one
//! were delivered before and are not produced again.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anning_detector::engine::{Keyer, shard_of};
use anning_detector::{Action, Enricher, RecordBuilder, Registry};
use anning_rules::Pack;
use anyhow::{Context as _, Result, bail};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};

use self::merge::Pending;
use self::steps::{Made, merge_run, route};
use self::tasks::{Ctx, DimTask, Names, Shared, Task, TaskId};
use super::batch::deliver;
use super::kafka::client_config;
use super::{DaemonConfig, Metrics, Out, Reload, Topic, action_out, create_topics, now_ms};

mod merge;
mod steps;
mod tasks;

/// The internal topic of a dimension.
pub fn topic_of(prefix: &str, dim: &str) -> String {
    format!("{prefix}.{}", dim.replace('+', "-"))
}

/// A message gathered for a batch: what it is and where it came from.
struct Got {
    task: TaskId,
    generation: u64,
    offset: i64,
    key: Vec<u8>,
    payload: Vec<u8>,
    /// Origin (p, offset, R) of a re-keyed record, or a progress announcement (p, R, idle).
    origin: Option<(i32, i64, i64)>,
    marker: Option<(i32, i64, bool)>,
    /// When the record entered Kafka (ms): an input message's timestamp; for a re-keyed
    /// record, its input message's (the `anning.t` header), else its own.
    ingested_ms: i64,
}

fn header_i64(m: &impl Message, name: &str) -> Option<i64> {
    let h = m.headers()?;
    h.iter()
        .find(|x| x.key == name)
        .and_then(|x| std::str::from_utf8(x.value?).ok()?.parse().ok())
}

pub fn run(
    cfg: &DaemonConfig,
    pack: Arc<Pack>,
    registry: &Registry,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    reload: Reload,
) -> Result<()> {
    *metrics.pack.lock().expect("lock") = (pack.name.clone(), pack.hash_hex());
    let conf = client_config(cfg, &BTreeMap::new());
    if cfg.create_topics {
        super::ensure_topics(cfg)?;
    }
    // The input's partitions decide how many upstreams every merge waits for.
    let probe: BaseConsumer = conf.create().context("cannot create a Kafka client")?;
    let md = probe
        .fetch_metadata(Some(&cfg.input_topic), Duration::from_secs(30))
        .context("cannot read the input topic's metadata")?;
    let upstreams = md.topics().first().map_or(0, |t| t.partitions().len()).max(1);
    let q = if cfg.repartition_partitions > 0 {
        cfg.repartition_partitions
    } else {
        upstreams as i32
    };
    let names = Names {
        input: cfg.input_topic.clone(),
        dims: pack
            .dims
            .iter()
            .map(|d| (d.name(), topic_of(&cfg.repartition_prefix, &d.name())))
            .collect(),
    };
    let dim_topics: Vec<(&str, i32)> = names.dims.iter().map(|(_, t)| (t.as_str(), q)).collect();
    create_topics(&conf, &dim_topics)?;
    // Every dimension partition must exist before anyone routes to it.
    for (t, _) in &dim_topics {
        let md = probe.fetch_metadata(Some(t), Duration::from_secs(30))?;
        let have = md.topics().first().map_or(0, |x| x.partitions().len()) as i32;
        if have != q {
            bail!("topic {t} has {have} partitions; this group routes to {q}: set repartition_partitions to {have} or recreate it");
        }
    }

    let (producer, drx) = super::producer(cfg)?;

    let ctx = Ctx {
        names,
        pack: Mutex::new(Arc::clone(&pack)),
        upstreams,
        store_dir: cfg.checkpoint_dir.clone(),
        keep: cfg.checkpoint_keep,
        group: cfg.group.clone(),
        metrics: Arc::clone(&metrics),
        shared: Mutex::new(Shared {
            tasks: BTreeMap::new(),
            committed: HashMap::new(),
            generation: HashMap::new(),
            gen_counter: 0,
            lag: HashMap::new(),
        }),
    };
    let consumer: BaseConsumer<Ctx> = super::consumer_config(cfg)
        .create_with_context(ctx)
        .context("cannot create the Kafka consumer")?;
    let mut topics: Vec<&str> = vec![&cfg.input_topic];
    let dim_topic_names: Vec<String> = consumer.context().names.dims.iter().map(|(_, t)| t.clone()).collect();
    topics.extend(dim_topic_names.iter().map(String::as_str));
    consumer.subscribe(&topics).context("cannot subscribe")?;
    tracing::info!(brokers = %cfg.brokers, group = %cfg.group, topic = %cfg.input_topic, upstreams, partitions = q, "daemon started (repartition)");

    let mut builder = RecordBuilder::default();
    let mut checkpointed = Instant::now();
    let mut audit = super::open_audit(cfg, &pack)?;
    let mut audit_flushed = Instant::now();
    let mut pack = pack;
    // Which dims a record is re-keyed under, for the pack of the batch.
    let mut keyer = Keyer::new(Arc::clone(&pack));
    while !stop.load(Ordering::Relaxed) {
        // Reloads: every task's engine takes the new pack between batches.
        let asked: Vec<super::ReloadRequest> = reload.requests.try_iter().collect();
        if reload.signal.swap(false, Ordering::Relaxed) || !asked.is_empty() {
            let answer = reload_tasks(cfg, &mut pack, consumer.context(), &metrics);
            for a in asked {
                let _ = a.send(answer.clone());
            }
        }
        // Releases on appeal: the task that keeps the target lifts it; the answer waits for
        // the `release` action's acknowledgement.
        let mut outs: Vec<Out> = Vec::new();
        let mut audited: Vec<crate::audit::Entry> = Vec::new();
        let answers = super::release::take(
            reload.releases.try_iter().collect(),
            |ask| release_here(consumer.context(), &pack, q, ask),
            &metrics,
            &mut outs,
            &mut audited,
        );
        let en = Enricher::new(&pack, registry);
        if !Arc::ptr_eq(keyer.pack(), &pack) {
            keyer = Keyer::new(Arc::clone(&pack));
        }

        // 1. Gather.
        let mut got: Vec<Got> = Vec::new();
        let started = Instant::now();
        while got.len() < cfg.batch_max && started.elapsed() < Duration::from_millis(cfg.batch_ms) {
            let Some(msg) = consumer.poll(Duration::from_millis(cfg.batch_ms.min(100))) else {
                if got.is_empty() {
                    break;
                }
                continue;
            };
            let m = match msg {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!("consumer: {e}");
                    break;
                }
            };
            let Some(task) = consumer.context().names.task(m.topic(), m.partition()) else {
                continue;
            };
            let generation = consumer
                .context()
                .shared
                .lock()
                .expect("lock")
                .generation
                .get(&task)
                .copied()
                .unwrap_or(0);
            let marker = header_i64(&m, "anning.r").filter(|_| header_i64(&m, "anning.marker").is_some());
            let (marker, origin) = match (marker, header_i64(&m, "anning.p")) {
                (Some(r), Some(p)) => (Some((p as i32, r, header_i64(&m, "anning.idle") == Some(1))), None),
                (None, Some(p)) => (
                    None,
                    Some((
                        p as i32,
                        header_i64(&m, "anning.o").unwrap_or(-1),
                        header_i64(&m, "anning.r").unwrap_or(i64::MIN),
                    )),
                ),
                _ => (None, None),
            };
            let ingested_ms = header_i64(&m, "anning.t")
                .filter(|_| origin.is_some())
                .or_else(|| m.timestamp().to_millis())
                .unwrap_or_else(now_ms);
            got.push(Got {
                task,
                generation,
                offset: m.offset(),
                key: m.key().unwrap_or_default().to_vec(),
                payload: m.payload().unwrap_or_default().to_vec(),
                origin,
                marker,
                ingested_ms,
            });
        }

        // 2. Process, in arrival order per task.
        let mut commits: BTreeMap<TaskId, i64> = BTreeMap::new();
        {
            let ctx = consumer.context();
            let mut sh = ctx.shared.lock().expect("lock");
            let Shared {
                tasks,
                committed,
                generation,
                lag,
                ..
            } = &mut *sh;
            let mut fed: BTreeMap<TaskId, bool> = BTreeMap::new();
            for g in got {
                if generation.get(&g.task).copied() != Some(g.generation) {
                    continue;
                }
                let Some(task) = tasks.get_mut(&g.task) else { continue };
                let below = g.offset < committed.get(&g.task).copied().unwrap_or(0);
                fed.insert(g.task, true);
                match (g.task, task) {
                    (TaskId::Input(p), Task::Input(it)) => {
                        if g.offset < it.next {
                            metrics.redelivered.fetch_add(1, Relaxed);
                            continue;
                        }
                        it.next = g.offset + 1;
                        it.last_fed = Instant::now();
                        route(ctx, &keyer, en, &mut builder, it, p, &g, below, q, &metrics, &mut outs);
                    }
                    (TaskId::Dim(_, _), Task::Dim(dt)) => {
                        if g.offset < dt.next {
                            metrics.redelivered.fetch_add(1, Relaxed);
                            continue;
                        }
                        dt.next = g.offset + 1;
                        if let Some((p, r, idle)) = g.marker {
                            dt.merge.mark(p, r, idle);
                        } else if let Some((p, off, r)) = g.origin {
                            let text = String::from_utf8_lossy(&g.payload);
                            match crate::decode::jsonl::JsonFields::parse(&text)
                                .and_then(|mut f| crate::decode::assemble(&mut f, &mut builder, en))
                            {
                                Ok(rec) => {
                                    let fresh = dt.merge.offer(
                                        p,
                                        Pending {
                                            r,
                                            offset: off,
                                            q_off: g.offset,
                                            item: (rec, g.ingested_ms),
                                        },
                                    );
                                    if !fresh {
                                        metrics.redelivered.fetch_add(1, Relaxed);
                                    }
                                }
                                Err(e) => tracing::error!(
                                    "re-keyed record at {}@{} does not decode: {}",
                                    ctx.names.topic(g.task),
                                    g.offset,
                                    e.detail
                                ),
                            }
                        }
                    }
                    _ => unreachable!("tasks match their ids"),
                }
            }
            // Progress announcements of the input tasks, when they changed.
            for (t, task) in tasks.iter_mut() {
                if let (TaskId::Input(p), Task::Input(it)) = (t, task) {
                    let r = it.wm.max_of(*p).unwrap_or(i64::MIN);
                    let idle = !fed.contains_key(t)
                        && lag.get(p).is_some_and(|l| *l == 0)
                        && it.last_fed.elapsed() >= Duration::from_millis(cfg.idle_ms);
                    if it.announced != Some((r, idle)) && it.next >= committed.get(t).copied().unwrap_or(0) {
                        if idle != it.announced.is_some_and(|(_, was)| was) {
                            tracing::info!(
                                partition = p,
                                offset = it.next,
                                "input partition {}",
                                if idle {
                                    "caught up and silent: announced idle"
                                } else {
                                    "delivering: announced busy"
                                }
                            );
                        }
                        it.announced = Some((r, idle));
                        for (_, topic) in &ctx.names.dims {
                            for part in 0..q {
                                outs.push(Out {
                                    topic: Topic::Named(topic.clone().into(), Some(part)),
                                    key: b"marker".to_vec(),
                                    payload: Vec::new(),
                                    headers: vec![
                                        ("anning.marker", b"1".to_vec()),
                                        ("anning.p", p.to_string().into_bytes()),
                                        ("anning.r", r.to_string().into_bytes()),
                                        ("anning.idle", if idle { b"1".to_vec() } else { b"0".to_vec() }),
                                    ],
                                    action: None,
                                });
                            }
                        }
                    }
                    commits.insert(*t, it.next);
                }
            }
            // The merges: release and run what is ready, task by task (in parallel).
            let lateness = pack.lateness_ms;
            let mut dim_tasks: Vec<(TaskId, &mut DimTask, bool)> = tasks
                .iter_mut()
                .filter_map(|(t, task)| match task {
                    Task::Dim(dt) => Some((*t, &mut **dt, false)),
                    Task::Input(_) => None,
                })
                .collect();
            let threads = cfg.threads.max(1);
            let disorder = &metrics.merge_out_of_order;
            let results: Vec<Vec<Made>> = std::thread::scope(|s| {
                let chunk = dim_tasks.len().div_ceil(threads).max(1);
                let handles: Vec<_> = dim_tasks
                    .chunks_mut(chunk)
                    .map(|part| {
                        s.spawn(move || {
                            let mut out = Vec::new();
                            for (t, dt, _) in part.iter_mut() {
                                merge_run(*t, dt, lateness, &mut out, disorder);
                            }
                            out
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().expect("a merge thread panicked")).collect()
            });
            for (t, dt, _) in &dim_tasks {
                let next = dt.merge.oldest().unwrap_or(dt.next);
                commits.insert(*t, next);
            }
            let waiting = dim_tasks.iter().filter(|(_, dt, _)| !dt.merge.drained()).count();
            metrics.merges_waiting.store(waiting as i64, Relaxed);
            for Made {
                task: t,
                q_off,
                action: a,
                event_ts,
                ingested_ms,
            } in results.into_iter().flatten()
            {
                if q_off < committed.get(&t).copied().unwrap_or(0) {
                    metrics.actions_suppressed.fetch_add(1, Relaxed);
                    continue;
                }
                outs.push(action_out(&a, ingested_ms, None, event_ts));
                if audit.is_some() {
                    audited.push(crate::audit::Entry::from_action(&a, "daemon", None));
                }
            }
        }

        // 3. Produce, wait for every acknowledgement, commit.
        deliver(&producer, cfg, &outs, &drx, &metrics, &stop)?;
        for (answer, reply) in answers {
            let _ = answer.send(reply);
        }
        if let Some(w) = &mut audit {
            let every = Some(Duration::from_millis(cfg.audit_flush_ms));
            super::release::keep_audit(w, audited, every, &mut audit_flushed, &metrics);
        }
        if !commits.is_empty() {
            let names = &consumer.context().names;
            let mut tpl = TopicPartitionList::new();
            for (t, o) in &commits {
                let p = match t {
                    TaskId::Input(p) | TaskId::Dim(_, p) => *p,
                };
                tpl.add_partition_offset(names.topic(*t), p, Offset::Offset(*o))?;
            }
            match consumer.commit(&tpl, CommitMode::Sync) {
                Ok(()) => {
                    metrics.commits.fetch_add(1, Relaxed);
                }
                Err(e) => {
                    metrics.commit_errors.fetch_add(1, Relaxed);
                    tracing::warn!("commit failed ({e}); the next commit covers these offsets");
                }
            }
            metrics.batches.fetch_add(1, Relaxed);
        }

        // 4. Snapshots, readiness.
        let ctx = consumer.context();
        if ctx.store_dir.is_some() && checkpointed.elapsed() >= Duration::from_millis(cfg.checkpoint_interval_ms) {
            let sh = ctx.shared.lock().expect("lock");
            for (t, task) in &sh.tasks {
                ctx.save_task(*t, task);
            }
            checkpointed = Instant::now();
        }
        let sh = ctx.shared.lock().expect("lock");
        let ready = !sh.tasks.is_empty()
            && sh.tasks.iter().all(|(t, task)| {
                let pos = match task {
                    Task::Input(it) => it.next,
                    Task::Dim(dt) => dt.next,
                };
                pos >= sh.committed.get(t).copied().unwrap_or(0)
            });
        metrics.ready.store(ready, Relaxed);
    }

    tracing::info!("stopping: snapshots and a last commit");
    let ctx = consumer.context();
    if ctx.store_dir.is_some() {
        let sh = ctx.shared.lock().expect("lock");
        for (t, task) in &sh.tasks {
            ctx.save_task(*t, task);
        }
    }
    use rdkafka::producer::Producer as _;
    producer.flush(Duration::from_secs(30)).context("flush at shutdown")?;
    if let Some(w) = &mut audit {
        super::release::flush_audit(w, &metrics);
    }
    Ok(())
}

/// Lifts what `ask`'s target is under, if this daemon holds the task that keeps it (the
/// target's dimension partition); otherwise says which partition does (ask every daemon of
/// the group: one answers with the `release` action).
fn release_here(ctx: &Ctx, pack: &Pack, q: i32, ask: &super::ReleaseAsk) -> Result<Option<Action>, String> {
    let Some(d) = pack.dims.iter().position(|x| x.name() == ask.dim) else {
        return Err(format!("no rule keys by `{}`\n", ask.dim));
    };
    let dim = &pack.dims[d];
    let parts: Vec<&str> = ask.key.splitn(dim.parts.len(), '+').collect();
    let hash = anning_detector::engine::key_hash(anning_detector::engine::dim_seed(dim), &parts);
    let part = shard_of(hash, q as u64) as i32;
    let Some(i) = ctx.names.dims.iter().position(|(n, _)| *n == ask.dim) else {
        return Err(format!("no task keeps `{}`\n", ask.dim));
    };
    let t = TaskId::Dim(i, part);
    let mut sh = ctx.shared.lock().expect("lock");
    let Some(Task::Dim(dt)) = sh.tasks.get_mut(&t) else {
        return Err(format!(
            "{}:{} is kept by partition {part} of {}, which another daemon of the group holds: ask that one\n",
            ask.dim,
            anning_detector::mask::mask_number(&ask.key),
            ctx.names.dims[i].1
        ));
    };
    let reason = format!("{} (by {})", ask.reason, ask.author);
    Ok(dt.engine.release(&ask.dim, &ask.key, dt.last_r.max(0), &reason))
}

/// Hands a new pack to every task's engine between batches.
fn reload_tasks(cfg: &DaemonConfig, pack: &mut Arc<Pack>, ctx: &Ctx, metrics: &Metrics) -> Result<String, String> {
    let new = super::reload::load_new(cfg, pack, metrics)?;
    if new.dims.iter().map(|d| d.name()).collect::<Vec<_>>() != pack.dims.iter().map(|d| d.name()).collect::<Vec<_>>() {
        metrics.reload_failures.fetch_add(1, Relaxed);
        return Err(
            "reload refused: with repartition = true the new pack must key by the same dimensions (restart the group for new ones)\n"
                .into(),
        );
    }
    let mut kept = anning_detector::Reloaded::default();
    for task in ctx.shared.lock().expect("lock").tasks.values_mut() {
        if let Task::Dim(dt) = task {
            let r = dt.engine.reload(Arc::clone(&new));
            kept.kept += r.kept;
            kept.dropped += r.dropped;
        }
    }
    *ctx.pack.lock().expect("lock") = Arc::clone(&new);
    Ok(super::reload::took_effect(pack, new, &kept, metrics))
}
