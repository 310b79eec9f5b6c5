//! The Server-Sent Events codec: a spec-exact incremental [`Parser`] and an [`encode`] function
//! that cannot create a frame boundary from field content.

mod encoder;
mod parser;

pub use encoder::{encode, encode_batch, encode_event, encode_ref, write_batch};
pub use parser::{DEFAULT_MAX_EVENT_BYTES, Parser};

pub use crate::event::Event;
