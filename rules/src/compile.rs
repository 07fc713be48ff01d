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
            format!("`{field}` is empty, so the rule could never match; remove it to match any"),
        );
        return 0;
    }
    let mut m = 0;
    for item in list.get_ref() {
        match from_name(item.get_ref()) {
            Some(v) => m |= bit(v),
            None => d.push(
                item.span(),
                format!("`{field}`: unknown value \"{}\"; known: {}", item.get_ref(), names()),
            ),
        }
    }
    m
}

fn compile_rule(
    d: &mut Diags,
    span: Range<usize>,
    raw: RawRule,
    lexicon: &Lexicon,
    dims: &mut Vec<Dim>,
    seen_ids: &mut Vec<String>,
) -> Option<Rule> {
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
        Some(w) => compile_when(d, "when", w.get_ref(), lexicon),
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
            missing(d, &span, &who, "kind", " (\"rate\", \"near_limit\", \"ratio\" or \"unsubscribe\")");
            None
        }
        Some("rate") => {
            only_for(d, &raw, "rate", &["threshold", "distinct", "sequential"]);
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
            let sequential = raw
                .sequential
                .as_ref()
                .and_then(|_| positive(d, &who, &span, "sequential", &raw.sequential));
            threshold.map(|threshold| RuleKind::Rate {
                threshold,
                distinct,
                sequential,
            })
        }
        Some("ratio") => {
            only_for(d, &raw, "ratio", &["numerator", "ratio", "min", "below"]);
            let numerator = match &raw.numerator {
                None => {
                    missing(
                        d,
                        &span,
                        &who,
                        "numerator",
                        " (which of the counted records to divide, e.g. numerator = { status = [\"undeliverable\"] })",
                    );
                    None
                }
                Some(w) => Some(compile_when(d, "numerator", w.get_ref(), lexicon)),
            };
            let ratio = match &raw.ratio {
                None => {
                    missing(d, &span, &who, "ratio", " (e.g. ratio = 0.5)");
                    None
                }
                Some(r) if !(r.get_ref().0 > 0.0 && r.get_ref().0.is_finite()) => {
                    d.push(r.span(), format!("`ratio` = {} must be a positive number", r.get_ref().0));
                    None
                }
                Some(r) => Some(r.get_ref().0),
            };
            let min = positive(d, &who, &span, "min", &raw.min);
            let below = raw.below.as_ref().is_some_and(|b| *b.get_ref());
            match (numerator, ratio, min) {
                (Some(numerator), Some(ratio), Some(min)) => Some(RuleKind::Ratio {
                    numerator,
                    ratio,
                    min,
                    below,
                }),
                _ => None,
            }
        }
        Some("unsubscribe") => {
            only_for(d, &raw, "unsubscribe", &["threshold", "grace", "remember"]);
            if let (Some(dim), Some(v)) = (&dim, &raw.dim)
                && dim.parts != [Field::Sig]
            {
                d.push(v.span(), format!("`dim` = \"{}\": an unsubscribe rule keys by `sig`", v.get_ref()));
            }
            let threshold = positive(d, &who, &span, "threshold", &raw.threshold);
            let grace_ms = match &raw.grace {
                None => Some(10 * 60_000),
                Some(v) => duration(d, "grace", v, true),
            };
            let remember_ms = match &raw.remember {
                None => Some(30 * 86_400_000),
                Some(v) => duration(d, "remember", v, false),
            };
            match (threshold, grace_ms, remember_ms) {
                (Some(threshold), Some(grace_ms), Some(remember_ms)) => Some(RuleKind::Unsubscribe {
                    grace_ms,
                    remember_ms,
                    threshold,
                }),
                _ => None,
            }
        }
        Some("near_limit") => {
            only_for(d, &raw, "near_limit", &["limit", "band", "k", "n"]);
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
                format!("`kind` = \"{other}\" is not a rule kind; known: rate, near_limit, ratio, unsubscribe"),
            );
            None
        }
    };

    let ladder = compile_ladder(d, &who, &span, &raw.ladder);
    let mut targets = Vec::new();
    if let Some(list) = &raw.targets {
        if list.get_ref().is_empty() {
            d.push(list.span(), "`targets` is empty; remove it to act on the rule's own key");
        }
        for t in list.get_ref() {
            match Dim::parse(t.get_ref()) {
                Ok(dim) => targets.push(dim),
                Err(msg) => d.push(t.span(), format!("`targets`: {msg}")),
            }
        }
    }
    let misuse = raw.misuse.as_ref().is_some_and(|m| *m.get_ref());
    let shadow = raw.shadow.as_ref().is_some_and(|m| *m.get_ref());

    if d.items.len() > before {
        return None;
    }
    let (dim, window_ms, slide_ms, kind, ladder) = (dim?, window_ms?, slide_ms?, kind?, ladder?);
    let dim = dim_index(dims, dim);
    let targets = targets.into_iter().map(|t| dim_index(dims, t)).collect();
    Some(Rule {
        id,
        description: raw.description.map(|s| s.into_inner()).unwrap_or_default(),
        dim,
        filter,
        window_ms,
        slide_ms,
        kind,
        ladder,
        targets,
        misuse,
        suspect: None,
        shadow,
    })
}

