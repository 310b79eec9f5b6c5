//! Line-delimited JSON streams (NDJSON, JSON Lines: Ollama's `/api/chat`, and other streaming
//! APIs): each line is one event for the chain, and each event the chain leaves is one line again.
//!
//! A line becomes an unnamed event whose data is the line (its line end, LF or CRLF, removed);
//! blank lines carry nothing and are skipped. A CR inside a line (JSON allows it only as
//! whitespace between tokens) becomes a space, since an event's data cannot hold one. The last
//! line of a stream needs no line end. A line longer than the limit is dropped up to its end and
//! counted, as the event-stream parser does with events; the stream goes on.

use crate::batch::Batch;
use crate::event::Event;
use sluicegate_guest::abi::MAX_WORD;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Splits a stream fed in chunks of any size into lines.
#[derive(Debug)]
pub struct LineParser {
    buffer: Vec<u8>,
    /// `buffer[..scanned]` holds no LF.
    scanned: usize,
    limit: usize,
    /// The line being read is over the limit: drop bytes up to its end.
    skipping: bool,
    at_start: bool,
    oversized: u64,
    discarded: usize,
}

impl LineParser {
    /// A parser that takes lines of up to `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        LineParser {
            buffer: Vec::new(),
            scanned: 0,
            limit: limit.min(MAX_WORD as usize / 2),
            skipping: false,
            at_start: true,
            oversized: 0,
            discarded: 0,
        }
    }

    /// Appends a chunk of the stream.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// Bytes fed and not yet taken as lines.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Lines dropped for being over the limit.
    pub fn oversized(&self) -> u64 {
        self.oversized
    }

    /// Bytes of an unfinished line dropped by [`LineParser::abandon`].
    pub fn discarded(&self) -> usize {
        self.discarded
    }

    /// Appends the next complete line to `batch` as an event; false (nothing appended) until more
    /// input arrives.
    pub fn next_into(&mut self, batch: &mut Batch) -> bool {
        loop {
            if self.at_start {
                if self.buffer.len() < BOM.len() && BOM.starts_with(&self.buffer) {
                    return false;
                }
                if self.buffer.starts_with(BOM) {
                    self.buffer.drain(..BOM.len());
                }
                self.at_start = false;
            }
            let Some(end) = memchr::memchr(b'\n', &self.buffer[self.scanned..]).map(|at| self.scanned + at) else {
                self.scanned = self.buffer.len();
                if self.buffer.len() > self.limit {
                    self.start_skipping();
                }
                return false;
            };
            let skipped = std::mem::take(&mut self.skipping);
            let pushed = !skipped && push_line(batch, &self.buffer[..end]);
            self.buffer.drain(..=end);
            self.scanned = 0;
            if pushed {
                return true;
            }
        }
    }

    fn start_skipping(&mut self) {
        if !self.skipping {
            self.oversized += 1;
            tracing::warn!(limit = self.limit, "a line over the size limit was dropped");
        }
        self.skipping = true;
        self.buffer.clear();
        self.scanned = 0;
    }

    /// The input ended normally: its last line, if it had no line end, as an event.
    pub fn finish(&mut self) -> Option<Event> {
        let mut batch = Batch::new();
        let pushed = !std::mem::take(&mut self.skipping) && push_line(&mut batch, &self.buffer);
        self.buffer.clear();
        self.scanned = 0;
        pushed.then(|| batch.to_events().pop()).flatten()
    }

    /// The input failed: an unfinished line is dropped.
    pub fn abandon(&mut self) {
        self.discarded += self.buffer.len();
        self.buffer.clear();
        self.scanned = 0;
        self.skipping = false;
    }
}

/// Appends `line` (without its LF) as an event, unless it is blank; true if it was appended.
fn push_line(batch: &mut Batch, line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return false;
    }
    let text = String::from_utf8_lossy(line);
    match text.contains('\r') {
        true => batch.push_data(&text.replace('\r', " ")),
        false => batch.push_data(&text),
    }
    true
}

/// Writes the events of `batch` as lines: each event's data, then LF. Events without data
/// (comments, id-only blocks an interceptor left) have no line.
pub fn encode_batch(out: &mut Vec<u8>, batch: sluicegate_guest::BatchView<'_>) {
    for event in batch.iter() {
        if let Some(data) = event.data() {
            out.extend_from_slice(data.as_bytes());
            out.push(b'\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(chunks: &[&[u8]], limit: usize) -> (Vec<String>, Option<Event>, u64) {
        let mut parser = LineParser::with_limit(limit);
        let mut batch = Batch::new();
        for chunk in chunks {
            parser.feed(chunk);
            while parser.next_into(&mut batch) {}
        }
        let text = |data: bytes::Bytes| String::from_utf8(data.to_vec()).unwrap();
        let data = batch.to_events().into_iter().filter_map(|e| e.data).map(text).collect();
        (data, parser.finish(), parser.oversized())
    }

    #[test]
    fn lines_across_any_split() {
        let input = b"\xEF\xBB\xBF{\"a\":1}\r\n\n  \n{\"b\":\r2}\n{\"c\":3}";
        for split in 1..input.len() {
            let chunks: Vec<&[u8]> = input.chunks(split).collect();
            let (data, last, _) = lines(&chunks, 1024);
            assert_eq!(data, ["{\"a\":1}", "{\"b\": 2}"], "split {split}");
            assert_eq!(last.and_then(|e| e.data).as_deref(), Some(&b"{\"c\":3}"[..]), "split {split}");
        }
    }

    #[test]
    fn a_line_over_the_limit_is_dropped_and_the_stream_goes_on() {
        let (data, last, oversized) = lines(&[b"{\"a\":1}\n", &[b'x'; 40], &[b'x'; 40], b"\n{\"b\":2}\n"], 16);
        assert_eq!((data, last, oversized), (vec!["{\"a\":1}".to_string(), "{\"b\":2}".to_string()], None, 1));
    }
}
