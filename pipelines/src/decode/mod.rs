//! Decoders: JSON Lines, CSV and Parquet → [`Record`]s, and rejects with their reasons.
//!
//! Every format goes through [`assemble`], so the same field means the same thing and the
//! same mistake gets the same reason whatever the file type.

pub mod csv;
pub mod jsonl;
pub mod parquet;
pub mod pool;

use std::borrow::Cow;
use std::fmt;

use anning_detector::mask::mask_number;
use anning_detector::record::{STRING_FIELDS, parse_ts_text};
use anning_detector::{Enricher, Record, RecordBuilder, Slot};
use anning_rules::{DlrStatus, RecordKind};
use serde::Serialize;

/// Why a record was rejected. Counted by these names in the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Not valid JSON (or an unreadable CSV/Parquet row).
    Malformed,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong type (e.g. a number where a string belongs).
    BadType,
    /// A field has the right type but an impossible value (unknown `type`, bad timestamp…).
    BadValue,
    /// Older than the watermark, under the `dead-letter` late policy.
    Late,
}

impl RejectReason {
    pub fn name(self) -> &'static str {
        match self {
            RejectReason::Malformed => "malformed",
            RejectReason::MissingField => "missing_field",
            RejectReason::BadType => "bad_type",
            RejectReason::BadValue => "bad_value",
            RejectReason::Late => "late",
        }
    }
}

/// What is wrong with one record, before the decoder adds where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Bad {
    pub reason: RejectReason,
    /// The field at fault, when one is.
    pub field: Option<&'static str>,
    /// 1-based column (character in a JSON line, field number in CSV/Parquet), when known.
    pub col: Option<u64>,
    /// Message for people; subscriber numbers in it are masked.
    pub detail: String,
}

impl Bad {
    fn new(reason: RejectReason, field: &'static str, col: Option<u64>, detail: String) -> Bad {
        Bad {
            reason,
            field: Some(field),
            col,
            detail,
        }
    }
}

/// A rejected record: where it was, why, and (for text formats) the original line.
#[derive(Debug, Clone, Serialize)]
pub struct Reject {
    pub source: String,
    /// 1-based line (JSON Lines, CSV) or row (Parquet).
    pub line: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub col: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'static str>,
    pub reason: RejectReason,
    pub detail: String,
    /// The original bytes of the line (kept so nothing is lost; may hold personal data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.source, self.line)?;
        if let Some(c) = self.col {
            write!(f, ":{c}")?;
        }
        write!(f, ": {}", self.reason.name())?;
        if let Some(field) = self.field {
            write!(f, ": field `{field}`")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// A field value as a decoder found it.
#[derive(Debug, Clone)]
pub enum Val<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Val<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Val::Str(_) => "a string",
            Val::Int(_) => "an integer",
            Val::Float(_) => "a number",
            Val::Bool(_) => "a boolean",
        }
    }
}

/// Where [`assemble`] reads fields from.
pub trait Fields<'a> {
    /// The value of the field at `field` in [`FIELD_NAMES`] and where it is (see
    /// [`col`](Self::col)), `None` when absent (or null / empty). By place, not by name: a
    /// name matched for each field of each record was half of [`assemble`]'s own time.
    fn get(&mut self, field: usize) -> Result<Option<(Val<'a>, Option<u64>)>, Bad>;
    /// The 1-based column of a position `get` returned (or put in a reject), for a reject:
    /// only a reject needs it, so a decoder may return something cheaper to find and turn
    /// it into a column here. [`assemble`] calls it once, on the reject it returns.
    fn col(&self, at: Option<u64>) -> Option<u64> {
        at
    }
    /// Whether every value arrives as text (CSV), so numbers and booleans are parsed from it.
    fn textual(&self) -> bool {
        false
    }
}

/// Every field of the record contract, as CSV and Parquet column names.
pub const FIELD_NAMES: [&str; 17] = [
    "ts", "type", "id", "src", "dst", "sig", "text", "tpl", "sp", "gw", "cell", "imei", "ref", "status", "err", "answered", "dur",
];

