//! The `sluicegate` binary as a user runs it: the flags of `serve` and the errors a bad start
//! gives. (The integration tests of this package are also why `cargo test --workspace` builds the
//! binary, which the tests in `tests/` that run the proxy as a process need.)

use std::process::Command;

fn sluicegate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluicegate"))
}

#[test]
fn serve_lists_the_tls_and_upstream_flags() {
    let out = sluicegate().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--listen", "--upstream", "--upstream-ca", "--tls-cert", "--tls-key", "--config", "--admin"] {
        assert!(help.contains(flag), "`serve --help` lists {flag}:\n{help}");
    }
}

#[test]
fn a_certificate_without_its_key_is_refused() {
    let out = sluicegate()
        .args(["serve", "--listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:9", "--tls-cert", "cert.pem"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_missing_credential_variable_stops_the_start_and_is_named() {
    let dir = std::env::temp_dir().join(format!("sluicegate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        "upstream = \"http://127.0.0.1:9\"\n[[route]]\nprefix = \"/p\"\n\
         set_request_headers = { authorization = \"Bearer ${SLUICEGATE_CLI_TEST_KEY}\" }\n",
    )
    .unwrap();
    let out = sluicegate()
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env_remove("SLUICEGATE_CLI_TEST_KEY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("SLUICEGATE_CLI_TEST_KEY is not set") && stderr.contains("route `/p`"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
