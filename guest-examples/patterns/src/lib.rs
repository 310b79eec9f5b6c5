//! `patterns`: PII and secret detectors and operator-written patterns over the text a model
//! streams, exact across token deltas, holding back only what could still become a match.
//!
//! Configured, not programmed (see [`config`] for the keys):
//!
//! ```toml
//! [[route.interceptor]]
//! spec = "example:patterns"
//! config = { detect = "email, phone, card, api-key", action = "mask", "pattern.ticket" = "TCK-[0-9]{6}", "action.ticket" = "stop" }
//! ```
//!
//! The rule that makes it exact: the text released is cut where no match can still be in
//! progress. For every start in the last `cap` bytes of the pending text (`cap`: the longest
//! match any detector allows), an anchored DFA of all detectors is run to the end of the text;
//! the earliest start whose DFA is not dead is where the held text begins. Every match before it
//! is final, so for any split of a text into deltas the output equals the output for the whole
//! text, and text that cannot start a match is never held.

pub mod config;
pub mod detectors;
pub mod validate;

pub use detectors::{BUILTIN, Check};

use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::meta::Regex;
use regex_automata::nfa::thompson;
use regex_automata::util::pool::Pool;
use regex_automata::util::start;
use regex_automata::{Anchored, Input, MatchKind, PatternID};
use regex_syntax::hir::{Hir, HirKind};
use sluicegate_guest::text::{Flow, PerChannel, StopReason, TextTransform};

/// The interceptor: [`Patterns`] over every channel of every stream.
pub type PatternsGuard = PerChannel<Patterns>;

/// What happens to a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Replaced with the detector's replacement (`[NAME]` unless configured).
    Mask,
    /// Removed.
    Drop,
    /// The text before it goes out, then the stream ends the way its format ends a filtered
    /// answer.
    Stop,
}

impl Action {
    /// `mask`, `drop` or `stop`.
    pub fn parse(text: &str) -> Option<Action> {
        match text.trim() {
            "mask" => Some(Action::Mask),
            "drop" => Some(Action::Drop),
            "stop" => Some(Action::Stop),
            _ => None,
        }
    }
}

/// One detector.
#[derive(Debug, Clone)]
pub struct Detector {
    /// Its name: counted under it, and shown in the default replacement, `[NAME]`.
    pub name: String,
    /// The regular expression (the `regex` crate's syntax: no backtracking, linear time).
    pub pattern: String,
    /// A check a match must pass (a card's Luhn digit), if any.
    pub check: Option<Check>,
    /// What happens to a match.
    pub action: Action,
    /// What a masked match becomes.
    pub replacement: String,
    /// The longest match looked for: repetitions are cut so that no match is longer (required
    /// for a pattern without a longest match of its own, `TCK-[0-9]+`).
    pub cap: Option<usize>,
}

impl Detector {
    /// Built-in detector `name` (see [`BUILTIN`]), masking as `[name]`.
    pub fn builtin(name: &str, action: Action) -> Option<Detector> {
        let (pattern, check) = detectors::builtin(name)?;
        Some(Detector { check, ..Detector::pattern(name, &pattern, action) })
    }

    /// An operator's pattern, masking as `[name]`.
    pub fn pattern(name: &str, pattern: &str, action: Action) -> Detector {
        Detector {
            name: name.into(),
            pattern: pattern.into(),
            check: None,
            action,
            replacement: format!("[{name}]"),
            cap: None,
        }
    }
}

/// Why a set of detectors cannot be used; `detector` names the one at fault, if one is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    /// The detector at fault.
    pub detector: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for PatternError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.detector {
            Some(name) => write!(f, "detector `{name}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The detectors, compiled: a search for matches and an anchored DFA for what may still match.
///
/// The DFA is lazy (states are built as text reaches them, into a cache): the full DFA of every
/// built-in detector takes 17 MB and a quarter of a second to build natively, too much for a
/// guest's start, while the text a stream brings visits a few hundred states.
pub struct Patterns {
    detectors: Vec<Detector>,
    find: Regex,
    live: DFA,
    /// Caches of `live`, one taken per step (a native guard serves streams on several threads).
    caches: Pool<Cache, CacheFn>,
    /// The longest match any detector allows: the most ever held.
    cap: usize,
}

impl std::fmt::Debug for Patterns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Patterns").field("detectors", &self.detectors).field("cap", &self.cap).finish()
    }
}

/// The largest automaton built (operators' patterns can ask for huge ones).
const SIZE_LIMIT: usize = 64 << 20;

/// The memory of one lazy DFA cache: when full, it is cleared and refilled.
const CACHE_BYTES: usize = 2 << 20;

/// Makes a cache for the pool.
type CacheFn = Box<dyn Fn() -> Cache + Send + Sync + std::panic::UnwindSafe + std::panic::RefUnwindSafe>;

/// Whole texts longer than this are searched at once rather than scanned start by start.
const SCAN_WHOLE: usize = 4096;

