//! JSON Lines: one record a line, blank lines skipped.

use std::io::BufRead;

use anning_detector::{Enricher, RecordBuilder};

use super::{Flow, Pool, Sink, reject};
use crate::decode::pool::decode_value;

/// Whether a line (without its line end) holds nothing: skipped, not rejected.
fn blank(bytes: &[u8]) -> bool {
    let t = bytes.trim_ascii();
    t.is_empty() || !t[0].is_ascii() && std::str::from_utf8(t).is_ok_and(|l| l.trim().is_empty())
}

pub(super) fn read_jsonl_pooled(name: &str, r: impl BufRead, pool: Pool<'_>, sink: &mut impl Sink) -> std::io::Result<()> {
    let mut flow = Flow::new(pool);
    let mut lines = Lines::new(r);
    let read = loop {
        let (line, bytes) = match lines.next(sink) {
            Ok(Some(l)) => l,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        flow.chunk.push(Some(bytes));
        flow.added(line, name, sink);
    };
    // What was read before the end (or an error) is given, in order, before returning.
    flow.finish(name, sink);
    read
}

/// The lines of a JSON Lines input: numbered from 1, line ends cut, blank lines skipped, and
/// the bytes read reported to the sink every 65 536 lines.
struct Lines<R> {
    r: R,
    buf: Vec<u8>,
    line_no: u64,
    done: u64,
}

impl<R: BufRead> Lines<R> {
    fn new(r: R) -> Self {
        Lines {
            r,
            buf: Vec::with_capacity(1024),
            line_no: 0,
            done: 0,
        }
    }

    /// The next line that is not blank, with its number; `None` at the end.
    fn next(&mut self, sink: &mut impl Sink) -> std::io::Result<Option<(u64, &[u8])>> {
        loop {
            self.buf.clear();
            let n = self.r.read_until(b'\n', &mut self.buf)?;
            if n == 0 {
                return Ok(None);
            }
            self.line_no += 1;
            self.done += n as u64;
            if self.line_no.is_multiple_of(65_536) {
                sink.progress(self.done);
            }
            let mut end = self.buf.len();
            while end > 0 && matches!(self.buf[end - 1], b'\n' | b'\r') {
                end -= 1;
            }
            if !blank(&self.buf[..end]) {
                return Ok(Some((self.line_no, &self.buf[..end])));
            }
        }
    }
}

/// JSON Lines from any reader. Blank lines are skipped; a line that is not UTF-8 is rejected.
pub fn read_jsonl(name: &str, r: impl BufRead, en: Enricher<'_>, sink: &mut impl Sink) -> std::io::Result<()> {
    let mut b = RecordBuilder::default();
    let mut lines = Lines::new(r);
    while let Some((line, bytes)) = lines.next(sink)? {
        match decode_value(bytes, "line", &mut b, en) {
            Ok(rec) => sink.record(rec, line),
            Err(bad) => sink.reject(reject(name, line, bad, Some(&String::from_utf8_lossy(bytes)))),
        }
    }
    Ok(())
}
