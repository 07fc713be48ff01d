//! The same records as JSON Lines, CSV and Parquet give the same actions; bad CSV and
//! Parquet rows are rejected with row, column and field.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;

use crate::util::{actions_jsonl, assert_text_eq, replay};

const COLS: [&str; 8] = ["ts", "type", "id", "src", "dst", "text", "answered", "dur"];

fn rows(sample: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(anning_fixtures::sample_path(sample))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn cell(v: &serde_json::Value, c: &str) -> String {
    match &v[c] {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn write_csv(path: &Path, rows: &[serde_json::Value]) {
    let mut w = csv::Writer::from_path(path).unwrap();
    w.write_record(COLS).unwrap();
    for r in rows {
        w.write_record(COLS.iter().map(|c| cell(r, c))).unwrap();
    }
    w.flush().unwrap();
}

fn write_parquet(path: &Path, rows: &[serde_json::Value]) {
    let s = |c: &str| -> ArrayRef {
        Arc::new(StringArray::from(
            rows.iter().map(|r| r[c].as_str().map(str::to_string)).collect::<Vec<_>>(),
        ))
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Int64, true),
        Field::new("type", DataType::Utf8, true),
        Field::new("id", DataType::Utf8, true),
        Field::new("src", DataType::Utf8, true),
        Field::new("dst", DataType::Utf8, true),
        Field::new("text", DataType::Utf8, true),
        Field::new("answered", DataType::Boolean, true),
        Field::new("dur", DataType::Float64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(rows.iter().map(|r| r["ts"].as_i64()).collect::<Vec<_>>())),
            s("type"),
            s("id"),
            s("src"),
            s("dst"),
            s("text"),
            Arc::new(BooleanArray::from(rows.iter().map(|r| r["answered"].as_bool()).collect::<Vec<_>>())),
            Arc::new(Float64Array::from(rows.iter().map(|r| r["dur"].as_f64()).collect::<Vec<_>>())),
        ],
    )
    .unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn tmp(name: &str) -> std::path::PathBuf {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| crate::util::scratch("fmt")).join(name)
}

#[test]
fn jsonl_csv_and_parquet_give_the_same_actions() {
    for sample in ["dodger.jsonl", "burst.jsonl"] {
        let jsonl = anning_fixtures::sample_path(sample);
        let rows = rows(sample);
        let csv = tmp(&sample.replace(".jsonl", ".csv"));
        let pq = tmp(&sample.replace(".jsonl", ".parquet"));
        write_csv(&csv, &rows);
        write_parquet(&pq, &rows);
        let (base, _) = replay(&[&jsonl], 2);
        assert!(!base.actions.is_empty());
        for other in [&csv, &pq] {
            let (o, _) = replay(&[other], 2);
            assert_text_eq(
                &format!("{sample} via {}", other.display()),
                &actions_jsonl(&base),
                &actions_jsonl(&o),
            );
            assert_eq!(o.counts.by_type, base.counts.by_type);
        }
    }
}

#[test]
fn bad_csv_and_parquet_rows_are_rejected_with_position_and_the_run_goes_on() {
    let good = serde_json::json!({"ts": 1794268800000i64, "type": "sms", "id": "a", "src": "13800138000", "dst": "13900139000"});
    let no_dst = serde_json::json!({"ts": 1794268801000i64, "type": "sms", "id": "b", "src": "13800138000"});
    let bad_type = serde_json::json!({"ts": 1794268802000i64, "type": "mms", "id": "c", "src": "13800138000", "dst": "13900139000"});
    let rows = vec![good.clone(), no_dst, bad_type, good];

    let csv = tmp("bad.csv");
    write_csv(&csv, &rows);
    let (o, rejects) = replay(&[&csv], 1);
    assert_eq!(o.counts.by_type[0], 2);
    let shown: Vec<String> = rejects.iter().map(|r| r.to_string()).collect();
    assert_eq!(
        shown,
        vec![
            format!(
                "{}:3: missing_field: field `dst`: `dst` is required for type \"sms\"",
                csv.display()
            ),
            format!(
                "{}:4:2: bad_value: field `type`: `type` = \"mms\" is not one of sms, dlr, call, complaint",
                csv.display()
            ),
        ]
    );

    let pq = tmp("bad.parquet");
    write_parquet(&pq, &rows);
    let (o, rejects) = replay(&[&pq], 1);
    assert_eq!(o.counts.by_type[0], 2);
    let shown: Vec<String> = rejects.iter().map(|r| r.to_string()).collect();
    assert_eq!(
        shown,
        vec![
            format!("{}:2: missing_field: field `dst`: `dst` is required for type \"sms\"", pq.display()),
            format!(
                "{}:3:2: bad_value: field `type`: `type` = \"mms\" is not one of sms, dlr, call, complaint",
                pq.display()
            ),
        ]
    );
}

#[test]
fn json_lines_rejects_name_line_column_and_field() {
    let path = tmp("bad.jsonl");
    let mut bytes = "{\"ts\":1,\"type\":\"sms\",\"src\":\"13800138000\",\"dst\":\"13900139000\"}\n\n\
         {\"ts\":true,\"type\":\"sms\"}\n\
         {\"ts\":2,\"type\":\"call\",\"src\":\"9512345\",\"dst\":\"13900139000\"}\n\
         {\"ts\":3,\"type\":\"dlr\",\"ref\":\"x\",\"status\":\"delivered\",\"dur\":\"long\"}\n\
"
    .as_bytes()
    .to_vec();
    bytes.extend_from_slice(b"\xff\xfe\n");
    std::fs::write(&path, bytes).unwrap();
    let (o, rejects) = replay(&[&path], 1);
    assert_eq!(o.counts.records(), 1);
    let shown: Vec<String> = rejects
        .iter()
        .map(|r| r.to_string().replace(&format!("{}:", path.display()), ""))
        .collect();
    assert_eq!(
        shown,
        vec![
            "3:7: bad_type: field `ts`: `ts` is a boolean; expected integer milliseconds or an RFC 3339 string",
            "4: missing_field: field `answered`: `answered` is required for type \"call\"",
            "5:59: bad_type: field `dur`: `dur` is a string; expected a number of seconds",
            "6:1: malformed: line is not valid UTF-8",
        ]
    );
    assert!(rejects.iter().all(|r| r.raw.is_some()), "text rejects keep their original line");
}
