//! JSON Lines: one record per line. Fields are borrowed from the line (`RawValue`), so the
//! only allocation per record is the record's own buffer; a string with escapes is the one
//! exception (it must be unescaped).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Bad, Fields, RejectReason, Val};

/// The fields of the contract, each as the raw JSON text of its value. Unknown fields are
/// ignored.
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

/// One parsed line, ready for [`super::assemble`].
pub struct JsonFields<'a> {
    line: &'a str,
    raw: Line<'a>,
}

impl<'a> JsonFields<'a> {
    /// Parses a line; a syntax error becomes a `malformed` reject at its column.
    pub fn parse(line: &'a str) -> Result<Self, Bad> {
        match serde_json::from_str::<Line<'a>>(line) {
            Ok(raw) => Ok(JsonFields { line, raw }),
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
    fn offset_of(&self, v: &RawValue) -> u64 {
        (v.get().as_ptr() as usize - self.line.as_ptr() as usize) as u64
    }
}

impl<'a> Fields<'a> for JsonFields<'a> {
    /// Positions are byte offsets in the line; the column counts characters.
    fn col(&self, at: Option<u64>) -> Option<u64> {
        let off = (at? as usize).min(self.line.len());
        Some(self.line[..off].chars().count() as u64 + 1)
    }

    /// Inlined, so that the match on a name the caller spells out folds away: called out of
    /// line it compared the name against each field's in turn, 17 times a record.
    #[inline(always)]
    fn get(&mut self, name: &'static str) -> Result<Option<(Val<'a>, Option<u64>)>, Bad> {
        let raw = match name {
            "ts" => self.raw.ts,
            "type" => self.raw.kind,
            "id" => self.raw.id,
            "src" => self.raw.src,
            "dst" => self.raw.dst,
            "sig" => self.raw.sig,
            "text" => self.raw.text,
            "tpl" => self.raw.tpl,
            "sp" => self.raw.sp,
            "gw" => self.raw.gw,
            "cell" => self.raw.cell,
            "imei" => self.raw.imei,
            "ref" => self.raw.reference,
            "status" => self.raw.status,
            "err" => self.raw.err,
            "answered" => self.raw.answered,
            "dur" => self.raw.dur,
            _ => None,
        };
        match raw {
            None => Ok(None),
            Some(raw) => self.value(name, raw),
        }
    }
}

impl<'a> JsonFields<'a> {
    /// The value of field `name`, whose raw JSON text is `raw`.
    fn value(&self, name: &'static str, raw: &'a RawValue) -> Result<Option<(Val<'a>, Option<u64>)>, Bad> {
        let at = Some(self.offset_of(raw));
        let text = raw.get();
        let bad_type = |what: &str| Bad {
            reason: RejectReason::BadType,
            field: Some(name),
            col: at,
            detail: format!("`{name}` is {what}"),
        };
        let v = match text.as_bytes()[0] {
            // The parse above checked the string: without a backslash its text between the
            // quotes is its value, borrowed with no second pass over it.
            b'"' if !text.as_bytes().contains(&b'\\') => Val::Str(Cow::Borrowed(&text[1..text.len() - 1])),
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
    use super::*;

    fn str_of<'a>(f: &mut JsonFields<'a>, name: &'static str) -> Cow<'a, str> {
        match f.get(name) {
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
        let empty = JsonFields::parse(r#"{"id":""}"#).expect("valid line").get("id").expect("a value");
        assert!(matches!(empty, Some((Val::Str(Cow::Borrowed("")), Some(6)))));
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
