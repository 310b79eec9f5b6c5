//! MCP Streamable HTTP through the proxy, with the real Python SDK on both sides (its FastMCP
//! server and its client), not hand-written stubs.
//!
//! The SDK is installed, pinned, into a virtual environment under Cargo's target directory the
//! first time this test runs (see `sluicegate_tests::python`).

use http_body_util::BodyExt;
use sluicegate_tests::net::{config_with_chain, start_proxy};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const MCP_VERSION: &str = "1.30.0";

/// A Python with the `mcp` SDK: the venv's, created on first use.
pub(crate) fn python_with_mcp() -> PathBuf {
    sluicegate_tests::python::venv(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        &format!("mcp-{MCP_VERSION}"),
        &[&format!("mcp=={MCP_VERSION}")],
        &["mcp"],
    )
}

/// Kills the child when dropped.
pub(crate) struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mcp").join(name)
}

async fn start_mcp_server(python: &Path) -> (Server, SocketAddr) {
    start_mcp_server_with(python, &[]).await
}

/// The server with extra arguments (`json MARKER`).
pub(crate) async fn start_mcp_server_with(python: &Path, args: &[&str]) -> (Server, SocketAddr) {
    start_mcp_server_env(python, args, &[]).await
}

/// The server with extra arguments and environment (`MCP_TLS_CERT` and `MCP_TLS_KEY`: serve
/// HTTPS with that certificate).
pub(crate) async fn start_mcp_server_env(python: &Path, args: &[&str], env: &[(&str, &Path)]) -> (Server, SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(python)
        .arg(script("server.py"))
        .arg(port.to_string())
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the MCP server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (server, addr)
}

fn run_client(python: &Path, url: &str) -> serde_json::Value {
    run_client_env(python, url, &[])
}

