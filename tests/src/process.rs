//! The `sluicegate` binary run as an operator runs it: a child process with its own descriptor
//! limit, environment and signals, its log read line by line.
//!
//! `cargo test --workspace` builds the binary (the runtime package has integration tests of its
//! own); run `cargo build -p sluicegate` first when running only this package's tests.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// The binary built beside this test binary (`target/debug/sluicegate`).
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let binary = dir.join("sluicegate");
    assert!(
        binary.exists(),
        "{} is missing: `cargo test --workspace` builds it, or run `cargo build -p sluicegate`",
        binary.display()
    );
    binary
}

/// The log a child has written so far, and a way to wait for a line.
#[derive(Default)]
struct Log {
    text: Mutex<String>,
    grew: Condvar,
}

/// A running `sluicegate serve`; killed when dropped.
pub struct Serving {
    child: Child,
    log: Arc<Log>,
    /// Reads the child's log until it exits.
    reader: Option<std::thread::JoinHandle<()>>,
    /// Where it accepts clients.
    pub addr: SocketAddr,
    /// Its admin listener, if started with `--admin`.
    pub admin: Option<SocketAddr>,
}

/// How to start one.
pub struct Start {
    args: Vec<String>,
    env: Vec<(String, String)>,
    open_files: Option<u32>,
}

impl Start {
    /// `sluicegate serve --listen 127.0.0.1:0 --admin 127.0.0.1:0 ARGS...`
    pub fn serve(args: &[&str]) -> Self {
        let mut all: Vec<String> =
            ["serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"].iter().map(|s| s.to_string()).collect();
        all.extend(args.iter().map(|s| s.to_string()));
        Start { args: all, env: Vec::new(), open_files: None }
    }

    /// Sets an environment variable of the process.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Runs it with this limit on open files (soft and hard), as `ulimit -n` does.
    pub fn open_files(mut self, limit: u32) -> Self {
        self.open_files = Some(limit);
        self
    }

    /// Starts it and waits until it listens (it logs its addresses).
    pub fn start(self) -> Serving {
        let mut command = match self.open_files {
            Some(limit) => {
                let mut sh = Command::new("sh");
                sh.arg("-c").arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\"")).arg(binary());
                sh
            }
            None => Command::new(binary()),
        };
        command.args(&self.args).envs(self.env).env("SLUICEGATE_LOG", "info,sluicegate=debug");
        let mut child = command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let log = Arc::new(Log::default());
        let stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn({
            let log = log.clone();
            move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let mut text = log.text.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                    log.grew.notify_all();
                }
            }
        });
        let mut serving = Serving { child, log, reader: Some(reader), addr: "0.0.0.0:0".parse().unwrap(), admin: None };
        let line = serving.wait_for_line("sluicegate is serving", Duration::from_secs(120));
        serving.addr =
            field(&line, "listen=").trim_start_matches("http://").trim_start_matches("https://").parse().unwrap();
        let admin_line = serving.wait_for_line("serving /metrics", Duration::from_secs(5));
        serving.admin = field(&admin_line, "admin=").parse().ok();
        serving
    }
}

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let at = line.find(name).unwrap_or_else(|| panic!("no {name} in {line}"));
    line[at + name.len()..].split_whitespace().next().unwrap_or("")
}

impl Serving {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The names of its threads (as the kernel keeps them: at most 15 bytes).
    pub fn thread_names(&self) -> Vec<String> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid())).unwrap();
        tasks
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .map(|n| n.trim().to_string())
            .collect()
    }

    /// Everything it has logged so far.
    pub fn log(&self) -> String {
        self.log.text.lock().unwrap().clone()
    }

    /// Waits for the first line (counting from the start) that contains `needle`.
    pub fn wait_for_line(&self, needle: &str, limit: Duration) -> String {
        self.wait_for_nth_line(needle, 1, limit)
    }

    /// Waits until `n` lines contain `needle`; returns the last of them.
    pub fn wait_for_nth_line(&self, needle: &str, n: usize, limit: Duration) -> String {
        let deadline = std::time::Instant::now() + limit;
        let mut text = self.log.text.lock().unwrap();
        loop {
            let found: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
            if found.len() >= n {
                return found[n - 1].to_string();
            }
            let now = std::time::Instant::now();
            assert!(now < deadline, "no line {n} with `{needle}` in the log:\n{text}");
            text = self.log.grew.wait_timeout(text, deadline - now).unwrap().0;
        }
    }

    /// Sends it a signal by name (`HUP`, `TERM`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success());
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // A failed test shows what the proxy said (its last lines, read to its exit), so a
            // failure seen once in CI can be read afterwards.
            if let Some(reader) = self.reader.take() {
                let _ = reader.join();
            }
            let text = self.log();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(200)..];
            eprintln!("--- the proxy's log (last {} lines) ---\n{}", tail.len(), tail.join("\n"));
        }
    }
}
