//! File sources for replay: JSON Lines (or stdin), CSV and Parquet, read in order, each
//! record decoded or rejected with its position.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anning_detector::{Enricher, Record, RecordBuilder};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::decode::csv::{CsvColumns, CsvFields};
use crate::decode::jsonl::JsonFields;
use crate::decode::parquet::{BatchColumns, ParquetFields};
use crate::decode::{Bad, Reject, RejectReason, assemble};

/// The formats replay reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    JsonLines,
    Csv,
    Parquet,
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
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        let format = match ext.as_str() {
            "jsonl" | "json" | "ndjson" => Format::JsonLines,
            "csv" => Format::Csv,
            "parquet" | "pq" => Format::Parquet,
            _ => return Err(SourceError::UnknownFormat(arg.to_string())),
        };
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
    read_with(input, en, sink, 1)
}

/// [`read`], JSON Lines and Parquet decoded on `decoders` threads when more than one
/// (records and rejects still reach `sink` in input order, the same as read on one thread).
pub fn read_with(input: &Input, en: Enricher<'_>, sink: &mut impl Sink, decoders: usize) -> Result<(), SourceError> {
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
            if decoders > 1 {
                read_jsonl_on(&name, reader, en, sink, decoders).map_err(io)
            } else {
                read_jsonl(&name, BufReader::with_capacity(1 << 20, reader), en, sink).map_err(io)
            }
        }
        Format::Csv => read_csv(&name, input.path.as_deref().expect("csv is a file"), en, sink),
        Format::Parquet => read_parquet(&name, input.path.as_deref().expect("parquet is a file"), en, sink, decoders),
    }
}

/// JSON Lines from any reader. Blank lines are skipped; a line that is not UTF-8 is rejected.
pub fn read_jsonl(name: &str, mut r: impl BufRead, en: Enricher<'_>, sink: &mut impl Sink) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut b = RecordBuilder::default();
    let mut line_no = 0u64;
    let mut done = 0u64;
    loop {
        buf.clear();
        let n = r.read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        line_no += 1;
        done += n as u64;
        if line_no.is_multiple_of(65_536) {
            sink.progress(done);
        }
        match decode_line(name, line_no, &buf, &mut b, en) {
            Some(Ok(rec)) => sink.record(rec, line_no),
            Some(Err(r)) => sink.reject(r),
            None => {}
        }
    }
}

/// One line of JSON Lines (its end of line included or not): the record, the reject, or
/// `None` for a blank line.
fn decode_line(name: &str, line_no: u64, raw: &[u8], b: &mut RecordBuilder, en: Enricher<'_>) -> Option<Result<Record, Reject>> {
    let mut bytes = raw;
    while let [rest @ .., b'\n' | b'\r'] = bytes {
        bytes = rest;
    }
    let line = match std::str::from_utf8(bytes) {
        Ok(l) => l,
        Err(e) => {
            let bad = Bad {
                reason: RejectReason::Malformed,
                field: None,
                col: Some(e.valid_up_to() as u64 + 1),
                detail: "line is not valid UTF-8".into(),
            };
            return Some(Err(reject(name, line_no, bad, Some(&String::from_utf8_lossy(bytes)))));
        }
    };
    if line.trim().is_empty() {
        return None;
    }
    Some(
        JsonFields::parse(line)
            .and_then(|mut f| assemble(&mut f, b, en))
            .map_err(|bad| reject(name, line_no, bad, Some(line))),
    )
}

/// Bytes of whole lines handed to a decoding thread at a time.
const BLOCK: usize = 1 << 20;

/// Records and rejects, each with its line (or row).
type Lines = Vec<(u64, Result<Record, Reject>)>;

