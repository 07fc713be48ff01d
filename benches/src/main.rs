//! `anning-bench`: harnesses for the figures in `benches/README.md`.
//!
//! - `anning-bench ab [--pairs N] [--warmup K] [--any-output] BIN_A BIN_B -- ARG...`: two
//!   builds of a command run in turn, pair by pair, with their outputs compared (see
//!   [`ab`]): how every step in `benches/README.md` is measured.
//! - `anning-bench mixed N FILE [SEED]`: writes N records of mixed traffic (JSON Lines).
//! - `anning-bench bare-parse FILE`: parses every line with serde_json into a borrowed struct
//!   of the contract's fields (the floor replay is compared against) and prints records/s.
//! - `anning-bench bare-consume BROKERS TOPIC N`: reads N messages of every partition of
//!   TOPIC from the beginning with a bare rdkafka `BaseConsumer` (the floor the daemon is
//!   compared against) and prints messages/s from the first message to the Nth.
//! - `anning-bench bare-latency BROKERS TOPIC N`: reads N messages of a fresh TOPIC as they
//!   arrive with a bare rdkafka consumer set up like the daemon's, and prints the
//!   quantiles of arrival − the message's timestamp: the broker's share of the daemon's
//!   ingest-to-action latency, measured while `anning produce --rate` feeds the topic.
//! - `anning-bench sliding N KEYS HOURS`: a 1 h window sliding by 1 s against one sliding by
//!   60 s on the same records (the cost of a window must not grow with length/slide).
//! - `anning-bench keys N`: resident memory per active key under the full default pack.
//! - `anning-bench engine FILE REGISTRY [ROUNDS] [SHARDS]`: the engine alone (the default
//!   pack) on a JSON Lines file decoded, joined and stamped beforehand, in replay's batches;
//!   the best of ROUNDS (default 3) runs, each on fresh engines. Isolates the shards' share
//!   from decoding. With SHARDS > 1 each of the SHARDS engines runs the whole file in turn
//!   on this thread (each routes every record and keeps its own keys, as replay's shards
//!   do): the sum, against SHARDS = 1, is what sharding adds.

use std::borrow::Cow;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::sync::Arc;
use std::time::Instant;

use anning_detector::{Engine, Enricher, Record, RecordBuilder, Registry, Slot};
use anning_rules::{RecordKind, compile, default_pack};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

mod ab;

#[allow(dead_code)]
#[derive(Deserialize)]
struct Bare<'a> {
    ts: serde_json::Value,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    src: Option<Cow<'a, str>>,
    #[serde(borrow)]
    dst: Option<Cow<'a, str>>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "ref")]
    reference: Option<Cow<'a, str>>,
    #[serde(borrow)]
    status: Option<Cow<'a, str>>,
    answered: Option<bool>,
    dur: Option<f64>,
}

