//! A real Redis server for the store's tests: Debian's `redis-server` on a loopback port, with
//! no persistence, stopped when dropped. `SLUICEGATE_SKIP_REDIS=1` skips the tests that need it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`.
pub struct Redis {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Redis {
    /// Starts one on a free loopback port; `None` (saying so) when the tests are told to skip
    /// Redis. Installs Debian's package when missing and possible; panics if it cannot.
    pub fn start() -> Option<Self> {
        if std::env::var_os("SLUICEGATE_SKIP_REDIS").is_some() {
            eprintln!("SLUICEGATE_SKIP_REDIS is set: skipping a test that needs a Redis server");
            return None;
        }
        let works = || Command::new("redis-server").arg("--version").output().is_ok_and(|o| o.status.success());
        if !crate::debian::ensure("redis-server", works) {
            panic!(
                "this test needs redis-server (Debian: apt-get install redis-server), or set SLUICEGATE_SKIP_REDIS=1"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut redis = Redis { child: None, addr: SocketAddr::from(([127, 0, 0, 1], port)) };
        redis.restart();
        Some(redis)
    }

    /// The URL for `[store] url`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Stops the server (its data is gone: it keeps none on disk).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, and waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.addr.port().to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        self.child = Some(child);
        let started = Instant::now();
        while self.command("PING") != "+PONG\r\n" {
            assert!(started.elapsed() < Duration::from_secs(20), "redis-server did not start on {}", self.addr);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends one inline command and returns the raw reply (empty if it could not).
    pub fn command(&self, command: &str) -> String {
        let Ok(mut stream) = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)) else {
            return String::new();
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        if stream.write_all(format!("{command}\r\nQUIT\r\n").as_bytes()).is_err() {
            return String::new();
        }
        let mut reply = String::new();
        let _ = stream.read_to_string(&mut reply);
        // The reply to QUIT comes last.
        reply.strip_suffix("+OK\r\n").unwrap_or(&reply).to_string()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
