//! JSON values to records on decoding threads: chunks of consecutive values (a batch's
//! messages in the daemon, a file's lines in replay), CSV rows or Parquet batches are
//! decoded, enriched and routed while the caller gathers more, and come back in the order
//! sent.

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use anning_detector::engine::{Keyer, Routes};
use anning_detector::{Enricher, Record, RecordBuilder, Registry};
use arrow::record_batch::RecordBatch;
use crossbeam_channel::{Receiver, Sender, unbounded};

use super::csv::{CsvColumns, CsvFields};
use super::jsonl::JsonFields;
use super::parquet::{BatchColumns, ParquetFields};
use super::{Bad, RejectReason, assemble};

/// Decodes one value (a JSON object, the record contract; a trailing line end is ignored).
/// `what` names the value in a reject ("message", "line").
pub fn decode_value(bytes: &[u8], what: &str, b: &mut RecordBuilder, en: Enricher<'_>) -> Result<Record, Bad> {
    // Validated with SIMD (Chinese texts are most of a line, and not ASCII); the standard
    // library finds where a bad one goes wrong.
    let text = simdutf8::basic::from_utf8(bytes).map_err(|_| Bad {
        reason: RejectReason::Malformed,
        field: None,
        col: std::str::from_utf8(bytes).err().map(|e| e.valid_up_to() as u64 + 1),
        detail: format!("{what} is not valid UTF-8"),
    })?;
    let text = text.trim_end_matches(['\n', '\r']);
    JsonFields::parse(text).and_then(|mut f| assemble(&mut f, b, en))
}

/// Values per chunk handed to a decoding thread.
pub const CHUNK: usize = 1024;

/// Consecutive values, copied out of the consumer's buffers or the file's reader so that
/// another thread can decode them while more are gathered; or CSV rows, split into fields
/// by the reader; or the rows of a columnar batch (Parquet), shared with the reader. A chunk
/// holds one of the three.
#[derive(Default)]
pub struct Chunk {
    bytes: Vec<u8>,
    /// Where each value ends in `bytes`.
    ends: Vec<usize>,
    /// A batch of rows, decoded instead of values.
    batch: Option<RecordBatch>,
    /// CSV rows: the first `held` of `rows` (the others are kept to read into again), and
    /// the columns of the file they come from (set while the chunk holds rows).
    rows: Vec<csv::StringRecord>,
    held: usize,
    columns: Option<Arc<CsvColumns>>,
    /// An emptied vector of results to decode into, given back with the chunk: a new one
    /// per chunk (over 300 KiB) came from fresh pages, zeroed by the kernel, time after time.
    spare: Decoded,
}

impl Chunk {
    pub fn push(&mut self, payload: Option<&[u8]>) {
        debug_assert!(self.batch.is_none(), "values or a batch, not both");
        self.bytes.extend_from_slice(payload.unwrap_or_default());
        self.ends.push(self.bytes.len());
    }

    /// Makes this (empty) chunk the rows of `batch`.
    pub fn set_batch(&mut self, batch: RecordBatch) {
        debug_assert!(self.ends.is_empty(), "values or a batch, not both");
        self.batch = Some(batch);
    }

    /// Reads the next row of `rdr` (a file whose columns are `columns`) into this chunk,
    /// which holds rows of that file or nothing yet. The row read, or `None` at the end of
    /// the file; a row that cannot be read is not kept.
    pub fn read_row<R: std::io::Read>(
        &mut self,
        rdr: &mut csv::Reader<R>,
        columns: &Arc<CsvColumns>,
    ) -> csv::Result<Option<&csv::StringRecord>> {
        debug_assert!(self.ends.is_empty() && self.batch.is_none(), "rows, values or a batch: one of them");
        if self.columns.is_none() {
            self.columns = Some(Arc::clone(columns));
        }
        if self.held == self.rows.len() {
            self.rows.push(csv::StringRecord::new());
        }
        if !rdr.read_record(&mut self.rows[self.held])? {
            return Ok(None);
        }
        self.held += 1;
        Ok(Some(&self.rows[self.held - 1]))
    }

