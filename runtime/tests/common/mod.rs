//! Helpers for tests that run the `sluicegate` binary as processes.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Lines, Read, Write};
use std::net::TcpStream;
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

/// GET `path` over HTTP/1.1 and return the status line and the body, de-chunked.
pub(crate) fn get(addr: &str, path: &str) -> (String, String) {
    let mut socket = TcpStream::connect(addr).unwrap();
    write!(socket, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    socket.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, mut rest) = raw.split_once("\r\n\r\n").expect("a response head");
    let status = head.lines().next().unwrap_or_default().to_string();
    if !head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return (status, rest.to_string());
    }
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect("a chunk size");
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return (status, body);
        }
        body.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}
