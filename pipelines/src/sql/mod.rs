//! SQL over traffic, actions and the audit log (DataFusion), for `anning query` and
//! `anning report`.
//!
//! Tables are registered by path:
//! - a directory with `day=YYYY-MM-DD` folders: an audit log (Parquet, `day` column);
//! - `.parquet`: read in place; an integer `ts` is shown as a timestamp;
//! - `.jsonl`/`.json`/`.ndjson`/`.csv` holding records (a `type` field): decoded by the
//!   same decoder replay uses, so RFC 3339 and integer times, signatures in `【…】` and bad
//!   lines are handled as replay handles them (rejects are counted, never fatal);
//! - other JSON Lines or CSV (e.g. actions written by `anning replay --out`): read as they are.
//!
//! Functions for analysts, the detector's own: `signature(text)` (the `【…】` at the start or
//! end), `addr_class(addr)` (the pack's number plan: subscriber, port, call_centre, other)
//! and `mask(addr)` (`138****8000`; ports and call centres shown whole).
//!
//! Ready views are added when their base tables exist: `top_talkers`, `hourly_counts`,
//! `near_limit` and `hourly_histogram` over `traffic`; `actions_per_rule_hour` over `audit`
//! (or `actions`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anning_detector::mask::mask_addr;
use anning_detector::{Enricher, Registry};
use anning_rules::{NumberPlan, Pack, RuleKind};
use datafusion::arrow::array::{AsArray, StringArray};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{ScalarUDF, Volatility, create_udf};
use datafusion::prelude::*;

use crate::decode::{Reject, RejectReason};
use crate::runtime::Progress;
use crate::source::{self, Input};

mod mask;
pub mod output;
pub mod report;
mod traffic;

pub use mask::mask_batch;
pub use traffic::traffic_schema;
use traffic::{Batches, looks_like_records};

/// What went wrong, naming the table or file.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error("{0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error("{path}: {message}")]
    Table { path: String, message: String },
    #[error("{0}")]
    Source(#[from] source::SourceError),
}

/// How a table was read, for the summary line.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub name: String,
    pub path: String,
    /// `traffic` (decoded records), `audit`, `parquet`, `json`, `csv`.
    pub how: &'static str,
    /// Records decoded (traffic read through the decoder).
    pub records: u64,
    pub rejects: BTreeMap<RejectReason, u64>,
    /// The first few rejects, with file:line:col.
    pub samples: Vec<Reject>,
}

/// A DataFusion session with the project's tables and views.
pub struct Desk {
    pub ctx: SessionContext,
    rt: tokio::runtime::Runtime,
    pub loaded: Vec<Loaded>,
    /// The published limit and near band the views mark (from the pack's first near-limit
    /// rule on sms).
    pub limit: u64,
    pub band_lo: u64,
    plan: NumberPlan,
}

