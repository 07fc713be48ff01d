//! JSON Lines: one record per line. Fields are borrowed from the line, so the only
//! allocation per record is the record's own buffer; a string with escapes is the one
//! exception (it must be unescaped).
//!
//! A line is first read by [`scan`], a scanner for the flat objects the contract's records
//! are (strings without escapes, numbers, `true`/`false`/`null`). Anything else it hands to
//! serde_json (escapes, nested values, duplicate fields, errors), which gives the same fields
//! where both read a line and says what is wrong where the scanner gave up.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Bad, Fields, RejectReason, Val};

/// The contract's fields, in the order of [`Raw`]'s slots.
const NAMES: [&str; 17] = super::FIELD_NAMES;

/// Each field's value as its raw JSON text; `None` when absent or null.
type Raw<'a> = [Option<&'a str>; NAMES.len()];

/// The fields of the contract as serde_json reads them, each as the raw JSON text of its
/// value. Unknown fields are ignored.
#[derive(Deserialize, Default)]
struct Line<'a> {
    #[serde(borrow)]
    ts: Option<&'a RawValue>,
    #[serde(borrow, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    src: Option<&'a RawValue>,
    #[serde(borrow)]
    dst: Option<&'a RawValue>,
    #[serde(borrow)]
    sig: Option<&'a RawValue>,
    #[serde(borrow)]
    text: Option<&'a RawValue>,
    #[serde(borrow)]
    tpl: Option<&'a RawValue>,
    #[serde(borrow)]
    sp: Option<&'a RawValue>,
    #[serde(borrow)]
    gw: Option<&'a RawValue>,
    #[serde(borrow)]
    cell: Option<&'a RawValue>,
    #[serde(borrow)]
    imei: Option<&'a RawValue>,
    #[serde(borrow, rename = "ref")]
    reference: Option<&'a RawValue>,
    #[serde(borrow)]
    status: Option<&'a RawValue>,
    #[serde(borrow)]
    err: Option<&'a RawValue>,
    #[serde(borrow)]
    answered: Option<&'a RawValue>,
    #[serde(borrow)]
    dur: Option<&'a RawValue>,
}

impl<'a> Line<'a> {
    fn raw(&self) -> Raw<'a> {
        [
            self.ts,
            self.kind,
            self.id,
            self.src,
            self.dst,
            self.sig,
            self.text,
            self.tpl,
            self.sp,
            self.gw,
            self.cell,
            self.imei,
            self.reference,
            self.status,
            self.err,
            self.answered,
            self.dur,
        ]
        .map(|v| v.map(RawValue::get))
    }
}

/// Bytes that end the fast reading of a string: its closing quote, an escape, and the
/// control characters JSON does not allow in one.
static STOPS: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// JSON's whitespace.
#[inline(always)]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\t' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// Where the string whose text starts at `i` ends (its closing quote); `None` at an escape,
/// a control character or the end of the line. Eight bytes at a time while none of them
/// stops it.
#[inline(always)]
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    while let Some(w) = b.get(i..i + 8) {
        let x = u64::from_le_bytes(w.try_into().expect("eight bytes"));
        let quote = x ^ (ONES * b'"' as u64);
        let escape = x ^ (ONES * b'\\' as u64);
        // The high bit of each byte that is a quote, a backslash or below 0x20 (exact for the
        // lowest such byte; a byte above it may be flagged too, so that one is checked).
        let hit = (quote.wrapping_sub(ONES) & !quote | escape.wrapping_sub(ONES) & !escape | x.wrapping_sub(ONES * 0x20) & !x) & HIGH;
        if hit == 0 {
            i += 8;
            continue;
        }
        i += hit.trailing_zeros() as usize / 8;
        let c = b[i];
        if STOPS[c as usize] {
            return (c == b'"').then_some(i);
        }
        i += 1;
    }
    while let Some(&c) = b.get(i) {
        if STOPS[c as usize] {
            return (c == b'"').then_some(i);
        }
        i += 1;
    }
    None
}

