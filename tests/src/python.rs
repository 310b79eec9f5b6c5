//! Python packages for tests that use real SDKs (MCP, OpenAI, Anthropic): a virtual environment
//! per pinned set, under Cargo's target directory, created on first use (PyPI must be reachable
//! then), so `cargo test` needs no manual step.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A Python that can `import` each of `modules`, from a venv holding `packages` (pinned
/// requirement strings); `name` names the venv directory, in `dir` (a test's
/// `CARGO_TARGET_TMPDIR`).
pub fn venv(dir: &Path, name: &str, packages: &[&str], modules: &[&str]) -> PathBuf {
    // Tests of one binary run at once: two creating one venv together would each see the other's
    // half-made one. One creation at a time.
    static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = CREATING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let venv = dir.join(format!("{name}-venv"));
    let python = venv.join("bin/python");
    let probe = modules.iter().map(|m| format!("import {m}")).collect::<Vec<_>>().join("; ");
    let ready =
        |py: &Path| Command::new(py).args(["-c", &probe]).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if ready(&python) {
        return python;
    }
    let status = Command::new("python3").args(["-m", "venv"]).arg(&venv).status();
    assert!(status.is_ok_and(|s| s.success()), "this test needs python3 with the venv module to install {packages:?}");
    let status = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(packages)
        .status();
    assert!(
        status.is_ok_and(|s| s.success()) && ready(&python),
        "could not install {packages:?} into {}: they come from PyPI",
        venv.display()
    );
    python
}
