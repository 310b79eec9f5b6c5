//! Interceptors written in Python and JavaScript (`guest-examples/python`, `guest-examples/js`):
//! built from source with their pinned toolchains, they must give exactly the output of the Rust
//! examples on the same streams, in batches of every size, and run behind the proxy; the token
//! budgets also charge the host store exactly as the Rust one does.
//!
//! The toolchains are installed on first use under the target directory (componentize-py from
//! the Python package index into a venv; ComponentizeJS and componentize-qjs from the npm
//! registry, with the committed lockfile), so these tests need python3, node and npm, and the
//! network the first time. Without them they fail and say what is missing; set
//! SLUICEGATE_SKIP_FOREIGN_GUESTS=1 to skip them on purpose (they then print that they skipped).

use sluicegate::StreamContext;
use sluicegate::chain::Chain;
use sluicegate::spec::Spec;
use sluicegate::store::{Backend, SharedStore};
use sluicegate_guest::Store;
use sluicegate_tests::net::*;
use sluicegate_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

const SKIP: &str = "SLUICEGATE_SKIP_FOREIGN_GUESTS";

fn skipped(what: &str) -> bool {
    let skip = std::env::var_os(SKIP).is_some();
    if skip {
        eprintln!("SKIPPED: {what} ({SKIP} is set)");
    }
    skip
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples")
}

fn tmp() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

/// Runs a command, panicking with its output and `hint` if it fails.
fn run(command: &mut Command, hint: &str) {
    let what = format!("{command:?}");
    match command.output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "{what} failed ({}); {hint}\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("{what} could not start: {e}; {hint}"),
    }
}

/// A short, stable name for a file's content, so a changed pin gets a fresh toolchain.
fn content_tag(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("{:08x}", hash as u32)
}

/// The Python examples, built once per test run: `NAME.wasm` for each.
fn python_guests() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let python = examples_dir().join("python");
        let requirements = python.join("requirements.txt");
        let venv = tmp().join(format!("componentize-py-{}", content_tag(&requirements)));
        let tool = venv.join("bin/componentize-py");
        if !tool.exists() {
            let hint = "these tests need python3 (with venv and pip) and the Python package index";
            run(Command::new("python3").args(["-m", "venv"]).arg(&venv), hint);
            run(Command::new(venv.join("bin/pip")).args(["install", "-q", "-r"]).arg(&requirements), hint);
        }
        let out = tmp().join("python-guests");
        run(
            Command::new(python.join("build.sh")).arg(&out).env("COMPONENTIZE_PY", &tool),
            "building the Python guests",
        );
        out
    })
}

/// The JavaScript examples, built once per test run with both toolchains:
/// `NAME.spidermonkey.wasm` (ComponentizeJS) and `NAME.quickjs.wasm` (componentize-qjs).
fn js_guests() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let js = examples_dir().join("js");
        let toolchain = tmp().join(format!("componentize-js-{}", content_tag(&js.join("package-lock.json"))));
        let bin = toolchain.join("node_modules/.bin");
        if !bin.join("componentize-js").exists() || !bin.join("componentize-qjs").exists() {
            std::fs::create_dir_all(&toolchain).unwrap();
            for file in ["package.json", "package-lock.json", ".npmrc"] {
                std::fs::copy(js.join(file), toolchain.join(file)).unwrap();
            }
            let hint = "these tests need node and npm, and the npm registry";
            run(Command::new("npm").args(["ci", "--silent", "--no-audit", "--no-fund"]).current_dir(&toolchain), hint);
        }
        let out = tmp().join("js-guests");
        run(
            Command::new("node").arg(js.join("build.mjs")).arg(&out).env("SLUICEGATE_JS_BIN", &bin),
            "building the JavaScript guests",
        );
        out
    })
}