/// `hir` with every repetition cut to at most `most` times (a match of at most `most` bytes
/// repeats nothing more often, so every such match is kept).
fn cut_repetitions(hir: Hir, most: u32) -> Hir {
    match hir.into_kind() {
        HirKind::Repetition(mut rep) => {
            rep.max = Some(rep.max.unwrap_or(u32::MAX).min(most).max(rep.min));
            rep.sub = Box::new(cut_repetitions(*rep.sub, most));
            Hir::repetition(rep)
        }
        HirKind::Capture(mut capture) => {
            capture.sub = Box::new(cut_repetitions(*capture.sub, most));
            Hir::capture(capture)
        }
        HirKind::Concat(subs) => Hir::concat(subs.into_iter().map(|h| cut_repetitions(h, most)).collect()),
        HirKind::Alternation(subs) => Hir::alternation(subs.into_iter().map(|h| cut_repetitions(h, most)).collect()),
        HirKind::Empty => Hir::empty(),
        HirKind::Literal(literal) => Hir::literal(literal.0),
        HirKind::Class(class) => Hir::class(class),
        HirKind::Look(look) => Hir::look(look),
    }
}

/// `detector`'s pattern, parsed and cut to its cap, and its longest match.
fn parse(detector: &Detector) -> Result<(Hir, usize), PatternError> {
    let fault = |message: String| PatternError { detector: Some(detector.name.clone()), message };
    let mut hir = regex_syntax::Parser::new().parse(&detector.pattern).map_err(|e| fault(e.to_string()))?;
    if let Some(cap) = detector.cap {
        hir = cut_repetitions(hir, u32::try_from(cap).unwrap_or(u32::MAX));
    }
    if hir.properties().minimum_len() == Some(0) {
        return Err(fault("the pattern matches empty text".into()));
    }
    let longest = hir
        .properties()
        .maximum_len()
        .ok_or_else(|| fault("the pattern has no longest match (`+`, `*` or `{n,}`): give it a cap".into()))?;
    Ok((hir, longest))
}

impl Patterns {
    /// Compiles `detectors`; the first of two matches that start at one place wins.
    pub fn new(detectors: Vec<Detector>) -> Result<Self, PatternError> {
        let mut hirs = Vec::with_capacity(detectors.len());
        let mut cap = 0;
        for detector in &detectors {
            let (hir, longest) = parse(detector)?;
            hirs.push(hir);
            cap = cap.max(longest);
        }
        let whole = |message: String| PatternError { detector: None, message };
        let find = Regex::builder()
            .configure(Regex::config().nfa_size_limit(Some(SIZE_LIMIT)).dfa_size_limit(Some(SIZE_LIMIT)))
            .build_many_from_hir(&hirs)
            .map_err(|e| whole(format!("the detectors do not compile: {e}")))?;
        let nfa = thompson::Compiler::new()
            .configure(thompson::Config::new().nfa_size_limit(Some(SIZE_LIMIT)))
            .build_many_from_hir(&hirs)
            .map_err(|e| whole(format!("the detectors do not compile: {e}")))?;
        let live = DFA::builder()
            // All, not leftmost-first: a detector whose match could still grow is live even
            // when another one matched at the same start (its check may yet fail).
            .configure(DFA::config().match_kind(MatchKind::All).unicode_word_boundary(true).cache_capacity(CACHE_BYTES))
            .build_from_nfa(nfa)
            .map_err(|e| {
                whole(format!("the detectors make too large an automaton ({e}): a cap shortens repetitions"))
            })?;
        let for_caches = live.clone();
        let caches: Pool<Cache, CacheFn> = Pool::new(Box::new(move || for_caches.create_cache()));
        Ok(Patterns { detectors, find, live, caches, cap })
    }

    /// The most bytes ever held: the longest match any detector allows.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// The detectors, in the order their matches win.
    pub fn detectors(&self) -> &[Detector] {
        &self.detectors
    }

    /// Runs the anchored DFA from every start in the last `cap` bytes: the first start still
    /// live at the end is where held text begins, and if no start before it passed a match
    /// state, the text before it has no match (the common case, which then needs no search).
    /// With `last` every start is run, to the end of the text.
    fn scan(&self, text: &str, behind: Option<u8>, last: bool) -> Scan {
        let bytes = text.as_bytes();
        if last && bytes.len() > SCAN_WHOLE {
            return Scan { cut: bytes.len(), matched: true };
        }
        let window = if last { 0 } else { bytes.len().saturating_sub(self.cap) };
        let mut scan = Scan { cut: bytes.len(), matched: window > 0 };
        let config = start::Config::new().anchored(Anchored::Yes);
        let mut cache = self.caches.get();
        for from in window..bytes.len() {
            if !text.is_char_boundary(from) {
                continue;
            }
            let before = if from == 0 { behind } else { Some(bytes[from - 1]) };
            let (live, matched) = self.run_from(&mut cache, &config.clone().look_behind(before), &bytes[from..], last);
            scan.matched |= matched;
            if live && !last {
                scan.cut = from;
                break;
            }
        }
        scan
    }

