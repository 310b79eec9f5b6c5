//! Applying an interceptor's verdict to its input batch, with every check of the contract.
//!
//! Guest and native interceptors both end here, so both get the same validation and the same
//! semantics.

use crate::batch::Batch;
use sluicegate_guest::abi::*;
use sluicegate_guest::{BatchView, Problem, check_event};
use std::fmt;

/// What a verdict did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// The output is the input, unchanged: the caller may skip the copy and reuse the input.
    pub unchanged: bool,
    /// The stream ends after this output.
    pub ended: bool,
    /// Input events dropped.
    pub dropped: u32,
    /// Input events replaced.
    pub replaced: u32,
    /// New events inserted.
    pub inserted: u32,
}

/// A verdict that breaks the contract. Nothing of it is forwarded. Where a variant has `at`,
/// it is the index of the op word where the problem was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerdictError {
    /// An op word that is not a known op.
    UnknownOp {
        /// Where.
        at: usize,
        /// The word found.
        op: u32,
    },
    /// The ops end in the middle of an op.
    Truncated {
        /// Where.
        at: usize,
    },
    /// The ops consume more input events than the batch has.
    Overrun {
        /// Where.
        at: usize,
        /// The batch's events.
        batch_len: usize,
    },
    /// The ops consume fewer input events than the batch has.
    CountMismatch {
        /// Input events the ops consumed.
        consumed: usize,
        /// The batch's events.
        batch_len: usize,
    },
    /// `end` is not the last op.
    EndNotLast {
        /// Where.
        at: usize,
    },
    /// A `replace` or `insert` describes an invalid event.
    InvalidEvent {
        /// Where.
        at: usize,
        /// What is wrong with the event.
        problem: Problem,
    },
    /// A `replace` both sets and inherits a field, or inherits into a comment.
    ConflictingFields {
        /// Where.
        at: usize,
    },
    /// An `insert`-only verdict (from `finish`) consumed input.
    NotInsertOnly {
        /// Where.
        at: usize,
    },
    /// The output is larger than the allowed maximum.
    OutputTooLarge {
        /// The output's field bytes.
        bytes: usize,
        /// The maximum.
        limit: usize,
    },
}

impl fmt::Display for VerdictError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerdictError::UnknownOp { at, op } => write!(f, "unknown op {op} at word {at}"),
            VerdictError::Truncated { at } => write!(f, "the op at word {at} is cut short"),
            VerdictError::Overrun { at, batch_len } => {
                write!(f, "the op at word {at} consumes past the end of the batch ({batch_len} events)")
            }
            VerdictError::CountMismatch { consumed, batch_len } => {
                write!(f, "the ops account for {consumed} of the batch's {batch_len} events")
            }
            VerdictError::EndNotLast { at } => write!(f, "`end` at word {at} is not the last op"),
            VerdictError::InvalidEvent { at, problem } => {
                write!(f, "the event at word {at} is invalid: {problem}")
            }
            VerdictError::ConflictingFields { at } => {
                write!(f, "the replacement at word {at} both sets and inherits a field, or inherits into a comment")
            }
            VerdictError::NotInsertOnly { at } => {
                write!(f, "`finish` may only insert events, but word {at} consumes input")
            }
            VerdictError::OutputTooLarge { bytes, limit } => {
                write!(f, "the output holds {bytes} bytes, over the limit of {limit}")
            }
        }
    }
}

impl std::error::Error for VerdictError {}

/// Runs `ops` over `input`, writing the output events to `out` (cleared first).
///
/// If the ops keep every event and nothing else (or are empty), `out` is left empty and the result says
/// `unchanged`: the caller forwards `input` itself, with no copy. `max_output` bounds the
/// output's field bytes. On error `out` holds garbage and must not be forwarded.
pub fn apply(
    input: BatchView<'_>,
    ops: &[u32],
    bytes: &[u8],
    out: &mut Batch,
    max_output: usize,
) -> Result<Applied, VerdictError> {
    run(None, input, ops, bytes, out, max_output)
}

/// [`apply`] to a whole [`Batch`]: the events it keeps are copied with their wire form, so they
/// go out as they arrived. The proxy's path.
pub fn apply_batch(
    input: &Batch,
    ops: &[u32],
    bytes: &[u8],
    out: &mut Batch,
    max_output: usize,
) -> Result<Applied, VerdictError> {
    run(Some(input), input.view(), ops, bytes, out, max_output)
}

fn run(
    source: Option<&Batch>,
    input: BatchView<'_>,
    ops: &[u32],
    bytes: &[u8],
    out: &mut Batch,
    max_output: usize,
) -> Result<Applied, VerdictError> {
    out.clear();
    let batch_len = input.len();
    if ops.is_empty() || ops == [OP_KEEP, batch_len as u32] {
        return Ok(Applied { unchanged: true, ..Applied::default() });
    }
    let mut run = Run { source, input, bytes, out, next: 0, applied: Applied::default() };
    let mut at = 0; // the current op word
    while at < ops.len() {
        if run.applied.ended {
            return Err(VerdictError::EndNotLast { at });
        }
        at = match ops[at] {
            op @ (OP_KEEP | OP_DROP) => {
                let count = *ops.get(at + 1).ok_or(VerdictError::Truncated { at })? as usize;
                run.keep_or_drop(op == OP_KEEP, count, at)?;
                at + 2
            }
            op @ (OP_REPLACE | OP_INSERT) => {
                let words = ops.get(at + 1..at + 1 + STRIDE).ok_or(VerdictError::Truncated { at })?;
                run.write(op == OP_REPLACE, words, at)?;
                at + 1 + STRIDE
            }
            OP_END => {
                run.applied.ended = true;
                at + 1
            }
            op => return Err(VerdictError::UnknownOp { at, op }),
        };
        if run.out.byte_len() > max_output {
            return Err(VerdictError::OutputTooLarge { bytes: run.out.byte_len(), limit: max_output });
        }
    }
    if run.next != batch_len {
        return Err(VerdictError::CountMismatch { consumed: run.next, batch_len });
    }
    Ok(run.applied)
}

