//! Golden replays: each sample in `fixtures/samples/` against its checked-in actions and
//! rejects. `ANNING_BLESS=1 cargo test` rewrites the expected files.

use anning_fixtures::sample_path;

use crate::util::{actions_jsonl, assert_text_eq, replay};

fn golden(sample: &str) {
    let input = sample_path(&format!("{sample}.jsonl"));
    let (outcome, rejects) = replay(&[&input], 2);
    let got_actions = actions_jsonl(&outcome);
    let root = sample_path("");
    let got_rejects: String = rejects
        .iter()
        .map(|r| {
            let shown = r.to_string();
            format!(
                "{}\n",
                shown
                    .replace(&format!("{}/", root.display()), "")
                    .replace(&root.display().to_string(), "")
            )
        })
        .collect();
    let actions_file = sample_path(&format!("{sample}.actions.jsonl"));
    let rejects_file = sample_path(&format!("{sample}.rejects.txt"));
    if std::env::var_os("ANNING_BLESS").is_some() {
        std::fs::write(&actions_file, &got_actions).unwrap();
        std::fs::write(&rejects_file, &got_rejects).unwrap();
        return;
    }
    let want_actions = std::fs::read_to_string(&actions_file).unwrap_or_else(|e| panic!("{}: {e}", actions_file.display()));
    let want_rejects = std::fs::read_to_string(&rejects_file).unwrap_or_else(|e| panic!("{}: {e}", rejects_file.display()));
    assert_text_eq(&format!("{sample}: actions"), &want_actions, &got_actions);
    assert_text_eq(&format!("{sample}: rejects"), &want_rejects, &got_rejects);
}

#[test]
fn golden_contract_examples_and_bad_lines() {
    golden("contract");
}

#[test]
fn golden_dodger_and_greeting_round() {
    golden("dodger");
}

#[test]
fn golden_bursts_and_late_record() {
    golden("burst");
}
