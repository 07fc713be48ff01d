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
        let mut bytes = &buf[..];
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
                sink.reject(reject(name, line_no, bad, Some(&String::from_utf8_lossy(bytes))));
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        match JsonFields::parse(line).and_then(|mut f| assemble(&mut f, &mut b, en)) {
            Ok(rec) => sink.record(rec, line_no),
            Err(bad) => sink.reject(reject(name, line_no, bad, Some(line))),
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

/// Rows per arrow batch read from Parquet. 8192 made arrays of megabytes that came back
/// zeroed from the kernel each time; 1024 keeps them in the allocator's reach (replay Parquet,
/// 3 alternating pairs: 658/639/699 -> 692/725/752 k/s).
const PARQUET_BATCH: usize = 1024;

fn read_parquet(name: &str, path: &Path, en: Enricher<'_>, sink: &mut impl Sink) -> Result<(), SourceError> {
    let file = File::open(path).map_err(|source| SourceError::Io {
        path: name.to_string(),
        source,
    })?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(PARQUET_BATCH).build())
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
