//! The daemon's Kafka clients: their settings (the daemon's defaults under the operator's
//! own), the producer's delivery reports, and the consumer's rebalancing (rewinding newly
//! assigned partitions to rebuild state, and remembering their committed offsets).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use crossbeam_channel::{Receiver, Sender, unbounded};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use super::{DaemonConfig, Metrics, Rebuild};

/// A delivery report: the message's index in the batch, and whether the broker took it.
pub(super) type Ack = (usize, Result<(), String>);

/// Receives delivery reports on the producer's thread and hands them to the main loop.
pub(super) struct Delivery {
    pub(super) tx: Sender<Ack>,
}

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        let r = match result {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.to_string()),
        };
        let _ = self.tx.send((index, r));
    }
}

/// Tracks assignment; with `Rebuild::Earliest` rewinds newly assigned partitions to their
/// beginning and remembers their committed offsets.
pub(super) struct Rebalancer {
    pub(super) rebuild: Rebuild,
    pub(super) topic: String,
    pub(super) metrics: Arc<Metrics>,
    /// Committed offset per assigned partition at assignment (0 when none).
    pub(super) committed: Mutex<HashMap<i32, i64>>,
    /// Where a restored snapshot's state ends, per partition: reading resumes there.
    pub(super) resume: BTreeMap<i32, i64>,
    pub(super) assigned: Mutex<BTreeSet<i32>>,
    pub(super) revoked: Mutex<Vec<i32>>,
}

impl ClientContext for Rebalancer {
    /// librdkafka's statistics (every second): consumer lag per partition of the input topic.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut lag = BTreeMap::new();
        for topic in statistics.topics.values() {
            for (p, part) in &topic.partitions {
                if *p >= 0 && part.consumer_lag >= 0 {
                    lag.insert(*p, part.consumer_lag);
                }
            }
        }
        *self.metrics.lag.lock().expect("lock") = lag;
    }
}

impl ConsumerContext for Rebalancer {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), rdkafka::consumer::RebalanceProtocol::Cooperative);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let committed = consumer.committed_offsets(tpl.clone(), Duration::from_secs(30));
                {
                    let mut c = self.committed.lock().expect("lock");
                    let mut a = self.assigned.lock().expect("lock");
                    for e in tpl.elements() {
                        a.insert(e.partition());
                        c.insert(e.partition(), committed_at(&committed, e.topic(), e.partition()));
                    }
                    self.metrics.assigned.store(a.len() as u64, Relaxed);
                }
                if let Err(e) = &committed {
                    tracing::warn!("cannot read committed offsets ({e}); rebuilding from the beginning and producing every action");
                }
                if self.rebuild == Rebuild::Earliest {
                    let _ = tpl.set_all_offsets(Offset::Beginning);
                }
                for (p, o) in &self.resume {
                    if let Some(mut e) = tpl.find_partition(&self.topic, *p) {
                        let _ = e.set_offset(Offset::Offset(*o));
                    }
                }
                let r = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = r {
                    tracing::error!("assign failed: {e}");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                {
                    let mut a = self.assigned.lock().expect("lock");
                    for e in tpl.elements() {
                        a.remove(&e.partition());
                        self.revoked.lock().expect("lock").push(e.partition());
                    }
                    self.metrics.assigned.store(a.len() as u64, Relaxed);
                }
                let r = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = r {
                    tracing::error!("unassign failed: {e}");
                }
            }
            other => {
                tracing::error!("rebalance error: {:?}", other);
                let _ = consumer.unassign();
            }
        }
    }
}

/// A partition's committed offset from a lookup of the group's offsets (0 when none).
pub(super) fn committed_at(committed: &rdkafka::error::KafkaResult<TopicPartitionList>, topic: &str, partition: i32) -> i64 {
    committed
        .as_ref()
        .ok()
        .and_then(|l| l.find_partition(topic, partition))
        .and_then(|x| match x.offset() {
            Offset::Offset(n) => Some(n),
            _ => None,
        })
        .unwrap_or(0)
}

