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
/// Borrows when there is nothing to fold: content classes match ASCII case-insensitively and
/// fingerprints skip ASCII letters, so neither needs a copy. Works on the UTF-8 bytes: a
/// full-width form is `EF BC 81`..`EF BD 9E`, the ideographic space `E3 80 80`, and each
/// folds to one ASCII byte, so a text is copied in runs between them.
pub fn fold_width(text: &str) -> std::borrow::Cow<'_, str> {
    let b = text.as_bytes();
    let Some(mut at) = next_wide(b, 0) else {
        return std::borrow::Cow::Borrowed(text);
    };
    let mut out = Vec::with_capacity(b.len());
    let mut copied = 0;
    loop {
        out.extend_from_slice(&b[copied..at]);
        out.push(wide_to_ascii(b, at));
        copied = at + 3;
        match next_wide(b, copied) {
            Some(next) => at = next,
            None => break,
        }
    }
    out.extend_from_slice(&b[copied..]);
    // Whole characters were replaced by ASCII bytes between whole characters.
    std::borrow::Cow::Owned(String::from_utf8(out).expect("UTF-8 folded by whole characters"))
}

/// The ASCII byte the full-width form or ideographic space at `b[at..at + 3]` folds to.
fn wide_to_ascii(b: &[u8], at: usize) -> u8 {
    match b[at + 1] {
        // U+FF01..U+FF3F: `EF BC 81..BF`, to 0x21..0x5F.
        0xBC => 0x20 + (b[at + 2] & 0x3F),
        // U+FF40..U+FF5E: `EF BD 80..9E`, to 0x60..0x7E.
        0xBD => 0x60 + (b[at + 2] & 0x3F),
        // U+3000.
        _ => b' ',
    }
}

/// Where the next full-width form or ideographic space starts in `b` at or after `from`.
fn next_wide(b: &[u8], mut from: usize) -> Option<usize> {
    while let Some(p) = memchr::memchr2(0xEF, 0xE3, &b[from..]) {
        let at = from + p;
        match (b[at], b.get(at + 1), b.get(at + 2)) {
            (0xEF, Some(0xBC), Some(0x81..=0xBF)) | (0xEF, Some(0xBD), Some(0x80..=0x9E)) | (0xE3, Some(0x80), Some(0x80)) => {
                return Some(at);
            }
            _ => from = at + 1,
        }
    }
    None
}

/// Whether `c` is punctuation or a space a sender might add or drop without changing what a
/// message says (ASCII or CJK).
#[inline]
fn is_noise(c: char) -> bool {
    // CJK ideographs, most of a Chinese text, are none of these.
    if ('\u{4E00}'..='\u{9FFF}').contains(&c) {
        return false;
    }
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
    /// The ASCII bytes (lower case) that occur in some term: a full-width form folds to one
    /// of them or does not matter to a match.
    term_bytes: [bool; 128],
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
        let mut term_bytes = [false; 128];
        for b in patterns.iter().flat_map(|p| p.bytes()).filter(u8::is_ascii) {
            term_bytes[b.to_ascii_lowercase() as usize] = true;
        }
        Lexicon {
            term_bytes,
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

    /// [`classify`](Self::classify) of the text with full-width forms folded, folding only
    /// when it changes a match. Terms are valid UTF-8 without full-width forms, so they match
    /// whole characters only, and a form whose ASCII is in no term cannot be part of a match
    /// either way: `，` (most Chinese texts have one) is left as it is unless a term has `,`.
    pub fn classify_text(&self, text: &str) -> u8 {
        if self.ac.is_none() {
            return 0;
        }
        let b = text.as_bytes();
        let mut from = 0;
        while let Some(at) = next_wide(b, from) {
            if self.term_bytes[wide_to_ascii(b, at).to_ascii_lowercase() as usize] {
                return self.classify(&fold_width(text));
            }
            from = at + 3;
        }
        self.classify(text)
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
///
/// The text may be folded ([`fold_width`]) or not: a full-width form is skipped like the
/// ASCII letter, digit or punctuation it folds to.
pub fn fingerprint(text: &str) -> Option<u64> {
    let mut win = [0u32; 3];
    let mut n = 0usize;
    let mut min = u64::MAX;
    for c in text.chars() {
        if is_noise(c) || c.is_ascii_alphanumeric() || ('\u{FF01}'..='\u{FF5E}').contains(&c) {
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
    use proptest::prelude::*;

    use super::*;

    /// [`fold_width`] by characters, as it was first written.
    fn fold_by_chars(text: &str) -> String {
        text.chars()
            .map(|c| match c {
                '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
                '\u{3000}' => ' ',
                c => c,
            })
            .collect()
    }

    static LEXICONS: std::sync::LazyLock<Vec<Lexicon>> = std::sync::LazyLock::new(|| {
        let lx = |classes: &[(&str, &[&str], u32)]| {
            Lexicon::new(
                classes
                    .iter()
                    .map(|(n, terms, min)| (n.to_string(), terms.iter().map(|t| normalize(t)).collect(), *min))
                    .collect(),
            )
        };
        vec![
            lx(&[("m", &["领券", "t.cn/", "回t", "退订"], 2), ("f", &["佣金", "a,b", "x y"], 1)]),
            lx(&[("cjk", &["领券", "抢购", "双十一"], 1)]),
            lx(&[("ascii", &["ab", "1!", ":/"], 1), ("wide", &["ＡＢ", "。"], 1)]),
        ]
    });

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Byte-wise folding against folding by characters, on texts rich in the neighbours
        /// of the folded forms (`EF`- and `E3`-led characters that are not folded).
        #[test]
        fn folding_by_bytes_folds_as_by_characters(
            text in "[a-zA-Z0-9 ，。【】双十一\u{FF00}-\u{FF60}\u{FFE0}-\u{FFEE}\u{3000}-\u{3003}\u{2FFF}\u{F900}\u{FB01}\u{E000}]{0,40}"
        ) {
            let folded = fold_width(&text);
            prop_assert_eq!(folded.as_ref(), fold_by_chars(&text));
            prop_assert_eq!(matches!(folded, std::borrow::Cow::Borrowed(_)), fold_by_chars(&text) == text);
        }

        /// Classes and fingerprints of a text as it came equal those of the folded text,
        /// with terms that have ASCII letters, punctuation and a space, and others that
        /// have none.
        #[test]
        fn features_of_the_unfolded_text_are_those_of_the_folded_one(
            text in "[a-zA-Z0-9 .,/:!，。【】领券退订抢购双十一佣金\u{FF01}-\u{FF5E}\u{3000}\u{3002}]{0,30}"
        ) {
            let folded = fold_width(&text);
            for lx in &*LEXICONS {
                prop_assert_eq!(lx.classify_text(&text), lx.classify(&folded), "{}", text);
            }
            prop_assert_eq!(fingerprint(&text), fingerprint(&folded));
        }
    }

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
