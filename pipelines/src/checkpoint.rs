//! Checkpoints: the daemon's state, bound to the input offsets it covers.
//!
//! A snapshot holds every shard's keyed state ([`anning_detector::engine::ShardState`]), the
//! input-order joins, the watermark, and the next offset of every input partition whose
//! records it contains. On start the daemon restores the newest snapshot that reads back
//! whole, seeks each partition to its offset and replays the tail; actions of the tail that
//! were acknowledged before are recognised by their committed offsets and not produced again.
//!
//! # Files
//! `DIR/snapshot-SEQ.anning`, SEQ increasing. Written to `DIR/.snapshot-SEQ.tmp`, synced,
//! renamed, and the directory synced, so a crash leaves either the old set or the new one.
//! The newest `keep` are kept; a snapshot that does not read back (corrupt, truncated, another
//! format version, another topic or group) is reported by name and the previous one is tried.
//!
//! # Format (version 2: sparse window bins; version 1 files are reported as another format)
//! ```text
//! 0..8    magic "ANNSNAP\n"
//! 8..12   format version, u32 little-endian
//! 12..20  payload length, u64 LE
//! 20..28  xxh3-64 of the payload, u64 LE
//! 28..    payload: u32 LE length, postcard(Meta);
//!                  u32 LE count of parts, then per part u64 LE length, postcard(ShardState)
//! ```

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anning_detector::Joiner;
use anning_detector::engine::ShardState;
use anning_detector::watermark::PartitionedState;
use serde::{Deserialize, Serialize};

pub const MAGIC: &[u8; 8] = b"ANNSNAP\n";
/// The format this build writes and reads.
pub const FORMAT: u32 = 2;
const HEADER: usize = 28;

/// What a snapshot says besides the keyed state. `J` is the joins: borrowed to write, owned
/// when read.
#[derive(Debug, Serialize, Deserialize)]
pub struct Meta<J> {
    /// Wall-clock time the snapshot was taken (ms), for operators; not used to decide.
    pub created_ms: i64,
    pub group: String,
    pub topic: String,
    /// Hash of the pack the state was built under (hex).
    pub pack: String,
    /// Next offset per input partition: the state holds exactly the records below.
    pub offsets: BTreeMap<i32, i64>,
    pub watermark: PartitionedState,
    pub joiner: J,
    /// Keys in the parts (for metrics and reports).
    pub keys: u64,
    /// Scale-out tasks of a dimension: per upstream input partition, the last offset of its
    /// records processed here, the progress it announced, and whether it said it was idle
    /// (see `daemon::group`).
    pub merge: BTreeMap<i32, (i64, i64, bool)>,
}

/// A snapshot read back whole.
#[derive(Debug)]
pub struct Snapshot {
    pub path: PathBuf,
    pub meta: Meta<Joiner>,
    /// One per shard that wrote it (any number; see `ShardState::split`).
    pub parts: Vec<ShardState>,
    /// File size.
    pub bytes: u64,
}

/// Why a snapshot cannot be used. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: cannot read: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path}: not an anning snapshot (bad magic bytes)")]
    NotASnapshot { path: String },
    #[error("{path}: snapshot format {found}, this build reads format {FORMAT}")]
    Version { path: String, found: u32 },
    #[error("{path}: truncated: {have} bytes of payload, the header says {want}")]
    Truncated { path: String, have: u64, want: u64 },
    #[error("{path}: corrupt: checksum mismatch (stored {stored:016x}, computed {computed:016x})")]
    Checksum { path: String, stored: u64, computed: u64 },
    #[error("{path}: corrupt: cannot decode {what}: {detail}")]
    Decode { path: String, what: String, detail: String },
    #[error("{path}: not for this daemon: {why}")]
    Incompatible { path: String, why: String },
}

/// Serializes one shard's state (in its own thread) for [`Store::save`].
pub fn encode_part(state: &impl Serialize) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(state)
}

/// Writes a snapshot file atomically; returns its size.
pub fn write(path: &Path, meta: &Meta<&Joiner>, parts: &[Vec<u8>]) -> io::Result<u64> {
    let meta = postcard::to_stdvec(meta).map_err(io::Error::other)?;
    let mut payload = Vec::with_capacity(meta.len() + 8 + parts.iter().map(|p| p.len() + 8).sum::<usize>());
    payload.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    payload.extend_from_slice(&meta);
    payload.extend_from_slice(&(parts.len() as u32).to_le_bytes());
    for p in parts {
        payload.extend_from_slice(&(p.len() as u64).to_le_bytes());
        payload.extend_from_slice(p);
    }
    let mut header = Vec::with_capacity(HEADER);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&FORMAT.to_le_bytes());
    header.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    header.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&payload).to_le_bytes());
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("snapshot");
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&header)?;
        f.write_all(&payload)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()?;
    Ok((HEADER + payload.len()) as u64)
}