/// A field's place in [`FIELD_NAMES`] (a compiled match, not a search).
pub const fn field_index(name: &str) -> Option<usize> {
    Some(match name.as_bytes() {
        b"ts" => 0,
        b"type" => 1,
        b"id" => 2,
        b"src" => 3,
        b"dst" => 4,
        b"sig" => 5,
        b"text" => 6,
        b"tpl" => 7,
        b"sp" => 8,
        b"gw" => 9,
        b"cell" => 10,
        b"imei" => 11,
        b"ref" => 12,
        b"status" => 13,
        b"err" => 14,
        b"answered" => 15,
        b"dur" => 16,
        _ => return None,
    })
}

/// [`field_index`] of a name known to be a field, for use at compile time.
const fn place(name: &str) -> usize {
    match field_index(name) {
        Some(i) => i,
        None => panic!("not a field of the record contract"),
    }
}

/// The contract's string fields: each one's place in [`FIELD_NAMES`] and its record slot.
const STRING_PLACES: [(usize, Slot); STRING_FIELDS.len()] = {
    let mut out = [(0, Slot::Id); STRING_FIELDS.len()];
    let mut i = 0;
    while i < STRING_FIELDS.len() {
        out[i] = (place(STRING_FIELDS[i].0), STRING_FIELDS[i].1);
        i += 1;
    }
    out
};

/// Shows a value in a message, masking it when it is (or may be) a subscriber number.
fn shown(field: &str, v: &str) -> String {
    let short: String = v.chars().take(40).collect();
    if matches!(field, "src" | "dst") {
        mask_number(&short)
    } else {
        short
    }
}

/// Checks and assembles one record from its fields, per `contract/records.md`.
pub fn assemble<'a>(f: &mut impl Fields<'a>, b: &mut RecordBuilder, en: Enricher<'_>) -> Result<Record, Bad> {
    // Positions are turned into columns here, once, and only for a reject.
    assemble_at(f, b, en).map_err(|bad| Bad {
        col: f.col(bad.col),
        ..bad
    })
}

