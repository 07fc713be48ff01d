//! A record's way from the decoder to the shards over one ordered stream: the input-order
//! joins, then the watermark (replay's router, the serial runner of rule tests and sweeps,
//! the engine benchmark). The daemon keeps a watermark per partition instead.

use anning_rules::Pack;

use crate::join::Joiner;
use crate::record::{Enricher, Record};
use crate::watermark::{Verdict, Watermark};

/// The joins and the watermark of one ordered stream.
#[derive(Debug)]
pub struct Stamper {
    joiner: Joiner,
    wm: Watermark,
}

/// What [`Stamper::stamp`] made of a record.
#[derive(Debug)]
pub enum Stamped {
    /// To the shards with watermark `wm`; `clamped` when it was late and its time was
    /// raised to the watermark (the `admit` policy); `joined` when a join changed it (routes
    /// made before the join must be made again).
    Process { rec: Record, wm: i64, clamped: bool, joined: bool },
    /// Behind the watermark by `behind` ms under the `dead-letter` policy.
    Late { rec: Record, behind: i64 },
}

impl Stamper {
    /// With `pack`'s join horizon, lateness and late policy.
    pub fn new(pack: &Pack) -> Self {
        Stamper {
            joiner: Joiner::new(pack),
            wm: Watermark::new(pack.lateness_ms, pack.late_policy),
        }
    }

    /// Joins `r` with what came before it, then places it against the watermark.
    pub fn stamp(&mut self, r: Record, en: Enricher<'_>) -> Stamped {
        let (mut rec, joined) = self.joiner.apply_joined(r, en);
        match self.wm.observe(rec.ts) {
            Verdict::Process { ts, wm } => {
                let clamped = ts != rec.ts;
                rec.ts = ts;
                Stamped::Process { rec, wm, clamped, joined }
            }
            Verdict::Late { behind } => Stamped::Late { rec, behind },
        }
    }
}

#[cfg(test)]
mod tests {
    use anning_rules::{RecordKind, compile};

    use super::*;
    use crate::record::{RecordBuilder, Slot};
    use crate::registry::Registry;

    fn record(en: Enricher<'_>, kind: RecordKind, ts: i64, fields: &[(Slot, &str)]) -> Record {
        let mut b = RecordBuilder::default();
        for (slot, v) in fields {
            b.set(*slot, v);
        }
        let status = (kind == RecordKind::Dlr).then_some(anning_rules::DlrStatus::Delivered);
        b.finish(en, ts, kind, status, None, None)
    }

    /// Joins first, then the watermark: a report takes its message's port, and lateness is
    /// judged on the joined record, dead-lettered or clamped as the pack says.
    #[test]
    fn joins_then_watermark_under_each_late_policy() {
        for (policy, admit) in [("dead-letter", false), ("admit", true)] {
            let pack = compile(&format!(
                "[pack]\nname = \"t\"\nlateness = \"1m\"\nlate_policy = \"{policy}\"\n[number_plan]\nsubscriber = ['^1[3-9][0-9]{{9}}$']\nport = ['^106[0-9]*$']\n"
            ))
            .expect("pack compiles");
            let registry = Registry::default();
            let en = Enricher::new(&pack, &registry);
            let mut st = Stamper::new(&pack);
            let t0 = 1_794_268_800_000;
            let sent = record(
                en,
                RecordKind::Sms,
                t0,
                &[(Slot::Id, "m1"), (Slot::Src, "10690001"), (Slot::Dst, "13800138000")],
            );
            assert!(matches!(st.stamp(sent, en), Stamped::Process { wm, clamped: false, joined: false, .. } if wm == t0 - 60_000));
            let report = record(en, RecordKind::Dlr, t0 + 5_000, &[(Slot::Ref, "m1")]);
            match st.stamp(report, en) {
                Stamped::Process {
                    rec,
                    clamped: false,
                    joined: true,
                    ..
                } => {
                    assert_eq!(
                        (rec.src(), rec.dst()),
                        (Some("10690001"), Some("13800138000")),
                        "joined to its message"
                    );
                }
                other => panic!("an on-time report: {other:?}"),
            }
            st.stamp(
                record(
                    en,
                    RecordKind::Sms,
                    t0 + 600_000,
                    &[(Slot::Src, "13800138000"), (Slot::Dst, "13900139000")],
                ),
                en,
            );
            let late = record(
                en,
                RecordKind::Sms,
                t0 + 1_000,
                &[(Slot::Src, "13800138000"), (Slot::Dst, "13900139000")],
            );
            match (st.stamp(late, en), admit) {
                (Stamped::Late { rec, behind }, false) => assert_eq!((rec.ts, behind), (t0 + 1_000, 539_000)),
                (
                    Stamped::Process {
                        rec, wm, clamped: true, ..
                    },
                    true,
                ) => assert_eq!((rec.ts, wm), (t0 + 540_000, t0 + 540_000)),
                (other, _) => panic!("{policy}: {other:?}"),
            }
        }
    }
}
