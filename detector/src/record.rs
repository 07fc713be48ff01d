//! The record model of `contract/records.md`, decoded and enriched.
//!
//! A [`Record`] keeps all its string fields in one buffer with a span per field, so decoding
//! costs one allocation per record, not one per field. Derived fields (the signature taken
//! from `【…】`, the port, the registry's `sp`) are spans too.

use anning_rules::text::{Lexicon, bare, fingerprint};
use anning_rules::{AddrClass, DlrStatus, Field, NumberPlan, Pack, PortClass, RecordKind};

use crate::filter::{Traits, wants};
use crate::registry::Registry;

/// The string slots of a record: the keyable [`Field`]s first, then the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Slot {
    Port,
    Sig,
    Src,
    Dst,
    Sp,
    Cell,
    Imei,
    Gw,
    Tpl,
    /// Derived: the content fingerprint, 16 hex digits.
    Fp,
    Id,
    Text,
    Ref,
    Err,
}

const SLOTS: usize = 14;

/// The contract's string fields and the slots they are kept in.
pub const STRING_FIELDS: [(&str, Slot); 12] = [
    ("id", Slot::Id),
    ("src", Slot::Src),
    ("dst", Slot::Dst),
    ("sig", Slot::Sig),
    ("text", Slot::Text),
    ("tpl", Slot::Tpl),
    ("sp", Slot::Sp),
    ("gw", Slot::Gw),
    ("cell", Slot::Cell),
    ("imei", Slot::Imei),
    ("ref", Slot::Ref),
    ("err", Slot::Err),
];
const ABSENT: (u32, u32) = (u32::MAX, 0);

impl Slot {
    pub fn of(field: Field) -> Slot {
        match field {
            Field::Port => Slot::Port,
            Field::Sig => Slot::Sig,
            Field::Src => Slot::Src,
            Field::Dst => Slot::Dst,
            Field::Sp => Slot::Sp,
            Field::Cell => Slot::Cell,
            Field::Imei => Slot::Imei,
            Field::Gw => Slot::Gw,
            Field::Tpl => Slot::Tpl,
            Field::Fp => Slot::Fp,
        }
    }
}

/// One decoded, enriched input record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Event time, ms since the Unix epoch (UTC).
    pub ts: i64,
    pub kind: RecordKind,
    /// `dlr` only.
    pub status: Option<DlrStatus>,
    /// `call` only.
    pub answered: Option<bool>,
    /// `call` only: seconds of conversation.
    pub dur: Option<f64>,
    /// Number-plan class of `src` (`Other` when absent).
    pub src_class: AddrClass,
    /// Number-plan class of `dst` (`Other` when absent).
    pub dst_class: AddrClass,
    /// Registry class of the record's port; `Unknown` when it has none or it is unregistered.
    pub port_class: PortClass,
    /// The pack's content classes the text belongs to (bit mask).
    pub content: u8,
    /// `sms` from a port with a signature: whether the registry licenses the signature on
    /// the port (an unregistered port licenses nothing).
    pub licensed: Option<bool>,
    /// An `sms` from a subscriber to a port whose text is one of the pack's unsubscribe words.
    pub unsubscribe: bool,
    /// All string fields, back to back.
    buf: Box<str>,
    /// (start, len) into `buf` per [`Slot`]; start = `u32::MAX` when absent.
    spans: [(u32, u32); SLOTS],
}

impl Record {
    pub fn get(&self, slot: Slot) -> Option<&str> {
        let (start, len) = self.spans[slot as usize];
        if start == u32::MAX {
            return None;
        }
        Some(&self.buf[start as usize..(start + len) as usize])
    }

    pub fn field(&self, f: Field) -> Option<&str> {
        self.get(Slot::of(f))
    }

    /// Where field `f`'s text starts in memory, found without reading it: for prefetching.
    pub(crate) fn field_addr(&self, f: Field) -> Option<usize> {
        let (start, _) = self.spans[Slot::of(f) as usize];
        (start != u32::MAX).then(|| self.buf.as_ptr() as usize + start as usize)
    }

    pub fn src(&self) -> Option<&str> {
        self.get(Slot::Src)
    }

    pub fn dst(&self) -> Option<&str> {
        self.get(Slot::Dst)
    }

    pub fn id(&self) -> Option<&str> {
        self.get(Slot::Id)
    }

    /// Sets string fields with `set` and enriches the record again (derived fields are
    /// recomputed from the given ones). For joins made after decoding.
    pub fn rebuild(&self, en: Enricher<'_>, set: impl FnOnce(&mut RecordBuilder)) -> Record {
        let mut b = RecordBuilder::default();
        for (_, slot) in STRING_FIELDS {
            if let Some(v) = self.get(slot) {
                b.set(slot, v);
            }
        }
        set(&mut b);
        b.finish(en, self.ts, self.kind, self.status, self.answered, self.dur)
    }

