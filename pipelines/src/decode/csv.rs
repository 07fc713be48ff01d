//! CSV with a header row naming the contract's fields (any order; unknown columns ignored).
//! Empty cells are absent fields; numbers, booleans and timestamps are parsed from text.

use std::borrow::Cow;

use super::{Bad, FIELD_NAMES, Fields, Val};

/// Column positions of the contract's fields in one CSV file, at each field's place in
/// [`FIELD_NAMES`].
#[derive(Debug, Clone)]
pub struct CsvColumns {
    cols: [Option<usize>; FIELD_NAMES.len()],
}

impl CsvColumns {
    pub fn from_header(header: &csv::StringRecord) -> Self {
        let cols = FIELD_NAMES.map(|n| header.iter().position(|h| h.trim().trim_start_matches('\u{feff}') == n));
        CsvColumns { cols }
    }
}

/// One CSV row, ready for [`super::assemble`].
pub struct CsvFields<'a> {
    pub columns: &'a CsvColumns,
    pub row: &'a csv::StringRecord,
}

impl<'a> Fields<'a> for CsvFields<'a> {
    fn get(&mut self, field: usize) -> Result<Option<(Val<'a>, Option<u64>)>, Bad> {
        let Some(i) = self.columns.cols.get(field).copied().flatten() else {
            return Ok(None);
        };
        match self.row.get(i) {
            Some(v) if !v.is_empty() => Ok(Some((Val::Str(Cow::Borrowed(v)), Some(i as u64 + 1)))),
            _ => Ok(None),
        }
    }

    fn textual(&self) -> bool {
        true
    }
}
