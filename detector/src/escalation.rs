//! The escalation ladder of one (target, rule), after fail2ban's `bantime.increment`:
//! each offence climbs one rung; past the last rung the last step repeats with its duration
//! multiplied by `factor` (capped at `max`); each `decay` of good behaviour after an action
//! lapses steps one rung back down.

use anning_rules::{Escalation, Step};

/// Offence level of one rule against one target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ladder {
    /// Level of the last action this rule took against the target (0 = none).
    level: u32,
    /// When that action lapses; decay is counted from here.
    anchor: i64,
}

impl Ladder {
    /// The level at `ts`, after decay.
    pub fn level_at(&self, ts: i64, esc: &Escalation) -> u32 {
        if self.level == 0 || ts <= self.anchor {
            return self.level;
        }
        let steps = (ts - self.anchor) / esc.decay_ms;
        self.level.saturating_sub(steps.min(u32::MAX as i64) as u32)
    }

    /// Whether this rule's own last action against the target is still in force at `ts`
    /// (the rule does not climb again until it lapses).
    pub fn in_force(&self, ts: i64) -> bool {
        self.level > 0 && ts < self.anchor
    }

    /// Records an action at `level` lapsing at `until`.
    pub fn acted(&mut self, level: u32, until: i64) {
        self.level = level;
        self.anchor = until;
    }

    /// Whether the ladder is back at the bottom by `ts` (state can be forgotten).
    pub fn is_idle_at(&self, ts: i64, esc: &Escalation) -> bool {
        self.level_at(ts, esc) == 0
    }
}

/// The step for `level` (1-based) of `ladder`.
pub fn step_for(ladder: &[Step], level: u32, esc: &Escalation) -> Step {
    let last = ladder.len() as u32;
    let mut step = ladder[(level.min(last) - 1) as usize].clone();
    if level > last {
        let mult = esc.factor.powi((level - last).min(64) as i32);
        step.for_ms = ((step.for_ms as f64) * mult).min(esc.max_ms as f64) as i64;
    }
    step.for_ms = step.for_ms.min(esc.max_ms);
    step
}

/// The action a target is under, shared by every rule acting on it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Active {
    #[serde(with = "step_serde")]
    pub step: Step,
    /// When it lapses.
    pub until: i64,
}

impl Active {
    /// Whether this action, still in force at `ts`, already covers `step`: a stronger
    /// action covers a weaker one, an equal throttle or suspension covers another; an alert
    /// never covers another rule's alert (the NOC hears of each rule that fired).
    pub fn covers(&self, step: &Step, ts: i64) -> bool {
        let (mine, theirs) = (self.step.strength(), step.strength());
        self.until > ts && (mine > theirs || (mine == theirs && step.action != anning_rules::ActionKind::Alert))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anning_rules::ActionKind;

    fn esc() -> Escalation {
        Escalation {
            decay_ms: 1000,
            factor: 2.0,
            max_ms: 10_000,
        }
    }

    #[test]
    fn climbs_repeats_and_decays() {
        let ladder = vec![
            Step {
                action: ActionKind::Throttle,
                rate: Some(1.0),
                for_ms: 100,
            },
            Step {
                action: ActionKind::Suspend,
                rate: None,
                for_ms: 1000,
            },
        ];
        assert_eq!(step_for(&ladder, 1, &esc()).action, ActionKind::Throttle);
        assert_eq!(step_for(&ladder, 2, &esc()).for_ms, 1000);
        assert_eq!(step_for(&ladder, 3, &esc()).for_ms, 2000);
        assert_eq!(step_for(&ladder, 9, &esc()).for_ms, 10_000);
        let mut l = Ladder::default();
        l.acted(3, 5000);
        assert_eq!(l.level_at(5000, &esc()), 3);
        assert_eq!(l.level_at(6999, &esc()), 2);
        assert_eq!(l.level_at(8000, &esc()), 0);
        assert!(l.is_idle_at(8000, &esc()));
    }

    #[test]
    fn stronger_action_covers_weaker() {
        let suspend = Step {
            action: ActionKind::Suspend,
            rate: None,
            for_ms: 1,
        };
        let slow = Step {
            action: ActionKind::Throttle,
            rate: Some(0.1),
            for_ms: 1,
        };
        let fast = Step {
            action: ActionKind::Throttle,
            rate: Some(1.0),
            for_ms: 1,
        };
        let a = Active {
            step: slow.clone(),
            until: 100,
        };
        assert!(a.covers(&fast, 50));
        assert!(a.covers(&slow, 50));
        assert!(!a.covers(&suspend, 50));
        assert!(!a.covers(&fast, 100), "a lapsed action covers nothing");
    }
}

/// [`Step`] in snapshots: the action by name, so a snapshot does not depend on the rules
/// crate's enum layout.
mod step_serde {
    use anning_rules::{ActionKind, Step};
    use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};

    #[derive(Serialize, Deserialize)]
    struct Wire<'a> {
        action: &'a str,
        rate: Option<f64>,
        for_ms: i64,
    }

    pub fn serialize<S: Serializer>(step: &Step, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            action: step.action.name(),
            rate: step.rate,
            for_ms: step.for_ms,
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Step, D::Error> {
        #[derive(Deserialize)]
        struct Owned {
            action: String,
            rate: Option<f64>,
            for_ms: i64,
        }
        let w = Owned::deserialize(d)?;
        let action = ActionKind::from_name(&w.action).ok_or_else(|| D::Error::custom(format!("unknown action `{}`", w.action)))?;
        Ok(Step {
            action,
            rate: w.rate,
            for_ms: w.for_ms,
        })
    }
}