/// The key at `b[start..end]`: its place in [`NAMES`], found by its bytes as one
/// little-endian word matched against the names' words (no name is longer than eight bytes).
#[inline(always)]
fn key_slot(b: &[u8], start: usize, end: usize) -> Option<usize> {
    const fn word(name: &str) -> u64 {
        let b = name.as_bytes();
        let mut w = [0u8; 8];
        let mut i = 0;
        while i < b.len() {
            w[i] = b[i];
            i += 1;
        }
        u64::from_le_bytes(w)
    }
    const WORDS: [u64; NAMES.len()] = {
        let mut w = [0; NAMES.len()];
        let mut i = 0;
        while i < NAMES.len() {
            w[i] = word(NAMES[i]);
            i += 1;
        }
        w
    };
    let len = end - start;
    if len == 0 || len > 8 {
        return None;
    }
    let w = match b.get(start..start + 8) {
        // A line goes on past a key (`":`, a value, `}`), so there are nearly always eight
        // bytes to load at once, the ones past the key masked off. Copying the key into a
        // word instead (a call, then a load of what the call stored) was a quarter of the
        // scanner's time.
        Some(eight) => u64::from_le_bytes(eight.try_into().expect("eight bytes")) & (u64::MAX >> (64 - 8 * len)),
        None => {
            let mut w = [0u8; 8];
            w[..len].copy_from_slice(&b[start..end]);
            u64::from_le_bytes(w)
        }
    };
    WORDS.iter().position(|&n| n == w)
}

/// Digits from `i`; where they stop.
#[inline(always)]
fn digits(b: &[u8], mut i: usize) -> usize {
    while let Some(b'0'..=b'9') = b.get(i) {
        i += 1;
    }
    i
}

/// Where the scalar value starting at `i` ends; `None` for an object, an array, a string with
/// escapes, or anything that is not JSON.
#[inline(always)]
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    let word = |w: &[u8]| b[i..].starts_with(w).then_some(i + w.len());
    match *b.get(i)? {
        b'"' => string_end(b, i + 1).map(|e| e + 1),
        b't' => word(b"true"),
        b'f' => word(b"false"),
        b'n' => word(b"null"),
        b'-' | b'0'..=b'9' => {
            // -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
            let mut j = i + usize::from(b[i] == b'-');
            match b.get(j)? {
                b'0' => j += 1,
                b'1'..=b'9' => j = digits(b, j + 1),
                _ => return None,
            }
            if b.get(j) == Some(&b'.') {
                let k = digits(b, j + 1);
                if k == j + 1 {
                    return None;
                }
                j = k;
            }
            if let Some(b'e' | b'E') = b.get(j) {
                j += 1;
                if let Some(b'+' | b'-') = b.get(j) {
                    j += 1;
                }
                let k = digits(b, j);
                if k == j {
                    return None;
                }
                j = k;
            }
            Some(j)
        }
        _ => None,
    }
}

/// The fields of a flat JSON object whose strings have no escapes, with what serde_json would
/// give for it; `None` for any other line (serde_json reads those).
fn scan(line: &str) -> Option<Raw<'_>> {
    let b = line.as_bytes();
    let mut raw: Raw<'_> = [None; NAMES.len()];
    let mut seen = 0u32;
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            if b.get(i) != Some(&b'"') {
                return None;
            }
            let key_end = string_end(b, i + 1)?;
            let key_start = i + 1;
            i = skip_ws(b, key_end + 1);
            if b.get(i) != Some(&b':') {
                return None;
            }
            let start = skip_ws(b, i + 1);
            i = value_end(b, start)?;
            if let Some(s) = key_slot(b, key_start, key_end) {
                if seen & 1 << s != 0 {
                    // serde_json calls a second one an error.
                    return None;
                }
                seen |= 1 << s;
                // A null is an absent field, as serde_json reads an `Option`.
                raw[s] = (b[start] != b'n').then(|| &line[start..i]);
            }
            i = skip_ws(b, i);
            match b.get(i) {
                Some(b',') => i = skip_ws(b, i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (skip_ws(b, i) == b.len()).then_some(raw)
}

/// One parsed line, ready for [`super::assemble`].
pub struct JsonFields<'a> {
    line: &'a str,
    raw: Raw<'a>,
    /// Whether a string may hold escapes: not when the scanner read the line (it leaves
    /// lines with a backslash in a string to serde_json).
    escapes: bool,
}

