//! `anning score` and `anning gen` end to end: known answers on hand-made files, located
//! errors on malformed ones, and generate → replay → score through the binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use anning_pipelines::score::{self, ActionRow};

fn dir(name: &str) -> PathBuf {
    crate::util::scratch(&format!("score-{name}"))
}

fn write(path: &Path, lines: &[&str]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

const H: i64 = 3_600_000;

fn truth_lines() -> Vec<&'static str> {
    vec![
        r#"{"entity":"d/0","pattern":"dodger","label":"abuse","start":0,"catch":[{"dim":"src","key":"17100000001"}]}"#,
        r#"{"entity":"d/1","pattern":"dodger","label":"abuse","start":0,"catch":[{"dim":"src","key":"17100000002"}]}"#,
        r#"{"entity":"d/2","pattern":"dodger","label":"abuse","start":3600000,"catch":[{"dim":"src","key":"17100000003"}]}"#,
        r#"{"entity":"h/0","pattern":"port_hopping","label":"abuse","start":0,"catch":[{"dim":"sig","key":"鑫源贷"}],"also":[{"dim":"port","key":"10691000001"}]}"#,
        r#"{"entity":"g/0","pattern":"greeting","label":"legitimate","start":0,"catch":[{"dim":"src","key":"13800000001"}]}"#,
        r#"{"entity":"o/0","pattern":"otp","label":"legitimate","start":0,"catch":[{"dim":"port","key":"1065800001"},{"dim":"sig","key":"淘宝"}]}"#,
    ]
}

fn action(ts: i64, kind: &str, dim: &str, key: &str) -> String {
    format!(
        r#"{{"id":"x{ts}{key}","ts":{ts},"action":"{kind}","dim":"{dim}","key":"{key}","rule":"r","level":1,"reason":"r","evidence":{{}}}}"#
    )
}

#[test]
fn hand_made_truth_and_actions_score_as_computed_by_hand() {
    let d = dir("known");
    let (t, a) = (d.join("truth.jsonl"), d.join("actions.jsonl"));
    write(&t, &truth_lines());
    let acts = [
        action(2 * H, "throttle", "src", "17100000001"), // d/0 after 120 min
        action(3 * H, "suspend", "src", "17100000001"),  // later: does not count again
        action(H / 2, "suspend", "src", "17100000002"),  // d/1 after 30 min
        action(H, "alert", "src", "17100000003"),        // d/2: alert only
        action(H, "throttle", "port", "10691000001"),    // a hopper's port: abuse target, no catch
        action(4 * H, "throttle", "src", "13800000001"), // the greeter: harmed
        action(5 * H, "suspend", "src", "13900000009"),  // nobody: collateral
        action(5 * H, "release", "src", "13900000009"),  // ignored
    ];
    write(&a, &acts.iter().map(String::as_str).collect::<Vec<_>>());
    let truth = score::read_truth(&t).unwrap();
    let actions = score::read_actions(&a).unwrap();
    let plan = anning_rules::default_pack().number_plan;
    let s = score::score(&truth, &actions, Some(&plan));

    let dodger = s.patterns.iter().find(|p| p.pattern == "dodger").unwrap();
    assert_eq!((dodger.entities, dodger.acted, dodger.alerted_only), (3, 2, 1));
    assert_eq!(dodger.median_minutes_to_act, Some(75.0), "median of 120 and 30");
    let hop = s.patterns.iter().find(|p| p.pattern == "port_hopping").unwrap();
    assert_eq!((hop.entities, hop.acted), (1, 0), "a port of a hopper is not the hopper");
    let o = &s.overall;
    assert_eq!((o.actions, o.enforcements, o.enforced_targets), (8, 6, 5));
    assert_eq!((o.abuse_targets, o.legitimate_targets, o.collateral), (3, 1, 1));
    assert_eq!(o.precision, Some(3.0 / 5.0));
    assert_eq!((o.abuse_entities, o.abuse_acted, o.recall), (4, 2, Some(0.5)));
    assert_eq!((o.legitimate_entities, o.legitimate_harmed), (2, 1));
    assert_eq!(s.harmed, vec!["g/0".to_string()]);
    assert_eq!(
        s.collateral_samples,
        vec!["src:139****0009".to_string()],
        "subscriber numbers masked"
    );
    let raw = score::score(&truth, &actions, None);
    assert_eq!(raw.collateral_samples, vec!["src:13900000009".to_string()]);

    let table = score::render(&s);
    assert!(
        table.contains("precision 0.600   recall 0.500 (2 of 4 abuse entities)   legitimate harmed 1 of 2   collateral 1"),
        "{table}"
    );
}

