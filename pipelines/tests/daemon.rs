//! `anning daemon` end to end through a real Kafka-protocol broker (tansu, started by
//! `ops/broker.sh` on 127.0.0.1:19092, or 19093 for the test that pauses it): the same
//! actions as replay, dead letters with reasons, a SIGTERM and restart that loses nothing,
//! a paused broker recovered from, and the metrics exposition.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::kafka::{
    Daemon, Scenario, anning, broker, broker_pid, ids, metric_in, produce, read_actions, read_topic, root, run_ok, scenario, tmp, unique,
};

const BAD: [&str; 3] = [
    "this is not json",
    r#"{"ts":1794300000000,"type":"sms","dst":"13800138000"}"#,
    r#"{"ts":"yesterday","type":"sms","src":"13800138000","dst":"13900139000"}"#,
];

#[test]
fn daemon_actions_equal_replay_and_bad_messages_go_to_the_dead_letter_topic() {
    let brokers = broker(19092);
    let s = scenario("equal", 250_000, &BAD);
    let d = Daemon::start(&brokers, &unique("equal"), 19901, &s.registry);
    produce(&brokers, &format!("{}.in", unique("equal")), &s.input);
    let got = read_topic(
        &brokers,
        &format!("{}.actions", unique("equal")),
        s.expected.len(),
        Duration::from_secs(120),
    );
    let actions: Vec<serde_json::Value> = got.iter().map(|(_, p, _)| serde_json::from_slice(p).unwrap()).collect();
    assert_eq!(ids(&actions), ids(&s.expected), "same action ids as replay");
    // Same content too, and each keyed dim:key.
    let by_id: HashMap<String, &serde_json::Value> = s.expected.iter().map(|a| (a["id"].as_str().unwrap().to_string(), a)).collect();
    for ((key, _, _), a) in got.iter().zip(&actions) {
        assert_eq!(*by_id[a["id"].as_str().unwrap()], *a);
        assert_eq!(
            key.as_deref(),
            Some(format!("{}:{}", a["dim"].as_str().unwrap(), a["key"].as_str().unwrap()).as_bytes())
        );
    }

    let dlq = read_topic(&brokers, &format!("{}.dlq", unique("equal")), 3, Duration::from_secs(30));
    assert_eq!(dlq.len(), 3);
    let reasons: BTreeMap<String, String> = dlq
        .iter()
        .map(|(_, payload, headers)| {
            let h: HashMap<&str, &str> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            (
                String::from_utf8(payload.clone()).unwrap(),
                format!("{}: {}", h["anning.reason"], h["anning.detail"]),
            )
        })
        .collect();
    for bad in BAD {
        assert!(reasons.contains_key(bad), "original bytes kept: {bad}\n{reasons:#?}");
    }
    assert!(reasons[BAD[0]].starts_with("malformed"), "{reasons:#?}");
    assert!(
        reasons[BAD[1]].starts_with("missing_field") && reasons[BAD[1]].contains("src"),
        "{reasons:#?}"
    );
    assert!(
        reasons[BAD[2]].starts_with("bad_value") && reasons[BAD[2]].contains("ts"),
        "{reasons:#?}"
    );

    d.wait_for(Duration::from_secs(30), "caught up", |d| {
        d.metric("anning_consumer_lag") == 0.0 && d.metric("anning_dead_letters_total") == 3.0
    });
    assert_eq!(d.metric("anning_rejects_total"), 3.0);
    assert_eq!(d.metric("anning_actions_total"), s.expected.len() as f64);
    assert_eq!(d.stop(), 0, "SIGTERM: clean exit");
}

#[test]
fn sigterm_mid_stream_and_restart_lose_nothing_and_repeat_only_identical_ids() {
    let brokers = broker(19092);
    let s = scenario("restart", 250_000, &[]);
    // The daemon creates its topics (one partition: the same order as the file, so the same
    // actions as replay).
    let d = Daemon::start(&brokers, &unique("restart"), 19902, &s.registry);
    produce(&brokers, &format!("{}.in", unique("restart")), &s.input);
    d.wait_for(Duration::from_secs(60), "started on the stream", |d| {
        d.metric("anning_batches_total") >= 2.0
    });
    let seen = d.metric("anning_records_in_total");
    assert_eq!(d.stop(), 0, "SIGTERM mid-stream: drains, commits, exits 0");
    assert!(seen < 250_000.0, "stopped mid-stream ({seen} records read)");
    let d = Daemon::start(&brokers, &unique("restart"), 19902, &s.registry);
    d.wait_for(Duration::from_secs(120), "caught up", |d| {
        d.metric("anning_consumer_lag") == 0.0 && d.metric("anning_batches_total") >= 1.0
    });
    let actions = read_actions(
        &brokers,
        &format!("{}.actions", unique("restart")),
        &s.expected,
        Duration::from_secs(60),
    );
    let mut distinct = ids(&actions);
    let total = distinct.len();
    distinct.dedup();
    assert_eq!(distinct, ids(&s.expected), "every expected action, no other");
    // A repeated id is the same action.
    let mut seen: HashMap<String, &serde_json::Value> = HashMap::new();
    for a in &actions {
        if let Some(prev) = seen.insert(a["id"].as_str().unwrap().to_string(), a) {
            assert_eq!(prev, a);
        }
    }
    eprintln!("restart: {} actions, {} repeated", total, total - distinct.len());
    assert!(
        d.metric("anning_actions_suppressed_total") > 0.0
            || total > distinct.len()
            || d.metric("anning_actions_total") < s.expected.len() as f64,
        "the restarted daemon rebuilt state over records it had committed"
    );
    assert_eq!(d.stop(), 0);
}