/// Runs `work` on `threads` threads over the jobs `next` gives (until it gives `None`), at
/// most two per thread ahead of the one waited for, and hands each result to `deliver` in
/// the order of the jobs. A panic in `work` reaches the caller instead of leaving it waiting.
fn in_order<J: Send, O: Send>(
    threads: usize,
    mut next: impl FnMut() -> Option<J>,
    work: impl Fn(J) -> O + Sync,
    mut deliver: impl FnMut(O),
) {
    let (jobs, rx) = crossbeam_channel::unbounded::<(usize, J)>();
    let (tx, done) = crossbeam_channel::unbounded::<(usize, Result<O, String>)>();
    std::thread::scope(|s| {
        for i in 0..threads {
            let (rx, tx, work) = (rx.clone(), tx.clone(), &work);
            std::thread::Builder::new()
                .name(format!("decode-{i}"))
                .spawn_scoped(s, move || {
                    for (seq, job) in rx {
                        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(job))).map_err(|p| {
                            p.downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| p.downcast_ref::<String>().cloned())
                                .unwrap_or_default()
                        });
                        let failed = out.is_err();
                        if tx.send((seq, out)).is_err() || failed {
                            return;
                        }
                    }
                })
                .expect("spawn a decoding thread");
        }
        drop((rx, tx));
        let (mut sent, mut given, mut ended) = (0usize, 0usize, false);
        // Results by place, until their turn.
        let mut back: std::collections::VecDeque<Option<O>> = Default::default();
        loop {
            while !ended && sent - given < 2 * threads {
                match next() {
                    Some(job) => {
                        back.push_back(None);
                        jobs.send((sent, job)).expect("decoding threads run while jobs are sent");
                        sent += 1;
                    }
                    None => ended = true,
                }
            }
            if given == sent {
                break;
            }
            while back.front().is_some_and(Option::is_none) {
                let (seq, out) = done.recv().expect("a decoding thread stopped");
                back[seq - given] = Some(out.unwrap_or_else(|e| panic!("a decoding thread panicked: {e}")));
            }
            deliver(back.pop_front().flatten().expect("the next result"));
            given += 1;
        }
        // The threads end once the jobs are gone.
        drop(jobs);
    });
}

/// JSON Lines read in blocks of whole lines, decoded on `threads` threads, handed to `sink`
/// in input order: the same records, rejects and line numbers as [`read_jsonl`].
fn read_jsonl_on(name: &str, mut r: impl Read, en: Enricher<'_>, sink: &mut impl Sink, threads: usize) -> std::io::Result<()> {
    // Emptied blocks, to fill again.
    let free = std::cell::RefCell::new(Vec::<Vec<u8>>::new());
    // Bytes read past the last whole line, carried into the next block.
    let mut carry: Vec<u8> = Vec::new();
    let (mut lines, mut read_to, mut eof) = (0u64, 0u64, false);
    let mut failed: Option<std::io::Error> = None;
    // A block: the line number before its first line, its bytes, where it ends in the input.
    let next = || -> Option<(u64, Vec<u8>, u64)> {
        if eof {
            return None;
        }
        let mut block = free.borrow_mut().pop().unwrap_or_default();
        block.clear();
        block.append(&mut carry);
        // Fill to BLOCK, then on to the end of a line (a line longer than a block too).
        loop {
            let at = block.len();
            let want = if at < BLOCK { BLOCK - at } else { 64 << 10 };
            block.resize(at + want, 0);
            let read = loop {
                match r.read(&mut block[at..]) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            };
            match read {
                Ok(0) => {
                    block.truncate(at);
                    eof = true;
                    break;
                }
                Ok(n) => block.truncate(at + n),
                Err(e) => {
                    // What was read before stays: its whole lines are decoded and handed
                    // on, then the error; a line cut short is dropped, as reading line by
                    // line drops it.
                    let whole = block[..at].iter().rposition(|&c| c == b'\n').map_or(0, |nl| nl + 1);
                    block.truncate(whole);
                    failed = Some(e);
                    eof = true;
                    break;
                }
            }
            if block.len() >= BLOCK
                && let Some(nl) = block[at..].iter().rposition(|&c| c == b'\n')
            {
                carry.extend_from_slice(&block[at + nl + 1..]);
                block.truncate(at + nl + 1);
                break;
            }
        }
        if block.is_empty() {
            return None;
        }
        let before = lines;
        lines += block.iter().filter(|&&c| c == b'\n').count() as u64 + u64::from(!block.ends_with(b"\n"));
        read_to += block.len() as u64;
        Some((before, block, read_to))
    };
    let work = |(before, bytes, end): (u64, Vec<u8>, u64)| {
        let mut b = RecordBuilder::default();
        let mut out: Lines = Vec::with_capacity(bytes.len() / 128);
        let lines = bytes.split_inclusive(|&c| c == b'\n');
        for (line_no, raw) in (before + 1..).zip(lines) {
            if let Some(d) = decode_line(name, line_no, raw, &mut b, en) {
                out.push((line_no, d));
            }
        }
        (out, bytes, end)
    };
    in_order(threads, next, work, |(out, bytes, end): (Lines, Vec<u8>, u64)| {
        hand_on(out, sink);
        sink.progress(end);
        free.borrow_mut().push(bytes);
    });
    failed.map_or(Ok(()), Err)
}