    /// The record as a contract JSON object (the signature only when given or derived).
    pub fn to_json(&self) -> String {
        let mut m = serde_json::Map::new();
        m.insert("ts".into(), self.ts.into());
        m.insert("type".into(), self.kind.name().into());
        for (name, slot) in STRING_FIELDS {
            if let Some(v) = self.get(slot) {
                m.insert(name.into(), v.into());
            }
        }
        if let Some(s) = self.status {
            m.insert("status".into(), s.name().into());
        }
        if let Some(a) = self.answered {
            m.insert("answered".into(), a.into());
        }
        if let Some(d) = self.dur {
            m.insert("dur".into(), d.into());
        }
        serde_json::Value::Object(m).to_string()
    }
}

/// Builds records: fields are appended to one reusable buffer, then [`finish`](Self::finish)
/// enriches them and copies the buffer out once.
#[derive(Debug)]
pub struct RecordBuilder {
    buf: String,
    spans: [(u32, u32); SLOTS],
}

impl Default for RecordBuilder {
    fn default() -> Self {
        RecordBuilder {
            buf: String::with_capacity(256),
            spans: [ABSENT; SLOTS],
        }
    }
}

/// What enrichment needs: the pack's number plan, content classes and unsubscribe words,
/// and the port registry.
#[derive(Clone, Copy)]
pub struct Enricher<'a> {
    pub plan: &'a NumberPlan,
    pub registry: &'a Registry,
    pub lexicon: &'a Lexicon,
    pub unsubscribe: &'a [String],
    /// The pack's rules, and those that read the content fingerprint
    /// ([`Pack::reading_fingerprint`]): a record gets one only when one of them wants it.
    pub rules: &'a [anning_rules::Rule],
    pub fingerprint: &'a [usize],
}

impl<'a> Enricher<'a> {
    pub fn new(pack: &'a Pack, registry: &'a Registry) -> Self {
        Enricher {
            plan: &pack.number_plan,
            registry,
            lexicon: &pack.lexicon,
            unsubscribe: &pack.unsubscribe_words,
            rules: &pack.rules,
            fingerprint: &pack.fingerprint_rules,
        }
    }
}

impl RecordBuilder {
    /// Starts a new record, dropping any fields set before.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.spans = [ABSENT; SLOTS];
    }

    pub fn set(&mut self, slot: Slot, value: &str) {
        let start = self.buf.len() as u32;
        self.buf.push_str(value);
        self.spans[slot as usize] = (start, value.len() as u32);
    }

    pub fn has(&self, slot: Slot) -> bool {
        self.spans[slot as usize].0 != u32::MAX
    }

    fn get(&self, slot: Slot) -> Option<&str> {
        let (start, len) = self.spans[slot as usize];
        (start != u32::MAX).then(|| &self.buf[start as usize..(start + len) as usize])
    }

    /// Enriches the fields (address classes, port, signature, registry `sp`) and builds the
    /// record. Type-specific fields are checked by the decoder before this.
    #[allow(clippy::too_many_arguments)]
    pub fn finish(
        &mut self,
        en: Enricher<'_>,
        ts: i64,
        kind: RecordKind,
        status: Option<DlrStatus>,
        answered: Option<bool>,
        dur: Option<f64>,
    ) -> Record {
        let src_class = self.get(Slot::Src).map_or(AddrClass::Other, |s| en.plan.classify(s));
        let dst_class = self.get(Slot::Dst).map_or(AddrClass::Other, |s| en.plan.classify(s));
        // The port: the originator when it is a port, else the destination when it is one.
        let port_slot = if src_class == AddrClass::Port {
            Some(Slot::Src)
        } else if dst_class == AddrClass::Port {
            Some(Slot::Dst)
        } else {
            None
        };
        if !self.has(Slot::Sig)
            && let Some((start, len)) = self.get(Slot::Text).and_then(signature_in)
        {
            let text_start = self.spans[Slot::Text as usize].0;
            self.spans[Slot::Sig as usize] = (text_start + start as u32, len as u32);
        }
        let mut port_class = PortClass::Unknown;
        let mut licensed = None;
        if let Some(slot) = port_slot {
            self.spans[Slot::Port as usize] = self.spans[slot as usize];
            let entry = self.get(slot).and_then(|p| en.registry.get(p));
            if let Some(entry) = entry {
                port_class = entry.class;
                if !self.has(Slot::Sp) && !entry.sp.is_empty() {
                    let sp = entry.sp.clone();
                    self.set(Slot::Sp, &sp);
                }
            }
            if kind == RecordKind::Sms && slot == Slot::Src {
                licensed = self
                    .get(Slot::Sig)
                    .map(|sig| entry.is_some_and(|e| e.signatures.iter().any(|s| s == sig)));
            } else if kind == RecordKind::Sms
                && !self.has(Slot::Sig)
                && let Some(sig) = entry.and_then(|e| e.signatures.first())
            {
                // A reply to a port concerns the port's (first registered) signature.
                let sig = sig.clone();
                self.set(Slot::Sig, &sig);
            }
        }
        let mut content = 0;
        let mut unsubscribe = false;
        if kind == RecordKind::Sms
            && let Some(text) = self.get(Slot::Text)
        {
            if dst_class == AddrClass::Port && src_class == AddrClass::Subscriber && text.len() <= 64 {
                let b = bare(text);
                unsubscribe = en.unsubscribe.contains(&b);
            }
            if !en.lexicon.is_empty() {
                content = en.lexicon.classify_text(text);
            }
        }
        // The fingerprint, for the records a rule that reads it wants (the texts of bulk
        // ports are half the text a double11 day carries, and no default rule reads theirs).
        let wanted = || {
            let traits = Traits {
                kind,
                src_class,
                dst_class,
                port_class,
                has_port: self.has(Slot::Port),
                status,
                answered,
                content,
                licensed,
                err: self.get(Slot::Err),
                dur,
                unsubscribe,
            };
            en.fingerprint.iter().any(|&r| wants(&en.rules[r], &traits))
        };
        if !en.fingerprint.is_empty() && (self.has(Slot::Text) || self.has(Slot::Tpl)) && wanted() {
            if kind == RecordKind::Sms
                && let Some(fp) = self.get(Slot::Text).and_then(fingerprint)
            {
                let mut hex = [0u8; 16];
                for (i, b) in hex.iter_mut().enumerate() {
                    *b = b"0123456789abcdef"[(fp >> (60 - 4 * i) & 0xf) as usize];
                }
                self.set(Slot::Fp, std::str::from_utf8(&hex).expect("hex digits"));
            } else if let Some(tpl) = self.get(Slot::Tpl) {
                let tpl = tpl.to_string();
                self.set(Slot::Fp, &tpl);
            }
        }
        Record {
            ts,
            kind,
            status,
            answered,
            dur,
            src_class,
            dst_class,
            port_class,
            content,
            licensed,
            unsubscribe,
            buf: self.buf.as_str().into(),
            spans: self.spans,
        }
    }
}

