//! Message text as rules see it: normalised (width, case), matched against the pack's
//! content classes, compared with unsubscribe words, and fingerprinted for near-duplicates.
//!
//! The same functions normalise the pack's terms at compile time and the records' texts at
//! run time, so `ＴＤ`, `td` and ` TD ` are all the word `td`.

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

/// Folds full-width ASCII (`Ａ`..`～`) and the ideographic space to ASCII, and ASCII letters
/// to lower case.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let c = match c {
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            '\u{3000}' => ' ',
            c => c,
        };
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Full-width forms folded to ASCII (the ideographic space to a space); ASCII case kept.
/// Borrows when there is nothing to fold, as in almost every message: content classes match
/// ASCII case-insensitively and fingerprints skip ASCII letters, so neither needs a copy.
pub fn fold_width(text: &str) -> std::borrow::Cow<'_, str> {
    let wide = |c: char| matches!(c, '\u{FF01}'..='\u{FF5E}' | '\u{3000}');
    if !text.chars().any(wide) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(|c| match c {
                '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
                '\u{3000}' => ' ',
                c => c,
            })
            .collect(),
    )
}

/// Whether `c` is punctuation or a space a sender might add or drop without changing what a
/// message says (ASCII or CJK).
fn is_noise(c: char) -> bool {
    c.is_whitespace()
        || c.is_ascii_punctuation()
        || matches!(
            c,
            '，' | '。'
                | '！'
                | '？'
                | '、'
                | '；'
                | '：'
                | '～'
                | '·'
                | '…'
                | '“'
                | '”'
                | '‘'
                | '’'
                | '（'
                | '）'
                | '【'
                | '】'
                | '《'
                | '》'
        )
}

/// The text reduced to what an unsubscribe word is compared on: normalised, with noise
/// characters removed (`" TD "`, `"ＴＤ"`, `"td!"` all give `"td"`).
pub fn bare(text: &str) -> String {
    normalize(text).chars().filter(|c| !is_noise(*c)).collect()
}

/// Named content classes: a text belongs to a class when at least `min` of the class's
/// distinct terms occur in it (after [`normalize`]).
#[derive(Debug, Clone)]
pub struct Lexicon {
    /// (name, min) per class, in pack order; class `i` is bit `1 << i`.
    pub classes: Vec<(String, u32)>,
    /// Per automaton pattern: the class it belongs to.
    term_class: Vec<u8>,
    ac: Option<AhoCorasick>,
}

/// Most content classes a pack may define (one bit each in a `u8`).
pub const MAX_CLASSES: usize = 8;

