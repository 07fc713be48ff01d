//! File sources for replay: JSON Lines (or stdin), CSV and Parquet, read in order, each
//! record decoded or rejected with its position.
//!
//! Each format is read on one thread by [`read`], or with its records decoded on decoding
//! threads while the file is read ahead by [`read_pooled`]: `json_lines`, `csv_rows`,
//! `parquet_rows`. Both give a sink the same records and rejects in the same order.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anning_detector::engine::{Keyer, Routes};
use anning_detector::{Enricher, Record};

use crate::decode::pool::{CHUNK, Chunk, Decoders};
use crate::decode::{Bad, Reject};

use csv_rows::{csv_file, read_csv, read_csv_pooled};
pub use json_lines::read_jsonl;
use json_lines::read_jsonl_pooled;
use parquet_rows::{parquet_file, read_parquet, read_parquet_pooled};

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
        Format::Csv => read_csv(&name, csv_file(&name, input.path.as_deref().expect("csv is a file"))?, en, sink),
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

/// [`read`], with the records decoded, enriched and routed on `pool`'s threads while this
/// one reads ahead. The sink gets the same records, rejects and line (row) numbers in the
/// same order.
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
        (Format::Csv, Some(p)) => read_csv_pooled(&name, csv_file(&name, p)?, pool, sink),
        (Format::Parquet, Some(p)) => read_parquet_pooled(&name, parquet_file(&name, p)?, pool, sink),
        _ => read(input, en, sink),
    }
}

/// Chunks a reader keeps in flight on the decoding threads before it waits for the oldest.
const IN_FLIGHT: usize = 8;

/// Gives the oldest chunk in flight to `sink`, each line (row) as a routed record or a
/// reject (with the line's text; a row has none).
fn give(name: &str, decoders: &mut Decoders, numbers: &mut VecDeque<Vec<u64>>, sink: &mut impl Sink) {
    let (mut decoded, chunk) = decoders.next_decoded().expect("a chunk in flight");
    let lines = numbers.pop_front().expect("line numbers of each chunk sent");
    debug_assert_eq!(decoded.len(), lines.len());
    for (i, (d, &line)) in decoded.drain(..).zip(&lines).enumerate() {
        match d {
            Ok((rec, routes)) => sink.routed(rec, routes, line),
            Err(bad) => sink.reject(reject(name, line, bad, chunk.raw(i).as_deref())),
        }
    }
    decoders.recycle_with(chunk, decoded);
}

/// An input's values (lines, rows) on their way through the decoding threads: the chunk
/// being filled, the line numbers of its values, and those of each chunk in flight.
struct Flow<'p> {
    decoders: &'p mut Decoders,
    keyer: &'p Arc<Keyer>,
    chunk: Chunk,
    held: Vec<u64>,
    /// The line numbers of each chunk in flight, oldest first.
    numbers: VecDeque<Vec<u64>>,
}

impl<'p> Flow<'p> {
    fn new(pool: Pool<'p>) -> Self {
        let Pool { decoders, keyer } = pool;
        Flow {
            chunk: decoders.chunk(),
            decoders,
            keyer,
            held: Vec::with_capacity(CHUNK),
            numbers: VecDeque::new(),
        }
    }

    /// Notes that the value just put in the chunk came from line `line`: a full chunk is
    /// sent, and the oldest given to `sink` while [`IN_FLIGHT`] are out.
    fn added(&mut self, line: u64, name: &str, sink: &mut impl Sink) {
        self.held.push(line);
        if self.chunk.len() >= CHUNK {
            let next = self.decoders.chunk();
            let full = std::mem::replace(&mut self.chunk, next);
            let lines = std::mem::replace(&mut self.held, Vec::with_capacity(CHUNK));
            self.send(full, lines, name, sink);
        }
    }

    /// Sends a chunk filled elsewhere (a batch of rows), with its line numbers, giving the
    /// oldest to `sink` while [`IN_FLIGHT`] are out.
    fn send(&mut self, chunk: Chunk, lines: Vec<u64>, name: &str, sink: &mut impl Sink) {
        self.decoders.send(self.keyer, chunk);
        self.numbers.push_back(lines);
        if self.decoders.in_flight() >= IN_FLIGHT {
            give(name, self.decoders, &mut self.numbers, sink);
        }
    }

    /// Gives `sink` everything read so far, in order: the chunk being filled is closed, then
    /// every chunk in flight given. Reading may go on after.
    fn drain(&mut self, name: &str, sink: &mut impl Sink) {
        let next = self.decoders.chunk();
        let last = std::mem::replace(&mut self.chunk, next);
        let held = std::mem::replace(&mut self.held, Vec::with_capacity(CHUNK));
        let before = self.decoders.in_flight();
        self.decoders.close(self.keyer, last);
        if self.decoders.in_flight() > before {
            self.numbers.push_back(held);
        }
        while self.decoders.in_flight() > 0 {
            give(name, self.decoders, &mut self.numbers, sink);
        }
        assert!(self.decoders.next_decoded().is_none(), "every chunk given back");
    }

    /// Ends the reading: everything read is given to `sink`, in order.
    fn finish(mut self, name: &str, sink: &mut impl Sink) {
        self.drain(name, sink);
        self.decoders.recycle(self.chunk);
    }
}

mod csv_rows;
mod json_lines;
mod parquet_rows;
#[cfg(test)]
mod tests;
