//! `anning rules check` and `anning rules test`: a pack's problems and warnings, and its tests.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

pub(super) fn test(path: &Path, filter: Option<&str>) -> Result<ExitCode> {
    let report = match crate::rules_test::run_file(path, filter) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let shown = crate::rules_test::tests_path(path).display().to_string();
    for name in &report.passed {
        println!("ok    {name}");
    }
    for (name, why) in &report.failed {
        println!("FAIL  {name}\n{why}");
    }
    let filtered = if report.filtered > 0 {
        format!(", {} filtered out", report.filtered)
    } else {
        String::new()
    };
    println!("{shown}: {} passed, {} failed{filtered}", report.passed.len(), report.failed.len());
    if !report.untested.is_empty() && filter.is_none() {
        println!("rules no test expects an action from: {}", report.untested.join(", "));
    }
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub(super) fn check(path: &Path, deny_warnings: bool) -> Result<ExitCode> {
    match anning_rules::load(path) {
        Ok(pack) => {
            let shown = path.display();
            let mut warnings: Vec<String> = anning_rules::lint::warnings(&pack)
                .iter()
                .map(|d| format!("{shown}:{}:{}: warning: {}", d.line, d.col, d.message))
                .collect();
            match crate::rules_test::expected_rules(path) {
                Ok(Some(tested)) => {
                    for (i, r) in pack.rules.iter().enumerate() {
                        if !tested.contains(&r.id) {
                            let (line, col) = pack.rule_pos[i];
                            warnings.push(format!(
                                "{shown}:{line}:{col}: warning: rule `{}` has no test expecting an action from it in {}",
                                r.id,
                                crate::rules_test::tests_path(path).display()
                            ));
                        }
                    }
                }
                Ok(None) => warnings.push(format!(
                    "{shown}: warning: no tests: write {} (see `anning rules test`)",
                    crate::rules_test::tests_path(path).display()
                )),
                Err(e) => warnings.push(format!("{e}")),
            }
            for w in &warnings {
                println!("{w}");
            }
            println!(
                "{shown}: ok: pack `{}` ({}), {} rules, {} warnings",
                pack.name,
                pack.hash_hex(),
                pack.rules.len(),
                warnings.len()
            );
            Ok(if deny_warnings && !warnings.is_empty() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Err(e) => {
            for line in e.lines() {
                println!("{line}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}
