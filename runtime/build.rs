//! Builds the example guests in `guest-examples/` for `wasm32-wasip2` and embeds them.
//!
//! As wasmtime does for its test programs, the guests are built by a nested `cargo build` into
//! a target directory of their own (`target/guests`, shared by debug and release builds of the
//! host), so `cargo build` and `cargo test` need no manual step. The generated
//! `$OUT_DIR/examples.rs` lists every guest by name; `runtime/src/examples.rs` includes it.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (package, library file stem) of every example guest.
const GUESTS: &[(&str, &str)] = &[
    ("passthrough", "passthrough"),
    ("legacy-passthrough", "legacy_passthrough"),
    ("redact", "redact"),
    ("drop", "drop"),
    ("summary", "summary"),
];

const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "guest";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap();
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    println!(
        "cargo:rerun-if-changed={}",
        root.join("guest-examples").display()
    );
    println!("cargo:rerun-if-changed={}", root.join("wit").display());

    let target_dir = cargo_target_dir(&out_dir).join("guests");
    let mut cmd = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .args(["--profile", PROFILE, "--target", TARGET])
        .arg("--target-dir")
        .arg(&target_dir);
    for (package, _) in GUESTS {
        cmd.args(["-p", package]);
    }
    // Flags meant for the host must not reach the guests; SIMD makes the guests' scanning faster.
    cmd.env_remove("RUSTFLAGS")
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+simd128");
    let status = cmd
        .status()
        .expect("running cargo to build the example guests");
    if !status.success() {
        panic!(
            "building the example guests for {TARGET} failed (see above). \
             If the target is missing, install it with `rustup target add {TARGET}`."
        );
    }

    let mut generated = String::from(
        "/// Every example guest: (name, component bytes).\npub const EXAMPLES: &[(&str, &[u8])] = &[\n",
    );
    for (package, stem) in GUESTS {
        let wasm = target_dir
            .join(TARGET)
            .join(PROFILE)
            .join(format!("{stem}.wasm"));
        assert!(
            wasm.exists(),
            "expected {} after building the guests",
            wasm.display()
        );
        writeln!(
            generated,
            "    ({package:?}, include_bytes!({:?})),",
            wasm.display().to_string()
        )
        .unwrap();
    }
    generated.push_str("];\n");
    std::fs::write(out_dir.join("examples.rs"), generated).unwrap();
}

/// The target directory the host is being built in: the nearest ancestor of `OUT_DIR` that
/// cargo marked with `CACHEDIR.TAG`.
fn cargo_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").exists())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| out_dir.join("target"))
}
