//! The wire layout of batches and verdicts, as documented in `wit/interceptor.wit`.
//!
//! The host and every guest share these numbers; change them only together with the WIT package
//! version.

/// Words per event in a batch index, and per event description in a verdict.
pub const STRIDE: usize = 8;

/// `fields` bit: the event type is present.
pub const HAS_TYPE: u32 = 1;
/// `fields` bit: data is present.
pub const HAS_DATA: u32 = 2;
/// `fields` bit: an id is present.
pub const HAS_ID: u32 = 4;
/// `fields` bit: a retry value is present.
pub const HAS_RETRY: u32 = 8;
/// `fields` bit: the entry is a comment; its text is the data span.
pub const COMMENT: u32 = 16;
/// Every bit a batch index may set.
pub const FIELD_BITS: u32 = HAS_TYPE | HAS_DATA | HAS_ID | HAS_RETRY | COMMENT;

/// `replace` only: keep the original event type.
pub const INHERIT_TYPE: u32 = 256;
/// `replace` only: keep the original data.
pub const INHERIT_DATA: u32 = 512;
/// `replace` only: keep the original id.
pub const INHERIT_ID: u32 = 1024;
/// `replace` only: keep the original retry.
pub const INHERIT_RETRY: u32 = 2048;
/// Every inherit bit.
pub const INHERIT_BITS: u32 = INHERIT_TYPE | INHERIT_DATA | INHERIT_ID | INHERIT_RETRY;

/// Word offsets inside one event description: the field bits.
pub const W_FIELDS: usize = 0;
/// The type's span (offset, then length).
pub const W_TYPE: usize = 1;
/// The data's span (offset, then length).
pub const W_DATA: usize = 3;
/// The id's span (offset, then length).
pub const W_ID: usize = 5;
/// The retry time in milliseconds.
pub const W_RETRY: usize = 7;

/// Verdict op: forward the next `count` input events.
pub const OP_KEEP: u32 = 0;
/// Verdict op: drop the next `count` input events.
pub const OP_DROP: u32 = 1;
/// Verdict op: consume one input event and emit the described event instead.
pub const OP_REPLACE: u32 = 2;
/// Verdict op: emit the described event, consuming nothing.
pub const OP_INSERT: u32 = 3;
/// Verdict op: end the stream after this verdict's output.
pub const OP_END: u32 = 4;

/// The largest value any word may carry: the contract keeps every integer below 2^31.
pub const MAX_WORD: u32 = i32::MAX as u32;
