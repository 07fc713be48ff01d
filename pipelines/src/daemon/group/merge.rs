//! The deterministic merge of a scale-out dimension task (see [`super`]).
//!
//! Each input partition `p` sends its records in offset order, each with `R`, the largest
//! event time `p` had carried up to and including it (so `R` never decreases along `p`), and
//! from time to time a mark: "every later record of mine has `R ≥ r`", or "I am idle". The
//! merge gives records out in the order of (`R`, `p`, offset) over all partitions — a
//! function of each partition's sequence alone — releasing one only when no partition can
//! still send one that sorts before it.

use std::collections::{BTreeMap, VecDeque};

/// A record waiting in the merge.
#[derive(Debug)]
pub(super) struct Pending<T> {
    pub r: i64,
    /// Its offset in its input partition.
    pub offset: i64,
    /// Its offset in the dimension partition (where to re-read from after a restart).
    pub q_off: i64,
    pub item: T,
}

#[derive(Debug)]
struct Upstream<T> {
    buf: VecDeque<Pending<T>>,
    /// Last input offset released.
    done: i64,
    /// Every later record has `R ≥ mark`.
    mark: i64,
    idle: bool,
}

#[derive(Debug)]
pub(super) struct Merge<T> {
    ups: Vec<Upstream<T>>,
    /// (R, p, offset) of the last record released.
    last: Option<(i64, i32, i64)>,
    /// Records released before one already released in (R, p, offset) order: each is a
    /// record of a partition that was announced idle and then delivered again (or a fault).
    out_of_order: u64,
}

/// Per input partition: (last offset released, mark, idle), as a checkpoint keeps it.
pub(super) type MergeState = BTreeMap<i32, (i64, i64, bool)>;

impl<T> Merge<T> {
    /// A merge over `upstreams` input partitions, numbered from 0.
    pub fn new(upstreams: usize) -> Self {
        Merge {
            ups: (0..upstreams)
                .map(|_| Upstream {
                    buf: VecDeque::new(),
                    done: -1,
                    mark: i64::MIN,
                    idle: false,
                })
                .collect(),
            last: None,
            out_of_order: 0,
        }
    }

    /// A progress mark from input partition `p`.
    pub fn mark(&mut self, p: i32, r: i64, idle: bool) {
        if let Some(u) = self.ups.get_mut(p as usize) {
            u.mark = u.mark.max(r);
            u.idle = idle;
        }
    }

    /// A record from `p`; `false` when it was seen before (a repeat after a failover) or `p`
    /// is unknown.
    pub fn offer(&mut self, p: i32, x: Pending<T>) -> bool {
        let Some(u) = self.ups.get_mut(p as usize) else { return false };
        if x.offset <= u.done || u.buf.back().is_some_and(|b| x.offset <= b.offset) {
            return false;
        }
        u.idle = false;
        u.mark = u.mark.max(x.r);
        u.buf.push_back(x);
        true
    }

    /// The next record in (R, p, offset) order, if no partition can still send an earlier one.
    pub fn pop(&mut self) -> Option<Pending<T>> {
        let (cp, cr) = self
            .ups
            .iter()
            .enumerate()
            .filter_map(|(i, u)| u.buf.front().map(|x| (i, x.r)))
            .min_by_key(|&(i, r)| (r, i))?;
        let clear = self
            .ups
            .iter()
            .enumerate()
            .all(|(i, u)| i == cp || !u.buf.is_empty() || u.idle || u.mark > cr || (u.mark == cr && i > cp));
        if !clear {
            return None;
        }
        let x = self.ups[cp].buf.pop_front().expect("a head");
        self.ups[cp].done = x.offset;
        let at = (x.r, cp as i32, x.offset);
        if self.last.is_some_and(|l| at < l) {
            self.out_of_order += 1;
        }
        self.last = Some(at);
        Some(x)
    }

    /// Every input partition announced idle and nothing waits: all it was sent has run.
    pub fn drained(&self) -> bool {
        self.ups.iter().all(|u| u.idle && u.buf.is_empty())
    }

    /// Records released out of (R, p, offset) order so far (see `out_of_order`).
    pub fn out_of_order(&self) -> u64 {
        self.out_of_order
    }

    /// The dimension-partition offset of the oldest record still waiting.
    pub fn oldest(&self) -> Option<i64> {
        self.ups.iter().filter_map(|u| u.buf.front().map(|x| x.q_off)).min()
    }

    pub fn state(&self) -> MergeState {
        self.ups
            .iter()
            .enumerate()
            .map(|(i, u)| (i as i32, (u.done, u.mark, u.idle)))
            .collect()
    }

