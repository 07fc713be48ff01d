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

/// The part of [`Partitioned`] a checkpoint keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartitionedState {
    pub max_ts: std::collections::BTreeMap<i32, i64>,
    pub floor: i64,
}

/// Watermarks over several partitions read in any interleaving (the daemon): each
/// partition's maximum event time, the watermark their minimum minus the lateness. With one
/// partition it is exactly [`Watermark`].
///
/// A partition [`register`](Partitioned::register)ed but silent holds the watermark back
/// (its records may still be on the way) until it is marked idle (the caller knows it has
/// caught up with its log); an idle partition that delivers again counts again.
#[derive(Debug, Clone)]
pub struct Partitioned {
    max_ts: std::collections::BTreeMap<i32, i64>,
    idle: std::collections::BTreeSet<i32>,
    /// The highest watermark given out: it never goes back.
    floor: i64,
    lateness_ms: i64,
    policy: LatePolicy,
}

impl Partitioned {
    pub fn new(lateness_ms: i64, policy: LatePolicy) -> Self {
        Partitioned {
            max_ts: Default::default(),
            idle: Default::default(),
            floor: i64::MIN,
            lateness_ms,
            policy,
        }
    }

    /// The watermark: the least maximum over partitions that are not idle, minus the
    /// lateness; never lower than one given out before.
    pub fn current(&self) -> i64 {
        let now = self
            .max_ts
            .iter()
            .filter(|(p, _)| !self.idle.contains(p))
            .map(|(_, m)| *m)
            .min()
            .map_or(i64::MIN, |m| m.saturating_sub(self.lateness_ms));
        now.max(self.floor)
    }

    /// A partition now assigned: it holds the watermark back until it delivers or idles.
    pub fn register(&mut self, partition: i32) {
        self.floor = self.current();
        self.max_ts.entry(partition).or_insert(i64::MIN);
    }

    /// Marks a partition idle (caught up, nothing to read) or not.
    pub fn set_idle(&mut self, partition: i32, idle: bool) {
        self.floor = self.current();
        if idle {
            self.idle.insert(partition);
        } else {
            self.idle.remove(&partition);
        }
        self.floor = self.current();
    }

    /// Observes a record of `partition` and says how to process it.
    pub fn observe(&mut self, partition: i32, ts: i64) -> Verdict {
        let wm = self.current();
        if ts < wm {
            return match self.policy {
                LatePolicy::DeadLetter => Verdict::Late { behind: wm - ts },
                LatePolicy::Admit => Verdict::Process { ts: wm, wm },
            };
        }
        let m = self.max_ts.entry(partition).or_insert(i64::MIN);
        *m = (*m).max(ts);
        self.idle.remove(&partition);
        self.floor = self.current();
        Verdict::Process { ts, wm: self.floor }
    }

    /// The largest event time `partition` has carried (`None` before its first record).
    pub fn max_of(&self, partition: i32) -> Option<i64> {
        self.max_ts.get(&partition).copied().filter(|m| *m != i64::MIN)
    }

    /// What a checkpoint keeps: each partition's maximum event time and the floor.
    pub fn state(&self) -> PartitionedState {
        PartitionedState {
            max_ts: self.max_ts.clone(),
            floor: self.floor,
        }
    }

    /// Goes on from a checkpoint's state. Idleness is not kept: a partition counts as idle
    /// again once the caller finds it caught up.
    pub fn restore(&mut self, state: PartitionedState) {
        self.max_ts = state.max_ts;
        self.idle.clear();
        self.floor = state.floor;
    }

    /// Forgets a partition (revoked): it no longer holds the watermark back.
    pub fn remove(&mut self, partition: i32) {
        self.max_ts.remove(&partition);
        self.idle.remove(&partition);
        self.floor = self.current();
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

    #[test]
    fn one_partition_is_the_plain_watermark_and_several_take_the_minimum() {
        let (mut a, mut b) = (
            Watermark::new(100, LatePolicy::DeadLetter),
            Partitioned::new(100, LatePolicy::DeadLetter),
        );
        for ts in [1000, 950, 899, 1200, 1101, 1099, 5000] {
            assert_eq!(a.observe(ts), b.observe(3, ts), "ts {ts}");
        }
        let mut p = Partitioned::new(100, LatePolicy::DeadLetter);
        p.register(0);
        p.register(1);
        assert_eq!(p.observe(0, 1000), Verdict::Process { ts: 1000, wm: i64::MIN });
        assert_eq!(p.observe(1, 500), Verdict::Process { ts: 500, wm: 400 });
        assert_eq!(p.observe(0, 2000), Verdict::Process { ts: 2000, wm: 400 });
        assert_eq!(p.observe(1, 399), Verdict::Late { behind: 1 });
        p.remove(1);
        assert_eq!(p.current(), 1900);
        // A registered partition holds the watermark back until it delivers or idles; the
        // watermark never goes back.
        p.register(2);
        assert_eq!(p.current(), 1900);
        assert_eq!(p.observe(0, 3000), Verdict::Process { ts: 3000, wm: 1900 });
        p.set_idle(2, true);
        assert_eq!(p.current(), 2900);
        assert_eq!(p.observe(2, 1950), Verdict::Late { behind: 950 });
        assert_eq!(p.observe(2, 2950), Verdict::Process { ts: 2950, wm: 2900 });
    }
}
