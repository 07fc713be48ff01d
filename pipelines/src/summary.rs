//! The replay summary printed on stderr: records by type, rejects by reason with samples,
//! actions by rule and kind, state, elapsed, records/s, peak memory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use anning_rules::Pack;

use crate::runtime::Outcome;

/// Peak resident set size of this process in bytes (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub fn render(o: &Outcome, pack: &Pack, threads: usize, elapsed: Duration) -> String {
    let c = &o.counts;
    let secs = elapsed.as_secs_f64().max(1e-9);
    let read = c.records() + c.rejected() - c.rejects.get(&crate::decode::RejectReason::Late).copied().unwrap_or(0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "anning replay: {read} records read in {:.2} s ({:.0} records/s) on {threads} shard thread{}, pack `{}` ({})",
        secs,
        read as f64 / secs,
        if threads == 1 { "" } else { "s" },
        pack.name,
        pack.hash_hex()
    );
    let _ = writeln!(
        s,
        "  records:  sms {}, dlr {}, call {}, complaint {}{}",
        c.by_type[0],
        c.by_type[1],
        c.by_type[2],
        c.by_type[3],
        if c.late_admitted > 0 {
            format!(" ({} late, admitted at the watermark)", c.late_admitted)
        } else {
            String::new()
        }
    );
    if c.rejected() == 0 {
        let _ = writeln!(s, "  rejected: 0");
    } else {
        let by: Vec<String> = c.rejects.iter().map(|(r, n)| format!("{} {n}", r.name())).collect();
        let _ = writeln!(s, "  rejected: {} ({})", c.rejected(), by.join(", "));
        for r in &c.samples {
            let _ = writeln!(s, "    {r}");
        }
        if c.rejected() > c.samples.len() as u64 {
            let _ = writeln!(
                s,
                "    … {} more (--rejects FILE keeps them all)",
                c.rejected() - c.samples.len() as u64
            );
        }
    }
    for e in &c.input_errors {
        let _ = writeln!(s, "  input error: {e}");
    }
    let mut by_rule: BTreeMap<(bool, &str, &str), u64> = BTreeMap::new();
    for a in &o.actions {
        *by_rule.entry((a.shadow, a.rule.as_str(), a.action.name())).or_default() += 1;
    }
    let shadow = o.actions.iter().filter(|a| a.shadow).count();
    let _ = writeln!(s, "  actions:  {}", o.actions.len() - shadow);
    for ((_, rule, kind), n) in by_rule.iter().filter(|(k, _)| !k.0) {
        let _ = writeln!(s, "    {rule:<28} {kind:<9} {n}");
    }
    if shadow > 0 {
        let _ = writeln!(
            s,
            "  shadow:   {shadow} would-be actions of rules in shadow mode, never enforced (--shadow-out)"
        );
        for ((_, rule, kind), n) in by_rule.iter().filter(|(k, _)| k.0) {
            let _ = writeln!(s, "    {rule:<28} {kind:<9} {n}");
        }
    }
    let keys: u64 = o.shards.iter().map(|x| x.keys).sum();
    let evicted: u64 = o.shards.iter().map(|x| x.evicted).sum();
    let suppressed: u64 = o.shards.iter().flat_map(|x| x.suppressed.iter()).sum();
    let allowed: u64 = o.shards.iter().flat_map(|x| x.allowed.iter()).sum();
    let protected: u64 = o.shards.iter().flat_map(|x| x.protected.iter()).sum();
    if allowed > 0 || protected > 0 {
        let _ = writeln!(
            s,
            "  policy:   {allowed} throttles/suspensions held back by the allowlist, {protected} turned into alerts on protected ports"
        );
    }
    let _ = writeln!(
        s,
        "  state:    {keys} keys held at the end, {evicted} evicted when idle, {suppressed} firings suppressed (target already under action)"
    );
    if let Some(rss) = peak_rss_bytes() {
        let _ = writeln!(s, "  memory:   peak RSS {:.1} MiB", rss as f64 / (1024.0 * 1024.0));
    }
    s
}
