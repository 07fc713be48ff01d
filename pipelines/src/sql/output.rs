//! Query results as an aligned table, CSV or JSON Lines.

use std::io::Write;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutFormat {
    /// Aligned columns, for a terminal.
    Table,
    Csv,
    /// One JSON object a row.
    Jsonl,
}

pub fn write(batches: &[RecordBatch], format: OutFormat, out: &mut dyn Write) -> Result<(), super::SqlError> {
    match format {
        OutFormat::Table => {
            let t = datafusion::arrow::util::pretty::pretty_format_batches(batches)?;
            writeln!(out, "{t}").map_err(io)?;
        }
        OutFormat::Csv => {
            let mut w = datafusion::arrow::csv::WriterBuilder::new().with_header(true).build(&mut *out);
            for b in batches {
                w.write(b)?;
            }
        }
        OutFormat::Jsonl => {
            let mut w = datafusion::arrow::json::LineDelimitedWriter::new(&mut *out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
    }
    out.flush().map_err(io)
}

fn io(e: std::io::Error) -> super::SqlError {
    super::SqlError::Arrow(e.into())
}

/// Every cell as text, row by row (for reports and tests).
pub fn rows(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, super::SqlError> {
    let opts = FormatOptions::default().with_null("");
    let mut out = Vec::new();
    for b in batches {
        let fmts = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..b.num_rows() {
            out.push(fmts.iter().map(|f| f.value(row).to_string()).collect());
        }
    }
    Ok(out)
}
