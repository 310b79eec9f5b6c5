//! The `sluicegate` command.

/// What only the command line uses: the demo (`demo`), standard input through a chain (`run`),
/// and new interceptor projects (`new`).
mod cli {
    pub(crate) mod demo;
    pub(crate) mod pipeline;
    pub(crate) mod scaffold;
}

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use cli::pipeline::{self, BatchLimits};
use sluicegate::chain::Chain;
use sluicegate::config::{InterceptorConfig, ProxyConfig};
use sluicegate::host::{Limits, Runtime};
use sluicegate::proxy::otlp_metrics::MetricsPush;
use sluicegate::proxy::telemetry::{self, Export, Telemetry};
use sluicegate::proxy::{Proxy, ProxyHandle};
use sluicegate::spec::Spec;
use sluicegate::{Config, StreamContext};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// jemalloc (see [`sluicegate::Jemalloc`]: idle streams cost less memory).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: sluicegate::Jemalloc = sluicegate::Jemalloc;

#[derive(Parser)]
#[command(name = "sluicegate", version, about = "Stream Server-Sent Events through sandboxed WebAssembly interceptors")]
struct Cli {
    /// Log format on standard error: `text` (readable) or `json` (one object per line). The
    /// level is set by SLUICEGATE_LOG (a tracing filter, default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args, Clone)]
struct ServeArgs {
    /// Where to accept clients, e.g. 127.0.0.1:8080 (or `listen` in the config file).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// The upstream's base URL, e.g. http://127.0.0.1:3000 (or `upstream` in the config file).
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
    /// An interceptor of the chain for every path, in order: a component file, `example:NAME`
    /// or `native:NAME`. Replaces the config file's `/` route.
    #[arg(long = "interceptor", short = 'i', value_name = "SPEC")]
    interceptors: Vec<Spec>,
    /// An interceptor of the request chain for every path, in order: it sees JSON request bodies
    /// before they go upstream, and may rewrite or refuse them. Replaces the config file's `/`
    /// route's request chain.
    #[arg(long = "request-interceptor", value_name = "SPEC")]
    request_interceptors: Vec<Spec>,
    /// A TOML file with routes, chains, interceptor config, batching, reconnection and limits.
    /// Read again, with the components it names, on SIGHUP.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Extra CA certificates (PEM) to trust for HTTPS upstreams, besides the system's roots (or
    /// `upstream_ca` in the config file).
    #[arg(long, value_name = "FILE")]
    upstream_ca: Option<PathBuf>,
    /// Serve clients over TLS with this certificate chain (PEM), reloaded on SIGHUP (or
    /// `[tls] cert` in the config file).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Where to serve /metrics, /healthz and /readyz (keep it on loopback or a private network).
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// Also reload when the config file or a component file changes (checked every second).
    #[arg(long)]
    watch: bool,
    /// Keep compiled components in this directory, so that a restart with unchanged components
    /// skips compilation. It must be writable only by the user sluicegate runs as.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

impl ServeArgs {
    /// The configuration: the file, if any, with the command line on top. Built again at each
    /// reload.
    fn load_config(&self) -> anyhow::Result<ProxyConfig> {
        let mut config = match &self.config {
            Some(path) => ProxyConfig::from_file(path)?,
            None => ProxyConfig::default(),
        };
        config.upstream = self.upstream.clone().or(config.upstream);
        config.upstream_ca = self.upstream_ca.clone().or(config.upstream_ca);
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            config.tls = Some(sluicegate::config::TlsConfig { cert: cert.clone(), key: key.clone() });
        }
        if !self.interceptors.is_empty() || !self.request_interceptors.is_empty() {
            let at = config.routes.iter().position(|r| r.prefix.trim_end_matches('/').is_empty());
            let mut root = at.map(|i| config.routes.remove(i)).unwrap_or_default();
            root.prefix = "/".into();
            let chain = |specs: &[Spec]| specs.iter().map(|spec| InterceptorConfig::new(spec.to_string())).collect();
            if !self.interceptors.is_empty() {
                root.interceptors = chain(&self.interceptors);
            }
            if !self.request_interceptors.is_empty() {
                root.request_interceptors = chain(&self.request_interceptors);
            }
            config.routes.push(root);
        }
        Ok(config)
    }

