//! Helpers: running replay in-process and comparing text readably.

use std::path::Path;
use std::sync::Arc;

use anning_detector::Registry;
use anning_pipelines::decode::Reject;
use anning_pipelines::runtime::{self, Outcome, RejectSink};
use anning_pipelines::source::Input;

pub struct Collect(pub Vec<Reject>);

impl RejectSink for Collect {
    fn write(&mut self, r: &Reject) {
        self.0.push(r.clone());
    }
}

pub fn registry() -> Registry {
    let text = std::fs::read_to_string(anning_fixtures::sample_path("registry.csv")).unwrap();
    Registry::parse(&text).unwrap()
}

pub fn replay(inputs: &[&Path], threads: usize) -> (Outcome, Vec<Reject>) {
    let pack = Arc::new(anning_rules::default_pack());
    let inputs: Vec<Input> = inputs.iter().map(|p| Input::parse(p.to_str().unwrap()).unwrap()).collect();
    let mut rejects = Collect(Vec::new());
    let outcome = runtime::run(pack, &registry(), &inputs, threads, &mut rejects, &mut ());
    (outcome, rejects.0)
}

pub fn actions_jsonl(o: &Outcome) -> String {
    o.actions.iter().map(|a| serde_json::to_string(a).unwrap() + "\n").collect()
}

/// Asserts two texts are equal, printing the differing lines (`-` expected, `+` got).
pub fn assert_text_eq(what: &str, want: &str, got: &str) {
    if want == got {
        return;
    }
    let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    let mut diff = String::new();
    for i in 0..w.len().max(g.len()) {
        match (w.get(i), g.get(i)) {
            (Some(a), Some(b)) if a == b => {}
            (a, b) => {
                if let Some(a) = a {
                    diff.push_str(&format!("-{:>4}: {a}\n", i + 1));
                }
                if let Some(b) = b {
                    diff.push_str(&format!("+{:>4}: {b}\n", i + 1));
                }
            }
        }
    }
    panic!(
        "{what} differs ({} lines expected, {} got); set ANNING_BLESS=1 to accept\n{diff}",
        w.len(),
        g.len()
    );
}

/// A fresh directory for one test's files, under Cargo's scratch space for integration
/// tests (`target/tmp`), not the system's `/tmp`: `cargo clean` removes what runs leave,
/// and a failed run's files stay there to look at. Emptied first, so a rerun starts clean.
pub fn scratch(name: &str) -> std::path::PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("anning-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