impl Desk {
    pub fn new(pack: &Pack, threads: usize) -> Result<Desk, SqlError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .enable_all()
            .build()
            .map_err(|e| SqlError::Table {
                path: "tokio".into(),
                message: e.to_string(),
            })?;
        let config = SessionConfig::new()
            .with_target_partitions(threads.max(1))
            .with_information_schema(true);
        let (limit, band_lo) = pack
            .rules
            .iter()
            .find_map(|r| match r.kind {
                RuleKind::NearLimit { limit, lo, .. } => Some((limit, lo)),
                _ => None,
            })
            .unwrap_or((200, 180));
        let ctx = SessionContext::new_with_config(config);
        for udf in udfs(&pack.number_plan) {
            ctx.register_udf(udf);
        }
        Ok(Desk {
            ctx,
            rt,
            loaded: Vec::new(),
            limit,
            band_lo,
            plan: pack.number_plan.clone(),
        })
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Registers `path` as table `name` (see the module docs for how each kind is read).
    pub fn register(
        &mut self,
        name: &str,
        path: &Path,
        pack: &Pack,
        registry: &Registry,
        progress: &mut dyn Progress,
    ) -> Result<(), SqlError> {
        let shown = path.display().to_string();
        let bad = |message: String| SqlError::Table {
            path: shown.clone(),
            message,
        };
        if !path.exists() {
            return Err(bad("no such file or directory".into()));
        }
        let mut loaded = Loaded {
            name: name.to_string(),
            path: shown.clone(),
            ..Loaded::default()
        };
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let p = path.to_string_lossy().to_string();
        if path.is_dir() {
            let audit_like = std::fs::read_dir(path)
                .map_err(|e| bad(e.to_string()))?
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().starts_with("day="));
            let mut opts = ParquetReadOptions::default();
            if audit_like {
                opts = opts.table_partition_cols(vec![("day".into(), DataType::Utf8)]);
                loaded.how = "audit";
            } else {
                loaded.how = "parquet";
            }
            self.block_on(self.ctx.register_parquet(name, &p, opts))?;
        } else if ext == "parquet" {
            loaded.how = "parquet";
            let df = self.block_on(self.ctx.read_parquet(&p, ParquetReadOptions::default()))?;
            let df = normalize(df, &self.ctx)?;
            self.ctx.register_table(name, df.into_view())?;
        } else if matches!(ext.as_str(), "jsonl" | "json" | "ndjson" | "csv") {
            let csv = ext == "csv";
            if looks_like_records(path, csv).map_err(|e| bad(e.to_string()))? {
                loaded.how = "traffic";
                let input = Input::parse(&p)?;
                progress.input(&shown, input.byte_len());
                let mut sink = Batches::new(&mut loaded, progress);
                let en = Enricher::new(pack, registry);
                source::read(&input, en, &mut sink)?;
                let batches = sink.finish()?;
                let table = MemTable::try_new(traffic_schema(), vec![batches])?;
                self.ctx.register_table(name, Arc::new(table))?;
            } else if csv {
                loaded.how = "csv";
                self.block_on(self.ctx.register_csv(name, &p, CsvReadOptions::new()))?;
            } else {
                loaded.how = "json";
                let dotted = format!(".{ext}");
                let opts = JsonReadOptions::default().file_extension(&dotted);
                let df = self.block_on(self.ctx.read_json(&p, opts))?;
                let df = normalize(df, &self.ctx)?;
                self.ctx.register_table(name, df.into_view())?;
            }
        } else {
            return Err(bad(format!(
                "cannot tell how to read a .{ext} file (.jsonl, .json, .ndjson, .csv, .parquet or an audit directory)"
            )));
        }
        self.loaded.push(loaded);
        Ok(())
    }

    fn has_table(&self, name: &str) -> bool {
        self.ctx.table_exist(name).unwrap_or(false)
    }

    /// Adds the ready views whose base tables exist; returns their names.
    pub fn add_views(&mut self) -> Result<Vec<String>, SqlError> {
        let mut added = Vec::new();
        let (limit, lo) = (self.limit, self.band_lo);
        let mut views: Vec<(&str, String)> = Vec::new();
        if self.has_table("traffic") {
            views.push((
                "top_talkers",
                "SELECT 'src' AS dim, src AS key, count(*) AS records FROM traffic \
                   WHERE type IN ('sms', 'call') AND src IS NOT NULL GROUP BY src \
                 UNION ALL SELECT 'sig', sig, count(*) FROM traffic \
                   WHERE type = 'sms' AND sig IS NOT NULL GROUP BY sig \
                 UNION ALL SELECT 'dst', dst, count(*) FROM traffic \
                   WHERE type IN ('sms', 'call') AND dst IS NOT NULL GROUP BY dst \
                 UNION ALL SELECT 'complained', src, count(*) FROM traffic \
                   WHERE type = 'complaint' AND src IS NOT NULL GROUP BY src"
                    .into(),
            ));
            views.push((
                "hourly_counts",
                "SELECT src, date_trunc('hour', ts) AS hour, count(*) AS messages FROM traffic \
                 WHERE type = 'sms' AND src_class = 'subscriber' GROUP BY src, date_trunc('hour', ts)"
                    .into(),
            ));
            views.push((
                "near_limit",
                format!(
                    "SELECT src, count(*) AS hours, \
                       sum(CASE WHEN messages >= {lo} AND messages < {limit} THEN 1 ELSE 0 END) AS near_hours, \
                       sum(CASE WHEN messages >= {limit} THEN 1 ELSE 0 END) AS over_hours, \
                       max(messages) AS peak, {limit} AS limit_per_hour \
                     FROM hourly_counts GROUP BY src"
                ),
            ));
            views.push((
                "hourly_histogram",
                format!(
                    "SELECT CAST(messages / 5 AS BIGINT) * 5 AS bucket, count(*) AS sender_hours, \
                       {limit} AS limit_per_hour FROM hourly_counts GROUP BY CAST(messages / 5 AS BIGINT) * 5"
                ),
            ));
        }
        let actions_base = if self.has_table("audit") {
            Some("audit")
        } else if self.has_table("actions") {
            Some("actions")
        } else {
            None
        };
        if let Some(base) = actions_base {
            views.push((
                "actions_per_rule_hour",
                format!(
                    "SELECT rule, date_trunc('hour', ts) AS hour, action, count(*) AS actions FROM {base} \
                     GROUP BY rule, date_trunc('hour', ts), action"
                ),
            ));
        }
        for (name, sql) in views {
            if self.has_table(name) {
                continue;
            }
            let df = self.block_on(self.ctx.sql(&sql))?;
            self.ctx.register_table(name, df.into_view())?;
            added.push(name.to_string());
        }
        Ok(added)
    }

    /// Runs one statement and collects its result, masking subscriber numbers unless `raw`.
    pub fn query(&self, sql: &str, raw: bool) -> Result<Vec<RecordBatch>, SqlError> {
        let df = self.block_on(self.ctx.sql(sql))?;
        let batches = self.block_on(df.collect())?;
        if raw {
            return Ok(batches);
        }
        batches.iter().map(|b| mask_batch(b, &self.plan)).collect()
    }
}

