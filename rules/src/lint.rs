//! Warnings about a pack that compiles: rules that can never fire or never act first,
//! throttles that do not bite, content classes no rule uses. `anning rules check` prints
//! them; `--deny-warnings` makes them fail the check (for CI).

use crate::diag::Diagnostic;
use crate::model::*;

/// Every warning for `pack`, in rule order.
pub fn warnings(pack: &Pack) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let at = |i: usize| pack.rule_pos.get(i).copied().unwrap_or((1, 1));
    let mut warn = |i: usize, message: String| {
        let (line, col) = at(i);
        out.push(Diagnostic { line, col, message });
    };
    for (i, r) in pack.rules.iter().enumerate() {
        let who = format!("rule `{}`", r.id);
        let mut filters = vec![("when", &r.filter)];
        if let RuleKind::Ratio { numerator, .. } = &r.kind {
            filters.push(("numerator", numerator));
        }
        for (what, f) in filters {
            if let Some(why) = never_matches(f) {
                warn(i, format!("{who}: `{what}` can never match: {why}"));
            }
        }
        match &r.kind {
            RuleKind::Rate {
                threshold, distinct: None, ..
            } => {
                for (n, s) in r.ladder.iter().enumerate() {
                    if let Some(rate) = s.rate {
                        let allowed = rate * r.window_ms as f64 / 1000.0;
                        if allowed >= *threshold as f64 {
                            warn(
                                i,
                                format!(
                                    "{who}: ladder step {} throttles to {rate}/s, which allows {allowed:.0} per {} window, at or above the threshold of {threshold}: the throttle does not hold the target below what tipped the rule",
                                    n + 1,
                                    crate::duration::format_duration_ms(r.window_ms)
                                ),
                            );
                        }
                    }
                }
            }
            RuleKind::Ratio {
                numerator, ratio, below, ..
            } if numerator.kinds & !r.filter.kinds == 0 => {
                if !below && *ratio > 1.0 {
                    warn(
                        i,
                        format!(
                            "{who}: `ratio` = {ratio} can never be reached: the numerator's records are among the counted ones, so the ratio is at most 1"
                        ),
                    );
                }
                if *below && *ratio >= 1.0 {
                    warn(
                        i,
                        format!("{who}: `ratio` = {ratio} with `below` always holds once `min` records are counted"),
                    );
                }
            }
            RuleKind::Unsubscribe { grace_ms, remember_ms, .. } if remember_ms <= grace_ms => {
                warn(
                    i,
                    format!("{who}: `remember` is not longer than `grace`: no message can ever be a violation"),
                );
            }
            _ => {}
        }
        // Shadowed: an earlier or later rule that fires whenever this one does, at least as
        // early, with a step at least as strong, so this rule never acts first.
        for (j, o) in pack.rules.iter().enumerate() {
            if j != i && !o.shadow && !r.shadow && shadows(o, r) {
                warn(
                    i,
                    format!(
                        "{who} is shadowed by rule `{}`: it fires on the same records at or below this threshold with a step at least as strong, so this rule never acts first",
                        o.id
                    ),
                );
                break;
            }
        }
    }
    for (name, _) in &pack.lexicon.classes {
        let bit = pack.lexicon.bit(name).unwrap_or(0);
        let used = pack.rules.iter().any(|r| {
            let num = match &r.kind {
                RuleKind::Ratio { numerator, .. } => numerator.content,
                _ => u8::MAX,
            };
            (r.filter.content != u8::MAX && r.filter.content & bit != 0) || (num != u8::MAX && num & bit != 0)
        });
        if !used {
            out.push(Diagnostic {
                line: 1,
                col: 1,
                message: format!("content class `{name}` is used by no rule"),
            });
        }
    }
    out
}

/// Why no record can pass `f`, if none can.
fn never_matches(f: &Filter) -> Option<String> {
    let kinds = |k: RecordKind| f.kinds & k.bit() != 0;
    if f.kinds == 0 {
        return Some("no record type".into());
    }
    if (f.answered.is_some() || f.max_dur.is_some()) && !kinds(RecordKind::Call) {
        return Some("`answered`/`max_dur` are only on calls, and `type` excludes call".into());
    }
    if (f.status != u8::MAX || f.err.is_some()) && !kinds(RecordKind::Dlr) {
        return Some("`status`/`err` are only on delivery reports, and `type` excludes dlr".into());
    }
    if (f.content != u8::MAX || f.licensed.is_some()) && !kinds(RecordKind::Sms) {
        return Some("`content`/`licensed` are only on sms, and `type` excludes sms".into());
    }
    None
}