/// Streams that exercise the examples: the shared sample, and one with the scanner's edge cases.
fn streams() -> Vec<Vec<u8>> {
    let edge_cases = concat!(
        "data: mail bob@example.com now, a.b+c@mail.example.org, x_y@z.io.\nid: 7\n\n",
        ": a comment bob@example.com\n\n",
        "data: {\"t\":\"hi\\nbob@example.com\",\"u\":\"\\u00e9bob@example.com\",\"v\":\"\\\\eve@example.com\"}\n",
        "data: \u{e9} bob@example.com \u{fc}, no address @ here, a@b, a@b.c, @x.com, ..x@y.com, a@b..com\n\n",
        "event:\ndata: the empty type is a message; mail at@end-.com, a@b.c0m, trail@x.io-\n\n",
        "event: ping\nid: 8\ndata: x@y.org\n\n",
        "retry: 100\n\n",
        "event: heartbeat\ndata: \u{1f600}@example.com z@\u{e9}.com\n\n",
    );
    let mut streams = vec![sample_stream(), edge_cases.as_bytes().to_vec()];
    // Token-split answers in every LLM format, with the escapes JSON strings carry.
    let answer =
        "Write to alice.smith@example.com, \"bob\"@x.io or caf\u{e9}+1@mail.example.org\n\u{1f600} zed@end.org";
    for format in sluicegate_tests::llm::FORMATS {
        let deltas = sluicegate_tests::llm::tokens(answer);
        streams.push(sluicegate_tests::llm::stream(format, &deltas, true).into_bytes());
    }
    // Two chat choices interleaved, one closing before the other, and a stream cut short.
    streams.push(
        concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"mail ann\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":1,\"delta\":{\"content\":\"ask eve@\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"@a.org\"},\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"choices\":[{\"index\":1,\"delta\":{\"content\":\"b.com\\u00e9\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":1,\"delta\":{\"content\":\" and zoe@c\"}}]}\n\n",
        )
        .as_bytes()
        .to_vec(),
    );
    // Tool-call arguments, reasoning and a Gemini answer, split across events, and an MCP result
    // with an escaped address: the channels only the host's engine knows.
    streams.push(
        concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"the secret\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\" plan: ask zed@\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"to\\\":\\\"ann@exa\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"end.org\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"mple.com\\\"}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: [DONE]\n\n",
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"mail caf\\u00e9+1\"}],\"role\":\"model\"},\"index\":0}]}\n\n",
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"@mail.example.org\"}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0}]}\n\n",
            "event: message\nid: 9\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"bob\\u0040example.com\"}]}}\n\n",
        )
        .as_bytes()
        .to_vec(),
    );
    streams
}

fn configs(name: &str) -> Vec<Vec<(&'static str, &'static str)>> {
    match name {
        "drop" => vec![vec![], vec![("types", "ping, message,heartbeat")]],
        "redact" => vec![vec![], vec![("replacement", "<\u{e9}mail>")]],
        "deny-phrases" => vec![vec![("phrases", "secret plan, caf\u{e9}+1")], vec![("phrases", "ZED@END")]],
        _ => unreachable!(),
    }
}

fn chain_of(spec: &str, config: &[(&str, &str)]) -> Chain {
    let interceptor = spec.parse::<Spec>().unwrap().load(runtime(), config_of(config));
    Chain::new(vec![interceptor.unwrap_or_else(|e| panic!("loading {spec}: {e:#}"))])
}

/// `component` (built from another language) against the Rust `example:NAME`.
fn assert_same_as_rust(component: &Path, name: &str) {
    let spec = component.to_str().unwrap();
    let mut changed = 0;
    for stream in streams() {
        let events = parse_all(&stream);
        for config in configs(name) {
            let (foreign, rust) = (chain_of(spec, &config), chain_of(&format!("example:{name}"), &config));
            for size in [1, 3, 64] {
                let batches = batches_of(&events, size);
                let expected = run_chain(&rust, &batches);
                changed += usize::from(expected != events);
                assert_eq!(
                    run_chain(&foreign, &batches),
                    expected,
                    "{spec} vs example:{name}, batch {size}, {config:?}"
                );
            }
        }
    }
    assert!(changed >= 12, "example:{name} changes these streams, so the comparison means something");
}

#[test]
fn python_examples_match_the_rust_ones() {
    if skipped("Python guests") {
        return;
    }
    for name in ["drop", "redact", "deny-phrases"] {
        assert_same_as_rust(&python_guests().join(format!("{name}.wasm")), name);
    }
}

