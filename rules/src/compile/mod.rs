//! Raw → validated: every check, every error collected, each at its place in the source.

use std::ops::Range;

use regex::Regex;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, Deserializer};

use crate::diag::{Diagnostic, Diags};
use crate::duration::parse_duration_ms;
use crate::model::*;
use crate::raw::*;
use crate::text::{Lexicon, MAX_CLASSES, bare, normalize};
use crate::time::parse_rfc3339;

mod rule;

use self::rule::{compile_rule, compile_suspect, dim_index, mask};

/// Default address patterns (the issue's number plan): subscriber = `1[3-9]` + 9 digits,
/// port = `106…`, call centre = `95…`/`96…`.
const DEFAULT_SUBSCRIBER: &str = r"^1[3-9][0-9]{9}$";
const DEFAULT_PORT: &str = r"^106[0-9]*$";
const DEFAULT_CALL_CENTRE: &str = r"^9[56][0-9]*$";

/// Most bins a window may have, so one key's state stays small.
pub const MAX_BINS: i64 = 4096;
/// Most back-to-back windows a `near_limit` rule may look at.
pub const MAX_N: i64 = 64;

/// Compiles a pack from its TOML source, or returns every problem found.
pub fn compile(source: &str) -> Result<Pack, Vec<Diagnostic>> {
    let mut d = Diags::new(source);
    let (root, errors) = DeTable::parse_recoverable(source);
    for e in &errors {
        d.push_toml(e);
    }
    if !errors.is_empty() {
        return Err(d.into_sorted());
    }

    let mut meta = None;
    let mut esc = None;
    let mut plan = None;
    let mut raw_rules = Vec::new();
    let mut raw_classes = Vec::new();
    let mut unsub = None;
    let mut protect = None;
    let mut raw_allows = Vec::new();
    for (key, value) in root.get_ref() {
        match key.get_ref().as_ref() {
            "pack" => meta = table_as::<RawPackMeta>(&mut d, "pack", value),
            "escalation" => esc = table_as::<RawEscalation>(&mut d, "escalation", value),
            "number_plan" => plan = table_as::<RawNumberPlan>(&mut d, "number_plan", value),
            "rule" => match value.get_ref() {
                DeValue::Array(items) => {
                    for item in items.iter() {
                        if let Some(r) = table_as::<RawRule>(&mut d, "rule", item) {
                            raw_rules.push((item.span(), r));
                        }
                    }
                }
                _ => d.push(value.span(), "`rule` must be an array of tables: write `[[rule]]`"),
            },
            "content" => match value.get_ref() {
                DeValue::Table(t) => {
                    for (name, v) in t.iter() {
                        let what = format!("content.{}", name.get_ref());
                        if let Some(c) = table_as::<RawContentClass>(&mut d, &what, v) {
                            raw_classes.push((name.get_ref().to_string(), name.span(), v.span(), c));
                        }
                    }
                }
                _ => d.push(value.span(), "`content` must be a table of classes: write `[content.NAME]`"),
            },
            "unsubscribe" => unsub = table_as::<RawUnsubscribe>(&mut d, "unsubscribe", value),
            "protect" => protect = table_as::<RawProtect>(&mut d, "protect", value),
            "allow" => match value.get_ref() {
                DeValue::Array(items) => {
                    for item in items.iter() {
                        if let Some(a) = table_as::<RawAllow>(&mut d, "allow", item) {
                            raw_allows.push((item.span(), a));
                        }
                    }
                }
                _ => d.push(value.span(), "`allow` must be an array of tables: write `[[allow]]`"),
            },
            other => d.push(
                key.span(),
                format!(
                    "unknown top-level key `{other}`; expected one of `pack`, `escalation`, `number_plan`, `content`, `unsubscribe`, `protect`, `allow`, `rule`"
                ),
            ),
        }
    }

    let name = meta
        .as_ref()
        .and_then(|m| m.name.as_ref())
        .map(|n| n.get_ref().clone())
        .unwrap_or_else(|| "unnamed".into());
    let lateness_ms = meta
        .as_ref()
        .and_then(|m| m.lateness.as_ref())
        .and_then(|l| duration(&mut d, "lateness", l, true))
        .unwrap_or(5 * 60_000);
    let late_policy = match meta.as_ref().and_then(|m| m.late_policy.as_ref()) {
        None => LatePolicy::DeadLetter,
        Some(p) => match p.get_ref().as_str() {
            "dead-letter" => LatePolicy::DeadLetter,
            "admit" => LatePolicy::Admit,
            other => {
                d.push(
                    p.span(),
                    format!("`late_policy` = \"{other}\" is not one of \"dead-letter\", \"admit\""),
                );
                LatePolicy::DeadLetter
            }
        },
    };
    let dlr_join_ms = meta
        .as_ref()
        .and_then(|m| m.dlr_join.as_ref())
        .and_then(|l| duration(&mut d, "dlr_join", l, true))
        .unwrap_or(15 * 60_000);
    let escalation = compile_escalation(&mut d, esc);
    let number_plan = compile_plan(&mut d, plan);
    let lexicon = compile_content(&mut d, raw_classes);
    let unsubscribe_words = compile_unsubscribe(&mut d, unsub);
    let protect = match protect.and_then(|p| p.port_classes) {
        None => PortClass::Otp.bit() | PortClass::Notify.bit(),
        Some(list) if list.get_ref().is_empty() => 0,
        Some(list) => mask(
            &mut d,
            "protect.port_classes",
            &Some(list),
            PortClass::from_name,
            PortClass::bit,
            PortClass::names,
        ),
    };

    let mut dims: Vec<Dim> = Vec::new();
    let mut rules: Vec<Rule> = Vec::new();
    let mut seen_ids: Vec<String> = Vec::new();
    let mut suspects = Vec::new();
    let mut rule_pos = Vec::new();
    for (span, mut raw) in raw_rules {
        let suspect = raw.suspect.take();
        let pos = crate::diag::line_col(source, span.start);
        if let Some(rule) = compile_rule(&mut d, span, raw, &lexicon, &mut dims, &mut seen_ids) {
            rule_pos.push(pos);
            if let Some(s) = suspect {
                suspects.push((rules.len(), s));
            }
            rules.push(rule);
        }
    }
    for (i, s) in suspects {
        rules[i].suspect = compile_suspect(&mut d, &rules, i, s);
    }
    let allow = compile_allows(&mut d, raw_allows, &mut dims);

    if d.items.is_empty() {
        let fingerprint_rules = Pack::reading_fingerprint(&dims, &rules);
        Ok(Pack {
            name,
            hash: xxhash_rust::xxh3::xxh3_64(source.as_bytes()),
            lateness_ms,
            late_policy,
            escalation,
            number_plan,
            dims,
            rules,
            lexicon,
            unsubscribe_words,
            protect,
            allow,
            dlr_join_ms,
            rule_pos,
            source: source.into(),
            fingerprint_rules,
        })
    } else {
        Err(d.into_sorted())
    }
}