pub(super) fn client_config(cfg: &DaemonConfig, extra: &BTreeMap<String, String>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers);
    for (k, v) in cfg.kafka.iter().chain(extra) {
        c.set(k, v);
    }
    c
}

/// The idempotent producer for actions, dead letters and internal topics, with the channel
/// its delivery reports arrive on.
pub(super) fn producer(cfg: &DaemonConfig) -> Result<(ThreadedProducer<Delivery>, Receiver<Ack>)> {
    let (tx, rx) = unbounded();
    let mut pconf = client_config(cfg, &cfg.producer);
    set_defaults(
        &mut pconf,
        cfg,
        &cfg.producer,
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            // Actions go out as soon as a batch has them: they are few (hundreds in a day of
            // millions), and each waited up to 5 ms for company (p50 produce-to-action at 100 k
            // records/s 20-24 ms with 5, 11-14 ms with 0). A batch's messages are all handed
            // over at once, so a flood of dead letters still leaves in large requests.
            ("linger.ms", "0"),
            ("queue.buffering.max.messages", "1000000"),
        ],
    );
    let producer = pconf
        .create_with_context(Delivery { tx })
        .context("cannot create the Kafka producer")?;
    Ok((producer, rx))
}

/// The consumer's settings: the group, manual commits, cooperative rebalancing.
pub(super) fn consumer_config(cfg: &DaemonConfig) -> ClientConfig {
    let mut cconf = client_config(cfg, &cfg.consumer);
    cconf.set("group.id", &cfg.group);
    set_defaults(
        &mut cconf,
        cfg,
        &cfg.consumer,
        &[
            ("enable.auto.commit", "false"),
            // Offsets are committed as explicit lists once a batch's actions are acknowledged;
            // librdkafka's own store of each polled message's offset (a partition lock per
            // message) was never read.
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("partition.assignment.strategy", "cooperative-sticky"),
            ("session.timeout.ms", "6000"),
            ("heartbeat.interval.ms", "1500"),
            ("statistics.interval.ms", "1000"),
            // A NOC wants records as they come, not when a fetch fills up (librdkafka waits up
            // to 500 ms by default).
            ("fetch.wait.max.ms", "10"),
            // Once its local queue is full librdkafka postpones the next fetch by this much
            // (default 1000 ms): the daemon then sat idle ~0.5 s at a time and ran at half speed.
            ("fetch.queue.backoff.ms", "5"),
        ],
    );
    cconf
}

/// Sets the daemon's defaults on `conf`, except those the operator set for this client
/// (`own`) or for every client (`kafka`).
pub(super) fn set_defaults(conf: &mut ClientConfig, cfg: &DaemonConfig, own: &BTreeMap<String, String>, defaults: &[(&str, &str)]) {
    for (k, v) in defaults {
        if !own.contains_key(*k) && !cfg.kafka.contains_key(*k) {
            conf.set(*k, *v);
        }
    }
}

/// Creates the topics the daemon uses when absent.
pub fn ensure_topics(cfg: &DaemonConfig) -> Result<()> {
    let conf = client_config(cfg, &BTreeMap::new());
    create_topics(
        &conf,
        &[
            (&cfg.input_topic, cfg.partitions),
            (&cfg.actions_topic, cfg.partitions),
            (&cfg.shadow_topic, cfg.partitions),
            (&cfg.dlq_topic, 1),
        ],
    )
}

/// Creates each `(topic, partitions)` unless it exists.
pub fn create_topics(conf: &ClientConfig, topics: &[(&str, i32)]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = conf.create().context("cannot create a Kafka admin client")?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(t, n)| NewTopic::new(t, *n, TopicReplication::Fixed(1)))
        .collect();
    for r in futures_executor::block_on(admin.create_topics(&new, &opts)).context("cannot create topics")? {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => bail!("cannot create topic {t}: {e}"),
        }
    }
    Ok(())
}