/// [`assemble`], with rejects at the positions `f.get` gave.
fn assemble_at<'a>(f: &mut impl Fields<'a>, b: &mut RecordBuilder, en: Enricher<'_>) -> Result<Record, Bad> {
    b.clear();
    let textual = f.textual();
    let ts = match f.get(const { place("ts") })? {
        None => return Err(Bad::new(RejectReason::MissingField, "ts", None, "`ts` is required".into())),
        Some((Val::Int(ms), _)) => ms,
        Some((Val::Float(x), _)) if x.fract() == 0.0 && x.abs() < 9e15 => x as i64,
        Some((Val::Str(s), col)) => parse_ts_text(&s)
            .map_err(|why| Bad::new(RejectReason::BadValue, "ts", col, format!("`ts` = \"{}\": {why}", shown("ts", &s))))?,
        Some((v, col)) => {
            return Err(Bad::new(
                RejectReason::BadType,
                "ts",
                col,
                format!("`ts` is {}; expected integer milliseconds or an RFC 3339 string", v.type_name()),
            ));
        }
    };
    let kind = match f.get(const { place("type") })? {
        None => return Err(Bad::new(RejectReason::MissingField, "type", None, "`type` is required".into())),
        Some((Val::Str(s), col)) => RecordKind::from_name(&s).ok_or_else(|| {
            Bad::new(
                RejectReason::BadValue,
                "type",
                col,
                format!("`type` = \"{}\" is not one of {}", shown("type", &s), RecordKind::names()),
            )
        })?,
        Some((v, col)) => {
            return Err(Bad::new(
                RejectReason::BadType,
                "type",
                col,
                format!("`type` is {}; expected a string", v.type_name()),
            ));
        }
    };
    for (at, slot) in STRING_PLACES {
        let name = FIELD_NAMES[at];
        match f.get(at)? {
            None => {}
            Some((Val::Str(s), col)) => {
                if matches!(name, "src" | "dst") && (s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit())) {
                    return Err(Bad::new(
                        RejectReason::BadValue,
                        name,
                        col,
                        format!("`{name}` = \"{}\" is not a digit string", shown(name, &s)),
                    ));
                }
                b.set(slot, &s);
            }
            Some((v, col)) => {
                return Err(Bad::new(
                    RejectReason::BadType,
                    name,
                    col,
                    format!("`{name}` is {}; expected a string", v.type_name()),
                ));
            }
        }
    }
    let status = match f.get(const { place("status") })? {
        None => None,
        Some((Val::Str(s), col)) => Some(DlrStatus::from_name(&s).ok_or_else(|| {
            Bad::new(
                RejectReason::BadValue,
                "status",
                col,
                format!("`status` = \"{}\" is not one of {}", shown("status", &s), DlrStatus::names()),
            )
        })?),
        Some((v, col)) => {
            return Err(Bad::new(
                RejectReason::BadType,
                "status",
                col,
                format!("`status` is {}; expected a string", v.type_name()),
            ));
        }
    };
    let answered = match f.get(const { place("answered") })? {
        None => None,
        Some((Val::Bool(x), _)) => Some(x),
        Some((Val::Str(s), col)) if textual => Some(match s.as_ref() {
            "true" | "1" => true,
            "false" | "0" => false,
            other => {
                return Err(Bad::new(
                    RejectReason::BadValue,
                    "answered",
                    col,
                    format!("`answered` = \"{}\" is not true or false", shown("answered", other)),
                ));
            }
        }),
        Some((v, col)) => {
            return Err(Bad::new(
                RejectReason::BadType,
                "answered",
                col,
                format!("`answered` is {}; expected a boolean", v.type_name()),
            ));
        }
    };
    let dur = match f.get(const { place("dur") })? {
        None => None,
        Some((Val::Int(x), _)) => Some(x as f64),
        Some((Val::Float(x), _)) => Some(x),
        Some((Val::Str(s), col)) if textual => Some(s.trim().parse::<f64>().map_err(|_| {
            Bad::new(
                RejectReason::BadValue,
                "dur",
                col,
                format!("`dur` = \"{}\" is not a number", shown("dur", &s)),
            )
        })?),
        Some((v, col)) => {
            return Err(Bad::new(
                RejectReason::BadType,
                "dur",
                col,
                format!("`dur` is {}; expected a number of seconds", v.type_name()),
            ));
        }
    };
    if let Some(d) = dur
        && !(d >= 0.0 && d.is_finite())
    {
        return Err(Bad::new(
            RejectReason::BadValue,
            "dur",
            None,
            format!("`dur` = {d} must be zero or more seconds"),
        ));
    }
    let need = |present: bool, field: &'static str| -> Result<(), Bad> {
        if present {
            Ok(())
        } else {
            Err(Bad::new(
                RejectReason::MissingField,
                field,
                None,
                format!("`{field}` is required for type \"{kind}\""),
            ))
        }
    };
    match kind {
        RecordKind::Sms => {
            need(b.has(Slot::Src), "src")?;
            need(b.has(Slot::Dst), "dst")?;
        }
        RecordKind::Call => {
            need(b.has(Slot::Src), "src")?;
            need(b.has(Slot::Dst), "dst")?;
            need(answered.is_some(), "answered")?;
        }
        RecordKind::Dlr => {
            need(b.has(Slot::Ref), "ref")?;
            need(status.is_some(), "status")?;
        }
        RecordKind::Complaint => need(b.has(Slot::Src), "src")?,
    }
    let dur = if kind == RecordKind::Call { Some(dur.unwrap_or(0.0)) } else { dur };
    Ok(b.finish(en, ts, kind, status, answered, dur))
}