    /// Goes on from a checkpoint (records waiting then are read again).
    pub fn restore(&mut self, state: MergeState) {
        for (p, (done, mark, idle)) in state {
            if let Some(u) = self.ups.get_mut(p as usize) {
                u.done = done;
                u.mark = mark;
                u.idle = idle;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Per partition: steps of R (≥ 0) for each record.
    fn streams() -> impl Strategy<Value = Vec<Vec<i64>>> {
        prop::collection::vec(prop::collection::vec(0i64..3, 0..25), 1..5)
    }

    /// Each partition's records: (R, offset), R running up by the steps.
    fn records(steps: &[Vec<i64>]) -> Vec<Vec<(i64, i64)>> {
        steps
            .iter()
            .map(|s| {
                let mut r = 0;
                s.iter()
                    .enumerate()
                    .map(|(o, d)| {
                        r += d;
                        (r, o as i64)
                    })
                    .collect()
            })
            .collect()
    }

    /// The naive model: every record, sorted by (R, p, offset).
    fn in_order(parts: &[Vec<(i64, i64)>]) -> Vec<(i64, i32, i64)> {
        let mut all: Vec<(i64, i32, i64)> = parts
            .iter()
            .enumerate()
            .flat_map(|(p, v)| v.iter().map(move |&(r, o)| (r, p as i32, o)))
            .collect();
        all.sort();
        all
    }

    proptest! {
        /// Against the naive model: sort every record by (R, p, offset). Records and marks
        /// arrive in any interleaving, some records twice; each partition ends idle.
        #[test]
        fn releases_in_r_partition_offset_order_whatever_the_interleaving(
            steps in streams(),
            schedule in prop::collection::vec(0usize..8, 0..400),
            repeat in prop::collection::vec(any::<bool>(), 0..100),
        ) {
            let parts = records(&steps);
            let want = in_order(&parts);

            let mut m: Merge<i32> = Merge::new(parts.len());
            let mut next = vec![0usize; parts.len()];
            let mut got = Vec::new();
            let mut k = 0;
            let deliver = |m: &mut Merge<i32>, p: usize, next: &mut Vec<usize>, k: &mut usize| {
                let (r, o) = parts[p][next[p]];
                assert!(m.offer(p as i32, Pending { r, offset: o, q_off: 0, item: p as i32 }));
                if repeat.get(*k % repeat.len().max(1)).copied().unwrap_or(false) {
                    // A repeat (after a failover) is recognised.
                    assert!(!m.offer(p as i32, Pending { r, offset: o, q_off: 0, item: p as i32 }));
                }
                *k += 1;
                next[p] += 1;
                // After a record, sometimes a mark of the partition's R so far.
                if (*k).is_multiple_of(3) {
                    m.mark(p as i32, r, false);
                }
            };
            for s in &schedule {
                let p = s % parts.len();
                if next[p] < parts[p].len() {
                    deliver(&mut m, p, &mut next, &mut k);
                }
                while let Some(x) = m.pop() {
                    got.push(x);
                }
            }
            for p in 0..parts.len() {
                while next[p] < parts[p].len() {
                    deliver(&mut m, p, &mut next, &mut k);
                    while let Some(x) = m.pop() {
                        got.push(x);
                    }
                }
            }
            // The end of every stream.
            for p in 0..parts.len() {
                m.mark(p as i32, i64::MAX, true);
            }
            while let Some(x) = m.pop() {
                got.push(x);
            }
            let got: Vec<(i64, i32, i64)> = got.iter().map(|x| (x.r, x.item, x.offset)).collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(m.out_of_order(), 0);
        }
    }

    /// A message of a dimension partition: a record of input partition `p` (its `R` and
    /// offset), or `p`'s mark.
    #[derive(Debug, Clone, Copy)]
    enum Msg {
        Rec { p: i32, r: i64, offset: i64 },
        Mark { p: i32, r: i64, idle: bool },
    }

    /// Reads `topic[from..]` in batches of the given sizes, releasing what the merge can
    /// after each; stops after `batches` batches (all of them: `usize::MAX`). Returns where
    /// reading stopped.
    fn read(m: &mut Merge<i32>, topic: &[Msg], from: usize, sizes: &[usize], batches: usize, got: &mut Vec<(i64, i32, i64)>) -> usize {
        let mut at = from;
        let mut k = 0;
        while at < topic.len() && k < batches {
            let n = sizes.get(k % sizes.len().max(1)).copied().unwrap_or(1).max(1);
            for (q, msg) in topic.iter().enumerate().skip(at).take(n) {
                match *msg {
                    Msg::Rec { p, r, offset } => {
                        m.offer(
                            p,
                            Pending {
                                r,
                                offset,
                                q_off: q as i64,
                                item: p,
                            },
                        );
                    }
                    Msg::Mark { p, r, idle } => m.mark(p, r, idle),
                }
            }
            at = (at + n).min(topic.len());
            k += 1;
            while let Some(x) = m.pop() {
                got.push((x.r, x.item, x.offset));
            }
        }
        at
    }

    proptest! {
        /// A dimension task restored from its snapshot at any batch boundary, reading again
        /// from the oldest record still waiting, releases what one that never stopped
        /// releases, in the same order. The topic interleaves the input partitions' records
        /// and marks, with runs sent again from an earlier offset (a new owner after a
        /// failover); every partition is announced idle at its end only.
        #[test]
        fn a_merge_restored_at_any_batch_releases_what_one_that_never_stopped_releases(
            steps in streams(),
            order in prop::collection::vec(0usize..8, 0..300),
            rewinds in prop::collection::vec((any::<bool>(), 0usize..6), 0..300),
            sizes in prop::collection::vec(1usize..12, 1..20),
            again in prop::collection::vec(1usize..12, 1..20),
            cut in 0usize..40,
        ) {
            let parts = records(&steps);
            // The topic: partitions take turns as `order` says; after a record, a mark
            // sometimes, and sometimes a rewind of up to 5 records (sent again).
            let mut topic = Vec::new();
            let mut next = vec![0usize; parts.len()];
            let mut k = 0;
            let mut turn = order.iter().copied().chain(0..).map(|x| x % parts.len());
            while next.iter().zip(&parts).any(|(n, v)| *n < v.len()) {
                let p = turn.next().expect("endless");
                if next[p] >= parts[p].len() {
                    continue;
                }
                let (r, offset) = parts[p][next[p]];
                topic.push(Msg::Rec { p: p as i32, r, offset });
                next[p] += 1;
                let (mark, back) = rewinds.get(k % rewinds.len().max(1)).copied().unwrap_or((false, 0));
                k += 1;
                if mark {
                    topic.push(Msg::Mark { p: p as i32, r, idle: false });
                }
                if back > 0 && k % 7 == 0 {
                    next[p] = next[p].saturating_sub(back);
                }
            }
            for (p, v) in parts.iter().enumerate() {
                let r = v.last().map_or(0, |x| x.0);
                topic.push(Msg::Mark { p: p as i32, r, idle: true });
            }
            let want = in_order(&parts);

            // One that never stopped.
            let mut whole: Merge<i32> = Merge::new(parts.len());
            let mut all = Vec::new();
            read(&mut whole, &topic, 0, &sizes, usize::MAX, &mut all);
            prop_assert_eq!(&all, &want);

            // Stopped after `cut` batches: the snapshot keeps the state and where to read again.
            let mut first: Merge<i32> = Merge::new(parts.len());
            let mut got = Vec::new();
            let at = read(&mut first, &topic, 0, &sizes, cut, &mut got);
            let (state, from) = (first.state(), first.oldest().map_or(at, |q| q as usize));
            let mut second: Merge<i32> = Merge::new(parts.len());
            second.restore(state);
            read(&mut second, &topic, from, &again, usize::MAX, &mut got);
            prop_assert_eq!(got, want);
            prop_assert_eq!(first.out_of_order() + second.out_of_order(), 0);
        }
    }

    #[test]
    fn a_partition_that_delivers_after_it_was_announced_idle_is_counted_out_of_order() {
        let mut m: Merge<()> = Merge::new(2);
        let rec = |r, offset| Pending {
            r,
            offset,
            q_off: 0,
            item: (),
        };
        assert!(m.offer(0, rec(10, 0)));
        assert!(m.pop().is_none(), "partition 1 may still send something earlier");
        m.mark(1, 5, true);
        assert_eq!(m.pop().map(|x| x.r), Some(10), "an idle partition does not hold the merge");
        assert!(m.offer(1, rec(7, 0)));
        assert!(m.offer(0, rec(12, 1)));
        assert_eq!(m.pop().map(|x| (x.r, x.offset)), Some((7, 0)));
        assert_eq!(m.out_of_order(), 1, "R 7 ran after R 10");
        assert!(m.pop().is_none(), "partition 1 is busy again: it holds R 12 back");
        m.mark(1, 12, false);
        assert_eq!(m.pop().map(|x| x.r), Some(12));
        assert_eq!(m.out_of_order(), 1);
    }
}