/// Deserializes one table, reporting each bad entry on its own, then reads the entries
/// that are fine so later checks still run. Keys of bad entries go to `d.bad_keys`, so a
/// malformed field is not reported again as missing.
fn table_as<T: DeserializeOwned>(d: &mut Diags, what: &str, value: &Spanned<DeValue>) -> Option<T> {
    let DeValue::Table(table) = value.get_ref() else {
        d.push(
            value.span(),
            format!("`{what}` must be a table, found {}", value.get_ref().type_str()),
        );
        return None;
    };
    let mut good = DeTable::new();
    d.bad_keys.clear();
    for (k, v) in table.iter() {
        let mut one = DeTable::new();
        one.insert(k.clone(), v.clone());
        match T::deserialize(Deserializer::from(Spanned::new(value.span(), one))) {
            Ok(_) => {
                good.insert(k.clone(), v.clone());
            }
            Err(e) => {
                // Errors about an entry as a whole (an unknown field) carry no span: point at the key.
                let span = e.span().unwrap_or_else(|| k.span());
                let msg = e.message().trim().lines().next().unwrap_or("invalid value").to_string();
                let key: &str = k.get_ref();
                if msg.starts_with("unknown field") {
                    d.push(span, format!("in `{what}`: {msg}"));
                } else {
                    d.push(span, format!("`{key}`: {msg}"));
                }
                d.bad_keys.push(key.to_string());
            }
        }
    }
    match T::deserialize(Deserializer::from(Spanned::new(value.span(), good))) {
        Ok(t) => Some(t),
        Err(e) => {
            d.push_toml(&e);
            None
        }
    }
}

