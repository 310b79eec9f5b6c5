//! `{{name}}`, a guard over the text a model streams (the text world). It masks a word (`word`,
//! default `report`) as `mask` (default `******`) in every text the host finds: answers, tool-call
//! arguments, reasoning, MCP results, in every format, also when the word is split over deltas.
//! Change `step` to make it yours; `sluicegate check` tries it on random splits.

use sluicegate_guest::Config;
use sluicegate_guest::text::{Flow, FromConfig, PerChannel, TextTransform};

pub struct Masker {
    word: String,
    mask: String,
}

impl FromConfig for Masker {
    fn from_config(config: &Config) -> Result<Self, String> {
        let word = config.get("word").unwrap_or("report").to_string();
        let mask = config.get("mask").unwrap_or("******").to_string();
        if word.is_empty() {
            return Err("`word` must not be empty".into());
        }
        Ok(Masker { word, mask })
    }
}

impl TextTransform for Masker {
    type Channel = ();

    fn max_held(&self) -> usize {
        self.word.len() - 1
    }

    fn step(&self, _: &mut (), pending: &str, last: bool, out: &mut String) -> Flow {
        // Hold back the longest end of the text that could still grow into the word (never part
        // of a whole word already there), release the rest with every word masked.
        let after_last_word = pending.rfind(&self.word).map_or(0, |at| at + self.word.len());
        let held = if last {
            0
        } else {
            (1..self.word.len())
                .rev()
                .filter(|&n| self.word.is_char_boundary(n) && pending.len() - after_last_word >= n)
                .find(|&n| pending.ends_with(&self.word[..n]))
                .unwrap_or(0)
        };
        let cut = pending.len() - held;
        out.push_str(&pending[..cut].replace(&self.word, &self.mask));
        Flow::Continue(cut)
    }
}

pub type Guard = PerChannel<Masker>;

#[cfg(target_arch = "wasm32")]
sluicegate_guest::export_text!(Guard);
