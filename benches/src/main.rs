//! `anning-bench`: harnesses for the figures in `benches/README.md`.
//!
//! - `anning-bench mixed N FILE [SEED]`: writes N records of mixed traffic (JSON Lines).
//! - `anning-bench bare-parse FILE`: parses every line with serde_json into a borrowed struct
//!   of the contract's fields (the floor replay is compared against) and prints records/s.
//! - `anning-bench bare-consume BROKERS TOPIC N`: reads N messages of every partition of
//!   TOPIC from the beginning with a bare rdkafka `BaseConsumer` (the floor the daemon is
//!   compared against) and prints messages/s from the first message to the Nth.

use std::borrow::Cow;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

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

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("bare-consume") if args.len() >= 4 => bare_consume(&args[1], &args[2], args[3].parse().context("N")?)?,
        Some("mixed") if args.len() >= 3 => {
            let n: u64 = args[1].parse().context("N")?;
            let seed = args.get(3).map_or(Ok(1), |s| s.parse()).context("SEED")?;
            let mut out = BufWriter::new(std::fs::File::create(&args[2])?);
            anning_fixtures::mixed(&anning_fixtures::Mix::new(n, seed), &mut out)?;
            out.flush()?;
        }
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
        _ => bail!("usage: anning-bench mixed N FILE [SEED] | anning-bench bare-parse FILE | anning-bench bare-consume BROKERS TOPIC N"),
    }
    Ok(())
}

fn bare_consume(brokers: &str, topic: &str, n: u64) -> Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "anning-bench-bare")
        .set("enable.auto.commit", "false")
        .create()?;
    let meta = consumer.fetch_metadata(Some(topic), std::time::Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for t in meta.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let (mut got, mut bytes) = (0u64, 0u64);
    let mut first: Option<Instant> = None;
    let deadline = Instant::now() + std::time::Duration::from_secs(600);
    while got < n {
        if Instant::now() > deadline {
            bail!("only {got} of {n} messages within 10 minutes");
        }
        if let Some(m) = consumer.poll(std::time::Duration::from_millis(100)) {
            let m = m?;
            first.get_or_insert_with(Instant::now);
            bytes += m.payload().map_or(0, |p| p.len() as u64);
            got += 1;
        }
    }
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64()).max(1e-9);
    println!(
        "bare-consume: {got} messages ({bytes} bytes) in {secs:.2} s: {:.0} messages/s",
        got as f64 / secs
    );
    Ok(())
}
