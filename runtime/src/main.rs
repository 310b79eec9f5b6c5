//! The `sluicegate` command.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sluicegate::chain::Chain;
use sluicegate::host::{Limits, Runtime};
use sluicegate::pipeline::{self, BatchLimits};
use sluicegate::spec::Spec;
use sluicegate::{Config, StreamContext};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "sluicegate", version, about = "Stream Server-Sent Events through sandboxed WebAssembly interceptors")]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    /// Lists the example guests and native interceptors built into this binary.
    List,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICEGATE_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { interceptors, settings, max_batch_events } => {
            let runtime = Runtime::new(Limits::default())?;
            let mut configs = vec![Vec::new(); interceptors.len()];
            for setting in &settings {
                let (position, entry) = setting.split_once('.').context("--set takes N.KEY=VALUE")?;
                let (key, value) = entry.split_once('=').context("--set takes N.KEY=VALUE")?;
                let n: usize = position
                    .parse()
                    .with_context(|| format!("--set {setting}: `{position}` is not a chain position"))?;
                let slot = configs
                    .get_mut(n)
                    .with_context(|| format!("--set {setting}: the chain has {} interceptors", interceptors.len()))?;
                slot.push((key.to_string(), value.to_string()));
            }
            let links = interceptors
                .iter()
                .zip(configs)
                .map(|(spec, config)| spec.load(&runtime, Config::new(config)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let context = StreamContext {
                stream_id: "stdin".into(),
                method: "GET".into(),
                path: "/".into(),
                status: 200,
                ..Default::default()
            };
            let mut stream = Chain::new(links).open(&context)?;
            let limits = BatchLimits { max_events: max_batch_events.max(1), ..BatchLimits::default() };
            let stats =
                pipeline::run(std::io::stdin().lock(), std::io::stdout().lock(), &mut stream, limits, 64 * 1024)?;
            if stats.discarded_tail > 0 {
                tracing::warn!(bytes = stats.discarded_tail, "discarded an unterminated event at the end of the input");
            }
            tracing::debug!(?stats, "done");
            Ok(())
        }
        Command::List => {
            println!("examples (use as example:NAME):");
            for name in sluicegate::examples::names() {
                println!("  {name}");
            }
            println!("native interceptors (use as native:NAME):");
            for name in sluicegate::native::NAMES {
                println!("  {name}");
            }
            Ok(())
        }
    }
}
