//! The same input gives the same bytes with 1, 2 and 4 shard threads.

use std::io::Write;

use crate::util::{actions_jsonl, replay};

#[test]
fn same_actions_for_every_thread_count() {
    let dir = crate::util::scratch("det");
    let path = dir.join("mixed.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut mix = anning_fixtures::Mix::new(150_000, 7);
    mix.subscribers = 2_000; // few enough that ordinary senders trip the burst and fan-out rules too
    anning_fixtures::mixed(&mix, &mut f).unwrap();
    f.flush().unwrap();
    drop(f);

    let (one, _) = replay(&[&path], 1);
    let base = actions_jsonl(&one);
    let rules: std::collections::BTreeSet<&str> = one.actions.iter().map(|a| a.rule.as_str()).collect();
    assert!(
        rules.len() >= 2 && one.actions.len() > 10,
        "too few actions to mean anything: {rules:?}"
    );
    for threads in [2, 4] {
        let (o, _) = replay(&[&path], threads);
        assert!(actions_jsonl(&o) == base, "{threads} threads gave different actions than 1");
    }
    std::fs::remove_dir_all(&dir).ok();
}
