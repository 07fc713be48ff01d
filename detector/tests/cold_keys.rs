//! Cold keys (records kept until one more could tip a rule, then run through fresh windows)
//! against an engine whose keys are warm from their first record: the same actions, the same
//! counters and the same keys held after every record, over random streams that cross the
//! cold limit, evict keys, and carry values a cold key cannot keep (which warm it at once).

use std::sync::Arc;

use anning_detector::*;
use anning_rules::{Pack, RecordKind, compile};
use proptest::prelude::*;

/// A pack of every kind a cold key runs (rate, distinct, sequential, near_limit, ratio with
/// a suspicion) with thresholds around `t`, on `src`, plus a `dst` rule.
fn pack(t: u64, suspect: bool) -> Pack {
    let suspect = if suspect {
        "suspect = { rule = \"short-calls\", factor = 0.5, levels = 1 }"
    } else {
        ""
    };
    compile(&format!(
        r#"
[pack]
lateness = "5s"

[[rule]]
id = "rate"
kind = "rate"
dim = "src"
when = {{ type = ["sms"] }}
window = "1m"
slide = "10s"
threshold = {rate}
ladder = [{{ action = "alert", for = "30s" }}, {{ action = "throttle", rate = 0.1, for = "1m" }}]

[[rule]]
id = "fanout"
kind = "rate"
dim = "src"
when = {{ type = ["sms", "call"] }}
window = "2m"
slide = "20s"
threshold = {t}
distinct = "dst"
{suspect}
ladder = [{{ action = "alert", for = "1m" }}]

[[rule]]
id = "seq"
kind = "rate"
dim = "src"
when = {{ type = ["sms", "call"] }}
window = "1m"
slide = "10s"
threshold = {t}
sequential = 2
ladder = [{{ action = "suspend", for = "1m" }}]

[[rule]]
id = "near"
kind = "near_limit"
dim = "src"
when = {{ type = ["sms"] }}
window = "30s"
slide = "10s"
limit = {limit}
band = 0.5
k = 2
n = 3
ladder = [{{ action = "throttle", rate = 0.1, for = "1m" }}]

[[rule]]
id = "short-calls"
kind = "ratio"
dim = "src"
when = {{ type = ["call"], answered = true }}
numerator = {{ type = ["call"], answered = true, max_dur = 10 }}
ratio = 0.5
min = {t}
window = "1m"
slide = "10s"
ladder = [{{ action = "alert", for = "1m" }}]

[[rule]]
id = "recipient"
kind = "rate"
dim = "dst"
when = {{ type = ["sms"] }}
window = "1m"
slide = "10s"
threshold = {t}
ladder = [{{ action = "alert", for = "1m" }}]
"#,
        rate = t + 1,
        limit = 2 * t,
    ))
    .expect("test pack compiles")
}

/// (clock step ms, lateness ms behind, sender, destination, kind, answered, duration)
type Step = (i64, i64, u8, u8, u8, bool, u8);

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        (
            prop_oneof![8 => 0i64..4_000, 1 => 60_000i64..400_000],
            0i64..5_000,
            0u8..4,
            0u8..24,
            0u8..3,
            any::<bool>(),
            0u8..30,
        ),
        1..400,
    )
}

/// `spread`: destinations far apart (no dialling runs) rather than close together.
fn records(pack: &Pack, steps: &[Step], spread: bool) -> Vec<Record> {
    let registry = Registry::default();
    let en = Enricher::new(pack, &registry);
    let mut b = RecordBuilder::default();
    let mut clock = 1_794_297_600_000i64;
    steps
        .iter()
        .map(|&(adv, behind, src, dst, kind, answered, dur)| {
            clock += adv;
            b.clear();
            b.set(Slot::Src, &format!("1380000000{src}"));
            // Mostly numbers close together (sequential), some that are not all digits
            // (a cold key cannot keep them), some with leading zeros.
            let dst = match dst {
                20 => "+8613900000001".to_string(),
                21 => "".to_string(),
                22 => "0013900000".to_string(),
                d if spread => format!("1390{:07}", d as u32 * 7919),
                d => format!("139000000{d:02}"),
            };
            if !dst.is_empty() {
                b.set(Slot::Dst, &dst);
            }
            let ts = clock - behind;
            match kind {
                0 | 1 => b.finish(en, ts, RecordKind::Sms, None, None, None),
                _ => b.finish(en, ts, RecordKind::Call, None, Some(answered), Some(dur as f64)),
            }
        })
        .collect()
}

/// Runs `steps` through a cold-key engine and a warm one; returns the actions.
fn compare(pack: Pack, steps: &[Step], spread: bool) -> Result<Vec<Action>, TestCaseError> {
    let pack = Arc::new(pack);
    let recs = records(&pack, steps, spread);
    let mut cold = Engine::new(Arc::clone(&pack), 0, 1);
    let mut warm = Engine::new(Arc::clone(&pack), 0, 1).without_cold_keys();
    let mut wm = Watermark::new(pack.lateness_ms, pack.late_policy);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (i, r) in recs.iter().enumerate() {
        let Verdict::Process { ts, wm } = wm.observe(r.ts) else { continue };
        prop_assert_eq!(ts, r.ts);
        cold.process(r, wm, &mut a);
        warm.process(r, wm, &mut b);
        prop_assert_eq!(cold.stats().keys, warm.stats().keys, "keys held after record {}", i);
    }
    prop_assert_eq!(&a, &b);
    prop_assert_eq!(cold.stats(), warm.stats());
    Ok(a)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn cold_keys_give_the_actions_of_warm_keys(steps in steps(), t in 2u64..9, suspect in any::<bool>()) {
        compare(pack(t, suspect), &steps, false)?;
    }
}

#[test]
fn the_default_pack_gives_the_same_actions_with_cold_keys() {
    // Four busy senders and 24 recipients under the default pack: hourly limits and
    // robocall ratios fire (dialling runs are the random pack's); keys cross the cold limit (7 records for subscribers)
    // and are evicted after the long gaps, many times over.
    let pack = anning_rules::default_pack();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let steps: Vec<Step> = (0..20_000)
        .map(|_| {
            let r = next();
            let adv = if r % 500 == 0 { 300_000 } else { (r >> 8) as i64 % 900 };
            // One call in ten answered, most answered calls short: both robocall ratios fire.
            let answered = (r >> 56) % 10 == 0;
            // Senders 0 and 1 message, 2 and 3 call (an action in force covers a key's others).
            let src = (r >> 32) as u8 % 4;
            let kind = if src < 2 { 0 } else { 2 };
            (
                adv,
                (r >> 20) as i64 % 2_000,
                src,
                (r >> 40) as u8 % 24,
                kind,
                answered,
                (r >> 57) as u8 % 12,
            )
        })
        .collect();
    let fired = compare(pack, &steps, true).unwrap();
    for rule in ["subscriber-hourly-limit", "robocall-answer-rate"] {
        assert!(
            fired.iter().any(|a| a.rule == rule),
            "{rule} never fired: {:?}",
            fired.iter().map(|a| &a.rule).collect::<std::collections::BTreeSet<_>>()
        );
    }
}
