//! File sources for replay: JSON Lines (or stdin), CSV and Parquet, read in order, each
//! record decoded or rejected with its position.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anning_detector::engine::{Keyer, Routes};
use anning_detector::{Enricher, Record, RecordBuilder};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::file::reader::ChunkReader;

use crate::decode::csv::{CsvColumns, CsvFields};
use crate::decode::parquet::{BatchColumns, ParquetFields};
use crate::decode::pool::{CHUNK, Chunk, Decoders, decode_value};
use crate::decode::{Bad, Reject, RejectReason, assemble};

/// The formats replay reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    JsonLines,
    Csv,
    Parquet,
}

impl Format {
    /// The format a file's extension names (any case): `.jsonl`, `.json`, `.ndjson`, `.csv`,
    /// `.parquet` or `.pq`.
    pub fn of(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "jsonl" | "json" | "ndjson" => Some(Format::JsonLines),
            "csv" => Some(Format::Csv),
            "parquet" | "pq" => Some(Format::Parquet),
            _ => None,
        }
    }
}

/// One input: a file (format from its extension) or `-` for JSON Lines on stdin.
#[derive(Debug, Clone)]
pub struct Input {
    /// `None` = stdin.
    pub path: Option<PathBuf>,
    pub format: Format,
}

/// Errors that stop reading one input (the run goes on with the next).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file's name says no format we read.
    #[error("{0}: unknown input format; use .jsonl, .json, .ndjson, .csv or .parquet (or - for JSON Lines on stdin)")]
    UnknownFormat(String),
    /// Reading failed (the input is cut short; what was read is kept).
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// The Parquet file could not be opened or read.
    #[error("{path}: {source}")]
    Parquet {
        path: String,
        source: parquet::errors::ParquetError,
    },
    /// A Parquet batch could not be read.
    #[error("{path}: {source}")]
    Arrow { path: String, source: arrow::error::ArrowError },
}

impl Input {
    pub fn parse(arg: &str) -> Result<Input, SourceError> {
        if arg == "-" {
            return Ok(Input {
                path: None,
                format: Format::JsonLines,
            });
        }
        let path = PathBuf::from(arg);
        let format = Format::of(&path).ok_or_else(|| SourceError::UnknownFormat(arg.to_string()))?;
        Ok(Input { path: Some(path), format })
    }

    pub fn name(&self) -> String {
        self.path
            .as_ref()
            .map_or_else(|| "<stdin>".to_string(), |p| p.display().to_string())
    }

    /// Size in bytes, for progress (0 for stdin).
    pub fn byte_len(&self) -> u64 {
        self.path.as_deref().and_then(|p| std::fs::metadata(p).ok()).map_or(0, |m| m.len())
    }
}

/// What a source hands on: records in input order, rejects where they occur, and progress.
pub trait Sink {
    /// A decoded record and its line (JSON Lines, CSV) or row (Parquet).
    fn record(&mut self, r: Record, line: u64);
    /// A record with its routes, made on a decoding thread before any join (see
    /// [`read_pooled`]); a sink that does not route takes it as a plain record.
    fn routed(&mut self, r: Record, _routes: Routes, line: u64) {
        self.record(r, line);
    }
    fn reject(&mut self, r: Reject);
    /// Bytes (or rows, for Parquet) consumed so far in this input.
    fn progress(&mut self, _done: u64) {}
}

fn reject(source: &str, line: u64, bad: Bad, raw: Option<&str>) -> Reject {
    Reject {
        source: source.to_string(),
        line,
        col: bad.col,
        field: bad.field,
        reason: bad.reason,
        detail: bad.detail,
        raw: raw.map(str::to_string),
    }
}

/// Reads one input to the end, handing every record and reject to `sink`.
pub fn read(input: &Input, en: Enricher<'_>, sink: &mut impl Sink) -> Result<(), SourceError> {
    let name = input.name();
    let io = |source| SourceError::Io {
        path: name.clone(),
        source,
    };
    match input.format {
        Format::JsonLines => {
            let reader: Box<dyn Read> = match &input.path {
                None => Box::new(std::io::stdin().lock()),
                Some(p) => Box::new(File::open(p).map_err(io)?),
            };
            read_jsonl(&name, BufReader::with_capacity(1 << 20, reader), en, sink).map_err(io)
        }
        Format::Csv => read_csv(&name, input.path.as_deref().expect("csv is a file"), en, sink),
        Format::Parquet => read_parquet(
            &name,
            parquet_file(&name, input.path.as_deref().expect("parquet is a file"))?,
            en,
            sink,
        ),
    }
}

