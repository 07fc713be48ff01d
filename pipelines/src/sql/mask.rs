//! Subscriber numbers masked in query results unless an operator asks for raw values.

use std::sync::Arc;

use anning_detector::mask::{mask_addr, mask_key, mask_record_json};
use anning_rules::{Dim, NumberPlan};
use datafusion::arrow::array::{ArrayRef, AsArray, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;

use super::SqlError;

/// Columns that hold subscriber numbers: masked in output unless raw.
const ADDRESS_COLUMNS: [&str; 4] = ["src", "dst", "caller", "subscriber"];

/// Masks subscriber numbers in a result batch: address columns, `key` by its row's `dim`
/// (or as an address when there is no `dim` column), and `record` (JSON) fields.
pub fn mask_batch(b: &RecordBatch, plan: &NumberPlan) -> Result<RecordBatch, SqlError> {
    let schema = b.schema();
    let dims: Option<Vec<Option<String>>> = schema.index_of("dim").ok().and_then(|i| strings(b.column(i)));
    let mut cols = Vec::with_capacity(b.num_columns());
    for (i, f) in schema.fields().iter().enumerate() {
        let c = b.column(i);
        let name = f.name().as_str();
        let values = if ADDRESS_COLUMNS.contains(&name) || name == "key" || name == "record" {
            strings(c)
        } else {
            None
        };
        let Some(values) = values else {
            cols.push(Arc::clone(c));
            continue;
        };
        let masked: StringArray = values
            .iter()
            .enumerate()
            .map(|(row, v)| {
                v.as_deref().map(|s| match name {
                    "key" => match dims.as_ref().and_then(|d| d[row].as_deref()).map(Dim::parse) {
                        Some(Ok(dim)) => mask_key(&dim, s, plan),
                        // Not a dimension the pack knows (e.g. `complained`): mask it as
                        // an address, to be safe.
                        _ => mask_addr(s, plan),
                    },
                    "record" => mask_json(s, plan),
                    _ => mask_addr(s, plan),
                })
            })
            .collect();
        let masked: ArrayRef = Arc::new(masked);
        let masked = if c.data_type() == &DataType::Utf8 {
            masked
        } else {
            datafusion::arrow::compute::cast(&masked, c.data_type())?
        };
        cols.push(masked);
    }
    Ok(RecordBatch::try_new(schema, cols)?)
}

fn strings(c: &ArrayRef) -> Option<Vec<Option<String>>> {
    let own = |v: Option<&str>| v.map(str::to_string);
    match c.data_type() {
        DataType::Utf8 => Some(c.as_string::<i32>().iter().map(own).collect()),
        DataType::LargeUtf8 => Some(c.as_string::<i64>().iter().map(own).collect()),
        DataType::Utf8View => Some(c.as_string_view().iter().map(own).collect()),
        DataType::Dictionary(_, v) if v.as_ref() == &DataType::Utf8 => {
            let s = datafusion::arrow::compute::cast(c, &DataType::Utf8).ok()?;
            Some(s.as_string::<i32>().iter().map(own).collect())
        }
        _ => None,
    }
}

fn mask_json(s: &str, plan: &NumberPlan) -> String {
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(mut v) => {
            mask_record_json(&mut v, plan);
            v.to_string()
        }
        Err(_) => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, Schema};

    #[test]
    fn keys_are_masked_by_their_dim_and_unknown_dims_as_addresses() {
        let plan = anning_rules::default_pack().number_plan;
        let schema = Arc::new(Schema::new(vec![
            Field::new("dim", DataType::Utf8, false),
            Field::new("key", DataType::Utf8View, false),
            Field::new("n", DataType::Utf8, false),
        ]));
        let dims = ["sig", "complained", "src", "sig+dst", "src"];
        let keys = ["京东", "13800138000", "10690001234", "京东+13900139000", "13700000001"];
        let b = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(dims.to_vec())),
                Arc::new(datafusion::arrow::array::StringViewArray::from(keys.to_vec())),
                Arc::new(StringArray::from(vec!["13800138000"; 5])),
            ],
        )
        .unwrap();
        let m = mask_batch(&b, &plan).unwrap();
        assert_eq!(m.column(1).data_type(), &DataType::Utf8View, "types are kept");
        let key = datafusion::arrow::compute::cast(m.column(1), &DataType::Utf8).unwrap();
        let got: Vec<&str> = key.as_string::<i32>().iter().map(Option::unwrap).collect();
        assert_eq!(got, ["京东", "138****8000", "10690001234", "京东+139****9000", "137****0001"]);
        assert_eq!(m.column(2).as_string::<i32>().value(0), "13800138000", "other columns untouched");
    }
}
