//! The daemon's audit log and release on appeal, through the real broker: every action
//! produced lands in the audit log, `POST /actions/release` lifts a throttle (a `release`
//! action on the actions topic, a row with its author in the log), and `anning explain`
//! tells the story from the log.

use std::time::Duration;

use crate::kafka::{Daemon, broker, produce, read_actions, scenario, tmp, unique};

#[test]
fn actions_and_a_release_on_appeal_reach_the_audit_log() {
    let brokers = broker(19092);
    let s = scenario("audit", 250_000, &[]);
    let name = unique("audit");
    let audit = tmp("audit.d");
    let _ = std::fs::remove_dir_all(&audit);
    let d = Daemon::start_with(
        &brokers,
        &name,
        19908,
        &s.registry,
        &["--audit", audit.to_str().unwrap()],
        &[("ANNING_ADMIN_TOKEN", "s3cret"), ("ANNING_AUDIT_FLUSH_MS", "300")],
    );
    produce(&brokers, &format!("{name}.in"), &s.input);
    let got = read_actions(&brokers, &format!("{name}.actions"), &s.expected, Duration::from_secs(120));
    assert!(got.len() >= s.expected.len(), "every action arrived");

    // The enforcement that lasts longest is still in force at the end of the stream.
    let target = s
        .expected
        .iter()
        .filter(|a| a["action"] != "alert")
        .max_by_key(|a| a["until"].as_i64().unwrap())
        .unwrap()
        .clone();
    let body = serde_json::json!({
        "dim": target["dim"], "key": target["key"],
        "reason": "appeal 31: a wedding's invitations", "author": "noc-7",
    })
    .to_string();
    let post = |auth: &str, body: &str| {
        d.request(
            "POST",
            "/actions/release",
            &format!(
                "{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    // `request` ends the headers itself; the body rides after our blank line.
    assert_eq!(post("", &body).0, 401, "the token is required");
    let (code, text) = post("Authorization: Bearer s3cret\r\n", "{\"dim\":\"src\"}");
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("missing field"), "{text}");
    let (code, text) = post("Authorization: Bearer s3cret\r\n", &body);
    assert_eq!(code, 200, "{text}");
    let released: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(released["action"], "release");
    assert_eq!(released["key"], target["key"]);
    let (code, text) = post("Authorization: Bearer s3cret\r\n", &body);
    assert_eq!(code, 404, "nothing left to release: {text}");

    let mut want = s.expected.clone();
    want.push(released.clone());
    let got = read_actions(&brokers, &format!("{name}.actions"), &want, Duration::from_secs(60));
    assert!(
        got.iter().any(|a| a["id"] == released["id"]),
        "the release went to the actions topic"
    );
    assert_eq!(d.metric("anning_releases_total"), 1.0);
    assert_eq!(d.stop(), 0);

    // Every action produced, and the release with its author, are in the log.
    let entries = anning_pipelines::audit::read(&audit).unwrap();
    let logged: std::collections::BTreeSet<&str> = entries.iter().map(|e| e.id.as_str()).collect();
    for a in &want {
        assert!(logged.contains(a["id"].as_str().unwrap()), "{a} missing from the audit log");
    }
    let row = entries.iter().find(|e| e.id == released["id"].as_str().unwrap()).unwrap();
    assert_eq!((row.author.as_deref(), row.origin.as_str()), (Some("noc-7"), "daemon"));
    assert!(audit.join(format!("packs/{}.toml", target["pack"].as_str().unwrap())).exists());

    let o = std::process::Command::new(env!("CARGO_BIN_EXE_anning"))
        .args([
            "explain",
            target["id"].as_str().unwrap(),
            "--audit",
            audit.to_str().unwrap(),
            "--json",
        ])
        .args(["--at", &(row.ts + 1).to_string()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let x: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(x["standing"]["why"], "released", "{x}");
    assert_eq!(x["standing"]["by"], "noc-7");
}