/// The same allocator as `anning`, so engine figures here match the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ab") => {
            let plan = ab::Plan::parse(&args[1..])?;
            let outcome = ab::run(&plan)?;
            print!("{}", ab::report(&plan, &outcome));
            ab::verdict(&plan, &outcome)?;
        }
        Some("bare-consume") if args.len() >= 4 => bare_consume(&args[1], &args[2], args[3].parse().context("N")?)?,
        Some("bare-latency") if args.len() >= 4 => bare_latency(&args[1], &args[2], args[3].parse().context("N")?)?,
        Some("mixed") if args.len() >= 3 => {
            let n: u64 = args[1].parse().context("N")?;
            let seed = args.get(3).map_or(Ok(1), |s| s.parse()).context("SEED")?;
            let mut out = BufWriter::new(std::fs::File::create(&args[2])?);
            anning_fixtures::mixed(&anning_fixtures::Mix::new(n, seed), &mut out)?;
            out.flush()?;
        }
        Some("sliding") if args.len() == 4 => sliding(
            args[1].parse().context("N")?,
            args[2].parse().context("KEYS")?,
            args[3].parse().context("HOURS")?,
        )?,
        Some("keys") if args.len() == 2 => keys(args[1].parse().context("N")?)?,
        Some("engine") if args.len() >= 3 => engine(
            &args[1],
            &args[2],
            args.get(3).map_or(Ok(3), |s| s.parse()).context("ROUNDS")?,
            args.get(4).map_or(Ok(1), |s| s.parse()).context("SHARDS")?,
        )?,
        Some("bare-parse") if args.len() == 2 => {
            let started = Instant::now();
            let mut r = BufReader::with_capacity(1 << 20, std::fs::File::open(&args[1])?);
            let mut line = String::new();
            let (mut ok, mut bad) = (0u64, 0u64);
            while r.read_line(&mut line)? > 0 {
                match serde_json::from_str::<Bare>(line.trim_end()) {
                    Ok(_) => ok += 1,
                    Err(_) => bad += 1,
                }
                line.clear();
            }
            let s = started.elapsed().as_secs_f64();
            println!(
                "bare serde_json parse: {ok} records ({bad} unparsable) in {s:.3} s = {:.0} records/s",
                ok as f64 / s
            );
        }
        _ => bail!(
            "usage: anning-bench ab [--pairs N] [--warmup K] [--any-output] BIN_A BIN_B -- ARG... | anning-bench mixed N FILE [SEED] | anning-bench bare-parse FILE | anning-bench bare-consume BROKERS TOPIC N | anning-bench bare-latency BROKERS TOPIC N | anning-bench sliding N KEYS HOURS | anning-bench keys N | anning-bench engine FILE REGISTRY [ROUNDS] [SHARDS]"
        ),
    }
    Ok(())
}

/// A bare consumer with `settings` on top of the defaults, assigned every partition of
/// `topic` from the beginning; `each` sees every message until it says stop.
fn read_topic(
    brokers: &str,
    topic: &str,
    settings: &[(&str, &str)],
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> Result<bool>,
) -> Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let mut conf = ClientConfig::new();
    conf.set("bootstrap.servers", brokers)
        .set("group.id", "anning-bench-bare")
        .set("enable.auto.commit", "false");
    for (k, v) in settings {
        conf.set(*k, *v);
    }
    let consumer: BaseConsumer = conf.create()?;
    let meta = consumer.fetch_metadata(Some(topic), std::time::Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for t in meta.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + std::time::Duration::from_secs(600);
    loop {
        if Instant::now() > deadline {
            bail!("{topic}: not done within 10 minutes");
        }
        if let Some(m) = consumer.poll(std::time::Duration::from_millis(100))
            && !each(&m?)?
        {
            return Ok(());
        }
    }
}

fn bare_consume(brokers: &str, topic: &str, n: u64) -> Result<()> {
    use rdkafka::Message;
    let (mut got, mut bytes) = (0u64, 0u64);
    let mut first: Option<Instant> = None;
    read_topic(brokers, topic, &[], |m| {
        first.get_or_insert_with(Instant::now);
        bytes += m.payload().map_or(0, |p| p.len() as u64);
        got += 1;
        Ok(got < n)
    })?;
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64()).max(1e-9);
    println!(
        "bare-consume: {got} messages ({bytes} bytes) in {secs:.2} s: {:.0} messages/s",
        got as f64 / secs
    );
    Ok(())
}

fn bare_latency(brokers: &str, topic: &str, n: u64) -> Result<()> {
    use rdkafka::Message;
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000, 3)?;
    let mut got = 0u64;
    // The daemon's consumer settings that bear on latency (`pipelines/src/daemon/mod.rs`).
    let settings = [("fetch.wait.max.ms", "10"), ("fetch.queue.backoff.ms", "5")];
    read_topic(brokers, topic, &settings, |m| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
        let ts = m.timestamp().to_millis().unwrap_or(now);
        h.record((now - ts).max(1) as u64)?;
        got += 1;
        Ok(got < n)
    })?;
    println!(
        "bare-latency: {got} messages; produce-to-consume ms p50 {} p90 {} p99 {} p99.9 {} max {}",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    );
    Ok(())
}

