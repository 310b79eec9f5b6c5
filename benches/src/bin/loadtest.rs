//! Measures the proxy as a process: memory per idle event stream, and CPU at a given event rate.
//!
//! ```sh
//! cargo run --release -p sluicegate-benches --bin loadtest -- memory --streams 10000 --chain example:redact
//! cargo run --release -p sluicegate-benches --bin loadtest -- cpu --rate 10000 --chain none --chain example:redact
//! cargo run --release -p sluicegate-benches --bin loadtest -- latency --chain none --chain example:redact
//! cargo run --release -p sluicegate-benches --bin loadtest -- throughput --chain none --chain example:redact
//! cargo run --release -p sluicegate-benches --bin loadtest -- tls --streams 8 --rounds 5 --chain none --chain example:redact
//! cargo run --release -p sluicegate-benches --bin loadtest -- streams --streams 1000 --rate 10 --chain none --chain example:passthrough --chain example:redact
//! cargo run --release -p sluicegate-benches --bin loadtest -- isolation --busy-ms 100 --rounds 3 --model per-core --model shared
//! cargo run --release -p sluicegate-benches --bin loadtest -- isolation --slow-streams 10 --model per-core --model per-core:1000
//! cargo run --release -p sluicegate-benches --bin loadtest -- requests --clients 32 --chain none --chain none+otlp --chain none+otlp-down
//! ```
//!
//! `isolation` needs the test guest `hostile` (`cargo test -p sluicegate-tests --no-run` builds
//! it; `--guest PATH` points elsewhere). Its slow tenant has two streams (`--slow-streams N`); a
//! model written `per-core:N` runs with `[threads] slow_calls = N` (slow calls at once).
//!
//! A chain written `SPEC@shared` (`none@shared`, `example:redact@shared`) runs the proxy with
//! `[threads] model = "shared"` instead of the default per-core workers; `SPEC@h1`
//! (`none@h1`, `example:redact@shared@h1`) has it speak HTTP/1.1 to the upstream instead of
//! HTTP/2 by prior knowledge (a plain-HTTP/1.1 upstream's connections are driven by the streams
//! that use them; an HTTP/2 one has a pooled connection per worker). A chain ending in `+otlp`
//! (`example:redact+otlp`, `none@shared+otlp`) runs it with OpenTelemetry export on, over
//! HTTP/protobuf to a sink role (a process of its own that accepts and discards every export);
//! `+otlp-down` exports to a port nobody listens on, `+otlp-hole` to a role that accepts
//! connections and never answers (a collector that is down, and one that black-holes).
//!
//! Where Debian's `nginx` is installed (`/usr/sbin/nginx`), `throughput` and `streams` measure it
//! beside sluicegate (`proxy_buffering off`, HTTP/1.1 with keep-alive to the upstream, two worker
//! processes as sluicegate has two worker threads): it is what a user would pick instead.
//!
//! `LOADTEST_WRAP=COMMAND` starts each proxy role under COMMAND (`perf record -g --`, or a
//! script that sets `LD_PRELOAD`), the proxy's command line after it.
//! `LOADTEST_OTHER=PATH` names another build of this binary: a chain written `SPEC@other`
//! runs its proxy role from that build, so two builds are measured side by side in one run,
//! round by round (`--chain example:redact --chain example:redact@other`).
//!
//! Three roles, each its own process so that each is measured alone: an upstream (HTTP/1.1 and
//! HTTP/2), the proxy (this crate's library, as `sluicegate serve` runs it), and the clients (in
//! the orchestrating process). Only loopback addresses are used; every loop is bounded.

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The allocator `sluicegate` ships with, so that the proxy role measures what `serve` costs.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: sluicegate::Jemalloc = sluicegate::Jemalloc;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut telemetry = None;
    if args.first().is_some_and(|role| role.starts_with("proxy")) {
        telemetry = export_of(&args)?;
        log_as_serve_does(telemetry.as_ref());
    }
    let done = run(&runtime, &args);
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    done
}

/// Export as a proxy role's `+otlp=PORT` chain asks, started before the log as `serve` does.
fn export_of(args: &[String]) -> anyhow::Result<Option<sluicegate::proxy::telemetry::Telemetry>> {
    use sluicegate::proxy::telemetry::{Export, Telemetry};
    let exporting = args.iter().find(|a| a.contains("+otlp"));
    let Some((_, port)) = exporting.and_then(|a| a.rsplit_once('=')) else { return Ok(None) };
    let config = sluicegate::config::TelemetryConfig {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        ..Default::default()
    };
    let export = Export::resolve(&config, |_| None)?.context("export resolves")?;
    Ok(Some(Telemetry::start(&export)?))
}

fn run(runtime: &tokio::runtime::Runtime, args: &[String]) -> anyhow::Result<()> {
    let args = args.to_vec();
    match args.first().map(String::as_str) {
        Some("otlp-sink") => runtime.block_on(otlp_sink()),
        Some("otlp-hole") => runtime.block_on(otlp_hole()),
        Some("requests") => runtime.block_on(short_requests(
            flag(&args, "--clients", 32),
            flag(&args, "--events", 3),
            flag(&args, "--seconds", 5),
            flag(&args, "--rounds", 3),
            chains(&args),
        )),
        Some("upstream") => runtime.block_on(upstream(args.get(1).zip(args.get(2)))),
        Some("proxy") => runtime.block_on(proxy(&args[1], &args[2..])),
        Some("proxy-to") => runtime.block_on(proxy_to(&args[1], &args[2], &args[3..])),
        Some("streams") => runtime.block_on(many_streams(
            flag(&args, "--streams", 1000),
            flag(&args, "--rate", 10),
            flag(&args, "--seconds", 5),
            flag(&args, "--rounds", 3),
            chains(&args),
        )),
        Some("tls") => runtime.block_on(tls_against_plain(
            flag(&args, "--streams", 8),
            flag(&args, "--seconds", 3),
            flag(&args, "--rounds", 5),
            chains(&args),
        )),
        Some("memory") => runtime.block_on(memory(flag(&args, "--streams", 10_000), chains(&args))),
        Some("cpu") => runtime.block_on(cpu(
            flag(&args, "--rate", 10_000),
            flag(&args, "--streams", 10),
            flag(&args, "--seconds", 10),
            chains(&args),
        )),
        Some("latency") => {
            runtime.block_on(latency(flag(&args, "--rate", 1_000), flag(&args, "--seconds", 10), chains(&args)))
        }
        Some("throughput") => runtime.block_on(throughput(flag(&args, "--seconds", 5), chains(&args))),
        Some("proxy-isolation") => runtime.block_on(proxy_isolation(&args[1], &args[2], &args[3], &args[4])),
        Some("isolation") => runtime.block_on(isolation(
            flag(&args, "--busy-ms", 100),
            flag(&args, "--slow-streams", 2),
            flag(&args, "--seconds", 5),
            flag(&args, "--rounds", 3),
            values(&args, "--model", &["per-core", "shared"]),
            values(&args, "--guest", &[HOSTILE_GUEST]).remove(0),
        )),
        _ => bail!(
            "usage: loadtest memory [--streams N] [--chain SPEC|none]... | cpu [--rate EVENTS_PER_S] [--streams N] [--seconds S] [--chain SPEC|none]..."
        ),
    }
}

