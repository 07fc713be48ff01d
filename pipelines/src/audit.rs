//! The audit log: every action and every manual release, kept for appeals and regulators.
//!
//! Layout of an audit directory:
//!
//! ```text
//! DIR/day=2025-11-11/replay-1763900000000-4242-0.parquet   one file per day per flush
//! DIR/packs/0718deb0154d9162.toml                          every pack that acted, by hash
//! ```
//!
//! Days are the UTC day of the action's event time, as Hive-style directories, so
//! `anning query` (DataFusion) sees a `day` column and prunes by it. Files are written to a
//! `.tmp` name and renamed, so a reader never sees half a file. Subscriber numbers are stored
//! as given; everything that shows them (`explain`, `query`, `report`) masks them unless asked
//! for raw values.
//!
//! Retention counts whole days back from the newest day in the log (event time, so a replay
//! of last year's traffic keeps what it wrote): after each flush, day directories older than
//! `retention_days` before the newest are deleted.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anning_detector::Action;
use anning_rules::Pack;
use anning_rules::time::format_rfc3339;
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, StringArray, TimestampMillisecondArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMillisecondType, UInt32Type};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

/// Default retention: 186 days, more than the five months the draft regulation asks
/// consent records to be kept.
pub const DEFAULT_RETENTION_DAYS: u32 = 186;

const DAY_MS: i64 = 86_400_000;

/// One row of the audit log: an action the engine took, or a manual release.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: String,
    /// Event time of the decision (of the release: the stream's event time when it was made).
    pub ts: i64,
    /// `alert`, `throttle`, `suspend` or `release`.
    pub action: String,
    pub dim: String,
    pub key: String,
    pub rule: String,
    pub level: u32,
    pub rate: Option<f64>,
    pub until: Option<i64>,
    pub reason: String,
    /// The action's evidence, as JSON text.
    pub evidence: String,
    /// Hash of the pack that produced it (`packs/HASH.toml` holds the pack).
    pub pack: String,
    pub shadow: bool,
    /// The record that tipped the decision, as JSON, numbers as given.
    pub record: Option<String>,
    /// `replay` or `daemon`.
    pub origin: String,
    /// Who released (manual releases only).
    pub author: Option<String>,
    /// Wall-clock time the row was written.
    pub recorded_at: i64,
}

impl Entry {
    pub fn from_action(a: &Action, origin: &str, author: Option<&str>) -> Entry {
        Entry {
            id: a.id.clone(),
            ts: a.ts,
            action: a.action.name().to_string(),
            dim: a.dim.clone(),
            key: a.key.clone(),
            rule: a.rule.clone(),
            level: a.level,
            rate: a.rate,
            until: a.until,
            reason: a.reason.clone(),
            evidence: a.evidence.to_string(),
            pack: a.pack.clone(),
            shadow: a.shadow,
            record: a.record.clone(),
            origin: origin.to_string(),
            author: author.map(str::to_string),
            recorded_at: now_ms(),
        }
    }
}

/// Wall-clock time, ms since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `YYYY-MM-DD` of an event time (UTC).
pub fn day_of(ts: i64) -> String {
    format_rfc3339(ts.div_euclid(DAY_MS) * DAY_MS)[..10].to_string()
}

/// The audit log's Arrow schema (the file columns; `day` comes from the directory).
pub fn schema() -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("ts", ts(), false),
        Field::new("action", DataType::Utf8, false),
        Field::new("dim", DataType::Utf8, false),
        Field::new("key", DataType::Utf8, false),
        Field::new("rule", DataType::Utf8, false),
        Field::new("level", DataType::UInt32, false),
        Field::new("rate", DataType::Float64, true),
        Field::new("until", ts(), true),
        Field::new("reason", DataType::Utf8, false),
        Field::new("evidence", DataType::Utf8, false),
        Field::new("pack", DataType::Utf8, false),
        Field::new("shadow", DataType::Boolean, false),
        Field::new("record", DataType::Utf8, true),
        Field::new("origin", DataType::Utf8, false),
        Field::new("author", DataType::Utf8, true),
        Field::new("recorded_at", ts(), false),
    ]))
}

