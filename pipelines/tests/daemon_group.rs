//! Scale-out through the real broker: three daemons in one group with `--repartition` split
//! a 3-partition input; one is killed (`kill -9`) mid-stream, its partitions move to the
//! others with their state from the snapshots, and the actions are those one daemon gives
//! alone — repeats only as identical ids. And with one input partition, the re-keyed path
//! gives exactly replay's actions.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::kafka::{Daemon, actions_until, anning, broker, ids, metric_in, read_topic, run_ok, scenario, tmp, unique};

/// Waits until the daemons have read the whole stream and run all of it: the records are
/// in, every partition is held (`partitions`, when given), no merge waits on an input
/// partition or holds records (every input partition was announced idle, after its last
/// record), nothing is in flight, and the actions stay the same over three looks 500 ms
/// apart. (Actions unchanged for 8 s was not enough: under load the merges' last release
/// came later, and the reference missed actions.)
fn settled(daemons: &[&Daemon], records: f64, partitions: Option<f64>) {
    let t = Instant::now();
    let (mut last, mut same) = (f64::NAN, 0);
    loop {
        assert!(t.elapsed() < Duration::from_secs(600), "the daemons did not settle");
        std::thread::sleep(Duration::from_millis(500));
        // One exposition per daemon a look, so every figure of a look is of one moment.
        let bodies: Vec<String> = daemons.iter().map(|d| d.get("/metrics").1).collect();
        let sum = |name: &str| bodies.iter().map(|b| metric_in(b, name)).sum::<f64>();
        let gauge_there = bodies.iter().all(|b| b.contains("\nanning_merges_waiting_tasks "));
        assert!(gauge_there, "every daemon reports its waiting merges");
        let done = sum("anning_records_in_total") >= records
            && partitions.is_none_or(|n| sum("anning_assigned_partitions") == n)
            && sum("anning_merges_waiting_tasks") == 0.0
            && sum("anning_in_flight_messages") == 0.0;
        let now = sum("anning_actions_total") + sum("anning_actions_suppressed_total");
        if !done || now != last {
            (last, same) = (now, 0);
            continue;
        }
        same += 1;
        if same >= 3 {
            return;
        }
    }
}

fn produce_partitioned(brokers: &str, topic: &str, input: &std::path::Path, partitions: i32) {
    run_ok(
        anning()
            .args(["produce", "--brokers", brokers, "--topic", topic, "--key", "src", "--partitions"])
            .arg(partitions.to_string())
            .arg(input),
    );
}

/// Produces `input`'s lines to partition 0 of `topic`, keyed by nothing, each message
/// stamped `ago_ms` before now (a message's timestamp is when it entered Kafka, as the
/// daemon reads it). Returns the moment the stamps are `ago_ms` before.
fn produce_stamped(brokers: &str, topic: &str, input: &std::path::Path, ago_ms: i64) -> Instant {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .create()
        .expect("producer");
    let (at, now_ms) = (Instant::now(), anning_pipelines::audit::now_ms());
    let text = std::fs::read_to_string(input).unwrap();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut rec = BaseRecord::<(), str>::to(topic)
            .payload(line)
            .partition(0)
            .timestamp(now_ms - ago_ms);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), back)) => {
                    producer.poll(Duration::from_millis(10));
                    rec = back;
                }
                Err((e, _)) => panic!("producing to {topic}: {e}"),
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    at
}

/// The input topic with its partitions, before a daemon would create it with one.
fn create_input(brokers: &str, topic: &str, partitions: i32) {
    run_ok(
        anning()
            .args(["produce", "--brokers", brokers, "--topic", topic, "--partitions"])
            .arg(partitions.to_string())
            .arg("/dev/null"),
    );
}

fn group_args<'a>(prefix: &'a str, dir: &'a str) -> Vec<&'a str> {
    vec![
        "--repartition",
        "--repartition-prefix",
        prefix,
        "--checkpoint-dir",
        dir,
        "--checkpoint-interval",
        "500",
    ]
}

