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

/// [`read`], JSON Lines decoded on `decoders` threads when more than one (records and
/// rejects still reach `sink` in input order, the same as read on one thread).
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
        Format::Parquet => read_parquet(&name, input.path.as_deref().expect("parquet is a file"), en, sink),
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

/// A block of whole lines: its place in the input, the line number before its first line,
/// its bytes.
type Block = (usize, u64, Vec<u8>);

/// A block's records and rejects, each with its line.
type Lines = Vec<(u64, Result<Record, Reject>)>;

/// What a block decodes to (or the panic of the thread that decoded it), and its bytes back
/// to be filled again.
type Decoded = (usize, Result<Lines, String>, Vec<u8>);

/// JSON Lines read in blocks of whole lines, decoded on `threads` threads, handed to `sink`
/// in input order: the same records, rejects and line numbers as [`read_jsonl`].
fn read_jsonl_on(name: &str, mut r: impl Read, en: Enricher<'_>, sink: &mut impl Sink, threads: usize) -> std::io::Result<()> {
    let (jobs, rx) = crossbeam_channel::unbounded::<Block>();
    let (tx, done) = crossbeam_channel::unbounded::<Decoded>();
    std::thread::scope(|s| {
        for i in 0..threads {
            let (rx, tx) = (rx.clone(), tx.clone());
            std::thread::Builder::new()
                .name(format!("decode-{i}"))
                .spawn_scoped(s, move || {
                    let mut b = RecordBuilder::default();
                    for (seq, before, bytes) in rx {
                        // A panic (a bug) is handed on, or the reader would wait for this
                        // block for ever.
                        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            let mut out = Vec::with_capacity(bytes.len() / 128);
                            let lines = bytes.split_inclusive(|&c| c == b'\n');
                            for (line_no, raw) in (before + 1..).zip(lines) {
                                if let Some(d) = decode_line(name, line_no, raw, &mut b, en) {
                                    out.push((line_no, d));
                                }
                            }
                            out
                        }))
                        .map_err(|p| {
                            p.downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| p.downcast_ref::<String>().cloned())
                                .unwrap_or_default()
                        });
                        let failed = out.is_err();
                        if tx.send((seq, out, bytes)).is_err() || failed {
                            return;
                        }
                    }
                })
                .expect("spawn a decoding thread");
        }
        drop((rx, tx));
        let result = feed(&mut r, &jobs, &done, sink, threads);
        // Decoding threads end once the jobs are gone (on an error, with work undone).
        drop(jobs);
        result
    })
}

/// Reads blocks of whole lines into `jobs`, at most two per thread ahead of the one `sink`
/// waits for, and hands decoded blocks to `sink` in order.
fn feed(
    r: &mut impl Read,
    jobs: &crossbeam_channel::Sender<Block>,
    done: &crossbeam_channel::Receiver<Decoded>,
    sink: &mut impl Sink,
    threads: usize,
) -> std::io::Result<()> {
    let mut free: Vec<Vec<u8>> = Vec::new();
    // Bytes read past the last whole line, carried into the next block.
    let mut carry: Vec<u8> = Vec::new();
    let (mut sent, mut given, mut lines, mut read_to, mut eof) = (0usize, 0usize, 0u64, 0u64, false);
    let mut failed: Option<std::io::Error> = None;
    // Decoded blocks by place, until their turn; and each block's end in bytes.
    let mut back: std::collections::VecDeque<Option<Lines>> = Default::default();
    let mut ends: std::collections::VecDeque<u64> = Default::default();
    loop {
        while !eof && sent - given < 2 * threads {
            let mut block = free.pop().unwrap_or_default();
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
                        // What was read before stays: its whole lines are decoded and
                        // handed on, then the error; a line cut short is dropped, as
                        // reading line by line drops it.
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
                free.push(block);
                break;
            }
            let before = lines;
            lines += block.iter().filter(|&&c| c == b'\n').count() as u64 + u64::from(!block.ends_with(b"\n"));
            read_to += block.len() as u64;
            ends.push_back(read_to);
            back.push_back(None);
            jobs.send((sent, before, block)).expect("decoding threads run while jobs are sent");
            sent += 1;
        }
        if given == sent {
            return failed.map_or(Ok(()), Err);
        }
        while back.front().is_some_and(Option::is_none) {
            let (seq, out, bytes) = done.recv().expect("a decoding thread stopped");
            back[seq - given] = Some(out.unwrap_or_else(|e| panic!("a decoding thread panicked: {e}")));
            free.push(bytes);
        }
        let out = back.pop_front().flatten().expect("the next block, decoded");
        given += 1;
        for (line_no, d) in out {
            match d {
                Ok(rec) => sink.record(rec, line_no),
                Err(r) => sink.reject(r),
            }
        }
        sink.progress(ends.pop_front().expect("an end per block"));
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

fn read_parquet(name: &str, path: &Path, en: Enricher<'_>, sink: &mut impl Sink) -> Result<(), SourceError> {
    let file = File::open(path).map_err(|source| SourceError::Io {
        path: name.to_string(),
        source,
    })?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(8192).build())
        .map_err(|source| SourceError::Parquet {
            path: name.to_string(),
            source,
        })?;
    let mut b = RecordBuilder::default();
    let mut row_no = 0u64;
    for batch in reader {
        let batch = batch.map_err(|source| SourceError::Arrow {
            path: name.to_string(),
            source,
        })?;
        let columns = BatchColumns::new(&batch);
        for row in 0..batch.num_rows() {
            row_no += 1;
            match assemble(&mut ParquetFields { columns: &columns, row }, &mut b, en) {
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
