//! A guest that misbehaves on purpose, as its `mode` config key says. Built by the tests, never
//! shipped. It talks to the raw bindings so that it can return verdicts the SDK would not build.
//!
//! Modes, each applied to every batch (or, for `*-open`, to the stream constructor):
//! `keep` (behaves), `trap`, `trap-open`, `short-count`, `long-count`, `bad-span`,
//! `invalid-utf8`, `newline-type`, `nul-id`, `unknown-op`, `end-not-last`, `huge-word`,
//! `loop`, `memory`, `recursion`, `giant-output`, `trap-every-3`, `log-flood` (prints 1,000
//! lines), `sleep` (an hour), `probe-wasi` (reports what WASI lets it reach, and prints to stdout
//! and stderr), `busy` (spins `busy_ms` per batch), `busy-on-slow` (only on a batch holding the
//! word `slow`), `busy-finish` (only in `finish`) and `trap-on-drop` (when its state is freed).

#[cfg(target_arch = "wasm32")]
mod component {
    use bindings::exports::sluicegate::interceptor::batch as wit;
    use bindings::sluicegate::interceptor::host;
    use sluicegate_guest::abi::*;
    use sluicegate_guest::guest::bindings;
    use std::cell::Cell;

    fn mode() -> String {
        host::config_get("mode").unwrap_or_else(|| "keep".into())
    }

    struct Hostile {
        mode: String,
        calls: Cell<u32>,
    }

    fn insert(fields: u32, words: [u32; 7]) -> Vec<u32> {
        let mut ops = vec![OP_INSERT, fields];
        ops.extend_from_slice(&words);
        ops
    }

    #[inline(never)]
    fn recurse(depth: u64) -> u64 {
        let pad = [depth; 64];
        if std::hint::black_box(depth) == u64::MAX { pad[3] } else { recurse(depth + 1) + pad[7] }
    }

    /// The stream's state freed (its `finish`, or the host dropping a cancelled stream).
    impl Drop for Hostile {
        fn drop(&mut self) {
            if self.mode == "trap-on-drop" {
                panic!("hostile: trap freeing the stream's state");
            }
        }
    }

    /// Spins for `busy_ms` (default 40) of the granted monotonic clock.
    fn spin() {
        let ms: u64 = host::config_get("busy_ms").and_then(|v| v.parse().ok()).unwrap_or(40);
        let start = std::time::Instant::now();
        let mut spins = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(ms) {
            spins = std::hint::black_box(spins + 1);
        }
    }

    impl wit::GuestStreamState for Hostile {
        fn new(_context: wit::StreamContext) -> Self {
            let mode = mode();
            if mode == "trap-open" {
                panic!("hostile: trap in the constructor");
            }
            Hostile { mode, calls: Cell::new(0) }
        }

        fn process_batch(&self, batch: wit::Batch) -> wit::Verdict {
            let n = (batch.index.len() / STRIDE) as u32;
            let keep_all = vec![OP_KEEP, n];
            self.calls.set(self.calls.get() + 1);
            let (ops, bytes) = match self.mode.as_str() {
                "keep" | "trap-on-drop" => (keep_all, vec![]),
                "trap" => panic!("hostile: trap"),
                "trap-every-3" if self.calls.get().is_multiple_of(3) => panic!("hostile: periodic trap"),
                "trap-every-3" => (keep_all, vec![]),
                "short-count" => (vec![OP_KEEP, n - 1], vec![]),
                "long-count" => (vec![OP_KEEP, n + 1], vec![]),
                "bad-span" => ([keep_all, insert(HAS_DATA, [0, 0, 10, 100, 0, 0, 0])].concat(), b"abc".to_vec()),
                "invalid-utf8" => ([keep_all, insert(HAS_DATA, [0, 0, 0, 2, 0, 0, 0])].concat(), vec![0xC3, 0x28]),
                "newline-type" => {
                    ([keep_all, insert(HAS_TYPE | HAS_DATA, [0, 3, 3, 1, 0, 0, 0])].concat(), b"a\nbx".to_vec())
                }
                "nul-id" => ([keep_all, insert(HAS_ID | HAS_DATA, [0, 0, 0, 1, 1, 2, 0])].concat(), b"xa\0".to_vec()),
                "unknown-op" => ([keep_all, vec![99]].concat(), vec![]),
                "end-not-last" => (vec![OP_END, OP_KEEP, n], vec![]),
                "huge-word" => {
                    ([keep_all, insert(HAS_DATA | HAS_RETRY, [0, 0, 0, 1, 0, 0, 1 << 31])].concat(), b"x".to_vec())
                }
                "loop" => loop {
                    std::hint::black_box(&batch);
                },
                "memory" => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(vec![1u8; 1 << 20]);
                        std::hint::black_box(&hoard);
                    }
                }
                "recursion" => (vec![OP_KEEP, n + recurse(0) as u32], vec![]),
                "probe-wasi" => {
                    let env = std::env::vars().count();
                    let args = std::env::args().count();
                    let files = std::fs::read_dir("/").is_ok()
                        || std::fs::read_dir(".").is_ok()
                        || std::fs::read("/etc/passwd").is_ok();
                    let net = std::net::TcpStream::connect("127.0.0.1:1").is_ok();
                    println!("hello from the guest on stdout");
                    eprintln!("and on stderr");
                    let clock =
                        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                    let report = format!("env={env} args={args} files={files} net={net} clock={}", clock > 0);
                    let len = report.len() as u32;
                    ([keep_all, insert(HAS_DATA, [0, 0, 0, len, 0, 0, 0])].concat(), report.into_bytes())
                }
                "sleep" => {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                    (keep_all, vec![])
                }
                // A legal but slow interceptor: spins for `busy_ms` of its granted monotonic
                // clock on every batch (the proxy's deadline is what bounds it); with
                // `busy-on-slow`, only on a batch whose bytes hold the word `slow` (made slow
                // now and then by what it is given).
                "busy-on-slow" if !batch.bytes.windows(4).any(|w| w == b"slow") => (keep_all, vec![]),
                "busy" | "busy-on-slow" => {
                    spin();
                    (keep_all, vec![])
                }
                // Fast batches, and a `finish` that spins for `busy_ms`.
                "busy-finish" => (keep_all, vec![]),
                "log-flood" => {
                    for i in 0..1000 {
                        println!("flood line {i}");
                    }
                    (keep_all, vec![])
                }
                "giant-output" => {
                    let data = vec![b'x'; 8 << 20];
                    ([keep_all, insert(HAS_DATA, [0, 0, 0, data.len() as u32, 0, 0, 0])].concat(), data)
                }
                other => panic!("hostile: unknown mode {other}"),
            };
            wit::Verdict { ops, bytes }
        }

        fn finish(&self, _reason: wit::EndReason) -> wit::Verdict {
            if self.mode == "busy-finish" {
                spin();
            }
            wit::Verdict { ops: vec![], bytes: vec![] }
        }
    }

    struct Component;

    impl wit::Guest for Component {
        type StreamState = Hostile;
    }

    bindings::__export_batch_interceptor!(Component with_types_in bindings);
}
