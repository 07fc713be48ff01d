//! The analysts' desk through the binary: the audit log from replay, `explain` and `release`
//! on an action of a golden replay, `query` answers checked against counts computed here, and
//! `report` rendered in headless Chromium.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const DODGER_ACTION: &str = "bc660f51db52eb18";
const DODGER_TS: i64 = 1_794_306_910_659;
const DODGER_UNTIL: i64 = 1_794_314_110_659;

fn dir(name: &str) -> PathBuf {
    crate::util::scratch(&format!("desk-{name}"))
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_anning")).args(args).output().unwrap()
}

fn ok(args: &[&str]) -> (String, String) {
    let o = run(args);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "anning {args:?} failed:\n{err}\n{out}");
    (out, err)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn explain_and_release_an_action_of_the_golden_dodger_replay() {
    let d = dir("explain");
    let (audit, out) = (d.join("audit"), d.join("a.jsonl"));
    let input = anning_fixtures::sample_path("dodger.jsonl");
    let registry = anning_fixtures::sample_path("registry.csv");
    let (_, err) = ok(&[
        "replay",
        s(&input),
        "--registry",
        s(&registry),
        "--out",
        s(&out),
        "--audit",
        s(&audit),
    ]);
    assert!(err.contains("audit:    1 actions in 1 files"), "{err}");
    let golden = std::fs::read_to_string(anning_fixtures::sample_path("dodger.actions.jsonl")).unwrap();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), golden);
    assert!(golden.contains(DODGER_ACTION));
    assert!(audit.join("packs/0718deb0154d9162.toml").exists());
    assert!(audit.join("day=2026-11-10").is_dir(), "partitioned by the action's UTC day");

    let at = |ms: i64| ms.to_string();
    let (text, _) = ok(&[
        "explain",
        DODGER_ACTION,
        "--audit",
        s(&audit),
        "--input",
        s(&input),
        "--at",
        &at(DODGER_TS + 3_600_000),
    ]);
    // The rule as it was, the figures that tipped it, the tipping record and samples from
    // the window, the history, whether it holds; the subscriber masked everywhere.
    for want in [
        "action bc660f51db52eb18: throttle src 137****0001 to 0.02/s at 2026-11-10T",
        "rule near-limit-hourly as it was (pack 0718deb0154d9162):",
        "id = \"near-limit-hourly\"",
        "kind = \"near_limit\"",
        "counts       [0,0,0,0,185,192]",
        "tipping record:",
        "\"id\":\"d2-17\"",
        "records of the target in the rule's window (latest 5):",
        "escalation history of src 137****0001:",
        "* 2026-11-10T",
        "yes: in force until 2026-11-10T",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(!text.contains("13700000001"), "a subscriber number shown unmasked:\n{text}");
    assert_eq!(
        text.matches("\"src\":\"137****0001\"").count(),
        6,
        "tipping record + 5 samples:\n{text}"
    );
    let (raw, _) = ok(&["explain", DODGER_ACTION, "--audit", s(&audit), "--raw", "--at", &at(DODGER_TS)]);
    assert!(raw.contains("throttle src 13700000001"), "{raw}");

    let (lapsed, _) = ok(&["explain", DODGER_ACTION, "--audit", s(&audit), "--at", &at(DODGER_UNTIL)]);
    assert!(lapsed.contains("no: lapsed at 2026-11-10T"), "{lapsed}");

    // An appeal upheld half an hour in.
    let (said, _) = ok(&[
        "release",
        DODGER_ACTION,
        "--audit",
        s(&audit),
        "--reason",
        "appeal 12: a school's notice round",
        "--author",
        "noc-7",
        "--at",
        &at(DODGER_TS + 1_800_000),
    ]);
    assert!(said.starts_with("release ") && said.contains("of src 137****0001"), "{said}");
    let (json, _) = ok(&[
        "explain",
        DODGER_ACTION,
        "--audit",
        s(&audit),
        "--json",
        "--at",
        &at(DODGER_TS + 3_600_000),
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["standing"]["why"], "released", "{v}");
    assert_eq!(v["standing"]["by"], "noc-7");
    assert_eq!(v["history"].as_array().unwrap().len(), 2);
    assert_eq!(v["history"][1]["action"], "release");
    assert_eq!(v["key"], "137****0001");
    // Before the release, it still held.
    let (before, _) = ok(&["explain", DODGER_ACTION, "--audit", s(&audit), "--at", &at(DODGER_TS + 60_000)]);
    assert!(before.contains("yes: in force"), "{before}");

    let o = run(&["explain", "0000000000000000", "--audit", s(&audit)]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no action 0000000000000000 in the audit log at") && err.contains("(2 entries)"),
        "{err}"
    );
    let o = run(&[
        "release",
        "0000000000000000",
        "--audit",
        s(&audit),
        "--reason",
        "x",
        "--author",
        "y",
    ]);
    assert_eq!(o.status.code(), Some(1));
}

/// The signature as the contract defines it, written here again: the field, else the
/// `【…】` at the start of the text, else at its end.
fn signature(r: &serde_json::Value) -> Option<String> {
    if let Some(s) = r["sig"].as_str() {
        return Some(s.to_string());
    }
    let t = r["text"].as_str()?.trim();
    let inner = if let Some(rest) = t.strip_prefix('【') {
        rest.split_once('】').map(|x| x.0)
    } else if let Some(rest) = t.strip_suffix('】') {
        rest.rsplit_once('【').map(|x| x.1)
    } else {
        None
    }?;
    let inner = inner.trim();
    (!inner.is_empty()).then(|| inner.to_string())
}

fn csv_rows(out: &str) -> Vec<Vec<String>> {
    out.lines().skip(1).map(|l| l.split(',').map(str::to_string).collect()).collect()
}

#[test]
fn query_answers_match_counts_made_independently() {
    let d = dir("query");
    let p = |n: &str| d.join(n).to_str().unwrap().to_string();
    let base = [
        "gen",
        "double11",
        "--records",
        "170000",
        "--seed",
        "5",
        "--registry",
        &p("reg.csv"),
        "-q",
    ];
    ok(&[&base[..], &["--out", &p("day.jsonl")]].concat());
    ok(&[&base[..], &["--out", &p("day.parquet")]].concat());

    // Counted here, from the file.
    let plan = anning_rules::default_pack().number_plan;
    let mut by_sig: HashMap<String, u64> = HashMap::new();
    let mut hourly: HashMap<(String, i64), u64> = HashMap::new();
    let text = std::fs::read_to_string(p("day.jsonl")).unwrap();
    for line in text.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        if r["type"] != "sms" {
            continue;
        }
        if let Some(sig) = signature(&r) {
            *by_sig.entry(sig).or_default() += 1;
        }
        let src = r["src"].as_str().unwrap();
        if plan.classify(src) == anning_rules::AddrClass::Subscriber {
            let hour = r["ts"].as_i64().unwrap().div_euclid(3_600_000);
            *hourly.entry((src.to_string(), hour)).or_default() += 1;
        }
    }
    let mut top: Vec<(String, u64)> = by_sig.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    top.truncate(10);
    let near = hourly.values().filter(|&&n| (180..200).contains(&n)).count();
    assert!(near > 0, "double11 has threshold dodgers");

    let q_top = "SELECT sig, count(*) AS n FROM traffic WHERE type = 'sms' AND sig IS NOT NULL \
                 GROUP BY sig ORDER BY n DESC, sig LIMIT 10";
    for file in ["day.jsonl", "day.parquet"] {
        let table = format!("traffic={}", p(file));
        let (out, err) = ok(&["query", q_top, "--table", &table, "--format", "csv"]);
        let got: Vec<(String, u64)> = csv_rows(&out).into_iter().map(|r| (r[0].clone(), r[1].parse().unwrap())).collect();
        assert_eq!(got, top, "{file}: {err}");
        let (out, _) = ok(&[
            "query",
            "SELECT count(*) AS n FROM hourly_counts WHERE messages >= 180 AND messages < 200",
            "--table",
            &table,
            "--format",
            "csv",
        ]);
        assert_eq!(csv_rows(&out)[0][0], near.to_string(), "{file}");
        let (out, _) = ok(&[
            "query",
            "SELECT sum(near_hours) FROM near_limit",
            "--table",
            &table,
            "--format",
            "csv",
        ]);
        assert_eq!(csv_rows(&out)[0][0], near.to_string(), "{file}");
    }
    let traffic = format!("traffic={}", p("day.jsonl"));

    // Subscriber numbers are masked unless asked for.
    let q = "SELECT src, count(*) AS n FROM traffic WHERE src_class = 'subscriber' GROUP BY src ORDER BY n DESC, src LIMIT 3";
    let (masked, _) = ok(&["query", q, "--table", &traffic, "--format", "jsonl"]);
    let (raw, _) = ok(&["query", q, "--table", &traffic, "--format", "jsonl", "--raw"]);
    let masked: Vec<serde_json::Value> = masked.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let raw: Vec<serde_json::Value> = raw.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(masked.len(), 3);
    for (m, r) in masked.iter().zip(&raw) {
        let (m, r) = (m["src"].as_str().unwrap(), r["src"].as_str().unwrap());
        assert_eq!(m, anning_detector::mask::mask_number(r));
        assert!(m.contains("****") && !r.contains('*'));
    }
    let (table, _) = ok(&["query", "SELECT mask('13800138000') AS m, addr_class('10690001234') AS c"]);
    assert!(table.contains("138****8000") && table.contains("port"), "{table}");

    // The audit log as a table: the same actions as replay wrote, per rule and per hour.
    ok(&[
        "replay",
        &p("day.jsonl"),
        "--registry",
        &p("reg.csv"),
        "--out",
        &p("a.jsonl"),
        "--audit",
        &p("audit"),
        "-q",
    ]);
    let mut per_rule: BTreeMap<String, u64> = BTreeMap::new();
    for l in std::fs::read_to_string(p("a.jsonl")).unwrap().lines() {
        let a: serde_json::Value = serde_json::from_str(l).unwrap();
        *per_rule.entry(a["rule"].as_str().unwrap().to_string()).or_default() += 1;
    }
    assert!(per_rule.len() >= 5, "{per_rule:?}");
    let (out, _) = ok(&[
        "query",
        "SELECT rule, count(*) AS n FROM audit GROUP BY rule ORDER BY rule",
        "--audit",
        &p("audit"),
        "--format",
        "csv",
    ]);
    let got: BTreeMap<String, u64> = csv_rows(&out).into_iter().map(|r| (r[0].clone(), r[1].parse().unwrap())).collect();
    assert_eq!(got, per_rule);
    let total: u64 = per_rule.values().sum();
    for (table, path) in [("--audit", p("audit")), ("--table", format!("actions={}", p("a.jsonl")))] {
        let (out, _) = ok(&[
            "query",
            "SELECT sum(actions) FROM actions_per_rule_hour",
            table,
            &path,
            "--format",
            "csv",
        ]);
        assert_eq!(csv_rows(&out)[0][0], total.to_string(), "{table}");
    }

    // Bad lines are counted and named; the rest is queried.
    let bad = d.join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"ts\":1,\"type\":\"sms\",\"src\":\"13800138000\",\"dst\":\"10690001\"}\n{\"ts\":\"yesterday\",\"type\":\"sms\"}\n",
    )
    .unwrap();
    let (out, err) = ok(&[
        "query",
        "SELECT count(*) FROM traffic",
        "--table",
        &format!("traffic={}", s(&bad)),
        "--format",
        "csv",
    ]);
    assert_eq!(csv_rows(&out)[0][0], "1");
    assert!(err.contains("(1 records, 1 rejected)") && err.contains("bad.jsonl:2:"), "{err}");
    // A mistake in the SQL is an error, not a crash.
    let o = run(&["query", "SELECT nope FROM traffic", "--table", &traffic]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nope"));
    let o = run(&["query", "SELECT 1", "--table", "traffic"]);
    assert_eq!(o.status.code(), Some(2), "NAME=PATH is checked");
}

