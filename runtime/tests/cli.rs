//! The `sluicegate` binary as a user runs it.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn sluicegate(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluicegate"))
        .args(args)
        .env("SLUICEGATE_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

const STREAM: &[u8] =
    b"event: ping\ndata: {}\n\n: keep-alive\n\nid: 7\ndata: {\"to\":\"bob@example.com\"}\n\ndata: unterminated";

#[test]
fn run_redacts_a_stream_from_stdin() {
    let out = sluicegate(&["run", "--interceptor", "example:redact"], STREAM);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "event: ping\ndata: {}\n\n: keep-alive\n\ndata: {\"to\":\"[redacted]\"}\nid: 7\n\n"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("discarded an unterminated event"));
}

#[test]
fn run_chains_in_order_with_config_and_component_files() {
    let (_, drop_path) = sluicegate::examples::EXAMPLES_PATHS.iter().find(|(n, _)| *n == "drop").unwrap();
    let out = sluicegate(
        &["run", "-i", drop_path, "-i", "native:summary", "--set", "0.types=message", "--set", "1.event=stats"],
        STREAM,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "event: ping\ndata: {}\n\n: keep-alive\n\nid: 7\n\nevent: stats\ndata: {\"events\":1,\"data_bytes\":2}\n\n"
    );
}

#[test]
fn bad_specs_and_components_fail_with_the_problem_named() {
    let out = sluicegate(&["run", "-i", "example:nope"], b"");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no example named `nope`"));

    let dir = std::env::temp_dir().join(format!("sluicegate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.wasm");
    std::fs::write(&empty, b"\0asm\x0d\x00\x01\x00").unwrap();
    let out = sluicegate(&["run", "-i", empty.to_str().unwrap()], b"");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("implements neither interceptor world"), "{err}");

    let out = sluicegate(&["run", "-i", dir.join("missing.wasm").to_str().unwrap()], b"");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading component"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn list_names_examples_and_natives() {
    let out = sluicegate(&["list"], b"");
    let text = String::from_utf8(out.stdout).unwrap();
    for name in ["passthrough", "legacy-passthrough", "redact", "drop", "summary", "deny-phrases"] {
        assert!(text.contains(&format!("  {name}\n")), "{text}");
    }
}

#[test]
fn serve_refuses_bad_configs_before_listening() {
    let dir = std::env::temp_dir().join(format!("sluicegate-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let (unknown, batch, route, empty) = (
        write("unknown.toml", "upstream = \"http://127.0.0.1:1\"\nlisten_port = 3\n"),
        write("batch.toml", "upstream = \"http://127.0.0.1:1\"\n[batch]\nmax_events = 0\n"),
        write(
            "route.toml",
            "upstream = \"http://127.0.0.1:1\"\n[[route]]\nprefix = \"/a\"\n[[route.interceptor]]\nspec = \"example:nope\"\n",
        ),
        write("empty.wasm", "\0asm\x0d\x00\x01\x00"),
    );
    let cases = [
        (vec!["--upstream", "ftp://example.com"], "only http:// upstreams are supported"),
        (vec!["--upstream", "http://127.0.0.1:1", "-i", "native:nope"], "no native interceptor named `nope`"),
        (vec!["--config", &unknown], "unknown field `listen_port`"),
        (vec!["--config", &batch], "batch.max_events must be at least 1"),
        (vec!["--config", &route], "no example named `nope`"),
        (vec!["--upstream", "http://127.0.0.1:1", "-i", &empty], "implements neither interceptor world"),
    ];
    for (args, expected) in cases {
        let mut full = vec!["serve", "--listen", "127.0.0.1:0"];
        full.extend(args.iter().map(|s| &**s));
        let out = sluicegate(&full, b"");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{full:?} should fail");
        assert!(err.contains(expected), "{full:?}: expected `{expected}` in: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn demo_shows_the_stream_before_and_after() {
    let out = sluicegate(&["demo", "--once", "--listen", "127.0.0.1:0"], b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (before, after) = text.split_once("---- /llm through sluicegate ----").expect("both streams shown");
    // The addresses arrive one token per event, as a model sends them.
    assert!(before.contains(r#""text":"lovelace""#) && before.contains(r#""text":"@""#), "{before}");
    assert!(before.contains("event: ping"));
    assert!(!after.contains("lovelace") && !after.contains(r#""@""#) && !after.contains("event: ping"), "{after}");
    assert!(after.contains("[redacted]") && after.contains("event: summary"));
    assert!(text.contains("curl -N http://127.0.0.1:"));
}

#[test]
fn bench_measures_an_interceptor_against_a_counterpart() {
    let (_, component) = sluicegate::examples::EXAMPLES_PATHS.iter().find(|(n, _)| *n == "drop").unwrap();
    let out =
        sluicegate(&["bench", "-i", component, "--against", "native:drop", "--batch-sizes", "1,64", "--json"], b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    for r in results {
        assert!(r["ns_per_event"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(results[1]["interceptor"], "native:drop");
    assert_eq!(results[3]["batch_size"], 64);
    // Progress goes to stderr, one line per cell.
    assert_eq!(String::from_utf8_lossy(&out.stderr).matches("ns/event").count(), 4);
}

fn example_path(name: &str) -> &'static str {
    sluicegate::examples::EXAMPLES_PATHS.iter().find(|(n, _)| *n == name).unwrap().1
}

#[test]
fn check_describes_a_good_component() {
    let out = sluicegate(&["check", example_path("redact")], b"");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    for line in [
        "world: sluicegate:interceptor/batch-interceptor",
        "  exports:\n    sluicegate:interceptor/batch@0.1.0\n",
        "sluicegate:interceptor/host@0.1.0   log lines and configuration",
        "instantiated and opened a stream in",
        "sample batch: 16 events in, 16 out",
        "ok: ready to serve",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    let legacy = sluicegate(&["check", example_path("legacy-passthrough")], b"");
    assert!(String::from_utf8_lossy(&legacy.stdout).contains("world: sluicegate:interceptor/event-interceptor"));
}

#[test]
fn check_names_each_problem() {
    let dir = std::env::temp_dir().join(format!("sluicegate-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let core = dir.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let missing = dir.join("missing.wasm");
    let text = dir.join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["check", core.to_str().unwrap()], "a core WebAssembly module, not a component"),
        (&["check", text.to_str().unwrap()], "not a WebAssembly file"),
        (&["check", example_path("redact"), "--set", "replacement=a\rb"], "opening a stream failed"),
        (&["check", missing.to_str().unwrap()], "reading"),
    ];
    for (args, problem) in cases {
        let out = sluicegate(args, b"");
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "{args:?} should fail:\n{all}");
        assert!(all.contains(problem), "{args:?}: expected {problem:?} in:\n{all}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
