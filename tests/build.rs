//! Builds the guests that only tests use (hostile, legacy-world and unlinkable ones, in
//! `tests/guests/`), the same way the runtime builds its examples. They are never shipped.

include!("../runtime/build/guests.rs");

fn main() {
    println!("cargo:rerun-if-changed={}", workspace_root().join("tests/guests").display());
    println!("cargo:rerun-if-changed={}", workspace_root().join("guest-examples/sdk").display());
    println!("cargo:rerun-if-changed=../runtime/build/guests.rs");
    build_guests(
        &[("hostile", "hostile"), ("legacy-redact", "legacy_redact"), ("unlinkable", "unlinkable")],
        "test_guests.rs",
        "TEST_GUESTS",
    );
}