impl<'a> JsonFields<'a> {
    /// Parses a line; a syntax error becomes a `malformed` reject at its column.
    pub fn parse(line: &'a str) -> Result<Self, Bad> {
        match scan(line) {
            Some(raw) => Ok(JsonFields { line, raw, escapes: false }),
            None => Self::parse_serde(line),
        }
    }

    /// [`parse`](Self::parse) by serde_json alone.
    fn parse_serde(line: &'a str) -> Result<Self, Bad> {
        match serde_json::from_str::<Line<'a>>(line) {
            Ok(raw) => Ok(JsonFields {
                line,
                raw: raw.raw(),
                escapes: true,
            }),
            Err(e) => {
                let msg = e.to_string();
                let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
                Err(Bad {
                    reason: RejectReason::Malformed,
                    field: None,
                    col: Some(e.column() as u64),
                    detail: format!("invalid JSON: {msg}"),
                })
            }
        }
    }

    /// A value's byte offset in the line.
    fn offset_of(&self, v: &str) -> u64 {
        (v.as_ptr() as usize - self.line.as_ptr() as usize) as u64
    }
}

impl<'a> Fields<'a> for JsonFields<'a> {
    /// Positions are byte offsets in the line; the column counts characters.
    fn col(&self, at: Option<u64>) -> Option<u64> {
        let off = (at? as usize).min(self.line.len());
        Some(self.line[..off].chars().count() as u64 + 1)
    }

    #[inline]
    fn get(&mut self, field: usize) -> Result<Option<(Val<'a>, Option<u64>)>, Bad> {
        match self.raw.get(field).copied().flatten() {
            None => Ok(None),
            Some(raw) => self.value(NAMES[field], raw),
        }
    }
}