/// The client with extra environment (`SSL_CERT_FILE`: the CA it trusts for https URLs).
pub(crate) fn run_client_env(python: &Path, url: &str, env: &[(&str, &Path)]) -> serde_json::Value {
    let out = Command::new(python)
        .arg(script("client.py"))
        .arg(url)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .output()
        .unwrap();
    assert!(out.status.success(), "MCP client failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Sends a raw request and returns its status and `content-type`.
async fn probe(url: &str, method: &str, headers: &[(&str, &str)], body: &'static str) -> (u16, String) {
    let mut request = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let response = client
        .request(request.body(http_body_util::Full::new(bytes::Bytes::from_static(body.as_bytes()))).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let _ = response.into_body().collect().await;
    (status, content_type)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_mcp_client_and_server_through_the_proxy() {
    let python = python_with_mcp();
    let (_server, upstream) = start_mcp_server(&python).await;
    let (proxy, state) = start_proxy(&config_with_chain(upstream, &["example:redact"], "")).await;

    let direct = run_client(&python, &format!("http://{upstream}/mcp"));
    let proxied = run_client(&python, &format!("http://{proxy}/mcp"));

    // The control: directly, the address is there; through the proxy, redacted.
    assert_eq!(direct["text"], serde_json::json!(["Ada can be reached at ada@example.com"]));
    assert_eq!(proxied["text"], serde_json::json!(["Ada can be reached at [redacted]"]));
    // Everything else is as the SDK sees it without the proxy: the session, the protocol
    // version, progress notifications delivered in order on the POST's event stream.
    assert_eq!(proxied["is_error"], false);
    assert_eq!(proxied["server"], direct["server"]);
    assert_eq!(proxied["protocol"], direct["protocol"]);
    assert_eq!(proxied["tools"], serde_json::json!(["lookup", "count", "directory", "secret"]));
    assert_eq!(proxied["progress"], serde_json::json!([[1.0, 2.0, "searching"], [2.0, 2.0, "found"]]));
    assert!(proxied["session_id"].as_str().is_some_and(|s| !s.is_empty()));

    // Error statuses reach the client as the server sent them.
    let json_rpc = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let accept = ("accept", "application/json, text/event-stream");
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'static str);
    let cases: [Case; 4] = [
        ("POST", vec![accept, ("content-type", "application/json"), ("mcp-session-id", "no-such-session")], json_rpc),
        ("POST", vec![("accept", "text/plain"), ("content-type", "application/json")], json_rpc),
        ("GET", vec![("accept", "text/event-stream")], ""),
        ("DELETE", vec![("mcp-session-id", "no-such-session")], ""),
    ];
    for (method, headers, body) in cases {
        let straight = probe(&format!("http://{upstream}/mcp"), method, &headers, body).await;
        let through = probe(&format!("http://{proxy}/mcp"), method, &headers, body).await;
        assert!(straight.0 >= 400, "{method} {headers:?}: expected an error from the server, got {}", straight.0);
        assert_eq!(through, straight, "{method} {headers:?}");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while state.live_guest_streams() != 0 {
        assert!(tokio::time::Instant::now() < deadline, "interceptor streams left open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn run_guarded_client(python: &Path, url: &str, tools: &[&str]) -> serde_json::Value {
    let out = Command::new(python).arg(script("guarded.py")).arg(url).args(tools).output().unwrap();
    assert!(out.status.success(), "MCP client failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// The SDK's server in both of its modes (one JSON body per POST, as stateless deployments run
/// it, and event streams), through passthrough, redact and tool-guard in both chains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_in_json_and_stream_modes_is_guarded_both_ways() {
    let python = python_with_mcp();
    for mode in ["json", "stream"] {
        let marker = std::env::temp_dir().join(format!("sluicegate-secret-called-{}-{mode}", std::process::id()));
        let _ = std::fs::remove_file(&marker);
        let (_server, upstream) = start_mcp_server_with(&python, &[mode, marker.to_str().unwrap()]).await;
        let direct = run_guarded_client(&python, &format!("http://{upstream}/mcp"), &["lookup", "count"]);
        assert_eq!(direct["calls"]["lookup"]["text"], serde_json::json!(["Ada can be reached at ada@example.com"]));

        let (passthrough, _) = start_proxy(&config_with_chain(upstream, &["example:passthrough"], "")).await;
        let seen = run_guarded_client(&python, &format!("http://{passthrough}/mcp"), &["lookup", "count"]);
        assert_eq!(seen, direct, "{mode}: passthrough is identical to direct");

        let (redact, state) = start_proxy(&config_with_chain(upstream, &["example:redact"], "")).await;
        let seen = run_guarded_client(&python, &format!("http://{redact}/mcp"), &["lookup", "directory"]);
        assert_eq!(seen["calls"]["lookup"]["text"], serde_json::json!(["Ada can be reached at [redacted]"]), "{mode}");
        // A structured result keyed by address: the keys are judged too. Both masked alike, the
        // client's parser keeps one of the two entries, which the proxy counts.
        let directory = &seen["calls"]["directory"];
        assert!(!directory.to_string().contains("example.com"), "{mode}: an address went through: {directory}");
        assert_eq!(directory["structured"], serde_json::json!({"[redacted]": "Grace"}), "{mode}: {directory}");
        let metrics = sluicegate::proxy::admin::metrics(&state);
        assert!(metrics.contains(r#"name="repeated_keys"} 1"#), "{mode}: the repeated keys are counted:\n{metrics}");
        let reason = if mode == "json" { "body" } else { "event_stream" };
        let line = format!(
            r#"sluicegate_bodies_total{{route="/",direction="response",outcome="inspected",reason="{reason}"}}"#
        );
        assert!(metrics.contains(&line), "{mode}: {line} missing in\n{metrics}");

        let guard = format!(
            "upstream = \"http://{upstream}\"\n[[route]]\nprefix = \"/\"\n\
             [[route.interceptor]]\nspec = \"example:tool-guard\"\nconfig = {{ allow = \"count\" }}\n\
             [[route.request_interceptor]]\nspec = \"native:tool-guard\"\nconfig = {{ allow = \"count\" }}\n"
        );
        let (guarded, _) = start_proxy(&guard).await;
        let seen = run_guarded_client(&python, &format!("http://{guarded}/mcp"), &["count", "secret"]);
        assert_eq!(seen["tools"], serde_json::json!(["count"]), "{mode}: only the allowed tool is listed: {seen}");
        assert_eq!(seen["calls"]["count"]["text"], serde_json::json!(["1 2 3"]), "{mode}: {seen}");
        let refusal = &seen["calls"]["secret"];
        assert_eq!(refusal["code"], -32001, "{mode}: a JSON-RPC error, not a broken transport: {seen}");
        assert!(refusal["error"].as_str().unwrap().contains("`secret` is not allowed"), "{mode}: {seen}");
        assert!(!marker.exists(), "{mode}: the refused call reached the server");
    }
}
