//! Builds the guests that only tests use (hostile, legacy-world and unlinkable ones, in
//! `tests/guests/`), the same way the runtime builds its examples. They are never shipped. Also
//! takes the README's Rust example out of the README, so that the test of it compiles what the
//! README shows (`tests/tests/all/sdk.rs`).

include!("../runtime/build/guests.rs");

fn main() {
    println!("cargo:rerun-if-changed={}", workspace_root().join("tests/guests").display());
    println!("cargo:rerun-if-changed={}", workspace_root().join("guest-examples/sdk").display());
    println!("cargo:rerun-if-changed=../runtime/build/guests.rs");
    readme_example();
    build_guests(
        &[
            ("hostile", "hostile"),
            ("legacy-redact", "legacy_redact"),
            ("unlinkable", "unlinkable"),
            ("v0-1-0", "v0_1_0"),
            ("v0-1-1", "v0_1_1"),
            ("v0-1-2", "v0_1_2"),
        ],
        "test_guests.rs",
        "TEST_GUESTS",
    );
}

/// Writes the first `rust` code block after the README's "### In Rust" heading to
/// `$OUT_DIR/readme_example.rs`.
fn readme_example() {
    let readme = workspace_root().join("README.md");
    println!("cargo:rerun-if-changed={}", readme.display());
    let text = std::fs::read_to_string(&readme).expect("README.md");
    let section = text.split_once("\n### In Rust\n").expect("the README has a section \"### In Rust\"").1;
    let block = section.split_once("```rust\n").expect("a rust code block in \"### In Rust\"").1;
    let code = block.split_once("\n```").expect("the code block ends").0;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("readme_example.rs");
    std::fs::write(out, code).expect("writing the README's example");
}