/// Resolves `suspect` of rule `i` once every rule is compiled.
fn compile_suspect(d: &mut Diags, rules: &[Rule], i: usize, raw: Spanned<RawSuspect>) -> Option<Suspect> {
    let span = raw.span();
    let raw = raw.into_inner();
    let who = format!("rule `{}`", rules[i].id);
    let Some(id) = raw.rule else {
        d.push(
            span,
            format!("{who}: `suspect` has no `rule` (the id of a ratio rule of the same dim)"),
        );
        return None;
    };
    let Some(j) = rules.iter().position(|r| r.id == *id.get_ref()) else {
        d.push(
            id.span(),
            format!("`suspect.rule` = \"{}\" is not a rule of this pack", id.get_ref()),
        );
        return None;
    };
    if j == i || rules[j].dim != rules[i].dim || !matches!(rules[j].kind, RuleKind::Ratio { .. }) {
        d.push(
            id.span(),
            format!(
                "`suspect.rule` = \"{}\" must be another `ratio` rule keyed by the same dim as {who}",
                id.get_ref()
            ),
        );
        return None;
    }
    let factor = match raw.factor {
        None => 1.0,
        Some(f) if !(f.get_ref().0 > 0.0 && f.get_ref().0 <= 1.0) => {
            d.push(f.span(), format!("`suspect.factor` = {} must be in (0, 1]", f.get_ref().0));
            return None;
        }
        Some(f) => f.get_ref().0,
    };
    let levels = match raw.levels {
        None => 0,
        Some(l) if !(0..=10).contains(l.get_ref()) => {
            d.push(l.span(), format!("`suspect.levels` = {} must be between 0 and 10", l.get_ref()));
            return None;
        }
        Some(l) => *l.get_ref() as u32,
    };
    Some(Suspect { rule: j, factor, levels })
}

fn dim_index(dims: &mut Vec<Dim>, dim: Dim) -> usize {
    match dims.iter().position(|x| *x == dim) {
        Some(i) => i,
        None => {
            dims.push(dim);
            dims.len() - 1
        }
    }
}

/// Reports each kind-specific field set on a rule whose kind does not use it.
fn only_for(d: &mut Diags, raw: &RawRule, kind: &str, allowed: &[&str]) {
    let set = [
        (raw.threshold.as_ref().map(|v| v.span()), "threshold"),
        (raw.distinct.as_ref().map(|v| v.span()), "distinct"),
        (raw.sequential.as_ref().map(|v| v.span()), "sequential"),
        (raw.limit.as_ref().map(|v| v.span()), "limit"),
        (raw.band.as_ref().map(|v| v.span()), "band"),
        (raw.k.as_ref().map(|v| v.span()), "k"),
        (raw.n.as_ref().map(|v| v.span()), "n"),
        (raw.numerator.as_ref().map(|v| v.span()), "numerator"),
        (raw.ratio.as_ref().map(|v| v.span()), "ratio"),
        (raw.min.as_ref().map(|v| v.span()), "min"),
        (raw.below.as_ref().map(|v| v.span()), "below"),
        (raw.grace.as_ref().map(|v| v.span()), "grace"),
        (raw.remember.as_ref().map(|v| v.span()), "remember"),
    ];
    for (span, field) in set {
        if let Some(span) = span
            && !allowed.contains(&field)
        {
            not_for(d, span, field, kind);
        }
    }
}

/// Compiles a `when`-style filter (`when`, a ratio's `numerator`).
fn compile_when(d: &mut Diags, what: &str, w: &RawWhen, lexicon: &Lexicon) -> Filter {
    let f = |field: &str| format!("{what}.{field}");
    let content = match &w.content {
        None => u8::MAX,
        Some(list) if list.get_ref().is_empty() => {
            d.push(
                list.span(),
                format!("`{}` is empty, so the rule could never match; remove it to match any", f("content")),
            );
            0
        }
        Some(list) => {
            let mut m = 0;
            for item in list.get_ref() {
                match lexicon.bit(item.get_ref()) {
                    Some(b) => m |= b,
                    None => {
                        let known: Vec<&str> = lexicon.classes.iter().map(|(n, _)| n.as_str()).collect();
                        d.push(
                            item.span(),
                            format!(
                                "`{}`: no content class \"{}\"; defined: {}",
                                f("content"),
                                item.get_ref(),
                                if known.is_empty() {
                                    "none (add a [content.NAME] table)".to_string()
                                } else {
                                    known.join(", ")
                                }
                            ),
                        );
                    }
                }
            }
            m
        }
    };
    Filter {
        kinds: mask(d, &f("type"), &w.kind, RecordKind::from_name, RecordKind::bit, RecordKind::names),
        src_class: mask(
            d,
            &f("src_class"),
            &w.src_class,
            AddrClass::from_name,
            AddrClass::bit,
            AddrClass::names,
        ),
        dst_class: mask(
            d,
            &f("dst_class"),
            &w.dst_class,
            AddrClass::from_name,
            AddrClass::bit,
            AddrClass::names,
        ),
        port_class: mask(
            d,
            &f("port_class"),
            &w.port_class,
            PortClass::from_name,
            PortClass::bit,
            PortClass::names,
        ),
        status: mask(d, &f("status"), &w.status, DlrStatus::from_name, DlrStatus::bit, DlrStatus::names),
        answered: w.answered.as_ref().map(|a| *a.get_ref()),
        content,
        licensed: w.licensed.as_ref().map(|a| *a.get_ref()),
        err: w.err.as_ref().map(|l| l.get_ref().iter().map(|e| e.get_ref().clone()).collect()),
        max_dur: match &w.max_dur {
            None => None,
            Some(m) if !(m.get_ref().0 > 0.0 && m.get_ref().0.is_finite()) => {
                d.push(
                    m.span(),
                    format!("`{}` = {} must be a positive number of seconds", f("max_dur"), m.get_ref().0),
                );
                None
            }
            Some(m) => Some(m.get_ref().0),
        },
    }
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
