//! Cold keys: most keys are seen a few times and then evicted (a subscriber's few messages,
//! a verification code's recipient). Until a key has had enough records that one more could
//! tip any rule of its dimension, it keeps just those records, 24 bytes each and the first
//! inline, instead of a window per rule. When one more record could tip a rule, or a record
//! cannot be kept compactly, the key is *warmed*: its records are run through fresh windows
//! by the same code the live path uses ([`step`](super::step::step)), in order, with the
//! watermarks they came with, so the state is exactly what it would have been. No rule can
//! fire while a key is cold, so its ladders and actions are untouched.

use super::*;

/// A record a cold key holds: what its dimension's rules read of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Event {
    pub ts: i64,
    /// The value of the dimension's distinct field as a number (it is all digits).
    val: u64,
    /// `ts - wm`: the watermark the record was processed with.
    back: u32,
    /// Which slots of the dimension wanted the record.
    pub wanted: u16,
    /// Per ratio slot (its index in the plan): bit 2k the rule's filter matched, bit 2k+1
    /// its numerator did.
    ratio: u8,
    /// Digits of `val` (leading zeros kept); 0 when the record has no value.
    len: u8,
}

impl Event {
    pub fn wm(&self) -> i64 {
        self.ts - self.back as i64
    }

    pub fn number(&self) -> Option<u64> {
        (self.len > 0).then_some(self.val)
    }

    pub fn value(&self) -> Option<String> {
        (self.len > 0).then(|| format!("{:0w$}", self.val, w = self.len as usize))
    }
}

/// A cold key's records, oldest first.
pub(super) type Log = smallvec::SmallVec<[Event; 1]>;

/// Whether and how a dimension keeps cold keys.
#[derive(Debug, Clone)]
pub(super) struct ColdPlan {
    /// Most records a cold key holds: no rule of the dim can fire on fewer than `max + 1`.
    max: usize,
    /// The one field the dim's `distinct` rules count (`dst` when it has `sequential` rules).
    pub value: Option<Field>,
    /// Per slot: its ratio index (for [`Event::ratio`]), `u8::MAX` for other rules.
    ratio: Vec<u8>,
}

/// Records a cold key holds at most, whatever the thresholds: past this a key's windows are
/// about as small as its records.
const MAX_COLD: usize = 16;

impl ColdPlan {
    /// The plan for a dim of `rules`; `None` when its keys must be warm from the start: an
    /// `unsubscribe` rule (its state is about other subscribers), rules that can fire on the
    /// first record, distinct rules counting different fields, more than 16 rules or more
    /// than 4 ratio rules.
    pub fn new(pack: &Pack, rules: &[usize]) -> Option<ColdPlan> {
        if rules.is_empty() || rules.len() > 16 {
            return None;
        }
        let mut fewest = u64::MAX;
        let mut value: Option<Field> = None;
        let mut ratio = vec![u8::MAX; rules.len()];
        let mut ratios = 0u8;
        let mut one_value = |f: Field| match value {
            Some(v) if v != f => false,
            _ => {
                value = Some(f);
                true
            }
        };
        for (i, &r) in rules.iter().enumerate() {
            let rule = &pack.rules[r];
            let scaled = |t: u64| match &rule.suspect {
                Some(s) => t.min(((t as f64 * s.factor).ceil() as u64).max(1)),
                None => t,
            };
            // Fewest records of the key that can make the rule fire.
            let need = match &rule.kind {
                RuleKind::Rate {
                    threshold,
                    distinct,
                    sequential,
                    ..
                } => {
                    if let Some(f) = distinct
                        && !one_value(*f)
                    {
                        return None;
                    }
                    if sequential.is_some() && !one_value(Field::Dst) {
                        return None;
                    }
                    scaled(*threshold)
                }
                // `k` disjoint windows of at least `lo` records each.
                RuleKind::NearLimit { lo, k, .. } => lo.saturating_mul(*k as u64),
                RuleKind::Ratio { min, .. } => {
                    if ratios == 4 {
                        return None;
                    }
                    ratio[i] = ratios;
                    ratios += 1;
                    *min
                }
                RuleKind::Unsubscribe { .. } => return None,
            };
            fewest = fewest.min(need);
        }
        let max = (fewest.saturating_sub(1) as usize).min(MAX_COLD);
        (max > 0).then_some(ColdPlan { max, value, ratio })
    }

    /// The event of `rec` for a cold key, if it can be kept compactly: its value all digits
    /// (up to 19) and its watermark within 49 days of it.
    pub fn event(&self, pack: &Pack, rules: &[usize], rec: &Record, wm: i64, wanted: u64) -> Option<Event> {
        let back = u32::try_from(rec.ts.checked_sub(wm)?).ok()?;
        let (val, len) = match self.value.map(|f| rec.field(f)) {
            None | Some(None) => (0, 0),
            Some(Some(v)) => (as_number(v)?, v.len() as u8),
        };
        let mut ratio = 0u8;
        for (i, &k) in self.ratio.iter().enumerate() {
            if k == u8::MAX || wanted & (1 << i) == 0 {
                continue;
            }
            let rule = &pack.rules[rules[i]];
            let RuleKind::Ratio { numerator, .. } = &rule.kind else {
                unreachable!("ratio slots are ratio rules")
            };
            ratio |= (matches(&rule.filter, rec) as u8) << (2 * k) | (matches(numerator, rec) as u8) << (2 * k + 1);
        }
        Some(Event {
            ts: rec.ts,
            val,
            back,
            wanted: wanted as u16,
            ratio,
            len,
        })
    }

    /// Whether a key holding `held` records can take one more and stay cold.
    pub fn room(&self, held: usize) -> bool {
        held < self.max
    }

