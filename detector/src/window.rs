//! Event-time sliding windows keyed by nothing: one instance per (rule, key).
//!
//! Time is cut into bins of the rule's `slide`; a bin's index is `ts.div_euclid(slide)`, so
//! bins align by truncating event time. A window of `w` bins ending at bin `h` covers bins
//! `h - w + 1 ..= h`. Counts are evaluated at the key's head (its latest bin): records that
//! arrive out of order still count while their bin is inside that window.

use smallvec::SmallVec;

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

/// One bin holding a count: (bin index, count).
type Bin = (i64, u32);

/// The per-bin counts of a window with the running sum of the `w` bins ending at `head`.
///
/// Sparse: only bins that hold a count take room, oldest first, so a window's cost follows
/// the records it holds, not its length over its slide (a 1 h window sliding by 1 s costs no
/// more than one sliding by 1 min), and a key seen once holds one bin without allocating.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BinRing {
    /// Bins with a count, ascending; `bins[start..]` are live, all within
    /// `head - cap + 1 ..= head`. A bin whose count was taken back to zero may stay until it
    /// leaves the ring.
    bins: SmallVec<[Bin; 1]>,
    /// Bins before this index have left the ring (dropped in bulk, see `advance`).
    start: u32,
    /// Window length in bins (≤ `cap`).
    w: u32,
    /// Bins of history kept: `head - cap + 1 ..= head`.
    cap: u32,
    /// Latest bin index seen; `i64::MIN` before the first record.
    head: i64,
    /// Sum of the `w` bins ending at `head`.
    sum: u64,
}

impl BinRing {
    /// A ring for windows of `w` bins that keeps `cap ≥ w` bins of history.
    pub fn new(w: usize, cap: usize) -> Self {
        assert!(w >= 1 && cap >= w && cap <= u32::MAX as usize);
        BinRing {
            bins: SmallVec::new(),
            start: 0,
            w: w as u32,
            cap: cap as u32,
            head: i64::MIN,
            sum: 0,
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

    /// Window length in bins.
    pub fn w(&self) -> i64 {
        self.w as i64
    }

    fn live(&self) -> &[Bin] {
        &self.bins[self.start as usize..]
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
        let (w, cap) = (self.w as i64, self.cap as i64);
        let (was_from, from, keep_from) = (self.head - w, bin - w, bin - cap);
        let mut i = self.start as usize;
        // Ascending: the bins leaving the window are a prefix of the live ones, and those
        // leaving the ring a prefix of that.
        while let Some(&(b, n)) = self.bins.get(i) {
            if b > from {
                break;
            }
            if b > was_from {
                self.sum -= n as u64;
            }
            if b <= keep_from {
                self.start = i as u32 + 1;
            }
            i += 1;
        }
        self.head = bin;
        let start = self.start as usize;
        if start == self.bins.len() {
            self.bins.clear();
            self.start = 0;
        } else if start >= 8 && start * 2 >= self.bins.len() {
            self.bins.drain(..start);
            self.start = 0;
        }
    }

    /// Adds `n` to `bin` if the ring still holds it; returns whether it did.
    pub fn add(&mut self, bin: i64, n: u32) -> bool {
        self.advance(bin);
        if bin <= self.head - self.cap as i64 {
            return false;
        }
        let start = self.start as usize;
        let live = self.bins.len() > start;
        match self.bins.last_mut() {
            Some(last) if live && last.0 == bin => last.1 = last.1.saturating_add(n),
            Some(last) if live && last.0 > bin => match self.bins[start..].binary_search_by_key(&bin, |x| x.0) {
                Ok(i) => self.bins[start + i].1 = self.bins[start + i].1.saturating_add(n),
                Err(i) => self.bins.insert(start + i, (bin, n)),
            },
            _ => self.bins.push((bin, n)),
        }
        if bin > self.head - self.w as i64 {
            self.sum += n as u64;
        }
        true
    }

    /// Takes `n` back from `bin` (used by distinct counting when a value moves bins).
    pub fn sub(&mut self, bin: i64, n: u32) {
        if bin > self.head || bin <= self.head - self.cap as i64 {
            return;
        }
        let start = self.start as usize;
        if let Ok(i) = self.bins[start..].binary_search_by_key(&bin, |x| x.0) {
            self.bins[start + i].1 -= n;
            if bin > self.head - self.w as i64 {
                self.sum -= n as u64;
            }
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
            self.head - self.cap as i64 + 1
        }
    }

    /// Count in bins `from ..= to` (bins outside the ring count as zero).
    pub fn range_sum(&self, from: i64, to: i64) -> u64 {
        if self.head == i64::MIN {
            return 0;
        }
        let lo = from.max(self.head - self.cap as i64 + 1);
        let hi = to.min(self.head);
        let live = self.live();
        let i = live.partition_point(|x| x.0 < lo);
        live[i..].iter().take_while(|x| x.0 <= hi).map(|x| x.1 as u64).sum()
    }

    /// Whether nothing in the ring could still count toward a window ending at or after `bin`.
    pub fn is_empty_at(&self, bin: i64) -> bool {
        self.empty_from().is_none_or(|from| bin >= from)
    }

    /// The first bin at which [`is_empty_at`](Self::is_empty_at) holds, as far as the
    /// records seen so far go (`head + w`); `None` before the first.
    pub fn empty_from(&self) -> Option<i64> {
        (self.head != i64::MIN).then(|| self.head + self.w as i64)
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
        let floor = self.ring.head() - self.ring.w();
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
