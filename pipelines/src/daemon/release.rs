//! Release on appeal: `POST /actions/release` lifts whatever action a target is under. The
//! batch loop hands the request to the shard that owns the target between two batches; the
//! `release` action goes to the actions topic (enforcement points lift the throttle) and to
//! the audit log with who released and why.

use anning_detector::Action;
use serde::Deserialize;

use super::{Done, Work};

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

/// Asks every shard to release the target at event time `ts`; the owner answers with the
/// `release` action, or `None` when nothing was in force.
pub(super) fn release(
    ask: &ReleaseAsk,
    ts: i64,
    txs: &[crossbeam_channel::Sender<Work>],
    rrx: &crossbeam_channel::Receiver<Done>,
    threads: usize,
) -> Result<Option<Action>, String> {
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
