//! The daemon's settings: built-in defaults, then a TOML file (`--config`), then `ANNING_*`
//! environment variables, then flags — each overriding the one before.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where the daemon starts reading a newly assigned partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rebuild {
    /// From the partition's beginning, rebuilding window state; actions caused by records
    /// below the group's committed offset were delivered before and are not produced again.
    Earliest,
    /// From the committed offset, with empty state (counters restart).
    Committed,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    pub brokers: String,
    pub group: String,
    pub input_topic: String,
    pub actions_topic: String,
    /// Where rules in shadow mode write their would-be actions.
    pub shadow_topic: String,
    pub dlq_topic: String,
    /// Admin HTTP address (`/metrics`, `/healthz`, `/readyz`).
    pub admin: String,
    /// Shard worker threads, and as many decoding threads (scale-out mode: the threads that
    /// run the dimension tasks).
    pub threads: usize,
    pub rules: Option<PathBuf>,
    /// Allowlist file (`[[allow]]` tables), reloaded with the rules.
    pub allowlist: Option<PathBuf>,
    /// Bearer token that `POST /rules/reload` on the admin port must present; without one
    /// the endpoint refuses every request (SIGHUP still reloads).
    pub admin_token: Option<String>,
    pub registry: Option<PathBuf>,
    /// Create the input, actions and dead-letter topics if absent.
    pub create_topics: bool,
    /// Partitions of topics the daemon creates.
    pub partitions: i32,
    /// Records per processing batch at most; offsets are committed per batch.
    pub batch_max: usize,
    /// Longest a batch gathers, in ms: it takes the first message that comes, then what has
    /// already arrived, until this long or `batch_max`.
    pub batch_ms: u64,
    pub rebuild: Rebuild,
    /// librdkafka properties for both the consumer and the producer (SASL, TLS, …).
    pub kafka: BTreeMap<String, String>,
    /// librdkafka properties for the consumer only.
    pub consumer: BTreeMap<String, String>,
    /// librdkafka properties for the producer only.
    pub producer: BTreeMap<String, String>,
    /// The audit log: every action produced and every release, as Parquet by day
    /// (`anning explain`, `anning query --audit`). Off when unset.
    pub audit_dir: Option<PathBuf>,
    /// Days the audit log keeps, counted back from its newest day.
    pub audit_retention_days: u32,
    /// How often buffered audit rows are written (ms); also at shutdown.
    pub audit_flush_ms: u64,
    /// Where state snapshots go (see `checkpoint`). Off when unset: a restart rebuilds per
    /// `rebuild`.
    pub checkpoint_dir: Option<PathBuf>,
    /// How often a snapshot is taken (ms); also at shutdown.
    pub checkpoint_interval_ms: u64,
    /// Snapshots kept (at least 2: a corrupt newest one falls back to the one before).
    pub checkpoint_keep: usize,
    /// Scale-out: re-key records through `{repartition_prefix}.{dim}` topics so several
    /// daemons in one group split the work with the same actions as one (see `group`).
    pub repartition: bool,
    pub repartition_prefix: String,
    /// Partitions of each repartition topic (0: as many as the input topic has).
    pub repartition_partitions: i32,
    /// With `repartition`: how long (ms) an input partition must be caught up and silent
    /// before the merges stop waiting for it.
    pub idle_ms: u64,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            brokers: "127.0.0.1:9092".into(),
            group: "anning".into(),
            input_topic: "signaling".into(),
            actions_topic: "actions".into(),
            shadow_topic: "actions.shadow".into(),
            dlq_topic: "signaling.dlq".into(),
            admin: "127.0.0.1:9898".into(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            rules: None,
            allowlist: None,
            admin_token: None,
            registry: None,
            create_topics: true,
            partitions: 1,
            batch_max: 20_000,
            batch_ms: 50,
            rebuild: Rebuild::Earliest,
            kafka: BTreeMap::new(),
            consumer: BTreeMap::new(),
            producer: BTreeMap::new(),
            audit_dir: None,
            audit_retention_days: crate::audit::DEFAULT_RETENTION_DAYS,
            audit_flush_ms: 10_000,
            checkpoint_dir: None,
            checkpoint_interval_ms: 30_000,
            checkpoint_keep: 3,
            repartition: false,
            repartition_prefix: "anning.repartition".into(),
            repartition_partitions: 0,
            idle_ms: 3_000,
        }
    }
}