/// The proxy roles log as `sluicegate serve` does (text lines at `info`, or `SLUICEGATE_LOG`, to
/// stderr, beside the export layer when export is on), so that what a stream's log span costs is
/// measured too. A role's stderr goes to a file in the temporary directory (see [`Role::start`]).
fn log_as_serve_does(telemetry: Option<&sluicegate::proxy::telemetry::Telemetry>) {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICEGATE_LOG").unwrap_or_else(|_| "info".into());
    let filter = filter.add_directive(sluicegate::proxy::telemetry::HIDDEN_FROM_LOGS.parse().expect("a directive"));
    match telemetry {
        None => {
            let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(false);
            tracing_subscriber::registry().with(filter).with(logs).init()
        }
        Some(t) => {
            let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(false);
            tracing_subscriber::registry().with(t.layer()).with(logs.with_filter(filter)).init()
        }
    }
}

/// The OTLP sink role: answers every export with an empty success, as a collector would, and
/// keeps nothing.
async fn otlp_sink() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("ready {}", listener.local_addr()?.port());
    loop {
        let (socket, _) = listener.accept().await?;
        let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
            let _ = request.into_body().collect().await;
            let body = http_body_util::Full::new(Bytes::new());
            Ok::<_, Infallible>(
                Response::builder().header("content-type", "application/x-protobuf").body(body).unwrap(),
            )
        });
        tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(socket), service));
    }
}

/// The black-hole collector role: accepts connections and never reads or answers.
async fn otlp_hole() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("ready {}", listener.local_addr()?.port());
    let mut held = Vec::new();
    loop {
        held.push(listener.accept().await?.0);
    }
}

fn flag(args: &[String], name: &str, default: u64) -> u64 {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(default)
}

fn chains(args: &[String]) -> Vec<String> {
    values(args, "--chain", &["none", "example:redact"])
}

/// Every value given for flag `name`, or `defaults`.
fn values(args: &[String], name: &str, defaults: &[&str]) -> Vec<String> {
    let given: Vec<String> = args.windows(2).filter(|w| w[0] == name).map(|w| w[1].clone()).collect();
    if given.is_empty() { defaults.iter().map(|s| s.to_string()).collect() } else { given }
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The upstream role: `/idle` sends a priming event and then nothing; `/rate?n=N` sends N events
/// per second (LLM-like chunks of ~200 bytes, one in four with an e-mail address). With a
/// certificate and key (PEM files) it serves HTTPS, offering h2 and http/1.1 by ALPN.
async fn upstream(tls: Option<(&String, &String)>) -> anyhow::Result<()> {
    let acceptor = match tls {
        Some((cert, key)) => {
            use rustls::pki_types::pem::PemObject as _;
            let chain = rustls::pki_types::CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
            let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key)?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(chain, key)?;
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
        }
        None => None,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("ready {}", listener.local_addr()?.port());
    loop {
        let (socket, _) = listener.accept().await?;
        // Without it, small HTTP/2 frames meet Nagle's algorithm and delayed ACKs: 40 ms stalls.
        socket.set_nodelay(true)?;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                Ok::<_, Infallible>(respond(&request))
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder.http2().max_concurrent_streams(50_000);
            let _ = match acceptor {
                Some(acceptor) => match acceptor.accept(socket).await {
                    Ok(stream) => builder.serve_connection(TokioIo::new(stream), service).await,
                    Err(_) => return,
                },
                None => builder.serve_connection(TokioIo::new(socket), service).await,
            };
        });
    }
}

/// Microseconds on the wall clock: comparable between the processes of one machine.
fn now_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64
}

