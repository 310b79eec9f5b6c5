//! Debian packages that tests run as peers (Chromium, redis-server): installed when missing and
//! the tests run as root on Debian, as on a fresh CI machine.

use std::path::Path;
use std::process::Command;

/// Makes sure `works` holds, installing `package` with apt-get if need be and possible (first
/// from the lists as they are, then after an update). False if it still does not hold.
pub fn ensure(package: &str, works: impl Fn() -> bool) -> bool {
    if works() {
        return true;
    }
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if root && Path::new("/usr/bin/apt-get").exists() {
        eprintln!("installing Debian's {package} for the tests that need it");
        for args in [&["install", "-y", "-q", package][..], &["update", "-q"], &["install", "-y", "-q", package]] {
            let _ = Command::new("apt-get").args(args).env("DEBIAN_FRONTEND", "noninteractive").output();
            if works() {
                return true;
            }
        }
    }
    false
}