/// Reports a required field that is absent, unless it was present but malformed.
fn missing(d: &mut Diags, span: &Range<usize>, who: &str, field: &str, hint: &str) {
    if !d.bad_keys.iter().any(|k| k == field) {
        d.push(span.clone(), format!("{who} has no `{field}`{hint}"));
    }
}

fn duration(d: &mut Diags, field: &str, v: &Spanned<String>, allow_zero: bool) -> Option<i64> {
    match parse_duration_ms(v.get_ref()) {
        Ok(0) if !allow_zero => {
            d.push(v.span(), format!("`{field}` = \"{}\" must be longer than zero", v.get_ref()));
            None
        }
        Ok(ms) => Some(ms),
        Err(msg) => {
            d.push(v.span(), format!("`{field}`: {msg}"));
            None
        }
    }
}

fn compile_escalation(d: &mut Diags, raw: Option<RawEscalation>) -> Escalation {
    let mut e = Escalation {
        decay_ms: 86_400_000,
        factor: 2.0,
        max_ms: 7 * 86_400_000,
    };
    let Some(raw) = raw else { return e };
    if let Some(v) = raw.decay.as_ref().and_then(|v| duration(d, "decay", v, false)) {
        e.decay_ms = v;
    }
    if let Some(v) = raw.max.as_ref().and_then(|v| duration(d, "max", v, false)) {
        e.max_ms = v;
    }
    if let Some(f) = &raw.factor {
        let x = f.get_ref().0;
        if !(1.0..=100.0).contains(&x) {
            d.push(f.span(), format!("`factor` = {x} must be between 1 and 100"));
        } else {
            e.factor = x;
        }
    }
    e
}

fn compile_plan(d: &mut Diags, raw: Option<RawNumberPlan>) -> NumberPlan {
    let build = |d: &mut Diags, pats: Option<Spanned<Vec<Spanned<String>>>>, default: &str, name: &str| match pats {
        None => vec![Regex::new(default).expect("default number plan pattern")],
        Some(list) => list
            .into_inner()
            .into_iter()
            .filter_map(|p| match Regex::new(p.get_ref()) {
                Ok(r) => Some(r),
                Err(e) => {
                    let why = e.to_string().lines().last().unwrap_or("invalid").trim().to_string();
                    d.push(p.span(), format!("`number_plan.{name}`: bad pattern \"{}\": {why}", p.get_ref()));
                    None
                }
            })
            .collect(),
    };
    let (sub, port, cc) = match raw {
        Some(r) => (r.subscriber, r.port, r.call_centre),
        None => (None, None, None),
    };
    NumberPlan::new(vec![
        (AddrClass::Subscriber, build(d, sub, DEFAULT_SUBSCRIBER, "subscriber")),
        (AddrClass::Port, build(d, port, DEFAULT_PORT, "port")),
        (AddrClass::CallCentre, build(d, cc, DEFAULT_CALL_CENTRE, "call_centre")),
    ])
}

