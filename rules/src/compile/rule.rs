//! One rule: its kind's fields, filters (`when`), ladder and `suspect`, each checked where
//! it was written.

use std::ops::Range;

use toml::Spanned;

use crate::diag::Diags;
use crate::model::*;
use crate::raw::*;
use crate::text::Lexicon;

use super::{MAX_BINS, MAX_N, duration, missing};

/// Compiles a `when` list into a bit mask, reporting unknown names.
pub(super) fn mask<T: Copy>(
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

pub(super) fn compile_rule(
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
pub(super) fn compile_suspect(d: &mut Diags, rules: &[Rule], i: usize, raw: Spanned<RawSuspect>) -> Option<Suspect> {
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

pub(super) fn dim_index(dims: &mut Vec<Dim>, dim: Dim) -> usize {
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
