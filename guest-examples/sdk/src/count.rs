//! Counts of what an interceptor found or did, by name (the WIT's `host.count`, since 0.1.3).
//!
//! A guard calls [`count`] while it answers a call; the proxy attributes the counts to the
//! stream the call is for (its enforcement record) and sums them per interceptor in `/metrics`.
//! In a component the call goes through the WIT import. Natively (an interceptor inside the
//! proxy, `native:NAME`) it goes to a per-thread tally that the proxy takes after each call: a
//! call into an interceptor and everything it does run on one thread.

/// Adds `n` to this interceptor's count called `name` for the stream being answered. Name what
/// was found (`card`, `email`), never the text that was found.
pub fn count(name: &str, n: u32) {
    #[cfg(target_arch = "wasm32")]
    crate::guest::bindings::sluicegate::interceptor::host::count(name, n);
    #[cfg(not(target_arch = "wasm32"))]
    native::add(name, n);
}

/// The per-thread tally the proxy reads (natively only).
#[cfg(not(target_arch = "wasm32"))]
#[doc(hidden)]
pub mod native {
    use std::cell::RefCell;

    thread_local! {
        static TALLY: RefCell<Vec<(String, u64)>> = const { RefCell::new(Vec::new()) };
    }

    /// The most distinct names a tally keeps; later names are counted as `other`.
    pub const MAX_NAMES: usize = 64;

    /// The longest name, in bytes.
    pub const MAX_NAME_BYTES: usize = 64;

    /// The name a count is kept under: `name` itself if it is 1 to 64 characters of
    /// `A-Z a-z 0-9 _ . : -`, else `invalid`. Names become metric labels: no text goes in one.
    pub fn checked(name: &str) -> &str {
        let valid = !name.is_empty()
            && name.len() <= MAX_NAME_BYTES
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
        if valid { name } else { "invalid" }
    }

    /// Adds `n` to `name` (checked) in `names`, and returns the name it was counted under
    /// (`other` once [`MAX_NAMES`] names are kept), so that no caller can grow `names` without
    /// bound: this thread's tally during one call, and an interceptor's totals in the host.
    pub fn add_to(names: &mut Vec<(String, u64)>, name: &str, n: u64) -> String {
        let name = checked(name);
        let kept = names.len() < MAX_NAMES || names.iter().any(|(known, _)| known == name);
        let name = if kept { name } else { "other" };
        match names.iter_mut().find(|(known, _)| known == name) {
            Some((_, sum)) => *sum += n,
            None => names.push((name.to_string(), n)),
        }
        name.to_string()
    }

    /// Adds to this thread's tally.
    pub fn add(name: &str, n: u32) {
        TALLY.with(|tally| add_to(&mut tally.borrow_mut(), name, u64::from(n)));
    }

    /// Forgets this thread's tally (before a call into an interceptor, or after one that faulted).
    pub fn clear() {
        TALLY.with(|tally| tally.borrow_mut().clear());
    }

    /// Hands every name counted on this thread since [`clear`] to `each`, and forgets them.
    pub fn drain(mut each: impl FnMut(&str, u64)) {
        TALLY.with(|tally| {
            for (name, n) in tally.borrow_mut().drain(..) {
                each(&name, n);
            }
        });
    }
}
