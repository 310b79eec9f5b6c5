//! What interceptors count by name (the WIT's `host.count`): a detector's matches, say. Names
//! are checked and bounded by the tally itself (`sluicegate_guest::count::native::add_to`), for
//! guests and native interceptors alike, during a call and in the totals, because they become
//! metric labels: a guest cannot grow `/metrics` (or the host's memory) without bound or put
//! text in a label.

use std::collections::BTreeMap;
use std::sync::Mutex;

pub use sluicegate_guest::count::native::{MAX_NAME_BYTES, MAX_NAMES, checked};

/// One interceptor's counts, summed over its streams (for `/metrics`).
#[derive(Debug, Default)]
pub struct Counted(Mutex<Vec<(String, u64)>>);

impl Counted {
    /// Adds `n` to `name` (checked), and returns the name it was counted under (`other` once
    /// [`MAX_NAMES`] names are kept).
    pub fn add(&self, name: &str, n: u64) -> String {
        let mut names = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        sluicegate_guest::count::native::add_to(&mut names, name, n)
    }

    /// Every name and its sum, in the order first counted.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

/// Forgets what was counted on this thread (before a call into an interceptor, and after a call
/// that faulted: its counts go with its answer).
pub fn clear() {
    sluicegate_guest::count::native::clear();
}

/// Takes what was counted on this thread since [`clear`] into an interceptor's totals and one
/// stream's record.
pub fn take(totals: &Counted, record: &mut BTreeMap<String, u64>) {
    sluicegate_guest::count::native::drain(|name, n| {
        let name = totals.add(name, n);
        *record.entry(name).or_default() += n;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_bounded() {
        let totals = Counted::default();
        let mut record = BTreeMap::new();
        clear();
        sluicegate_guest::count("card", 2);
        sluicegate_guest::count("card", 1);
        sluicegate_guest::count("a b", 1);
        sluicegate_guest::count("", 1);
        sluicegate_guest::count(&"x".repeat(65), 1);
        take(&totals, &mut record);
        assert_eq!(record, BTreeMap::from([("card".to_string(), 3), ("invalid".to_string(), 3)]));
        for i in 0..MAX_NAMES + 10 {
            totals.add(&format!("n{i}"), 1);
        }
        let names = totals.snapshot();
        assert_eq!(names.len(), MAX_NAMES + 1, "64 names, then `other`");
        assert_eq!(names.last(), Some(&("other".to_string(), 12)));
        assert_eq!(totals.add("card", 1), "card", "a name already kept is still its own");
        clear();
        sluicegate_guest::count("lost", 1);
        clear();
        let mut after = BTreeMap::new();
        take(&totals, &mut after);
        assert!(after.is_empty(), "a cleared tally hands nothing over");
        // A guest that makes up names in one call cannot grow the tally either.
        for i in 0..10_000 {
            sluicegate_guest::count(&format!("made-up-{i}"), 1);
        }
        let mut flood = BTreeMap::new();
        take(&Counted::default(), &mut flood);
        assert_eq!(flood.len(), MAX_NAMES + 1);
        assert_eq!(flood.get("other"), Some(&(10_000 - MAX_NAMES as u64)));
    }
}
