//! The Kafka commands: `anning daemon`, `anning produce`, `anning tail`.

use std::fs::File;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};

use super::{DaemonArgs, ProduceArgs, TailArgs, load_registry};

fn split_prop(p: &str) -> Result<(String, String)> {
    let (k, v) = p.split_once('=').with_context(|| format!("-X {p}: expected PROPERTY=VALUE"))?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

pub(super) fn daemon(args: DaemonArgs) -> Result<ExitCode> {
    use crate::daemon::{self, DaemonConfig};
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("ANNING_LOG").unwrap_or_else(|_| "info".into()))
        .try_init();
    let mut cfg = match &args.config {
        Some(p) => match DaemonConfig::load(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return Ok(ExitCode::from(2));
            }
        },
        None => DaemonConfig::default(),
    };
    if let Err(e) = cfg.apply_env(std::env::vars()) {
        eprintln!("anning daemon: {e}");
        return Ok(ExitCode::from(2));
    }
    macro_rules! flag {
        ($($f:ident),*) => { $(if let Some(v) = args.$f.clone() { cfg.$f = v.into(); })* };
    }
    flag!(brokers, group, input_topic, actions_topic, shadow_topic, dlq_topic, admin, threads);
    if args.rules.is_some() {
        cfg.rules = args.rules.clone();
    }
    if args.allowlist.is_some() {
        cfg.allowlist = args.allowlist.clone();
    }
    if args.registry.is_some() {
        cfg.registry = args.registry.clone();
    }
    if args.audit.is_some() {
        cfg.audit_dir = args.audit.clone();
    }
    if args.checkpoint_dir.is_some() {
        cfg.checkpoint_dir = args.checkpoint_dir.clone();
    }
    if let Some(ms) = args.checkpoint_interval {
        cfg.checkpoint_interval_ms = ms;
    }
    if args.repartition {
        cfg.repartition = true;
    }
    if let Some(p) = &args.repartition_prefix {
        cfg.repartition_prefix = p.clone();
    }
    for p in &args.kafka {
        let (k, v) = split_prop(p)?;
        cfg.kafka.insert(k, v);
    }
    if let Err(e) = cfg.validate() {
        eprintln!("anning daemon: {e}");
        return Ok(ExitCode::from(2));
    }
    let pack = match daemon::load_rules(&cfg) {
        Ok(p) => Arc::new(p),
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            return Ok(ExitCode::from(2));
        }
    };
    let registry = match load_registry(cfg.registry.as_deref()) {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("cannot install signal handlers")?;
    }
    let sighup = Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&sighup)).context("cannot install signal handlers")?;
    let (reload_tx, reload_rx) = crossbeam_channel::unbounded();
    let (release_tx, release_rx) = crossbeam_channel::unbounded();
    let metrics = Arc::new(daemon::Metrics::default());
    let admin = daemon::admin::Admin {
        metrics: Arc::clone(&metrics),
        token: cfg.admin_token.clone(),
        reload: reload_tx,
        release: release_tx,
    };
    let addr = daemon::admin::serve(&cfg.admin, admin).with_context(|| format!("cannot listen on {}", cfg.admin))?;
    tracing::info!("admin HTTP on http://{addr}/metrics");
    let reload = daemon::Reload {
        signal: sighup,
        requests: reload_rx,
        releases: release_rx,
    };
    if cfg.repartition {
        daemon::group::run(&cfg, pack, &registry, metrics, stop, reload)?;
    } else {
        daemon::run(&cfg, pack, &registry, metrics, stop, reload)?;
    }
    tracing::info!("stopped cleanly");
    Ok(ExitCode::SUCCESS)
}