/// Decoded records and rejects to `sink`, in order.
fn hand_on(out: Lines, sink: &mut impl Sink) {
    for (line_no, d) in out {
        match d {
            Ok(rec) => sink.record(rec, line_no),
            Err(r) => sink.reject(r),
        }
    }
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

/// Parquet in batches of 8192 rows; with `threads` > 1, the rows of each batch are
/// assembled on threads and handed to `sink` in order.
fn read_parquet(name: &str, path: &Path, en: Enricher<'_>, sink: &mut impl Sink, threads: usize) -> Result<(), SourceError> {
    let file = File::open(path).map_err(|source| SourceError::Io {
        path: name.to_string(),
        source,
    })?;
    let mut reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(8192).build())
        .map_err(|source| SourceError::Parquet {
            path: name.to_string(),
            source,
        })?;
    let rows = |b: &mut RecordBuilder, batch: &arrow::record_batch::RecordBatch, before: u64| -> Lines {
        let columns = BatchColumns::new(batch);
        (0..batch.num_rows())
            .map(|row| {
                let row_no = before + row as u64 + 1;
                let d = assemble(&mut ParquetFields { columns: &columns, row }, b, en).map_err(|bad| reject(name, row_no, bad, None));
                (row_no, d)
            })
            .collect()
    };
    let mut failed = None;
    let mut row_no = 0u64;
    let mut next = || match reader.next()? {
        Ok(batch) => {
            let before = row_no;
            row_no += batch.num_rows() as u64;
            Some((before, batch))
        }
        Err(source) => {
            failed = Some(SourceError::Arrow {
                path: name.to_string(),
                source,
            });
            None
        }
    };
    let mut deliver = |(out, end): (Lines, u64)| {
        hand_on(out, sink);
        sink.progress(end);
    };
    if threads > 1 {
        let work = |(before, batch): (u64, arrow::record_batch::RecordBatch)| {
            (
                rows(&mut RecordBuilder::default(), &batch, before),
                before + batch.num_rows() as u64,
            )
        };
        in_order(threads, next, work, deliver);
    } else {
        let mut b = RecordBuilder::default();
        while let Some((before, batch)) = next() {
            deliver((rows(&mut b, &batch, before), before + batch.num_rows() as u64));
        }
    }
    failed.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anning_detector::Registry;

    /// Everything a source hands on, in order.
    #[derive(Default)]
    struct Seen {
        events: Vec<String>,
        progress: Vec<u64>,
    }

    impl Sink for Seen {
        fn record(&mut self, r: Record, line: u64) {
            self.events.push(format!("{line} {}", r.to_json()));
        }
        fn reject(&mut self, r: Reject) {
            self.events.push(format!("{r:?}"));
        }
        fn progress(&mut self, done: u64) {
            self.progress.push(done);
        }
    }

    /// Gives `data`, a few bytes at a time (as a pipe does), then fails if `fail`.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        fail: bool,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.at == self.data.len() {
                return if self.fail {
                    Err(std::io::Error::other("the disk went away"))
                } else {
                    Ok(0)
                };
            }
            let n = buf.len().min(self.data.len() - self.at).min(70_001);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    /// About 6 blocks of lines: records, blank lines, CRLF ends, bad JSON, bad fields,
    /// a line that is not UTF-8, a line longer than a block; the last line without an end.
    fn input() -> Vec<u8> {
        let mut data = Vec::new();
        let mut i = 0u64;
        while data.len() < 6 * BLOCK {
            i += 1;
            let line: Vec<u8> = match i % 97 {
                0 => b"".to_vec(),
                1 => b"this is not json".to_vec(),
                2 => br#"{"ts":"yesterday","type":"sms","src":"13800138000","dst":"13900139000"}"#.to_vec(),
                3 => b"{\"ts\":1794300000000,\"type\":\"sms\",\"src\":\"1380\xff\"}".to_vec(),
                4 => format!(
                    "{{\"ts\":{},\"type\":\"sms\",\"src\":\"13800138000\",\"dst\":\"13900139000\"}}\r",
                    1_794_300_000_000u64 + i
                )
                .into_bytes(),
                _ => format!(
                    "{{\"ts\":{},\"type\":\"sms\",\"src\":\"1380013{:04}\",\"dst\":\"1390013{:04}\",\"text\":\"【京东】双11大促 {i}\"}}",
                    1_794_300_000_000u64 + i * 7,
                    i % 5000,
                    i % 777
                )
                .into_bytes(),
            };
            data.extend_from_slice(&line);
            data.push(b'\n');
            if i == 5_000 {
                let text = "长".repeat(BLOCK / 2);
                data.extend_from_slice(
                    format!(r#"{{"ts":1794300000000,"type":"sms","src":"13800138000","dst":"13900139000","text":"{text}"}}"#).as_bytes(),
                );
                data.push(b'\n');
            }
        }
        data.extend_from_slice(br#"{"ts":1794300009999,"type":"sms","src":"13800138000","dst":"13900139001"}"#);
        data
    }

    fn read_both(data: &[u8], fail: bool, threads: usize) -> ((Seen, bool), (Seen, bool)) {
        let pack = anning_rules::default_pack();
        let registry = Registry::default();
        let en = Enricher::new(&pack, &registry);
        let trickle = || Trickle {
            data: data.to_vec(),
            at: 0,
            fail,
        };
        let mut one = Seen::default();
        let e1 = read_jsonl("in.jsonl", BufReader::new(trickle()), en, &mut one).is_err();
        let mut many = Seen::default();
        let e2 = read_jsonl_on("in.jsonl", trickle(), en, &mut many, threads).is_err();
        ((one, e1), (many, e2))
    }

    /// Decoding threads hand on what one thread reading line by line does: the same
    /// records and rejects, in the same order, with the same line numbers; all of the input
    /// counted as read.
    #[test]
    fn threads_read_json_lines_as_one_thread_does() {
        let data = input();
        for threads in [2, 3] {
            let ((one, e1), (many, e2)) = read_both(&data, false, threads);
            assert!(!e1 && !e2);
            assert!(one.events.len() > 15_000, "{}", one.events.len());
            assert!(one.events.iter().any(|e| e.contains("not valid UTF-8")));
            assert!(one.events.iter().any(|e| e.contains("长长长")), "the long line is read");
            assert_eq!(one.events.len(), many.events.len(), "{threads} threads");
            for (i, (a, b)) in one.events.iter().zip(&many.events).enumerate() {
                assert_eq!(a, b, "event {i}, {threads} threads");
            }
            assert!(many.progress.windows(2).all(|w| w[0] < w[1]));
            assert_eq!(many.progress.last(), Some(&(data.len() as u64)));
        }
    }

    /// Parquet over threads: the same records and rejects, in the same order, with the same
    /// rows, as on one thread; batches of 8192 rows, the last one short.
    #[test]
    fn threads_read_parquet_as_one_thread_does() {
        use arrow::array::{ArrayRef, Int64Array, StringArray};
        use arrow::datatypes::{DataType, Field, Schema};
        let n = 3 * 8192 + 100;
        let col =
            |f: &dyn Fn(usize) -> Option<String>| -> ArrayRef { std::sync::Arc::new(StringArray::from((0..n).map(f).collect::<Vec<_>>())) };
        let schema = std::sync::Arc::new(Schema::new(vec![
            Field::new("ts", DataType::Int64, true),
            Field::new("type", DataType::Utf8, true),
            Field::new("src", DataType::Utf8, true),
            Field::new("dst", DataType::Utf8, true),
            Field::new("text", DataType::Utf8, true),
        ]));
        let batch = arrow::record_batch::RecordBatch::try_new(
            schema.clone(),
            vec![
                std::sync::Arc::new(Int64Array::from(
                    (0..n).map(|i| Some(1_794_300_000_000 + i as i64 * 10)).collect::<Vec<_>>(),
                )),
                col(&|i| Some(if i % 101 == 7 { "mms" } else { "sms" }.to_string())),
                col(&|i| Some(format!("1380013{:04}", i % 3000))),
                col(&|i| (i % 89 != 3).then(|| format!("1390013{:04}", i % 500))),
                col(&|i| Some(format!("【京东】双11大促 {i}"))),
            ],
        )
        .unwrap();
        let dir = std::env::temp_dir().join(format!("anning-source-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rows.parquet");
        let mut w = parquet::arrow::ArrowWriter::try_new(File::create(&path).unwrap(), schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();

        let pack = anning_rules::default_pack();
        let registry = Registry::default();
        let en = Enricher::new(&pack, &registry);
        let mut one = Seen::default();
        read_parquet("rows.parquet", &path, en, &mut one, 1).unwrap();
        assert_eq!(one.events.len(), n);
        assert!(one.events.iter().any(|e| e.contains("mms")) && one.events.iter().any(|e| e.contains("MissingField")));
        assert_eq!(one.progress, vec![8192, 16384, 24576, n as u64]);
        for threads in [2, 3] {
            let mut many = Seen::default();
            read_parquet("rows.parquet", &path, en, &mut many, threads).unwrap();
            assert!(one.events == many.events, "{threads} threads");
            assert_eq!(one.progress, many.progress);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A read error: the whole lines before it are handed on as by one thread, then the
    /// error.
    #[test]
    fn a_read_error_keeps_the_lines_before_it() {
        let mut data = input();
        data.truncate(2 * BLOCK + 12_345);
        let ((one, e1), (many, e2)) = read_both(&data, true, 2);
        assert!(e1 && e2, "both report the error");
        assert!(one.events.len() > 2_000, "{}", one.events.len());
        assert_eq!(one.events, many.events);
    }
}