/// Rows as one Arrow batch of [`schema`].
pub fn to_batch(rows: &[Entry]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let s = |f: fn(&Entry) -> &str| Arc::new(StringArray::from_iter_values(rows.iter().map(f))) as ArrayRef;
    let o = |f: fn(&Entry) -> Option<&str>| Arc::new(rows.iter().map(f).collect::<StringArray>()) as ArrayRef;
    let t = |v: Vec<Option<i64>>| Arc::new(TimestampMillisecondArray::from(v).with_timezone("UTC")) as ArrayRef;
    let cols: Vec<ArrayRef> = vec![
        s(|e| &e.id),
        t(rows.iter().map(|e| Some(e.ts)).collect()),
        s(|e| &e.action),
        s(|e| &e.dim),
        s(|e| &e.key),
        s(|e| &e.rule),
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|e| e.level))),
        Arc::new(rows.iter().map(|e| e.rate).collect::<Float64Array>()),
        t(rows.iter().map(|e| e.until).collect()),
        s(|e| &e.reason),
        s(|e| &e.evidence),
        s(|e| &e.pack),
        Arc::new(rows.iter().map(|e| Some(e.shadow)).collect::<BooleanArray>()),
        o(|e| e.record.as_deref()),
        s(|e| &e.origin),
        o(|e| e.author.as_deref()),
        t(rows.iter().map(|e| Some(e.recorded_at)).collect()),
    ];
    RecordBatch::try_new(schema(), cols)
}

/// What a flush wrote.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Flushed {
    pub files: Vec<PathBuf>,
    pub rows: u64,
    /// Day directories deleted by retention.
    pub pruned: Vec<PathBuf>,
}

/// Buffers entries and writes them, a file per day per flush.
pub struct Writer {
    dir: PathBuf,
    origin: String,
    retention_days: u32,
    pending: BTreeMap<String, Vec<Entry>>,
    /// Distinguishes this writer's files: origin, wall-clock ms at open, process id.
    stamp: String,
    seq: u64,
    packs: HashSet<String>,
}

fn err_at(path: &Path, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{}: {e}", path.display()))
}

