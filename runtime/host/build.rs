//! Builds the example guests in `guest-examples/` for `wasm32-wasip2` and embeds them: the
//! generated `$OUT_DIR/examples.rs` lists every guest by name, and `src/examples.rs` includes it.
//! (The build script's body is shared with the tests' guests: `runtime/build/guests.rs`.)
//! `cargo build` and `cargo test` need no manual step.

include!("../build/guests.rs");

fn main() {
    if std::env::var_os("CARGO_FEATURE_EXAMPLES").is_none() {
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("examples.rs");
        std::fs::write(
            out,
            "/// No examples: built without the `examples` feature.\npub const EXAMPLES: &[(&str, &[u8])] = &[];\n\
             /// No examples: built without the `examples` feature.\npub const EXAMPLES_PATHS: &[(&str, &str)] = &[];\n",
        )
        .unwrap();
        return;
    }
    println!("cargo:rerun-if-changed={}", workspace_root().join("guest-examples").display());
    println!("cargo:rerun-if-changed=../build/guests.rs");
    build_guests(
        &[
            ("passthrough", "passthrough"),
            ("legacy-passthrough", "legacy_passthrough"),
            ("redact", "redact"),
            ("drop", "drop"),
            ("summary", "summary"),
            ("deny-phrases", "deny_phrases"),
            ("tool-guard", "tool_guard"),
            ("token-budget", "token_budget"),
            ("patterns", "patterns"),
        ],
        "examples.rs",
        "EXAMPLES",
    );
}