/// Resident set size of this process in bytes (Linux `/proc/self/statm`).
fn rss() -> Result<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").context("/proc/self/statm")?;
    let pages: u64 = s.split_whitespace().nth(1).context("statm: no resident field")?.parse()?;
    Ok(pages * 4096)
}

/// A subscriber number for index `i` (11 digits, mobile prefix 13x).
fn subscriber(i: u64) -> String {
    format!("13{:09}", i % 1_000_000_000)
}

/// The sliding-window cost against its slide: one `rate` rule of a 1 h window keyed by `src`,
/// sliding by 1 s and by 60 s, over the same `n` records of `keys` senders spread over
/// `hours` of event time in order; keys warm from their first record, so every record goes
/// through its window. Three rounds, alternating; prints the best records/s of each and
/// their ratio.
fn sliding(n: u64, keys: u64, hours: u64) -> Result<()> {
    let registry = Registry::default();
    let span = hours as i64 * 3_600_000;
    let t0 = 1_794_297_600_000i64;
    let runs: Vec<(&str, Arc<anning_rules::Pack>, Vec<Record>)> = ["1s", "60s"]
        .into_iter()
        .map(|slide| {
            let pack = Arc::new(
                compile(&format!(
                    "[[rule]]\nid = \"v\"\nkind = \"rate\"\ndim = \"src\"\nwindow = \"1h\"\nslide = \"{slide}\"\nthreshold = 1000000\nladder = [{{ action = \"alert\", for = \"1h\" }}]\n"
                ))
                .map_err(|e| anyhow::anyhow!("pack: {e:?}"))?,
            );
            let en = Enricher::new(&pack, &registry);
            let mut b = RecordBuilder::default();
            let recs: Vec<Record> = (0..n)
                .map(|i| {
                    let k = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) % keys;
                    b.clear();
                    b.set(Slot::Src, &subscriber(k));
                    b.set(Slot::Dst, "13900000000");
                    b.finish(en, t0 + (i as i64 * span) / n as i64, RecordKind::Sms, None, None, None)
                })
                .collect();
            Ok((slide, pack, recs))
        })
        .collect::<Result<_>>()?;
    let mut best = [0f64; 2];
    for _round in 0..3 {
        for (j, (slide, pack, recs)) in runs.iter().enumerate() {
            let mut engine = Engine::new(Arc::clone(pack), 0, 1).without_cold_keys();
            let mut out = Vec::new();
            let started = Instant::now();
            for r in recs {
                engine.process(r, r.ts - 2_000, &mut out);
            }
            let s = started.elapsed().as_secs_f64();
            let rate = n as f64 / s;
            println!(
                "sliding 1h by {slide}: {n} records, {keys} keys over {hours} h in {s:.3} s = {rate:.0} records/s ({} keys held)",
                engine.stats().keys
            );
            best[j] = best[j].max(rate);
        }
    }
    println!("sliding ratio (1 s slide / 60 s slide): {:.2}", best[0] / best[1]);
    Ok(())
}

/// Records with their watermark, as replay's router hands them to the shards.
struct Stamped<'a> {
    en: Enricher<'a>,
    records: Vec<(Record, i64)>,
    stamper: anning_detector::Stamper,
}

impl anning_pipelines::source::Sink for Stamped<'_> {
    fn record(&mut self, r: Record, _line: u64) {
        // Joined and stamped as replay's router does (runtime.rs).
        if let anning_detector::Stamped::Process { rec, wm, .. } = self.stamper.stamp(r, self.en) {
            self.records.push((rec, wm));
        }
    }
    fn reject(&mut self, _r: anning_pipelines::decode::Reject) {}
}