fn chromium() -> String {
    for c in ["chromium", "/usr/bin/chromium", "chromium-browser"] {
        if Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return c.to_string();
        }
    }
    panic!("Chromium is needed to render the report: ops/test.sh installs Debian's chromium");
}

/// Renders `page` headless; returns (DOM after scripts, Chromium's log with console messages).
fn render(page: &Path, profile: &Path) -> (String, String) {
    let o = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            &format!("--user-data-dir={}", profile.display()),
            "--dump-dom",
            &format!("file://{}", page.display()),
        ])
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn console_errors(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains("CONSOLE") || l.contains("Uncaught")).collect()
}

#[test]
fn the_report_renders_in_headless_chromium_with_every_plot() {
    let d = dir("report");
    let p = |n: &str| d.join(n).to_str().unwrap().to_string();
    ok(&[
        "gen",
        "double11",
        "--records",
        "170000",
        "--seed",
        "2",
        "--registry",
        &p("reg.csv"),
        "--out",
        &p("day.jsonl"),
        "-q",
    ]);
    let (_, err) = ok(&["report", &p("day.jsonl"), "--registry", &p("reg.csv"), "--out", &p("out")]);
    assert!(err.contains("index.html: 170000 records"), "{err}");
    let page = d.join("out/index.html");
    let html = std::fs::read_to_string(&page).unwrap();
    for plot in [
        "per-rule",
        "hourly-histogram",
        "top-signatures",
        "top-ports",
        "complained-signatures",
        "complained-ports",
    ] {
        assert!(html.contains(&format!("data-plot=\"{plot}\"")), "{plot}");
    }
    assert!(html.contains("published limit 200/h"));
    let subscriber = regex::Regex::new(r"\b1[3-9][0-9]{9}\b").unwrap();
    assert!(!subscriber.is_match(&html), "an unmasked subscriber number in the report");

    // The harness sees a broken page as broken ...
    let broken = d.join("broken.html");
    std::fs::write(
        &broken,
        "<html><body><script>document.body.dataset.plots='1';notAFunction();</script></body></html>",
    )
    .unwrap();
    let (_, log) = render(&broken, &d.join("profile-a"));
    assert!(!console_errors(&log).is_empty(), "the console check must see errors:\n{log}");
    // ... and the report as whole: six plots with marks, no console errors.
    let (dom, log) = render(&page, &d.join("profile-b"));
    assert!(dom.contains("data-plots=\"6\""), "plots drawn: {}", &dom[..dom.len().min(400)]);
    assert!(console_errors(&log).is_empty(), "console errors: {:?}", console_errors(&log));
    assert!(dom.contains("<table id=\"actions\">"));

    // The same actions from the audit log of a replay (shadow rules' would-be actions,
    // which the audit log keeps too, are not actions taken).
    let pack = d.join("pack.toml");
    let shadow_rule = "\n[[rule]]\nid = \"everyone-shadow\"\nkind = \"rate\"\ndim = \"src\"\nwhen = { type = [\"sms\"] }\nwindow = \"1h\"\nslide = \"1m\"\nthreshold = 50\nshadow = true\nladder = [{ action = \"alert\", for = \"1h\" }]\n";
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/packs/default.toml")).unwrap();
    std::fs::write(&pack, text + shadow_rule).unwrap();
    let (_, err) = ok(&[
        "replay",
        &p("day.jsonl"),
        "--registry",
        &p("reg.csv"),
        "--rules",
        s(&pack),
        "--audit",
        &p("audit"),
        "--out",
        &p("a.jsonl"),
        "--shadow-out",
        &p("shadow.jsonl"),
    ]);
    let taken = std::fs::read_to_string(p("a.jsonl")).unwrap().lines().count();
    let shadow = std::fs::read_to_string(p("shadow.jsonl")).unwrap().lines().count();
    assert!(shadow > 0, "{err}");
    ok(&["report", &p("day.jsonl"), "--audit", &p("audit"), "--out", &p("out2"), "-q"]);
    let html = std::fs::read_to_string(d.join("out2/index.html")).unwrap();
    assert!(
        html.contains(&format!("{taken} of {taken} actions")),
        "{taken} taken, {shadow} shadow"
    );
    assert!(!html.contains("everyone-shadow"));
}
