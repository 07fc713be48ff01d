//! `anning-bench`: harnesses for the figures in `benches/README.md`.
//!
//! - `anning-bench mixed N FILE [SEED]`: writes N records of mixed traffic (JSON Lines).
//! - `anning-bench bare-parse FILE`: parses every line with serde_json into a borrowed struct
//!   of the contract's fields (the floor replay is compared against) and prints records/s.

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
        _ => bail!("usage: anning-bench mixed N FILE [SEED] | anning-bench bare-parse FILE"),
    }
    Ok(())
}
