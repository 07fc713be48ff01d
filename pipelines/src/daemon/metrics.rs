//! The daemon's metrics, rendered in the Prometheus text exposition format. No label ever
//! carries a subscriber number: labels are record types, reject reasons, rule ids, action
//! kinds and partition numbers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hdrhistogram::Histogram;

pub struct Metrics {
    pub records_in: [AtomicU64; 4],
    pub rejects: Mutex<BTreeMap<&'static str, u64>>,
    pub actions: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Would-be actions of rules in shadow mode, by rule and kind.
    pub shadow_actions: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Actions not produced again after a restart (their records were committed before).
    pub actions_suppressed: AtomicU64,
    pub dead_letters: AtomicU64,
    /// Messages fetched again that this process had handled already (skipped).
    pub redelivered: AtomicU64,
    /// Scale-out: records a dimension task ran out of the merge's (R, partition, offset)
    /// order, because an input partition announced idle delivered again.
    pub merge_out_of_order: AtomicU64,
    /// Pack reloads that took effect, and that were refused (invalid pack).
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    /// Manual releases that lifted an action, rows written to the audit log, and audit
    /// writes that failed (their rows are kept and retried).
    pub releases: AtomicU64,
    pub audit_rows: AtomicU64,
    pub audit_failures: AtomicU64,
    /// Checkpoints written, checkpoint writes that failed, and snapshots found unusable on
    /// start (corrupt, truncated, another format or topic).
    pub checkpoints: AtomicU64,
    pub checkpoint_failures: AtomicU64,
    pub checkpoint_load_failures: AtomicU64,
    /// The last checkpoint: size, keys, and how long the shards were paused for it (ms).
    pub checkpoint_bytes: AtomicU64,
    pub checkpoint_keys: AtomicU64,
    pub checkpoint_pause_ms: AtomicU64,
    /// Keys restored from a snapshot at start, and how long reading it took (ms).
    pub restored_keys: AtomicU64,
    pub restore_ms: AtomicU64,
    /// Throttles and suspensions the allowlist held back, by rule.
    pub allowlisted: Mutex<BTreeMap<String, u64>>,
    /// Name and hash of the pack running.
    pub pack: Mutex<(String, String)>,
    pub batches: AtomicU64,
    pub commits: AtomicU64,
    pub commit_errors: AtomicU64,
    pub produce_retries: AtomicU64,
    /// Messages produced and not yet acknowledged.
    pub in_flight: AtomicI64,
    /// Records waiting in the shard queues.
    pub shard_queue: AtomicI64,
    /// Consumer lag per partition (high watermark − position).
    pub lag: Mutex<BTreeMap<i32, i64>>,
    pub assigned: AtomicU64,
    /// Scale-out: dimension tasks whose merge still waits on an input partition that has not
    /// been announced idle, or still holds records.
    pub merges_waiting: AtomicI64,
    pub ready: AtomicBool,
    pub watermark_ms: AtomicI64,
    /// Milliseconds (rendered as seconds) from a tipping record's event time to its action's acknowledgement.
    pub event_latency: Mutex<Histogram<u64>>,
    /// Milliseconds (rendered as seconds) from a tipping record's arrival to its action's acknowledgement.
    pub ingest_latency: Mutex<Histogram<u64>>,
    /// Microseconds (rendered as seconds) from this process polling a tipping record to its
    /// action's acknowledgement: the daemon's own part of `ingest_latency`.
    pub poll_latency: Mutex<Histogram<u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let h = || Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static bounds"));
        Metrics {
            records_in: Default::default(),
            rejects: Default::default(),
            actions: Default::default(),
            shadow_actions: Default::default(),
            actions_suppressed: Default::default(),
            dead_letters: Default::default(),
            redelivered: Default::default(),
            merge_out_of_order: Default::default(),
            reloads: Default::default(),
            reload_failures: Default::default(),
            releases: Default::default(),
            audit_rows: Default::default(),
            audit_failures: Default::default(),
            checkpoints: Default::default(),
            checkpoint_failures: Default::default(),
            checkpoint_load_failures: Default::default(),
            checkpoint_bytes: Default::default(),
            checkpoint_keys: Default::default(),
            checkpoint_pause_ms: Default::default(),
            restored_keys: Default::default(),
            restore_ms: Default::default(),
            allowlisted: Default::default(),
            pack: Default::default(),
            batches: Default::default(),
            commits: Default::default(),
            commit_errors: Default::default(),
            produce_retries: Default::default(),
            in_flight: Default::default(),
            shard_queue: Default::default(),
            lag: Default::default(),
            assigned: Default::default(),
            merges_waiting: Default::default(),
            ready: Default::default(),
            watermark_ms: AtomicI64::new(0),
            event_latency: h(),
            ingest_latency: h(),
            poll_latency: h(),
        }
    }
}