impl DaemonConfig {
    /// Reads a TOML file over the defaults; errors name the file, line and column.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}:{e}", path.display()))
    }

    /// Parses TOML text; an error is `line:col: message`.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str::<DaemonConfig>(text).map_err(|e| {
            let (line, col) = e
                .span()
                .map(|s| {
                    let before = &text[..s.start.min(text.len())];
                    (
                        before.matches('\n').count() + 1,
                        before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1,
                    )
                })
                .unwrap_or((1, 1));
            format!("{line}:{col}: {}", e.message())
        })
    }

    /// Applies `ANNING_*` variables: `ANNING_BROKERS`, `ANNING_GROUP`, `ANNING_INPUT_TOPIC`,
    /// `ANNING_ACTIONS_TOPIC`, `ANNING_DLQ_TOPIC`, `ANNING_ADMIN`, `ANNING_THREADS`,
    /// `ANNING_RULES`, `ANNING_REGISTRY`, `ANNING_BATCH_MAX`, `ANNING_BATCH_MS`,
    /// `ANNING_AUDIT_DIR`, `ANNING_AUDIT_RETENTION_DAYS`, `ANNING_AUDIT_FLUSH_MS`,
    /// `ANNING_CHECKPOINT_DIR`, `ANNING_CHECKPOINT_INTERVAL_MS`, `ANNING_CHECKPOINT_KEEP`,
    /// `ANNING_REPARTITION`, `ANNING_REPARTITION_PREFIX`, `ANNING_REPARTITION_PARTITIONS`,
    /// `ANNING_IDLE_MS`,
    /// `ANNING_REBUILD`, and `ANNING_KAFKA_<PROPERTY>` for a librdkafka property with dots
    /// written as underscores (`ANNING_KAFKA_SECURITY_PROTOCOL=SASL_SSL`).
    pub fn apply_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) -> Result<(), String> {
        for (k, v) in vars {
            let Some(name) = k.strip_prefix("ANNING_") else { continue };
            let num = |v: &str| v.parse::<u64>().map_err(|_| format!("{k}: `{v}` is not a number"));
            match name {
                "BROKERS" => self.brokers = v,
                "GROUP" => self.group = v,
                "INPUT_TOPIC" => self.input_topic = v,
                "ACTIONS_TOPIC" => self.actions_topic = v,
                "SHADOW_TOPIC" => self.shadow_topic = v,
                "DLQ_TOPIC" => self.dlq_topic = v,
                "ADMIN" => self.admin = v,
                "THREADS" => self.threads = num(&v)? as usize,
                "RULES" => self.rules = Some(v.into()),
                "ALLOWLIST" => self.allowlist = Some(v.into()),
                "ADMIN_TOKEN" => self.admin_token = Some(v),
                "REGISTRY" => self.registry = Some(v.into()),
                "BATCH_MAX" => self.batch_max = num(&v)? as usize,
                "BATCH_MS" => self.batch_ms = num(&v)?,
                "AUDIT_DIR" => self.audit_dir = Some(v.into()),
                "AUDIT_RETENTION_DAYS" => self.audit_retention_days = num(&v)? as u32,
                "AUDIT_FLUSH_MS" => self.audit_flush_ms = num(&v)?,
                "CHECKPOINT_DIR" => self.checkpoint_dir = Some(v.into()),
                "CHECKPOINT_INTERVAL_MS" => self.checkpoint_interval_ms = num(&v)?,
                "CHECKPOINT_KEEP" => self.checkpoint_keep = num(&v)? as usize,
                "REPARTITION" => {
                    self.repartition = match v.as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(format!("{k}: `{v}` is not true or false")),
                    }
                }
                "REPARTITION_PREFIX" => self.repartition_prefix = v,
                "REPARTITION_PARTITIONS" => self.repartition_partitions = num(&v)? as i32,
                "IDLE_MS" => self.idle_ms = num(&v)?,
                "REBUILD" => {
                    self.rebuild = match v.as_str() {
                        "earliest" => Rebuild::Earliest,
                        "committed" => Rebuild::Committed,
                        _ => return Err(format!("{k}: `{v}` is not earliest or committed")),
                    }
                }
                other => {
                    if let Some(prop) = other.strip_prefix("KAFKA_") {
                        self.kafka.insert(prop.to_ascii_lowercase().replace('_', "."), v);
                    }
                }
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.threads == 0 || self.batch_max == 0 {
            return Err("threads and batch_max must be at least 1".into());
        }
        if self.checkpoint_dir.is_some() && self.checkpoint_interval_ms == 0 {
            return Err("checkpoint_interval_ms must be at least 1".into());
        }
        if self.partitions < 1 {
            return Err("partitions must be at least 1".into());
        }
        for t in [&self.input_topic, &self.actions_topic, &self.shadow_topic, &self.dlq_topic] {
            if t.is_empty() {
                return Err("topic names must not be empty".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_environment_override_defaults_and_errors_are_located() {
        let mut c = DaemonConfig::parse("group = \"noc\"\nthreads = 3\n[kafka]\n\"security.protocol\" = \"SASL_SSL\"\n").unwrap();
        assert_eq!((c.group.as_str(), c.threads, c.input_topic.as_str()), ("noc", 3, "signaling"));
        c.apply_env([
            ("ANNING_GROUP".to_string(), "night".to_string()),
            ("ANNING_KAFKA_SASL_MECHANISM".to_string(), "PLAIN".to_string()),
            ("HOME".to_string(), "/root".to_string()),
        ])
        .unwrap();
        assert_eq!(c.group, "night");
        assert_eq!(c.kafka["sasl.mechanism"], "PLAIN");
        assert_eq!(c.kafka["security.protocol"], "SASL_SSL");
        let e = DaemonConfig::parse("group = \"a\"\nthreds = 2\n").unwrap_err();
        assert!(e.starts_with("2:1: unknown field `threds`"), "{e}");
        let e = c.apply_env([("ANNING_THREADS".to_string(), "many".to_string())]).unwrap_err();
        assert_eq!(e, "ANNING_THREADS: `many` is not a number");
    }

    #[test]
    fn the_example_config_parses_to_the_defaults() {
        let c = DaemonConfig::parse(include_str!("../../../ops/anning.toml")).unwrap();
        let d = DaemonConfig::default();
        assert_eq!(
            (c.brokers, c.group, c.input_topic, c.admin),
            (d.brokers, d.group, d.input_topic, d.admin)
        );
        assert_eq!((c.batch_max, c.rebuild, c.partitions), (d.batch_max, d.rebuild, d.partitions));
        assert_eq!(
            (c.audit_dir, c.audit_retention_days, c.audit_flush_ms),
            (d.audit_dir, d.audit_retention_days, d.audit_flush_ms)
        );
        assert_eq!(
            (c.checkpoint_dir, c.checkpoint_interval_ms, c.checkpoint_keep),
            (d.checkpoint_dir, d.checkpoint_interval_ms, d.checkpoint_keep)
        );
        assert_eq!(
            (c.repartition, c.repartition_prefix, c.repartition_partitions, c.idle_ms),
            (d.repartition, d.repartition_prefix, d.repartition_partitions, d.idle_ms)
        );
        let mut e = DaemonConfig::default();
        e.apply_env([
            ("ANNING_REPARTITION".to_string(), "true".to_string()),
            ("ANNING_CHECKPOINT_DIR".to_string(), "/var/lib/anning/ckpt".to_string()),
        ])
        .unwrap();
        assert!(e.repartition);
        assert_eq!(e.checkpoint_dir.as_deref(), Some(Path::new("/var/lib/anning/ckpt")));
        let err = e.apply_env([("ANNING_REPARTITION".to_string(), "yes".to_string())]).unwrap_err();
        assert_eq!(err, "ANNING_REPARTITION: `yes` is not true or false");
    }
}
