// Shared by `runtime/build.rs` and `tests/build.rs` (through `include!`): build guest crates of
// this workspace for wasm32-wasip2 with a nested `cargo build`, as wasmtime builds its test
// programs, into a target directory of their own (`target/guests`) so the outer build's lock is
// not contended.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const GUEST_TARGET: &str = "wasm32-wasip2";
const GUEST_PROFILE: &str = "guest";

/// Builds `guests` (package, library file stem) and writes `$OUT_DIR/{file}` declaring
/// `pub const {konst}: &[(&str, &[u8])]` with each guest's name and embedded bytes, plus
/// `pub const {konst}_PATHS: &[(&str, &str)]` with each component's path on disk.
fn build_guests(guests: &[(&str, &str)], file: &str, konst: &str) {
    let root = workspace_root();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    let target_dir = cargo_target_dir(&out_dir).join("guests");
    ensure_target_installed();
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .args(["--profile", GUEST_PROFILE, "--target", GUEST_TARGET])
        .arg("--target-dir")
        .arg(&target_dir);
    for (package, _) in guests {
        cmd.args(["-p", package]);
    }
    // Flags meant for the host must not reach the guests; SIMD makes the guests' scanning faster.
    // Nor must the outer build's compiler wrapper: under `cargo clippy` the guests would be
    // linted again (they are workspace members, which clippy checks for the host anyway), with
    // its `-D warnings`, and built twice over, once by clippy and once by `cargo test`.
    cmd.env_remove("RUSTFLAGS")
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+simd128")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CLIPPY_ARGS");
    let status = cmd.status().expect("running cargo to build guests");
    if !status.success() {
        panic!(
            "building guests for {GUEST_TARGET} failed (see above). \
             If the target is missing, install it with `rustup target add {GUEST_TARGET}`."
        );
    }
    let mut bytes = format!("/// Each guest's name and its component's bytes.\npub const {konst}: &[(&str, &[u8])] = &[\n");
    let mut paths =
        format!("/// Each guest's name and its component's path on disk.\npub const {konst}_PATHS: &[(&str, &str)] = &[\n");
    for (package, stem) in guests {
        let wasm = target_dir.join(GUEST_TARGET).join(GUEST_PROFILE).join(format!("{stem}.wasm"));
        assert!(wasm.exists(), "expected {} after building the guests", wasm.display());
        let path = wasm.display().to_string();
        writeln!(bytes, "    ({package:?}, include_bytes!({path:?})),").unwrap();
        writeln!(paths, "    ({package:?}, {path:?}),").unwrap();
    }
    bytes.push_str("];\n");
    paths.push_str("];\n");
    std::fs::write(out_dir.join(file), bytes + &paths).unwrap();
}

/// Installs the guest target through rustup if the compiler in use lacks it, so that a fresh
/// checkout builds with plain `cargo build`. Without rustup, the build fails below with a message
/// that says what to install.
fn ensure_target_installed() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(&rustc).args(["--print", "sysroot"]).output() else { return };
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if sysroot.join("lib/rustlib").join(GUEST_TARGET).exists() {
        return;
    }
    println!("cargo:warning=installing the {GUEST_TARGET} target with rustup (needed to build the guests)");
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", GUEST_TARGET]);
    if let Ok(toolchain) = std::env::var("RUSTUP_TOOLCHAIN") {
        rustup.args(["--toolchain", &toolchain]);
    }
    if !rustup.status().is_ok_and(|s| s.success()) {
        println!("cargo:warning=could not install {GUEST_TARGET}; run `rustup target add {GUEST_TARGET}`");
    }
}

/// The workspace's root: the nearest ancestor of the building crate that holds `guest-examples`.
fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    manifest_dir.ancestors().find(|dir| dir.join("guest-examples").is_dir()).expect("the workspace root").to_path_buf()
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
