//! A scale-out daemon's tasks (see [`super`]): one per assigned partition, the input's or a
//! dimension's, with their state, their snapshots, and the consumer context that makes and
//! drops them as Kafka's group protocol assigns and revokes partitions.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anning_detector::watermark::Partitioned;
use anning_detector::{Engine, Joiner, Record};
use anning_rules::Pack;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use super::merge::Merge;
use crate::checkpoint::{Meta, Store};
use crate::daemon::{Metrics, now_ms};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum TaskId {
    Input(i32),
    /// (index into `Names::dims`, partition)
    Dim(usize, i32),
}

pub(super) struct Names {
    pub(super) input: String,
    /// (dimension name, its topic)
    pub(super) dims: Vec<(String, String)>,
}

impl Names {
    pub(super) fn task(&self, topic: &str, p: i32) -> Option<TaskId> {
        if topic == self.input {
            return Some(TaskId::Input(p));
        }
        self.dims.iter().position(|(_, t)| t == topic).map(|i| TaskId::Dim(i, p))
    }

    pub(super) fn topic(&self, t: TaskId) -> &str {
        match t {
            TaskId::Input(_) => &self.input,
            TaskId::Dim(i, _) => &self.dims[i].1,
        }
    }

    pub(super) fn dir(&self, t: TaskId) -> String {
        match t {
            TaskId::Input(p) => format!("input-{p}"),
            TaskId::Dim(i, q) => format!("{}-{q}", self.dims[i].0.replace('+', "-")),
        }
    }
}

pub(super) struct InputTask {
    pub(super) joiner: Joiner,
    pub(super) wm: Partitioned,
    /// Next offset to handle.
    pub(super) next: i64,
    /// Progress last announced (R, idle), to announce only changes.
    pub(super) announced: Option<(i64, bool)>,
    /// When the partition last delivered (wall clock): idle only after `idle_ms` of silence.
    pub(super) last_fed: Instant,
}

pub(super) struct DimTask {
    pub(super) engine: Engine,
    /// Records waiting, each with when it entered Kafka (its input message's timestamp, ms).
    pub(super) merge: Merge<(Record, i64)>,
    /// Next offset of the dimension partition to read.
    pub(super) next: i64,
    /// `R` of the last record run: the task's event time now (for releases).
    pub(super) last_r: i64,
}

pub(super) enum Task {
    Input(Box<InputTask>),
    Dim(Box<DimTask>),
}

pub(super) struct Shared {
    pub(super) tasks: BTreeMap<TaskId, Task>,
    /// Committed offset of each task's partition when it was assigned.
    pub(super) committed: HashMap<TaskId, i64>,
    /// Bumped whenever a task is (re)created: gathered messages of an older one are dropped.
    pub(super) generation: HashMap<TaskId, u64>,
    pub(super) gen_counter: u64,
    /// Lag per input partition (librdkafka statistics).
    pub(super) lag: HashMap<i32, i64>,
}

pub(super) struct Ctx {
    pub(super) names: Names,
    pub(super) pack: Mutex<Arc<Pack>>,
    pub(super) upstreams: usize,
    pub(super) store_dir: Option<PathBuf>,
    pub(super) keep: usize,
    pub(super) group: String,
    pub(super) metrics: Arc<Metrics>,
    pub(super) shared: Mutex<Shared>,
}