#[test]
fn javascript_examples_match_the_rust_ones_with_both_toolchains() {
    if skipped("JavaScript guests") {
        return;
    }
    for name in ["drop", "redact", "deny-phrases"] {
        for engine in ["spidermonkey", "quickjs"] {
            assert_same_as_rust(&js_guests().join(format!("{name}.{engine}.wasm")), name);
        }
    }
}

/// The header that names the budget's tenant in these streams, and a stream context carrying it.
const KEY_HEADER: (&str, &str) = ("authorization", "sha256:0a1b2c");

fn budget_context(status: u16) -> StreamContext {
    let request_headers = vec![(KEY_HEADER.0.to_string(), KEY_HEADER.1.to_string())];
    StreamContext { status, request_headers, ..context() }
}

/// `spec` loaded as `token-budget` with a budget of `tokens` over `store`.
fn budget_chain(spec: &str, tokens: i64, store: &Arc<SharedStore>) -> Chain {
    // The context carries only the second of these headers: each language falls back alike.
    let config = config_of(&[("tokens", &tokens.to_string()), ("key_header", "x-api-key, Authorization")])
        .with_store(Store::new(Arc::new(store.scoped("budget"))));
    let interceptor = spec.parse::<Spec>().unwrap().load(runtime(), config);
    Chain::new(vec![interceptor.unwrap_or_else(|e| panic!("loading {spec}: {e:#}"))])
}

/// What `store` holds for the test's key: the budget's total, stored under the header's hash.
fn charged(store: &Arc<SharedStore>) -> Option<String> {
    let key = token_budget::key_of(Some(KEY_HEADER.1));
    store.scoped("budget").get(&key).unwrap().map(|entry| entry.value)
}

/// `component` (a `token-budget` built from another language) against the Rust
/// `example:token-budget`: on every LLM format, cut mid-stream or within its budget, in batches
/// of every size, the same events out, the same charge in the store under the same hashed key,
/// and then the same answer to the next request (429 once the budget is spent).
fn assert_budget_same_as_rust(component: &Path) {
    let spec = component.to_str().unwrap();
    let answer = "Write to alice.smith@example.com, \"bob\" or caf\u{e9}\n\u{1f600} and then some more words";
    let deltas = sluicegate_tests::llm::tokens(answer);
    let estimate: i64 = token_budget::estimate_of(&deltas);
    let refusal = parse_all(b"data: {\"model\":\"m\",\"stream\":true}\n\n");
    let mut cut = 0;
    for format in sluicegate_tests::llm::FORMATS {
        for ids in [false, true] {
            let events = parse_all(sluicegate_tests::llm::stream(format, &deltas, ids).as_bytes());
            for budget in [estimate / 3, 10_000] {
                for size in [1, 3, 64] {
                    let batches = batches_of(&events, size);
                    let mut seen = Vec::new();
                    for spec in [spec, "example:token-budget"] {
                        let store = SharedStore::memory();
                        let chain = budget_chain(spec, budget, &store);
                        let out = run_chain_in(&chain, &budget_context(200), &batches);
                        let charged = charged(&store);
                        let next = run_chain_in(&chain, &budget_context(0), std::slice::from_ref(&refusal));
                        seen.push((out, charged, next));
                    }
                    let (foreign, rust) = (&seen[0], &seen[1]);
                    assert_eq!(
                        foreign, rust,
                        "{spec} vs example:token-budget: {format:?}, ids {ids}, budget {budget}, batch {size}"
                    );
                    assert!(rust.1.is_some(), "the stream was charged to the header's key");
                    // The budget is checked per batch: a stream that arrives in one batch is
                    // charged, and only the next one is cut.
                    cut += usize::from(rust.0 != events && size < 64);
                }
            }
        }
    }
    assert_eq!(cut, 3 * 2 * 2, "every stream over its budget in several batches was cut, and none within it");
}

#[test]
fn python_and_javascript_budgets_match_the_rust_one_on_the_host_store() {
    if skipped("Python and JavaScript guests") {
        return;
    }
    assert_budget_same_as_rust(&python_guests().join("token-budget.wasm"));
    for engine in ["spidermonkey", "quickjs"] {
        assert_budget_same_as_rust(&js_guests().join(format!("token-budget.{engine}.wasm")));
    }
}

