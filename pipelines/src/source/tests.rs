use anning_detector::Registry;

use super::csv_rows::{read_csv, read_csv_pooled};
use super::json_lines::read_jsonl_pooled;
use super::parquet_rows::{PARQUET_BATCH, parquet_batches, read_parquet, read_parquet_pooled};
use super::*;
use crate::decode::pool::CHUNK;

/// What a sink was given, in order (records and rejects, at their lines), the progress
/// last reported and, with a keyer, how many routed records had the keyer's routes.
#[derive(Default)]
struct Got {
    given: Vec<(u64, String)>,
    done: u64,
    keyer: Option<Arc<Keyer>>,
    routed: usize,
}

impl Got {
    /// A sink for a pooled reader, which checks each record's routes against `keyer`'s.
    fn checking(keyer: &Arc<Keyer>) -> Got {
        Got {
            keyer: Some(Arc::clone(keyer)),
            ..Got::default()
        }
    }

    /// The same records and rejects at the same lines, in the same order.
    fn assert_same_given(&self, other: &Got) {
        assert_eq!(other.given.len(), self.given.len());
        for (a, b) in self.given.iter().zip(&other.given) {
            assert_eq!(a, b);
        }
    }
}

impl Sink for Got {
    fn record(&mut self, r: Record, line: u64) {
        self.given.push((line, format!("{r:?}")));
    }
    fn routed(&mut self, r: Record, routes: Routes, line: u64) {
        let keyer = self.keyer.as_ref().expect("routed records only from the pool");
        assert!(routes == keyer.routes(&r), "line {line}: routes differ from the keyer's");
        self.routed += 1;
        self.record(r, line);
    }
    fn reject(&mut self, r: Reject) {
        self.given.push((r.line, serde_json::to_string(&r).unwrap()));
    }
    fn progress(&mut self, done: u64) {
        self.done = done;
    }
}

/// The default pack, a registry of one port, and a keyer for the pack.
fn setup() -> (Arc<anning_rules::Pack>, Registry, Arc<Keyer>) {
    let pack = Arc::new(anning_rules::default_pack());
    let registry = Registry::parse("port,sp,class,signatures\n10690001234,901234,marketing,京东\n").unwrap();
    let keyer = Arc::new(Keyer::new(Arc::clone(&pack)));
    (pack, registry, keyer)
}

/// Every sample line, good and bad, with blank lines (ASCII and ideographic spaces),
/// CRLF ends and a line that is not UTF-8, repeated past the chunks a reader keeps in
/// flight.
fn day() -> Vec<u8> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/samples");
    let mut one = Vec::new();
    for name in ["contract.jsonl", "burst.jsonl", "dodger.jsonl"] {
        one.extend(std::fs::read(dir.join(name)).unwrap());
    }
    one.extend_from_slice(b"\n   \n\xe3\x80\x80\r\n{\"ts\":1,\"type\":\"sms\",\"src\":\"1\xff\"}\r\n{\"ts\":\n");
    let mut all = Vec::new();
    while all.len() < 600 * 1024 * 8 {
        all.extend_from_slice(&one);
    }
    all.extend_from_slice(b"{\"ts\":5,\"type\":\"call\"}");
    all
}

/// Decoding on the pool's threads gives the sink what reading on one thread gives: the
/// same records and rejects at the same lines, in the same order, and each record's
/// routes as the keyer makes them for it.
#[test]
fn pooled_json_lines_give_what_one_thread_gives() {
    let (pack, registry, keyer) = setup();
    let en = Enricher::new(&pack, &registry);
    let day = day();
    let mut alone = Got::default();
    read_jsonl("day", &day[..], en, &mut alone).unwrap();
    assert!(alone.given.len() > (IN_FLIGHT + 2) * CHUNK, "more lines than the chunks in flight");
    assert!(alone.given.iter().any(|(_, g)| g.contains("line is not valid UTF-8")));
    assert!(alone.given.iter().any(|(_, g)| g.contains("\"reason\":\"malformed\"")));
    let mut decoders = Decoders::new(2, &registry, "line").unwrap();
    // Twice over the same decoders, then a file smaller than a chunk.
    for bytes in [&day[..], &day[..], &day[..300]] {
        let mut alone = Got::default();
        read_jsonl("day", bytes, en, &mut alone).unwrap();
        let mut pooled = Got::checking(&keyer);
        let pool = Pool {
            decoders: &mut decoders,
            keyer: &keyer,
        };
        read_jsonl_pooled("day", bytes, pool, &mut pooled).unwrap();
        alone.assert_same_given(&pooled);
        assert!(
            pooled.routed > 0 && pooled.routed < pooled.given.len(),
            "records routed, rejects not"
        );
        assert_eq!(pooled.done, alone.done, "progress in bytes read");
    }
}