/// The signature in `text`: the `【…】` at its start, else at its end. Returns the byte
/// range of the inner, trimmed part.
pub fn signature_in(text: &str) -> Option<(usize, usize)> {
    const OPEN: &str = "【";
    const CLOSE: &str = "】";
    let t = text.trim();
    let offset = text.len() - text.trim_start().len();
    let inner = if let Some(rest) = t.strip_prefix(OPEN) {
        rest.find(CLOSE).map(|end| (OPEN.len(), end))
    } else if let Some(rest) = t.strip_suffix(CLOSE) {
        rest.rfind(OPEN).map(|start| (start + OPEN.len(), rest.len() - start - OPEN.len()))
    } else {
        None
    }?;
    let (start, len) = inner;
    let s = &t[start..start + len];
    let lead = s.len() - s.trim_start().len();
    let trimmed = s.trim();
    (!trimmed.is_empty()).then_some((offset + start + lead, trimmed.len()))
}

pub use anning_rules::time::parse_rfc3339;

/// Parses `ts` as written in text: integer milliseconds or an RFC 3339 timestamp.
pub fn parse_ts_text(s: &str) -> Result<i64, &'static str> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'-') && !s[1..].contains('-') {
        return s.parse::<i64>().map_err(|_| "integer milliseconds out of range");
    }
    parse_rfc3339(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_rfc3339("2026-11-10T12:00:01.500Z"), Ok(1_794_312_001_500));
        assert_eq!(parse_rfc3339("2026-11-10T20:00:01.5+08:00"), Ok(1_794_312_001_500));
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z"), Ok(1_709_164_800_000));
        assert!(parse_rfc3339("2023-02-29T00:00:00Z").is_err());
        assert!(parse_rfc3339("2026-11-10 12:00:01").is_err());
        assert_eq!(parse_ts_text("1762776000123"), Ok(1_762_776_000_123));
    }

    #[test]
    fn signature_from_start_or_end() {
        let t = "【京东】双11爆款直降";
        let (s, l) = signature_in(t).unwrap();
        assert_eq!(&t[s..s + l], "京东");
        let t = "您的验证码是1234【 工商银行 】";
        let (s, l) = signature_in(t).unwrap();
        assert_eq!(&t[s..s + l], "工商银行");
        assert_eq!(signature_in("no signature here"), None);
        assert_eq!(signature_in("【】empty"), None);
        assert_eq!(signature_in("mid【x】dle"), None);
    }
}
