//! A batch after the shards have it: its actions gathered, produced with its dead letters and
//! acknowledged, audited, and its offsets committed (steps 3 to 5 of [`super`]).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{self, Relaxed};
use std::thread;
use std::time::{Duration, Instant};

use anning_detector::Action;
use anning_rules::Pack;
use anyhow::{Context as _, Result, bail};
use crossbeam_channel::Receiver;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use super::{Ack, Batch, DaemonConfig, Delivery, Done, Item, Meta, Metrics, Out, Rebalancer, Topic, action_out, now_ms, release};

/// A batch sent to the shards, finished after the next batch is gathered.
pub(super) struct Pending {
    pub(super) batch: Option<Batch>,
    pub(super) metas: Vec<Meta>,
    /// Dead letters and release actions gathered with the batch.
    pub(super) outs: Vec<Out>,
    pub(super) audited: Vec<crate::audit::Entry>,
    pub(super) answers: Vec<release::Answer>,
    pub(super) next_offsets: BTreeMap<i32, i64>,
    pub(super) started: Instant,
}

/// What finishing a batch needs of the daemon.
pub(super) struct Finish<'a> {
    pub(super) cfg: &'a DaemonConfig,
    pub(super) rrx: &'a Receiver<Done>,
    pub(super) threads: usize,
    pub(super) metrics: &'a Metrics,
    pub(super) consumer: &'a BaseConsumer<Rebalancer>,
    pub(super) producer: &'a ThreadedProducer<Delivery>,
    pub(super) drx: &'a Receiver<Ack>,
    pub(super) stop: &'a AtomicBool,
    /// Where the restored snapshot ended (its audit rows were written up to there).
    pub(super) resumed: &'a BTreeMap<i32, i64>,
    /// Whether checkpoints are on (then audit rows are written with snapshots).
    pub(super) checkpoints: bool,
    /// A finished batch's buffer, emptied, for the next gather.
    pub(super) spare: RefCell<Option<Vec<Item>>>,
    /// Shards' answers for the batch sent behind the one being finished.
    pub(super) early: RefCell<Vec<Done>>,
}

