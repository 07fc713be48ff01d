//! Routes made once for all shards ([`Keyer`]) against each shard routing every record
//! itself: the same actions in the same order and the same counters, for any number of
//! shards; routes made for another pack are not used; key hashes are those of the
//! streaming xxh3 the shards were first placed by.

use std::sync::Arc;

use anning_detector::engine::{Keyer, Routes, key_hash};
use anning_detector::*;
use anning_rules::{Pack, RecordKind, compile, default_pack};
use proptest::prelude::*;

use crate::support::Rng;

/// A busy stretch under the default pack: subscribers texting and calling from a few
/// cells and handsets, bulk ports signing `【merchant】`, unsubscribe replies, delivery
/// reports. Keys under every dim of the pack, and enough of them repeat for rules to fire.
fn stream(pack: &Pack, n: usize) -> Vec<(Record, i64)> {
    let registry = Registry::default();
    let en = Enricher::new(pack, &registry);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut b = RecordBuilder::default();
    let mut wm = Watermark::new(pack.lateness_ms, pack.late_policy);
    let mut clock = 1_794_297_600_000i64;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        clock += rng.range(0, 400) as i64;
        let ts = clock - rng.range(0, 3_000) as i64;
        b.clear();
        b.set(Slot::Id, &format!("m{}", out.len()));
        let dst = format!("1390000{:04}", rng.range(0, 300));
        let rec = match rng.range(0, 9) {
            0..=3 => {
                b.set(Slot::Src, &format!("1380000{:04}", rng.range(0, 40)));
                b.set(Slot::Dst, &dst);
                b.set(Slot::Cell, &format!("cell-{}", rng.range(0, 5)));
                b.set(Slot::Imei, &format!("35{:013}", rng.range(0, 8)));
                let text = [
                    "在吗，晚上一起吃饭吧",
                    "新年快乐，万事如意，身体健康",
                    "加微信领红包，点击链接领取双十一优惠券",
                ];
                b.set(Slot::Text, &format!("{} {}", text[rng.range(0, 2) as usize], rng.range(0, 99)));
                b.finish(en, ts, RecordKind::Sms, None, None, None)
            }
            4..=6 => {
                let port = format!("10690{:03}", rng.range(0, 12));
                b.set(Slot::Src, &port);
                b.set(Slot::Port, &port);
                b.set(Slot::Dst, &dst);
                let shop = ["京东", "淘宝", "拼多多"][rng.range(0, 2) as usize];
                b.set(Slot::Text, &format!("【{shop}】双11大促，全场五折，回TD退订"));
                b.finish(en, ts, RecordKind::Sms, None, None, None)
            }
            7 => {
                b.set(Slot::Src, &dst);
                let port = format!("10690{:03}", rng.range(0, 12));
                b.set(Slot::Dst, &port);
                b.set(Slot::Port, &port);
                b.set(Slot::Text, "TD");
                b.finish(en, ts, RecordKind::Sms, None, None, None)
            }
            _ => {
                b.set(Slot::Src, &format!("1370000{:04}", rng.range(0, 6)));
                b.set(Slot::Dst, &dst);
                let answered = rng.range(0, 9) == 0;
                b.finish(en, ts, RecordKind::Call, None, Some(answered), Some(rng.range(0, 20) as f64))
            }
        };
        if let Verdict::Process { ts, wm } = wm.observe(rec.ts) {
            let mut rec = rec;
            rec.ts = ts;
            out.push((rec, wm));
        }
    }
    out
}

/// Each shard's actions (in the order it made them) and counters, in batches of 512, with
/// routes from `keyer` or without.
fn run(pack: &Arc<Pack>, records: &[(Record, i64)], shards: usize, keyer: Option<&Keyer>) -> Vec<(Vec<Action>, EngineStats)> {
    let routed: Vec<(&Record, i64, Option<Routes>)> = records.iter().map(|(r, wm)| (r, *wm, keyer.map(|k| k.routes(r)))).collect();
    (0..shards)
        .map(|shard| {
            let mut engine = Engine::new(Arc::clone(pack), shard, shards);
            let mut actions = Vec::new();
            for batch in routed.chunks(512) {
                engine.process_batch(batch, |(r, wm, routes)| (*r, *wm, routes.as_ref()), |_, acts| actions.append(acts));
            }
            (actions, engine.stats())
        })
        .collect()
}

