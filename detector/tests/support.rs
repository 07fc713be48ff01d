//! Building records and running a single engine over them in tests.

use std::sync::Arc;

use anning_detector::*;
use anning_rules::{Pack, RecordKind};

pub fn sms(plan_pack: &Pack, ts: i64, src: &str, dst: &str, id: &str) -> Record {
    let registry = Registry::default();
    let en = Enricher::new(plan_pack, &registry);
    let mut b = RecordBuilder::default();
    b.set(Slot::Src, src);
    b.set(Slot::Dst, dst);
    b.set(Slot::Id, id);
    b.finish(en, ts, RecordKind::Sms, None, None, None)
}

/// Runs records (in the given order) through one engine with the pack's watermark policy.
pub fn run(pack: &Arc<Pack>, records: &[Record]) -> Vec<Action> {
    let mut engine = Engine::new(Arc::clone(pack), 0, 1);
    let mut wm = Watermark::new(pack.lateness_ms, pack.late_policy);
    let mut out = Vec::new();
    for r in records {
        if let Verdict::Process { ts, wm } = wm.observe(r.ts) {
            assert_eq!(ts, r.ts, "tests feed on-time records");
            engine.process(r, wm, &mut out);
        }
    }
    out
}

/// A small deterministic generator (xorshift) so tests need no extra crates.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn range(&mut self, lo: u64, hi_incl: u64) -> u64 {
        lo + self.next() % (hi_incl - lo + 1)
    }
}