fn respond(request: &Request<Incoming>) -> Response<Body> {
    let rate: u64 = request.uri().query().and_then(|q| q.strip_prefix("n=")?.parse().ok()).unwrap_or(0);
    let body: Body = if request.uri().path().ends_with("/stamped") {
        // One event every 1/rate s, each carrying the time it was written.
        let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let stream = futures_util::stream::unfold(ticks, |mut ticks| async move {
            ticks.tick().await;
            let event = format!(
                "event: content_block_delta\ndata: {{\"sent\":{},\"text\":\"token lorem ipsum dolor sit amet ada@example.com consectetur adipiscing elit sed do\"}}\n\n",
                now_micros()
            );
            Some((Ok(Frame::data(Bytes::from(event))), ticks))
        });
        StreamBody::new(stream).boxed_unsync()
    } else if request.uri().path().ends_with("/short") {
        // A short answer: `n` events at once, then the end (a tool call's result, a short reply).
        let events: String = (0..rate.max(1))
            .map(|i| format!("id: {i}\nevent: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"token {i} lorem ipsum dolor sit amet\"}}}}\n\n"))
            .collect();
        http_body_util::Full::new(Bytes::from(events)).boxed_unsync()
    } else if request.uri().path() == "/blast" {
        // As fast as the reader takes them, 64 events per write.
        let mut chunk = String::new();
        for i in 0..64 {
            chunk.push_str(&format!("id: {i}\nevent: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"delta\":{{\"text\":\"token {i} lorem ipsum dolor sit amet, ada@example.com consectetur adipiscing elit sed do eiusmod\"}}}}\n\n"));
        }
        let chunk = Bytes::from(chunk);
        let stream = futures_util::stream::repeat_with(move || Ok(Frame::data(chunk.clone())));
        StreamBody::new(stream).boxed_unsync()
    } else if rate == 0 {
        let priming =
            futures_util::stream::once(async { Ok(Frame::data(Bytes::from_static(b"id: 0\ndata:\nretry: 1000\n\n"))) });
        StreamBody::new(futures_util::StreamExt::chain(priming, futures_util::stream::pending())).boxed_unsync()
    } else {
        // Ticks every 10 ms; each tick writes the events due, as one chunk.
        let per_tick = rate.div_ceil(100);
        let mut ticks = tokio::time::interval(Duration::from_millis(10));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let stream = futures_util::stream::unfold((0u64, ticks), move |(n, mut ticks)| async move {
            ticks.tick().await;
            let mut chunk = String::new();
            for i in n..n + per_tick {
                let mail = if i % 4 == 0 { " mail ada@example.com" } else { "" };
                chunk.push_str(&format!(
                    "id: {i}\nevent: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"token {i}{mail} lorem ipsum dolor sit amet consectetur adipiscing\"}}}}\n\n"
                ));
            }
            Some((Ok(Frame::data(Bytes::from(chunk))), (n + per_tick, ticks)))
        });
        StreamBody::new(stream).boxed_unsync()
    };
    Response::builder().header("content-type", "text/event-stream").body(body).unwrap()
}

/// The proxy role: what `sluicegate serve` runs (its threads included), with `chain` on every
/// path. A chain written `SPEC@shared` runs in the shared thread pool instead of per-core
/// workers (`[threads] model`), `SPEC@h1` speaks HTTP/1.1 to the upstream instead of HTTP/2, to
/// compare them in one run.
async fn proxy(upstream_port: &str, chain: &[String]) -> anyhow::Result<()> {
    let mut model = "per-core";
    let mut http2 = true;
    let mut interceptors = String::new();
    for spec in chain {
        let mut spec = spec.split("+otlp").next().unwrap_or(spec);
        loop {
            if let Some(rest) = spec.strip_suffix("@shared") {
                (spec, model) = (rest, "shared");
            } else if let Some(rest) = spec.strip_suffix("@h1") {
                (spec, http2) = (rest, false);
            } else {
                break;
            }
        }
        if spec != "none" {
            interceptors.push_str(&format!("[[route.interceptor]]\nspec = \"{spec}\"\n"));
        }
    }
    let config = format!(
        "upstream = \"http://127.0.0.1:{upstream_port}\"\nupstream_http2 = {http2}\n\
         [[route]]\nprefix = \"/\"\n{interceptors}[threads]\nmodel = \"{model}\"\n"
    );
    serve(&config).await
}

/// Runs the proxy with configuration `toml` as `sluicegate serve` does (its threads included) on
/// a free loopback port, and says `ready PORT`.
async fn serve(toml: &str) -> anyhow::Result<()> {
    let config = sluicegate::config::ProxyConfig::from_toml(toml)?;
    let runtime = sluicegate::host::Runtime::new(sluicegate::host::Limits::from(&config.limits))?;
    let listen = "127.0.0.1:0".parse()?;
    let handle =
        sluicegate::proxy::ProxyHandle::new(Arc::new(sluicegate::proxy::Proxy::new(&config, &runtime, listen)?));
    let server = sluicegate::proxy::workers::Server::start(listen, &config, &handle).await?;
    println!("ready {}", server.local_addr().port());
    std::future::pending().await
}

/// The proxy role in front of `url` (http:// with HTTP/2 by prior knowledge, or https:// with
/// ALPN, trusting `ca`), with `chain` on every path and an admin listener for its metrics.
async fn proxy_to(url: &str, ca: &str, chain: &[String]) -> anyhow::Result<()> {
    let mut config =
        format!("upstream = \"{url}\"\nupstream_http2 = true\nupstream_ca = \"{ca}\"\n[[route]]\nprefix = \"/\"\n");
    for spec in chain.iter().filter(|s| *s != "none") {
        config.push_str(&format!("[[route.interceptor]]\nspec = \"{spec}\"\n"));
    }
    let config = sluicegate::config::ProxyConfig::from_toml(&config)?;
    let runtime = sluicegate::host::Runtime::new(sluicegate::host::Limits::from(&config.limits))?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let admin = TcpListener::bind("127.0.0.1:0").await?;
    let proxy = Arc::new(sluicegate::proxy::Proxy::new(&config, &runtime, listener.local_addr()?)?);
    println!("ready {} {}", listener.local_addr()?.port(), admin.local_addr()?.port());
    let handle = sluicegate::proxy::ProxyHandle::new(proxy);
    tokio::spawn(sluicegate::proxy::admin::serve_admin(admin, handle.clone()));
    sluicegate::proxy::serve_handle(listener, handle).await
}

/// A child process of this binary in `role`, killed on drop; its `ready PORT [ADMIN]` line is read.
struct Role {
    child: Child,
    port: u16,
    admin: Option<u16>,
}