/// Decoding threads for [`read_pooled`], with the routes to make for the pack being run.
pub struct Pool<'a> {
    pub decoders: &'a mut Decoders,
    pub keyer: &'a Arc<Keyer>,
}

/// [`read`], with JSON Lines and Parquet decoded, enriched and routed on `pool`'s threads
/// while this one reads ahead (CSV as [`read`] does). The sink gets the same records,
/// rejects and line (row) numbers in the same order.
pub fn read_pooled(input: &Input, en: Enricher<'_>, pool: Pool<'_>, sink: &mut impl Sink) -> Result<(), SourceError> {
    let name = input.name();
    let io = |source| SourceError::Io {
        path: name.clone(),
        source,
    };
    match (input.format, &input.path) {
        (Format::JsonLines, None) => {
            read_jsonl_pooled(&name, BufReader::with_capacity(1 << 20, std::io::stdin().lock()), pool, sink).map_err(io)
        }
        (Format::JsonLines, Some(p)) => {
            let file = File::open(p).map_err(io)?;
            read_jsonl_pooled(&name, BufReader::with_capacity(1 << 20, file), pool, sink).map_err(io)
        }
        (Format::Parquet, Some(p)) => read_parquet_pooled(&name, parquet_file(&name, p)?, pool, sink),
        _ => read(input, en, sink),
    }
}

/// Chunks a reader keeps in flight on the decoding threads before it waits for the oldest.
const IN_FLIGHT: usize = 8;

/// Whether a line (without its line end) holds nothing: skipped, not rejected.
fn blank(bytes: &[u8]) -> bool {
    let t = bytes.trim_ascii();
    t.is_empty() || !t[0].is_ascii() && std::str::from_utf8(t).is_ok_and(|l| l.trim().is_empty())
}

/// Gives the oldest chunk in flight to `sink`, each line (row) as a routed record or a
/// reject (with the line's text; a row has none).
fn give(name: &str, decoders: &mut Decoders, numbers: &mut VecDeque<Vec<u64>>, sink: &mut impl Sink) {
    let (decoded, chunk) = decoders.next_decoded().expect("a chunk in flight");
    let lines = numbers.pop_front().expect("line numbers of each chunk sent");
    debug_assert_eq!(decoded.len(), lines.len());
    for (i, (d, &line)) in decoded.into_iter().zip(&lines).enumerate() {
        match d {
            Ok((rec, routes)) => sink.routed(rec, routes, line),
            Err(bad) => {
                let text = chunk.is_values().then(|| String::from_utf8_lossy(chunk.value(i)));
                sink.reject(reject(name, line, bad, text.as_deref()))
            }
        }
    }
    decoders.recycle(chunk);
}

/// Ends the reading: the `last` chunk (line numbers `held`) is closed, then every chunk
/// still in flight given, in order.
fn give_rest(name: &str, pool: Pool<'_>, last: Chunk, held: Vec<u64>, numbers: &mut VecDeque<Vec<u64>>, sink: &mut impl Sink) {
    let Pool { decoders, keyer } = pool;
    let before = decoders.in_flight();
    decoders.close(keyer, last);
    if decoders.in_flight() > before {
        numbers.push_back(held);
    }
    while decoders.in_flight() > 0 {
        give(name, decoders, numbers, sink);
    }
    assert!(decoders.next_decoded().is_none(), "every chunk given back");
}

