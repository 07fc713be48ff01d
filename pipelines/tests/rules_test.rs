//! `anning rules test`: the default pack's own tests, the pack policy (protection,
//! allowlists) through tests of a pack written here, failures that show expected vs got, and
//! malformed test files.

use std::path::{Path, PathBuf};
use std::process::Command;

use anning_pipelines::rules_test::run_file;

fn default_pack() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/packs/default.toml")
}

fn dir(name: &str) -> PathBuf {
    crate::util::scratch(&format!("rules-test-{name}"))
}

#[test]
fn every_rule_of_the_default_pack_has_a_passing_test() {
    let report = run_file(&default_pack(), None).unwrap();
    assert!(report.failed.is_empty(), "{:#?}", report.failed);
    assert!(report.untested.is_empty(), "rules without a test: {:?}", report.untested);
    let pack = anning_rules::default_pack();
    assert!(report.passed.len() > pack.rules.len(), "look-alikes are tested too");
    // --run keeps only the matching tests.
    let some = run_file(&default_pack(), Some("unsubscribe-ignored")).unwrap();
    assert_eq!(some.passed.len(), 2);
    assert_eq!(some.filtered, report.passed.len() - 2);
}

const POLICY_PACK: &str = r#"
[pack]
name = "policy"
lateness = "1m"

[protect]
port_classes = ["otp"]

[[allow]]
dim = "src"
key = "13800000001"
until = "2026-11-10T09:00:00Z"
reason = "appeal 42: a school's parents' group"
author = "noc-li"

[[rule]]
id = "sender-volume"
kind = "rate"
dim = "src"
when = { type = ["sms"] }
window = "1m"
slide = "10s"
threshold = 10
ladder = [{ action = "suspend", for = "10m" }]

[[rule]]
id = "sender-volume-tight"
description = "A tighter limit being tried out"
kind = "rate"
dim = "src"
when = { type = ["sms"], src_class = ["subscriber"] }
window = "1m"
slide = "10s"
threshold = 5
shadow = true
ladder = [{ action = "suspend", for = "10m" }]
"#;

const POLICY_TESTS: &str = r#"
registry = """
port,sp,class,signatures
10658000001,900101,otp,淘宝
10690000001,900001,marketing,京东
"""

[[test]]
name = "a protected otp port is only alerted on by a volume rule"
[[test.repeat]]
record = { type = "sms", src = "10658000001", dst = "1390{s7}", text = "【淘宝】验证码{n}" }
start = "2026-11-10T08:00:00Z"
count = 20
over = "30s"
[[test.expect]]
rule = "sender-volume"
action = "alert"
dim = "src"
key = "10658000001"
[[test.absent]]
dim = "src"
key = "10658000001"

[[test]]
name = "a marketing port is not protected"
[[test.repeat]]
record = { type = "sms", src = "10690000001", dst = "1390{s7}", text = "【京东】发货了" }
start = "2026-11-10T08:00:00Z"
count = 20
over = "30s"
[[test.expect]]
rule = "sender-volume"
action = "suspend"
dim = "src"
key = "10690000001"

[[test]]
name = "an allowlisted sender is left alone until the entry expires"
[[test.repeat]]
record = { type = "sms", src = "13800000001", dst = "1390{s7}", text = "家长会通知" }
start = "2026-11-10T08:50:00Z"
count = 20
over = "30s"
[[test.repeat]]
record = { type = "sms", src = "13800000001", dst = "1391{s7}", text = "家长会通知" }
start = "2026-11-10T09:00:00Z"
count = 20
over = "30s"
[[test.expect]]
rule = "sender-volume"
action = "suspend"
dim = "src"
key = "13800000001"
by = "2026-11-10T09:00:30Z"
[[test.absent]]
dim = "src"
key = "13800000001"
before = "2026-11-10T09:00:00Z"

[[test]]
name = "a shadow rule reports a would-be action and never hides the real one"
[[test.repeat]]
record = { type = "sms", src = "13800000003", dst = "1390{s7}", text = "在吗" }
start = "2026-11-10T08:00:00Z"
count = 12
over = "30s"
[[test.expect]]
rule = "sender-volume-tight"
action = "suspend"
dim = "src"
key = "13800000003"
by = "+15s"
[[test.expect]]
rule = "sender-volume"
action = "suspend"
dim = "src"
key = "13800000003"
by = "+30s"

[[test]]
name = "this one fails: the rule cannot fire on three messages"
[[test.repeat]]
record = { type = "sms", src = "13800000002", dst = "1390{s7}", text = "在吗" }
start = "2026-11-10T08:00:00Z"
count = 12
over = "30s"
[[test.expect]]
rule = "sender-volume"
action = "throttle"
dim = "src"
key = "13800000002"
[[test.absent]]
dim = "src"
key = "13800000002"
"#;