#[test]
fn a_broker_paused_for_30_s_is_recovered_from_without_a_restart() {
    let brokers = broker(19093);
    let s = scenario("pause", 250_000, &[]);
    let half = tmp("pause.half.jsonl");
    let rest = tmp("pause.rest.jsonl");
    let text = std::fs::read_to_string(&s.input).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&half, lines[..lines.len() / 2].join("\n") + "\n").unwrap();
    std::fs::write(&rest, lines[lines.len() / 2..].join("\n") + "\n").unwrap();
    let d = Daemon::start(&brokers, &unique("pause"), 19903, &s.registry);
    produce(&brokers, &format!("{}.in", unique("pause")), &half);
    let pid = broker_pid(19093).to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    std::thread::sleep(Duration::from_secs(30));
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    produce(&brokers, &format!("{}.in", unique("pause")), &rest);
    let actions = read_actions(
        &brokers,
        &format!("{}.actions", unique("pause")),
        &s.expected,
        Duration::from_secs(120),
    );
    let mut distinct = ids(&actions);
    distinct.dedup();
    assert_eq!(distinct, ids(&s.expected), "nothing lost across the pause");
    assert!(d.child.id() > 0);
    assert_eq!(d.stop(), 0, "the same process ran throughout");
}

#[test]
fn metrics_are_valid_prometheus_exposition_without_subscriber_numbers() {
    let brokers = broker(19092);
    let s = scenario("metrics", 250_000, &BAD);
    let d = Daemon::start(&brokers, &unique("metrics"), 19904, &s.registry);
    produce(&brokers, &format!("{}.in", unique("metrics")), &s.input);
    // Every action acknowledged and timed (the counter moves just before the histograms).
    d.wait_for(Duration::from_secs(120), "done", |d| {
        d.metric("anning_actions_total") >= s.expected.len() as f64
            && d.metric("anning_poll_to_action_seconds_count") >= s.expected.len() as f64
    });
    let (code, body) = d.get("/metrics");
    assert_eq!(code, 200);
    assert_eq!(d.get("/healthz").0, 200);
    assert_eq!(d.get("/nope").0, 404);
    for needle in [
        "anning_records_in_total{type=\"sms\"}",
        "anning_rejects_total{reason=\"malformed\"} 1",
        "anning_actions_total{rule=\"subscriber-commercial\"",
        "anning_consumer_lag{partition=\"0\"}",
        "anning_ingest_to_action_seconds{quantile=\"0.99\"}",
        "anning_poll_to_action_seconds{quantile=\"0.99\"}",
    ] {
        assert!(body.contains(needle), "{needle} missing:\n{body}");
    }
    // The daemon's own part of each action's latency (from polling its tipping record) is
    // within the whole (from the record's Kafka timestamp, whole milliseconds), action by
    // action, so quantile by quantile too.
    let count = |family: &str| metric_in(&body, &format!("{family}_count"));
    assert_eq!(count("anning_poll_to_action_seconds"), count("anning_ingest_to_action_seconds"));
    assert_eq!(count("anning_poll_to_action_seconds"), s.expected.len() as f64);
    for q in ["0.5", "0.9", "0.99", "1"] {
        let at = |family: &str| metric_in(&body, &format!("{family}{{quantile=\"{q}\"}}"));
        let (own, whole) = (at("anning_poll_to_action_seconds"), at("anning_ingest_to_action_seconds"));
        assert!(
            own > 0.0 && own <= whole + 0.002,
            "quantile {q}: poll to action {own} s, ingest to action {whole} s"
        );
    }
    // No label value looks like a subscriber number.
    let labels: String = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| Some(&l[l.find('{')?..=l.find('}')?]))
        .collect();
    let digits = regex_like_subscriber(&labels);
    assert!(digits.is_empty(), "subscriber-like numbers in metric labels: {digits:?}");
    let path = tmp("metrics.prom");
    std::fs::write(&path, &body).unwrap();
    let promtool = Command::new("promtool")
        .arg("check")
        .arg("metrics")
        .stdin(std::fs::File::open(&path).unwrap())
        .output();
    let o = promtool.expect("promtool is installed by ops/test.sh (Debian package prometheus)");
    assert!(
        o.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(d.stop(), 0);
}

