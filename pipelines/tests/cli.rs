//! The `anning` binary itself: replay output byte-identical across `--threads`, rules check
//! exit codes and messages.

use std::process::Command;

fn anning() -> Command {
    Command::new(env!("CARGO_BIN_EXE_anning"))
}

#[test]
fn replay_output_is_byte_identical_for_1_2_and_4_threads() {
    let sample = anning_fixtures::sample_path("burst.jsonl");
    let registry = anning_fixtures::sample_path("registry.csv");
    let mut outs = Vec::new();
    for threads in ["1", "2", "4"] {
        let o = anning()
            .args([
                "replay",
                sample.to_str().unwrap(),
                "--registry",
                registry.to_str().unwrap(),
                "--threads",
                threads,
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(stderr.contains("rejected: 1 (late 1)"), "{stderr}");
        assert!(stderr.contains("subscriber-hourly-limit      throttle  1"), "{stderr}");
        outs.push(o.stdout);
    }
    assert!(!outs[0].is_empty());
    assert!(outs.iter().all(|o| *o == outs[0]), "outputs differ across thread counts");
}

#[test]
fn replay_reads_stdin_and_keeps_rejects() {
    use std::io::Write;
    let dir = crate::util::scratch("cli");
    let rejects = dir.join("rejects.jsonl");
    let mut child = anning()
        .args(["replay", "-", "--rejects", rejects.to_str().unwrap(), "--quiet"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"ts\":1,\"type\":\"sms\",\"src\":\"13800138000\",\"dst\":\"139\"}\nnot json\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    let kept = std::fs::read_to_string(&rejects).unwrap();
    let r: serde_json::Value = serde_json::from_str(kept.lines().next().unwrap()).unwrap();
    assert_eq!(r["source"], "<stdin>");
    assert_eq!(r["line"], 2);
    assert_eq!(r["reason"], "malformed");
    assert_eq!(r["raw"], "not json");
}

#[test]
fn rules_check_prints_file_line_col_and_fails() {
    let dir = crate::util::scratch("rc");
    let pack = dir.join("bad.toml");
    std::fs::write(&pack, "[[rule]]\nid = \"x\"\nkind = \"rate\"\ndim = \"src\"\nwindow = \"1h\"\nslide = \"1m\"\nthreshold = 0\nladder = [{ action = \"alert\", for = \"1h\" }]\n").unwrap();
    let o = anning().args(["rules", "check", pack.to_str().unwrap()]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("{}:7:13: `threshold` = 0 must be at least 1\n", pack.display())
    );

    let o = anning()
        .args(["rules", "check", "../rules/packs/default.toml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(String::from_utf8_lossy(&o.stdout).contains("ok: pack `default`"));

    // Warnings: printed with their place; they fail the check only with --deny-warnings.
    let pack = dir.join("warn.toml");
    std::fs::write(&pack, "[[rule]]\nid = \"x\"\nkind = \"rate\"\ndim = \"src\"\nwindow = \"1h\"\nslide = \"1m\"\nthreshold = 100\nladder = [{ action = \"throttle\", rate = 1, for = \"1h\" }]\n").unwrap();
    let o = anning().args(["rules", "check", pack.to_str().unwrap()]).output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!(
            "{}:1:1: warning: rule `x`: ladder step 1 throttles to 1/s",
            pack.display()
        )),
        "{out}"
    );
    assert!(out.contains("warning: no tests: write"), "{out}");
    assert!(out.contains("1 rules, 2 warnings"), "{out}");
    let o = anning()
        .args(["rules", "check", pack.to_str().unwrap(), "--deny-warnings"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    std::fs::write(
        dir.join("warn.tests.toml"),
        "[[test]]\nname = \"t\"\nrecords = ['{\"ts\":1,\"type\":\"sms\",\"src\":\"13800000000\",\"dst\":\"13900000000\"}']\n",
    )
    .unwrap();
    let out = String::from_utf8_lossy(&anning().args(["rules", "check", pack.to_str().unwrap()]).output().unwrap().stdout).to_string();
    assert!(out.contains("warning: rule `x` has no test expecting an action from it"), "{out}");
}
