//! WASI for guests, provided inertly.
//!
//! Guests built for `wasm32-wasip2` import WASI even when they use none of it (Rust's standard
//! library does). They get: no files or preopened directories, no environment variables, no
//! arguments, a closed stdin, no network (every address denied, no name lookup), and stdout and
//! stderr that go to the proxy's log, line by line, attributed to the interceptor.

use bytes::Bytes;
use std::sync::Arc;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder};

/// Builds the WASI context of one store of interceptor `name`.
pub fn inert_ctx(name: &Arc<str>) -> WasiCtx {
    let mut builder = WasiCtxBuilder::new();
    builder
        .stdout(LogStream { name: name.clone(), stream: "stdout" })
        .stderr(LogStream { name: name.clone(), stream: "stderr" })
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    builder.build()
}

/// A guest's stdout or stderr, written to the log.
#[derive(Clone)]
struct LogStream {
    name: Arc<str>,
    stream: &'static str,
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(tokio::io::sink())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogStream {
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for LogStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let text = String::from_utf8_lossy(&bytes);
        for line in text.lines().filter(|l| !l.is_empty()) {
            tracing::info!(interceptor = %self.name, stream = self.stream, "{line}");
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}
