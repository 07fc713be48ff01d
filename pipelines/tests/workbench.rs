//! `anning tune` and `anning diff` through the binary on a generated day.

use std::path::PathBuf;
use std::process::Command;

fn anning(args: &[&str]) -> std::process::Output {
    let o = Command::new(env!("CARGO_BIN_EXE_anning")).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "anning {args:?}: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    o
}

struct Day {
    dir: PathBuf,
}

impl Day {
    fn new(name: &str) -> Day {
        let dir = crate::util::scratch(&format!("wb-{name}"));
        let d = Day { dir };
        anning(&[
            "gen",
            "double11",
            "--records",
            "200000",
            "--seed",
            "5",
            "--out",
            &d.p("day.jsonl"),
            "--truth",
            &d.p("truth.jsonl"),
            "--registry",
            &d.p("reg.csv"),
        ]);
        d
    }
    fn p(&self, f: &str) -> String {
        self.dir.join(f).to_str().unwrap().to_string()
    }
}

fn default_pack() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../rules/packs/default.toml").to_string()
}

#[test]
fn tune_sweeps_one_parameter_in_one_pass_and_matches_replay() {
    let d = Day::new("tune");
    let o = anning(&[
        "tune",
        &d.p("day.jsonl"),
        "--registry",
        &d.p("reg.csv"),
        "--truth",
        &d.p("truth.jsonl"),
        "--rule",
        "recipient-code-flood",
        "--param",
        "threshold=4..8:2",
        "--csv",
        &d.p("tune.csv"),
        "--json",
    ]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        rows.iter().map(|r| r["value"].as_f64().unwrap()).collect::<Vec<_>>(),
        [4.0, 6.0, 8.0]
    );
    // Lower thresholds can only act on more victims and look-alikes, never fewer.
    let acted: Vec<u64> = rows.iter().map(|r| r["rule_actions"].as_u64().unwrap()).collect();
    assert!(acted[0] >= acted[1] && acted[1] >= acted[2] && acted[2] > 0, "{rows:?}");
    // The pack's own value gives exactly what replay gives.
    anning(&[
        "replay",
        &d.p("day.jsonl"),
        "--registry",
        &d.p("reg.csv"),
        "--out",
        &d.p("a.jsonl"),
        "--quiet",
    ]);
    let replayed = std::fs::read_to_string(d.p("a.jsonl")).unwrap();
    assert_eq!(rows[2]["actions"].as_u64().unwrap(), replayed.lines().count() as u64);
    let scored: serde_json::Value =
        serde_json::from_slice(&anning(&["score", "--truth", &d.p("truth.jsonl"), "--actions", &d.p("a.jsonl"), "--json"]).stdout).unwrap();
    assert_eq!(rows[2]["precision"], scored["overall"]["precision"]);
    assert_eq!(rows[2]["recall"], scored["overall"]["recall"]);
    assert_eq!(rows[2]["legitimate_harmed"], scored["overall"]["legitimate_harmed"]);
    let csv = std::fs::read_to_string(d.p("tune.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4);
    assert!(csv.starts_with("threshold,actions,rule_actions,enforced_targets,precision,recall,legitimate_harmed,collateral\n"));

    // Bad sweeps and parameters are refused with the reason.
    for (param, want) in [
        ("threshold=9..4:1", "TO at least FROM"),
        ("threshold", "expected NAME=FROM..TO:STEP"),
        ("band=0.8..0.9:0.05", "has no tunable parameter `band`"),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_anning"))
            .args([
                "tune",
                &d.p("day.jsonl"),
                "--truth",
                &d.p("truth.jsonl"),
                "--rule",
                "recipient-code-flood",
                "--param",
                param,
            ])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(want),
            "{param}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn diff_shows_what_a_change_gains_loses_and_changes() {
    let d = Day::new("diff");
    let pack = std::fs::read_to_string(default_pack()).unwrap();
    let at = pack.find("id = \"recipient-code-flood\"").unwrap();
    let t = at + pack[at..].find("threshold = 8").unwrap();
    let looser = format!("{}threshold = 3{}", &pack[..t], &pack[t + "threshold = 8".len()..]);
    std::fs::write(d.p("looser.toml"), looser).unwrap();

    let o = anning(&[
        "diff",
        &d.p("day.jsonl"),
        "--registry",
        &d.p("reg.csv"),
        "--rules",
        &default_pack(),
        "--rules",
        &d.p("looser.toml"),
        "--json",
    ]);
    let diff: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for r in diff["rules"].as_array().unwrap() {
        if r["rule"] == "recipient-code-flood" {
            assert!(r["gained"].as_u64().unwrap() > 0, "{r}");
            assert_eq!(r["lost"], 0, "a lower threshold loses nothing: {r}");
        } else {
            assert_eq!(
                (r["gained"].as_u64(), r["lost"].as_u64(), r["changed"].as_u64()),
                (Some(0), Some(0), Some(0)),
                "{r}"
            );
        }
    }
    for c in diff["changes"].as_array().unwrap() {
        assert_eq!(c["rule"], "recipient-code-flood");
        assert!(c["key"].as_str().unwrap().contains("****"), "subscribers masked: {c}");
    }
    // A pack against itself: nothing differs. The table names both packs.
    let o = anning(&[
        "diff",
        &d.p("day.jsonl"),
        "--registry",
        &d.p("reg.csv"),
        "--rules",
        &default_pack(),
        "--rules",
        &default_pack(),
    ]);
    let table = String::from_utf8(o.stdout).unwrap();
    assert!(table.starts_with("A = "), "{table}");
    assert!(
        !table.contains("gained (") && !table.contains("lost (") && !table.contains("changed ("),
        "{table}"
    );
}