/// A foreign-language guest with a configuration it refuses: loading it fails (a text guard
/// starts one instance at load), so the proxy does not start, or reload, with a wrong setting.
#[test]
fn a_refused_configuration_stops_the_load() {
    if skipped("Python and JavaScript guests") {
        return;
    }
    let components = [python_guests().join("redact.wasm"), js_guests().join("redact.quickjs.wasm")];
    for component in components {
        let spec = component.to_str().unwrap();
        let loaded = spec.parse::<Spec>().unwrap().load(runtime(), config_of(&[("replacement", "a\rb")]));
        let error = format!("{:#}", loaded.err().unwrap_or_else(|| panic!("{spec}: a CR in `replacement` loaded")));
        assert!(error.contains("did not start"), "{spec}: {error}");
    }
}

/// The guides' custom detector, a rule no regular expression can express (Dutch citizen service
/// numbers: nine digits that pass the eleven test), in Python and in JavaScript on the text
/// world: numbers split token by token in an OpenAI Chat stream are masked at every batching,
/// look-alikes are not, and each masked number is counted in the stream's record.
#[test]
fn custom_detectors_in_python_and_javascript_mask_split_numbers_and_count_them() {
    use sluicegate_tests::llm::{Format, stream, text_of, tokens};
    if skipped("Python and JavaScript guests") {
        return;
    }
    let text = "BSN 111222333 and 123456782, not 1234567890 or 111222334; last 999999990";
    let masked = "BSN [bsn] and [bsn], not 1234567890 or 111222334; last [bsn]";
    let events = parse_all(stream(Format::Chat, &tokens(text), false).as_bytes());
    let components = [
        python_guests().join("bsn.wasm"),
        js_guests().join("bsn.quickjs.wasm"),
        js_guests().join("bsn.spidermonkey.wasm"),
    ];
    for component in components {
        let spec = component.to_str().unwrap();
        let chain = chain_of(spec, &[]);
        for size in [1, 3, 64] {
            let mut stream = chain.open(&context()).expect("open");
            let mut out = Vec::new();
            for events in batches_of(&events, size) {
                let mut batch: sluicegate::batch::Batch = events.into_iter().collect();
                assert!(!stream.process(&mut batch).expect("process"), "{spec}: nothing ends the stream");
                out.extend(batch.to_events());
            }
            out.extend(stream.finish(sluicegate_guest::EndReason::UpstreamClosed).expect("finish").to_events());
            assert_eq!(text_of(Format::Chat, &out), masked, "{spec}, batch {size}");
            let counts = &stream.records()[0].counts;
            assert_eq!(counts.get("bsn"), Some(&3), "{spec}, batch {size}: {counts:?}");
        }
    }
}

/// Behind the real proxy on loopback: the Python and JavaScript `redact` modify a live stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_guests_modify_a_live_stream_behind_the_proxy() {
    if skipped("Python and JavaScript guests") {
        return;
    }
    let (python, js) = tokio::task::spawn_blocking(|| (python_guests(), js_guests())).await.unwrap();
    let upstream = start_upstream(|_| async {
        full(200, "text/event-stream", "event: ping\ndata: {}\n\ndata: write to ada@example.com\nid: 1\n\n")
    })
    .await;
    let chain = [
        python.join("drop.wasm"),
        python.join("redact.wasm"),
        js.join("drop.spidermonkey.wasm"),
        js.join("redact.quickjs.wasm"),
    ];
    for component in chain {
        let spec = component.to_str().unwrap();
        let (proxy, _) = start_proxy(&config_with_chain(upstream, &[spec], "")).await;
        let events = EventReader::new(get(&format!("http://{proxy}/"), &[]).await).rest().await;
        let datas: Vec<String> =
            events.iter().filter_map(|e| e.data.as_ref()).map(|d| String::from_utf8_lossy(d).into_owned()).collect();
        let expected: &[&str] =
            if spec.contains("drop") { &["write to ada@example.com"] } else { &["{}", "write to [redacted]"] };
        assert_eq!(datas, expected, "{spec}");
        assert_eq!(events.last().unwrap().id.as_deref(), Some(&b"1"[..]), "{spec}: the id is kept");
    }
}
