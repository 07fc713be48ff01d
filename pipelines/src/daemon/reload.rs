//! Rules without a restart: loading the configured pack and allowlist, and handing a new
//! pack to every shard between two batches (SIGHUP or `POST /rules/reload`).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;

use anning_rules::Pack;

use super::{DaemonConfig, Done, Metrics, Work};

/// A reload asked for over HTTP: the answer goes back on the sender.
pub type ReloadRequest = crossbeam_channel::Sender<Result<String, String>>;

/// Loads the pack the configuration names (or the shipped one) and its allowlist. Every
/// problem is returned as a `file:line:col: message` line.
pub fn load_rules(cfg: &DaemonConfig) -> Result<Pack, Vec<String>> {
    anning_rules::load_with_allowlist(cfg.rules.as_deref(), cfg.allowlist.as_deref()).map_err(|e| e.lines())
}

/// Loads the configured pack and, if it compiles, hands it to every shard between batches.
/// Returns what to tell whoever asked.
pub(super) fn reload_pack(
    cfg: &DaemonConfig,
    pack: &mut Arc<Pack>,
    txs: &[crossbeam_channel::Sender<Work>],
    rrx: &crossbeam_channel::Receiver<Done>,
    threads: usize,
    metrics: &Metrics,
) -> Result<String, String> {
    let new = load_new(cfg, pack, metrics)?;
    if new.lateness_ms != pack.lateness_ms || new.late_policy != pack.late_policy || new.dlr_join_ms != pack.dlr_join_ms {
        tracing::warn!("the new pack changes lateness, late_policy or dlr_join: those take effect at the next start");
    }
    let mut kept = anning_detector::Reloaded::default();
    for tx in txs {
        tx.send(Work::Reload(Arc::clone(&new)))
            .map_err(|_| "a shard worker stopped".to_string())?;
    }
    for _ in 0..threads {
        match rrx.recv() {
            Ok(Done::Reloaded(r)) => {
                kept.kept += r.kept;
                kept.dropped += r.dropped;
            }
            _ => return Err("a shard worker stopped".into()),
        }
    }
    Ok(took_effect(pack, new, &kept, metrics))
}

/// The configured pack, compiled; or, refused, every problem logged and counted.
pub(super) fn load_new(cfg: &DaemonConfig, pack: &Pack, metrics: &Metrics) -> Result<Arc<Pack>, String> {
    match load_rules(cfg) {
        Ok(p) => Ok(Arc::new(p)),
        Err(errors) => {
            metrics.reload_failures.fetch_add(1, Relaxed);
            for e in &errors {
                tracing::error!("reload refused: {e}");
            }
            Err(format!(
                "reload refused; pack {} keeps running:\n{}\n",
                pack.hash_hex(),
                errors.join("\n")
            ))
        }
    }
}

/// Makes `new` the running pack (logged, counted); returns what to tell whoever asked.
pub(super) fn took_effect(pack: &mut Arc<Pack>, new: Arc<Pack>, kept: &anning_detector::Reloaded, metrics: &Metrics) -> String {
    let msg = format!(
        "reloaded: pack `{}` {} (was {}); {} rule states kept, {} started afresh",
        new.name,
        new.hash_hex(),
        pack.hash_hex(),
        kept.kept,
        kept.dropped
    );
    tracing::info!("{msg}");
    *pack = new;
    *metrics.pack.lock().expect("lock") = (pack.name.clone(), pack.hash_hex());
    metrics.reloads.fetch_add(1, Relaxed);
    msg + "\n"
}

/// Runs until `stop` is set (SIGINT/SIGTERM), then finishes the batch in hand, flushes,
/// commits and returns.
/// How to ask the running daemon for a new pack: SIGHUP sets `signal`; the admin endpoint
/// sends requests that wait for the answer.
pub struct Reload {
    pub signal: Arc<AtomicBool>,
    pub requests: crossbeam_channel::Receiver<ReloadRequest>,
    /// Releases on appeal from the admin endpoint, answered between batches too.
    pub releases: crossbeam_channel::Receiver<super::ReleaseRequest>,
}