/// A replacement's field: the original's where the verdict says to inherit it, else its own.
fn pick<'a>(fields: u32, inherit: u32, own: Option<&'a [u8]>, theirs: Option<&'a str>) -> Option<&'a [u8]> {
    if fields & inherit != 0 { theirs.map(str::as_bytes) } else { own }
}

/// One verdict being applied: its input, its bytes, the output so far and the next input event.
struct Run<'a> {
    /// The input batch, if given whole (kept events are copied from it with their wire form),
    /// and its view.
    source: Option<&'a Batch>,
    input: BatchView<'a>,
    bytes: &'a [u8],
    out: &'a mut Batch,
    next: usize,
    applied: Applied,
}

impl Run<'_> {
    /// `keep count` or `drop count` (the op at word `at`).
    fn keep_or_drop(&mut self, keep: bool, count: usize, at: usize) -> Result<(), VerdictError> {
        let batch_len = self.input.len();
        if count > batch_len - self.next {
            return Err(VerdictError::Overrun { at, batch_len });
        }
        for i in self.next..self.next + count {
            let e = self.input.get(i).expect("index checked above");
            if keep {
                match self.source {
                    Some(source) => self.out.push_from(source, i),
                    None => self.out.push_ref(&e),
                }
            } else if !e.is_comment() && (e.id().is_some() || e.retry().is_some()) {
                // Dropping the event keeps the client's resumption point and retry.
                self.out.push_fields(false, None, None, e.id().map(str::as_bytes), e.retry());
            }
        }
        if !keep {
            self.applied.dropped += count as u32;
        }
        self.next += count;
        Ok(())
    }

    /// `replace` (of the next input event) or `insert`, whose event is `words`.
    fn write(&mut self, replace: bool, words: &[u32], at: usize) -> Result<(), VerdictError> {
        let bytes = self.bytes;
        let extra = if replace { INHERIT_BITS } else { 0 };
        check_event(words, bytes, extra).map_err(|problem| VerdictError::InvalidEvent { at, problem })?;
        let span = |w: usize| -> &[u8] {
            let start = words[w] as usize;
            &bytes[start..start + words[w + 1] as usize]
        };
        let fields = words[W_FIELDS];
        let set = |bit: u32, w: usize| (fields & bit != 0).then(|| span(w));
        let own_retry = (fields & HAS_RETRY != 0).then(|| words[W_RETRY]);
        // A replacement needs an event to replace, whatever it becomes (a comment too).
        let batch_len = self.input.len();
        if replace && self.next >= batch_len {
            return Err(VerdictError::Overrun { at, batch_len });
        }
        if fields & COMMENT != 0 {
            if fields & INHERIT_BITS != 0 {
                return Err(VerdictError::ConflictingFields { at });
            }
            self.out.push_fields(true, None, Some(span(W_DATA)), None, None);
        } else if !replace {
            self.out.push_fields(false, set(HAS_TYPE, W_TYPE), set(HAS_DATA, W_DATA), set(HAS_ID, W_ID), own_retry);
        } else {
            let Some(original) = self.input.get(self.next) else {
                return Err(VerdictError::Overrun { at, batch_len });
            };
            let both = ((fields & INHERIT_BITS) >> 8) & fields & (HAS_TYPE | HAS_DATA | HAS_ID | HAS_RETRY);
            if both != 0 {
                return Err(VerdictError::ConflictingFields { at });
            }
            let retry = if fields & INHERIT_RETRY != 0 { original.retry() } else { own_retry };
            self.out.push_fields(
                false,
                pick(fields, INHERIT_TYPE, set(HAS_TYPE, W_TYPE), original.event_type()),
                pick(fields, INHERIT_DATA, set(HAS_DATA, W_DATA), original.data()),
                pick(fields, INHERIT_ID, set(HAS_ID, W_ID), original.id()),
                retry,
            );
        }
        if replace {
            self.next += 1;
            self.applied.replaced += 1;
        } else {
            self.applied.inserted += 1;
        }
        Ok(())
    }
}

/// Applies the verdict of a `finish` call: it may only insert events and end.
pub fn apply_finish(ops: &[u32], bytes: &[u8], out: &mut Batch, max_output: usize) -> Result<Applied, VerdictError> {
    let mut at = 0;
    while at < ops.len() {
        match ops[at] {
            OP_INSERT => at += 1 + STRIDE,
            OP_END => at += 1,
            _ => return Err(VerdictError::NotInsertOnly { at }),
        }
    }
    let empty = Batch::new();
    let applied = apply(empty.view(), ops, bytes, out, max_output)?;
    Ok(Applied { ended: true, ..applied })
}
