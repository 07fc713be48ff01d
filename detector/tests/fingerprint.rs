//! A record gets its content fingerprint only when a rule that reads it (keyed by `fp`,
//! counting distinct `fp`, or acting on a target keyed by it) wants the record: the same
//! actions as fingerprinting every record a rule wants, and a pack whose only use of `fp`
//! is counting it distinct gets fingerprints.

use std::sync::Arc;

use anning_detector::*;
use anning_rules::{Pack, RecordKind, compile, default_pack};

use crate::support::{Rng, run};

/// Subscribers in a few cells texting near-duplicate offers and everyday messages (some
/// with only an upstream template id), bulk ports texting long marketing texts, calls.
/// Records are built with `fingerprint` as the rules that read the fingerprint.
fn day(pack: &Pack, fingerprint: &[usize], n: usize) -> Vec<Record> {
    let registry = Registry::parse("port,sp,class,signatures\n10690001,901,marketing,京东\n").unwrap();
    let en = Enricher {
        fingerprint,
        ..Enricher::new(pack, &registry)
    };
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut b = RecordBuilder::default();
    let offers = [
        "加微信领红包，点击链接领取双十一优惠券，名额有限先到先得",
        "加微信领取红包，点链接领双十一优惠券，名额有限先到先得哦",
        "您的快递因地址不详被退回，请点击链接重新填写收货地址",
        "新年快乐，万事如意，身体健康，阖家幸福，心想事成",
    ];
    (0..n)
        .map(|i| {
            b.clear();
            b.set(Slot::Id, &format!("m{i}"));
            let ts = 1_794_297_600_000 + i as i64 * 200;
            match rng.range(0, 9) {
                0..=5 => {
                    b.set(Slot::Src, &format!("1380000{:04}", rng.range(0, 60)));
                    b.set(Slot::Dst, &format!("1390000{:04}", rng.range(0, 500)));
                    b.set(Slot::Cell, &format!("46000-{}", rng.range(0, 2)));
                    b.set(Slot::Imei, &format!("86{:013}", rng.range(0, 30)));
                    if rng.range(0, 9) == 0 {
                        b.set(Slot::Tpl, &format!("tpl-{}", rng.range(0, 3)));
                    } else {
                        b.set(Slot::Text, &format!("{}{}", offers[rng.range(0, 3) as usize], rng.range(0, 9)));
                    }
                    b.finish(en, ts, RecordKind::Sms, None, None, None)
                }
                6..=7 => {
                    b.set(Slot::Src, "10690001");
                    b.set(Slot::Dst, &format!("1390000{:04}", rng.range(0, 500)));
                    b.set(Slot::Cell, "46000-0");
                    b.set(Slot::Text, &format!("【京东】{}，回TD退订", offers[rng.range(0, 3) as usize]));
                    b.finish(en, ts, RecordKind::Sms, None, None, None)
                }
                _ => {
                    b.set(Slot::Src, &format!("1370000{:04}", rng.range(0, 9)));
                    b.set(Slot::Dst, &format!("1390000{:04}", rng.range(0, 500)));
                    b.finish(en, ts, RecordKind::Call, None, Some(true), Some(30.0))
                }
            }
        })
        .collect()
}

#[test]
fn fingerprints_only_where_a_rule_reads_them_change_no_action() {
    let pack = Arc::new(default_pack());
    assert!(!pack.fingerprint_rules.is_empty(), "the default pack keys by cell+fp");
    let every: Vec<usize> = (0..pack.rules.len()).collect();
    let lazy = day(&pack, &pack.fingerprint_rules, 20_000);
    let eager = day(&pack, &every, 20_000);
    let (mut kept, mut skipped) = (0, 0);
    for (l, e) in lazy.iter().zip(&eager) {
        match l.field(anning_rules::Field::Fp) {
            Some(fp) => {
                assert_eq!(Some(fp), e.field(anning_rules::Field::Fp));
                kept += 1;
            }
            None if e.field(anning_rules::Field::Fp).is_some() => {
                assert_eq!(
                    l.src_class,
                    anning_rules::AddrClass::Port,
                    "only the ports' texts go without: {l:?}"
                );
                skipped += 1;
            }
            None => {}
        }
    }
    assert!(kept > 5_000 && skipped > 2_000, "{kept} fingerprinted, {skipped} left without");
    let actions = run(&pack, &lazy);
    assert_eq!(actions, run(&pack, &eager));
    assert!(
        actions.iter().any(|a| a.rule == "sim-farm-cell"),
        "a rule keyed by the fingerprint acted"
    );
}

#[test]
fn a_pack_that_only_counts_distinct_fingerprints_gets_them() {
    let pack = Arc::new(
        compile(
            r#"
[[rule]]
id = "cell-variety"
kind = "rate"
dim = "cell"
distinct = "fp"
when = { type = ["sms"], src_class = ["subscriber"] }
window = "10m"
slide = "1m"
threshold = 3
ladder = [{ action = "alert", for = "10m" }]
"#,
        )
        .expect("compiles"),
    );
    assert!(pack.uses_fingerprint());
    assert_eq!(pack.fingerprint_rules, vec![0]);
    let records = day(&pack, &pack.fingerprint_rules, 2_000);
    let actions = run(&pack, &records);
    assert!(!actions.is_empty(), "three distinct texts in a cell within 10 minutes");
}

#[test]
fn a_rule_acting_on_a_target_keyed_by_the_fingerprint_reads_it() {
    let pack = compile(
        r#"
[[rule]]
id = "sender-then-content"
kind = "rate"
dim = "src"
targets = ["src", "cell+fp"]
when = { type = ["sms"], src_class = ["subscriber"] }
window = "10m"
slide = "1m"
threshold = 50
ladder = [{ action = "alert", for = "10m" }]
"#,
    )
    .expect("compiles");
    assert_eq!(pack.fingerprint_rules, vec![0]);
}