fn engine(file: &str, registry: &str, rounds: usize, shards: usize) -> Result<()> {
    let pack = Arc::new(default_pack());
    let registry = Registry::parse(&std::fs::read_to_string(registry)?).map_err(|e| anyhow::anyhow!("{registry}: {e:?}"))?;
    let en = Enricher::new(&pack, &registry);
    let mut stamped = Stamped {
        en,
        records: Vec::new(),
        stamper: anning_detector::Stamper::new(&pack),
    };
    let input = anning_pipelines::source::Input::parse(file)?;
    anning_pipelines::source::read(&input, en, &mut stamped)?;
    let keyer = anning_detector::engine::Keyer::new(Arc::clone(&pack));
    let mut records: Vec<(Record, i64, anning_detector::engine::Routes)> =
        stamped.records.into_iter().map(|(r, wm)| (r, wm, Default::default())).collect();
    // Routed in place, best of ROUNDS (so the time is the routing's, not a new vector's).
    let mut routing = f64::MAX;
    for _ in 0..rounds.max(1) {
        let started = Instant::now();
        for (r, _, routes) in records.iter_mut() {
            *routes = keyer.routes(r);
        }
        routing = routing.min(started.elapsed().as_secs_f64());
    }
    println!(
        "routing once for all shards (a Keyer, as replay's reader and the daemon's decoders do), best of {rounds}: {:.0} ns per record",
        routing * 1e9 / records.len() as f64
    );
    let shards = shards.max(1);
    // Each shard routing every record itself, then taking the routes made once.
    for made in [false, true] {
        let mut best = f64::MAX;
        let mut actions = 0;
        for _ in 0..rounds.max(1) {
            let mut n = 0usize;
            let mut took = 0.0;
            for shard in 0..shards {
                let mut engine = Engine::new(Arc::clone(&pack), shard, shards);
                let started = Instant::now();
                for batch in records.chunks(anning_pipelines::runtime::BATCH) {
                    engine.process_batch(
                        batch,
                        |(r, wm, routes)| (r, *wm, made.then_some(routes)),
                        |_, acts| {
                            n += acts.len();
                            acts.clear();
                        },
                    );
                }
                took += started.elapsed().as_secs_f64();
                drop(engine);
            }
            best = best.min(took);
            actions = n;
        }
        println!(
            "engine, {shards} shard(s) in turn, {}: {} records, {actions} actions, best of {rounds}: {best:.3} s = {:.0} records/s, {:.0} ns per record",
            if made { "routes made once" } else { "each shard routing" },
            records.len(),
            records.len() as f64 / best,
            best * 1e9 / records.len() as f64
        );
    }
    Ok(())
}

/// State per active key: `n` subscribers each send one message to another subscriber within
/// one minute of event time under the full default pack (one shard). Prints the resident
/// memory grown per sender and per (dim, key) entry held.
fn keys(n: u64) -> Result<()> {
    let pack = Arc::new(default_pack());
    let registry = Registry::default();
    let en = Enricher::new(&pack, &registry);
    let mut engine = Engine::new(Arc::clone(&pack), 0, 1);
    let mut out = Vec::new();
    let mut b = RecordBuilder::default();
    let t0 = 1_794_297_600_000i64;
    let before = rss()?;
    let started = Instant::now();
    for i in 0..n {
        b.clear();
        b.set(Slot::Src, &subscriber(i));
        // Everyone writes to someone else; recipients are as many as senders.
        b.set(Slot::Dst, &subscriber(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % n + n));
        b.set(Slot::Text, "晚上一起吃饭吗？我七点到");
        let r = b.finish(en, t0 + (i as i64 * 60_000) / n as i64, RecordKind::Sms, None, None, None);
        engine.process(&r, t0 - 2_000, &mut out);
    }
    let s = started.elapsed().as_secs_f64();
    let grown = rss()?.saturating_sub(before);
    let entries = engine.stats().keys;
    println!(
        "keys: {n} senders ({entries} (dim, key) entries) in {s:.2} s; resident memory grew {:.1} MiB: {:.0} B per sender, {:.0} B per entry; 10 M senders ≈ {:.2} GiB",
        grown as f64 / (1 << 20) as f64,
        grown as f64 / n as f64,
        grown as f64 / entries.max(1) as f64,
        grown as f64 / n as f64 * 1e7 / (1u64 << 30) as f64,
    );
    drop(engine);
    Ok(())
}
