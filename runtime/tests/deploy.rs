//! The deployment files in docs/deploy/: the Kubernetes ConfigMap's config is a valid sluicegate
//! config, the Deployment's arguments are ones `sluicegate serve` accepts, and the systemd unit
//! passes `systemd-analyze verify`.

use std::process::Command;

const MANIFEST: &str = include_str!("../../docs/deploy/kubernetes.yaml");
const UNIT: &str = include_str!("../../docs/deploy/sluicegate.service");
const BIN: &str = env!("CARGO_BIN_EXE_sluicegate");

/// The block scalar under `key: |` in the manifest, unindented.
fn block(key: &str) -> String {
    let start = MANIFEST.find(&format!("{key}: |\n")).unwrap_or_else(|| panic!("no {key} in the manifest"));
    let body = &MANIFEST[start..].split_once('\n').unwrap().1;
    let indent = body.len() - body.trim_start().len();
    body.lines()
        .take_while(|l| l.is_empty() || l.len() - l.trim_start().len() >= indent)
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_configmap_holds_a_valid_config() {
    let text = block("sluicegate.toml");
    assert!(text.contains("[[route.interceptor]]"), "{text}");
    let config = sluicegate::config::ProxyConfig::from_toml(&text).unwrap();
    config.validate().unwrap();
    assert_eq!(config.listen.unwrap().to_string(), "0.0.0.0:8080");
    assert_eq!(
        config.routes[0].interceptors[0].spec.parse::<sluicegate::spec::Spec>().unwrap().to_string(),
        "example:redact"
    );
}

#[test]
fn the_deployment_passes_arguments_that_serve_accepts() {
    let start = MANIFEST.find("args:\n").unwrap();
    let args: Vec<&str> = MANIFEST[start..]
        .lines()
        .skip(1)
        .map_while(|l| l.trim_start().strip_prefix("- "))
        .map(|a| a.split('#').next().unwrap().trim())
        .collect();
    assert_eq!(args[0], "serve");
    assert!(args.len() > 4, "{args:?}");
    let (command, flags) = args.split_at(1);
    // --help after the flags: clap refuses an unknown flag before it prints help.
    let out = Command::new(BIN).args(command).args(flags).arg("--help").output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_systemd_unit_verifies() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("systemd-unit");
    std::fs::create_dir_all(&dir).unwrap();
    let unit = dir.join("sluicegate.service");
    std::fs::write(&unit, UNIT.replace("/usr/local/bin/sluicegate", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap_or_else(|e| panic!("this test needs systemd-analyze (Debian: systemd): {e}"));
    let complaints = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && complaints.trim().is_empty(), "systemd-analyze verify: {complaints}");
    // The unit's own command line is one `serve` accepts.
    let exec = UNIT.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap().replace("${CACHE_DIRECTORY}", "/tmp/x");
    let args: Vec<&str> = exec.split_whitespace().skip(1).collect();
    let out = Command::new(BIN).args(&args).arg("--help").output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}
