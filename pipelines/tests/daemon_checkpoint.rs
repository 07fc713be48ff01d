//! Checkpoints through the real broker: `kill -9` in the middle of a 1 M-record stream and a
//! restart from the snapshot give exactly replay's actions (repeats only as identical ids,
//! counted); a corrupt newest snapshot is named in the log and the one before is used; with
//! none usable the daemon says so and rebuilds from the beginning.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::kafka::{Daemon, Scenario, broker, ids, produce, read_actions, scenario, tmp, unique};

fn snapshots(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|r| {
            r.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "anning"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Every expected id arrived, nothing else did, and a repeated id is the same action.
/// Returns (actions read, repeats).
fn exactly_replay(got: &[serde_json::Value], s: &Scenario) -> (usize, usize) {
    let mut distinct = ids(got);
    let total = distinct.len();
    distinct.dedup();
    assert_eq!(distinct, ids(&s.expected), "every expected action, no other");
    let mut seen: HashMap<String, &serde_json::Value> = HashMap::new();
    for a in got {
        if let Some(prev) = seen.insert(a["id"].as_str().unwrap().to_string(), a) {
            assert_eq!(prev, a, "a repeated id is the same action");
        }
    }
    (total, total - distinct.len())
}

#[test]
fn kill_9_mid_stream_and_a_restart_from_the_snapshot_lose_nothing() {
    let brokers = broker(19092);
    const N: f64 = 1_000_000.0;
    let s = scenario("crash", N as u64, &[]);
    let name = unique("crash");
    let dir = tmp("crash.ckpt");
    let audit = tmp("crash.audit");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&audit);
    let args = [
        "--checkpoint-dir",
        dir.to_str().unwrap(),
        "--checkpoint-interval",
        "1000",
        "--audit",
        audit.to_str().unwrap(),
    ];
    let d = Daemon::start_with(&brokers, &name, 19911, &s.registry, &args, &[]);
    let topic = format!("{name}.in");
    let producer = {
        let (brokers, topic, input) = (brokers.clone(), topic.clone(), s.input.clone());
        std::thread::spawn(move || produce(&brokers, &topic, &input))
    };
    d.wait_for(Duration::from_secs(300), "a third into the stream with a snapshot", |d| {
        d.metric("anning_records_in_total") >= N / 3.0 && d.metric("anning_checkpoints_total") >= 1.0
    });
    let seen = d.metric("anning_records_in_total");
    let (bytes, keys) = (d.metric("anning_checkpoint_bytes"), d.metric("anning_checkpoint_keys"));
    let pause = d.metric("anning_checkpoint_pause_seconds");
    d.kill9();
    assert!(seen < N, "killed mid-stream ({seen} records read)");
    assert!(!snapshots(&dir).is_empty(), "snapshots on disk");
    producer.join().unwrap();

    // Restart: the state comes from the snapshot; only the tail is read.
    let t = Instant::now();
    let d = Daemon::start_with(&brokers, &name, 19911, &s.registry, &args, &[]);
    let ready = t.elapsed();
    d.wait_for(Duration::from_secs(300), "caught up", |d| {
        d.metric("anning_consumer_lag") == 0.0 && d.metric("anning_batches_total") >= 1.0
    });
    let caught_up = t.elapsed();
    let restored = d.metric("anning_restored_keys");
    assert!(restored > 0.0, "state restored from the snapshot");
    let reread = d.metric("anning_records_in_total");
    assert!(reread < N, "the restarted daemon read the tail ({reread}), not the whole stream");
    assert_eq!(d.metric("anning_checkpoint_load_failures_total"), 0.0);

    let got = read_actions(&brokers, &format!("{name}.actions"), &s.expected, Duration::from_secs(120));
    let (total, repeats) = exactly_replay(&got, &s);
    eprintln!(
        "kill -9 at {seen} of {N} records; restart: ready in {:.2} s, caught up in {:.2} s, {restored} keys restored \
         ({:.3} s to read), {reread} records read again; snapshot {bytes} bytes for {keys} keys ({:.1} B/key), \
         pause {pause:.3} s; {total} actions, {repeats} repeated",
        ready.as_secs_f64(),
        caught_up.as_secs_f64(),
        d.metric("anning_restore_seconds"),
        bytes / keys.max(1.0)
    );
    assert_eq!(d.stop(), 0);

    // The audit log has every action once: rows are written with each snapshot, and the
    // restarted daemon wrote those of the records it read again.
    let rows = anning_pipelines::audit::read(&audit).unwrap();
    let mut logged: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    logged.sort();
    assert_eq!(logged, ids(&s.expected), "each action in the audit log exactly once");
}

#[test]
fn a_corrupt_snapshot_is_named_and_the_one_before_is_used_and_with_none_state_is_rebuilt() {
    let brokers = broker(19092);
    let s = scenario("corrupt", 250_000, &[]);
    let name = unique("corrupt");
    let dir = tmp("corrupt.ckpt");
    let _ = std::fs::remove_dir_all(&dir);
    let args = ["--checkpoint-dir", dir.to_str().unwrap(), "--checkpoint-interval", "300"];
    let d = Daemon::start_with(&brokers, &name, 19912, &s.registry, &args, &[]);
    produce(&brokers, &format!("{name}.in"), &s.input);
    d.wait_for(Duration::from_secs(300), "caught up", |d| {
        d.metric("anning_records_in_total") >= 250_000.0 && d.metric("anning_consumer_lag") == 0.0
    });
    assert_eq!(d.stop(), 0, "SIGTERM: a last snapshot, clean exit");
    let files = snapshots(&dir);
    assert!(files.len() >= 2, "{files:?}");
    let newest = files.last().unwrap().clone();

    // A flipped byte in the newest: named in the log, counted, the one before restored.
    let mut bytes = std::fs::read(&newest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&newest, &bytes).unwrap();
    let log = tmp(&format!("{name}.daemon.log"));
    let before = std::fs::read_to_string(&log).unwrap_or_default().len();
    let d = Daemon::start_with(&brokers, &name, 19912, &s.registry, &args, &[]);
    d.wait_for(Duration::from_secs(120), "caught up", |d| d.metric("anning_consumer_lag") == 0.0);
    assert_eq!(d.metric("anning_checkpoint_load_failures_total"), 1.0);
    assert!(d.metric("anning_restored_keys") > 0.0, "the previous snapshot was restored");
    assert_eq!(d.stop(), 0);
    let text = std::fs::read_to_string(&log).unwrap()[before..].to_string();
    let want = format!("unusable snapshot: {}: corrupt: checksum mismatch", newest.display());
    assert!(text.contains(&want), "the log names the file and what is wrong:\n{text}");

    // Nothing usable: said loudly, and state rebuilt from the beginning (not an empty start).
    for f in snapshots(&dir) {
        std::fs::write(&f, b"not a snapshot").unwrap();
    }
    let before = std::fs::read_to_string(&log).unwrap().len();
    let d = Daemon::start_with(&brokers, &name, 19912, &s.registry, &args, &[]);
    d.wait_for(Duration::from_secs(300), "rebuilt", |d| {
        d.metric("anning_records_in_total") >= 250_000.0 && d.metric("anning_consumer_lag") == 0.0
    });
    assert!(d.metric("anning_checkpoint_load_failures_total") >= 2.0);
    assert_eq!(d.metric("anning_restored_keys"), 0.0);
    assert!(d.metric("anning_actions_suppressed_total") > 0.0, "rebuilt over committed records");
    assert_eq!(d.stop(), 0);
    let text = std::fs::read_to_string(&log).unwrap()[before..].to_string();
    assert!(text.contains("not an anning snapshot (bad magic bytes)"), "{text}");
    assert!(text.contains("no usable snapshot"), "{text}");

    // Through all of it: replay's actions, repeats only as identical ids.
    let got = read_actions(&brokers, &format!("{name}.actions"), &s.expected, Duration::from_secs(60));
    let (total, repeats) = exactly_replay(&got, &s);
    eprintln!("corrupt snapshots: {total} actions, {repeats} repeated");
}