    /// Whether a match starting at `bytes` could still be in progress at their end, and whether
    /// one ended on the way (with `last`, at the end too). A DFA that gives up (a Unicode word
    /// boundary next to a non-ASCII byte, a cache cleared too often) counts as live and matched:
    /// held text is never wrong, only late.
    fn run_from(&self, cache: &mut Cache, config: &start::Config, bytes: &[u8], last: bool) -> (bool, bool) {
        let Ok(mut state) = self.live.start_state(cache, config) else {
            return (true, true);
        };
        let mut matched = false;
        for &b in bytes {
            match self.live.next_state(cache, state, b) {
                Ok(next) if next.is_dead() => return (false, matched),
                Ok(next) if next.is_quit() => return (true, true),
                Ok(next) => {
                    matched |= next.is_match();
                    state = next;
                }
                Err(_) => return (true, true),
            }
        }
        if last {
            matched |= self.live.next_eoi_state(cache, state).map_or(true, |end| end.is_match());
        }
        (true, matched)
    }

    /// The checked match that starts first at or after `at`, if it starts before `until`: of
    /// two at one place, the first detector whose check passes.
    fn next_match(&self, text: &str, mut at: usize, until: usize) -> Option<(usize, usize, usize)> {
        while at < until {
            let found = self.find.search(&Input::new(text).range(at..))?;
            if found.start() >= until {
                return None;
            }
            if self.passes(found.pattern(), &text[found.range()]) {
                return Some((found.start(), found.end(), found.pattern().as_usize()));
            }
            // Its check failed: another detector may match at the same place.
            if let Some(other) = self.other_at(text, found.start(), found.pattern()) {
                return Some(other);
            }
            at = found.start() + 1;
            while !text.is_char_boundary(at) {
                at += 1;
            }
        }
        None
    }

    fn passes(&self, pattern: PatternID, value: &str) -> bool {
        self.detectors[pattern.as_usize()].check.is_none_or(|check| check(value))
    }

    /// A checked match at `start` of a detector other than `failed`, the first in order.
    fn other_at(&self, text: &str, start: usize, failed: PatternID) -> Option<(usize, usize, usize)> {
        (0..self.detectors.len()).filter(|&i| i != failed.as_usize()).find_map(|i| {
            let pattern = PatternID::new(i).ok()?;
            let input = Input::new(text).range(start..).anchored(Anchored::Pattern(pattern));
            let found = self.find.search(&input)?;
            self.passes(pattern, &text[found.range()]).then(|| (found.start(), found.end(), i))
        })
    }
}

/// What [`Patterns::scan`] found.
struct Scan {
    /// Where held text begins.
    cut: usize,
    /// A match may end before `cut`.
    matched: bool,
}

impl TextTransform for Patterns {
    /// The last character released: what a `\b` at the start of the pending text looks behind
    /// at, so that a cut never makes a word boundary where the whole text has none.
    type Channel = Option<char>;

    fn max_held(&self) -> usize {
        self.cap
    }

    fn step(&self, before: &mut Option<char>, pending: &str, last: bool, out: &mut String) -> Flow {
        let previous = *before;
        let behind = previous.map(|c| {
            let mut utf8 = [0; 4];
            *c.encode_utf8(&mut utf8).as_bytes().last().expect("a character has a byte")
        });
        let scan = self.scan(pending, behind, last);
        let flow = if scan.matched {
            // A match to find: search the text with the character before it, for `\b`.
            let mut text = String::with_capacity(pending.len() + 4);
            text.extend(previous);
            let first = text.len();
            text.push_str(pending);
            self.replace(&text, first, first + scan.cut, out)
        } else {
            out.push_str(&pending[..scan.cut]);
            Flow::Continue(scan.cut)
        };
        if let Flow::Continue(released) = flow
            && let Some(c) = pending[..released].chars().next_back()
        {
            *before = Some(c);
        }
        flow
    }
}

impl Patterns {
    /// Writes `text[first..cut]` with its matches replaced to `out`, and says how much of it
    /// (from `first`) is released: a match reaching past `cut` waits whole, a stop ends it.
    fn replace(&self, text: &str, first: usize, mut cut: usize, out: &mut String) -> Flow {
        let mut copied = first;
        while let Some((start, end, detector)) = self.next_match(text, copied, cut) {
            if end > cut {
                cut = start; // a match across the cut waits whole
                break;
            }
            out.push_str(&text[copied..start]);
            copied = end;
            let detector = &self.detectors[detector];
            sluicegate_guest::count(&detector.name, 1);
            match detector.action {
                Action::Mask => out.push_str(&detector.replacement),
                Action::Drop => {}
                Action::Stop => return Flow::Stop(StopReason::ContentFilter),
            }
        }
        out.push_str(&text[copied..cut]);
        Flow::Continue(cut - first)
    }
}

#[cfg(target_arch = "wasm32")]
sluicegate_guest::export_text!(PatternsGuard);

#[cfg(test)]
mod tests;
