//! `rules/README.md` is the rule authors' reference: every key the compiler accepts, every
//! rule kind, field and class value must appear in it (as `name`). Checked against the
//! compiler's own list of accepted keys, so a new key cannot ship undocumented.

use anning_rules::*;

const README: &str = include_str!("../README.md");

/// The accepted keys of every table, as the compiler's "unknown field" errors list them.
fn accepted_keys() -> Vec<String> {
    let probe = r#"
[pack]
bogus = 1
[escalation]
bogus = 1
[number_plan]
bogus = 1
[content.x]
terms = ["a"]
bogus = 1
[unsubscribe]
bogus = 1
[protect]
bogus = 1
[[allow]]
bogus = 1
[[rule]]
bogus = 1
[[rule]]
id = "w"
when = { bogus = 1 }
suspect = { bogus = 1 }
ladder = [{ bogus = 1 }]
"#;
    let errors = compile(probe).unwrap_err();
    let mut keys = Vec::new();
    let mut tables = 0;
    for e in errors.iter().filter(|e| e.message.contains("unknown field `bogus`")) {
        tables += 1;
        let list = e.message.split_once("expected").unwrap().1;
        for k in list.split('`').skip(1).step_by(2) {
            keys.push(k.to_string());
        }
    }
    assert_eq!(tables, 11, "every table probed: {errors:?}");
    keys.sort();
    keys.dedup();
    keys
}

#[test]
fn every_key_kind_field_and_class_is_documented() {
    let mut missing = Vec::new();
    let mut want: Vec<String> = accepted_keys();
    want.extend(["rate", "near_limit", "ratio", "unsubscribe"].map(String::from));
    want.extend(Field::ALL.iter().map(|f| f.name().to_string()));
    want.extend(RecordKind::ALL.iter().map(|v| v.name().to_string()));
    want.extend(AddrClass::ALL.iter().map(|v| v.name().to_string()));
    want.extend(PortClass::ALL.iter().map(|v| v.name().to_string()));
    want.extend(DlrStatus::ALL.iter().map(|v| v.name().to_string()));
    for k in want {
        let plain = README.contains(&format!("`{k}`"));
        // Values may be listed inside a code span with others ("sms, dlr, call").
        let listed = README.contains(&format!("{k},")) || README.contains(&format!(", {k}")) || README.contains(&format!("{k} ="));
        if !plain && !listed {
            missing.push(k);
        }
    }
    assert!(missing.is_empty(), "rules/README.md does not mention: {missing:?}");
}
