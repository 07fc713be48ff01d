//! Each task's step: an input task routes one message to the dimension topics; a dimension
//! task runs what its merge releases.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use anning_detector::engine::{Keyer, shard_of};
use anning_detector::{Action, Enricher, RecordBuilder, Verdict};

use super::Got;
use super::tasks::{Ctx, DimTask, InputTask, TaskId};
use crate::daemon::decode::{dead_letter_of, decode};
use crate::daemon::{Metrics, Out, Topic};
use crate::decode::RejectReason;

/// An input task's step for one message: decode, join, lateness by its own partition's
/// watermark, then one re-keyed copy per dimension that wants it (not produced again for
/// offsets below the committed one: those went out before).
#[allow(clippy::too_many_arguments)]
pub(super) fn route(
    ctx: &Ctx,
    keyer: &Keyer,
    en: Enricher<'_>,
    builder: &mut RecordBuilder,
    it: &mut InputTask,
    p: i32,
    g: &Got,
    below: bool,
    q: i32,
    metrics: &Metrics,
    outs: &mut Vec<Out>,
) {
    let dlq = |reason: &str, detail: &str, col: Option<u64>| {
        dead_letter_of((&ctx.names.input, p, g.offset), &g.key, &g.payload, (reason, detail, col))
    };
    match decode(Some(&g.payload), builder, en) {
        Ok(rec) => {
            let mut rec = it.joiner.apply(rec, en);
            metrics.records_in[rec.kind as usize].fetch_add(1, Relaxed);
            match it.wm.observe(p, rec.ts) {
                Verdict::Process { ts, .. } => {
                    rec.ts = ts;
                    if below {
                        return;
                    }
                    let r = it.wm.max_of(p).unwrap_or(ts);
                    let json = rec.to_json().into_bytes();
                    for (d, key, hash) in keyer.keys(&rec) {
                        let part = shard_of(hash, q as u64) as i32;
                        outs.push(Out {
                            topic: Topic::Named(ctx.names.dims[d].1.clone().into(), Some(part)),
                            key: key.into_bytes(),
                            payload: json.clone(),
                            headers: vec![
                                ("anning.p", p.to_string().into_bytes()),
                                ("anning.o", g.offset.to_string().into_bytes()),
                                ("anning.r", r.to_string().into_bytes()),
                                ("anning.t", g.ingested_ms.to_string().into_bytes()),
                            ],
                            action: None,
                        });
                    }
                }
                Verdict::Late { behind } => {
                    if !below {
                        *metrics.rejects.lock().expect("lock").entry(RejectReason::Late.name()).or_default() += 1;
                        let detail = format!("{} record {behind} ms older than the partition's watermark", rec.kind.name());
                        outs.push(dlq(RejectReason::Late.name(), &detail, None));
                    }
                }
            }
        }
        Err(bad) => {
            if !below {
                *metrics.rejects.lock().expect("lock").entry(bad.reason.name()).or_default() += 1;
                outs.push(dlq(bad.reason.name(), &bad.detail, bad.col));
            }
        }
    }
}

/// An action a dimension task made, with what its acknowledgement is timed against.
pub(super) struct Made {
    pub(super) task: TaskId,
    /// The tipping record's offset in the dimension partition.
    pub(super) q_off: i64,
    pub(super) action: Action,
    /// The tipping record's event time and when it entered Kafka (the input message's
    /// timestamp), ms.
    pub(super) event_ts: i64,
    pub(super) ingested_ms: i64,
}

/// Runs what the merge can release, in (R, input partition, offset) order, each record with
/// watermark `R − lateness`.
pub(super) fn merge_run(t: TaskId, dt: &mut DimTask, lateness: i64, out: &mut Vec<Made>, disorder: &AtomicU64) {
    let before = dt.merge.out_of_order();
    let mut acts = Vec::new();
    while let Some(x) = dt.merge.pop() {
        dt.last_r = x.r;
        let (rec, ingested_ms) = &x.item;
        dt.engine.process(rec, x.r.saturating_sub(lateness), &mut acts);
        acts.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        for a in acts.drain(..) {
            out.push(Made {
                task: t,
                q_off: x.q_off,
                action: a,
                event_ts: rec.ts,
                ingested_ms: *ingested_ms,
            });
        }
    }
    let n = dt.merge.out_of_order() - before;
    if n > 0 {
        disorder.fetch_add(n, Relaxed);
        tracing::warn!(task = ?t, records = n, "records run out of the merge order: an input partition announced idle delivered again");
    }
}