/// Reads and checks a snapshot file.
pub fn read(path: &Path) -> Result<Snapshot, SnapshotError> {
    let shown = path.display().to_string();
    let bytes = fs::read(path).map_err(|source| SnapshotError::Io {
        path: shown.clone(),
        source,
    })?;
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err(SnapshotError::NotASnapshot { path: shown });
    }
    let found = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if found != FORMAT {
        return Err(SnapshotError::Version { path: shown, found });
    }
    if bytes.len() < HEADER {
        return Err(SnapshotError::Truncated {
            path: shown,
            have: 0,
            want: HEADER as u64,
        });
    }
    let want = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let stored = u64::from_le_bytes(bytes[20..28].try_into().expect("8 bytes"));
    let payload = &bytes[HEADER..];
    if payload.len() as u64 != want {
        return Err(SnapshotError::Truncated {
            path: shown,
            have: payload.len() as u64,
            want,
        });
    }
    let computed = xxhash_rust::xxh3::xxh3_64(payload);
    if computed != stored {
        return Err(SnapshotError::Checksum {
            path: shown,
            stored,
            computed,
        });
    }
    let decode = |what: &str, detail: String| SnapshotError::Decode {
        path: shown.clone(),
        what: what.to_string(),
        detail,
    };
    let mut at = 0usize;
    let mut take = |n: usize, what: &str| -> Result<&[u8], SnapshotError> {
        let s = payload
            .get(at..at + n)
            .ok_or_else(|| decode(what, format!("{n} bytes wanted at byte {}", HEADER + at)))?;
        at += n;
        Ok(s)
    };
    let len = u32::from_le_bytes(take(4, "the metadata length")?.try_into().expect("4 bytes")) as usize;
    let meta: Meta<Joiner> = postcard::from_bytes(take(len, "the metadata")?).map_err(|e| decode("the metadata", e.to_string()))?;
    let count = u32::from_le_bytes(take(4, "the part count")?.try_into().expect("4 bytes"));
    let mut parts = Vec::with_capacity(count as usize);
    for i in 0..count {
        let what = format!("shard part {i}");
        let len = u64::from_le_bytes(take(8, &what)?.try_into().expect("8 bytes")) as usize;
        let part: ShardState = postcard::from_bytes(take(len, &what)?).map_err(|e| decode(&what, e.to_string()))?;
        parts.push(part);
    }
    Ok(Snapshot {
        path: path.to_path_buf(),
        meta,
        parts,
        bytes: bytes.len() as u64,
    })
}

/// A directory of snapshots.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    keep: usize,
    next: u64,
}

/// What [`Store::load`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The newest usable snapshot.
    pub snapshot: Option<Snapshot>,
    /// Newer snapshots that could not be used, newest first.
    pub failures: Vec<SnapshotError>,
}

