//! Model-based property tests: the real windows against naive lists of timestamps, over
//! random sequences that include records out of order within the allowed lateness.

use anning_detector::near_limit::NearLimit;
use anning_detector::window::{SlidingCount, SlidingDistinct};
use proptest::prelude::*;

/// Random event times: a global clock that moves forward (sometimes by big jumps, as when
/// other keys advance the watermark), each record up to `lateness` behind it.
fn stream(lateness: i64) -> impl Strategy<Value = Vec<(i64, i64, u8)>> {
    prop::collection::vec((0i64..40, 0..=lateness, 0u8..6, 0u8..20), 1..300).prop_map(|steps| {
        let mut clock = 1_000_000i64;
        steps
            .into_iter()
            .map(|(adv, behind, value, jump)| {
                clock += if jump == 0 { adv * 50 } else { adv };
                (clock, clock - behind, value)
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn sliding_count_matches_naive_model(events in stream(25), w in prop_oneof![1usize..12, 12usize..400], slide in 1i64..9) {
        let mut real = SlidingCount::new(w);
        let mut seen: Vec<i64> = Vec::new();
        let mut head = i64::MIN;
        for (_, ts, _) in events {
            let bin = ts.div_euclid(slide);
            let got = real.add(bin);
            seen.push(bin);
            head = head.max(bin);
            let want = seen.iter().filter(|&&b| b > head - w as i64 && b <= head).count() as u64;
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn sliding_distinct_matches_naive_model(events in stream(25), w in prop_oneof![1usize..12, 12usize..400], slide in 1i64..9) {
        let mut real = SlidingDistinct::new(w);
        let mut seen: Vec<(i64, u8)> = Vec::new();
        let mut head = i64::MIN;
        for (_, ts, v) in events {
            let bin = ts.div_euclid(slide);
            let got = real.add(bin, v as u64);
            seen.push((bin, v));
            head = head.max(bin);
            let mut vals: Vec<u8> = seen.iter().filter(|(b, _)| *b > head - w as i64 && *b <= head).map(|(_, v)| *v).collect();
            vals.sort();
            vals.dedup();
            prop_assert_eq!(got, vals.len() as u64);
        }
    }

    #[test]
    fn near_limit_matches_naive_model(
        events in stream(20),
        w in 1usize..6,
        n in 1u32..5,
        k_off in 0u32..3,
        slide in 1i64..6,
        lo in 1u64..4,
        span in 1u64..6,
    ) {
        let lateness = 20i64;
        let k = n.saturating_sub(k_off).max(1);
        let limit = lo + span;
        let lateness_bins = ((lateness + slide - 1) / slide + 1) as usize;
        let mut real = NearLimit::new(w, n as usize, lateness_bins);
        let mut inserted: Vec<i64> = Vec::new();
        let mut last_eval: Option<i64> = None;
        let w = w as i64;
        for (clock, ts, _) in events {
            let wm = clock - lateness;
            let wm_bin = wm.div_euclid(slide);
            let bin = ts.div_euclid(slide);
            let got = real.observe(bin, wm_bin, lo, limit, k, n);
            // Naive: evaluate every boundary the watermark closed since the last time.
            let mut want = None;
            if let Some(last) = last_eval {
                for b in last + 1..=wm_bin {
                    let count = |end: i64| inserted.iter().filter(|&&x| x >= end - w && x < end).count() as u64;
                    let counts: Vec<u64> = (0..n as i64).rev().map(|j| count(b - j * w)).collect();
                    let in_band = counts.iter().filter(|&&c| c >= lo && c < limit).count() as u32;
                    if in_band >= k {
                        want = Some((b, counts, in_band));
                    }
                }
            }
            last_eval = Some(last_eval.map_or(wm_bin, |l| l.max(wm_bin)));
            inserted.push(bin);
            prop_assert_eq!(got.map(|h| (h.boundary, h.counts, h.in_band)), want);
        }
    }
}
