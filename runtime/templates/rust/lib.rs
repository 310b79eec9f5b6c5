//! `{{name}}`, a sluicegate interceptor. It drops `ping` events and masks a word in the data of
//! every other event: `word` (config, default `report`) becomes `mask` (default `******`).
//! Change `process_batch` to make it yours; the contract is in `sluicegate-guest/wit/`.

use sluicegate_guest::{BatchView, Config, Interceptor, Replacement, StreamContext, VerdictBuilder};

pub struct Masker {
    word: String,
    mask: String,
}

impl Interceptor for Masker {
    /// Per-stream state: none needed here.
    type Stream = ();

    fn new(config: &Config) -> Result<Self, String> {
        let word = config.get("word").unwrap_or("report").to_string();
        let mask = config.get("mask").unwrap_or("******").to_string();
        if word.is_empty() || mask.contains('\r') {
            return Err("`word` must not be empty and `mask` must not contain CR".into());
        }
        Ok(Masker { word, mask })
    }

    fn open(&self, _context: &StreamContext) {}

    fn process_batch(&self, _stream: &mut (), batch: BatchView<'_>, out: &mut VerdictBuilder) {
        for event in batch.iter() {
            if event.is_message() && event.effective_type() == "ping" {
                out.drop();
                continue;
            }
            match event.data() {
                Some(data) if data.contains(&self.word) => {
                    let masked = data.replace(&self.word, &self.mask);
                    out.replace(&Replacement::data(&masked));
                }
                _ => out.keep(),
            }
        }
    }
}

#[cfg(target_arch = "wasm32")]
sluicegate_guest::export!(Masker);
