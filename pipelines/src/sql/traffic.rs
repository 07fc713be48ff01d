//! Traffic files decoded by the replay decoder into Arrow batches, for `anning query`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;

use anning_detector::{Record, Slot};
use datafusion::arrow::array::{ArrayRef, BooleanBuilder, Float64Builder, StringBuilder, TimestampMillisecondBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;

use super::{Loaded, SqlError};
use crate::decode::Reject;
use crate::runtime::Progress;
use crate::source;

/// Rows per decoded batch.
const ROWS: usize = 64 * 1024;

/// Whether a JSON Lines or CSV file holds signaling records (its first row has `type`).
pub(super) fn looks_like_records(path: &Path, csv: bool) -> std::io::Result<bool> {
    let f = std::fs::File::open(path)?;
    for line in BufReader::new(f).lines().take(50) {
        let line = line?;
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        if csv {
            return Ok(t.split(',').any(|c| c.trim().trim_matches('"') == "type"));
        }
        // Not JSON at all: read it as records, so the decoder names the bad lines.
        return Ok(serde_json::from_str::<serde_json::Value>(t)
            .map(|v| v.get("type").is_some_and(|t| t.is_string()))
            .unwrap_or(true));
    }
    Ok(true)
}

/// The text columns of decoded traffic: the contract's string fields, then the port.
fn text_columns() -> impl Iterator<Item = (&'static str, Slot)> {
    anning_detector::record::STRING_FIELDS.into_iter().chain([("port", Slot::Port)])
}

/// The schema of decoded traffic: the contract's fields, the signature as resolved (from
/// `sig` or `【…】`), the port, and the registry's class of it.
pub fn traffic_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new("type", DataType::Utf8, false),
    ];
    fields.extend(text_columns().map(|(n, _)| Field::new(n, DataType::Utf8, true)));
    fields.push(Field::new("status", DataType::Utf8, true));
    fields.push(Field::new("answered", DataType::Boolean, true));
    fields.push(Field::new("dur", DataType::Float64, true));
    fields.push(Field::new("port_class", DataType::Utf8, false));
    fields.push(Field::new("src_class", DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

/// Decoded records into Arrow batches.
pub(super) struct Batches<'a> {
    loaded: &'a mut Loaded,
    progress: &'a mut dyn Progress,
    ts: TimestampMillisecondBuilder,
    kind: StringBuilder,
    text: Vec<StringBuilder>,
    status: StringBuilder,
    answered: BooleanBuilder,
    dur: Float64Builder,
    port_class: StringBuilder,
    src_class: StringBuilder,
    rows: usize,
    done: Vec<RecordBatch>,
    error: Option<datafusion::arrow::error::ArrowError>,
}

impl<'a> Batches<'a> {
    pub(super) fn new(loaded: &'a mut Loaded, progress: &'a mut dyn Progress) -> Self {
        Batches {
            loaded,
            progress,
            ts: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            kind: StringBuilder::new(),
            text: text_columns().map(|_| StringBuilder::new()).collect(),
            status: StringBuilder::new(),
            answered: BooleanBuilder::new(),
            dur: Float64Builder::new(),
            port_class: StringBuilder::new(),
            src_class: StringBuilder::new(),
            rows: 0,
            done: Vec::new(),
            error: None,
        }
    }

    fn cut(&mut self) {
        if self.rows == 0 {
            return;
        }
        let mut cols: Vec<ArrayRef> = vec![Arc::new(self.ts.finish()), Arc::new(self.kind.finish())];
        cols.extend(self.text.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        cols.push(Arc::new(self.status.finish()));
        cols.push(Arc::new(self.answered.finish()));
        cols.push(Arc::new(self.dur.finish()));
        cols.push(Arc::new(self.port_class.finish()));
        cols.push(Arc::new(self.src_class.finish()));
        match RecordBatch::try_new(traffic_schema(), cols) {
            Ok(b) => self.done.push(b),
            Err(e) => self.error = Some(e),
        }
        self.rows = 0;
    }

    pub(super) fn finish(mut self) -> Result<Vec<RecordBatch>, SqlError> {
        self.cut();
        match self.error {
            Some(e) => Err(e.into()),
            None => Ok(self.done),
        }
    }
}

impl source::Sink for Batches<'_> {
    fn record(&mut self, r: Record, _line: u64) {
        self.ts.append_value(r.ts);
        self.kind.append_value(r.kind.name());
        for (b, (_, slot)) in self.text.iter_mut().zip(text_columns()) {
            b.append_option(r.get(slot));
        }
        self.status.append_option(r.status.map(|s| s.name()));
        self.answered.append_option(r.answered);
        self.dur.append_option(r.dur);
        self.port_class.append_value(r.port_class.name());
        self.src_class.append_value(r.src_class.name());
        self.loaded.records += 1;
        self.rows += 1;
        if self.rows >= ROWS {
            self.cut();
        }
    }

    fn reject(&mut self, r: Reject) {
        *self.loaded.rejects.entry(r.reason).or_default() += 1;
        if self.loaded.samples.len() < 5 {
            self.loaded.samples.push(Reject { raw: None, ..r });
        }
    }

    fn progress(&mut self, done: u64) {
        self.progress.advance(done);
    }
}
