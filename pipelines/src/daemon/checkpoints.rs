//! The daemon's checkpoints (`checkpoint_dir`): restoring the newest usable snapshot at
//! start, and taking one between batches every `checkpoint_interval_ms` and at shutdown.
//!
//! A snapshot is taken after a batch's actions are acknowledged and its offsets committed, so
//! the offsets it covers are at or below the committed ones: after a crash the records
//! between the two are read again, rebuild the same state, and their actions are recognised
//! as committed and not produced again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use anning_detector::engine::ShardState;
use anning_detector::watermark::Partitioned;
use anning_detector::{Engine, Joiner};
use anning_rules::Pack;
use anyhow::{Context as _, Result};

use super::release::Shards;
use super::{DaemonConfig, Done, Metrics, Work, now_ms};
use crate::checkpoint::{Meta, Store};

/// What start-up restored (or fresh state when there was nothing to restore).
pub(super) struct Restored {
    pub store: Option<Store>,
    pub engines: Vec<Engine>,
    pub joiner: Joiner,
    pub wm: Partitioned,
    /// Next offset per partition the snapshot covers: where reading resumes.
    pub offsets: BTreeMap<i32, i64>,
}

/// Opens the checkpoint directory and restores the newest snapshot that reads back whole and
/// was taken for this topic and group. Every unusable one is logged as an error naming the
/// file and what is wrong with it, and counted; with none usable the daemon says so and
/// rebuilds as `rebuild` says.
pub(super) fn restore(cfg: &DaemonConfig, pack: &Arc<Pack>, threads: usize, metrics: &Metrics) -> Result<Restored> {
    let fresh = |store| Restored {
        store,
        engines: (0..threads).map(|s| Engine::new(Arc::clone(pack), s, threads)).collect(),
        joiner: Joiner::new(pack),
        wm: Partitioned::new(pack.lateness_ms, pack.late_policy),
        offsets: BTreeMap::new(),
    };
    let Some(dir) = &cfg.checkpoint_dir else {
        return Ok(fresh(None));
    };
    let started = Instant::now();
    let store = Store::open(dir, cfg.checkpoint_keep).with_context(|| format!("cannot open the checkpoint directory {}", dir.display()))?;
    let (topic, group) = (cfg.input_topic.clone(), cfg.group.clone());
    let loaded = store
        .load(|m| {
            if m.topic != topic || m.group != group {
                Err(format!(
                    "taken for topic `{}` group `{}`, this daemon reads `{topic}` as `{group}`",
                    m.topic, m.group
                ))
            } else {
                Ok(())
            }
        })
        .with_context(|| format!("cannot list {}", dir.display()))?;
    for f in &loaded.failures {
        metrics.checkpoint_load_failures.fetch_add(1, Relaxed);
        tracing::error!("unusable snapshot: {f}; trying the one before");
    }
    let Some(snap) = loaded.snapshot else {
        if loaded.failures.is_empty() {
            tracing::info!(dir = %dir.display(), "no snapshot yet: state is rebuilt as `rebuild` says ({:?})", cfg.rebuild);
        } else {
            tracing::error!(
                dir = %dir.display(),
                "no usable snapshot ({} unusable): state is rebuilt as `rebuild` says ({:?})",
                loaded.failures.len(),
                cfg.rebuild
            );
        }
        return Ok(fresh(Some(store)));
    };
    let mut out = fresh(None);
    out.store = Some(store);
    out.joiner = snap.meta.joiner.with_pack(pack);
    out.wm.restore(snap.meta.watermark);
    out.offsets = snap.meta.offsets;
    let (mut keys, mut kept, mut dropped) = (0, 0, 0);
    for (e, part) in out.engines.iter_mut().zip(ShardState::split(snap.parts, threads)) {
        let r = e.restore(part);
        keys += r.keys;
        kept += r.kept;
        dropped += r.dropped;
    }
    let took = started.elapsed();
    metrics.restored_keys.store(keys, Relaxed);
    metrics.restore_ms.store(took.as_millis() as u64, Relaxed);
    let same_pack = snap.meta.pack == pack.hash_hex();
    tracing::info!(
        snapshot = %snap.path.display(),
        bytes = snap.bytes,
        keys,
        kept,
        dropped,
        offsets = ?out.offsets,
        pack = if same_pack { "same" } else { "changed since: state kept as a reload keeps it" },
        ms = took.as_millis() as u64,
        "state restored; reading resumes at the snapshot's offsets"
    );
    Ok(out)
}

/// Takes a snapshot now: the audit log's buffered rows are written first (so it holds the
/// actions of exactly the records the snapshot covers), every shard serializes its state (in
/// parallel, between batches), then the file is written and the old ones pruned. A failure
/// is logged and counted; the previous snapshot stays.
pub(super) fn take(
    store: &mut Store,
    audit: Option<&mut crate::audit::Writer>,
    cfg: &DaemonConfig,
    pack: &Pack,
    shards: &Shards<'_>,
    (joiner, wm, done): (&Joiner, &Partitioned, &HashMap<i32, i64>),
    metrics: &Metrics,
) -> Result<()> {
    if let Some(w) = audit {
        super::release::flush_audit(w, metrics);
    }
    let started = Instant::now();
    for tx in shards.txs {
        tx.send(Work::Snapshot).context("a shard worker stopped")?;
    }
    let mut parts = vec![Vec::new(); shards.threads];
    let mut keys = 0;
    let mut failed = None;
    for _ in 0..shards.threads {
        match shards.rrx.recv().context("a shard worker stopped")? {
            Done::Snapshot { shard, part, keys: k } => {
                keys += k;
                match part {
                    Ok(p) => parts[shard] = p,
                    Err(e) => failed = Some(e),
                }
            }
            _ => unreachable!("snapshots are answered where they are asked"),
        }
    }
    let paused = started.elapsed();
    if let Some(e) = failed {
        metrics.checkpoint_failures.fetch_add(1, Relaxed);
        tracing::error!("checkpoint: cannot serialize a shard's state: {e}; the previous snapshot stays");
        return Ok(());
    }
    let meta = Meta {
        created_ms: now_ms(),
        group: cfg.group.clone(),
        topic: cfg.input_topic.clone(),
        pack: pack.hash_hex(),
        offsets: done.iter().map(|(p, o)| (*p, *o)).collect(),
        watermark: wm.state(),
        joiner,
        keys,
        merge: BTreeMap::new(),
    };
    match store.save(&meta, &parts) {
        Ok((path, bytes)) => {
            metrics.checkpoints.fetch_add(1, Relaxed);
            metrics.checkpoint_bytes.store(bytes, Relaxed);
            metrics.checkpoint_keys.store(keys, Relaxed);
            metrics.checkpoint_pause_ms.store(paused.as_millis() as u64, Relaxed);
            tracing::debug!(
                path = %path.display(),
                bytes,
                keys,
                pause_ms = paused.as_millis() as u64,
                total_ms = started.elapsed().as_millis() as u64,
                "checkpoint written"
            );
        }
        Err(e) => {
            metrics.checkpoint_failures.fetch_add(1, Relaxed);
            tracing::error!(
                "checkpoint: cannot write to {}: {e}; the previous snapshot stays",
                store.dir().display()
            );
        }
    }
    Ok(())
}
