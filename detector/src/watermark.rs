//! The stream's watermark: max event time seen − allowed lateness.
//!
//! Records older than the watermark are late. The pack's [`LatePolicy`] says what happens to
//! them: dead-lettered (counted, kept with reason `late`, not applied) or admitted at the
//! watermark (counted, applied as if they had arrived on time at the watermark).

use anning_rules::LatePolicy;

/// What to do with one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Process the record at event time `ts` with watermark `wm`.
    Process { ts: i64, wm: i64 },
    /// Late and dead-lettered: `behind` ms older than the watermark.
    Late { behind: i64 },
}

/// Tracks the watermark over one ordered stream (a replay, or a daemon's merged partitions).
#[derive(Debug, Clone)]
pub struct Watermark {
    max_ts: i64,
    lateness_ms: i64,
    policy: LatePolicy,
}

impl Watermark {
    pub fn new(lateness_ms: i64, policy: LatePolicy) -> Self {
        Watermark {
            max_ts: i64::MIN,
            lateness_ms,
            policy,
        }
    }

    /// The current watermark (`i64::MIN` before any record).
    pub fn current(&self) -> i64 {
        self.max_ts.saturating_sub(self.lateness_ms)
    }

    /// Observes a record's event time and says how to process it.
    pub fn observe(&mut self, ts: i64) -> Verdict {
        let wm = self.current();
        if ts < wm {
            return match self.policy {
                LatePolicy::DeadLetter => Verdict::Late { behind: wm - ts },
                LatePolicy::Admit => Verdict::Process { ts: wm, wm },
            };
        }
        self.max_ts = self.max_ts.max(ts);
        Verdict::Process { ts, wm: self.current() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_records_follow_the_policy() {
        let mut w = Watermark::new(100, LatePolicy::DeadLetter);
        assert_eq!(w.observe(1000), Verdict::Process { ts: 1000, wm: 900 });
        assert_eq!(w.observe(950), Verdict::Process { ts: 950, wm: 900 });
        assert_eq!(w.observe(899), Verdict::Late { behind: 1 });
        let mut w = Watermark::new(100, LatePolicy::Admit);
        w.observe(1000);
        assert_eq!(w.observe(10), Verdict::Process { ts: 900, wm: 900 });
    }
}