    /// The files a reload reads: the config file, every component file of the config, and the
    /// certificate, key and CA files.
    fn watched_files(&self, config: &ProxyConfig) -> Vec<PathBuf> {
        let components =
            config.routes.iter().flat_map(|r| r.interceptors.iter().chain(&r.request_interceptors)).filter_map(|ic| {
                match ic.spec.parse::<Spec>() {
                    Ok(Spec::Component(path)) => Some(path),
                    _ => None,
                }
            });
        let top = [&config.upstream_ca, &config.upstream_client_cert, &config.upstream_client_key];
        let routes =
            config.routes.iter().flat_map(|r| [&r.upstream_ca, &r.upstream_client_cert, &r.upstream_client_key]);
        let certificates = top.into_iter().chain(routes).flatten().cloned();
        let own = config.tls.iter().flat_map(|t| [t.cert.clone(), t.key.clone()]);
        self.config.iter().cloned().chain(components).chain(certificates).chain(own).collect()
    }
}

#[derive(Subcommand)]
enum Command {
    /// Runs an event stream from standard input through interceptors to standard output.
    Run {
        /// An interceptor, in chain order: a component file, `example:NAME` or `native:NAME`.
        #[arg(long = "interceptor", short = 'i', value_name = "SPEC")]
        interceptors: Vec<Spec>,
        /// A config entry for the interceptor at that position of the chain (0-based):
        /// `N.KEY=VALUE`, e.g. `0.types=ping,heartbeat`.
        #[arg(long = "set", value_name = "N.KEY=VALUE")]
        settings: Vec<String>,
        /// The most events per batch.
        #[arg(long, default_value_t = BatchLimits::default().max_events)]
        max_batch_events: usize,
    },
    /// Runs the proxy: every request goes to the upstream; event streams pass through the chain.
    Serve(ServeArgs),
    /// Starts an embedded upstream and a proxy with example interceptors in front of it, shows a
    /// stream before and after, and keeps serving until interrupted.
    Demo {
        /// Where the proxy listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Exit after showing the stream before and after.
        #[arg(long)]
        once: bool,
        /// Serve only the embedded upstream (its /llm and /mcp streams) at --listen, to put a
        /// `sluicegate serve` of your own in front of it.
        #[arg(long, conflicts_with = "once")]
        upstream_only: bool,
    },
    /// Measures an interceptor in ns per event at several batch sizes, next to a counterpart.
    Bench {
        /// The interceptor to measure: a component file (or `example:NAME`, `native:NAME`).
        #[arg(long = "interceptor", short = 'i', value_name = "SPEC")]
        interceptor: Spec,
        /// What to compare it with, e.g. its native twin `native:NAME` or `example:passthrough`.
        #[arg(long = "against", value_name = "SPEC")]
        against: Option<Spec>,
        /// Batch sizes to measure.
        #[arg(long, value_delimiter = ',', default_values_t = [1usize, 8, 64, 256])]
        batch_sizes: Vec<usize>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Measure on whole streams of real chunks instead of synthetic events: a built-in sample
        /// (`openai-chat`, `openai-responses`, `anthropic`, `gemini`, `ollama`) or a file of
        /// Server-Sent Events. Guards over streamed text should be measured this way.
        #[arg(long, value_name = "SAMPLE|FILE")]
        events: Option<String>,
    },
    /// Lists the example guests and native interceptors built into this binary.
    List,
    /// Creates an interceptor project that builds with one command and runs with `serve`.
    New {
        /// The project's name: lower-case letters, digits and `-`.
        name: String,
        /// The language to write it in.
        #[arg(long, value_enum)]
        lang: cli::scaffold::Lang,
        /// The contract: `batch` (every event: keep, drop, rewrite, insert) or `text` (a guard
        /// over the text a model streams, which the host finds and decodes in every format).
        #[arg(long, value_enum, default_value = "batch")]
        world: cli::scaffold::World,
        /// Where to create it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Checks a component: which world it implements, its imports and exports, and whether it
    /// instantiates and answers a sample batch; every problem in plain words.
    Check {
        /// The component file.
        file: PathBuf,
        /// A config entry for the interceptor, `KEY=VALUE` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        settings: Vec<String>,
        /// Use (and fill) the precompiled component cache in this directory, as `serve` does.
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = cli.log_format;
    // Export starts before the runtime does (its HTTP client blocks on a thread of its own).
    let telemetry = match start_telemetry(&cli) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    init_logs(format, telemetry.as_ref());
    if let Some(telemetry) = &telemetry {
        tracing::info!(endpoint = telemetry.url(), "exporting traces over OTLP");
    }
    let result = run(cli, telemetry.as_ref().map(Telemetry::export));
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match format {
                LogFormat::Text => eprintln!("error: {e:#}"),
                LogFormat::Json => tracing::error!("{e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

/// OpenTelemetry export for `serve`, if `[telemetry]` or the `OTEL_*` environment asks for it.
/// (A config file that does not load is reported by `serve` itself.)
fn start_telemetry(cli: &Cli) -> anyhow::Result<Option<Telemetry>> {
    let Command::Serve(args) = &cli.command else { return Ok(None) };
    let config = args.config.as_deref().and_then(|path| ProxyConfig::from_file(path).ok()).unwrap_or_default();
    let Some(export) = Export::resolve(&config.telemetry, |name| std::env::var(name).ok())? else {
        return Ok(None);
    };
    Ok(Some(Telemetry::start(&export).with_context(|| format!("telemetry export to {}", export.url))?))
}

/// The log on stderr (`SLUICEGATE_LOG` filters it), beside the export layer if export is on.
/// Without export the filter is global, as it always was: per-layer filtering (which export needs,
/// to keep its spans out of the log) costs a lookup at every span entry, and the stream's log span
/// is entered at every poll.
fn init_logs(format: LogFormat, telemetry: Option<&Telemetry>) {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICEGATE_LOG").unwrap_or_else(|_| "info".into());
    let filter = filter.add_directive(telemetry::HIDDEN_FROM_LOGS.parse().expect("a valid directive"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let registry = tracing_subscriber::registry();
    match (format, telemetry) {
        (LogFormat::Text, None) => registry.with(filter).with(text_lines(ansi)).init(),
        (LogFormat::Json, None) => registry.with(filter).with(json_lines()).init(),
        (LogFormat::Text, Some(t)) => registry.with(t.layer()).with(text_lines(ansi).with_filter(filter)).init(),
        (LogFormat::Json, Some(t)) => registry.with(t.layer()).with(json_lines().with_filter(filter)).init(),
    }
}

/// Log lines as readable text (coloured on a terminal).
fn text_lines<S>(ansi: bool) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi)
}

/// Log lines as JSON objects, each with its stream's span.
fn json_lines<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_subscriber::fmt::layer().with_writer(std::io::stderr).json().with_current_span(true).with_span_list(false)
}

fn run(cli: Cli, export: Option<&Export>) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { interceptors, settings, max_batch_events } => {
            run_stdin(&interceptors, &settings, max_batch_events)
        }
        Command::Serve(args) => tokio_runtime()?.block_on(serve(args, export)),
        Command::Demo { listen, upstream_only: true, .. } => tokio_runtime()?.block_on(demo_upstream(listen)),
        Command::Demo { listen, once, .. } => tokio_runtime()?.block_on(demo(listen, once)),
        Command::Bench { interceptor, against, batch_sizes, json, events } => {
            bench(interceptor, against, batch_sizes, json, events.as_deref())
        }
        Command::New { name, lang, world, dir } => new_project(&name, lang, world, dir),
        Command::Check { file, settings, cache_dir } => check(&file, &settings, cache_dir.as_deref()),
        Command::List => {
            let show = |name: &str| {
                let (what, keys) = sluicegate::examples::describe(name);
                println!("  {name:<20} {what}");
                if !keys.is_empty() {
                    println!("  {:<20} config: {keys}", "");
                }
            };
            println!("examples (use as example:NAME):");
            sluicegate::examples::names().for_each(show);
            println!("native interceptors (use as native:NAME), the same work without the sandbox:");
            sluicegate::native::NAMES.iter().copied().for_each(show);
            Ok(())
        }
    }
}

/// `run`: standard input through the chain to standard output.
fn run_stdin(interceptors: &[Spec], settings: &[String], max_batch_events: usize) -> anyhow::Result<()> {
    let runtime = Runtime::new(Limits::default())?;
    let mut configs = vec![Vec::new(); interceptors.len()];
    for setting in settings {
        let (position, entry) = setting.split_once('.').context("--set takes N.KEY=VALUE")?;
        let (key, value) = entry.split_once('=').context("--set takes N.KEY=VALUE")?;
        let n: usize =
            position.parse().with_context(|| format!("--set {setting}: `{position}` is not a chain position"))?;
        let slot = configs
            .get_mut(n)
            .with_context(|| format!("--set {setting}: the chain has {} interceptors", interceptors.len()))?;
        slot.push((key.to_string(), value.to_string()));
    }
    // One run, one process: the store is this process's memory.
    let store = sluicegate::store::SharedStore::memory();
    let links = interceptors
        .iter()
        .zip(configs)
        .map(|(spec, config)| {
            let scoped = sluicegate_guest::Store::new(Arc::new(store.scoped(&spec.to_string())));
            spec.load(&runtime, Config::new(config).with_store(scoped))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let context = StreamContext {
        stream_id: "stdin".into(),
        method: "GET".into(),
        path: "/".into(),
        status: 200,
        ..Default::default()
    };
    let stream = Chain::new(links).open(&context)?;
    let limits = BatchLimits { max_events: max_batch_events.max(1), ..BatchLimits::default() };
    let stats = pipeline::run(std::io::stdin().lock(), std::io::stdout().lock(), stream, limits, 64 * 1024)?;
    if stats.discarded_tail > 0 {
        tracing::warn!(bytes = stats.discarded_tail, "discarded an unterminated event at the end of the input");
    }
    tracing::debug!(?stats, "done");
    Ok(())
}

/// `bench`: ns per event of an interceptor and its counterparts, at several batch sizes.
fn bench(
    interceptor: Spec,
    against: Option<Spec>,
    batch_sizes: Vec<usize>,
    json: bool,
    events: Option<&str>,
) -> anyhow::Result<()> {
    let events = events.map_or(Ok(sluicegate::bench::Events::Synthetic), sluicegate::bench::Events::from_source)?;
    let runtime = Runtime::new(Limits::default())?;
    let specs: Vec<Spec> = std::iter::once(interceptor).chain(against).collect();
    let subjects = sluicegate::bench::load_subjects(&runtime, &specs)?;
    let names: Vec<String> = subjects.iter().map(|(n, _)| n.clone()).collect();
    let sizes: Vec<usize> = batch_sizes.into_iter().filter(|&n| n > 0).collect();
    let total = sizes.len() * subjects.len();
    let mut done = 0;
    let cells = sluicegate::bench::run(&subjects, &sizes, &events, |cell| {
        done += 1;
        eprintln!(
            "[{done}/{total}] {} at batch {}: {:.1} ns/event",
            cell.interceptor, cell.batch_size, cell.ns_per_event
        );
    })?;
    match json {
        true => println!("{}", sluicegate::bench::json(&cells, events.event_bytes())),
        false => print!("{}", sluicegate::bench::table(&names, &sizes, &cells)),
    }
    Ok(())
}

/// `new`: an interceptor project, and the commands to build, check and serve it.
fn new_project(
    name: &str,
    lang: cli::scaffold::Lang,
    world: cli::scaffold::World,
    dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    cli::scaffold::create(&dir, name, lang, world)?;
    let component = cli::scaffold::artifact(name, lang);
    println!("created {}: the {lang} interceptor `{name}`", dir.display());
    println!("build it:  cd {} && {}", dir.display(), cli::scaffold::build_command(lang));
    println!("check it:  sluicegate check {}", component.display());
    println!(
        "run it:    sluicegate serve --listen 127.0.0.1:8080 --upstream http://127.0.0.1:3000 --interceptor {}",
        component.display()
    );
    Ok(())
}

/// `check`: what a component is, and what is wrong with it.
fn check(file: &std::path::Path, settings: &[String], cache_dir: Option<&std::path::Path>) -> anyhow::Result<()> {
    let wasm = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let config = settings
        .iter()
        .map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).context("--set takes KEY=VALUE"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut runtime = Runtime::new(Limits::default())?;
    if let Some(dir) = cache_dir {
        runtime = runtime.with_disk_cache(dir)?;
    }
    let report = sluicegate::check::check(&runtime, &wasm, Config::new(config));
    print!("{}", sluicegate::check::render(&file.display().to_string(), &report));
    anyhow::ensure!(report.is_ok(), "{}: {} problem(s)", file.display(), report.problems.len());
    Ok(())
}

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Loads everything (failing before listening if anything is wrong), then serves until Ctrl-C.
/// Loads everything (failing before listening if anything is wrong), then serves: reloading on
/// SIGHUP (and on file changes with --watch), shutting down gracefully on SIGTERM or Ctrl-C.
async fn serve(args: ServeArgs, export: Option<&Export>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    sluicegate::proxy::raise_descriptor_limit();
    let config = args.load_config()?;
    let listen = args.listen.or(config.listen).context("no address to listen on (--listen ADDR)")?;
    let mut runtime = Runtime::new(Limits::from(&config.limits))?;
    if let Some(dir) = &args.cache_dir {
        runtime = runtime.with_disk_cache(dir)?;
    }
    let runtime = Arc::new(runtime);
    let handle = ProxyHandle::new(Arc::new(Proxy::new(&config, &runtime, listen)?));
    let server = sluicegate::proxy::workers::Server::start(listen, &config, &handle).await?;
    if let Some(admin) = args.admin {
        let admin_listener = TcpListener::bind(admin).await.with_context(|| format!("admin listener on {admin}"))?;
        tracing::info!(admin = %admin_listener.local_addr()?, "serving /metrics, /healthz and /readyz");
        tokio::spawn(sluicegate::proxy::admin::serve_admin(admin_listener, handle.clone()));
    }
    let metrics = push_metrics(export, &handle)?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut watched = FileStamps::new(args.watched_files(&config));
    let mut every_second = tokio::time::interval(Duration::from_secs(1));
    let mut shutdown = config.shutdown.clone();
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    tracing::info!(listen = %format!("{scheme}://{}", server.local_addr()), upstream = config.upstream.as_deref().unwrap_or(""), routes = config.routes.len(), threads = %server.describe(), slow_call_lanes = handle.lifecycle().slow_call_lanes(), "sluicegate is serving");
    loop {
        let reason = tokio::select! {
            _ = hangup.recv() => "SIGHUP",
            _ = every_second.tick(), if args.watch => match watched.changed() {
                true => "a watched file changed",
                false => continue,
            },
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        };
        tracing::info!("reloading ({reason})");
        let built = rebuild(&args, &runtime, &handle, listen).await?;
        if let Ok((_, config)) = &built {
            shutdown = config.shutdown.clone();
            watched = FileStamps::new(args.watched_files(config));
        }
        let _ = handle.reload(built.map(|(proxy, _)| proxy));
    }
    let lifecycle = handle.lifecycle();
    lifecycle.shut_down(shutdown.drain_ms, shutdown.finish_ms).await;
    server.stop().await?;
    if let Some(metrics) = metrics {
        // The last values, pushed from a thread that may block.
        tokio::task::spawn_blocking(move || metrics.shutdown()).await?;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Pushes the metrics of `/metrics` over OTLP if export asks for it (read from the proxy that
/// serves at the time of each push, a reload's included).
fn push_metrics(export: Option<&Export>, handle: &Arc<ProxyHandle>) -> anyhow::Result<Option<MetricsPush>> {
    let Some(export) = export else { return Ok(None) };
    let handle = handle.clone();
    let source = Box::new(move || sluicegate::proxy::admin::families(&handle.current()));
    let push = MetricsPush::start(export, source)?;
    if let Some(metrics) = &export.metrics {
        tracing::info!(
            endpoint = metrics.url,
            interval_ms = metrics.interval.as_millis() as u64,
            "pushing metrics over OTLP"
        );
    }
    Ok(push)
}

/// The proxy of the configuration as it is now on disk, built beside the running one (off the I/O
/// threads: components compile); `Err` inside is a configuration that is refused.
async fn rebuild(
    args: &ServeArgs,
    runtime: &Arc<Runtime>,
    handle: &ProxyHandle,
    listen: std::net::SocketAddr,
) -> anyhow::Result<anyhow::Result<(Proxy, sluicegate::config::ProxyConfig)>> {
    let (args, runtime, current) = (args.clone(), runtime.clone(), handle.current());
    Ok(tokio::task::spawn_blocking(move || {
        let config = args.load_config()?;
        if args.listen.is_none() && config.listen.is_some_and(|l| l != listen) {
            tracing::warn!("`listen` changed in the config file: that takes a restart; still listening on {listen}");
        }
        let proxy = current.successor(&config, &runtime, listen)?;
        Ok((proxy, config))
    })
    .await?)
}

/// Modification stamps of files, to notice changes by polling (`serve --watch`).
///
/// Polling once a second, not inotify (the `notify` crate), on purpose: the files are few (the
/// config, its components, certificates), and the ways they are replaced in deployments defeat
/// watches on the files themselves: editors and `cp` that write a new file and rename it over the
/// old, Kubernetes ConfigMaps and Secrets swapped by a symlink flip of a parent directory, bind
/// mounts from the host. `metadata` follows symlinks each time, so a poll sees all of these; a
/// watch would need to watch every directory on the way and re-arm after each swap. The cost is
/// a few `stat` calls a second and a reload up to a second late.
struct FileStamps(Vec<(PathBuf, Option<(std::time::SystemTime, u64)>)>);

impl FileStamps {
    fn new(files: Vec<PathBuf>) -> Self {
        FileStamps(files.into_iter().map(|f| (f.clone(), Self::stamp(&f))).collect())
    }

    fn stamp(file: &std::path::Path) -> Option<(std::time::SystemTime, u64)> {
        let meta = std::fs::metadata(file).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    }

    /// True if any file changed since the last call (or since `new`).
    fn changed(&mut self) -> bool {
        let mut changed = false;
        for (file, stamp) in &mut self.0 {
            let now = Self::stamp(file);
            changed |= now != *stamp;
            *stamp = now;
        }
        changed
    }
}

async fn demo_upstream(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
    println!("the demo upstream is serving /llm and /mcp at http://{}", listener.local_addr()?);
    tokio::select! {
        () = cli::demo::serve_upstream(listener, Duration::from_millis(40)) => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

async fn demo(listen: SocketAddr, once: bool) -> anyhow::Result<()> {
    let upstream_listener = TcpListener::bind("127.0.0.1:0").await?;
    let upstream = format!("http://{}", upstream_listener.local_addr()?);
    tokio::spawn(cli::demo::serve_upstream(upstream_listener, Duration::from_millis(40)));
    let listener = match TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            eprintln!("{listen} is in use; using another port (choose one with --listen)");
            TcpListener::bind((listen.ip(), 0)).await?
        }
        Err(e) => return Err(e).with_context(|| format!("listening on {listen}")),
    };
    let proxy_addr = listener.local_addr()?;
    let config = ProxyConfig::from_toml(&format!(
        r#"
        upstream = "{upstream}"
        [[route]]
        prefix = "/"
        [[route.interceptor]]
        spec = "example:drop"
        config = {{ types = "ping" }}
        [[route.interceptor]]
        spec = "example:redact"
        [[route.interceptor]]
        spec = "example:summary"
        "#
    ))?;
    let runtime = Runtime::new(Limits::from(&config.limits))?;
    let proxy = Arc::new(Proxy::new(&config, &runtime, proxy_addr)?);
    tokio::spawn(sluicegate::proxy::serve(listener, proxy));

    println!("sluicegate demo: an upstream at {upstream}, the proxy at http://{proxy_addr}");
    println!("chain: example:drop (types=ping) -> example:redact -> example:summary\n");
    for path in ["/llm", "/mcp"] {
        println!("before:  curl -N {upstream}{path}");
        println!("after:   curl -N http://{proxy_addr}{path}");
    }
    println!();
    let before = cli::demo::fetch(&format!("{upstream}/llm")).await?;
    let after = cli::demo::fetch(&format!("http://{proxy_addr}/llm")).await?;
    println!("---- /llm from the upstream ----\n{before}---- /llm through sluicegate ----\n{after}");
    if once {
        return Ok(());
    }
    println!("serving; press Ctrl-C to stop");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