    pub fn len(&self) -> usize {
        match &self.batch {
            Some(b) => b.num_rows(),
            None if self.columns.is_some() => self.held,
            None => self.ends.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `i`th value or row as text, for its reject: a value as it came (bytes that are not
    /// UTF-8 replaced), a CSV row's fields joined by commas, nothing for a batch's row.
    pub fn raw(&self, i: usize) -> Option<String> {
        if self.batch.is_some() {
            None
        } else if self.columns.is_some() {
            Some(self.rows[i].iter().collect::<Vec<_>>().join(","))
        } else {
            Some(String::from_utf8_lossy(self.value(i)).into_owned())
        }
    }

    /// The `i`th value.
    fn value(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    /// Each value (or row) decoded, enriched and routed for the shards (into the chunk's
    /// spare vector, if it has one).
    fn decode(&mut self, b: &mut RecordBuilder, keyer: &Keyer, registry: &Registry, what: &str) -> Decoded {
        let en = Enricher::new(keyer.pack(), registry);
        let mut out = std::mem::take(&mut self.spare);
        debug_assert!(out.is_empty(), "a spare vector is emptied before it is kept");
        out.reserve(self.len());
        let routed = |rec: Record| {
            let routes = keyer.routes(&rec);
            (rec, routes)
        };
        if let Some(batch) = &self.batch {
            let columns = BatchColumns::new(batch);
            let typed = columns.typed();
            out.extend((0..batch.num_rows()).map(|row| assemble(&mut ParquetFields { columns: &typed, row }, b, en).map(routed)));
        } else if let Some(columns) = &self.columns {
            out.extend(
                self.rows[..self.held]
                    .iter()
                    .map(|row| assemble(&mut CsvFields { columns, row }, b, en).map(routed)),
            );
        } else {
            let mut start = 0;
            out.extend(self.ends.iter().map(|&end| {
                let value = &self.bytes[start..end];
                start = end;
                decode_value(value, what, b, en).map(routed)
            }));
        }
        out
    }
}

/// One result per value: the record and its routes, or why it was rejected.
pub type Decoded = Vec<Result<(Record, Routes), Bad>>;

/// Threads that decode and enrich chunks of a batch while the main loop polls the rest.
///
/// Only decoding, enrichment and routing run here: each record depends on its message alone.
/// What depends on the records before it (joins, the watermark) runs after, in arrival
/// order, on the main loop, so the records are the same however a batch is split (a record
/// a join changes is routed again there).
pub struct Decoders {
    jobs: Option<Sender<(usize, Arc<Keyer>, Chunk)>>,
    done: Receiver<(usize, Chunk, Result<Decoded, String>)>,
    workers: Vec<JoinHandle<()>>,
    /// Chunks of this batch (sent, or decoded here by `close`), and given back by `next_decoded`.
    sent: usize,
    given: usize,
    /// Decoded chunks from the next to give back on (`given`, `given + 1`, …), as they arrive.
    back: VecDeque<Option<(Decoded, Chunk)>>,
    /// Emptied chunks, to fill again.
    free: Vec<Chunk>,
    /// For the last chunk of a batch, decoded on the main loop.
    builder: RecordBuilder,
    registry: Arc<Registry>,
    /// What a value is called in a reject ("message", "line").
    what: &'static str,
}

impl Decoders {
    /// `threads` decoding threads; `what` names a value in rejects ("message", "line").
    pub fn new(threads: usize, registry: &Registry, what: &'static str) -> std::io::Result<Self> {
        let registry = Arc::new(registry.clone());
        let (jobs, rx) = unbounded::<(usize, Arc<Keyer>, Chunk)>();
        let (tx, done) = unbounded();
        let mut workers = Vec::new();
        for i in 0..threads.max(1) {
            let (rx, tx, registry) = (rx.clone(), tx.clone(), Arc::clone(&registry));
            workers.push(thread::Builder::new().name(format!("decode-{i}")).spawn(move || {
                let mut b = RecordBuilder::default();
                for (seq, keyer, mut chunk) in rx {
                    // A panic (a bug) is handed to the main loop, which would otherwise wait
                    // for this chunk for ever while the other threads keep the channel open.
                    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| chunk.decode(&mut b, &keyer, &registry, what)))
                        .map_err(|p| panic_text(p.as_ref()));
                    let failed = out.is_err();
                    if tx.send((seq, chunk, out)).is_err() || failed {
                        return;
                    }
                }
            })?);
        }
        Ok(Decoders {
            jobs: Some(jobs),
            done,
            workers,
            sent: 0,
            given: 0,
            back: VecDeque::new(),
            free: Vec::new(),
            builder: RecordBuilder::default(),
            registry,
            what,
        })
    }

    /// An empty chunk to fill.
    pub fn chunk(&mut self) -> Chunk {
        self.free.pop().unwrap_or_default()
    }

    /// Hands a full chunk to the decoding threads.
    pub fn send(&mut self, keyer: &Arc<Keyer>, chunk: Chunk) {
        let jobs = self.jobs.as_ref().expect("decoders running");
        jobs.send((self.sent, Arc::clone(keyer), chunk))
            .expect("decoding threads run while the sender lives");
        self.sent += 1;
    }

    /// Ends a batch: `last` is decoded here when nothing was sent (a small batch, not worth
    /// a hand-over), else sent behind the others. Then [`Decoders::next_decoded`] gives them
    /// back.
    pub fn close(&mut self, keyer: &Arc<Keyer>, mut last: Chunk) {
        if self.sent == 0 {
            let mine = last.decode(&mut self.builder, keyer, &self.registry, self.what);
            self.back.push_back(Some((mine, last)));
            self.sent = 1;
        } else if !last.is_empty() {
            self.send(keyer, last);
        } else {
            self.recycle(last);
        }
    }

    /// Chunks sent and not yet given back. Chunks may be taken back with
    /// [`Decoders::next_decoded`] while more are sent (a stream: replay's lines), as long as
    /// some are in flight.
    pub fn in_flight(&self) -> usize {
        self.sent - self.given
    }

    /// The batch's next chunk in the order sent, decoded (one result per value), with the
    /// chunk itself (to [`recycle`](Decoders::recycle) once read), waiting for it if need
    /// be; `None` once every chunk sent has been given back, which ends the batch.
    pub fn next_decoded(&mut self) -> Option<(Decoded, Chunk)> {
        if self.given == self.sent {
            self.given = 0;
            self.sent = 0;
            self.back.clear();
            return None;
        }
        while self.back.front().is_none_or(Option::is_none) {
            let (seq, chunk, decoded) = self.done.recv().expect("a decoding thread stopped");
            self.keep(seq, chunk, decoded);
        }
        self.given += 1;
        self.back.pop_front().flatten()
    }

    /// [`next_decoded`](Decoders::next_decoded) if the next chunk is back already, without
    /// waiting and without ending the batch; `None` when it is not (or none is in flight).
    pub fn try_next_decoded(&mut self) -> Option<(Decoded, Chunk)> {
        while let Ok((seq, chunk, decoded)) = self.done.try_recv() {
            self.keep(seq, chunk, decoded);
        }
        if self.given == self.sent || self.back.front().is_none_or(Option::is_none) {
            return None;
        }
        self.given += 1;
        self.back.pop_front().flatten()
    }

    /// Holds a chunk that came back decoded at its place in the order sent.
    fn keep(&mut self, seq: usize, chunk: Chunk, decoded: Result<Decoded, String>) {
        let decoded = decoded.unwrap_or_else(|e| panic!("a decoding thread panicked: {e}"));
        let at = seq - self.given;
        if self.back.len() <= at {
            self.back.resize_with(at + 1, || None);
        }
        self.back[at] = Some((decoded, chunk));
    }

    /// Takes a chunk given back by [`Decoders::next_decoded`] to fill again.
    /// A chunk that was never decoded (or whose results were not kept) keeps the spare
    /// vector it has, if any.
    pub fn recycle(&mut self, mut chunk: Chunk) {
        chunk.bytes.clear();
        chunk.ends.clear();
        chunk.batch = None;
        chunk.held = 0;
        chunk.columns = None;
        self.free.push(chunk);
    }

    /// [`recycle`](Self::recycle), with the chunk's results once read (drained): their
    /// vector is decoded into again.
    pub fn recycle_with(&mut self, mut chunk: Chunk, mut spare: Decoded) {
        spare.clear();
        chunk.spare = spare;
        self.recycle(chunk);
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

impl Drop for Decoders {
    fn drop(&mut self) {
        drop(self.jobs.take());
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sample message (good and bad), a value that is not UTF-8 and one with no value,
    /// repeated to several chunks' worth.
    fn payloads() -> Vec<Option<Vec<u8>>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/samples");
        let mut one: Vec<Option<Vec<u8>>> = Vec::new();
        for name in ["contract.jsonl", "burst.jsonl", "dodger.jsonl"] {
            let text = std::fs::read_to_string(dir.join(name)).unwrap();
            one.extend(text.lines().map(|l| Some(l.as_bytes().to_vec())));
        }
        one.push(Some(vec![b'{', 0xff, b'}']));
        one.push(None);
        let mut all = Vec::new();
        while all.len() < 3 * CHUNK + 100 {
            all.extend(one.iter().cloned());
        }
        all
    }

    /// One batch as the main loop runs it: full chunks to the threads, the rest closed.
    /// `early`: chunks already back are taken while sending (the daemon's loop), waiting
    /// for one whenever two are out, so that taking early happens in every batch of more
    /// than two chunks.
    fn run(decoders: &mut Decoders, keyer: &Arc<Keyer>, batch: &[Option<Vec<u8>>], early: bool) -> Decoded {
        let mut chunk = decoders.chunk();
        let mut got = Vec::new();
        for p in batch {
            chunk.push(p.as_deref());
            if chunk.len() >= CHUNK {
                let next = decoders.chunk();
                decoders.send(keyer, std::mem::replace(&mut chunk, next));
                if !early {
                    continue;
                }
                loop {
                    match decoders.try_next_decoded() {
                        Some((d, chunk)) => {
                            assert_eq!(d.len(), chunk.len());
                            // Given back full: emptied when kept.
                            got.extend(d.iter().cloned());
                            decoders.recycle_with(chunk, d);
                        }
                        None if decoders.in_flight() >= 2 => std::thread::yield_now(),
                        None => break,
                    }
                }
            }
        }
        decoders.close(keyer, chunk);
        // Taken back with their vectors of results, to decode into again: nothing of one
        // chunk's results is left in the next's.
        while let Some((mut d, chunk)) = decoders.next_decoded() {
            assert_eq!(d.len(), chunk.len());
            got.append(&mut d);
            decoders.recycle_with(chunk, d);
        }
        got
    }

    /// Chunks decoded on the threads come back in the order sent, one result per message,
    /// each what decoding that message alone gives (rejects included, with their columns)
    /// with the record's routes; batch after batch, large and small, the same decoders, with
    /// chunks taken as they come back while sending or only at the end.
    #[test]
    fn chunks_decode_as_each_message_alone_and_come_back_in_order() {
        let pack = Arc::new(anning_rules::default_pack());
        let registry = Registry::parse("port,sp,class,signatures\n10690001234,901234,marketing,京东\n").unwrap();
        let en = Enricher::new(&pack, &registry);
        let all = payloads();
        let keyer = Arc::new(Keyer::new(Arc::clone(&pack)));
        let alone: Decoded = all
            .iter()
            .map(|p| {
                decode_value(p.as_deref().unwrap_or_default(), "message", &mut RecordBuilder::default(), en).map(|r| {
                    let routes = keyer.routes(&r);
                    (r, routes)
                })
            })
            .collect();
        assert!(
            alone.iter().flatten().any(|(_, routes)| *routes != Routes::default()),
            "records are routed"
        );
        assert!(alone.iter().any(Result::is_ok) && alone.iter().any(Result::is_err));
        let mut decoders = Decoders::new(3, &registry, "message").unwrap();
        for early in [false, true] {
            for (from, to) in [(0, all.len()), (5, 17), (0, 0), (0, CHUNK), (1, 2 * CHUNK + 1), (0, all.len())] {
                let got = run(&mut decoders, &keyer, &all[from..to], early);
                assert_eq!(got.len(), to - from, "batch {from}..{to}");
                assert!(
                    got == alone[from..to],
                    "batch {from}..{to} (taken early: {early}): results differ from decoding each message alone"
                );
            }
        }
    }
}