impl Store {
    /// Opens (creating) `dir`, keeping the newest `keep` snapshots (at least 2, so a corrupt
    /// newest one has a predecessor). Leftover temporary files are removed.
    pub fn open(dir: &Path, keep: usize) -> io::Result<Store> {
        fs::create_dir_all(dir)?;
        for e in fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".snapshot-") && name.ends_with(".tmp") {
                let _ = fs::remove_file(e.path());
            }
        }
        let mut s = Store {
            dir: dir.to_path_buf(),
            keep: keep.max(2),
            next: 0,
        };
        s.next = s.list()?.first().map_or(1, |(seq, _)| seq + 1);
        Ok(s)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Snapshot files, newest first.
    pub fn list(&self) -> io::Result<Vec<(u64, PathBuf)>> {
        let mut v = Vec::new();
        for e in fs::read_dir(&self.dir)? {
            let e = e?;
            let name = e.file_name();
            let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_prefix("snapshot-"))
                .and_then(|n| n.strip_suffix(".anning"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            v.push((seq, e.path()));
        }
        v.sort_by_key(|b| std::cmp::Reverse(b.0));
        Ok(v)
    }

    /// The newest snapshot that reads back whole and that `accept` takes (it says why not);
    /// every one tried before is in `failures`.
    pub fn load(&self, accept: impl Fn(&Meta<Joiner>) -> Result<(), String>) -> io::Result<Loaded> {
        let mut out = Loaded::default();
        for (_, path) in self.list()? {
            match read(&path) {
                Ok(s) => match accept(&s.meta) {
                    Ok(()) => {
                        out.snapshot = Some(s);
                        break;
                    }
                    Err(why) => out.failures.push(SnapshotError::Incompatible {
                        path: path.display().to_string(),
                        why,
                    }),
                },
                Err(e) => out.failures.push(e),
            }
        }
        Ok(out)
    }

    /// Writes the next snapshot and removes those beyond the newest `keep`.
    pub fn save(&mut self, meta: &Meta<&Joiner>, parts: &[Vec<u8>]) -> io::Result<(PathBuf, u64)> {
        let path = self.dir.join(format!("snapshot-{:012}.anning", self.next));
        let bytes = write(&path, meta, parts)?;
        self.next += 1;
        for (_, old) in self.list()?.into_iter().skip(self.keep) {
            let _ = fs::remove_file(old);
        }
        Ok((path, bytes))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use anning_detector::watermark::Partitioned;
    use anning_detector::{Action, Engine, Enricher, Record, Registry, Verdict};
    use anning_fixtures::synth::{Difficulty, JsonlSink, Knobs, Plan};
    use anning_rules::{Pack, default_pack};

    use super::*;
    use crate::decode::Reject;
    use crate::source::{Sink, read_jsonl};

    struct Collect(Vec<Record>);
    impl Sink for Collect {
        fn record(&mut self, r: Record, _line: u64) {
            self.0.push(r);
        }
        fn reject(&mut self, _r: Reject) {}
    }

    /// Every abuse pattern (all rule kinds), with its registry.
    fn traffic(pack: &Pack) -> (Vec<Record>, Registry) {
        let plan = Plan::new("abuse", Knobs::new(11, Difficulty::Hard)).unwrap();
        let mut buf = Vec::new();
        plan.write(&mut JsonlSink::new(&mut buf)).unwrap();
        let mut reg = Vec::new();
        plan.write_registry(&mut reg).unwrap();
        let registry = Registry::parse(std::str::from_utf8(&reg).unwrap()).unwrap();
        let mut c = Collect(Vec::new());
        read_jsonl("gen", &buf[..], Enricher::new(pack, &registry), &mut c).unwrap();
        (c.0, registry)
    }

    /// The daemon's path for one partition: joins, watermark, every shard.
    struct Run {
        joiner: Joiner,
        wm: Partitioned,
        engines: Vec<Engine>,
        actions: Vec<Action>,
    }

    impl Run {
        fn new(pack: &Arc<Pack>, shards: usize) -> Run {
            Run {
                joiner: Joiner::new(pack),
                wm: Partitioned::new(pack.lateness_ms, pack.late_policy),
                engines: (0..shards).map(|s| Engine::new(Arc::clone(pack), s, shards)).collect(),
                actions: Vec::new(),
            }
        }

        fn push(&mut self, r: &Record, en: Enricher<'_>) {
            let mut r = self.joiner.apply(r.clone(), en);
            if let Verdict::Process { ts, wm } = self.wm.observe(0, r.ts) {
                r.ts = ts;
                let mut out = Vec::new();
                for e in &mut self.engines {
                    e.process(&r, wm, &mut out);
                }
                out.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
                self.actions.extend(out);
            }
        }

        fn save(&self, store: &mut Store, offset: i64) -> PathBuf {
            let parts: Vec<Vec<u8>> = self.engines.iter().map(|e| encode_part(&e.snapshot()).unwrap()).collect();
            let meta = Meta {
                created_ms: 0,
                group: "g".into(),
                topic: "t".into(),
                pack: String::new(),
                offsets: BTreeMap::from([(0, offset)]),
                watermark: self.wm.state(),
                joiner: &self.joiner,
                keys: self.engines.iter().map(|e| e.stats().keys).sum(),
                merge: BTreeMap::new(),
            };
            store.save(&meta, &parts).unwrap().0
        }

        fn restore(s: Snapshot, pack: &Arc<Pack>, shards: usize) -> Run {
            let mut run = Run::new(pack, shards);
            run.joiner = s.meta.joiner.with_pack(pack);
            run.wm.restore(s.meta.watermark);
            for (e, part) in run.engines.iter_mut().zip(ShardState::split(s.parts, shards)) {
                let r = e.restore(part);
                assert_eq!(r.dropped + r.foreign, 0);
            }
            run
        }
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("anning-ckpt-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_run_restored_from_a_snapshot_at_any_point_acts_as_one_that_never_stopped() {
        let pack = Arc::new(default_pack());
        let (records, registry) = traffic(&pack);
        let en = Enricher::new(&pack, &registry);
        let mut whole = Run::new(&pack, 1);
        for r in &records {
            whole.push(r, en);
        }
        assert!(whole.actions.len() > 20, "the traffic acts: {}", whole.actions.len());
        let dir = tmpdir("equal");
        // Cut at several points, with other shard counts before and after.
        for (cut, before, after) in [(records.len() / 3, 3, 2), (records.len() / 2, 2, 1), (records.len() * 9 / 10, 1, 4)] {
            let mut store = Store::open(&dir, 2).unwrap();
            let mut first = Run::new(&pack, before);
            for r in &records[..cut] {
                first.push(r, en);
            }
            let path = first.save(&mut store, cut as i64);
            let loaded = store.load(|_| Ok(())).unwrap();
            assert!(loaded.failures.is_empty());
            let s = loaded.snapshot.unwrap();
            assert_eq!(s.path, path);
            assert_eq!(s.meta.offsets[&0], cut as i64);
            let mut second = Run::restore(s, &pack, after);
            for r in &records[cut..] {
                second.push(r, en);
            }
            let mut got = first.actions;
            got.extend(second.actions);
            let first_diff = got.iter().zip(&whole.actions).position(|(a, b)| a != b);
            assert!(
                first_diff.is_none() && got.len() == whole.actions.len(),
                "cut at {cut}, {before} → {after} shards: {} actions, want {}; first difference at {first_diff:?}",
                got.len(),
                whole.actions.len()
            );
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_corrupt_newest_snapshot_is_named_and_the_previous_one_is_used() {
        let pack = Arc::new(default_pack());
        let (records, registry) = traffic(&pack);
        let en = Enricher::new(&pack, &registry);
        let records = &records[..5_000];
        let dir = tmpdir("corrupt");
        let mut store = Store::open(&dir, 3).unwrap();
        let mut run = Run::new(&pack, 2);
        let mut paths = Vec::new();
        for (i, chunk) in records.chunks(1_000).enumerate() {
            for r in chunk {
                run.push(r, en);
            }
            paths.push(run.save(&mut store, (i as i64 + 1) * 1000));
        }
        // Only the newest three are kept.
        assert_eq!(store.list().unwrap().len(), 3);
        let newest = paths.last().unwrap().clone();
        let prev = paths[paths.len() - 2].clone();
        let good = fs::read(&newest).unwrap();

        // One flipped byte in the payload.
        let mut bad = good.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x40;
        fs::write(&newest, &bad).unwrap();
        let l = store.load(|_| Ok(())).unwrap();
        assert_eq!(l.failures.len(), 1);
        let msg = l.failures[0].to_string();
        assert!(msg.contains(&newest.display().to_string()) && msg.contains("checksum"), "{msg}");
        assert_eq!(l.snapshot.as_ref().unwrap().path, prev);
        assert_eq!(l.snapshot.unwrap().meta.offsets[&0], 4000);

        // Cut short.
        fs::write(&newest, &good[..good.len() - 10]).unwrap();
        let msg = store.load(|_| Ok(())).unwrap().failures[0].to_string();
        assert!(msg.contains("truncated"), "{msg}");
        // Another format version.
        let mut other = good.clone();
        other[8..12].copy_from_slice(&(FORMAT + 1).to_le_bytes());
        fs::write(&newest, &other).unwrap();
        let msg = store.load(|_| Ok(())).unwrap().failures[0].to_string();
        assert!(
            msg.contains(&format!("format {}, this build reads format {FORMAT}", FORMAT + 1)),
            "{msg}"
        );
        // Not a snapshot at all.
        fs::write(&newest, b"hello").unwrap();
        let msg = store.load(|_| Ok(())).unwrap().failures[0].to_string();
        assert!(msg.contains("not an anning snapshot"), "{msg}");
        // A sound file whose checksum was recomputed over a broken part.
        let mut forged = good.clone();
        let n = forged.len();
        forged[n - 3] ^= 0xff;
        let sum = xxhash_rust::xxh3::xxh3_64(&forged[HEADER..]);
        forged[20..28].copy_from_slice(&sum.to_le_bytes());
        fs::write(&newest, &forged).unwrap();
        let l = store.load(|_| Ok(())).unwrap();
        if let Some(SnapshotError::Decode { what, .. }) = l.failures.first() {
            assert!(what.starts_with("shard part"), "{what}");
        } else {
            // Some byte flips still decode (a count, a bin): then the snapshot is taken.
            assert!(l.failures.is_empty());
        }
        // Another topic: refused by the caller's check, named, and the previous one tried.
        fs::write(&newest, &good).unwrap();
        let l = store
            .load(|m| {
                if m.offsets[&0] == 5000 {
                    Err("taken for topic other".into())
                } else {
                    Ok(())
                }
            })
            .unwrap();
        assert!(l.failures[0].to_string().contains("not for this daemon: taken for topic other"));
        assert_eq!(l.snapshot.unwrap().path, prev);
        // All unusable: nothing, and every file named.
        for (_, p) in store.list().unwrap() {
            fs::write(&p, b"x").unwrap();
        }
        let l = store.load(|_| Ok(())).unwrap();
        assert!(l.snapshot.is_none());
        assert_eq!(l.failures.len(), 3);
        let _ = fs::remove_dir_all(&dir);
    }
}