/// A line is the same whether it lies whole in the reader's buffer or spans several fills
/// of it: read through buffers smaller than a line and larger than one, both ways.
#[test]
fn lines_spanning_fills_of_the_buffer_read_as_whole_ones() {
    let (pack, registry, keyer) = setup();
    let en = Enricher::new(&pack, &registry);
    // Past 65 536 lines, where progress is reported.
    let day = &day().repeat(2)[..];
    let mut whole = Got::default();
    read_jsonl("day", day, en, &mut whole).unwrap();
    assert!(whole.done > 0, "progress reported");
    let mut decoders = Decoders::new(2, &registry, "line").unwrap();
    for cap in [7, 4096] {
        let mut alone = Got::default();
        read_jsonl("day", std::io::BufReader::with_capacity(cap, day), en, &mut alone).unwrap();
        whole.assert_same_given(&alone);
        assert_eq!(alone.done, whole.done, "progress in bytes read");
        let mut pooled = Got::checking(&keyer);
        let pool = Pool {
            decoders: &mut decoders,
            keyer: &keyer,
        };
        read_jsonl_pooled("day", std::io::BufReader::with_capacity(cap, day), pool, &mut pooled).unwrap();
        whole.assert_same_given(&pooled);
    }
}

/// A day of rows as Parquet in memory, in row groups of `group` rows: the sample lines
/// that parse, each repeated, with rows to reject (a type not in the contract, a time
/// that is not one, no `ts`) among them.
fn parquet_day(rows: usize, group: usize) -> bytes::Bytes {
    use arrow::array::{ArrayRef, BooleanArray, Float64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    let mut lines: Vec<serde_json::Value> = day()
        .split(|&b| b == b'\n')
        .filter_map(|l| serde_json::from_slice(l).ok())
        .take(200)
        .collect();
    lines.push(serde_json::json!({"ts": 1, "type": "mms", "src": "13800138000"}));
    lines.push(serde_json::json!({"ts": "not a time", "type": "sms", "src": "13800138000"}));
    lines.push(serde_json::json!({"type": "sms", "src": "13800138000"}));
    let rows: Vec<&serde_json::Value> = lines.iter().cycle().take(rows).collect();
    let text = |c: &str| -> ArrayRef {
        Arc::new(StringArray::from(
            rows.iter()
                .map(|r| match &r[c] {
                    serde_json::Value::Null => None,
                    serde_json::Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                })
                .collect::<Vec<_>>(),
        ))
    };
    let strings = [
        "ts", "type", "id", "src", "dst", "text", "sig", "cell", "imei", "ref", "status", "err",
    ];
    let mut fields: Vec<Field> = strings.iter().map(|c| Field::new(*c, DataType::Utf8, true)).collect();
    let mut columns: Vec<ArrayRef> = strings.iter().map(|c| text(c)).collect();
    fields.push(Field::new("answered", DataType::Boolean, true));
    columns.push(Arc::new(BooleanArray::from(
        rows.iter().map(|r| r["answered"].as_bool()).collect::<Vec<_>>(),
    )));
    fields.push(Field::new("dur", DataType::Float64, true));
    columns.push(Arc::new(Float64Array::from(
        rows.iter().map(|r| r["dur"].as_f64()).collect::<Vec<_>>(),
    )));
    let schema = Arc::new(Schema::new(fields));
    let props = WriterProperties::builder().set_max_row_group_row_count(Some(group)).build();
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, Arc::clone(&schema), Some(props)).unwrap();
    w.write(&RecordBatch::try_new(schema, columns).unwrap()).unwrap();
    w.close().unwrap();
    bytes::Bytes::from(out)
}

/// Parquet decoded on the pool's threads gives the sink what one thread gives: the same
/// records and rejects at the same rows, in order, with the keyer's routes.
#[test]
fn pooled_parquet_gives_what_one_thread_gives() {
    let (pack, registry, keyer) = setup();
    let en = Enricher::new(&pack, &registry);
    let mut decoders = Decoders::new(2, &registry, "line").unwrap();
    // Past the batches in flight, in row groups that split batches; twice over the same
    // decoders; smaller than a batch; no rows.
    let many = (IN_FLIGHT + 3) * PARQUET_BATCH + 77;
    for (rows, group) in [(many, 1000), (many, 1000), (300, 128), (0, 128)] {
        let data = parquet_day(rows, group);
        let mut alone = Got::default();
        read_parquet("day", parquet_batches("day", data.clone()).unwrap(), en, &mut alone).unwrap();
        assert_eq!(alone.given.len(), rows);
        if rows > 1000 {
            assert!(alone.given.iter().any(|(_, g)| g.contains("\"reason\"")), "some rows rejected");
        }
        let mut pooled = Got::checking(&keyer);
        let pool = Pool {
            decoders: &mut decoders,
            keyer: &keyer,
        };
        read_parquet_pooled("day", parquet_batches("day", data).unwrap(), pool, &mut pooled).unwrap();
        alone.assert_same_given(&pooled);
        assert_eq!(
            pooled.routed + alone.given.iter().filter(|(_, g)| g.contains("\"reason\"")).count(),
            rows
        );
        assert_eq!(pooled.done, alone.done);
    }
}