#[test]
fn routes_made_once_give_what_each_shard_finds_routing_alone() {
    let pack = Arc::new(default_pack());
    let records = stream(&pack, 30_000);
    let keyer = Keyer::new(Arc::clone(&pack));
    for shards in [1, 2, 3] {
        let alone = run(&pack, &records, shards, None);
        let keyed = run(&pack, &records, shards, Some(&keyer));
        assert_eq!(alone, keyed, "{shards} shard(s)");
        let fired: usize = alone.iter().map(|(a, _)| a.len()).sum();
        assert!(fired > 20, "{shards} shard(s): only {fired} actions");
        if shards > 1 {
            assert!(
                alone.iter().all(|(a, s)| !a.is_empty() && s.keys > 0),
                "every shard has keys and acts"
            );
        }
    }
    // The scale-out router's keys: the record's fields joined by `+`, hashed as the shards
    // hash them.
    for (r, _) in records.iter().take(2_000) {
        for (d, key, hash) in keyer.keys(r) {
            let dim = &pack.dims[d];
            let parts: Vec<&str> = dim
                .parts
                .iter()
                .map(|f| r.field(*f).expect("a keyed record has every part"))
                .collect();
            assert_eq!(key, parts.join("+"), "{}", dim.name());
            assert_eq!(
                hash,
                anning_detector::engine::key_hash(anning_detector::engine::dim_seed(dim), &[&key])
            );
        }
    }
    // Keys under every dim a rule keys by but `dst` (whose rule wants OTP ports of a registry).
    let dims: std::collections::BTreeSet<String> = records
        .iter()
        .flat_map(|(r, _)| keyer.keys(r))
        .map(|(d, _, _)| pack.dims[d].name())
        .collect();
    assert_eq!(
        dims,
        ["cell+fp", "imei", "port", "sig", "src"].map(String::from).into(),
        "dims keyed"
    );
}

#[test]
fn routes_of_another_pack_are_not_used() {
    let pack = Arc::new(default_pack());
    let records = stream(&pack, 8_000);
    // The same dims and rules, another pack: its hash differs, so its routes are set aside.
    let mut other = compile(&format!("{}\n# another pack\n", anning_rules::DEFAULT_PACK)).expect("compiles");
    assert_ne!(other.hash, pack.hash);
    assert_eq!(other.dims.len(), pack.dims.len());
    // Routes that would be wrong for `pack` if they were used: every rule of every dim wanted.
    for r in other.rules.iter_mut() {
        r.filter = anning_rules::Filter::ANY;
    }
    let other = Keyer::new(Arc::new(other));
    // And a pack of other dims entirely.
    let small = Keyer::new(Arc::new(
        compile(
            r#"
[[rule]]
id = "r"
kind = "rate"
dim = "dst"
when = { type = ["sms"] }
window = "1m"
slide = "10s"
threshold = 1
ladder = [{ action = "alert", for = "1m" }]
"#,
        )
        .expect("compiles"),
    ));
    for shards in [1, 2] {
        let alone = run(&pack, &records, shards, None);
        assert_eq!(alone, run(&pack, &records, shards, Some(&other)), "{shards} shard(s), other hash");
        assert_eq!(alone, run(&pack, &records, shards, Some(&small)), "{shards} shard(s), other dims");
    }
}

/// The key hash as first defined: the streaming hasher over the parts joined by `+`.
fn streamed(seed: u64, parts: &[&str]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::with_seed(seed);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b"+");
        }
        h.update(p.as_bytes());
    }
    h.digest()
}

proptest! {
    #[test]
    fn key_hashes_are_those_of_the_streaming_hasher(
        seed in any::<u64>(),
        // Lengths across the one-call paths of xxh3 (≤ 16, ≤ 128, ≤ 240, longer) and past
        // the 128-byte buffer parts are joined in.
        parts in prop::collection::vec("[a-z0-9+【】店]{0,150}", 1..4),
    ) {
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        prop_assert_eq!(key_hash(seed, &parts), streamed(seed, &parts));
    }
}
