//! Parquet, read in batches of rows.

use std::fs::File;
use std::path::Path;

use anning_detector::{Enricher, RecordBuilder};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::file::reader::ChunkReader;

use super::{Flow, Pool, Sink, SourceError, reject};
use crate::decode::assemble;
use crate::decode::parquet::{BatchColumns, ParquetFields};

/// Rows per arrow batch read from Parquet. 8192 made arrays of megabytes that came back
/// zeroed from the kernel each time; 1024 keeps them in the allocator's reach (replay Parquet,
/// 3 alternating pairs: 658/639/699 -> 692/725/752 k/s).
pub(super) const PARQUET_BATCH: usize = 1024;

/// The batches of a Parquet file.
pub(super) fn parquet_file(name: &str, path: &Path) -> Result<ParquetRecordBatchReader, SourceError> {
    let file = File::open(path).map_err(|source| SourceError::Io {
        path: name.to_string(),
        source,
    })?;
    parquet_batches(name, file)
}

/// The batches of Parquet data (a file, or bytes in tests).
pub(super) fn parquet_batches(name: &str, data: impl ChunkReader + 'static) -> Result<ParquetRecordBatchReader, SourceError> {
    ParquetRecordBatchReaderBuilder::try_new(data)
        .and_then(|b| b.with_batch_size(PARQUET_BATCH).build())
        .map_err(|source| SourceError::Parquet {
            path: name.to_string(),
            source,
        })
}

/// [`read_parquet`] with each batch's rows decoded on `pool`'s threads while this one reads
/// (and decompresses) the next batches.
pub(super) fn read_parquet_pooled(
    name: &str,
    reader: ParquetRecordBatchReader,
    pool: Pool<'_>,
    sink: &mut impl Sink,
) -> Result<(), SourceError> {
    let mut flow = Flow::new(pool);
    let mut row_no = 0u64;
    let mut read = Ok(());
    for batch in reader {
        let batch = match batch {
            Ok(b) => b,
            Err(source) => {
                read = Err(SourceError::Arrow {
                    path: name.to_string(),
                    source,
                });
                break;
            }
        };
        let rows = batch.num_rows() as u64;
        if rows == 0 {
            continue;
        }
        let mut chunk = flow.decoders.chunk();
        chunk.set_batch(batch);
        flow.send(chunk, (row_no + 1..=row_no + rows).collect(), name, sink);
        row_no += rows;
        sink.progress(row_no);
    }
    // What was read before the end (or an error) is given, in order, before returning.
    flow.finish(name, sink);
    read
}

pub(super) fn read_parquet(
    name: &str,
    reader: ParquetRecordBatchReader,
    en: Enricher<'_>,
    sink: &mut impl Sink,
) -> Result<(), SourceError> {
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
