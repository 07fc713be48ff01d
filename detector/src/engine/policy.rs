//! The pack's policy over steps: allowlisted targets are left alone (counted once per
//! would-be action), protected ports only alerted on by rules that are not misuse rules.

use super::*;

/// The pack's policy over steps: allowlist and protected ports.
#[derive(Debug, Default)]
pub(super) struct Policy {
    /// Allowlist: (dim, key) → expiry of each entry.
    pub(super) allow: HashMap<(usize, String), Vec<i64>>,
    /// (rule, dim, key) → until when a held-back action is not counted again: one count and
    /// one log line per would-be action, not per record while the rule's condition holds.
    pub(super) quiet: HashMap<(usize, usize, String), i64>,
    /// Throttles and suspensions held back by the allowlist since the last
    /// [`Engine::take_allowed`].
    pub(super) allowed: Vec<Allowed>,
}

/// A throttle or suspension the allowlist held back.
#[derive(Debug, Clone, PartialEq)]
pub struct Allowed {
    pub ts: i64,
    pub rule: String,
    pub dim: String,
    pub key: String,
}

pub(super) fn allow_map(pack: &Pack) -> HashMap<(usize, String), Vec<i64>> {
    let mut allow: HashMap<(usize, String), Vec<i64>> = HashMap::new();
    for a in &pack.allow {
        allow.entry((a.dim, a.key.clone())).or_default().push(a.until);
    }
    allow
}

impl Policy {
    /// The step a rule takes against `key` of dim `d` at `level`, after the pack's policy:
    /// `None` when the target is allowlisted (counted); an alert instead of a throttle or
    /// suspension when the target is a protected port and the rule is not a misuse rule.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn apply(
        &mut self,
        stats: &mut EngineStats,
        pack: &Pack,
        r: usize,
        d: usize,
        key: &str,
        rec: &Record,
        level: u32,
    ) -> Option<Step> {
        let rule = &pack.rules[r];
        let mut step = step_for(&rule.ladder, level, &pack.escalation);
        if step.action == ActionKind::Alert {
            return Some(step);
        }
        if !self.allow.is_empty()
            && let Some(untils) = self.allow.get(&(d, key.to_string()))
            && untils.iter().any(|&u| rec.ts < u)
        {
            let q = self.quiet.entry((r, d, key.to_string())).or_insert(i64::MIN);
            if rec.ts < *q {
                return None;
            }
            *q = rec.ts + step.for_ms;
            if self.quiet.len() > 4096 {
                self.quiet.retain(|_, until| *until > rec.ts);
            }
            stats.allowed[r] += 1;
            self.allowed.push(Allowed {
                ts: rec.ts,
                rule: rule.id.clone(),
                dim: pack.dims[d].name(),
                key: key.to_string(),
            });
            return None;
        }
        if !rule.misuse && pack.protect & rec.port_class.bit() != 0 && rec.get(Slot::Port).is_some() {
            let parts = &pack.dims[d].parts;
            let names_port = parts.iter().any(|f| {
                matches!(f, Field::Port | Field::Sig | Field::Sp) || (*f == Field::Src && rec.src_class == anning_rules::AddrClass::Port)
            });
            if names_port {
                stats.protected[r] += 1;
                step = Step {
                    action: ActionKind::Alert,
                    rate: None,
                    for_ms: step.for_ms,
                };
            }
        }
        Some(step)
    }
}
