//! Broken packs must give every error at once, each as the exact `file:line:col: message`.

use anning_rules::*;

fn errors(src: &str) -> Vec<String> {
    match compile_named("p.toml", src) {
        Ok(_) => panic!("pack compiled but should not have"),
        Err(e) => e.lines(),
    }
}

fn assert_lines(got: Vec<String>, want: &[&str]) {
    let got_text = got.join("\n");
    let want_text = want.join("\n");
    assert!(
        got_text == want_text,
        "diagnostics differ\n--- expected\n{want_text}\n--- got\n{got_text}\n"
    );
}

const MANY_MISTAKES: &str = r#"[pack]
name = "t"
lateness = "5x"
colour = "red"

[[rule]]
id = "a"
kind = "near_limit"
dim = "src+bogus"
window = "1h"
slide = "7m"
limit = 200
band = 1.5
k = 7
n = 6
threshold = 3
when = { type = ["sms", "fax"] }
ladder = [{ action = "throttle", for = "1h" }, { action = "ban", for = "2h" }]

[[rule]]
id = "a"
kind = "rate"
dim = "src"
windw = "1h"
threshold = "many"
ladder = []
"#;

#[test]
fn every_error_is_reported_at_its_place() {
    assert_lines(
        errors(MANY_MISTAKES),
        &[
            "p.toml:3:12: `lateness`: `5x`: unknown unit `x` (ms, s, m, h, d, w)",
            "p.toml:4:1: in `pack`: unknown field `colour`, expected one of `name`, `description`, `lateness`, `late_policy`, `dlr_join`",
            "p.toml:9:7: `dim`: unknown dimension `bogus` in `src+bogus`; known: port, sig, src, dst, sp, cell, imei, gw, tpl, fp",
            "p.toml:11:9: `slide` = \"7m\" does not divide `window` evenly",
            "p.toml:13:8: `band` = 1.5 must be between 0 and 1 (exclusive)",
            "p.toml:14:5: `k` = 7 is more than `n` = 6; the rule could never fire",
            "p.toml:16:13: `threshold` does not apply to kind \"near_limit\"",
            "p.toml:17:25: `when.type`: unknown value \"fax\"; known: sms, dlr, call, complaint",
            "p.toml:18:11: a `throttle` step needs `rate` (messages per second allowed)",
            "p.toml:18:59: `action` = \"ban\" is not a ladder action; known: alert, throttle, suspend",
            "p.toml:20:1: rule `a` has no `window` (e.g. window = \"1h\")",
            "p.toml:20:1: rule `a` has no `slide` (the window's resolution, e.g. slide = \"1m\")",
            "p.toml:21:6: `id` = \"a\" is used by an earlier rule; rule ids must be unique",
            "p.toml:24:1: in `rule`: unknown field `windw`, expected one of `id`, `kind`, `description`, `dim`, `when`, `window`, `slide`, `threshold`, `distinct`, `limit`, `band`, `k`, `n`, `sequential`, `numerator`, `ratio`, `min`, `below`, `grace`, `remember`, `targets`, `misuse`, `suspect`, `shadow`, `ladder`",
            "p.toml:25:13: `threshold`: invalid type: string \"many\", expected i64",
            "p.toml:26:10: `ladder` is empty; give at least one step",
        ],
    );
}

#[test]
fn toml_syntax_errors_are_located() {
    let got = errors("[pack]\nname = \"t\"\nlateness = 5m\n");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("p.toml:3:12: "), "{got:?}");
}

#[test]
fn bad_number_plan_pattern_and_escalation() {
    assert_lines(
        errors("[number_plan]\nsubscriber = ['^1[3-9', '^1']\n[escalation]\nfactor = 0.5\ndecay = \"0s\"\n"),
        &[
            "p.toml:2:15: `number_plan.subscriber`: bad pattern \"^1[3-9\": error: unclosed character class",
            "p.toml:4:10: `factor` = 0.5 must be between 1 and 100",
            "p.toml:5:9: `decay` = \"0s\" must be longer than zero",
        ],
    );
}

#[test]
fn missing_required_fields_point_at_the_rule() {
    assert_lines(
        errors("[[rule]]\nid = \"x\"\nkind = \"rate\"\n"),
        &[
            "p.toml:1:1: rule `x` has no `dim` (e.g. dim = \"src\")",
            "p.toml:1:1: rule `x` has no `window` (e.g. window = \"1h\")",
            "p.toml:1:1: rule `x` has no `slide` (the window's resolution, e.g. slide = \"1m\")",
            "p.toml:1:1: rule `x` has no `threshold`",
            "p.toml:1:1: rule `x` has no `ladder` (e.g. ladder = [{ action = \"alert\", for = \"1h\" }])",
        ],
    );
}

#[test]
fn unknown_top_level_key() {
    assert_lines(
        errors("[rules]\nx = 1\n"),
        &[
            "p.toml:1:2: unknown top-level key `rules`; expected one of `pack`, `escalation`, `number_plan`, `content`, `unsubscribe`, `protect`, `allow`, `rule`",
        ],
    );
}
