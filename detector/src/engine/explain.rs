//! What a rule saw, in words and figures: the reason and evidence of each action, and the
//! contract action built from a step.

use super::*;

fn noun(f: &Filter) -> &'static str {
    use anning_rules::RecordKind as K;
    match f.kinds {
        k if k == K::Sms.bit() => "messages",
        k if k == K::Call.bit() => "calls",
        k if k == K::Dlr.bit() => "delivery reports",
        k if k == K::Complaint.bit() => "complaints",
        _ => "records",
    }
}

/// What a rule saw when it fired.
pub(super) enum Hit {
    Rate {
        count: u64,
    },
    /// A distinct count. The latest values counted stay in the rule's window, for
    /// [`explain`] to read (and mask) in the few firings that become actions: most find
    /// their target under action already.
    Distinct {
        count: u64,
    },
    Near(NearLimitHit),
    Ratio {
        num: u64,
        den: u64,
    },
    Unsubscribe {
        count: u64,
        recent: Vec<(i64, String, String)>,
    },
}

/// Builds the contract action for a rule's step against one target.
#[allow(clippy::too_many_arguments)]
pub(super) fn action(
    pack: &Pack,
    rule: &Rule,
    dim_name: &str,
    key: &str,
    ts: i64,
    level: u32,
    step: &Step,
    reason: &str,
    evidence: serde_json::Value,
    rec: &Record,
) -> Action {
    let until = ts + step.for_ms;
    let verb = match step.action {
        ActionKind::Throttle => format!("throttle to {}/s for {}", step.rate.unwrap_or(0.0), dur(step.for_ms)),
        other => format!("{other} for {}", dur(step.for_ms)),
    };
    Action {
        id: action_id(pack.hash, &rule.id, dim_name, key, ts, level, step.action),
        ts,
        action: step.action,
        dim: dim_name.to_string(),
        key: key.to_string(),
        rule: rule.id.clone(),
        level,
        rate: step.rate,
        until: Some(until),
        reason: format!("{reason}; level {level}: {verb}"),
        evidence,
        pack: pack.hash_hex(),
        shadow: rule.shadow,
        record: Some(rec.to_json()),
    }
}

/// The reason and evidence of `hit`, which rule `rule` found in `window` for `rec`.
pub(super) fn explain(
    rule: &Rule,
    hit: &Hit,
    window: &Window,
    rec: &Record,
    plan: &anning_rules::NumberPlan,
) -> (String, serde_json::Value) {
    let record = rec.id().map(str::to_string);
    match (hit, &rule.kind) {
        (
            Hit::Rate { count } | Hit::Distinct { count, .. },
            RuleKind::Rate {
                threshold,
                distinct,
                sequential,
            },
        ) => {
            let what = match (distinct, sequential) {
                (Some(f), _) => format!("distinct {} values", f.name()),
                (None, Some(d)) => format!("{} each to a number within {d} of the one before", noun(&rule.filter)),
                (None, None) => noun(&rule.filter).to_string(),
            };
            let reason = format!(
                "{count} {what} in the last {} (sliding by {}), at or above the threshold of {threshold}",
                dur(rule.window_ms),
                dur(rule.slide_ms)
            );
            let mut ev = json!({
                "window": dur(rule.window_ms),
                "slide": dur(rule.slide_ms),
                "count": count,
                "threshold": threshold,
            });
            if let Some(f) = distinct {
                ev["distinct"] = json!(Field::name(*f));
            }
            if let Some(d) = sequential {
                ev["sequential"] = json!(d);
            }
            if let (Hit::Distinct { .. }, Some(f), Window::Distinct(d)) = (hit, distinct, window) {
                let shown: Vec<String> =
                    d.1.iter()
                        .map(|x| if f.is_address() { mask_addr(x, plan) } else { x.to_string() })
                        .collect();
                ev["values"] = json!(shown);
            }
            if let Some(id) = record {
                ev["records"] = json!([id]);
            }
            (reason, ev)
        }
        (Hit::Near(h), RuleKind::NearLimit { limit, lo, band, k, n }) => {
            let reason = format!(
                "{} of the last {n} windows of {} between {lo} and {} {} against a limit of {limit}",
                h.in_band,
                dur(rule.window_ms),
                limit - 1,
                noun(&rule.filter)
            );
            let mut ev = json!({
                "window": dur(rule.window_ms),
                "slide": dur(rule.slide_ms),
                "limit": limit,
                "band": band,
                "near": [lo, limit - 1],
                "k": k,
                "n": n,
                "counts": h.counts,
                "window_end": h.boundary * rule.slide_ms,
            });
            if let Some(id) = record {
                ev["records"] = json!([id]);
            }
            (reason, ev)
        }
        (Hit::Ratio { num, den }, RuleKind::Ratio { ratio, min, below, .. }) => {
            let share = *num as f64 / (*den).max(1) as f64;
            let reason = format!(
                "{num} of {den} {} in the last {} ({:.4}), {} {ratio} (at least {min} counted)",
                noun(&rule.filter),
                dur(rule.window_ms),
                share,
                if *below { "at or below" } else { "at or above" },
            );
            let mut ev = json!({
                "window": dur(rule.window_ms),
                "slide": dur(rule.slide_ms),
                "numerator": num,
                "denominator": den,
                "ratio": share,
                "threshold": ratio,
                "below": below,
                "min": min,
            });
            if let Some(id) = record {
                ev["records"] = json!([id]);
            }
            (reason, ev)
        }
        (Hit::Unsubscribe { count, recent }, RuleKind::Unsubscribe { grace_ms, threshold, .. }) => {
            let reason = format!(
                "{count} messages in the last {} to subscribers who had unsubscribed from this signature more than {} earlier (threshold {threshold})",
                dur(rule.window_ms),
                dur(*grace_ms),
            );
            let violations: Vec<serde_json::Value> = recent
                .iter()
                .map(|(ts, who, port)| json!({ "ts": ts, "dst": who, "port": port }))
                .collect();
            let mut ev = json!({
                "window": dur(rule.window_ms),
                "grace": dur(*grace_ms),
                "count": count,
                "threshold": threshold,
                "violations": violations,
            });
            if let Some(id) = record {
                ev["records"] = json!([id]);
            }
            (reason, ev)
        }
        _ => unreachable!("hit matches its rule kind"),
    }
}