pub(super) fn produce(args: ProduceArgs) -> Result<ExitCode> {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let mut conf = rdkafka::ClientConfig::new();
    conf.set("bootstrap.servers", &args.brokers)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000");
    for p in &args.kafka {
        let (k, v) = split_prop(p)?;
        conf.set(k, v);
    }
    if let Some(n) = args.partitions {
        crate::daemon::create_topics(&conf, &[(&args.topic, n)])?;
    }
    let producer: ThreadedProducer<DefaultProducerContext> = conf.create().context("cannot create the Kafka producer")?;
    let partitions = {
        use rdkafka::consumer::Consumer as _;
        let probe: rdkafka::consumer::BaseConsumer = conf.create().context("cannot create a Kafka client")?;
        probe
            .fetch_metadata(Some(&args.topic), std::time::Duration::from_secs(30))
            .ok()
            .and_then(|m| m.topics().first().map(|t| t.partitions().len() as i32))
            .filter(|n| *n > 0)
    };
    let mut placer = Placer::default();
    let inputs = if args.inputs.is_empty() {
        vec!["-".to_string()]
    } else {
        args.inputs.clone()
    };
    let started = Instant::now();
    let mut n = 0u64;
    let mut line = String::new();
    for input in &inputs {
        let mut reader: Box<dyn std::io::BufRead> = if input == "-" {
            Box::new(std::io::stdin().lock())
        } else {
            Box::new(std::io::BufReader::new(
                File::open(input).with_context(|| format!("cannot open {input}"))?,
            ))
        };
        loop {
            line.clear();
            if reader.read_line(&mut line).with_context(|| format!("cannot read {input}"))? == 0 {
                break;
            }
            let msg = line.trim_end_matches(['\n', '\r']);
            if msg.trim().is_empty() {
                continue;
            }
            // The key: the named field's string value, when the line has one.
            let fields = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(msg).ok();
            let get = |name: &str| fields.as_ref().and_then(|m| m.get(name).and_then(|v| v.as_str()));
            let key = get(&args.key).map(str::to_string);
            let partition = partitions.map(|parts| placer.place(parts, key.as_deref(), get("id"), get("ref"), n));
            loop {
                let mut rec = BaseRecord::<str, str>::to(&args.topic).payload(msg);
                if let Some(k) = &key {
                    rec = rec.key(k.as_str());
                }
                if let Some(p) = partition {
                    rec = rec.partition(p);
                }
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), _)) => {
                        std::thread::sleep(std::time::Duration::from_millis(2))
                    }
                    Err((e, _)) => anyhow::bail!("cannot produce to {}: {e}", args.topic),
                }
            }
            n += 1;
            if let Some(rate) = args.rate {
                let due = std::time::Duration::from_secs_f64(n as f64 / rate.max(1) as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
    }
    producer
        .flush(std::time::Duration::from_secs(60))
        .context("cannot deliver every message")?;
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    eprintln!(
        "anning produce: {n} messages to {} in {secs:.2} s ({:.0}/s)",
        args.topic,
        n as f64 / secs
    );
    Ok(ExitCode::SUCCESS)
}

/// Where `anning produce` puts each record: a keyed record by its key's hash; one without a
/// key but with a `ref` (a delivery report) where the message it refers to went, so the
/// daemon's input-order joins find them together in any partitioning; anything else by its
/// line number. The same file always lands the same way.
#[derive(Default)]
struct Placer {
    by_id: std::collections::HashMap<String, i32>,
    order: std::collections::VecDeque<String>,
}

impl Placer {
    /// Message ids remembered for delivery reports.
    const KEEP: usize = 1 << 20;

    fn place(&mut self, parts: i32, key: Option<&str>, id: Option<&str>, refers: Option<&str>, line: u64) -> i32 {
        let parts = parts.max(1) as u64;
        let p = match (key, refers.and_then(|r| self.by_id.get(r).copied())) {
            (Some(k), _) => (xxhash_rust::xxh3::xxh3_64(k.as_bytes()) % parts) as i32,
            (None, Some(p)) => p,
            (None, None) => (line % parts) as i32,
        };
        if let Some(id) = id
            && self.by_id.insert(id.to_string(), p).is_none()
        {
            self.order.push_back(id.to_string());
            if self.order.len() > Self::KEEP
                && let Some(old) = self.order.pop_front()
            {
                self.by_id.remove(&old);
            }
        }
        p
    }
}

pub(super) fn tail(args: TailArgs) -> Result<ExitCode> {
    use rdkafka::Message;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("group.id", "anning-tail")
        .set("enable.auto.commit", "false")
        .create()
        .context("cannot create the Kafka consumer")?;
    let meta = consumer
        .fetch_metadata(Some(&args.topic), std::time::Duration::from_secs(10))
        .with_context(|| format!("cannot read metadata of {}", args.topic))?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    let start = if args.from_beginning {
        rdkafka::Offset::Beginning
    } else {
        rdkafka::Offset::End
    };
    for t in meta.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(&args.topic, p.id(), start)?;
        }
    }
    consumer.assign(&tpl)?;
    let mut out = std::io::stdout().lock();
    let mut n = 0u64;
    while args.count.is_none_or(|c| n < c) {
        match consumer.poll(std::time::Duration::from_millis(500)) {
            Some(Ok(m)) => {
                if args.headers {
                    let h: Vec<String> = crate::daemon::headers_of(&m).into_iter().map(|(k, v)| format!("{k}={v}")).collect();
                    writeln!(out, "# {}", h.join(" "))?;
                }
                out.write_all(m.payload().unwrap_or_default())?;
                out.write_all(b"\n")?;
                out.flush()?;
                n += 1;
            }
            Some(Err(e)) => eprintln!("anning tail: {e}"),
            None => {}
        }
    }
    Ok(ExitCode::SUCCESS)
}