fn read_jsonl_pooled(name: &str, r: impl BufRead, pool: Pool<'_>, sink: &mut impl Sink) -> std::io::Result<()> {
    let Pool { decoders, keyer } = pool;
    // The line numbers of each chunk in flight, oldest first.
    let mut numbers: VecDeque<Vec<u64>> = VecDeque::new();
    let mut lines = Lines::new(r);
    let mut chunk = decoders.chunk();
    let mut held = Vec::with_capacity(CHUNK);
    let read = loop {
        let (line, bytes) = match lines.next(sink) {
            Ok(Some(l)) => l,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        chunk.push(Some(bytes));
        held.push(line);
        if chunk.len() >= CHUNK {
            let next = decoders.chunk();
            decoders.send(keyer, std::mem::replace(&mut chunk, next));
            numbers.push_back(std::mem::replace(&mut held, Vec::with_capacity(CHUNK)));
            if decoders.in_flight() >= IN_FLIGHT {
                give(name, decoders, &mut numbers, sink);
            }
        }
    };
    // What was read before the end (or an error) is given, in order, before returning.
    give_rest(name, Pool { decoders, keyer }, chunk, held, &mut numbers, sink);
    read
}

/// The lines of a JSON Lines input: numbered from 1, line ends cut, blank lines skipped, and
/// the bytes read reported to the sink every 65 536 lines.
struct Lines<R> {
    r: R,
    buf: Vec<u8>,
    line_no: u64,
    done: u64,
}

impl<R: BufRead> Lines<R> {
    fn new(r: R) -> Self {
        Lines {
            r,
            buf: Vec::with_capacity(1024),
            line_no: 0,
            done: 0,
        }
    }

    /// The next line that is not blank, with its number; `None` at the end.
    fn next(&mut self, sink: &mut impl Sink) -> std::io::Result<Option<(u64, &[u8])>> {
        loop {
            self.buf.clear();
            let n = self.r.read_until(b'\n', &mut self.buf)?;
            if n == 0 {
                return Ok(None);
            }
            self.line_no += 1;
            self.done += n as u64;
            if self.line_no.is_multiple_of(65_536) {
                sink.progress(self.done);
            }
            let mut end = self.buf.len();
            while end > 0 && matches!(self.buf[end - 1], b'\n' | b'\r') {
                end -= 1;
            }
            if !blank(&self.buf[..end]) {
                return Ok(Some((self.line_no, &self.buf[..end])));
            }
        }
    }
}

/// JSON Lines from any reader. Blank lines are skipped; a line that is not UTF-8 is rejected.
pub fn read_jsonl(name: &str, r: impl BufRead, en: Enricher<'_>, sink: &mut impl Sink) -> std::io::Result<()> {
    let mut b = RecordBuilder::default();
    let mut lines = Lines::new(r);
    while let Some((line, bytes)) = lines.next(sink)? {
        match decode_value(bytes, "line", &mut b, en) {
            Ok(rec) => sink.record(rec, line),
            Err(bad) => sink.reject(reject(name, line, bad, Some(&String::from_utf8_lossy(bytes)))),
        }
    }
    Ok(())
}

fn read_csv(name: &str, path: &Path, en: Enricher<'_>, sink: &mut impl Sink) -> Result<(), SourceError> {
    let io = |source| SourceError::Io {
        path: name.to_string(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(BufReader::with_capacity(1 << 20, file));
    let header = rdr.headers().map_err(|e| io(e.into()))?.clone();
    let columns = CsvColumns::from_header(&header);
    let mut row = csv::StringRecord::new();
    let mut b = RecordBuilder::default();
    let mut n = 0u64;
    loop {
        match rdr.read_record(&mut row) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                n += 1;
                if n.is_multiple_of(65_536) {
                    sink.progress(row.position().map_or(0, |p| p.byte()));
                }
                let line = row.position().map_or(0, |p| p.line());
                match assemble(
                    &mut CsvFields {
                        columns: &columns,
                        row: &row,
                    },
                    &mut b,
                    en,
                ) {
                    Ok(rec) => sink.record(rec, line),
                    Err(bad) => {
                        let raw = row.iter().collect::<Vec<_>>().join(",");
                        sink.reject(reject(name, line, bad, Some(&raw)));
                    }
                }
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                let bad = Bad {
                    reason: RejectReason::Malformed,
                    field: None,
                    col: None,
                    detail: format!("unreadable CSV row: {e}"),
                };
                sink.reject(reject(name, line, bad, None));
                if !matches!(e.kind(), csv::ErrorKind::Utf8 { .. } | csv::ErrorKind::UnequalLengths { .. }) {
                    return Err(io(std::io::Error::other(e.to_string())));
                }
            }
        }
    }
}

/// Rows per arrow batch read from Parquet. 8192 made arrays of megabytes that came back
/// zeroed from the kernel each time; 1024 keeps them in the allocator's reach (replay Parquet,
/// 3 alternating pairs: 658/639/699 -> 692/725/752 k/s).
const PARQUET_BATCH: usize = 1024;

/// The batches of a Parquet file.
fn parquet_file(name: &str, path: &Path) -> Result<ParquetRecordBatchReader, SourceError> {
    let file = File::open(path).map_err(|source| SourceError::Io {
        path: name.to_string(),
        source,
    })?;
    parquet_batches(name, file)
}

/// The batches of Parquet data (a file, or bytes in tests).
fn parquet_batches(name: &str, data: impl ChunkReader + 'static) -> Result<ParquetRecordBatchReader, SourceError> {
    ParquetRecordBatchReaderBuilder::try_new(data)
        .and_then(|b| b.with_batch_size(PARQUET_BATCH).build())
        .map_err(|source| SourceError::Parquet {
            path: name.to_string(),
            source,
        })
}

/// [`read_parquet`] with each batch's rows decoded on `pool`'s threads while this one reads
/// (and decompresses) the next batches.
fn read_parquet_pooled(name: &str, reader: ParquetRecordBatchReader, pool: Pool<'_>, sink: &mut impl Sink) -> Result<(), SourceError> {
    let Pool { decoders, keyer } = pool;
    // The row numbers of each chunk in flight, oldest first.
    let mut numbers: VecDeque<Vec<u64>> = VecDeque::new();
    let mut row_no = 0u64;
    let mut read = Ok(());
    for batch in reader {
        let batch = match batch {
            Ok(b) => b,
            Err(source) => {
                read = Err(SourceError::Arrow {
                    path: name.to_string(),
                    source,
                });
                break;
            }
        };
        let rows = batch.num_rows() as u64;
        if rows == 0 {
            continue;
        }
        let mut chunk = decoders.chunk();
        chunk.set_batch(batch);
        decoders.send(keyer, chunk);
        numbers.push_back((row_no + 1..=row_no + rows).collect());
        row_no += rows;
        sink.progress(row_no);
        if decoders.in_flight() >= IN_FLIGHT {
            give(name, decoders, &mut numbers, sink);
        }
    }
    // What was read before the end (or an error) is given, in order, before returning.
    let last = decoders.chunk();
    give_rest(name, Pool { decoders, keyer }, last, Vec::new(), &mut numbers, sink);
    read
}

fn read_parquet(name: &str, reader: ParquetRecordBatchReader, en: Enricher<'_>, sink: &mut impl Sink) -> Result<(), SourceError> {
    let mut b = RecordBuilder::default();
    let mut row_no = 0u64;
    for batch in reader {
        let batch = batch.map_err(|source| SourceError::Arrow {
            path: name.to_string(),
            source,
        })?;
        let columns = BatchColumns::new(&batch);
        let typed = columns.typed();
        for row in 0..batch.num_rows() {
            row_no += 1;
            match assemble(&mut ParquetFields { columns: &typed, row }, &mut b, en) {
                Ok(rec) => sink.record(rec, row_no),
                Err(bad) => sink.reject(reject(name, row_no, bad, None)),
            }
        }
        sink.progress(row_no);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use anning_detector::Registry;

    use super::*;

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
        let pack = Arc::new(anning_rules::default_pack());
        let registry = Registry::parse("port,sp,class,signatures\n10690001234,901234,marketing,京东\n").unwrap();
        let en = Enricher::new(&pack, &registry);
        let keyer = Arc::new(Keyer::new(Arc::clone(&pack)));
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
        let pack = Arc::new(anning_rules::default_pack());
        let registry = Registry::parse("port,sp,class,signatures\n10690001234,901234,marketing,京东\n").unwrap();
        let en = Enricher::new(&pack, &registry);
        let keyer = Arc::new(Keyer::new(Arc::clone(&pack)));
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
}