/// A day as CSV with a header: the sample lines that parse, then rows to reject on the
/// reading thread (not UTF-8) and on the decoding threads (a type not in the contract, a
/// time that is not one), a quoted text over two lines and a short row, repeated to `rows`
/// rows or more.
fn csv_day(rows: usize) -> Vec<u8> {
    const COLUMNS: [&str; 14] = [
        "ts", "type", "id", "src", "dst", "sig", "text", "cell", "imei", "ref", "status", "err", "answered", "dur",
    ];
    let lines: Vec<serde_json::Value> = day()
        .split(|&b| b == b'\n')
        .filter_map(|l| serde_json::from_slice(l).ok())
        .take(200)
        .collect();
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(COLUMNS).unwrap();
    for l in &lines {
        w.write_record(COLUMNS.map(|c| match &l[c] {
            serde_json::Value::Null => String::new(),
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        }))
        .unwrap();
    }
    let mut block = w.into_inner().unwrap();
    let header_end = block.iter().position(|&b| b == b'\n').unwrap() + 1;
    let mut all = block[..header_end].to_vec();
    block.drain(..header_end);
    block.extend_from_slice(b"1,sms,a,1\xff,2,,,,,,,,,\n");
    block.extend_from_slice(b"1,mms,b,13800138000,,,,,,,,,,\n");
    block.extend_from_slice(b"not a time,sms,c,13800138000,,,,,,,,,,\n");
    block.extend_from_slice("2,sms,d,13800138000,13900139000,,\"两行\n之二\",,,,,,,\n".as_bytes());
    block.extend_from_slice(b"5,call\n");
    let per_block = lines.len() + 5;
    for _ in 0..rows.div_ceil(per_block) {
        all.extend_from_slice(&block);
    }
    all
}

/// CSV rows assembled on the pool's threads give the sink what one thread gives: the same
/// records and rejects (those found reading and those found decoding) at the same lines, in
/// order, with the keyer's routes; a read that fails midway stops both at the same row.
#[test]
fn pooled_csv_gives_what_one_thread_gives() {
    let (pack, registry, keyer) = setup();
    let en = Enricher::new(&pack, &registry);
    let mut decoders = Decoders::new(2, &registry, "line").unwrap();
    let many = csv_day((IN_FLIGHT + 3) * CHUNK);
    let header_only = &many[..many.iter().position(|&b| b == b'\n').unwrap() + 1];
    // Past 65 536 rows, where progress is reported.
    let long = csv_day(70_000);
    // Past the chunks in flight, then past a progress report over the same decoders;
    // smaller than a chunk; no rows.
    for (i, bytes) in [&many[..], &long[..], &csv_day(100)[..], header_only].into_iter().enumerate() {
        let mut alone = Got::default();
        read_csv("day", bytes, en, &mut alone).unwrap();
        if i == 0 {
            assert!(alone.given.len() > (IN_FLIGHT + 2) * CHUNK, "more rows than the chunks in flight");
            for why in [
                "unreadable CSV row",
                "`type` = \\\"mms\\\"",
                "`ts` = \\\"not a time\\\"",
                "两行\\n之二",
            ] {
                assert!(alone.given.iter().any(|(_, g)| g.contains(why)), "{why} given");
            }
        }
        let mut pooled = Got::checking(&keyer);
        let pool = Pool {
            decoders: &mut decoders,
            keyer: &keyer,
        };
        read_csv_pooled("day", bytes, pool, &mut pooled).unwrap();
        alone.assert_same_given(&pooled);
        assert_eq!(pooled.done, alone.done, "progress in bytes read");
        assert_eq!(alone.done > 0, i == 1, "progress reported past 65 536 rows only");
        if i < 3 {
            assert!(
                pooled.routed > 0 && pooled.routed < pooled.given.len(),
                "records routed, rejects not"
            );
        } else {
            assert!(pooled.given.is_empty());
        }
    }
    // A read that fails after some rows: both give what came before, reject the row, stop.
    let cut = many.len() / 2;
    let failing = || std::io::Read::chain(&many[..cut], Failing);
    let mut alone = Got::default();
    let a = read_csv("day", failing(), en, &mut alone).unwrap_err().to_string();
    let mut pooled = Got::checking(&keyer);
    let pool = Pool {
        decoders: &mut decoders,
        keyer: &keyer,
    };
    let p = read_csv_pooled("day", failing(), pool, &mut pooled).unwrap_err().to_string();
    assert_eq!(a, p);
    assert!(a.contains("the disk went away"), "{a}");
    alone.assert_same_given(&pooled);
    assert!(pooled.given.len() > 3 * CHUNK);
    assert!(pooled.given.last().unwrap().1.contains("unreadable CSV row"));
}

/// A reader that fails.
struct Failing;

impl std::io::Read for Failing {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other("the disk went away"))
    }
}
