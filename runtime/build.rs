//! Builds the example guests in `guest-examples/` for `wasm32-wasip2` and embeds them: the
//! generated `$OUT_DIR/examples.rs` lists every guest by name, and `src/examples.rs` includes it.
//! `cargo build` and `cargo test` need no manual step.

include!("build/guests.rs");

fn main() {
    println!("cargo:rerun-if-changed={}", workspace_root().join("guest-examples").display());
    println!("cargo:rerun-if-changed=build/guests.rs");
    build_guests(
        &[
            ("passthrough", "passthrough"),
            ("legacy-passthrough", "legacy_passthrough"),
            ("redact", "redact"),
            ("drop", "drop"),
            ("summary", "summary"),
        ],
        "examples.rs",
        "EXAMPLES",
    );
}
