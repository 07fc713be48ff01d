//! CSV with a header row naming the contract's fields.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use anning_detector::{Enricher, RecordBuilder};

use super::{Sink, SourceError, reject};
use crate::decode::csv::{CsvColumns, CsvFields};
use crate::decode::{Bad, RejectReason, assemble};

pub(super) fn read_csv(name: &str, path: &Path, en: Enricher<'_>, sink: &mut impl Sink) -> Result<(), SourceError> {
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