/// 11-digit numbers starting with 1 (MSISDN-like) anywhere in the text.
fn regex_like_subscriber(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let j = (i..b.len()).find(|&j| !b[j].is_ascii_digit()).unwrap_or(b.len());
            if j - i == 11 && b[i] == b'1' && (i == 0 || b[i - 1] != b'.') {
                out.push(text[i..j].to_string());
            }
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

/// Replays the scenario's input with more flags (its actions to /dev/null unless they name
/// `--out`), then reads the JSON Lines file `read` back.
fn replay_with(s: &Scenario, args: &[&str], read: &Path) -> Vec<serde_json::Value> {
    let mut cmd = anning();
    cmd.arg("replay")
        .arg(&s.input)
        .arg("--registry")
        .arg(&s.registry)
        .args(args)
        .arg("-q");
    if !args.contains(&"--out") {
        cmd.args(["--out", "/dev/null"]);
    }
    run_ok(&mut cmd);
    std::fs::read_to_string(read)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// An action without what names its pack (id, pack hash): what it does and why.
fn deed(a: &serde_json::Value) -> String {
    let mut a = a.clone();
    let o = a.as_object_mut().unwrap();
    o.remove("id");
    o.remove("pack");
    a.to_string()
}

#[test]
fn reload_while_records_flow_loses_nothing_and_runs_no_record_through_both_packs() {
    let brokers = broker(19092);
    let s = scenario("reload", 250_000, &[]);
    let name = unique("reload");
    // Two packs that decide alike but differ in content (so in hash), and a broken one. They
    // carry a rule in shadow mode: its would-be actions go to the shadow topic only.
    let pack = std::fs::read_to_string(root().join("rules/packs/default.toml")).unwrap()
        + r#"
[[rule]]
id = "subscriber-commercial-tight"
kind = "rate"
dim = "src"
when = { type = ["sms"], src_class = ["subscriber"], content = ["marketing", "fraud"] }
window = "10m"
slide = "1m"
threshold = 4
shadow = true
ladder = [{ action = "throttle", rate = 0.01, for = "6h" }]
"#;
    let (a, b) = (format!("{pack}\n# variant a\n"), format!("{pack}\n# variant b\n"));
    let path = tmp("reload.pack.toml");
    std::fs::write(&path, &a).unwrap();
    let d = Daemon::start_with(
        &brokers,
        &name,
        19906,
        &s.registry,
        &["--rules", path.to_str().unwrap()],
        &[("ANNING_ADMIN_TOKEN", "s3cret")],
    );
    // Without the token (or with a wrong one) the endpoint refuses.
    assert_eq!(d.request("POST", "/rules/reload", "").0, 401);
    assert_eq!(d.request("POST", "/rules/reload", "Authorization: Bearer nope\r\n").0, 401);

    let producer = {
        let (brokers, input, topic) = (brokers.clone(), s.input.clone(), format!("{name}.in"));
        std::thread::spawn(move || produce(&brokers, &topic, &input))
    };
    let auth = "Authorization: Bearer s3cret\r\n";
    let mut http_ok = 0;
    let mut progress = Vec::new();
    for i in 0..12 {
        std::thread::sleep(Duration::from_millis(300));
        progress.push(d.metric("anning_records_in_total"));
        match i % 4 {
            0 => {
                std::fs::write(&path, &b).unwrap();
                d.signal("-HUP");
            }
            1 => {
                std::fs::write(&path, &a).unwrap();
                let (code, body) = d.request("POST", "/rules/reload", auth);
                assert_eq!(code, 200, "{body}");
                assert!(body.starts_with("reloaded: pack `default`"), "{body}");
                http_ok += 1;
            }
            2 => {
                // A typo: refused with its place, and the running pack goes on.
                std::fs::write(&path, pack.replacen("threshold = 200", "threshold = \"lots\"", 1)).unwrap();
                let (code, body) = d.request("POST", "/rules/reload", auth);
                assert_eq!(code, 422, "{body}");
                assert!(body.contains("reload.pack.toml:") && body.contains("`threshold`"), "{body}");
            }
            _ => {
                std::fs::write(&path, &b).unwrap();
                d.signal("-HUP");
            }
        }
    }
    std::fs::write(&path, &a).unwrap();
    assert!(
        progress.iter().any(|&n| n > 0.0 && n < 250_000.0),
        "reloads came while records flowed: records in at each reload {progress:?}"
    );
    producer.join().unwrap();
    d.wait_for(Duration::from_secs(120), "done", |d| {
        d.metric("anning_records_in_total") >= 250_000.0 && d.metric("anning_actions_total") >= s.expected.len() as f64
    });
    std::thread::sleep(Duration::from_secs(2));
    // Every action the daemon counted as delivered, however slowly the broker hands them back.
    let produced = d.metric("anning_actions_total") as usize;
    let got = read_topic(&brokers, &format!("{name}.actions"), produced, Duration::from_secs(120));
    assert_eq!(got.len(), produced, "every action the daemon delivered is read back");
    let mut seen = BTreeSet::new();
    let mut deeds: Vec<String> = got
        .iter()
        .map(|(_, p, _)| serde_json::from_slice::<serde_json::Value>(p).unwrap())
        .filter(|a| seen.insert(a["id"].as_str().unwrap().to_string()))
        .map(|a| deed(&a))
        .collect();
    let mut want: Vec<String> = s.expected.iter().map(deed).collect();
    deeds.sort();
    want.sort();
    assert_eq!(deeds, want, "the same decisions as a replay: none lost, none doubled");
    // The shadow rule's would-be actions: on their own topic, as replay's --shadow-out has them.
    let shadow_out = tmp("reload.shadow.jsonl");
    let mut want_shadow: Vec<String> = replay_with(
        &s,
        &["--rules", path.to_str().unwrap(), "--shadow-out", shadow_out.to_str().unwrap()],
        &shadow_out,
    )
    .iter()
    .map(deed)
    .collect();
    let shadow = read_topic(&brokers, &format!("{name}.shadow"), want_shadow.len(), Duration::from_secs(30));
    let mut seen = BTreeSet::new();
    let mut got_shadow: Vec<String> = shadow
        .iter()
        .map(|(_, p, _)| serde_json::from_slice::<serde_json::Value>(p).unwrap())
        .filter(|a| seen.insert(a["id"].as_str().unwrap().to_string()))
        .map(|a| deed(&a))
        .collect();
    want_shadow.sort();
    got_shadow.sort();
    assert!(!want_shadow.is_empty() && want_shadow.iter().all(|d| d.contains("\"shadow\":true")));
    assert_eq!(got_shadow, want_shadow, "shadow actions as replay has them");
    assert!(d.metric("anning_shadow_actions_total") >= want_shadow.len() as f64);
    assert!(d.metric("anning_reloads_total") >= 6.0, "{}", d.metric("anning_reloads_total"));
    assert_eq!(http_ok, 3);
    assert!(d.metric("anning_reload_failures_total") >= 3.0);
    assert!(d.get("/metrics").1.contains("anning_pack_info{pack=\"default\""));
    assert_eq!(d.stop(), 0);
}

#[test]
fn an_allowlist_file_holds_back_actions_as_in_replay_counted_and_logged() {
    let brokers = broker(19092);
    let s = scenario("allow", 250_000, &[]);
    let name = unique("allow");
    // Allowlist the first subscriber the pack would throttle or suspend.
    let first = s
        .expected
        .iter()
        .find(|a| a["dim"] == "src" && a["action"] != "alert")
        .expect("an enforcement on a sender");
    let key = first["key"].as_str().unwrap();
    let allow = tmp("allow.toml");
    std::fs::write(
        &allow,
        format!(
            "[[allow]]\ndim = \"src\"\nkey = \"{key}\"\nuntil = \"2027-01-01T00:00:00Z\"\nreason = \"appeal 12\"\nauthor = \"noc-li\"\n"
        ),
    )
    .unwrap();
    let out = tmp("allow.replay.jsonl");
    let expected = replay_with(&s, &["--allowlist", allow.to_str().unwrap(), "--out", out.to_str().unwrap()], &out);
    assert!(
        !expected.iter().any(|a| a["key"] == key && a["action"] != "alert"),
        "replay held the sender's enforcement back"
    );

    let d = Daemon::start_with(&brokers, &name, 19907, &s.registry, &["--allowlist", allow.to_str().unwrap()], &[]);
    produce(&brokers, &format!("{name}.in"), &s.input);
    let got = read_actions(&brokers, &format!("{name}.actions"), &expected, Duration::from_secs(120));
    let mut got_ids = ids(&got);
    got_ids.dedup();
    assert_eq!(got_ids, ids(&expected), "the daemon holds back what replay holds back");
    assert!(d.metric("anning_allowlisted_total") >= 1.0);
    assert_eq!(d.stop(), 0);
    let log = std::fs::read_to_string(tmp(&format!("{name}.daemon.log"))).unwrap();
    let masked = format!("src:{}****{}", &key[..3], &key[key.len() - 4..]);
    assert!(log.contains("allowlisted: action held back") && log.contains(&masked), "{log}");
    assert!(!log.contains(key), "the subscriber number is masked in the log");
}