/// Whether every record `b` counts, `a` counts too (masks and conditions at least as wide).
fn wider(a: &Filter, b: &Filter) -> bool {
    let sub = |x: u8, y: u8| x & y == y;
    sub(a.kinds, b.kinds)
        && sub(a.src_class, b.src_class)
        && sub(a.dst_class, b.dst_class)
        && sub(a.port_class, b.port_class)
        && sub(a.status, b.status)
        && sub(a.content, b.content)
        && (a.answered.is_none() || a.answered == b.answered)
        && (a.licensed.is_none() || a.licensed == b.licensed)
        && (a.err.is_none() || a.err == b.err)
        && (a.max_dur.is_none() || a.max_dur == b.max_dur)
}

/// Whether rule `a` makes rule `b` redundant: same target, same measure and window, a
/// wider filter, a threshold at or below `b`'s, and a first step at least as strong.
fn shadows(a: &Rule, b: &Rule) -> bool {
    let same_measure = match (&a.kind, &b.kind) {
        (
            RuleKind::Rate {
                threshold: ta,
                distinct: da,
                sequential: sa,
            },
            RuleKind::Rate {
                threshold: tb,
                distinct: db,
                sequential: sb,
            },
        ) => da == db && sa == sb && ta <= tb,
        _ => false,
    };
    same_measure
        && a.dim == b.dim
        && a.targets == b.targets
        && a.window_ms == b.window_ms
        && a.slide_ms <= b.slide_ms
        && b.slide_ms % a.slide_ms == 0
        && wider(&a.filter, &b.filter)
        && (b.misuse <= a.misuse)
        && a.ladder[0].strength() >= b.ladder[0].strength()
        && b.suspect.is_none()
}

#[cfg(test)]
mod tests {
    use crate::compile;

    fn lint(src: &str) -> Vec<String> {
        super::warnings(&compile(src).unwrap()).into_iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn the_default_pack_is_clean() {
        assert_eq!(lint(crate::DEFAULT_PACK), Vec::<String>::new());
    }

    #[test]
    fn each_warning_names_the_rule_and_why() {
        let w = lint(
            r#"
[content.spam]
terms = ["x"]

[[rule]]
id = "a"
kind = "rate"
dim = "src"
when = { type = ["sms"], answered = true }
window = "1h"
slide = "1m"
threshold = 100
ladder = [{ action = "throttle", rate = 1, for = "1h" }]

[[rule]]
id = "wide"
kind = "rate"
dim = "src"
window = "1h"
slide = "1m"
threshold = 10
ladder = [{ action = "suspend", for = "1h" }]

[[rule]]
id = "narrow"
kind = "rate"
dim = "src"
when = { type = ["sms"] }
window = "1h"
slide = "5m"
threshold = 20
ladder = [{ action = "throttle", rate = 0.001, for = "1h" }]

[[rule]]
id = "r"
kind = "ratio"
dim = "src"
when = { type = ["call"] }
numerator = { type = ["call"], answered = true }
ratio = 1.5
min = 5
window = "1h"
slide = "1m"
ladder = [{ action = "alert", for = "1h" }]
"#,
        );
        assert_eq!(
            w,
            vec![
                "5:1: rule `a`: `when` can never match: `answered`/`max_dur` are only on calls, and `type` excludes call",
                "5:1: rule `a`: ladder step 1 throttles to 1/s, which allows 3600 per 1h window, at or above the threshold of 100: the throttle does not hold the target below what tipped the rule",
                "5:1: rule `a` is shadowed by rule `wide`: it fires on the same records at or below this threshold with a step at least as strong, so this rule never acts first",
                "24:1: rule `narrow` is shadowed by rule `wide`: it fires on the same records at or below this threshold with a step at least as strong, so this rule never acts first",
                "34:1: rule `r`: `ratio` = 1.5 can never be reached: the numerator's records are among the counted ones, so the ratio is at most 1",
                "1:1: content class `spam` is used by no rule",
            ]
        );
    }
}
