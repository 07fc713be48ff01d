//! Parquet via arrow record batches: columns named as the contract names the fields.
//! Strings may be Utf8, LargeUtf8 or Utf8View; `ts` may be an integer (ms), a timestamp of
//! any unit, or a string; numbers any integer or float width; `answered` boolean.
//!
//! A batch's columns are looked up and downcast once ([`BatchColumns::typed`]); a row's field
//! is then an index and a typed read, not a search by name and a downcast per value.

use std::borrow::Cow;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, GenericStringArray, PrimitiveArray, StringViewArray};
use arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt32Type, UInt64Type,
};
use arrow::record_batch::RecordBatch;

use super::{Bad, FIELD_NAMES, Fields, RejectReason, Val};

/// The contract's columns found in one batch, with their column numbers (1-based).
pub struct BatchColumns {
    cols: Vec<(usize, ArrayRef, u64)>,
}

impl BatchColumns {
    pub fn new(batch: &RecordBatch) -> Self {
        let schema = batch.schema();
        let cols = FIELD_NAMES
            .iter()
            .enumerate()
            .filter_map(|(f, &n)| schema.index_of(n).ok().map(|i| (f, batch.column(i).clone(), i as u64 + 1)))
            .collect();
        BatchColumns { cols }
    }

    /// Each field's column, downcast to its type, at the field's place in [`FIELD_NAMES`].
    pub fn typed(&self) -> Typed<'_> {
        let mut by_field: [Option<(Column<'_>, u64)>; FIELD_NAMES.len()] = Default::default();
        for (f, array, col) in &self.cols {
            by_field[*f] = Some((Column::of(array), *col));
        }
        Typed { by_field }
    }
}

/// A batch's columns by field, typed ([`BatchColumns::typed`]).
pub struct Typed<'a> {
    by_field: [Option<(Column<'a>, u64)>; FIELD_NAMES.len()],
}

/// A column downcast once for the batch.
enum Column<'a> {
    Utf8(&'a GenericStringArray<i32>),
    LargeUtf8(&'a GenericStringArray<i64>),
    Utf8View(&'a StringViewArray),
    Int64(&'a PrimitiveArray<Int64Type>),
    Int32(&'a PrimitiveArray<Int32Type>),
    UInt32(&'a PrimitiveArray<UInt32Type>),
    UInt64(&'a PrimitiveArray<UInt64Type>),
    Float64(&'a PrimitiveArray<Float64Type>),
    Float32(&'a PrimitiveArray<Float32Type>),
    Boolean(&'a BooleanArray),
    Seconds(&'a PrimitiveArray<TimestampSecondType>),
    Millis(&'a PrimitiveArray<TimestampMillisecondType>),
    Micros(&'a PrimitiveArray<TimestampMicrosecondType>),
    Nanos(&'a PrimitiveArray<TimestampNanosecondType>),
    /// Any other type: a row with a value there is rejected (`bad_type`).
    Unsupported(&'a dyn Array),
}

impl<'a> Column<'a> {
    fn of(a: &'a ArrayRef) -> Column<'a> {
        match a.data_type() {
            DataType::Utf8 => Column::Utf8(a.as_string::<i32>()),
            DataType::LargeUtf8 => Column::LargeUtf8(a.as_string::<i64>()),
            DataType::Utf8View => Column::Utf8View(a.as_string_view()),
            DataType::Int64 => Column::Int64(a.as_primitive()),
            DataType::Int32 => Column::Int32(a.as_primitive()),
            DataType::UInt32 => Column::UInt32(a.as_primitive()),
            DataType::UInt64 => Column::UInt64(a.as_primitive()),
            DataType::Float64 => Column::Float64(a.as_primitive()),
            DataType::Float32 => Column::Float32(a.as_primitive()),
            DataType::Boolean => Column::Boolean(a.as_boolean()),
            DataType::Timestamp(TimeUnit::Second, _) => Column::Seconds(a.as_primitive()),
            DataType::Timestamp(TimeUnit::Millisecond, _) => Column::Millis(a.as_primitive()),
            DataType::Timestamp(TimeUnit::Microsecond, _) => Column::Micros(a.as_primitive()),
            DataType::Timestamp(TimeUnit::Nanosecond, _) => Column::Nanos(a.as_primitive()),
            _ => Column::Unsupported(a.as_ref()),
        }
    }

    fn value(&self, row: usize) -> Option<Result<Val<'a>, String>> {
        fn at<'x, A: Array, T>(a: &'x A, row: usize, get: impl FnOnce(&'x A) -> T) -> Option<T> {
            (!a.is_null(row)).then(|| get(a))
        }
        Some(Ok(match self {
            Column::Utf8(a) => Val::Str(Cow::Borrowed(at(*a, row, |a| a.value(row))?)),
            Column::LargeUtf8(a) => Val::Str(Cow::Borrowed(at(*a, row, |a| a.value(row))?)),
            Column::Utf8View(a) => Val::Str(Cow::Borrowed(at(*a, row, |a| a.value(row))?)),
            Column::Int64(a) => Val::Int(at(*a, row, |a| a.value(row))?),
            Column::Int32(a) => Val::Int(at(*a, row, |a| a.value(row))? as i64),
            Column::UInt32(a) => Val::Int(at(*a, row, |a| a.value(row))? as i64),
            Column::UInt64(a) => Val::Int(at(*a, row, |a| a.value(row))? as i64),
            Column::Float64(a) => Val::Float(at(*a, row, |a| a.value(row))?),
            Column::Float32(a) => Val::Float(at(*a, row, |a| a.value(row))? as f64),
            Column::Boolean(a) => Val::Bool(at(*a, row, |a| a.value(row))?),
            Column::Seconds(a) => Val::Int(at(*a, row, |a| a.value(row))? * 1000),
            Column::Millis(a) => Val::Int(at(*a, row, |a| a.value(row))?),
            Column::Micros(a) => Val::Int(at(*a, row, |a| a.value(row))? / 1000),
            Column::Nanos(a) => Val::Int(at(*a, row, |a| a.value(row))? / 1_000_000),
            Column::Unsupported(a) => {
                if a.is_null(row) {
                    return None;
                }
                return Some(Err(format!("column type {} is not supported", a.data_type())));
            }
        }))
    }
}

/// One row of a batch, ready for [`super::assemble`].
pub struct ParquetFields<'a> {
    pub columns: &'a Typed<'a>,
    pub row: usize,
}

impl<'a> Fields<'a> for ParquetFields<'a> {
    fn get(&mut self, field: usize) -> Result<Option<(Val<'a>, Option<u64>)>, Bad> {
        let Some((column, col)) = self.columns.by_field.get(field).and_then(Option::as_ref) else {
            return Ok(None);
        };
        let name = FIELD_NAMES[field];
        match column.value(self.row) {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        BinaryArray, Float32Array, Int32Array, LargeStringArray, StringArray, TimestampMicrosecondArray, TimestampSecondArray, UInt64Array,
    };
    use arrow::datatypes::{Field, Schema};

    use super::*;
    use crate::decode::field_index;

    /// Each row's value of `name` as text (`-` for none, `!reason` for a reject).
    fn column(batch: &RecordBatch, name: &'static str) -> Vec<String> {
        let columns = BatchColumns::new(batch);
        let typed = columns.typed();
        let Some(field) = field_index(name) else {
            return vec!["-".into(); batch.num_rows()];
        };
        (0..batch.num_rows())
            .map(|row| match (ParquetFields { columns: &typed, row }).get(field) {
                Ok(None) => "-".into(),
                Ok(Some((v, col))) => {
                    let v = match v {
                        Val::Str(s) => format!("s:{s}"),
                        Val::Int(i) => format!("i:{i}"),
                        Val::Float(x) => format!("f:{x}"),
                        Val::Bool(b) => format!("b:{b}"),
                    };
                    format!("{v}@{}", col.expect("a column"))
                }
                Err(bad) => format!("!{}: {}", bad.reason.name(), bad.detail),
            })
            .collect()
    }

    #[test]
    fn every_supported_type_reads_by_field_and_others_are_rejected() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("unrelated", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("src", DataType::LargeUtf8, true),
            Field::new("dst", DataType::Utf8View, true),
            Field::new("text", DataType::Utf8, true),
            Field::new("dur", DataType::Float32, true),
            Field::new("status", DataType::Int32, true),
            Field::new("err", DataType::UInt64, true),
            Field::new("sig", DataType::Binary, true),
            Field::new("id", DataType::Timestamp(TimeUnit::Second, None), true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("x"), Some("y")])),
                Arc::new(TimestampMicrosecondArray::from(vec![Some(1_794_268_800_123_456), None])),
                Arc::new(LargeStringArray::from(vec![Some("13800138000"), Some("")])),
                Arc::new(StringViewArray::from(vec![None, Some("10690001")])),
                Arc::new(StringArray::from(vec![Some("【店】双11"), None])),
                Arc::new(Float32Array::from(vec![Some(1.5), None])),
                Arc::new(Int32Array::from(vec![None, Some(-7)])),
                Arc::new(UInt64Array::from(vec![Some(42), None])),
                Arc::new(BinaryArray::from(vec![Some(&b"ab"[..]), None])),
                Arc::new(TimestampSecondArray::from(vec![Some(1_794_268_800), None])),
            ],
        )
        .expect("a batch");
        assert_eq!(column(&batch, "ts"), ["i:1794268800123@2", "-"]);
        // An empty string is no value, as in every format.
        assert_eq!(column(&batch, "src"), ["s:13800138000@3", "-"]);
        assert_eq!(column(&batch, "dst"), ["-", "s:10690001@4"]);
        assert_eq!(column(&batch, "text"), ["s:【店】双11@5", "-"]);
        assert_eq!(column(&batch, "dur"), ["f:1.5@6", "-"]);
        assert_eq!(column(&batch, "status"), ["-", "i:-7@7"]);
        assert_eq!(column(&batch, "err"), ["i:42@8", "-"]);
        assert_eq!(
            column(&batch, "sig"),
            ["!bad_type: `sig`: column type Binary is not supported", "-"]
        );
        assert_eq!(column(&batch, "id"), ["i:1794268800000@10", "-"]);
        // Fields without a column, and names outside the contract.
        assert_eq!(column(&batch, "type"), ["-", "-"]);
        assert_eq!(column(&batch, "unrelated"), ["-", "-"]);
    }

    #[test]
    fn field_index_is_the_place_in_field_names() {
        for (i, name) in FIELD_NAMES.iter().enumerate() {
            assert_eq!(field_index(name), Some(i), "{name}");
        }
        assert_eq!(field_index("kind"), None);
    }
}