#[test]
fn protection_and_allowlists_and_a_failure_that_shows_what_happened() {
    let d = dir("policy");
    std::fs::write(d.join("policy.toml"), POLICY_PACK).unwrap();
    std::fs::write(d.join("policy.tests.toml"), POLICY_TESTS).unwrap();
    let report = run_file(&d.join("policy.toml"), None).unwrap();
    assert_eq!(report.passed.len(), 4, "{:#?}", report.failed);
    assert_eq!(report.failed.len(), 1);
    let (name, why) = &report.failed[0];
    assert!(name.starts_with("this one fails"));
    // Expected vs got, with the action's reason and evidence; the subscriber is masked.
    assert!(
        why.contains("expected throttle src 13800000002 by rule sender-volume; not taken"),
        "{why}"
    );
    assert!(
        why.contains("expected no action on src 13800000002; got suspend by rule sender-volume"),
        "{why}"
    );
    assert!(why.contains("suspend src 138****0002"), "{why}");
    assert!(why.contains("evidence: {\"count\":10"), "{why}");

    // The binary: exit 1 on a failing test, the summary line last.
    let o = Command::new(env!("CARGO_BIN_EXE_anning"))
        .args(["rules", "test", d.join("policy.toml").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("FAIL  this one fails"), "{out}");
    assert!(out.trim_end().ends_with("policy.tests.toml: 4 passed, 1 failed"), "{out}");

    // Replay: shadow actions only in --shadow-out, marked, and counted apart in the summary.
    let input = d.join("in.jsonl");
    let lines: String = (0..12)
        .map(|i| {
            format!(
                "{{\"ts\":{},\"type\":\"sms\",\"src\":\"13800000009\",\"dst\":\"139{:08}\"}}\n",
                1_794_297_600_000i64 + i * 2000,
                i * 7919
            )
        })
        .collect();
    std::fs::write(&input, lines).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_anning"))
        .args([
            "replay",
            input.to_str().unwrap(),
            "--rules",
            d.join("policy.toml").to_str().unwrap(),
        ])
        .args([
            "--out",
            d.join("a.jsonl").to_str().unwrap(),
            "--shadow-out",
            d.join("s.jsonl").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success());
    let main = std::fs::read_to_string(d.join("a.jsonl")).unwrap();
    let shadow = std::fs::read_to_string(d.join("s.jsonl")).unwrap();
    assert!(main.contains("\"rule\":\"sender-volume\"") && !main.contains("shadow"), "{main}");
    assert_eq!(shadow.lines().count(), 1, "{shadow}");
    assert!(
        shadow.contains("\"rule\":\"sender-volume-tight\"") && shadow.contains("\"shadow\":true"),
        "{shadow}"
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("shadow:   1 would-be actions"), "{stderr}");

    // An allowlist file held apart from the pack: the sender is left alone, and the summary
    // counts what was held back (once per would-be action: the rule and its shadow twin).
    // A file with a rule in it is refused.
    std::fs::write(
        d.join("allow.toml"),
        "[[allow]]\ndim = \"src\"\nkey = \"13800000009\"\nuntil = \"2026-12-01T00:00:00Z\"\nreason = \"appeal 7\"\nauthor = \"noc-wang\"\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_anning"))
        .args([
            "replay",
            input.to_str().unwrap(),
            "--rules",
            d.join("policy.toml").to_str().unwrap(),
        ])
        .args(["--allowlist", d.join("allow.toml").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(o.stdout.is_empty(), "{}", String::from_utf8_lossy(&o.stdout));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("policy:   2 throttles/suspensions held back by the allowlist"),
        "{stderr}"
    );
    std::fs::write(d.join("bad-allow.toml"), POLICY_PACK).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_anning"))
        .args([
            "replay",
            input.to_str().unwrap(),
            "--allowlist",
            d.join("bad-allow.toml").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("an allowlist file holds only [[allow]] tables"));
    let o = Command::new(env!("CARGO_BIN_EXE_anning"))
        .args(["rules", "test", default_pack().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn malformed_test_files_name_the_place() {
    let d = dir("bad");
    std::fs::write(d.join("p.toml"), POLICY_PACK).unwrap();
    std::fs::write(d.join("p.tests.toml"), "[[test]]\nname = \"x\"\nrecords = 5\n").unwrap();
    let e = run_file(&d.join("p.toml"), None).unwrap_err().to_string();
    assert!(
        e.contains("p.tests.toml: 3:11: invalid type: integer `5`, expected a sequence"),
        "{e}"
    );

    std::fs::write(
        d.join("p.tests.toml"),
        "[[test]]\nname = \"x\"\n[[test.repeat]]\nrecord = { type = \"sms\" }\nstart = \"soon\"\ncount = 1\n",
    )
    .unwrap();
    let report = run_file(&d.join("p.toml"), None).unwrap();
    assert!(
        report.failed[0].1.contains("repeat[0]: `start`: not an RFC 3339 timestamp"),
        "{:?}",
        report.failed
    );

    // A test record the decoder rejects fails the test with the decoder's reason.
    std::fs::write(
        d.join("p.tests.toml"),
        "[[test]]\nname = \"x\"\nrecords = ['{\"ts\":1,\"type\":\"sms\",\"src\":\"138\"}']\n",
    )
    .unwrap();
    let report = run_file(&d.join("p.toml"), None).unwrap();
    assert!(
        report.failed[0].1.contains("a test record was rejected: records:1"),
        "{:?}",
        report.failed
    );

    // No test file beside the pack.
    let o = Command::new(env!("CARGO_BIN_EXE_anning"))
        .args(["rules", "test", d.join("missing.toml").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.tests.toml: cannot read"));
}