const TYPES: [&str; 4] = ["sms", "dlr", "call", "complaint"];
const QUANTILES: [f64; 5] = [0.5, 0.9, 0.99, 0.999, 1.0];

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    /// An action acknowledged: milliseconds since its tipping record's event time and Kafka
    /// timestamp, and the time since it was polled here, when known.
    pub fn record_latency(&self, event_ms: i64, ingest_ms: i64, polled: Option<Duration>) {
        if let Ok(mut h) = self.event_latency.lock() {
            let _ = h.record(event_ms.max(1) as u64);
        }
        if let Ok(mut h) = self.ingest_latency.lock() {
            let _ = h.record(ingest_ms.max(1) as u64);
        }
        if let Some(d) = polled
            && let Ok(mut h) = self.poll_latency.lock()
        {
            let _ = h.record((d.as_micros() as u64).max(1));
        }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut o = String::with_capacity(4096);
        family(&mut o, "anning_records_in_total", "counter", "Records decoded, by type.");
        for (i, t) in TYPES.iter().enumerate() {
            let _ = writeln!(o, "anning_records_in_total{{type=\"{t}\"}} {}", self.records_in[i].load(Relaxed));
        }
        family(
            &mut o,
            "anning_rejects_total",
            "counter",
            "Records rejected to the dead-letter topic, by reason.",
        );
        for (r, n) in self.rejects.lock().expect("metrics lock").iter() {
            let _ = writeln!(o, "anning_rejects_total{{reason=\"{r}\"}} {n}");
        }
        family(
            &mut o,
            "anning_actions_total",
            "counter",
            "Actions produced and acknowledged, by rule and kind.",
        );
        for ((rule, kind), n) in self.actions.lock().expect("metrics lock").iter() {
            let _ = writeln!(o, "anning_actions_total{{rule=\"{}\",action=\"{kind}\"}} {n}", escape(rule));
        }
        family(
            &mut o,
            "anning_shadow_actions_total",
            "counter",
            "Would-be actions of rules in shadow mode (shadow topic, never enforced), by rule and kind.",
        );
        for ((rule, kind), n) in self.shadow_actions.lock().expect("metrics lock").iter() {
            let _ = writeln!(o, "anning_shadow_actions_total{{rule=\"{}\",action=\"{kind}\"}} {n}", escape(rule));
        }
        family(
            &mut o,
            "anning_allowlisted_total",
            "counter",
            "Throttles and suspensions held back by the allowlist, by rule.",
        );
        for (rule, n) in self.allowlisted.lock().expect("metrics lock").iter() {
            let _ = writeln!(o, "anning_allowlisted_total{{rule=\"{}\"}} {n}", escape(rule));
        }
        {
            let (name, hash) = &*self.pack.lock().expect("metrics lock");
            family(&mut o, "anning_pack_info", "gauge", "The rule pack running: name and content hash.");
            let _ = writeln!(o, "anning_pack_info{{pack=\"{}\",hash=\"{hash}\"}} 1", escape(name));
        }
        let counters: [(&str, &str, &AtomicU64); 16] = [
            ("anning_checkpoints_total", "State checkpoints written.", &self.checkpoints),
            (
                "anning_checkpoint_failures_total",
                "Checkpoint writes that failed (the previous snapshot stays).",
                &self.checkpoint_failures,
            ),
            (
                "anning_checkpoint_load_failures_total",
                "Snapshots found unusable at start (corrupt, truncated, another format, topic or group); the one before was tried.",
                &self.checkpoint_load_failures,
            ),
            ("anning_reloads_total", "Rule pack reloads that took effect.", &self.reloads),
            (
                "anning_releases_total",
                "Manual releases (POST /actions/release) that lifted an action.",
                &self.releases,
            ),
            ("anning_audit_rows_total", "Rows written to the audit log.", &self.audit_rows),
            (
                "anning_audit_failures_total",
                "Audit log writes that failed; their rows are kept and retried.",
                &self.audit_failures,
            ),
            (
                "anning_reload_failures_total",
                "Rule pack reloads refused (the pack or allowlist had errors; the old pack kept running).",
                &self.reload_failures,
            ),
            (
                "anning_redelivered_total",
                "Messages fetched again after an outage or rebalance, already handled, skipped.",
                &self.redelivered,
            ),
            (
                "anning_merge_out_of_order_total",
                "Scale-out: records run out of the deterministic merge order, because an input partition announced idle delivered again (actions may then differ from a replay).",
                &self.merge_out_of_order,
            ),
            (
                "anning_actions_suppressed_total",
                "Actions of records committed before a restart, not produced again.",
                &self.actions_suppressed,
            ),
            (
                "anning_dead_letters_total",
                "Messages written to the dead-letter topic.",
                &self.dead_letters,
            ),
            ("anning_batches_total", "Batches processed and committed.", &self.batches),
            ("anning_commits_total", "Offset commits that succeeded.", &self.commits),
            (
                "anning_commit_errors_total",
                "Offset commits that failed and were retried.",
                &self.commit_errors,
            ),
            (
                "anning_produce_retries_total",
                "Messages produced again after a failed delivery.",
                &self.produce_retries,
            ),
        ];
        for (name, help, v) in counters {
            family(&mut o, name, "counter", help);
            let _ = writeln!(o, "{name} {}", v.load(Relaxed));
        }
        family(
            &mut o,
            "anning_watermark_seconds",
            "gauge",
            "Event-time watermark, seconds since the epoch.",
        );
        let _ = writeln!(o, "anning_watermark_seconds {:.3}", self.watermark_ms.load(Relaxed) as f64 / 1000.0);
        let seconds: [(&str, &str, &AtomicU64); 2] = [
            (
                "anning_checkpoint_pause_seconds",
                "How long the shards paused for the last checkpoint.",
                &self.checkpoint_pause_ms,
            ),
            (
                "anning_restore_seconds",
                "How long reading and restoring the snapshot took at start.",
                &self.restore_ms,
            ),
        ];
        for (name, help, v) in seconds {
            family(&mut o, name, "gauge", help);
            let _ = writeln!(o, "{name} {:.3}", v.load(Relaxed) as f64 / 1000.0);
        }
        let gauges: [(&str, &str, i64); 8] = [
            (
                "anning_checkpoint_bytes",
                "Size of the last checkpoint.",
                self.checkpoint_bytes.load(Relaxed) as i64,
            ),
            (
                "anning_checkpoint_keys",
                "Keys held in the last checkpoint.",
                self.checkpoint_keys.load(Relaxed) as i64,
            ),
            (
                "anning_restored_keys",
                "Keys restored from a snapshot at start.",
                self.restored_keys.load(Relaxed) as i64,
            ),
            (
                "anning_in_flight_messages",
                "Messages produced and not yet acknowledged.",
                self.in_flight.load(Relaxed),
            ),
            (
                "anning_shard_queue_records",
                "Records waiting for the shard workers.",
                self.shard_queue.load(Relaxed),
            ),
            (
                "anning_assigned_partitions",
                "Input partitions assigned to this daemon.",
                self.assigned.load(Relaxed) as i64,
            ),
            (
                "anning_merges_waiting_tasks",
                "Scale-out: dimension tasks here whose merge waits on an input partition not announced idle or holds records (0 once the group has run everything it was sent).",
                self.merges_waiting.load(Relaxed),
            ),
            (
                "anning_ready",
                "1 once partitions are assigned and state is rebuilt.",
                self.ready.load(Relaxed) as i64,
            ),
        ];
        for (name, help, v) in gauges {
            family(&mut o, name, "gauge", help);
            let _ = writeln!(o, "{name} {v}");
        }
        family(
            &mut o,
            "anning_consumer_lag",
            "gauge",
            "Messages behind the partition's high watermark.",
        );
        for (p, lag) in self.lag.lock().expect("metrics lock").iter() {
            let _ = writeln!(o, "anning_consumer_lag{{partition=\"{p}\"}} {lag}");
        }
        // (name, help, histogram, its unit in seconds, decimals shown)
        for (name, help, h, unit, decimals) in [
            (
                "anning_event_to_action_seconds",
                "From the tipping record's event time to the action's acknowledgement.",
                &self.event_latency,
                1e-3,
                3,
            ),
            (
                "anning_ingest_to_action_seconds",
                "From the tipping record's Kafka timestamp (produce time) to the action's acknowledgement; in scale-out mode too (the input message's timestamp travels with the re-keyed record).",
                &self.ingest_latency,
                1e-3,
                3,
            ),
            (
                "anning_poll_to_action_seconds",
                "From this daemon polling the tipping record to the action's acknowledgement: its own part of ingest_to_action (the rest is the producer and the broker). Not kept in scale-out mode.",
                &self.poll_latency,
                1e-6,
                6,
            ),
        ] {
            family(&mut o, name, "summary", help);
            let h = h.lock().expect("metrics lock");
            for q in QUANTILES {
                let v = if h.is_empty() { 0 } else { h.value_at_quantile(q) };
                let _ = writeln!(o, "{name}{{quantile=\"{q}\"}} {:.*}", decimals, v as f64 * unit);
            }
            let sum: u64 = h.iter_recorded().map(|v| v.value_iterated_to() * v.count_at_value()).sum();
            let _ = writeln!(o, "{name}_sum {:.*}\n{name}_count {}", decimals, sum as f64 * unit, h.len());
        }
        o
    }
}