impl Finish<'_> {
    /// Takes the shards' actions for `p`, produces them with its dead letters and waits for
    /// every acknowledgement, writes its audit rows, answers its releases and commits its
    /// offsets.
    pub(super) fn finish(
        &self,
        p: Pending,
        pack: &Pack,
        audit: &mut Option<crate::audit::Writer>,
        audit_flushed: &mut Instant,
        processed: &mut HashMap<i32, i64>,
    ) -> Result<()> {
        let (metrics, consumer) = (self.metrics, self.consumer);
        let Pending {
            batch,
            metas,
            mut outs,
            mut audited,
            answers,
            next_offsets,
            started,
        } = p;
        let mut actions: Vec<(u32, Action)> = Vec::new();
        if let Some(batch) = &batch {
            // Each shard's first answer since the last finish is this batch's; a second one
            // is for the batch sent behind it, kept for the next finish.
            let mut answers_left: std::collections::VecDeque<Done> = self.early.take().into();
            let mut later = Vec::new();
            let mut answered = vec![false; self.threads];
            while answered.iter().any(|a| !a) {
                let done = match answers_left.pop_front() {
                    Some(d) => d,
                    None => self.rrx.recv().context("a shard worker stopped")?,
                };
                match done {
                    Done::Batch(shard, ..) if answered[shard] => later.push(done),
                    Done::Batch(shard, acts, allowed) => {
                        answered[shard] = true;
                        actions.extend(acts);
                        for a in allowed {
                            let shown = match anning_rules::Dim::parse(&a.dim) {
                                Ok(d) => anning_detector::mask::mask_key(&d, &a.key, &pack.number_plan),
                                Err(_) => a.key.clone(),
                            };
                            tracing::info!(rule = %a.rule, target = %format!("{}:{shown}", a.dim), ts = a.ts, "allowlisted: action held back");
                            *metrics.allowlisted.lock().expect("lock").entry(a.rule).or_default() += 1;
                        }
                    }
                    Done::Reloaded(_) | Done::Released(_) | Done::Snapshot { .. } => {
                        unreachable!("reloads, releases and snapshots are answered where they are sent")
                    }
                }
            }
            later.extend(answers_left);
            self.early.replace(later);
            metrics.shard_queue.store(0, Relaxed);
            actions.sort_by(|a, b| (a.0, a.1.sort_key()).cmp(&(b.0, b.1.sort_key())));
            let committed = consumer.context().committed.lock().expect("lock").clone();
            for (idx, a) in &actions {
                let meta = &metas[*idx as usize];
                if meta.offset < committed.get(&meta.partition).copied().unwrap_or(0) {
                    metrics.actions_suppressed.fetch_add(1, Relaxed);
                    // Read again past the restored snapshot: produced before, but its audit
                    // row (written with snapshots) was not.
                    if audit.is_some() && self.resumed.get(&meta.partition).is_some_and(|r| meta.offset >= *r) {
                        audited.push(crate::audit::Entry::from_action(a, "daemon", None));
                    }
                    continue;
                }
                let event_ts = batch[*idx as usize].0.ts;
                outs.push(action_out(a, meta.ingested_ms, Some(meta.polled), event_ts));
                if audit.is_some() {
                    audited.push(crate::audit::Entry::from_action(a, "daemon", None));
                }
            }
        }

        let t_processed = Instant::now();
        // Produce and wait for every acknowledgement.
        deliver(self.producer, self.cfg, &outs, self.drx, metrics, self.stop)?;
        let t_delivered = Instant::now();
        for (answer, reply) in answers {
            let _ = answer.send(reply);
        }
        if let Some(w) = audit {
            // With checkpoints the rows are written with each snapshot instead, so the audit
            // log holds exactly the actions of the records the snapshot covers.
            let every = (!self.checkpoints).then(|| Duration::from_millis(self.cfg.audit_flush_ms));
            release::keep_audit(w, audited, every, audit_flushed, metrics);
        }

        // Commit.
        if !next_offsets.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (p, o) in &next_offsets {
                tpl.add_partition_offset(&self.cfg.input_topic, *p, Offset::Offset(*o))?;
            }
            commit(consumer, &tpl, metrics, self.stop);
            metrics.batches.fetch_add(1, Relaxed);
            tracing::debug!(
                records = metas.len(),
                gather_and_run_ms = (t_processed - started).as_millis() as u64,
                deliver_ms = (t_delivered - t_processed).as_millis() as u64,
                commit_ms = t_delivered.elapsed().as_millis() as u64,
                "batch"
            );
        }
        processed.extend(next_offsets);
        // The shards let go of the batch before they answered.
        if let Some(mut v) = batch.and_then(|b| Arc::try_unwrap(b).ok()) {
            v.clear();
            self.spare.replace(Some(v));
        }
        Ok(())
    }
}