    /// (filter matched, numerator matched) of ratio slot `i` for `e`.
    pub fn ratio_bits(&self, e: &Event, i: usize) -> (bool, bool) {
        let k = self.ratio[i];
        debug_assert!(k != u8::MAX, "slot {i} is not a ratio rule");
        (e.ratio >> (2 * k) & 1 == 1, e.ratio >> (2 * k + 1) & 1 == 1)
    }

    /// The slots a warm key would hold after running `log` (see the module docs).
    pub fn warm(&self, pack: &Pack, rules: &[usize], suspect_slot: &[Option<usize>], log: &[Event]) -> Box<[RuleSlot]> {
        let mut slots: Box<[RuleSlot]> = rules.iter().map(|_| empty_slot()).collect();
        for e in log {
            let input = step::Input::Cold(e, self);
            for i in 0..rules.len() {
                if e.wanted & (1 << i) != 0 {
                    let (hit, _) = step::step(pack, rules, suspect_slot, &mut slots, i, &input, e.wm());
                    debug_assert!(hit.is_none(), "a cold key's records fired rule {}", pack.rules[rules[i]].id);
                }
            }
        }
        slots
    }

    /// A watermark below which a cold key that holds `e` is certainly not idle (see
    /// [`idle`](Self::idle)): `i64::MIN` when `e` counts toward no window.
    pub fn busy_until(&self, pack: &Pack, rules: &[usize], e: &Event) -> i64 {
        let mut until = i64::MIN;
        let mut bits = e.wanted;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let rule = &pack.rules[rules[i]];
            if reads_value(rule) && e.len == 0 {
                continue;
            }
            let bin = idle_bin(rule, e.ts.div_euclid(rule.slide_ms));
            until = until.max(bin.saturating_mul(rule.slide_ms));
        }
        until
    }

    /// Whether a key holding `log` would be idle at `wm` once warmed (see `is_idle`),
    /// without warming it: each rule's window head is the latest bin it took a record in.
    ///
    /// `wm_bins[i]` is `wm`'s bin for rule slot `i` (found once per sweep, not per key).
    pub fn idle(&self, pack: &Pack, rules: &[usize], log: &[Event], wm_bins: &[i64]) -> bool {
        rules.iter().enumerate().all(|(i, &r)| {
            let rule = &pack.rules[r];
            let reads_value = reads_value(rule);
            // The latest event's bin: bins grow with time, so one division, not one per event.
            let Some(head) = log
                .iter()
                .filter(|e| e.wanted & (1 << i) != 0 && (!reads_value || e.len > 0))
                .map(|e| e.ts)
                .max()
                .map(|ts| ts.div_euclid(rule.slide_ms))
            else {
                return true;
            };
            wm_bins[i] >= idle_bin(rule, head)
        })
    }
}

/// Whether `rule` counts only records with a value (of the dim's distinct field): the
/// others it takes leave nothing in its window.
fn reads_value(rule: &Rule) -> bool {
    matches!(
        rule.kind,
        RuleKind::Rate { distinct: Some(_), .. } | RuleKind::Rate { sequential: Some(_), .. }
    )
}

/// The first watermark bin at which `rule`'s window, whose latest record fell in bin
/// `head`, holds nothing that matters: what [`BinRing::empty_from`] and
/// [`NearLimit::idle_bin`] give once the key is warm.
///
/// [`BinRing::empty_from`]: crate::window::BinRing::empty_from
/// [`NearLimit::idle_bin`]: crate::near_limit::NearLimit::idle_bin
fn idle_bin(rule: &Rule, head: i64) -> i64 {
    let w = rule.bins() as i64;
    match rule.kind {
        RuleKind::NearLimit { n, .. } => head + n as i64 * w + w + 1,
        _ => head + w,
    }
}

impl Engine {
    /// Warms every cold key: before a reload maps slots to another pack.
    pub(super) fn warm_all(&mut self) {
        let pack = Arc::clone(&self.pack);
        for ds in &mut self.dims {
            let Some(plan) = &ds.cold else { continue };
            for e in ds.table.iter_mut().filter(|e| e.is_cold()) {
                e.warm_up(plan, &pack, &ds.rules, &ds.suspect_slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::BinRing;

    proptest::proptest! {
        /// Numbers are read as the standard library reads 1 to 19 ASCII digits: digit strings
        /// up to past the limit, digits among their ASCII neighbours `/` and `:`, and short
        /// strings of any printable ASCII and a non-ASCII digit.
        #[test]
        fn numbers_are_read_as_the_standard_library_reads_them(s in "[0-9]{0,21}|[/-:]{1,20}|[ -~٣]{0,6}") {
            let want = (s.len() <= 19 && !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u64>().ok())
                .flatten();
            proptest::prop_assert_eq!(as_number(&s), want);
        }
    }

    #[test]
    fn an_event_is_24_bytes_and_one_is_held_inline() {
        assert_eq!(std::mem::size_of::<Event>(), 24);
        assert!(
            !Log::from_buf([Event {
                ts: 0,
                val: 0,
                back: 0,
                wanted: 0,
                ratio: 0,
                len: 0
            }])
            .spilled()
        );
        // The ring of a window holds its first bin inline too.
        let mut r = BinRing::new(60, 60);
        r.add(1, 1);
        assert_eq!(r.sum(), 1);
    }

    #[test]
    fn values_keep_their_leading_zeros() {
        let e = Event {
            ts: 5,
            val: 13800,
            back: 2,
            wanted: 1,
            ratio: 0,
            len: 7,
        };
        assert_eq!(e.value().as_deref(), Some("0013800"));
        assert_eq!(e.wm(), 3);
    }
}