/// A one-argument text function as a UDF: `f` maps each non-null value.
fn text_udf(name: &str, f: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> ScalarUDF {
    let fun = move |args: &[datafusion::logical_expr::ColumnarValue]| {
        let arrays = datafusion::logical_expr::ColumnarValue::values_to_arrays(args)?;
        let a = datafusion::arrow::compute::cast(&arrays[0], &DataType::Utf8)?;
        let out: StringArray = a.as_string::<i32>().iter().map(|v| v.and_then(&f)).collect();
        Ok(datafusion::logical_expr::ColumnarValue::Array(Arc::new(out)))
    };
    create_udf(name, vec![DataType::Utf8], DataType::Utf8, Volatility::Immutable, Arc::new(fun))
}

fn udfs(plan: &NumberPlan) -> Vec<ScalarUDF> {
    let (p1, p2) = (plan.clone(), plan.clone());
    vec![
        text_udf("signature", |t| {
            anning_detector::record::signature_in(t).map(|(start, len)| t[start..start + len].to_string())
        }),
        text_udf("addr_class", move |a| Some(p1.classify(a).name().to_string())),
        text_udf("mask", move |a| Some(mask_addr(a, &p2))),
    ]
}

/// Makes a table read like decoded traffic: an integer `ts` (ms) becomes a timestamp, and a
/// table of records with `src` but no `src_class` gets one from the pack's number plan.
fn normalize(df: DataFrame, ctx: &SessionContext) -> Result<DataFrame, SqlError> {
    let schema = df.schema().clone();
    let int_ts = schema.field_with_unqualified_name("ts").is_ok_and(|f| f.data_type().is_integer());
    let has = |n: &str| schema.field_with_unqualified_name(n).is_ok();
    let add_class = has("src") && has("type") && !has("src_class");
    let derive_sig = has("sig") && has("text") && has("type");
    if !int_ts && !add_class && !derive_sig {
        return Ok(df);
    }
    // The session's own functions (registered in `Desk::new`).
    let (signature, addr_class) = (ctx.udf("signature")?, ctx.udf("addr_class")?);
    let mut cols: Vec<Expr> = schema
        .fields()
        .iter()
        .map(|f| {
            if f.name() == "ts" && int_ts {
                cast(col("ts"), DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))).alias("ts")
            } else if f.name() == "sig" && derive_sig {
                // As the decoder does: the signature field, else the text's 【…】.
                coalesce(vec![cast(ident("sig"), DataType::Utf8), signature.call(vec![ident("text")])]).alias("sig")
            } else {
                ident(f.name())
            }
        })
        .collect();
    if add_class {
        let class = addr_class.call(vec![ident("src")]);
        cols.push(coalesce(vec![class, lit("other")]).alias("src_class"));
    }
    Ok(df.select(cols)?)
}

/// `NAME=PATH` of `--table`.
pub fn parse_table(arg: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = arg
        .split_once('=')
        .ok_or_else(|| format!("{arg:?}: expected NAME=PATH, e.g. traffic=day.jsonl"))?;
    let ok =
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !name.starts_with(|c: char| c.is_ascii_digit());
    if !ok {
        return Err(format!(
            "{name:?}: a table name is letters, digits and _, not starting with a digit"
        ));
    }
    Ok((name.to_string(), PathBuf::from(path)))
}

/// Registers actions (from an in-process replay) as table `name`, with the audit log's
/// columns.
pub fn register_actions(desk: &Desk, name: &str, actions: &[anning_detector::Action]) -> Result<(), SqlError> {
    let rows: Vec<crate::audit::Entry> = actions
        .iter()
        .map(|a| crate::audit::Entry::from_action(a, "replay", None))
        .collect();
    let batch = crate::audit::to_batch(&rows)?;
    let table = MemTable::try_new(crate::audit::schema(), vec![vec![batch]])?;
    desk.ctx.register_table(name, Arc::new(table))?;
    Ok(())
}

/// Registers `view` as the rows of `table` that were enforced or told: shadow rules'
/// would-be actions left out (when the table says which they are).
pub fn taken_only(desk: &Desk, table: &str, view: &str) -> Result<(), SqlError> {
    let df = desk.block_on(desk.ctx.table(table))?;
    let df = if df.schema().field_with_unqualified_name("shadow").is_ok() {
        df.filter(col("shadow").is_not_true())?
    } else {
        df
    };
    desk.ctx.register_table(view, df.into_view())?;
    Ok(())
}