#[test]
fn malformed_truth_and_actions_are_reported_with_file_and_line() {
    let d = dir("bad");
    let t = d.join("truth.jsonl");
    let mut lines = truth_lines();
    lines.insert(
        1,
        r#"{"entity":"x","pattern":"dodger","label":"abusive","start":0,"catch":[{"dim":"src","key":"1"}]}"#,
    );
    lines.insert(3, "not json");
    lines.push(r#"{"entity":"d/0","pattern":"dodger","label":"abuse","start":0,"catch":[{"dim":"src","key":"2"}]}"#);
    lines.push(r#"{"entity":"e","pattern":"dodger","label":"abuse","start":0,"catch":[{"dim":"colour","key":"2"}]}"#);
    write(&t, &lines);
    let errs: Vec<String> = score::read_truth(&t).unwrap_err().iter().map(|e| e.to_string()).collect();
    let p = t.display();
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert!(
        errs[0].starts_with(&format!("{p}:2:")) && errs[0].contains("unknown variant `abusive`"),
        "{}",
        errs[0]
    );
    assert_eq!(errs[1], format!("{p}:4:2: expected ident"));
    assert_eq!(errs[2], format!("{p}:9: entity `d/0` was already labelled on line 1"));
    assert_eq!(errs[3], format!("{p}:10: entity `e`: `colour` is not a dimension"));

    let a = d.join("actions.jsonl");
    write(
        &a,
        &[
            &action(1, "throttle", "src", "1"),
            &action(2, "ban", "src", "1"),
            r#"{"id":"z","ts":"soon"}"#,
        ],
    );
    let errs: Vec<String> = score::read_actions(&a).unwrap_err().iter().map(|e| e.to_string()).collect();
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs[0].starts_with(&format!("{}:2:", a.display())) && errs[0].contains("unknown variant `ban`"),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].starts_with(&format!("{}:3:", a.display())) && errs[1].contains("invalid type"),
        "{}",
        errs[1]
    );

    // The binary prints them all and exits 2.
    let o = Command::new(env!("CARGO_BIN_EXE_anning"))
        .args(["score", "--truth", t.to_str().unwrap(), "--actions", a.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(stderr.lines().count(), 6, "{stderr}");
    assert!(stderr.contains(&format!("{}:2:", a.display())));
}

fn anning(args: &[&str]) -> std::process::Output {
    let o = Command::new(env!("CARGO_BIN_EXE_anning")).args(args).output().unwrap();
    assert!(o.status.success(), "anning {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    o
}

#[test]
fn gen_replay_score_through_the_binary_in_jsonl_csv_and_parquet() {
    let d = dir("e2e");
    let p = |n: &str| d.join(n).to_str().unwrap().to_string();
    let base = [
        "gen",
        "double11",
        "--records",
        "250000",
        "--seed",
        "3",
        "--truth",
        &p("truth.jsonl"),
        "--registry",
        &p("reg.csv"),
    ];
    let o = anning(&[&base[..], &["--out", &p("day.jsonl")]].concat());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("250000 records"), "{stderr}");
    anning(&[&base[..], &["--out", &p("day.parquet")]].concat());
    anning(&[&base[..], &["--out", &p("day2.parquet")]].concat());
    anning(&[&base[..], &["--out", &p("day.csv")]].concat());
    let csv = std::fs::read_to_string(p("day.csv")).unwrap();
    assert!(
        csv.starts_with("ts,type,id,src,dst,sig,text,") && csv.lines().count() == 250_001,
        "CSV by extension: a header and one row per record"
    );
    // An extension that names no format is refused, not written as JSON Lines.
    let o = Command::new(env!("CARGO_BIN_EXE_anning"))
        .args([&base[..], &["--out", &p("day.txt")]].concat())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot tell the format"), "{o:?}");
    assert!(!Path::new(&p("day.txt")).exists());
    assert!(
        std::fs::read(p("day.parquet")).unwrap() == std::fs::read(p("day2.parquet")).unwrap(),
        "Parquet: same seed, same bytes"
    );

    anning(&[
        "replay",
        &p("day.jsonl"),
        "--registry",
        &p("reg.csv"),
        "--out",
        &p("a.jsonl"),
        "--quiet",
    ]);
    anning(&[
        "replay",
        &p("day.parquet"),
        "--registry",
        &p("reg.csv"),
        "--out",
        &p("b.jsonl"),
        "--quiet",
    ]);
    let a = std::fs::read_to_string(p("a.jsonl")).unwrap();
    // Evidence names what an analyst needs: the ports that flooded a victim, the farm's
    // group key, the violations of an unsubscribe (subscribers masked).
    let actions: Vec<serde_json::Value> = a.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let by_rule = |rule: &'static str| actions.iter().filter(move |x| x["rule"] == rule);
    let flood = by_rule("recipient-code-flood").next().expect("a bombing victim protected");
    let ports = flood["evidence"]["values"].as_array().unwrap();
    assert!(
        ports.len() >= 8 && ports.iter().all(|p| p.as_str().unwrap().starts_with("106")),
        "{flood}"
    );
    let farm = by_rule("sim-farm-cell").next().expect("a farm caught");
    assert!(farm["evidence"]["group"]["dim"] == "cell+fp", "{farm}");
    let unsub = by_rule("unsubscribe-ignored").next().expect("an unsubscribe violation");
    let v = &unsub["evidence"]["violations"][0];
    assert!(
        v["dst"].as_str().unwrap().contains("****") && v["port"].as_str().unwrap().starts_with("106"),
        "{unsub}"
    );
    assert!(
        a == std::fs::read_to_string(p("b.jsonl")).unwrap(),
        "JSONL and Parquet give the same actions"
    );
    anning(&[
        "replay",
        &p("day.csv"),
        "--registry",
        &p("reg.csv"),
        "--out",
        &p("c.jsonl"),
        "--quiet",
    ]);
    assert!(
        a == std::fs::read_to_string(p("c.jsonl")).unwrap(),
        "JSONL and CSV give the same actions"
    );

    let o = anning(&["score", "--truth", &p("truth.jsonl"), "--actions", &p("a.jsonl"), "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let pattern = |name: &str| {
        s["patterns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pattern"] == name)
            .unwrap()
            .clone()
    };
    // The default pack catches every abuse pattern within ten minutes of event time and
    // harms nobody (the full acceptance, on 2 M records, is in the closing figures).
    for p in s["patterns"].as_array().unwrap() {
        let name = p["pattern"].as_str().unwrap();
        if p["label"] == "abuse" {
            assert_eq!(p["acted"], p["entities"], "{name}: {p}");
            assert!(p["median_minutes_to_act"].as_f64().unwrap() <= 10.0, "{name}: {p}");
        } else {
            assert_eq!(p["acted"], 0, "{name}: {p}");
        }
    }
    assert_eq!(s["overall"]["legitimate_harmed"], 0, "{s}");
    assert_eq!(s["overall"]["collateral"], 0, "{s}");
    assert_eq!(pattern("greeting")["acted"], 0);
    let table = String::from_utf8(anning(&["score", "--truth", &p("truth.jsonl"), "--actions", &p("a.jsonl")]).stdout).unwrap();
    assert!(table.lines().next().unwrap().starts_with("pattern"), "{table}");
    assert!(table.contains("\nprecision "), "{table}");

    // A scenario name that does not exist: exit 2 and the list of names.
    let o = Command::new(env!("CARGO_BIN_EXE_anning"))
        .args(["gen", "christmas"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown scenario `christmas`"));
}

#[test]
fn actions_file_rows_need_only_the_contract_fields() {
    let row: ActionRow = serde_json::from_str(&action(5, "suspend", "sig+dst", "京东+13800138000")).unwrap();
    assert_eq!((row.ts, row.dim.as_str()), (5, "sig+dst"));
}
