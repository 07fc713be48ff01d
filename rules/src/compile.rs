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
            other => d.push(
                key.span(),
                format!("unknown top-level key `{other}`; expected one of `pack`, `escalation`, `number_plan`, `rule`"),
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
    let escalation = compile_escalation(&mut d, esc);
    let number_plan = compile_plan(&mut d, plan);

    let mut dims: Vec<Dim> = Vec::new();
    let mut rules: Vec<Rule> = Vec::new();
    let mut seen_ids: Vec<String> = Vec::new();
    for (span, raw) in raw_rules {
        if let Some(rule) = compile_rule(&mut d, span, raw, &mut dims, &mut seen_ids) {
            rules.push(rule);
        }
    }

    if d.items.is_empty() {
        Ok(Pack {
            name,
            hash: xxhash_rust::xxh3::xxh3_64(source.as_bytes()),
            lateness_ms,
            late_policy,
            escalation,
            number_plan,
            dims,
            rules,
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
    NumberPlan {
        classes: vec![
            (AddrClass::Subscriber, build(d, sub, DEFAULT_SUBSCRIBER, "subscriber")),
            (AddrClass::Port, build(d, port, DEFAULT_PORT, "port")),
            (AddrClass::CallCentre, build(d, cc, DEFAULT_CALL_CENTRE, "call_centre")),
        ],
    }
}

/// Compiles a `when` list into a bit mask, reporting unknown names.
fn mask<T: Copy>(
    d: &mut Diags,
    field: &str,
    list: &Option<Spanned<Vec<Spanned<String>>>>,
    from_name: fn(&str) -> Option<T>,
    bit: fn(T) -> u8,
    names: fn() -> String,
) -> u8 {
    let Some(list) = list else { return u8::MAX };
    if list.get_ref().is_empty() {
        d.push(
            list.span(),
            format!("`when.{field}` is empty, so the rule could never match; remove it to match any"),
        );
        return 0;
    }
    let mut m = 0;
    for item in list.get_ref() {
        match from_name(item.get_ref()) {
            Some(v) => m |= bit(v),
            None => d.push(
                item.span(),
                format!("`when.{field}`: unknown value \"{}\"; known: {}", item.get_ref(), names()),
            ),
        }
    }
    m
}

fn compile_rule(d: &mut Diags, span: Range<usize>, raw: RawRule, dims: &mut Vec<Dim>, seen_ids: &mut Vec<String>) -> Option<Rule> {
    let before = d.items.len();
    let id = match &raw.id {
        None => {
            missing(d, &span, "rule", "id", "");
            String::new()
        }
        Some(id) => {
            let s = id.get_ref().clone();
            if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') {
                d.push(
                    id.span(),
                    format!("`id` = \"{s}\" must be non-empty letters, digits, `-`, `_` or `.`"),
                );
            } else if seen_ids.contains(&s) {
                d.push(
                    id.span(),
                    format!("`id` = \"{s}\" is used by an earlier rule; rule ids must be unique"),
                );
            }
            seen_ids.push(s.clone());
            s
        }
    };
    let who = if id.is_empty() {
        "rule".to_string()
    } else {
        format!("rule `{id}`")
    };

    let dim = match &raw.dim {
        None => {
            missing(d, &span, &who, "dim", " (e.g. dim = \"src\")");
            None
        }
        Some(v) => match Dim::parse(v.get_ref()) {
            Ok(dim) => Some(dim),
            Err(msg) => {
                d.push(v.span(), format!("`dim`: {msg}"));
                None
            }
        },
    };

    let filter = match &raw.when {
        None => Filter::ANY,
        Some(w) => {
            let w = w.get_ref();
            Filter {
                kinds: mask(d, "type", &w.kind, RecordKind::from_name, RecordKind::bit, RecordKind::names),
                src_class: mask(d, "src_class", &w.src_class, AddrClass::from_name, AddrClass::bit, AddrClass::names),
                dst_class: mask(d, "dst_class", &w.dst_class, AddrClass::from_name, AddrClass::bit, AddrClass::names),
                port_class: mask(
                    d,
                    "port_class",
                    &w.port_class,
                    PortClass::from_name,
                    PortClass::bit,
                    PortClass::names,
                ),
                status: mask(d, "status", &w.status, DlrStatus::from_name, DlrStatus::bit, DlrStatus::names),
                answered: w.answered.as_ref().map(|a| *a.get_ref()),
            }
        }
    };

    let window_ms = match &raw.window {
        None => {
            missing(d, &span, &who, "window", " (e.g. window = \"1h\")");
            None
        }
        Some(v) => duration(d, "window", v, false),
    };
    let slide_ms = match &raw.slide {
        None => {
            missing(d, &span, &who, "slide", " (the window's resolution, e.g. slide = \"1m\")");
            None
        }
        Some(v) => duration(d, "slide", v, false),
    };
    if let (Some(w), Some(s), Some(sv)) = (window_ms, slide_ms, raw.slide.as_ref()) {
        if w % s != 0 {
            d.push(sv.span(), format!("`slide` = \"{}\" does not divide `window` evenly", sv.get_ref()));
        } else if w / s > MAX_BINS {
            d.push(
                sv.span(),
                format!("`slide` = \"{}\" gives {} bins per window; at most {MAX_BINS}", sv.get_ref(), w / s),
            );
        }
    }

    let kind_name = raw.kind.as_ref().map(|k| k.get_ref().as_str());
    let kind = match kind_name {
        None => {
            missing(d, &span, &who, "kind", " (\"rate\" or \"near_limit\")");
            None
        }
        Some("rate") => {
            for (set, f) in [
                (raw.limit.as_ref().map(|v| v.span()), "limit"),
                (raw.band.as_ref().map(|v| v.span()), "band"),
                (raw.k.as_ref().map(|v| v.span()), "k"),
                (raw.n.as_ref().map(|v| v.span()), "n"),
            ] {
                if let Some(span) = set {
                    not_for(d, span, f, "rate");
                }
            }
            let threshold = positive(d, &who, &span, "threshold", &raw.threshold);
            let distinct = raw.distinct.as_ref().and_then(|v| match Field::from_name(v.get_ref()) {
                Some(f) => Some(f),
                None => {
                    d.push(
                        v.span(),
                        format!(
                            "`distinct` = \"{}\" is not a field; known: {}",
                            v.get_ref(),
                            Field::ALL.map(|f| f.name()).join(", ")
                        ),
                    );
                    None
                }
            });
            threshold.map(|threshold| RuleKind::Rate { threshold, distinct })
        }
        Some("near_limit") => {
            for (set, f) in [
                (raw.threshold.as_ref().map(|v| v.span()), "threshold"),
                (raw.distinct.as_ref().map(|v| v.span()), "distinct"),
            ] {
                if let Some(span) = set {
                    not_for(d, span, f, "near_limit");
                }
            }
            let limit = positive(d, &who, &span, "limit", &raw.limit);
            let band = match &raw.band {
                None => {
                    missing(d, &span, &who, "band", " (e.g. band = 0.9 for counts in [0.9 × limit, limit))");
                    None
                }
                Some(b) if !(b.get_ref().0 > 0.0 && b.get_ref().0 < 1.0) => {
                    d.push(b.span(), format!("`band` = {} must be between 0 and 1 (exclusive)", b.get_ref().0));
                    None
                }
                Some(b) => Some(b.get_ref().0),
            };
            let k = positive(d, &who, &span, "k", &raw.k);
            let n = positive(d, &who, &span, "n", &raw.n);
            if let (Some(nv), Some(n)) = (&raw.n, n)
                && n as i64 > MAX_N
            {
                d.push(
                    nv.span(),
                    format!("`n` = {n} is more than the {MAX_N} windows a rule may look back"),
                );
            }
            if let (Some(kv), Some(k), Some(n)) = (&raw.k, k, n)
                && k > n
            {
                d.push(kv.span(), format!("`k` = {k} is more than `n` = {n}; the rule could never fire"));
            }
            match (limit, band, k, n) {
                (Some(limit), Some(band), Some(k), Some(n)) => {
                    let lo = (band * limit as f64).ceil() as u64;
                    if lo >= limit {
                        d.push(
                            raw.band.as_ref().unwrap().span(),
                            format!("`band` = {band} leaves no count below `limit` = {limit}"),
                        );
                    }
                    Some(RuleKind::NearLimit {
                        limit,
                        lo: lo.max(1),
                        band,
                        k: k as u32,
                        n: n as u32,
                    })
                }
                _ => None,
            }
        }
        Some(other) => {
            let v = raw.kind.as_ref().unwrap();
            d.push(
                v.span(),
                format!("`kind` = \"{other}\" is not a rule kind; known: rate, near_limit"),
            );
            None
        }
    };

    let ladder = compile_ladder(d, &who, &span, &raw.ladder);

    if d.items.len() > before {
        return None;
    }
    let (dim, window_ms, slide_ms, kind, ladder) = (dim?, window_ms?, slide_ms?, kind?, ladder?);
    let dim_index = match dims.iter().position(|x| *x == dim) {
        Some(i) => i,
        None => {
            dims.push(dim);
            dims.len() - 1
        }
    };
    Some(Rule {
        id,
        description: raw.description.map(|s| s.into_inner()).unwrap_or_default(),
        dim: dim_index,
        filter,
        window_ms,
        slide_ms,
        kind,
        ladder,
    })
}

fn not_for(d: &mut Diags, span: Range<usize>, field: &str, kind: &str) {
    d.push(span, format!("`{field}` does not apply to kind \"{kind}\""));
}

fn positive(d: &mut Diags, who: &str, span: &Range<usize>, field: &str, v: &Option<Spanned<i64>>) -> Option<u64> {
    match v {
        None => {
            missing(d, span, who, field, "");
            None
        }
        Some(x) if *x.get_ref() < 1 => {
            d.push(x.span(), format!("`{field}` = {} must be at least 1", x.get_ref()));
            None
        }
        Some(x) => Some(*x.get_ref() as u64),
    }
}

fn compile_ladder(d: &mut Diags, who: &str, span: &Range<usize>, raw: &Option<Spanned<Vec<Spanned<RawStep>>>>) -> Option<Vec<Step>> {
    let Some(list) = raw else {
        missing(d, span, who, "ladder", " (e.g. ladder = [{ action = \"alert\", for = \"1h\" }])");
        return None;
    };
    if list.get_ref().is_empty() {
        d.push(list.span(), "`ladder` is empty; give at least one step");
        return None;
    }
    let before = d.items.len();
    let mut steps = Vec::new();
    for s in list.get_ref() {
        let raw = s.get_ref();
        let action = match &raw.action {
            None => {
                d.push(s.span(), "ladder step has no `action` (alert, throttle or suspend)");
                continue;
            }
            Some(a) => match ActionKind::from_name(a.get_ref()) {
                Some(ActionKind::Release) | None => {
                    d.push(
                        a.span(),
                        format!(
                            "`action` = \"{}\" is not a ladder action; known: alert, throttle, suspend",
                            a.get_ref()
                        ),
                    );
                    continue;
                }
                Some(k) => k,
            },
        };
        let rate = match (action, &raw.rate) {
            (ActionKind::Throttle, None) => {
                d.push(s.span(), "a `throttle` step needs `rate` (messages per second allowed)");
                None
            }
            (ActionKind::Throttle, Some(r)) if !(r.get_ref().0 > 0.0 && r.get_ref().0.is_finite()) => {
                d.push(
                    r.span(),
                    format!("`rate` = {} must be a positive number of messages per second", r.get_ref().0),
                );
                None
            }
            (ActionKind::Throttle, Some(r)) => Some(r.get_ref().0),
            (_, Some(r)) => {
                d.push(r.span(), format!("`rate` applies only to throttle steps, not `{action}`"));
                None
            }
            (_, None) => None,
        };
        let for_ms = match &raw.for_ {
            None => {
                d.push(s.span(), "ladder step has no `for` (how long the action holds, e.g. \"1h\")");
                0
            }
            Some(f) => duration(d, "for", f, false).unwrap_or(0),
        };
        steps.push(Step { action, rate, for_ms });
    }
    (d.items.len() == before).then_some(steps)
}
