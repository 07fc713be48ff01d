//! The raw form of a rule pack: exactly what was written, with spans, nothing checked
//! beyond TOML types and field names. Every field is optional here; [`crate::compile`]
//! decides what is required, so each problem is reported where it is.

use serde::{Deserialize, Deserializer};
use toml::Spanned;

/// A number written as an integer or a float (`rate = 1` and `rate = 0.5` both work).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Num(pub f64);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Num;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E>(self, v: i64) -> Result<Num, E> {
                Ok(Num(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Num, E> {
                Ok(Num(v as f64))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Num, E> {
                Ok(Num(v))
            }
        }
        d.deserialize_any(V)
    }
}

pub type S<T> = Option<Spanned<T>>;

/// `[pack]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPackMeta {
    pub name: S<String>,
    pub description: S<String>,
    pub lateness: S<String>,
    pub late_policy: S<String>,
    pub dlr_join: S<String>,
}

/// `[content.NAME]`: a content class.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawContentClass {
    pub terms: S<Vec<Spanned<String>>>,
    pub min: S<i64>,
}

/// `[unsubscribe]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUnsubscribe {
    pub words: S<Vec<Spanned<String>>>,
}

/// `[protect]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProtect {
    pub port_classes: S<Vec<Spanned<String>>>,
}

/// `suspect = { rule = "…", factor = 0.5, levels = 1 }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSuspect {
    pub rule: S<String>,
    pub factor: S<Num>,
    pub levels: S<i64>,
}

/// `[[allow]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAllow {
    pub dim: S<String>,
    pub key: S<String>,
    pub until: S<String>,
    pub reason: S<String>,
    pub author: S<String>,
}

/// `[escalation]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEscalation {
    pub decay: S<String>,
    pub factor: S<Num>,
    pub max: S<String>,
}

/// `[number_plan]`: regular expressions per address class.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNumberPlan {
    pub subscriber: S<Vec<Spanned<String>>>,
    pub port: S<Vec<Spanned<String>>>,
    pub call_centre: S<Vec<Spanned<String>>>,
}

/// `when = { … }`: which records a rule counts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWhen {
    #[serde(rename = "type")]
    pub kind: S<Vec<Spanned<String>>>,
    pub src_class: S<Vec<Spanned<String>>>,
    pub dst_class: S<Vec<Spanned<String>>>,
    pub port_class: S<Vec<Spanned<String>>>,
    pub status: S<Vec<Spanned<String>>>,
    pub answered: S<bool>,
    pub content: S<Vec<Spanned<String>>>,
    pub licensed: S<bool>,
    pub err: S<Vec<Spanned<String>>>,
    pub max_dur: S<Num>,
}

/// One rung of `ladder = [ … ]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    pub action: S<String>,
    pub rate: S<Num>,
    #[serde(rename = "for")]
    pub for_: S<String>,
}

/// `[[rule]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub id: S<String>,
    pub kind: S<String>,
    pub description: S<String>,
    pub dim: S<String>,
    pub when: S<RawWhen>,
    pub window: S<String>,
    pub slide: S<String>,
    // rate
    pub threshold: S<i64>,
    pub distinct: S<String>,
    // near_limit
    pub limit: S<i64>,
    pub band: S<Num>,
    pub k: S<i64>,
    pub n: S<i64>,
    // rate
    pub sequential: S<i64>,
    // ratio
    pub numerator: S<RawWhen>,
    pub ratio: S<Num>,
    pub min: S<i64>,
    pub below: S<bool>,
    // unsubscribe
    pub grace: S<String>,
    pub remember: S<String>,
    // any kind
    pub targets: S<Vec<Spanned<String>>>,
    pub misuse: S<bool>,
    pub suspect: S<RawSuspect>,
    pub shadow: S<bool>,
    pub ladder: S<Vec<Spanned<RawStep>>>,
}
