//! Parquet via arrow record batches: columns named as the contract names the fields.
//! Strings may be Utf8, LargeUtf8 or Utf8View; `ts` may be an integer (ms), a timestamp of
//! any unit, or a string; numbers any integer or float width; `answered` boolean.

use std::borrow::Cow;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt32Type, UInt64Type,
};
use arrow::record_batch::RecordBatch;

use super::{Bad, FIELD_NAMES, Fields, RejectReason, Val};

/// The contract's columns found in one batch, with their column numbers (1-based).
pub struct BatchColumns {
    cols: Vec<(&'static str, ArrayRef, u64)>,
}

impl BatchColumns {
    pub fn new(batch: &RecordBatch) -> Self {
        let schema = batch.schema();
        let cols = FIELD_NAMES
            .iter()
            .filter_map(|&n| schema.index_of(n).ok().map(|i| (n, batch.column(i).clone(), i as u64 + 1)))
            .collect();
        BatchColumns { cols }
    }
}

/// One row of a batch, ready for [`super::assemble`].
pub struct ParquetFields<'a> {
    pub columns: &'a BatchColumns,
    pub row: usize,
}

fn value<'a>(a: &'a ArrayRef, row: usize) -> Option<Result<Val<'a>, String>> {
    if a.is_null(row) {
        return None;
    }
    Some(Ok(match a.data_type() {
        DataType::Utf8 => Val::Str(Cow::Borrowed(a.as_string::<i32>().value(row))),
        DataType::LargeUtf8 => Val::Str(Cow::Borrowed(a.as_string::<i64>().value(row))),
        DataType::Utf8View => Val::Str(Cow::Borrowed(a.as_string_view().value(row))),
        DataType::Int64 => Val::Int(a.as_primitive::<Int64Type>().value(row)),
        DataType::Int32 => Val::Int(a.as_primitive::<Int32Type>().value(row) as i64),
        DataType::UInt32 => Val::Int(a.as_primitive::<UInt32Type>().value(row) as i64),
        DataType::UInt64 => Val::Int(a.as_primitive::<UInt64Type>().value(row) as i64),
        DataType::Float64 => Val::Float(a.as_primitive::<Float64Type>().value(row)),
        DataType::Float32 => Val::Float(a.as_primitive::<Float32Type>().value(row) as f64),
        DataType::Boolean => Val::Bool(a.as_boolean().value(row)),
        DataType::Timestamp(unit, _) => Val::Int(match unit {
            TimeUnit::Second => a.as_primitive::<TimestampSecondType>().value(row) * 1000,
            TimeUnit::Millisecond => a.as_primitive::<TimestampMillisecondType>().value(row),
            TimeUnit::Microsecond => a.as_primitive::<TimestampMicrosecondType>().value(row) / 1000,
            TimeUnit::Nanosecond => a.as_primitive::<TimestampNanosecondType>().value(row) / 1_000_000,
        }),
        other => return Some(Err(format!("column type {other} is not supported"))),
    }))
}

impl<'a> Fields<'a> for ParquetFields<'a> {
    fn get(&mut self, name: &'static str) -> Result<Option<(Val<'a>, Option<u64>)>, Bad> {
        let Some((_, array, col)) = self.columns.cols.iter().find(|(n, _, _)| *n == name) else {
            return Ok(None);
        };
        match value(array, self.row) {
            None => Ok(None),
            Some(Ok(Val::Str(s))) if s.is_empty() => Ok(None),
            Some(Ok(v)) => Ok(Some((v, Some(*col)))),
            Some(Err(detail)) => Err(Bad {
                reason: RejectReason::BadType,
                field: Some(name),
                col: Some(*col),
                detail: format!("`{name}`: {detail}"),
            }),
        }
    }
}