impl Ctx {
    pub(super) fn store(&self, t: TaskId) -> Option<Store> {
        let dir = self.store_dir.as_ref()?.join(self.names.dir(t));
        match Store::open(&dir, self.keep) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!("cannot open the checkpoint directory {}: {e}", dir.display());
                None
            }
        }
    }

    /// A task for a newly assigned partition: from its newest usable snapshot, or fresh.
    /// Returns the task and where to start reading (`None`: from the beginning).
    pub(super) fn open_task(&self, t: TaskId) -> (Task, Option<i64>) {
        let pack = Arc::clone(&self.pack.lock().expect("lock"));
        let fresh = || match t {
            TaskId::Input(_) => Task::Input(Box::new(InputTask {
                joiner: Joiner::new(&pack),
                wm: Partitioned::new(pack.lateness_ms, pack.late_policy),
                next: 0,
                announced: None,
                last_fed: Instant::now(),
            })),
            TaskId::Dim(i, _) => Task::Dim(Box::new(DimTask {
                engine: Engine::new(Arc::clone(&pack), 0, 1).only(&self.names.dims[i].0),
                merge: Merge::new(self.upstreams),
                next: 0,
                last_r: i64::MIN,
            })),
        };
        let Some(store) = self.store(t) else {
            return (fresh(), None);
        };
        let (topic, group) = (self.names.topic(t).to_string(), self.group.clone());
        let loaded = match store.load(|m| {
            if m.topic != topic || m.group != group {
                Err(format!("taken for topic `{}` group `{}`", m.topic, m.group))
            } else {
                Ok(())
            }
        }) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("cannot list {}: {e}", store.dir().display());
                return (fresh(), None);
            }
        };
        for f in &loaded.failures {
            self.metrics.checkpoint_load_failures.fetch_add(1, Relaxed);
            tracing::error!("unusable snapshot: {f}; trying the one before");
        }
        let Some(snap) = loaded.snapshot else {
            if !loaded.failures.is_empty() {
                tracing::error!(task = %self.names.dir(t), "no usable snapshot: rebuilding from the partition's beginning");
            }
            return (fresh(), None);
        };
        let p = match t {
            TaskId::Input(p) | TaskId::Dim(_, p) => p,
        };
        let at = snap.meta.offsets.get(&p).copied().unwrap_or(0);
        let mut task = fresh();
        match &mut task {
            Task::Input(it) => {
                it.joiner = snap.meta.joiner.with_pack(&pack);
                it.wm.restore(snap.meta.watermark);
                it.next = at;
            }
            Task::Dim(dt) => {
                let mut keys = 0;
                for part in snap.parts {
                    keys += dt.engine.restore(part).keys;
                }
                self.metrics.restored_keys.fetch_add(keys, Relaxed);
                dt.merge.restore(snap.meta.merge);
                dt.next = at;
            }
        }
        tracing::info!(task = %self.names.dir(t), snapshot = %snap.path.display(), offset = at, "task restored from its snapshot");
        (task, Some(at))
    }

    /// Writes a task's snapshot (its state as of the last completed batch).
    pub(super) fn save_task(&self, t: TaskId, task: &Task) {
        let Some(mut store) = self.store(t) else { return };
        let pack = Arc::clone(&self.pack.lock().expect("lock"));
        let empty = Joiner::new(&pack);
        let (p, next, joiner, wm, parts, keys, merge) = match (t, task) {
            (TaskId::Input(p), Task::Input(it)) => (p, it.next, &it.joiner, it.wm.state(), Vec::new(), 0, BTreeMap::new()),
            (TaskId::Dim(_, q), Task::Dim(dt)) => {
                let part = match crate::checkpoint::encode_part(&dt.engine.snapshot()) {
                    Ok(b) => b,
                    Err(e) => {
                        self.metrics.checkpoint_failures.fetch_add(1, Relaxed);
                        tracing::error!("checkpoint of {}: {e}", self.names.dir(t));
                        return;
                    }
                };
                // Reading resumes at the oldest record still waiting in the merge.
                let next = dt.merge.oldest().unwrap_or(dt.next);
                let merge = dt.merge.state();
                (q, next, &empty, Default::default(), vec![part], dt.engine.stats().keys, merge)
            }
            _ => unreachable!("tasks match their ids"),
        };
        let meta = Meta {
            created_ms: now_ms(),
            group: self.group.clone(),
            topic: self.names.topic(t).to_string(),
            pack: pack.hash_hex(),
            offsets: BTreeMap::from([(p, next)]),
            watermark: wm,
            joiner,
            keys,
            merge,
        };
        match store.save(&meta, &parts) {
            Ok((_, bytes)) => {
                self.metrics.checkpoints.fetch_add(1, Relaxed);
                self.metrics.checkpoint_bytes.store(bytes, Relaxed);
            }
            Err(e) => {
                self.metrics.checkpoint_failures.fetch_add(1, Relaxed);
                tracing::error!("checkpoint of {}: {e}", self.names.dir(t));
            }
        }
    }
}

impl ClientContext for Ctx {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut lag = HashMap::new();
        if let Some(topic) = statistics.topics.get(&self.names.input) {
            for (p, part) in &topic.partitions {
                if *p >= 0 && part.consumer_lag >= 0 {
                    lag.insert(*p, part.consumer_lag);
                }
            }
        }
        *self.metrics.lag.lock().expect("lock") = lag.iter().map(|(p, l)| (*p, *l)).collect();
        self.shared.lock().expect("lock").lag = lag;
    }
}

impl ConsumerContext for Ctx {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let committed = consumer.committed_offsets(tpl.clone(), Duration::from_secs(30));
                let mut assign = TopicPartitionList::new();
                for e in tpl.elements() {
                    let Some(t) = self.names.task(e.topic(), e.partition()) else {
                        continue;
                    };
                    let c = crate::daemon::kafka::committed_at(&committed, e.topic(), e.partition());
                    let (task, at) = self.open_task(t);
                    let _ = assign.add_partition_offset(e.topic(), e.partition(), at.map_or(Offset::Beginning, Offset::Offset));
                    let mut sh = self.shared.lock().expect("lock");
                    sh.committed.insert(t, c);
                    sh.gen_counter += 1;
                    let g = sh.gen_counter;
                    sh.generation.insert(t, g);
                    sh.tasks.insert(t, task);
                }
                let n = self.shared.lock().expect("lock").tasks.len();
                self.metrics.assigned.store(n as u64, Relaxed);
                if let Err(e) = consumer.incremental_assign(&assign) {
                    tracing::error!("assign failed: {e}");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                for e in tpl.elements() {
                    let Some(t) = self.names.task(e.topic(), e.partition()) else {
                        continue;
                    };
                    let task = self.shared.lock().expect("lock").tasks.remove(&t);
                    // The next owner starts from this.
                    if let Some(task) = task {
                        self.save_task(t, &task);
                    }
                }
                let n = self.shared.lock().expect("lock").tasks.len();
                self.metrics.assigned.store(n as u64, Relaxed);
                if let Err(e) = consumer.incremental_unassign(tpl) {
                    tracing::error!("unassign failed: {e}");
                }
            }
            other => {
                tracing::error!("rebalance error: {:?}", other);
            }
        }
    }
}
