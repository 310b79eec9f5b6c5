//! `patterns` (issue 25, in progress): PII and secret detectors and operator-written patterns over
//! the text a model streams, exact across token deltas, holding back only what could still become
//! a match. This is the detection core, a `TextTransform` for the text world; it is not yet an
//! example guest (`example:patterns`), has no configuration keys, metrics or enforcement record,
//! and its detectors are a first set (no phone numbers, IPv6 or PEM blocks yet).
//!
//! The rule that makes it exact: the text released is cut where no match can still be in
//! progress. For every start in the last `cap` bytes (`cap`: the longest match any detector
//! allows), an anchored DFA of all detectors is run to the end of the pending text; the earliest
//! start whose DFA is not dead is where the held text begins. Every match before it is final, so
//! for any split of a text into deltas the output equals the output for the whole text.

pub mod validate;

use regex_automata::dfa::{Automaton, StartKind, dense};
use regex_automata::meta::Regex;
use regex_automata::util::start;
use regex_automata::{Anchored, Input};
use sluicegate_guest::text::{Flow, StopReason, TextTransform};

/// What happens to a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Replaced with `[NAME]`.
    Mask,
    /// Removed.
    Drop,
    /// The text before it goes out, then the stream ends (a filtered answer).
    Stop,
}

/// A check a match must pass.
pub type Check = fn(&str) -> bool;

/// One detector: a name, a pattern (bytes, ASCII classes) and a check, if one exists.
#[derive(Debug, Clone)]
pub struct Detector {
    /// Shown in a mask, `[NAME]`.
    pub name: String,
    /// The regular expression (no backtracking: the `regex` family's syntax).
    pub pattern: String,
    /// A check a match must pass (a card's Luhn digit), if any.
    pub check: Option<Check>,
    /// What happens to a match.
    pub action: Action,
}

fn ssn(text: &str) -> bool {
    let (area, rest) = text.split_at(3);
    area != "000" && area != "666" && !area.starts_with('9') && &rest[1..3] != "00" && &rest[4..] != "0000"
}

/// The built-in detectors by name.
pub fn builtin(name: &str, action: Action) -> Option<Detector> {
    let (pattern, check): (&str, Option<Check>) = match name {
        "email" => (r"[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63}){0,6}\.[A-Za-z]{2,24}", None),
        "card" => (r"\b[0-9](?:[ \-]?[0-9]){11,18}\b", Some(validate::luhn)),
        "iban" => (r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}\b", Some(validate::iban)),
        "ssn" => (r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b", Some(ssn)),
        "ipv4" => (
            r"\b(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\b",
            None,
        ),
        "api-key" => (
            r"\b(?:sk-ant-[A-Za-z0-9_\-]{20,120}|sk-(?:proj-)?[A-Za-z0-9_\-]{20,120}|(?:AKIA|ASIA)[A-Z0-9]{16}|gh[pousr]_[A-Za-z0-9]{36}|xox[abposr]-[A-Za-z0-9\-]{10,100}|AIza[0-9A-Za-z_\-]{35})\b",
            None,
        ),
        "jwt" => (r"\beyJ[A-Za-z0-9_\-]{5,1000}\.eyJ[A-Za-z0-9_\-]{5,2000}\.[A-Za-z0-9_\-]{5,1000}\b", None),
        _ => return None,
    };
    Some(Detector { name: name.into(), pattern: pattern.into(), check, action })
}

/// Why a set of detectors cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError(pub String);

impl std::fmt::Display for PatternError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The detectors, compiled: a search for matches and an anchored DFA for what may still match.
pub struct Patterns {
    detectors: Vec<Detector>,
    find: Regex,
    live: dense::DFA<Vec<u32>>,
    /// The longest match any detector allows: the most ever held.
    cap: usize,
}

impl std::fmt::Debug for Patterns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Patterns").field("detectors", &self.detectors).field("cap", &self.cap).finish()
    }
}

fn syntax() -> regex_automata::util::syntax::Config {
    regex_automata::util::syntax::Config::new().unicode(false).utf8(false)
}

