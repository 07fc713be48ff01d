//! CSV with a header row naming the contract's fields.
//!
//! The reader splits rows into fields (a quoted field may hold line ends, so rows cannot be
//! cut apart without reading them); with a pool, the rows are assembled into records,
//! enriched and routed on the decoding threads.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use anning_detector::{Enricher, RecordBuilder};

use super::{Flow, Pool, Sink, SourceError, reject};
use crate::decode::csv::{CsvColumns, CsvFields};
use crate::decode::{Bad, RejectReason, assemble};

/// Rows between two reports of progress (in bytes read).
const PROGRESS_ROWS: u64 = 65_536;

/// The file at `path`, for [`read_csv`] or [`read_csv_pooled`].
pub(super) fn csv_file(name: &str, path: &Path) -> Result<BufReader<File>, SourceError> {
    let file = File::open(path).map_err(|source| SourceError::Io {
        path: name.to_string(),
        source,
    })?;
    Ok(BufReader::with_capacity(1 << 20, file))
}

/// A reader of `r`'s rows past its header, and the header's columns.
fn rows<R: Read>(name: &str, r: R) -> Result<(csv::Reader<R>, CsvColumns), SourceError> {
    let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(r);
    let header = rdr.headers().map_err(|e| SourceError::Io {
        path: name.to_string(),
        source: e.into(),
    })?;
    let columns = CsvColumns::from_header(header);
    Ok((rdr, columns))
}

fn io_error(name: &str, e: csv::Error) -> SourceError {
    SourceError::Io {
        path: name.to_string(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// A row that could not be read: rejected, and the reading goes on only past a row that is
/// not UTF-8 or has a different number of fields (`Err` otherwise).
fn unreadable(name: &str, e: csv::Error, sink: &mut impl Sink) -> Result<(), SourceError> {
    let line = e.position().map_or(0, |p| p.line());
    let bad = Bad {
        reason: RejectReason::Malformed,
        field: None,
        col: None,
        detail: format!("unreadable CSV row: {e}"),
    };
    sink.reject(reject(name, line, bad, None));
    if matches!(e.kind(), csv::ErrorKind::Utf8 { .. } | csv::ErrorKind::UnequalLengths { .. }) {
        Ok(())
    } else {
        Err(io_error(name, e))
    }
}

/// The rows of `r` (CSV with a header), each a record or a reject at its line.
pub(super) fn read_csv(name: &str, r: impl Read, en: Enricher<'_>, sink: &mut impl Sink) -> Result<(), SourceError> {
    let (mut rdr, columns) = rows(name, r)?;
    let mut row = csv::StringRecord::new();
    let mut b = RecordBuilder::default();
    let mut n = 0u64;
    loop {
        match rdr.read_record(&mut row) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                n += 1;
                if n.is_multiple_of(PROGRESS_ROWS) {
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
            Err(e) => unreadable(name, e, sink)?,
        }
    }
}

/// [`read_csv`] with the rows assembled, enriched and routed on `pool`'s threads while this
/// one reads the next rows. A row that cannot be read is rejected after every row before it
/// has been given.
pub(super) fn read_csv_pooled(name: &str, r: impl Read, pool: Pool<'_>, sink: &mut impl Sink) -> Result<(), SourceError> {
    let (mut rdr, columns) = rows(name, r)?;
    let columns = Arc::new(columns);
    let mut flow = Flow::new(pool);
    let mut n = 0u64;
    let read = loop {
        match flow.chunk.read_row(&mut rdr, &columns) {
            Ok(None) => break Ok(()),
            Ok(Some(row)) => {
                n += 1;
                let at = row.position();
                if n.is_multiple_of(PROGRESS_ROWS) {
                    sink.progress(at.map_or(0, |p| p.byte()));
                }
                let line = at.map_or(0, |p| p.line());
                flow.added(line, name, sink);
            }
            Err(e) => {
                // Rare: every row read so far is given first, so the reject comes in order.
                flow.drain(name, sink);
                if let Err(stop) = unreadable(name, e, sink) {
                    break Err(stop);
                }
            }
        }
    };
    // What was read before the end (or an error) is given, in order, before returning.
    flow.finish(name, sink);
    read
}
