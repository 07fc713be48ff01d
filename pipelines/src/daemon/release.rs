//! Release on appeal: `POST /actions/release` lifts whatever action a target is under. The
//! batch loop hands the request to the shard that owns the target between two batches; the
//! `release` action goes to the actions topic (enforcement points lift the throttle) and to
//! the audit log with who released and why.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anning_detector::Action;
use serde::Deserialize;

use super::{Done, Metrics, Out, Work, action_out, now_ms};
use crate::audit::{Entry, Writer};

/// What an operator asks: the target and the appeal's outcome.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReleaseAsk {
    pub dim: String,
    pub key: String,
    pub reason: String,
    pub author: String,
}

impl ReleaseAsk {
    /// Parses the request body (JSON), naming what is missing.
    pub fn parse(body: &str) -> Result<ReleaseAsk, String> {
        let ask: ReleaseAsk = serde_json::from_str(body)
            .map_err(|e| format!("body: {e}; expected {{\"dim\": \"src\", \"key\": \"…\", \"reason\": \"…\", \"author\": \"…\"}}"))?;
        for (name, v) in [
            ("dim", &ask.dim),
            ("key", &ask.key),
            ("reason", &ask.reason),
            ("author", &ask.author),
        ] {
            if v.trim().is_empty() {
                return Err(format!("body: `{name}` must not be empty"));
            }
        }
        Ok(ask)
    }
}

/// A release asked for over HTTP: the answer (the release action as JSON, or why nothing was
/// released) goes back on the sender.
pub type ReleaseRequest = (ReleaseAsk, crossbeam_channel::Sender<Result<String, String>>);

/// The shard workers, to ask between batches.
pub(super) struct Shards<'a> {
    pub txs: &'a [crossbeam_channel::Sender<Work>],
    pub rrx: &'a crossbeam_channel::Receiver<Done>,
    pub threads: usize,
}

/// An answer to send once the batch's messages are acknowledged.
pub(super) type Answer = (crossbeam_channel::Sender<Result<String, String>>, Result<String, String>);

/// Carries out the releases asked for since the last batch with `lift` (the `release`
/// action, `None` when nothing was in force, or why this daemon cannot): each `release`
/// action joins the batch's messages and audit rows; the answers wait for the batch to be
/// acknowledged.
pub(super) fn take(
    requests: Vec<ReleaseRequest>,
    mut lift: impl FnMut(&ReleaseAsk) -> Result<Option<Action>, String>,
    metrics: &Metrics,
    outs: &mut Vec<Out>,
    audited: &mut Vec<Entry>,
) -> Vec<Answer> {
    let mut answers = Vec::new();
    for (ask, answer) in requests {
        let reply = match lift(&ask) {
            Ok(Some(a)) => {
                metrics.releases.fetch_add(1, Relaxed);
                let target = format!("{}:{}", a.dim, anning_detector::mask::mask_number(&a.key));
                tracing::info!(target = %target, author = %ask.author, "released");
                outs.push(action_out(&a, now_ms(), None, a.ts));
                audited.push(Entry::from_action(&a, "daemon", Some(&ask.author)));
                Ok(serde_json::to_string(&a).unwrap_or_default() + "\n")
            }
            Ok(None) => Err(format!("{}:{} is under no action in force\n", ask.dim, ask.key)),
            Err(e) => Err(e),
        };
        answers.push((answer, reply));
    }
    answers
}

/// Buffers a batch's audit rows (once its messages are acknowledged) and writes what is
/// buffered when `every` has passed since the last write; `None`: the caller writes them
/// (with checkpoints).
pub(super) fn keep_audit(w: &mut Writer, rows: Vec<Entry>, every: Option<Duration>, flushed: &mut Instant, metrics: &Metrics) {
    for e in rows {
        w.push(e);
    }
    if every.is_some_and(|every| w.pending() > 0 && flushed.elapsed() >= every) {
        flush_audit(w, metrics);
        *flushed = Instant::now();
    }
}

/// Writes the buffered audit rows, counting what was written and what failed.
pub(super) fn flush_audit(w: &mut Writer, metrics: &Metrics) {
    match w.flush() {
        Ok(f) => {
            metrics.audit_rows.fetch_add(f.rows, Relaxed);
            for p in &f.pruned {
                tracing::info!("audit log: retention removed {}", p.display());
            }
        }
        Err(e) => {
            metrics.audit_failures.fetch_add(1, Relaxed);
            tracing::error!("audit log: {e} (rows kept, retried at the next flush)");
        }
    }
}

/// Asks every shard to release the target at event time `ts`; the owner answers with the
/// `release` action, or `None` when nothing was in force.
pub(super) fn on_shards(ask: &ReleaseAsk, ts: i64, shards: &Shards<'_>) -> Result<Option<Action>, String> {
    let (txs, rrx, threads) = (shards.txs, shards.rrx, shards.threads);
    let reason = format!("{} (by {})", ask.reason, ask.author);
    for tx in txs {
        tx.send(Work::Release {
            dim: ask.dim.clone(),
            key: ask.key.clone(),
            ts,
            reason: reason.clone(),
        })
        .map_err(|_| "a shard worker stopped".to_string())?;
    }
    let mut out = None;
    for _ in 0..threads {
        match rrx.recv() {
            Ok(Done::Released(a)) => out = out.or(a),
            _ => return Err("a shard worker stopped".into()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_names_its_target_and_its_author() {
        let a = ReleaseAsk::parse(r#"{"dim":"src","key":"13800138000","reason":"appeal 7","author":"noc-3"}"#).unwrap();
        assert_eq!(a.author, "noc-3");
        let e = ReleaseAsk::parse(r#"{"dim":"src","key":"1","reason":"x"}"#).unwrap_err();
        assert!(e.contains("missing field `author`"), "{e}");
        let e = ReleaseAsk::parse(r#"{"dim":"src","key":"1","reason":" ","author":"a"}"#).unwrap_err();
        assert_eq!(e, "body: `reason` must not be empty");
    }
}