impl Patterns {
    /// Compiles `detectors`; `cap` bounds a pattern that has no longest match of its own.
    pub fn new(detectors: Vec<Detector>, cap: Option<usize>) -> Result<Self, PatternError> {
        let mut longest = 0;
        for d in &detectors {
            let hir = regex_syntax::ParserBuilder::new()
                .unicode(false)
                .utf8(false)
                .build()
                .parse(&d.pattern)
                .map_err(|e| PatternError(format!("detector `{}`: {e}", d.name)))?;
            let bound = hir.properties().maximum_len().or(cap).ok_or_else(|| {
                PatternError(format!("detector `{}`: the pattern has no longest match; give a cap", d.name))
            })?;
            longest = longest.max(bound.min(cap.unwrap_or(usize::MAX)));
        }
        let patterns: Vec<&str> = detectors.iter().map(|d| d.pattern.as_str()).collect();
        let find = Regex::builder()
            .syntax(syntax())
            .build_many(&patterns)
            .map_err(|e| PatternError(format!("the detectors do not compile: {e}")))?;
        let live = dense::Builder::new()
            .configure(dense::Config::new().start_kind(StartKind::Anchored))
            .syntax(syntax())
            .build_many(&patterns)
            .map_err(|e| PatternError(format!("the detectors do not compile to a DFA: {e}")))?;
        Ok(Patterns { detectors, find, live, cap: longest })
    }

    /// The most bytes ever held.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Where the text that could still become a match begins (`text.len()`: nowhere), looking
    /// at starts from `first` on (what comes before is context: the byte a `\b` looks behind at).
    pub fn hold_start(&self, text: &str, first: usize) -> usize {
        let bytes = text.as_bytes();
        let config = start::Config::new().anchored(Anchored::Yes);
        for from in bytes.len().saturating_sub(self.cap).max(first)..bytes.len() {
            if !text.is_char_boundary(from) {
                continue;
            }
            let Ok(mut state) =
                self.live.start_state(&config.clone().look_behind(from.checked_sub(1).map(|b| bytes[b])))
            else {
                continue;
            };
            for &b in &bytes[from..] {
                state = self.live.next_state(state, b);
                if self.live.is_dead_state(state) {
                    break;
                }
            }
            if !self.live.is_dead_state(state) {
                return from;
            }
        }
        bytes.len()
    }

    /// The checked matches of `text` that start before `until`, in order, each with its detector;
    /// a match that reaches past `until` comes last.
    fn matches(&self, text: &str, first: usize, until: usize) -> Vec<(usize, usize, usize)> {
        let mut found = Vec::new();
        let mut at = first;
        while at < until {
            let Some(m) = self.find.search(&Input::new(text).range(at..)) else { break };
            if m.start() >= until {
                break;
            }
            let detector = &self.detectors[m.pattern().as_usize()];
            let value = &text[m.start()..m.end()];
            if detector.check.is_none_or(|check| check(value)) {
                found.push((m.start(), m.end(), m.pattern().as_usize()));
                at = m.end().max(m.start() + 1);
            } else {
                at = m.start() + 1;
            }
            while at < text.len() && !text.is_char_boundary(at) {
                at += 1;
            }
        }
        found
    }
}

impl TextTransform for Patterns {
    /// The last character released: what a `\b` at the start of the pending text looks behind
    /// at, so that a cut never makes a word boundary where the whole text has none.
    type Channel = Option<char>;

    fn max_held(&self) -> usize {
        self.cap
    }

    fn step(&self, before: &mut Option<char>, pending: &str, last: bool, out: &mut String) -> Flow {
        let mut text = String::with_capacity(pending.len() + 4);
        text.extend(*before);
        let first = text.len();
        text.push_str(pending);
        let text = text.as_str();
        let mut cut = if last { text.len() } else { self.hold_start(text, first) };
        let matches = self.matches(text, first, cut);
        let mut copied = first;
        for &(start, end, detector) in &matches {
            if end > cut {
                cut = start; // a match across the cut waits whole
                break;
            }
            out.push_str(&text[copied..start]);
            copied = end;
            match self.detectors[detector].action {
                Action::Mask => {
                    out.push('[');
                    out.push_str(&self.detectors[detector].name);
                    out.push(']');
                }
                Action::Drop => {}
                Action::Stop => return Flow::Stop(StopReason::ContentFilter),
            }
        }
        out.push_str(&text[copied..cut]);
        if let Some(c) = text[first..cut].chars().next_back() {
            *before = Some(c);
        }
        Flow::Continue(cut - first)
    }
}

#[cfg(test)]
mod tests;
