//! Generated records written as Parquet or CSV: the contract's fields as columns (the same
//! names and types the Parquet and CSV decoders read back).

use std::fs::File;
use std::io;
use std::sync::Arc;

use anning_fixtures::synth::{GenRecord, RecordSink};
use arrow::array::{ArrayRef, BooleanBuilder, Int64Builder, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

const ROWS: usize = 64 * 1024;
const STRINGS: [&str; 11] = ["type", "id", "src", "dst", "sig", "text", "cell", "imei", "ref", "status", "err"];

pub struct ParquetSink {
    schema: SchemaRef,
    writer: Option<ArrowWriter<File>>,
    ts: Int64Builder,
    strings: Vec<StringBuilder>,
    answered: BooleanBuilder,
    dur: Int64Builder,
    rows: usize,
}

fn io_err(e: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::other(e)
}

impl ParquetSink {
    pub fn create(file: File) -> io::Result<Self> {
        let mut fields = vec![Field::new("ts", DataType::Int64, false)];
        fields.extend(STRINGS.iter().map(|n| Field::new(*n, DataType::Utf8, *n != "type")));
        fields.push(Field::new("answered", DataType::Boolean, true));
        fields.push(Field::new("dur", DataType::Int64, true));
        let schema = Arc::new(Schema::new(fields));
        let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
        let writer = ArrowWriter::try_new(file, Arc::clone(&schema), Some(props)).map_err(io_err)?;
        Ok(ParquetSink {
            schema,
            writer: Some(writer),
            ts: Int64Builder::with_capacity(ROWS),
            strings: (0..STRINGS.len()).map(|_| StringBuilder::new()).collect(),
            answered: BooleanBuilder::with_capacity(ROWS),
            dur: Int64Builder::with_capacity(ROWS),
            rows: 0,
        })
    }

    fn flush_batch(&mut self) -> io::Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let mut cols: Vec<ArrayRef> = vec![Arc::new(self.ts.finish())];
        cols.extend(self.strings.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        cols.push(Arc::new(self.answered.finish()));
        cols.push(Arc::new(self.dur.finish()));
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), cols).map_err(io_err)?;
        self.writer.as_mut().expect("open writer").write(&batch).map_err(io_err)?;
        self.rows = 0;
        Ok(())
    }
}

/// A record's string fields, in the order of [`STRINGS`].
fn strings(r: &GenRecord) -> [Option<&str>; STRINGS.len()] {
    [
        Some(r.kind.as_str()),
        r.id.as_deref(),
        r.src.as_deref(),
        r.dst.as_deref(),
        r.sig.as_deref(),
        r.text.as_deref(),
        r.cell.as_deref(),
        r.imei.as_deref(),
        r.reference.as_deref(),
        r.status,
        r.err,
    ]
}

impl RecordSink for ParquetSink {
    fn record(&mut self, r: &GenRecord) -> io::Result<()> {
        self.ts.append_value(r.ts);
        for (b, v) in self.strings.iter_mut().zip(strings(r)) {
            b.append_option(v);
        }
        self.answered.append_option(r.answered);
        self.dur.append_option(r.dur.map(i64::from));
        self.rows += 1;
        if self.rows >= ROWS {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.flush_batch()?;
        if let Some(w) = self.writer.take() {
            w.close().map_err(io_err)?;
        }
        Ok(())
    }
}

/// CSV with a header row: the Parquet file's columns in the same order (`ts`, [`STRINGS`],
/// `answered`, `dur`); an absent field is an empty cell (how the CSV decoder reads it).
pub struct CsvSink<W: io::Write> {
    out: csv::Writer<W>,
}

impl<W: io::Write> CsvSink<W> {
    pub fn new(out: W) -> io::Result<Self> {
        let mut out = csv::Writer::from_writer(out);
        out.write_record(std::iter::once("ts").chain(STRINGS).chain(["answered", "dur"]))?;
        Ok(CsvSink { out })
    }
}

impl<W: io::Write> RecordSink for CsvSink<W> {
    fn record(&mut self, r: &GenRecord) -> io::Result<()> {
        let ts = r.ts.to_string();
        let dur = r.dur.map(|d| d.to_string());
        let answered = r.answered.map(|a| if a { "true" } else { "false" });
        let row = std::iter::once(Some(ts.as_str()))
            .chain(strings(r))
            .chain([answered, dur.as_deref()])
            .map(|v| v.unwrap_or(""));
        Ok(self.out.write_record(row)?)
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use anning_fixtures::synth::Kind;

    use super::*;

    #[test]
    fn csv_rows_quote_what_needs_it_and_leave_absent_fields_empty() {
        let mut sink = CsvSink::new(Vec::new()).unwrap();
        let mut sms = GenRecord::sms(5, "m1".into(), "10690001".into(), "138".into(), "【京东】a, \"b\"\nc".into());
        sms.sig = Some("京东".into());
        sink.record(&sms).unwrap();
        let mut call = GenRecord::new(7, Kind::Call);
        call.answered = Some(false);
        call.dur = Some(0);
        sink.record(&call).unwrap();
        sink.finish().unwrap();
        let text = String::from_utf8(sink.out.into_inner().unwrap()).unwrap();
        assert_eq!(
            text,
            "ts,type,id,src,dst,sig,text,cell,imei,ref,status,err,answered,dur\n\
             5,sms,m1,10690001,138,京东,\"【京东】a, \"\"b\"\"\nc\",,,,,,,\n\
             7,call,,,,,,,,,,,false,0\n"
        );
    }
}