/// Produces every message and waits until each is acknowledged; failures are produced again
/// (after a pause) until they succeed. Returns early only when stopping and the broker keeps
/// refusing for a minute.
pub(super) fn deliver(
    producer: &ThreadedProducer<Delivery>,
    cfg: &DaemonConfig,
    outs: &[Out],
    acks: &Receiver<Ack>,
    metrics: &Metrics,
    stop: &AtomicBool,
) -> Result<()> {
    let send = |i: usize| loop {
        let o = &outs[i];
        let (topic, partition) = match &o.topic {
            Topic::Actions => (&*cfg.actions_topic, None),
            Topic::Shadow => (&*cfg.shadow_topic, None),
            Topic::Dlq => (&*cfg.dlq_topic, None),
            Topic::Named(t, p) => (&**t, *p),
        };
        let mut headers = OwnedHeaders::new();
        for (k, v) in &o.headers {
            headers = headers.insert(Header { key: k, value: Some(v) });
        }
        let mut rec = BaseRecord::with_opaque_to(topic, i).key(&o.key[..]).payload(&o.payload[..]);
        if o.headers.iter().len() > 0 {
            rec = rec.headers(headers);
        }
        if let Some(p) = partition {
            rec = rec.partition(p);
        }
        match producer.send(rec) {
            Ok(()) => {
                metrics.in_flight.fetch_add(1, Relaxed);
                return;
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => thread::sleep(Duration::from_millis(5)),
            Err((e, _)) => {
                tracing::warn!("produce failed ({e}); retrying");
                thread::sleep(Duration::from_millis(200));
            }
        }
    };
    for i in 0..outs.len() {
        send(i);
    }
    let mut pending = outs.len();
    let mut failing_since: Option<Instant> = None;
    while pending > 0 {
        let Ok((i, r)) = acks.recv_timeout(Duration::from_secs(1)) else {
            if stop.load(Ordering::Relaxed) && failing_since.is_some_and(|t| t.elapsed() > Duration::from_secs(60)) {
                bail!("{pending} messages still unacknowledged at shutdown; their offsets are not committed");
            }
            continue;
        };
        metrics.in_flight.fetch_sub(1, Relaxed);
        match r {
            Ok(()) => {
                pending -= 1;
                failing_since = None;
                let o = &outs[i];
                match &o.action {
                    Some(t) => {
                        let counter = if matches!(o.topic, Topic::Shadow) {
                            &metrics.shadow_actions
                        } else {
                            &metrics.actions
                        };
                        *counter.lock().expect("lock").entry((t.rule.clone(), t.kind)).or_default() += 1;
                        let now = now_ms();
                        metrics.record_latency(now - t.event_ts, now - t.ingested_ms, t.polled.map(|p| p.elapsed()));
                    }
                    None if matches!(o.topic, Topic::Dlq) => {
                        metrics.dead_letters.fetch_add(1, Relaxed);
                    }
                    None => {}
                }
            }
            Err(e) => {
                tracing::warn!("delivery failed ({e}); producing again");
                failing_since.get_or_insert_with(Instant::now);
                metrics.produce_retries.fetch_add(1, Relaxed);
                thread::sleep(Duration::from_millis(200));
                send(i);
            }
        }
    }
    Ok(())
}

/// Commits synchronously. A broker that is away is retried for up to ten seconds; an error
/// saying the group has moved on (this member was evicted while the broker was paused, or a
/// rebalance is under way) is not retried at all. Either way the loop goes back to polling,
/// which rejoins the group; the next batch's commit covers these offsets, and until then the
/// records are at worst re-delivered, which this process skips and a new one rebuilds from.
fn commit(consumer: &BaseConsumer<Rebalancer>, tpl: &TopicPartitionList, metrics: &Metrics, stop: &AtomicBool) {
    let first = Instant::now();
    loop {
        match consumer.commit(tpl, CommitMode::Sync) {
            Ok(()) => {
                metrics.commits.fetch_add(1, Relaxed);
                return;
            }
            Err(e) => {
                metrics.commit_errors.fetch_add(1, Relaxed);
                let moved_on = matches!(
                    e.rdkafka_error_code(),
                    Some(
                        RDKafkaErrorCode::UnknownMemberId
                            | RDKafkaErrorCode::IllegalGeneration
                            | RDKafkaErrorCode::RebalanceInProgress
                            | RDKafkaErrorCode::FencedInstanceId
                            | RDKafkaErrorCode::State
                    )
                );
                if moved_on
                    || first.elapsed() > Duration::from_secs(10)
                    || stop.load(Ordering::Relaxed) && first.elapsed() > Duration::from_secs(5)
                {
                    tracing::warn!("commit failed ({e}); going on: the next commit covers these offsets");
                    return;
                }
                tracing::warn!("commit failed ({e}); retrying");
                // No poll here: a message polled now would be skipped by the next commit.
                thread::sleep(Duration::from_millis(500));
            }
        }
    }
}
