//! The example guests, built from `guest-examples/` by the build script and embedded in the
//! binary, so that `example:NAME` works anywhere the binary does.

include!(concat!(env!("OUT_DIR"), "/examples.rs"));

/// The component bytes of example `name`.
pub fn component(name: &str) -> Option<&'static [u8]> {
    EXAMPLES.iter().find(|(n, _)| *n == name).map(|(_, bytes)| *bytes)
}

/// The names of every example.
pub fn names() -> impl Iterator<Item = &'static str> {
    EXAMPLES.iter().map(|(n, _)| *n)
}

/// What an example (and its native twin) does, and its config keys, for `sluicegate list`.
pub fn describe(name: &str) -> (&'static str, &'static str) {
    match name {
        "passthrough" => ("keeps every event: the baseline for what the boundary costs", ""),
        "legacy-passthrough" => ("passthrough on the per-event contract, run through the shim", ""),
        "drop" => ("drops events by type", "types (comma-separated, default `ping`)"),
        "summary" => ("appends a count of the stream's events and data bytes at its end", "event (default `summary`)"),
        "redact" => (
            "text world: masks e-mail addresses in everything a model streams, split or escaped",
            "replacement (default `[redacted]`)",
        ),
        "deny-phrases" => (
            "text world: ends a stream at a phrase, the way its format ends a filtered answer",
            "phrases (comma-separated, required)",
        ),
        "token-budget" => (
            "text world: output tokens per API key and window, in the store; 429 once spent",
            "tokens (required), window_seconds (3600), key_header (`authorization`)",
        ),
        "patterns" => (
            "text world: PII and secrets (e-mail, phone, card, IBAN, SSN, IP, API keys, JWT, private keys) and your own patterns, masked, dropped or stopped, exact across deltas",
            "detect (default all), action (mask|drop|stop), replacement, cap, pattern.NAME, action.NAME, replacement.NAME, cap.NAME",
        ),
        "tool-guard" => ("which MCP tools a client may see and call", "allow or deny (comma-separated tool names)"),
        _ => ("", ""),
    }
}