impl<'a> JsonFields<'a> {
    /// The value of field `name`, whose raw JSON text is `raw`.
    fn value(&self, name: &'static str, text: &'a str) -> Result<Option<(Val<'a>, Option<u64>)>, Bad> {
        let at = Some(self.offset_of(text));
        let bad_type = |what: &str| Bad {
            reason: RejectReason::BadType,
            field: Some(name),
            col: at,
            detail: format!("`{name}` is {what}"),
        };
        let v = match text.as_bytes()[0] {
            // The parse above checked the string: without a backslash its text between the
            // quotes is its value, borrowed with no second pass over it (none at all when the
            // scanner read the line).
            b'"' if !self.escapes || !text.as_bytes().contains(&b'\\') => Val::Str(Cow::Borrowed(&text[1..text.len() - 1])),
            b'"' => Val::Str(serde_json::from_str::<Cow<'a, str>>(text).map_err(|_| bad_type("not a valid string"))?),
            b'n' => return Ok(None),
            b't' => Val::Bool(true),
            b'f' => Val::Bool(false),
            b'{' => return Err(bad_type("an object")),
            b'[' => return Err(bad_type("an array")),
            _ => match text.parse::<i64>() {
                Ok(i) => Val::Int(i),
                Err(_) => Val::Float(text.parse::<f64>().map_err(|_| bad_type("an unreadable number"))?),
            },
        };
        Ok(Some((v, at)))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn str_of<'a>(f: &mut JsonFields<'a>, name: &'static str) -> Cow<'a, str> {
        match f.get(crate::decode::field_index(name).expect("a field")) {
            Ok(Some((Val::Str(s), _))) => s,
            other => panic!(
                "`{name}`: expected a string, got {:?}",
                other.map(|v| v.map(|(v, _)| v.type_name()))
            ),
        }
    }

    #[test]
    fn strings_without_escapes_are_borrowed_and_others_unescaped() {
        let line = r#"{"ts":1,"type":"sms","text":"双11 \"特惠\" \u4e2d\n","sig":"【店】","src":"13800000000"}"#;
        let mut f = JsonFields::parse(line).expect("valid line");
        let text = str_of(&mut f, "text");
        assert_eq!(text, "双11 \"特惠\" 中\n");
        assert!(matches!(text, Cow::Owned(_)), "an escaped string is unescaped into a copy");
        for (name, want) in [("sig", "【店】"), ("src", "13800000000")] {
            let v = str_of(&mut f, name);
            assert_eq!(v, want);
            assert!(matches!(v, Cow::Borrowed(_)), "`{name}` has no escape: borrowed from the line");
        }
        let empty = JsonFields::parse(r#"{"id":""}"#)
            .expect("valid line")
            .get(crate::decode::field_index("id").expect("a field"))
            .expect("a value");
        assert!(matches!(empty, Some((Val::Str(Cow::Borrowed("")), Some(6)))));
    }

    /// Each field as (byte offset, raw text), to compare two readings of one line.
    fn placed(f: &JsonFields<'_>) -> Vec<Option<(u64, String)>> {
        f.raw.iter().map(|v| v.map(|v| (f.offset_of(v), v.to_string()))).collect()
    }

    /// A piece of a line and whether the scanner must read it: (text, plain).
    type Piece = (String, bool);

    fn key() -> impl Strategy<Value = Piece> {
        prop_oneof![
            30 => prop::sample::select(NAMES.to_vec()).prop_map(|k| (format!("\"{k}\""), true)),
            6 => prop::sample::select(vec!["x", "Ts", "texts", "", "类型"]).prop_map(|k| (format!("\"{k}\""), true)),
            1 => Just(("\"t\\u0073\"".to_string(), false)),
            1 => Just(("ts".to_string(), false)),
        ]
    }

    fn string() -> impl Strategy<Value = Piece> {
        let text = || "[a-z0-9 【】双十一退订，。!#/~\u{7f}\u{3000}]{0,12}";
        let plain = text().prop_map(|s| (format!("\"{s}\""), true));
        // An escape or a control character anywhere in a string, or no closing quote.
        let odd = (
            text(),
            prop::sample::select(vec!["\\\"", "\\n", "\\u4e2d", "\\x", "\t", "\u{1}", "\u{1f}", "\\"]),
            text(),
        )
            .prop_map(|(a, o, b)| (format!("\"{a}{o}{b}\""), false));
        let open = text().prop_map(|s| (format!("\"{s}"), false));
        prop_oneof![30 => plain, 2 => odd, 1 => open]
    }

    fn number() -> impl Strategy<Value = Piece> {
        let good = "-?(0|[1-9][0-9]{0,12})(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,3})?".prop_map(|s| (s, true));
        let any = "[-+]?[0-9]{0,3}\\.?[0-9]{0,2}([eE][+-]?)?[0-9]{0,2}".prop_map(|s| (s, false));
        prop_oneof![10 => good, 1 => any]
    }

    fn value() -> impl Strategy<Value = Piece> {
        let word = prop::sample::select(vec!["true", "false", "null"]).prop_map(|s| (s.to_string(), true));
        let odd = prop::sample::select(vec!["tru", "nul", "True", "{}", "{\"a\":1}", "[1,\"x\"]", "[]", "x", ""])
            .prop_map(|s| (s.to_string(), false));
        prop_oneof![12 => string(), 12 => number(), 8 => word, 1 => odd]
    }

    fn ws() -> impl Strategy<Value = Piece> {
        prop_oneof![
            60 => Just((String::new(), true)),
            20 => prop::sample::select(vec![" ", "\t", "\r\n ", "  "]).prop_map(|s| (s.to_string(), true)),
            1 => prop::sample::select(vec!["\u{c}", "\u{3000}", "\u{a0}"]).prop_map(|s| (s.to_string(), false)),
        ]
    }

    /// Lines of the contract's shape and near it: fields in any order, unknown ones,
    /// duplicates, whitespace, escapes, nested values, bad numbers and broken structure.
    fn line() -> impl Strategy<Value = (String, bool)> {
        let member = (ws(), key(), ws(), ws(), value(), ws());
        let sep = prop_oneof![60 => Just((",".to_string(), true)), 1 => Just((String::new(), false)), 1 => Just((",,".to_string(), false))];
        let end = prop_oneof![
            30 => Just((String::new(), true)),
            1 => prop::sample::select(vec!["x", "}", ",", "{}"]).prop_map(|s| (s.to_string(), false)),
        ];
        (
            ws(),
            prop::collection::vec((member, sep), 0..8),
            ws(),
            prop::bool::weighted(0.97),
            end,
        )
            .prop_map(|(lead, members, trail, close, end)| {
                let mut s = lead.0;
                let mut plain = lead.1 && close && end.1;
                s.push('{');
                let mut names = std::collections::HashSet::new();
                let n = members.len();
                for (i, ((w1, k, w2, w3, v, w4), sep)) in members.into_iter().enumerate() {
                    for p in [&w1, &k, &w2] {
                        s.push_str(&p.0);
                        plain &= p.1;
                    }
                    s.push(':');
                    for p in [&w3, &v, &w4] {
                        s.push_str(&p.0);
                        plain &= p.1;
                    }
                    if NAMES.contains(&k.0.trim_matches('"')) && !names.insert(k.0.clone()) {
                        plain = false;
                    }
                    if i + 1 < n {
                        s.push_str(&sep.0);
                        plain &= sep.1;
                    }
                }
                s.push_str(&trail.0);
                plain &= trail.1;
                if close {
                    s.push('}');
                }
                s.push_str(&end.0);
                (s, plain)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// The scanner against serde_json alone: wherever it reads a line it gives the same
        /// fields at the same places, and it reads every plain line.
        #[test]
        fn the_scanner_reads_what_serde_json_reads((line, plain) in line()) {
            let serde = JsonFields::parse_serde(&line);
            match scan(&line) {
                Some(raw) => {
                    let fast = JsonFields { line: &line, raw, escapes: false };
                    let serde = serde.map_err(|b| b.detail);
                    prop_assert!(serde.is_ok(), "scanned, but serde_json says {:?}", serde.err());
                    prop_assert_eq!(placed(&fast), placed(&serde.unwrap()));
                }
                None => {
                    prop_assert!(!plain, "a plain line was left to serde_json: {}", line);
                    let parsed = JsonFields::parse(&line).map(|f| placed(&f));
                    prop_assert_eq!(parsed, serde.map(|f| placed(&f)));
                }
            }
        }
    }

    /// The three tables of the fields agree: `get`'s names, the scanner's words and serde's
    /// struct (the last through the property test above).
    #[test]
    fn each_name_has_its_slot() {
        for (i, name) in NAMES.iter().enumerate() {
            // At the end of the buffer (copied), and with a line going on after it (loaded
            // eight bytes at a time, the rest masked off).
            assert_eq!(key_slot(name.as_bytes(), 0, name.len()), Some(i), "{name}");
            let line = format!("\"{name}\":\"ts\",\"type\":1}}");
            assert_eq!(key_slot(line.as_bytes(), 1, 1 + name.len()), Some(i), "{name} in {line}");
        }
        assert_eq!(key_slot(b"tsx", 0, 3), None);
        assert_eq!(key_slot(b"\"tsx\":1,\"a\":2}", 1, 4), None);
        assert_eq!(key_slot(b"answered1", 0, 9), None);
        assert_eq!(key_slot(b"\"answered1\":true}", 1, 10), None);
        assert_eq!(key_slot(b"\"\":1}", 1, 1), None);
    }

    #[test]
    fn the_contracts_records_are_scanned() {
        for line in [
            r#"{"ts":1794268800292,"type":"sms","id":"a276.2","src":"16853378933","dst":"13496461186","text":"好的，明天见","cell":"46000-00665","imei":"862100793479820"}"#,
            r#"{"ts":1794268800000,"type":"call","id":"a276.1","src":"18372891181","dst":"13434497988","answered":true,"dur":579.5}"#,
            r#"{ "ts": -1.5e3, "type": "dlr", "ref": "r1", "status": "DELIVRD", "err": null, "extra": "x" }"#,
        ] {
            let raw = scan(line).unwrap_or_else(|| panic!("not scanned: {line}"));
            let serde = JsonFields::parse_serde(line).expect("valid line");
            assert_eq!(placed(&JsonFields { line, raw, escapes: false }), placed(&serde));
        }
        for line in [
            r#"{"ts":1,"ts":2}"#,
            r#"{"ts":01}"#,
            r#"{"ts":1}x"#,
            r#"{"text":"a\"b"}"#,
            r#"{"a":{}}"#,
        ] {
            assert!(scan(line).is_none(), "{line} is serde_json's to read");
        }
    }

    #[test]
    fn a_raw_control_character_in_a_string_is_malformed() {
        let bad = JsonFields::parse("{\"ts\":1,\"text\":\"a\tb\"}")
            .err()
            .expect("a tab must be escaped in JSON");
        assert_eq!(bad.reason, RejectReason::Malformed);
        assert!(bad.detail.contains("control character"), "{}", bad.detail);
        assert!(bad.col.is_some());
    }
}
