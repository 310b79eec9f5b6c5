//! The `serve` process and its signals: SIGHUP reloads the config file (a broken one is refused
//! and the running configuration stays), `--watch` reloads on a file change, SIGTERM shuts down
//! gracefully and exits 0.

mod common;

use common::{Running, get};
use std::path::Path;

fn write_config(path: &Path, upstream: &str, chain: &str) {
    let text =
        format!("upstream = \"http://{upstream}\"\n[shutdown]\ndrain_ms = 100\n[[route]]\nprefix = \"/\"\n{chain}");
    std::fs::write(path, text).unwrap();
}

const DROP_PINGS: &str = "[[route.interceptor]]\nspec = \"example:drop\"\n";
const PASSTHROUGH: &str = "[[route.interceptor]]\nspec = \"example:passthrough\"\n";

fn pings(proxy: &str) -> usize {
    let (status, body) = get(proxy, "/llm");
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("message_stop"), "the whole stream came through:\n{body}");
    body.matches("event: ping").count()
}

fn serve_with_config(test: &str, extra: &[&str]) -> (Running, Running, String, std::path::PathBuf) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(test);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("sluicegate.toml");
    let mut demo = Running::start(&["demo", "--upstream-only", "--listen", "127.0.0.1:0"], false);
    let upstream = demo.wait_for_address("the demo upstream is serving");
    write_config(&config, &upstream, DROP_PINGS);
    let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--config", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut serve = Running::start(&args, true);
    let proxy = serve.wait_for_address("sluicegate is serving");
    (demo, serve, proxy, config)
}

#[test]
fn sighup_reloads_and_sigterm_stops_gracefully() {
    let (demo, mut serve, proxy, config) = serve_with_config("sighup", &[]);
    let upstream = demo_address(&config);
    assert_eq!(pings(&proxy), 0, "example:drop removes pings");

    write_config(&config, &upstream, PASSTHROUGH);
    serve.signal("HUP");
    serve.wait_for("reloaded");
    assert!(pings(&proxy) > 0, "after the reload, pings pass");

    std::fs::write(&config, "this is not toml").unwrap();
    serve.signal("HUP");
    serve.wait_for("reload failed");
    assert!(pings(&proxy) > 0, "a broken config changes nothing");

    serve.signal("TERM");
    serve.wait_for("stopped");
    let status = serve.child.wait().unwrap();
    assert!(status.success(), "{status}");
    drop(demo);
}

#[test]
fn watch_reloads_when_the_config_file_changes() {
    let (_demo, mut serve, proxy, config) = serve_with_config("watch", &["--watch"]);
    let upstream = demo_address(&config);
    assert_eq!(pings(&proxy), 0);
    write_config(&config, &upstream, &format!("{PASSTHROUGH}# changed\n"));
    serve.wait_for("reloading (a watched file changed)");
    serve.wait_for("reloaded");
    assert!(pings(&proxy) > 0);
}

/// The upstream address written into a config file.
fn demo_address(config: &Path) -> String {
    let text = std::fs::read_to_string(config).unwrap();
    let start = text.find("http://").unwrap() + "http://".len();
    text[start..].split('"').next().unwrap().to_string()
}

#[test]
fn json_logs_carry_the_stream_id_on_every_line_about_a_stream() {
    let mut demo = Running::start(&["demo", "--upstream-only", "--listen", "127.0.0.1:0"], false);
    let upstream = format!("http://{}", demo.wait_for_address("the demo upstream is serving"));
    let args = ["--log-format", "json", "serve", "--listen", "127.0.0.1:0", "--upstream", &upstream];
    let mut serve = Running::start_with_log(&[&args[..], &["-i", "example:redact"]].concat(), true, "debug");
    let proxy = serve.wait_for_address("sluicegate is serving");
    let (status, _) = get(&proxy, "/mcp");
    assert!(status.contains("200"));
    serve.wait_for("event stream ended");
    serve.signal("TERM");
    serve.wait_for("stopped");

    let mut about_the_stream = 0;
    for line in serve.seen.lines() {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        let message = entry["fields"]["message"].as_str().unwrap_or_default();
        if message.starts_with("event stream") {
            assert_eq!(entry["span"]["stream_id"], "1", "{line}");
            assert_eq!(entry["span"]["path"], "/mcp", "{line}");
            about_the_stream += 1;
        }
    }
    assert_eq!(about_the_stream, 2, "started and ended:\n{}", serve.seen);
}
