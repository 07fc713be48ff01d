//! What the daemon produces: actions, dead letters and (scale-out) records for internal
//! topics, each kept until acknowledged.

use std::sync::Arc;
use std::time::Instant;

use anning_detector::Action;

/// A message to produce, kept until acknowledged.
pub(super) struct Out {
    pub(super) topic: Topic,
    pub(super) key: Vec<u8>,
    pub(super) payload: Vec<u8>,
    pub(super) headers: Vec<(&'static str, Vec<u8>)>,
    /// For an action: what its acknowledgement is counted and timed against.
    pub(super) action: Option<Tipping>,
}

/// An action's rule and kind, and when its tipping record happened (event time, ms), entered
/// Kafka (its timestamp, ms) and was polled here (unknown for a release, which no record
/// tipped, and in scale-out, where records reach the rules through dimension tasks).
pub(super) struct Tipping {
    pub(super) rule: String,
    pub(super) kind: &'static str,
    pub(super) event_ts: i64,
    pub(super) ingested_ms: i64,
    pub(super) polled: Option<Instant>,
}

#[derive(Clone)]
pub(super) enum Topic {
    Actions,
    /// Would-be actions of rules in shadow mode.
    Shadow,
    Dlq,
    /// An internal topic (scale-out), at a partition when given.
    Named(Arc<str>, Option<i32>),
}

/// An action to produce, timed from its tipping record.
pub(super) fn action_out(a: &Action, ingested_ms: i64, polled: Option<Instant>, event_ts: i64) -> Out {
    Out {
        topic: if a.shadow { Topic::Shadow } else { Topic::Actions },
        key: format!("{}:{}", a.dim, a.key).into_bytes(),
        payload: serde_json::to_vec(a).expect("actions serialize"),
        headers: Vec::new(),
        action: Some(Tipping {
            rule: a.rule.clone(),
            kind: a.action.name(),
            event_ts,
            ingested_ms,
            polled,
        }),
    }
}