impl Role {
    /// Starts `args`; the role's stderr (a proxy's log) goes to `sluicegate-loadtest-ROLE.log` in
    /// the temporary directory, overwritten by the next run.
    fn start(args: &[&str]) -> anyhow::Result<Role> {
        let log = std::env::temp_dir().join(format!("sluicegate-loadtest-{}.log", args[0]));
        let wrap = std::env::var("LOADTEST_WRAP").unwrap_or_default();
        let mut wrap = wrap.split_whitespace().filter(|_| args[0] == "proxy");
        let other = args[0] == "proxy" && args.iter().any(|arg| arg.contains("@other"));
        let exe = match other {
            true => {
                std::env::var_os("LOADTEST_OTHER").context("a chain with `@other` needs LOADTEST_OTHER=PATH")?.into()
            }
            false => std::env::current_exe()?,
        };
        let args: Vec<String> = args.iter().map(|arg| arg.replace("@other", "")).collect();
        let mut command = match wrap.next() {
            Some(program) => {
                let mut command = Command::new(program);
                command.args(wrap).arg(exe);
                command
            }
            None => Command::new(exe),
        };
        let mut child = command.args(&args).stdout(Stdio::piped()).stderr(std::fs::File::create(&log)?).spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
        let ready = line.trim().strip_prefix("ready ");
        let mut ports = ready.with_context(|| format!("role did not start (see {})", log.display()))?.split(' ');
        let port = ports.next().context("no port")?.parse()?;
        let admin = ports.next().map(str::parse).transpose()?;
        Ok(Role { child, port, admin })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    sluicegate::proxy::admin::resident_bytes(pid).unwrap_or(0) / 1024
}

/// CPU time of a process, in seconds: the sum over its threads of the scheduler's on-CPU time
/// (nanosecond resolution, unlike the 10 ms ticks of `/proc/PID/stat`).
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0.0 };
    let nanos: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    nanos as f64 / 1e9
}

/// CPU seconds of a process and all its descendants (nginx's workers are children of its master).
fn tree_cpu_seconds(pid: u32) -> f64 {
    tree_sum(pid, cpu_seconds)
}

/// CPU seconds in user space of a process and its descendants: `utime` of `/proc/PID/stat`, in
/// ticks of 10 ms (USER_HZ), so only a run of seconds tells it apart. The part of the CPU a
/// change to the proxy's own code moves; the kernel's part (most of it) is noisier.
fn tree_user_seconds(pid: u32) -> f64 {
    tree_sum(pid, |pid| stat_field(pid, 11).map_or(0.0, |ticks| ticks as f64 / 100.0))
}

/// Field `n` of `/proc/PID/stat` counted from the one after the parenthesised command name
/// (0: the state, 1: the parent pid, 11: `utime`).
fn stat_field(pid: u32, n: usize) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(n)?.parse().ok()
}

/// `of` summed over a process and all its descendants.
fn tree_sum(pid: u32, of: fn(u32) -> f64) -> f64 {
    let mut total = of(pid);
    let Ok(entries) = std::fs::read_dir("/proc") else { return total };
    for entry in entries.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if stat_field(child, 1) == Some(u64::from(pid)) {
            total += tree_sum(child, of);
        }
    }
    total
}

/// nginx in front of the upstream on a free port, if it is installed; killed on drop.
struct Nginx {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Nginx {
    const BINARY: &str = "/usr/sbin/nginx";