#[test]
fn with_one_input_partition_the_rekeyed_path_gives_replays_actions() {
    let brokers = broker(19093);
    let s = scenario("group1", 250_000, &[]);
    let name = unique("group1");
    let dir = tmp("group1.ckpt");
    let audit = tmp("group1.audit");
    let _ = std::fs::remove_dir_all(&audit);
    let prefix = format!("{name}.rp");
    let mut args = group_args(&prefix, dir.to_str().unwrap());
    args.extend(["--audit", audit.to_str().unwrap()]);
    let d = Daemon::start_with(
        &brokers,
        &name,
        19925,
        &s.registry,
        &args,
        &[("ANNING_ADMIN_TOKEN", "s3cret"), ("ANNING_AUDIT_FLUSH_MS", "300")],
    );
    // The records entered Kafka an hour ago (their messages' timestamps say so): the actions'
    // latency from ingest must count that hour, though the records reach the rules through
    // internal topics written just now.
    create_input(&brokers, &format!("{name}.in"), 1);
    let hour_ago = produce_stamped(&brokers, &format!("{name}.in"), &s.input, 3_600_000);
    let want: BTreeSet<String> = ids(&s.expected).into_iter().collect();
    let got = actions_until(&brokers, &format!("{name}.actions"), &want, Duration::from_secs(300));
    let mut distinct = ids(&got);
    distinct.dedup();
    assert_eq!(distinct, ids(&s.expected), "replay's action ids through the re-keyed path");
    d.wait_for(Duration::from_secs(60), "every action timed", |d| {
        d.metric("anning_ingest_to_action_seconds_count") >= want.len() as f64
    });
    let median = d.metric("anning_ingest_to_action_seconds{quantile=\"0.5\"}");
    let since = hour_ago.elapsed().as_secs_f64();
    assert!(
        (3600.0..=3600.0 + since + 1.0).contains(&median),
        "median ingest-to-action {median} s: the records entered Kafka an hour before {since:.1} s ago"
    );
    let by_id: HashMap<String, &serde_json::Value> = s.expected.iter().map(|a| (a["id"].as_str().unwrap().to_string(), a)).collect();
    for a in &got {
        assert_eq!(*by_id[a["id"].as_str().unwrap()], *a, "the same action");
    }

    // Release on appeal: the task that keeps the target lifts it.
    let target = s
        .expected
        .iter()
        .filter(|a| a["action"] != "alert")
        .max_by_key(|a| a["until"].as_i64().unwrap())
        .unwrap();
    let body = serde_json::json!({
        "dim": target["dim"], "key": target["key"], "reason": "appeal 12", "author": "noc-2",
    })
    .to_string();
    let (code, text) = d.request(
        "POST",
        "/actions/release",
        &format!(
            "Authorization: Bearer s3cret\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(code, 200, "{text}");
    let released: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(
        (&released["action"], &released["key"]),
        (&serde_json::json!("release"), &target["key"])
    );
    assert_eq!(d.stop(), 0);
    // Every action and the release are in the audit log.
    let rows = anning_pipelines::audit::read(&audit).unwrap();
    let logged: BTreeSet<String> = rows.iter().map(|r| r.id.clone()).collect();
    assert!(want.is_subset(&logged), "every action in the audit log");
    assert!(
        rows.iter()
            .any(|r| r.action == "release" && r.id == released["id"].as_str().unwrap())
    );
}

#[test]
fn three_daemons_one_killed_mid_stream_give_the_actions_of_one() {
    let brokers = broker(19093);
    let s = scenario("group3", 250_000, &[]);
    let want_partitions = 3;

    // One daemon alone on the same 3-partition input: the reference.
    let solo = unique("solo");
    let solo_dir = tmp("solo.ckpt");
    let solo_prefix = format!("{solo}.rp");
    create_input(&brokers, &format!("{solo}.in"), want_partitions);
    produce_partitioned(&brokers, &format!("{solo}.in"), &s.input, want_partitions);
    let d = Daemon::start_with(
        &brokers,
        &solo,
        19926,
        &s.registry,
        &group_args(&solo_prefix, solo_dir.to_str().unwrap()),
        &[],
    );
    settled(&[&d], 250_000.0, None);
    let partitions = d.metric("anning_assigned_partitions");
    assert!(
        d.get("/metrics").1.contains("\nanning_merge_out_of_order_total 0\n"),
        "one daemon runs the merge in order"
    );
    // Every action the daemon counted as delivered, however slowly the broker hands them back
    // (this read used to stop after a fixed 5 s, which under load can come back short).
    let produced = d.metric("anning_actions_total") as usize;
    let reference: Vec<serde_json::Value> = read_topic(&brokers, &format!("{solo}.actions"), produced, Duration::from_secs(120))
        .iter()
        .map(|(_, p, _)| serde_json::from_slice(p).unwrap())
        .collect();
    assert_eq!(reference.len(), produced, "every action the daemon delivered is read back");
    assert_eq!(
        d.metric("anning_actions_total") as usize,
        produced,
        "no action came after the daemon had settled"
    );
    assert_eq!(d.stop(), 0);
    let mut want = ids(&reference);
    want.dedup();
    assert!(want.len() >= 10, "the stream acts ({} actions)", want.len());

    // Three daemons in one group; the input arrives once all are up.
    let name = unique("group3");
    let dir = tmp("group3.ckpt");
    let _ = std::fs::remove_dir_all(&dir);
    let prefix = format!("{name}.rp");
    let args = group_args(&prefix, dir.to_str().unwrap());
    let topic = format!("{name}.in");
    create_input(&brokers, &topic, want_partitions);
    // The stream is in the topic before the group starts: no partition is caught up and
    // silent (idle) before its end, which is what makes the merge order the input's alone.
    produce_partitioned(&brokers, &topic, &s.input, want_partitions);
    let mut daemons = vec![
        Daemon::start_with(&brokers, &name, 19927, &s.registry, &args, &[]),
        Daemon::start_with(&brokers, &name, 19928, &s.registry, &args, &[]),
        Daemon::start_with(&brokers, &name, 19929, &s.registry, &args, &[]),
    ];
    let t = Instant::now();
    while daemons.iter().map(|d| d.metric("anning_records_in_total")).sum::<f64>() < 80_000.0 {
        assert!(t.elapsed() < Duration::from_secs(300), "the group did not get going");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Kill the one that has read the most input (it holds input partitions and their joins).
    let read: Vec<f64> = daemons.iter().map(|d| d.metric("anning_records_in_total")).collect();
    let victim = (0..3).max_by(|&x, &y| read[x].total_cmp(&read[y])).unwrap();
    let held = daemons[victim].metric("anning_assigned_partitions");
    let total_read: f64 = read.iter().sum();
    daemons.remove(victim).kill9();
    assert!(total_read < 250_000.0, "killed mid-stream ({total_read} of 250000 read)");
    eprintln!(
        "group: kill -9 of a daemon holding {held} partitions after it read {} records ({total_read} read in all)",
        read[victim]
    );

    let alive: Vec<&Daemon> = daemons.iter().collect();
    settled(&alive, 250_000.0 - read[victim], Some(partitions));
    // Actions made, produced or suppressed as made before a restart.
    let acted = |ds: &[&Daemon]| -> f64 {
        ds.iter()
            .map(|d| d.metric("anning_actions_total") + d.metric("anning_actions_suppressed_total"))
            .sum()
    };
    let settled_at = acted(&alive);
    let want_set: BTreeSet<String> = want.iter().cloned().collect();
    let got = actions_until(&brokers, &format!("{name}.actions"), &want_set, Duration::from_secs(60));
    let disorder: Vec<f64> = alive.iter().map(|d| d.metric("anning_merge_out_of_order_total")).collect();
    let mut distinct = ids(&got);
    let total = distinct.len();
    distinct.dedup();
    let missing: Vec<&String> = want.iter().filter(|i| distinct.binary_search(i).is_err()).collect();
    let extra: Vec<&String> = distinct.iter().filter(|i| want.binary_search(i).is_err()).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} missing, {} extra of {} (e.g. missing {:?}, extra {:?}); records run out of merge order per daemon: {disorder:?}",
        missing.len(),
        extra.len(),
        want.len(),
        missing.first(),
        extra.first()
    );
    assert!(disorder.iter().all(|n| *n == 0.0), "records run out of merge order: {disorder:?}");
    let by_id: HashMap<String, &serde_json::Value> = reference.iter().map(|x| (x["id"].as_str().unwrap().to_string(), x)).collect();
    for x in &got {
        assert_eq!(*by_id[x["id"].as_str().unwrap()], *x, "a repeated id is the same action");
    }
    eprintln!(
        "group: {total} actions for {} distinct, {} repeated",
        want.len(),
        total - want.len()
    );
    assert_eq!(acted(&alive), settled_at, "no action came after the daemons had settled");
    for d in daemons {
        assert_eq!(d.stop(), 0);
    }
}