fn compile_content(d: &mut Diags, raw: Vec<(String, Range<usize>, Range<usize>, RawContentClass)>) -> Lexicon {
    let mut classes = Vec::new();
    if raw.len() > MAX_CLASSES {
        d.push(raw[MAX_CLASSES].1.clone(), format!("at most {MAX_CLASSES} content classes"));
    }
    for (name, name_span, span, c) in raw.into_iter().take(MAX_CLASSES) {
        let who = format!("content class `{name}`");
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            d.push(
                name_span,
                format!("content class name \"{name}\" must be letters, digits, `-` or `_`"),
            );
        }
        let terms: Vec<String> = match &c.terms {
            None => {
                missing(d, &span, &who, "terms", " (e.g. terms = [\"退订\", \"t.cn/\"])");
                continue;
            }
            Some(list) => {
                let mut out = Vec::new();
                for t in list.get_ref() {
                    let n = normalize(t.get_ref());
                    if n.trim().is_empty() {
                        d.push(t.span(), format!("{who}: empty term"));
                    } else if !out.contains(&n) {
                        out.push(n);
                    }
                }
                out
            }
        };
        let min = match &c.min {
            None => 1,
            Some(m) if *m.get_ref() < 1 || *m.get_ref() as usize > terms.len().max(1) => {
                d.push(
                    m.span(),
                    format!("`min` = {} must be between 1 and the {} distinct terms", m.get_ref(), terms.len()),
                );
                1
            }
            Some(m) => *m.get_ref() as u32,
        };
        classes.push((name, terms, min));
    }
    Lexicon::new(classes)
}

/// Default unsubscribe words (contract/records.md and common practice).
pub const DEFAULT_UNSUBSCRIBE: &[&str] = &["TD", "T", "N", "Q", "R", "QXFS", "BK", "退订", "取消", "退订短信"];

fn compile_unsubscribe(d: &mut Diags, raw: Option<RawUnsubscribe>) -> Vec<String> {
    let Some(list) = raw.and_then(|u| u.words) else {
        return DEFAULT_UNSUBSCRIBE.iter().map(|w| bare(w)).collect();
    };
    let mut out = Vec::new();
    for w in list.get_ref() {
        let b = bare(w.get_ref());
        if b.is_empty() {
            d.push(
                w.span(),
                format!("unsubscribe word \"{}\" is only spaces or punctuation", w.get_ref()),
            );
        } else if !out.contains(&b) {
            out.push(b);
        }
    }
    out
}

fn compile_allows(d: &mut Diags, raw: Vec<(Range<usize>, RawAllow)>, dims: &mut Vec<Dim>) -> Vec<Allow> {
    let mut out = Vec::new();
    for (span, a) in raw {
        let who = "allowlist entry";
        let before = d.items.len();
        let dim = match &a.dim {
            None => {
                missing(d, &span, who, "dim", " (e.g. dim = \"src\")");
                None
            }
            Some(v) => Dim::parse(v.get_ref()).map_err(|m| d.push(v.span(), format!("`dim`: {m}"))).ok(),
        };
        let key = match &a.key {
            Some(k) if !k.get_ref().is_empty() => Some(k.get_ref().clone()),
            Some(k) => {
                d.push(k.span(), "`key` is empty");
                None
            }
            None => {
                missing(d, &span, who, "key", "");
                None
            }
        };
        let until = match &a.until {
            None => {
                missing(d, &span, who, "until", " (an RFC 3339 time: entries expire)");
                None
            }
            Some(u) => parse_rfc3339(u.get_ref())
                .map_err(|m| d.push(u.span(), format!("`until` = \"{}\": {m}", u.get_ref())))
                .ok(),
        };
        let text = |d: &mut Diags, v: &S<String>, field: &str| match v {
            Some(s) if !s.get_ref().trim().is_empty() => Some(s.get_ref().clone()),
            Some(s) => {
                d.push(s.span(), format!("`{field}` is empty"));
                None
            }
            None => {
                missing(d, &span, who, field, "");
                None
            }
        };
        let reason = text(d, &a.reason, "reason");
        let author = text(d, &a.author, "author");
        if d.items.len() > before {
            continue;
        }
        if let (Some(dim), Some(key), Some(until), Some(reason), Some(author)) = (dim, key, until, reason, author) {
            out.push(Allow {
                dim: dim_index(dims, dim),
                key,
                until,
                reason,
                author,
            });
        }
    }
    out
}