    fn start(upstream_port: u16) -> anyhow::Result<Option<Nginx>> {
        if !std::path::Path::new(Self::BINARY).exists() {
            return Ok(None);
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!("sluicegate-loadtest-nginx-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let config = format!(
            "daemon off;\nworker_processes 2;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;\n\
             events {{ worker_connections 8192; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {dir};\n  proxy_temp_path {dir};\n\
               upstream up {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}\n\
               server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://up;\n\
                 proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_buffering off;\n\
                 proxy_read_timeout 1h;\n    }}\n  }}\n}}\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("nginx.conf"), config)?;
        let child = Command::new(Self::BINARY)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(&dir)
            .stderr(Stdio::null())
            .spawn()?;
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(Some(Nginx { child, port, dir }));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("nginx did not start (see {})", dir.join("error.log").display())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master then stops its workers too.
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A proxy under test: sluicegate with a chain, or nginx.
struct Target {
    label: String,
    port: u16,
    pid: u32,
    _role: Option<Role>,
    _nginx: Option<Nginx>,
    /// The collector roles of the `+otlp` chains, kept by the first target.
    _collectors: Vec<Role>,
}

impl Target {
    /// sluicegate with each chain, then nginx if installed.
    fn all(upstream_port: u16, chains: &[String]) -> anyhow::Result<Vec<Target>> {
        let mut targets = Vec::new();
        let mut collectors = Vec::new();
        for chain in chains {
            let collector = match chain.rsplit_once("+otlp").map(|(_, kind)| kind) {
                Some("") => Some(Role::start(&["otlp-sink"])?),
                Some("-hole") => Some(Role::start(&["otlp-hole"])?),
                Some("-down") => None,
                Some(other) => bail!("`+otlp{other}`: a chain ends in `+otlp`, `+otlp-down` or `+otlp-hole`"),
                None => None,
            };
            let exporting = match (&collector, chain.contains("+otlp")) {
                (Some(collector), _) => format!("{chain}={}", collector.port),
                // A port nobody listens on: bound, then closed.
                (None, true) => format!("{chain}={}", std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()),
                (None, false) => chain.clone(),
            };
            collectors.extend(collector);
            let role = Role::start(&["proxy", &upstream_port.to_string(), &exporting])?;
            let (port, pid) = (role.port, role.pid());
            targets.push(Target {
                label: format!("sluicegate, {chain}"),
                port,
                pid,
                _role: Some(role),
                _nginx: None,
                _collectors: Vec::new(),
            });
        }
        // The collectors live as long as the targets do (dropped with the first of them).
        if let Some(first) = targets.first_mut() {
            first._collectors = collectors;
        }
        if let Some(nginx) = Nginx::start(upstream_port)? {
            let (port, pid) = (nginx.port, nginx.child.id());
            targets.push(Target {
                label: "nginx (proxy_buffering off)".into(),
                port,
                pid,
                _role: None,
                _nginx: Some(nginx),
                _collectors: Vec::new(),
            });
        } else {
            eprintln!("nginx is not installed (apt-get install nginx-light): measuring sluicegate alone");
        }
        Ok(targets)
    }

    fn cpu(&self) -> f64 {
        tree_cpu_seconds(self.pid)
    }

    fn user_cpu(&self) -> f64 {
        tree_user_seconds(self.pid)
    }
}

/// `streams` streams of `rate` events/s each, one event per write (the shape of LLM traffic:
/// every batch is one event), through each target in interleaved rounds: the proxy's CPU per
/// delivered event (process and children), medians.
async fn many_streams(streams: u64, rate: u64, seconds: u64, rounds: u64, chains: Vec<String>) -> anyhow::Result<()> {
    let upstream = Role::start(&["upstream"])?;
    let targets = Target::all(upstream.port, &chains)?;
    let mut per_event: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    let mut user_per_event: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    let mut delivered_rate: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    for _ in 0..rounds {
        for (i, target) in targets.iter().enumerate() {
            let delivered = Arc::new(AtomicU64::new(0));
            let mut readers = Vec::with_capacity(streams as usize);
            for n in 0..streams {
                let socket = open_first(target.port, &format!("/stamped?n={rate}"))
                    .await
                    .with_context(|| format!("{}: stream {n}", target.label))?;
                let sink = delivered.clone();
                readers.push(tokio::spawn(read_events(socket, move |_| {
                    sink.fetch_add(1, Ordering::Relaxed);
                })));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (e0, c0, u0) = (delivered.load(Ordering::Relaxed), target.cpu(), target.user_cpu());
            let t0 = Instant::now();
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            let events = delivered.load(Ordering::Relaxed) - e0;
            let (cpu, user, elapsed) = (target.cpu() - c0, target.user_cpu() - u0, t0.elapsed().as_secs_f64());
            for reader in readers {
                reader.abort();
            }
            per_event[i].push(cpu * 1e6 / events.max(1) as f64);
            user_per_event[i].push(user * 1e6 / events.max(1) as f64);
            delivered_rate[i].push(events as f64 / elapsed);
            // Let the closed streams wind down before the next target is measured.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    println!(
        "{streams} streams x {rate} events/s, one event per write; {rounds} interleaved rounds of {seconds} s; medians"
    );
    println!("| proxy | events/s delivered | CPU per delivered event | of it in user space | against nginx |");
    println!("|---|---:|---:|---:|---:|");
    let medians: Vec<f64> = per_event.iter_mut().map(|v| median(v)).collect();
    let nginx = targets.iter().position(|t| t._nginx.is_some()).map(|i| medians[i]);
    for (i, target) in targets.iter().enumerate() {
        let against = nginx.map_or("-".to_string(), |n| format!("{:.2}x", medians[i] / n));
        let (rate, user) = (median(&mut delivered_rate[i]), median(&mut user_per_event[i]));
        println!("| {} | {rate:.0} | {:.1} us | {user:.1} us | {against} |", target.label, medians[i]);
    }
    Ok(())
}

/// Many short requests: `clients` keep-alive connections, each asking in turn for a short event
/// stream (`events` events, then the end), through each target in interleaved rounds: requests
/// per second, the proxy's CPU per request, and each request's latency (p50, p99), medians over
/// the rounds. The shape where a request's fixed costs (its spans, when exporting) count most.
async fn short_requests(
    clients: u64,
    events: u64,
    seconds: u64,
    rounds: u64,
    chains: Vec<String>,
) -> anyhow::Result<()> {
    let upstream = Role::start(&["upstream"])?;
    let targets = Target::all(upstream.port, &chains)?;
    let (mut per_request, mut rates, mut p50s, mut p99s) = (
        vec![Vec::new(); targets.len()],
        vec![Vec::new(); targets.len()],
        vec![Vec::new(); targets.len()],
        vec![Vec::new(); targets.len()],
    );
    for _ in 0..rounds {
        for (i, target) in targets.iter().enumerate() {
            let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let mut tasks = Vec::new();
            for _ in 0..clients {
                let path = format!("/short?n={events}");
                tasks.push(tokio::spawn(ask_in_turn(target.port, path, measuring.clone(), stop.clone())));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            measuring.store(true, Ordering::Relaxed);
            let (c0, t0) = (target.cpu(), Instant::now());
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            measuring.store(false, Ordering::Relaxed);
            let (cpu, elapsed) = (target.cpu() - c0, t0.elapsed().as_secs_f64());
            stop.store(true, Ordering::Relaxed);
            let mut latencies = Vec::new();
            for task in tasks {
                latencies.extend(task.await?.with_context(|| target.label.clone())?);
            }
            latencies.sort_unstable();
            let pick =
                |q: f64| latencies.get(((latencies.len() as f64 - 1.0) * q) as usize).copied().unwrap_or(0) as f64;
            per_request[i].push(cpu * 1e6 / latencies.len().max(1) as f64);
            rates[i].push(latencies.len() as f64 / elapsed);
            p50s[i].push(pick(0.5));
            p99s[i].push(pick(0.99));
        }
    }
    println!(
        "{clients} clients, each a short stream ({events} events) after another on one connection; {rounds} interleaved rounds of {seconds} s; medians"
    );
    println!("| proxy | requests/s | CPU per request | p50 | p99 | CPU against the first |");
    println!("|---|---:|---:|---:|---:|---:|");
    let first = median(&mut per_request[0].clone());
    for (i, target) in targets.iter().enumerate() {
        let cpu = median(&mut per_request[i]);
        println!(
            "| {} | {:.0} | {cpu:.1} us | {:.0} us | {:.0} us | {:.2}x |",
            target.label,
            median(&mut rates[i]),
            median(&mut p50s[i]),
            median(&mut p99s[i]),
            cpu / first
        );
    }
    Ok(())
}

/// One client: requests on one keep-alive connection, one after another, until `stop`; the
/// latency (microseconds, request written to the body's end) of those made while `measuring`.
/// A connection the proxy closes (nginx does after `keepalive_requests`, 1,000) is opened again.
async fn ask_in_turn(
    port: u16,
    path: String,
    measuring: Arc<std::sync::atomic::AtomicBool>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<Vec<u64>> {
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        ask_on_one_connection(port, &path, &measuring, &stop, &mut latencies).await?;
    }
    Ok(latencies)
}

async fn ask_on_one_connection(
    port: u16,
    path: &str,
    measuring: &std::sync::atomic::AtomicBool,
    stop: &std::sync::atomic::AtomicBool,
    latencies: &mut Vec<u64>,
) -> anyhow::Result<()> {
    let socket = TcpStream::connect(("127.0.0.1", port)).await?;
    socket.set_nodelay(true)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(socket)).await?;
    tokio::spawn(connection);
    while !stop.load(Ordering::Relaxed) {
        if sender.ready().await.is_err() {
            return Ok(()); // closed by the proxy after its last answer
        }
        let request = Request::get(path)
            .header("host", format!("127.0.0.1:{port}"))
            .header("accept", "text/event-stream")
            .body(http_body_util::Empty::<Bytes>::new())?;
        let started = Instant::now();
        let response = sender.send_request(request).await?;
        let closes = response.headers().get(http::header::CONNECTION).is_some_and(|v| v == "close");
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::ensure!(body.ends_with(b"\n\n"), "a short stream ends with its last event: {body:?}");
        if measuring.load(Ordering::Relaxed) {
            latencies.push(started.elapsed().as_micros() as u64);
        }
        if closes {
            return Ok(());
        }
    }
    Ok(())
}

/// Opens an event stream with a raw HTTP/1.1 request and reads until the first event.
async fn open_stream(port: u16, path: &str) -> anyhow::Result<TcpStream> {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).await?;
    socket
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\naccept: text/event-stream\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(2).any(|w| w == b"\n\n") {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            bail!("stream closed before its first event");
        }
        seen.extend_from_slice(&buf[..n]);
    }
    Ok(socket)
}

async fn memory(streams: u64, chains: Vec<String>) -> anyhow::Result<()> {
    const WARM: u64 = 200;
    let upstream = Role::start(&["upstream"])?;
    println!("| chain | RSS after {WARM} streams | RSS at {streams} streams | per stream |");
    println!("|---|---:|---:|---:|");
    for chain in chains {
        let proxy = Role::start(&["proxy", &upstream.port.to_string(), &chain])?;
        let mut sockets = Vec::with_capacity(streams as usize);
        let mut baseline = 0;
        for i in 0..streams {
            if i == WARM {
                tokio::time::sleep(Duration::from_millis(500)).await;
                baseline = rss_kib(proxy.pid());
            }
            sockets.push(open_stream(proxy.port, "/idle").await.with_context(|| format!("stream {i}"))?);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let full = rss_kib(proxy.pid());
        let per_stream = (full.saturating_sub(baseline)) as f64 * 1024.0 / (streams - WARM) as f64;
        println!(
            "| {chain} | {:.1} MiB | {:.1} MiB | {:.1} KiB |",
            baseline as f64 / 1024.0,
            full as f64 / 1024.0,
            per_stream / 1024.0
        );
        drop(sockets);
    }
    Ok(())
}

async fn cpu(rate: u64, streams: u64, seconds: u64, chains: Vec<String>) -> anyhow::Result<()> {
    let upstream = Role::start(&["upstream"])?;
    let per_stream = rate / streams.max(1);
    println!("| chain | events/s received | proxy CPU (share of one core) |");
    println!("|---|---:|---:|");
    for chain in chains {
        let proxy = Role::start(&["proxy", &upstream.port.to_string(), &chain])?;
        let received = Arc::new(AtomicU64::new(0));
        let mut readers = Vec::new();
        for _ in 0..streams {
            let mut socket = open_stream(proxy.port, &format!("/rate?n={per_stream}")).await?;
            let received = received.clone();
            readers.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut last = 0u8;
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let mut events = 0;
                    for &b in &buf[..n] {
                        if b == b'\n' && last == b'\n' {
                            events += 1;
                        }
                        last = b;
                    }
                    received.fetch_add(events, Ordering::Relaxed);
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(2)).await; // warm up
        let (cpu0, events0, t0) = (cpu_seconds(proxy.pid()), received.load(Ordering::Relaxed), Instant::now());
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let elapsed = t0.elapsed().as_secs_f64();
        let cpu = (cpu_seconds(proxy.pid()) - cpu0) / elapsed;
        let events = (received.load(Ordering::Relaxed) - events0) as f64 / elapsed;
        println!("| {chain} | {events:.0} | {:.1}% |", cpu * 100.0);
        for r in readers {
            r.abort();
        }
    }
    Ok(())
}

/// Reads an event stream from a raw socket, calling `on_event` with each event's text.
async fn read_events(mut socket: TcpStream, mut on_event: impl FnMut(&[u8])) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = socket.read(&mut buf).await {
        if n == 0 {
            break;
        }
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(end) = pending[start..].windows(2).position(|w| w == b"\n\n") {
            on_event(&pending[start..start + end]);
            start += end + 2;
        }
        pending.drain(..start);
    }
}

/// Latency from the upstream writing an event to the client reading it, directly and through the
/// proxy with each chain; one stream at `rate` events/s.
async fn latency(rate: u64, seconds: u64, chains: Vec<String>) -> anyhow::Result<()> {
    let upstream = Role::start(&["upstream"])?;
    println!("| path | events | p50 | p99 | p50 added | p99 added |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut targets = vec![("direct to the upstream".to_string(), None)];
    for chain in chains {
        targets.push((chain.clone(), Some(Role::start(&["proxy", &upstream.port.to_string(), &chain])?)));
    }
    let mut direct = (0.0, 0.0);
    for (label, proxy) in &targets {
        let port = proxy.as_ref().map_or(upstream.port, |p| p.port);
        let socket = open_first(port, &format!("/stamped?n={rate}")).await?;
        let all = delivery_delays(socket, seconds).await;
        let pick = |q: f64| all.get(((all.len() as f64 - 1.0) * q) as usize).copied().unwrap_or(0) as f64;
        let (p50, p99) = (pick(0.5), pick(0.99));
        if proxy.is_none() {
            direct = (p50, p99);
        }
        println!(
            "| {label} | {} | {p50:.0} us | {p99:.0} us | {:.0} us | {:.0} us |",
            all.len(),
            p50 - direct.0,
            p99 - direct.1
        );
    }
    Ok(())
}

/// Opens a stream without waiting for its first event.
async fn open_first(port: u16, path: &str) -> anyhow::Result<TcpStream> {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).await?;
    socket
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\naccept: text/event-stream\r\n\r\n").as_bytes(),
        )
        .await?;
    Ok(socket)
}

/// Events per second one stream delivers when the upstream writes as fast as the reader reads.
async fn throughput(seconds: u64, chains: Vec<String>) -> anyhow::Result<()> {
    let upstream = Role::start(&["upstream"])?;
    // Events/s on one stream swings with how the three processes share two cores; the proxy's
    // CPU time per event does much less, so it is reported too.
    println!("| path | events/s | MB/s | proxy CPU ns/event |");
    println!("|---|---:|---:|---:|");
    let mut targets: Vec<(String, Option<(u16, u32)>)> = vec![("direct to the upstream".to_string(), None)];
    let proxies = Target::all(upstream.port, &chains)?;
    for target in &proxies {
        targets.push((target.label.clone(), Some((target.port, target.pid))));
    }
    for (label, proxy) in &targets {
        let port = proxy.map_or(upstream.port, |p| p.0);
        let socket = open_first(port, "/blast").await?;
        let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let sink = counts.clone();
        let reader = tokio::spawn(read_events(socket, move |event| {
            sink.0.fetch_add(1, Ordering::Relaxed);
            sink.1.fetch_add(event.len() as u64 + 2, Ordering::Relaxed);
        }));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let cpu = || proxy.map_or(0.0, |p| tree_cpu_seconds(p.1));
        let (e0, b0, c0, t0) =
            (counts.0.load(Ordering::Relaxed), counts.1.load(Ordering::Relaxed), cpu(), Instant::now());
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let elapsed = t0.elapsed().as_secs_f64();
        let delivered = counts.0.load(Ordering::Relaxed) - e0;
        let cpu_ns = (cpu() - c0) * 1e9 / delivered.max(1) as f64;
        let events = delivered as f64 / elapsed;
        let mb = (counts.1.load(Ordering::Relaxed) - b0) as f64 / elapsed / 1e6;
        reader.abort();
        let cpu_ns = if proxy.is_some() { format!("{cpu_ns:.0}") } else { "-".into() };
        println!("| {label} | {events:.0} | {mb:.1} | {cpu_ns} |");
    }
    Ok(())
}

/// Flood events/s through the proxy to an HTTPS upstream (HTTP/2 by ALPN) against the same over
/// plain HTTP (HTTP/2 by prior knowledge), `streams` at once, in interleaved rounds; medians, and
/// the TLS handshakes the HTTPS proxy made (its pooled connection should serve every stream).
async fn tls_against_plain(streams: u64, seconds: u64, rounds: u64, chains: Vec<String>) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("sluicegate-loadtest-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate()?;
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])?.signed_by(&leaf_key, &issuer)?;
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    std::fs::write(path("ca.pem"), ca_cert.pem())?;
    std::fs::write(path("upstream.pem"), leaf.pem())?;
    std::fs::write(path("upstream.key"), leaf_key.serialize_pem())?;

    let plain = Role::start(&["upstream"])?;
    let secure = Role::start(&["upstream", &path("upstream.pem"), &path("upstream.key")])?;
    println!("{streams} streams at once, {seconds} s per measurement, {rounds} interleaved rounds; medians");
    println!(
        "| chain | http:// events/s | https:// events/s | ratio | proxy CPU ns/event http / https | TLS handshakes |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for chain in chains {
        let plain_proxy =
            Role::start(&["proxy-to", &format!("http://127.0.0.1:{}", plain.port), &path("ca.pem"), &chain])?;
        let secure_proxy =
            Role::start(&["proxy-to", &format!("https://localhost:{}", secure.port), &path("ca.pem"), &chain])?;
        let (mut plain_rates, mut secure_rates, mut plain_cpu, mut secure_cpu) = (vec![], vec![], vec![], vec![]);
        for _ in 0..rounds {
            for (proxy, rates, cpu) in
                [(&plain_proxy, &mut plain_rates, &mut plain_cpu), (&secure_proxy, &mut secure_rates, &mut secure_cpu)]
            {
                let (rate, ns) = flood(proxy, streams, seconds).await?;
                rates.push(rate);
                cpu.push(ns);
            }
        }
        let metrics = admin_metrics(secure_proxy.admin.context("no admin port")?).await?;
        let handshakes: u64 = metrics
            .lines()
            .filter(|l| l.starts_with("sluicegate_upstream_tls_handshakes_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        let (p, s) = (median(&mut plain_rates), median(&mut secure_rates));
        println!(
            "| {chain} | {p:.0} | {s:.0} | {:.2} | {:.0} / {:.0} | {handshakes} for {} streams |",
            s / p,
            median(&mut plain_cpu),
            median(&mut secure_cpu),
            streams * rounds
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// `streams` flood streams through `proxy` at once: events/s delivered in all, and the proxy's
/// CPU ns per event, over `seconds` after one second of warm-up.
async fn flood(proxy: &Role, streams: u64, seconds: u64) -> anyhow::Result<(f64, f64)> {
    let delivered = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..streams {
        let socket = open_first(proxy.port, "/blast").await?;
        let sink = delivered.clone();
        readers.push(tokio::spawn(read_events(socket, move |_| {
            sink.fetch_add(1, Ordering::Relaxed);
        })));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (e0, c0, t0) = (delivered.load(Ordering::Relaxed), cpu_seconds(proxy.pid()), Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let events = delivered.load(Ordering::Relaxed) - e0;
    let (elapsed, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds(proxy.pid()) - c0);
    for reader in readers {
        reader.abort();
    }
    Ok((events as f64 / elapsed, cpu * 1e9 / events.max(1) as f64))
}

async fn admin_metrics(port: u16) -> anyhow::Result<String> {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).await?;
    socket.write_all(b"GET /metrics HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n").await?;
    let mut text = String::new();
    socket.read_to_string(&mut text).await?;
    Ok(text)
}

/// Where the tests' build leaves the `hostile` guest (relative to the workspace).
const HOSTILE_GUEST: &str = "target/guests/wasm32-wasip2/guest/hostile.wasm";

/// The proxy role for `isolation`: `/slow/...` through `guest` spinning `busy_ms` per batch (the
/// `hostile` test guest's `busy` mode), everything else through `example:passthrough`, in
/// thread model `model` (`per-core`, `shared`; `per-core:N` sets `[threads] slow_calls = N`).
async fn proxy_isolation(upstream_port: &str, guest: &str, busy_ms: &str, model: &str) -> anyhow::Result<()> {
    let (model, slow_calls) = model.split_once(':').unwrap_or((model, "0"));
    let config = format!(
        "upstream = \"http://127.0.0.1:{upstream_port}\"\n[limits]\ncall_deadline_ms = 1000\n\
         [threads]\nmodel = \"{model}\"\nslow_calls = {slow_calls}\n\
         [[route]]\nprefix = \"/slow\"\n[[route.interceptor]]\nspec = \"{guest}\"\n\
         config = {{ mode = \"busy\", busy_ms = \"{busy_ms}\" }}\ngrant_clocks = true\ninstances = 2\n\
         [[route]]\nprefix = \"/\"\n[[route.interceptor]]\nspec = \"example:passthrough\"\n"
    );
    serve(&config).await
}

/// Tenant isolation: one fast stream (200 events/s through `example:passthrough`) measured alone,
/// then beside `slow_streams` slow streams (two by default) on another route whose guest spins
/// `busy_ms` per batch (a batch every 500 ms each: with two, 100 ms is 20% of a 2-core machine),
/// in interleaved rounds per thread model.
/// The fast stream's delivery delay (upstream write to client read): p50, p99 and max.
async fn isolation(
    busy_ms: u64,
    slow_streams: u64,
    seconds: u64,
    rounds: u64,
    models: Vec<String>,
    guest: String,
) -> anyhow::Result<()> {
    if !std::path::Path::new(&guest).exists() {
        bail!("{guest}: no such guest (build it with `cargo test -p sluicegate-tests --no-run`, or pass --guest PATH)");
    }
    let upstream = Role::start(&["upstream"])?;
    let busy = busy_ms.to_string();
    let proxies = models
        .iter()
        .map(|model| Role::start(&["proxy-isolation", &upstream.port.to_string(), &guest, &busy, model]))
        .collect::<anyhow::Result<Vec<_>>>()?;
    println!(
        "fast stream 200 events/s; slow tenant: {slow_streams} streams, {busy_ms} ms per batch every 500 ms; {seconds} s per phase"
    );
    println!("| model | round | alone p50 / p99 / max | beside the slow tenant p50 / p99 / max | p99 ratio |");
    println!("|---|---:|---:|---:|---:|");
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); proxies.len()];
    for round in 0..rounds {
        for (i, proxy) in proxies.iter().enumerate() {
            let alone = fast_delays(proxy.port, seconds).await?;
            let mut slow = Vec::new();
            for _ in 0..slow_streams {
                let socket = open_stream(proxy.port, "/slow/stamped?n=2").await?;
                slow.push(tokio::spawn(read_events(socket, |_| {})));
            }
            let beside = fast_delays(proxy.port, seconds).await?;
            for task in slow {
                task.abort();
            }
            ratios[i].push(beside.1 / alone.1.max(1.0));
            let show = |d: (f64, f64, f64)| format!("{:.2} / {:.2} / {:.2} ms", d.0 / 1e3, d.1 / 1e3, d.2 / 1e3);
            println!(
                "| {} | {round} | {} | {} | {:.1}x |",
                models[i],
                show(alone),
                show(beside),
                beside.1 / alone.1.max(1.0)
            );
            // Let the slow streams' last calls end before the next phase.
            tokio::time::sleep(Duration::from_millis(busy_ms + 200)).await;
        }
    }
    for (i, model) in models.iter().enumerate() {
        println!("{model}: median p99 ratio {:.1}x", median(&mut ratios[i]));
    }
    Ok(())
}

/// One fast stream through `port` for a second of warm-up and `seconds` of samples: its delivery
/// delays' p50, p99 and max, in microseconds.
async fn fast_delays(port: u16, seconds: u64) -> anyhow::Result<(f64, f64, f64)> {
    let all = delivery_delays(open_stream(port, "/stamped?n=200").await?, seconds).await;
    if all.is_empty() {
        bail!("the fast stream delivered nothing");
    }
    let pick = |q: f64| all[((all.len() - 1) as f64 * q) as usize] as f64;
    Ok((pick(0.5), pick(0.99), pick(1.0)))
}

/// Reads a stream of `/stamped` events for a second of warm-up and `seconds` more: each event's
/// delay from the upstream's write to this read, in microseconds, sorted.
async fn delivery_delays(socket: TcpStream, seconds: u64) -> Vec<u64> {
    let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = samples.clone();
    let reader = tokio::spawn(read_events(socket, move |event| {
        let text = String::from_utf8_lossy(event);
        if let Some(sent) = text.split("\"sent\":").nth(1).and_then(|r| r.split(',').next()?.parse::<u64>().ok()) {
            sink.lock().unwrap().push(now_micros().saturating_sub(sent));
        }
    }));
    tokio::time::sleep(Duration::from_secs(1)).await;
    samples.lock().unwrap().clear(); // warm-up
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    reader.abort();
    let mut all = samples.lock().unwrap().clone();
    all.sort_unstable();
    all
}
