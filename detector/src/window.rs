//! Event-time sliding windows keyed by nothing: one instance per (rule, key).
//!
//! Time is cut into bins of the rule's `slide`; a bin's index is `ts.div_euclid(slide)`, so
//! bins align by truncating event time. A window of `w` bins ending at bin `h` covers bins
//! `h - w + 1 ..= h`. Counts are evaluated at the key's head (its latest bin): records that
//! arrive out of order still count while their bin is inside that window.

/// Which part of its life a window is in (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowState {
    /// No record seen yet.
    Empty,
    /// Holding counts for bins ending at `head`.
    Open { head: i64 },
}

impl std::fmt::Display for WindowState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WindowState::Empty => f.write_str("empty"),
            WindowState::Open { head } => write!(f, "open at bin {head}"),
        }
    }
}

/// A ring of per-bin counts with the running sum of the `w` bins ending at `head`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BinRing {
    /// Count per bin; bin `b` lives at `b mod len`. Holds bins `head - len + 1 ..= head`.
    bins: Box<[u32]>,
    /// Latest bin index seen; `i64::MIN` before the first record.
    head: i64,
    /// Sum of the `w` bins ending at `head`.
    sum: u64,
    /// Window length in bins (≤ `bins.len()`).
    w: i64,
}

impl BinRing {
    /// A ring for windows of `w` bins that keeps `cap ≥ w` bins of history.
    pub fn new(w: usize, cap: usize) -> Self {
        assert!(w >= 1 && cap >= w);
        BinRing {
            bins: vec![0; cap].into_boxed_slice(),
            head: i64::MIN,
            sum: 0,
            w: w as i64,
        }
    }

    pub fn state(&self) -> WindowState {
        if self.head == i64::MIN {
            WindowState::Empty
        } else {
            WindowState::Open { head: self.head }
        }
    }

    pub fn head(&self) -> i64 {
        self.head
    }

    fn slot(&self, bin: i64) -> usize {
        bin.rem_euclid(self.bins.len() as i64) as usize
    }

    /// Moves the head forward to `bin`, dropping bins that fall out of the ring.
    pub fn advance(&mut self, bin: i64) {
        if self.head == i64::MIN {
            self.head = bin;
            return;
        }
        if bin <= self.head {
            return;
        }
        let cap = self.bins.len() as i64;
        if bin - self.head >= cap {
            self.bins.iter_mut().for_each(|b| *b = 0);
            self.sum = 0;
        } else {
            for b in self.head + 1..=bin {
                // Bin leaving the window ending at the new head.
                let out = b - self.w;
                if out > self.head - self.w {
                    self.sum -= self.bins[self.slot(out)] as u64;
                }
                let s = self.slot(b);
                self.bins[s] = 0;
            }
        }
        self.head = bin;
    }

    /// Adds `n` to `bin` if the ring still holds it; returns whether it did.
    pub fn add(&mut self, bin: i64, n: u32) -> bool {
        self.advance(bin);
        if bin <= self.head - self.bins.len() as i64 {
            return false;
        }
        let s = self.slot(bin);
        self.bins[s] = self.bins[s].saturating_add(n);
        if bin > self.head - self.w {
            self.sum += n as u64;
        }
        true
    }

    /// Takes `n` back from `bin` (used by distinct counting when a value moves bins).
    pub fn sub(&mut self, bin: i64, n: u32) {
        if bin > self.head || bin <= self.head - self.bins.len() as i64 {
            return;
        }
        let s = self.slot(bin);
        self.bins[s] -= n;
        if bin > self.head - self.w {
            self.sum -= n as u64;
        }
    }

    /// Count in the window of `w` bins ending at the head.
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// The oldest bin the ring still holds (`i64::MIN` when empty).
    pub fn oldest(&self) -> i64 {
        if self.head == i64::MIN {
            i64::MIN
        } else {
            self.head - self.bins.len() as i64 + 1
        }
    }

    /// Count in bins `from ..= to` (bins outside the ring count as zero).
    pub fn range_sum(&self, from: i64, to: i64) -> u64 {
        if self.head == i64::MIN {
            return 0;
        }
        let lo = from.max(self.head - self.bins.len() as i64 + 1);
        let hi = to.min(self.head);
        (lo..=hi).map(|b| self.bins[self.slot(b)] as u64).sum()
    }

    /// Whether nothing in the ring could still count toward a window ending at or after `bin`.
    pub fn is_empty_at(&self, bin: i64) -> bool {
        self.head == i64::MIN || self.head <= bin - self.w
    }
}

/// Sliding count of records.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SlidingCount {
    ring: BinRing,
}

impl SlidingCount {
    pub fn new(w: usize) -> Self {
        SlidingCount { ring: BinRing::new(w, w) }
    }

    /// Counts one record in `bin`; returns the count of the window ending at the key's head.
    pub fn add(&mut self, bin: i64) -> u64 {
        self.ring.add(bin, 1);
        self.ring.sum()
    }

    pub fn count(&self) -> u64 {
        self.ring.sum()
    }

    /// The count of the window ending at `bin` (or at the head, if later), adding nothing.
    pub fn at(&mut self, bin: i64) -> u64 {
        self.ring.advance(bin);
        self.ring.sum()
    }

    pub fn ring(&self) -> &BinRing {
        &self.ring
    }
}

/// Sliding count of distinct values (hashed to 64 bits).
///
/// Each value is counted in the bin where it was last seen, so the window's sum is the
/// number of values seen inside it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SlidingDistinct {
    ring: BinRing,
    /// Value hash → latest bin it was seen in. Entries older than the ring are pruned.
    last: hashbrown::HashMap<u64, i64>,
}

impl SlidingDistinct {
    pub fn new(w: usize) -> Self {
        SlidingDistinct {
            ring: BinRing::new(w, w),
            last: hashbrown::HashMap::new(),
        }
    }

    /// Notes `value` seen in `bin`; returns the distinct count of the window at the head.
    pub fn add(&mut self, bin: i64, value: u64) -> u64 {
        self.ring.advance(bin);
        let floor = self.ring.head() - self.ring.w;
        if bin <= floor {
            return self.ring.sum();
        }
        match self.last.get_mut(&value) {
            Some(prev) if *prev >= bin => {}
            Some(prev) => {
                if *prev > floor {
                    self.ring.sub(*prev, 1);
                }
                *prev = bin;
                self.ring.add(bin, 1);
            }
            None => {
                self.last.insert(value, bin);
                self.ring.add(bin, 1);
            }
        }
        if self.last.len() > 2 * self.ring.sum() as usize + 16 {
            self.last.retain(|_, b| *b > floor);
        }
        self.ring.sum()
    }

    pub fn count(&self) -> u64 {
        self.ring.sum()
    }

    pub fn ring(&self) -> &BinRing {
        &self.ring
    }
}
