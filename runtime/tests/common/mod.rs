//! Helpers for tests that run the `sluicegate` binary as processes.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Lines, Read};
use std::process::{Child, Command, Stdio};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_sluicegate");

/// A running `sluicegate`, killed when dropped, whose output is read line by line.
pub(crate) struct Running {
    pub child: Child,
    lines: Lines<BufReader<Box<dyn Read + Send>>>,
    /// Everything read so far, for failure messages.
    pub seen: String,
}

impl Running {
    /// Starts `sluicegate ARGS`, reading its stderr (or stdout) lines.
    pub(crate) fn start(args: &[&str], from_stderr: bool) -> Running {
        Self::start_with_log(args, from_stderr, "info")
    }

    /// [`Running::start`] with `SLUICEGATE_LOG` set to `filter`.
    pub(crate) fn start_with_log(args: &[&str], from_stderr: bool, filter: &str) -> Running {
        let mut child = Command::new(BIN)
            .args(args)
            .env("SLUICEGATE_LOG", filter)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output: Box<dyn Read + Send> =
            if from_stderr { Box::new(child.stderr.take().unwrap()) } else { Box::new(child.stdout.take().unwrap()) };
        Running { child, lines: BufReader::new(output).lines(), seen: String::new() }
    }

    /// Reads lines until one contains `text`, and returns it.
    pub(crate) fn wait_for(&mut self, text: &str) -> String {
        for line in self.lines.by_ref() {
            let line = line.unwrap();
            self.seen.push_str(&line);
            self.seen.push('\n');
            if line.contains(text) {
                return line;
            }
        }
        panic!("the process ended without saying {text:?}:\n{}", self.seen);
    }

    /// Reads lines until one contains `text`; returns the first `127.0.0.1:PORT` on it.
    pub(crate) fn wait_for_address(&mut self, text: &str) -> String {
        let line = self.wait_for(text);
        let at = line.find("127.0.0.1:").expect("an address on the line");
        line[at..].chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':').collect()
    }

    /// Sends `signal` (e.g. "HUP") to the process.
    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path` with hyper's client (the client the other tests use too) and return the status
/// (as `200 OK`) and the body. Synchronous, on a runtime of its own, for tests that drive
/// processes.
pub(crate) fn get(addr: &str, path: &str) -> (String, String) {
    use http_body_util::BodyExt as _;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let uri: http::Uri = format!("http://{addr}{path}").parse().unwrap();
        let response = client.get(uri).await.unwrap();
        let status = response.status().to_string();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    })
}
