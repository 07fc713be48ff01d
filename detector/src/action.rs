//! Actions per `contract/actions.md`, with deterministic ids.

use anning_rules::ActionKind;
use serde::{Serialize, Serializer};

/// One decision. Field order follows the contract; `pack` is an extension (the pack's
/// content hash, so every action says which rules produced it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Action {
    /// Deterministic: a hash of the pack, rule, target, time, level and action.
    pub id: String,
    /// Event time of the record that tipped the decision.
    pub ts: i64,
    #[serde(serialize_with = "kind_name")]
    pub action: ActionKind,
    pub dim: String,
    pub key: String,
    pub rule: String,
    pub level: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<i64>,
    pub reason: String,
    pub evidence: serde_json::Value,
    pub pack: String,
    /// A would-be action of a rule in shadow mode: never to be enforced (contract
    /// extension: present, and `true`, only on those).
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub shadow: bool,
    /// The record that tipped the decision, as JSON (not part of the contract action: the
    /// audit log keeps it, with subscriber numbers as given).
    #[serde(skip)]
    pub record: Option<String>,
}

fn kind_name<S: Serializer>(k: &ActionKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(k.name())
}

/// The deterministic id of an action.
pub fn action_id(pack_hash: u64, rule: &str, dim: &str, key: &str, ts: i64, level: u32, kind: ActionKind) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::with_seed(pack_hash);
    for part in [rule.as_bytes(), &[0], dim.as_bytes(), &[0], key.as_bytes(), &[0]] {
        h.update(part);
    }
    h.update(&ts.to_le_bytes());
    h.update(&level.to_le_bytes());
    h.update(kind.name().as_bytes());
    format!("{:016x}", h.digest())
}

impl Action {
    /// Sort order of output: by time, then target, then rule, then id.
    pub fn sort_key(&self) -> (i64, &str, &str, &str, &str) {
        (self.ts, &self.dim, &self.key, &self.rule, &self.id)
    }
}