impl Lexicon {
    /// Builds the matcher; `classes` = (name, normalised terms, min).
    pub fn new(classes: Vec<(String, Vec<String>, u32)>) -> Lexicon {
        let mut patterns = Vec::new();
        let mut term_class = Vec::new();
        for (i, (_, terms, _)) in classes.iter().enumerate() {
            for t in terms {
                patterns.push(t.clone());
                term_class.push(i as u8);
            }
        }
        let ac = (!patterns.is_empty()).then(|| {
            AhoCorasick::builder()
                // A full DFA: a few KiB for a pack's terms, and the fastest overlapping search
                // (content classes are computed for every message).
                .kind(Some(AhoCorasickKind::DFA))
                .match_kind(MatchKind::Standard)
                .ascii_case_insensitive(true)
                .build(&patterns)
                .expect("terms are plain strings")
        });
        Lexicon {
            classes: classes.into_iter().map(|(n, _, m)| (n, m)).collect(),
            term_class,
            ac,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    /// Bit of the class named `name`.
    pub fn bit(&self, name: &str) -> Option<u8> {
        self.classes.iter().position(|(n, _)| n == name).map(|i| 1 << i)
    }

    /// The classes a text belongs to, as a bit mask. The text needs full-width forms folded
    /// ([`fold_width`]); ASCII case does not matter.
    pub fn classify(&self, normalized: &str) -> u8 {
        let Some(ac) = &self.ac else { return 0 };
        // Distinct terms seen, per class (terms of a class are few: a bit set of pattern ids).
        let mut seen: u128 = 0;
        let mut counts = [0u32; MAX_CLASSES];
        for m in ac.find_overlapping_iter(normalized) {
            let p = m.pattern().as_usize();
            let new = if p < 128 {
                let b = 1u128 << p;
                let fresh = seen & b == 0;
                seen |= b;
                fresh
            } else {
                true
            };
            if new {
                counts[self.term_class[p] as usize] += 1;
            }
        }
        let mut mask = 0;
        for (i, (_, min)) in self.classes.iter().enumerate() {
            if counts[i] >= *min {
                mask |= 1 << i;
            }
        }
        mask
    }
}

/// A content fingerprint robust to small edits: MinHash over character 3-grams of the text
/// with digits, Latin letters and noise removed (so fresh codes, links, ids, added
/// punctuation and spaces change nothing). Two texts share it with probability equal to the
/// Jaccard similarity of their 3-gram sets; a one-word synonym swap in a 30-character
/// message keeps that near 0.8, so a sender's messages mostly share one value. `None` for
/// texts with fewer than [`FINGERPRINT_MIN_CHARS`] such characters: short everyday texts
/// ("在吗", "到家了吗") are common to everyone and say nothing about a common origin.
pub fn fingerprint(normalized: &str) -> Option<u64> {
    let mut win = [0u32; 3];
    let mut n = 0usize;
    let mut min = u64::MAX;
    for c in normalized.chars() {
        if is_noise(c) || c.is_ascii_alphanumeric() {
            continue;
        }
        win = [win[1], win[2], c as u32];
        n += 1;
        if n >= 3 {
            let mut b = [0u8; 12];
            for (i, w) in win.iter().enumerate() {
                b[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
            min = min.min(xxhash_rust::xxh3::xxh3_64_with_seed(&b, 0x5eed));
        }
    }
    (n >= FINGERPRINT_MIN_CHARS).then_some(min)
}

/// Fewest significant characters a text needs to have a fingerprint.
pub const FINGERPRINT_MIN_CHARS: usize = 10;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn width_and_case_fold() {
        assert_eq!(normalize("ＴＤ Ab　退订"), "td ab 退订");
        assert_eq!(bare(" ＴＤ! "), "td");
        assert_eq!(bare("退订。"), "退订");
    }

    #[test]
    fn classes_need_min_distinct_terms() {
        let lx = Lexicon::new(vec![
            ("marketing".into(), vec!["退订".into(), "t.cn/".into(), "领券".into()], 2),
            ("fraud".into(), vec!["刷单".into()], 1),
        ]);
        assert_eq!(lx.classify(&normalize("领券 T.CN/abc 回T退订")), 1);
        assert_eq!(lx.classify(&normalize("退订 退订")), 0, "one term twice is one term");
        assert_eq!(lx.classify(&normalize("兼职刷单，t.cn/x 退订")), 3);
        assert_eq!(lx.bit("fraud"), Some(2));
    }

    fn lx_case() -> Lexicon {
        Lexicon::new(vec![("m".into(), vec!["领券".into(), "t.cn/".into()], 2)])
    }

    #[test]
    fn fingerprint_ignores_digits_links_and_noise() {
        assert_eq!(lx_case().classify(&fold_width("领券 T.CN/abc")), 1, "ASCII case does not matter");
        assert!(matches!(fold_width("no wide forms"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(fold_width("ＴＤ　x"), "TD x");
        let a = fingerprint(&normalize("您的快递因地址不详被退回，请点击 t.cn/AbC123 重新填写，单号1234"));
        let b = fingerprint(&normalize("您的快递因地址不详被退回 请点击t.cn/zzz9 重新填写~单号98"));
        assert_eq!(a, b);
        assert_ne!(a, fingerprint(&normalize("晚上一起吃饭吗，我在路上了")));
        assert_eq!(fingerprint("ab 12"), None);
    }
}