impl Writer {
    /// Opens (creating) an audit directory. `origin` is `replay` or `daemon`.
    pub fn open(dir: &Path, origin: &str, retention_days: u32) -> io::Result<Writer> {
        fs::create_dir_all(dir.join("packs")).map_err(|e| err_at(dir, e))?;
        Ok(Writer {
            dir: dir.to_path_buf(),
            origin: origin.to_string(),
            retention_days: retention_days.max(1),
            pending: BTreeMap::new(),
            stamp: format!("{origin}-{}-{}", now_ms(), std::process::id()),
            seq: 0,
            packs: HashSet::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keeps the pack's source as `packs/HASH.toml` (once per hash), so an action can be
    /// explained with the rule as it was when it fired.
    pub fn archive_pack(&mut self, pack: &Pack) -> io::Result<()> {
        let hash = pack.hash_hex();
        if self.packs.contains(&hash) {
            return Ok(());
        }
        let path = self.dir.join("packs").join(format!("{hash}.toml"));
        if !path.exists() {
            let header = format!("# pack {} ({hash}), archived by anning {}\n", pack.name, self.origin);
            write_atomic(&path, format!("{header}{}", pack.source).as_bytes())?;
        }
        self.packs.insert(hash);
        Ok(())
    }

    pub fn push_action(&mut self, a: &Action) {
        self.push(Entry::from_action(a, &self.origin.clone(), None));
    }

    pub fn push(&mut self, e: Entry) {
        self.pending.entry(day_of(e.ts)).or_default().push(e);
    }

    pub fn pending(&self) -> usize {
        self.pending.values().map(Vec::len).sum()
    }

    /// Writes what is buffered (one file per day), then applies retention. Rows of a day
    /// whose file could not be written stay buffered for the next flush.
    pub fn flush(&mut self) -> io::Result<Flushed> {
        let mut out = Flushed::default();
        while let Some((day, rows)) = self.pending.pop_first() {
            let dir = self.dir.join(format!("day={day}"));
            let path = dir.join(format!("{}-{}.parquet", self.stamp, self.seq));
            self.seq += 1;
            if let Err(e) = write_day(&dir, &path, &rows) {
                self.pending.insert(day, rows);
                return Err(e);
            }
            out.rows += rows.len() as u64;
            out.files.push(path);
        }
        out.pruned = self.prune()?;
        Ok(out)
    }

    /// Deletes day directories more than `retention_days` older than the newest day.
    fn prune(&self) -> io::Result<Vec<PathBuf>> {
        let days = day_dirs(&self.dir)?;
        let Some((newest, _)) = days.last() else {
            return Ok(Vec::new());
        };
        let Ok(newest_ms) = anning_rules::time::parse_rfc3339(&format!("{newest}T00:00:00Z")) else {
            return Ok(Vec::new());
        };
        let oldest_kept = day_of(newest_ms - (self.retention_days as i64 - 1) * DAY_MS);
        let mut pruned = Vec::new();
        for (day, path) in &days {
            if *day < oldest_kept {
                fs::remove_dir_all(path).map_err(|e| err_at(path, e))?;
                pruned.push(path.clone());
            }
        }
        Ok(pruned)
    }
}

/// One day's rows as one Parquet file, written to `.tmp`, synced, then renamed.
fn write_day(dir: &Path, path: &Path, rows: &[Entry]) -> io::Result<()> {
    fs::create_dir_all(dir).map_err(|e| err_at(dir, e))?;
    let b = to_batch(rows).map_err(|e| err_at(path, e))?;
    let tmp = path.with_extension("parquet.tmp");
    let file = File::create(&tmp).map_err(|e| err_at(&tmp, e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut w = ArrowWriter::try_new(file, schema(), Some(props)).map_err(|e| err_at(&tmp, e))?;
    w.write(&b).map_err(|e| err_at(&tmp, e))?;
    w.into_inner()
        .map_err(|e| err_at(&tmp, e))?
        .sync_all()
        .map_err(|e| err_at(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| err_at(path, e))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).map_err(|e| err_at(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| err_at(path, e))
}

/// The `day=YYYY-MM-DD` directories of an audit log, oldest first.
fn day_dirs(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let mut days = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| err_at(dir, e))? {
        let e = e.map_err(|e| err_at(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(day) = name.strip_prefix("day=")
            && day.len() == 10
            && e.path().is_dir()
        {
            days.push((day.to_string(), e.path()));
        }
    }
    days.sort();
    Ok(days)
}

/// Every entry of an audit log, sorted by (ts, id). Files still being written (`.tmp`) are
/// skipped; a file that cannot be read is an error naming it.
pub fn read(dir: &Path) -> io::Result<Vec<Entry>> {
    if !dir.is_dir() {
        return Err(err_at(dir, "no such audit directory"));
    }
    let mut out = Vec::new();
    for (_, day) in day_dirs(dir)? {
        let mut files: Vec<PathBuf> = fs::read_dir(&day)
            .map_err(|e| err_at(&day, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
            .collect();
        files.sort();
        for f in files {
            read_file(&f, &mut out).map_err(|e| err_at(&f, e))?;
        }
    }
    out.sort_by(|a, b| (a.ts, &a.id, a.recorded_at).cmp(&(b.ts, &b.id, b.recorded_at)));
    Ok(out)
}

fn read_file(path: &Path, out: &mut Vec<Entry>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path)?)?.build()?;
    for b in reader {
        let b = b?;
        let col = |name: &str| -> Result<&ArrayRef, String> { b.column_by_name(name).ok_or_else(|| format!("no column {name}")) };
        let s = |name: &str| -> Result<Vec<Option<String>>, String> {
            let c = col(name)?;
            let c = c.as_string_opt::<i32>().ok_or_else(|| format!("column {name} is not text"))?;
            Ok((0..c.len()).map(|i| c.is_valid(i).then(|| c.value(i).to_string())).collect())
        };
        let t = |name: &str| -> Result<Vec<Option<i64>>, String> {
            let c = col(name)?;
            let c = c
                .as_primitive_opt::<TimestampMillisecondType>()
                .ok_or_else(|| format!("column {name} is not a millisecond timestamp"))?;
            Ok((0..c.len()).map(|i| c.is_valid(i).then(|| c.value(i))).collect())
        };
        let (id, ts, action, dim, key, rule) = (s("id")?, t("ts")?, s("action")?, s("dim")?, s("key")?, s("rule")?);
        let level = col("level")?
            .as_primitive_opt::<UInt32Type>()
            .ok_or("column level is not uint32")?
            .clone();
        let rate = col("rate")?
            .as_primitive_opt::<arrow::datatypes::Float64Type>()
            .ok_or("column rate is not float64")?
            .clone();
        let (until, reason, evidence, pack) = (t("until")?, s("reason")?, s("evidence")?, s("pack")?);
        let shadow = col("shadow")?.as_boolean_opt().ok_or("column shadow is not boolean")?.clone();
        let (record, origin, author, recorded_at) = (s("record")?, s("origin")?, s("author")?, t("recorded_at")?);
        let req = |v: &Option<String>| v.clone().unwrap_or_default();
        for i in 0..b.num_rows() {
            out.push(Entry {
                id: req(&id[i]),
                ts: ts[i].unwrap_or(0),
                action: req(&action[i]),
                dim: req(&dim[i]),
                key: req(&key[i]),
                rule: req(&rule[i]),
                level: level.value(i),
                rate: rate.is_valid(i).then(|| rate.value(i)),
                until: until[i],
                reason: req(&reason[i]),
                evidence: req(&evidence[i]),
                pack: req(&pack[i]),
                shadow: shadow.value(i),
                record: record[i].clone(),
                origin: req(&origin[i]),
                author: author[i].clone(),
                recorded_at: recorded_at[i].unwrap_or(0),
            });
        }
    }
    Ok(())
}

/// The archived source of pack `hash`, if the log has it.
pub fn pack_source(dir: &Path, hash: &str) -> Option<String> {
    fs::read_to_string(dir.join("packs").join(format!("{hash}.toml"))).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, ts: i64) -> Entry {
        Entry {
            id: id.into(),
            ts,
            action: "throttle".into(),
            dim: "src".into(),
            key: "13800138000".into(),
            rule: "r".into(),
            level: 1,
            rate: Some(0.5),
            until: Some(ts + 1000),
            reason: "because".into(),
            evidence: "{\"count\":3}".into(),
            pack: "00".into(),
            shadow: false,
            record: Some("{\"ts\":1}".into()),
            origin: "replay".into(),
            author: None,
            recorded_at: 7,
        }
    }

    #[test]
    fn writes_by_day_reads_back_and_prunes_old_days() {
        let dir = std::env::temp_dir().join(format!("anning-audit-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let day0 = 1_762_819_200_000; // 2025-11-11T00:00:00Z
        let mut w = Writer::open(&dir, "replay", 3).unwrap();
        w.push(entry("b", day0 + 5));
        w.push(entry("a", day0 + 1));
        let mut released = entry("c", day0 + DAY_MS);
        released.action = "release".into();
        released.author = Some("noc-7".into());
        released.rate = None;
        released.until = None;
        w.push(released.clone());
        let f = w.flush().unwrap();
        assert_eq!(f.rows, 3);
        assert_eq!(f.files.len(), 2, "{f:?}");
        assert!(f.files[0].to_string_lossy().contains("day=2025-11-11"));
        let back = read(&dir).unwrap();
        assert_eq!(back.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(back[2], released);
        assert_eq!(back[0], entry("a", day0 + 1));

        // Two days later (retention 3 days): 2025-11-11 goes, the 12th and 14th stay.
        w.push(entry("d", day0 + 3 * DAY_MS));
        let f = w.flush().unwrap();
        assert_eq!(f.pruned.len(), 1);
        assert!(f.pruned[0].ends_with("day=2025-11-11"));
        let back = read(&dir).unwrap();
        assert_eq!(back.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["c", "d"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_file_is_named() {
        let dir = std::env::temp_dir().join(format!("anning-audit-bad-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("day=2025-11-11")).unwrap();
        fs::write(dir.join("day=2025-11-11/x.parquet"), b"not parquet").unwrap();
        let e = read(&dir).unwrap_err().to_string();
        assert!(e.contains("day=2025-11-11/x.parquet"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
