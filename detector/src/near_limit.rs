//! The "198 of 200" detector: are window counts landing in `[lo, limit)` again and again?
//!
//! At every slide boundary `b` (a multiple of the slide, in bins) the window `[b - w, b)` is
//! complete once the watermark has passed `b`. Its count is kept. The chain of `n`
//! back-to-back windows ending at `b` — `[b - w, b)`, `[b - 2w, b - w)`, … — is then checked:
//! the rule fires when at least `k` of them are in band. Because every boundary starts a
//! chain, a sender whose hours begin at :30 is judged on windows that begin at :30 too.
//!
//! Boundaries are evaluated lazily, when the key's next record arrives (its own event time is
//! never inside a window that the watermark has closed), so idle keys cost nothing.

use crate::window::BinRing;

/// A chain that fired: the figures behind the decision.
#[derive(Debug, Clone, PartialEq)]
pub struct NearLimitHit {
    /// End of the newest window in the chain, as a bin boundary (bin index).
    pub boundary: i64,
    /// Counts of the chain's windows, oldest first.
    pub counts: Vec<u64>,
    /// How many of them were in band.
    pub in_band: u32,
}

/// Per-key state of a `near_limit` rule.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NearLimit {
    /// Bins of the open windows; holds `w + lateness_bins + 1` bins.
    ring: BinRing,
    /// Count of the window ending at each evaluated boundary `b`, at `b mod (n·w)`.
    history: Box<[u32]>,
    /// Last boundary evaluated; `None` before the first record.
    last_eval: Option<i64>,
    w: i64,
}

impl NearLimit {
    pub fn new(w: usize, n: usize, lateness_bins: usize) -> Self {
        NearLimit {
            ring: BinRing::new(w, w + lateness_bins + 1),
            history: vec![0; n * w].into_boxed_slice(),
            last_eval: None,
            w: w as i64,
        }
    }

    fn hist_slot(&self, b: i64) -> usize {
        b.rem_euclid(self.history.len() as i64) as usize
    }

    /// Evaluates every boundary up to `wm_bin` (the watermark's bin: boundaries `≤ wm_bin`
    /// are closed), then counts a record in `bin`. Returns the newest chain that fired.
    pub fn observe(&mut self, bin: i64, wm_bin: i64, lo: u64, limit: u64, k: u32, n: u32) -> Option<NearLimitHit> {
        let mut hit = None;
        let last = *self.last_eval.get_or_insert(wm_bin);
        if wm_bin > last && self.ring.head() != i64::MIN {
            let span = self.history.len() as i64;
            // Past `quiet`, every window is empty and every chain sees only empty windows.
            let quiet = self.ring.head() + self.w + span;
            // Boundaries whose windows end before the ring's oldest bin see nothing the ring
            // still holds. They are only ever skipped when the watermark had not moved for
            // longer than the ring (a daemon whose partitions have not all delivered yet):
            // their windows count as empty rather than being walked one by one.
            let from = (last + 1).max(self.ring.oldest());
            if from > last + 1 {
                if from - (last + 1) >= span {
                    self.history.iter_mut().for_each(|h| *h = 0);
                } else {
                    for b in last + 1..from {
                        let s = self.hist_slot(b);
                        self.history[s] = 0;
                    }
                }
            }
            // The slot of each boundary follows from the one before: a division per window
            // read (`hist_slot`) was most of this loop.
            let mut slot = self.hist_slot(from);
            for b in from..=wm_bin.min(quiet) {
                let c = self.ring.range_sum(b - self.w, b - 1);
                self.history[slot] = c.min(u32::MAX as u64) as u32;
                if let Some(h) = self.chain(b, slot, lo, limit, k, n) {
                    hit = Some(h);
                }
                slot = if slot + 1 == self.history.len() { 0 } else { slot + 1 };
            }
            if wm_bin > quiet {
                self.history.iter_mut().for_each(|h| *h = 0);
            }
        }
        self.last_eval = Some(wm_bin.max(last));
        self.ring.add(bin, 1);
        hit
    }

    /// The chain of `n` windows ending at `b`, if at least `k` are in band. Counted first and
    /// the counts gathered only for a chain that fires: nearly every boundary of nearly every
    /// key is evaluated for nothing (a quiet subscriber's next message walks up to `n·w` of
    /// them), and a vector each time was most of this rule's cost.
    ///
    /// `slot` is `hist_slot(b)`; the window `j` back from `b` is `j·w` slots before it, less
    /// than the history's `n·w` (a rule whose `n` changes starts with new state).
    fn chain(&self, b: i64, slot: usize, lo: u64, limit: u64, k: u32, n: u32) -> Option<NearLimitHit> {
        let len = self.history.len();
        debug_assert_eq!(len, n as usize * self.w as usize, "history sized for another n");
        let count = |j: usize| {
            let back = j * self.w as usize;
            self.history[if back > slot { slot + len - back } else { slot - back }] as u64
        };
        let in_band = (0..n as usize).filter(|&j| (lo..limit).contains(&count(j))).count() as u32;
        (in_band >= k).then(|| NearLimitHit {
            boundary: b,
            counts: (0..n as usize).rev().map(count).collect(),
            in_band,
        })
    }

    /// Whether the state carries nothing that could matter at watermark bin `wm_bin`.
    pub fn is_idle_at(&self, wm_bin: i64) -> bool {
        self.idle_bin().is_none_or(|from| wm_bin >= from)
    }

    pub fn ring(&self) -> &BinRing {
        &self.ring
    }

    /// The first watermark bin at which [`is_idle_at`](Self::is_idle_at) holds, as far as
    /// the records seen so far go; `None` before the first.
    pub fn idle_bin(&self) -> Option<i64> {
        let head = self.ring.head();
        (head != i64::MIN).then(|| head + self.history.len() as i64 + self.w + 1)
    }
}
