//! Thread per core: the proxy's connections served by worker threads that each run a
//! single-threaded tokio runtime and accept on a listener of their own.
//!
//! Why: at the shape of LLM traffic (many streams, a token per write) the work per event is
//! small, and in one work-stealing pool most of its cost was threads waking each other: the
//! upstream's data arrives on one thread, the stream's task runs on another (measured in
//! `docs/design.md`, "Where the time goes at many slow streams": a `futex` call and about three
//! times nginx's context switches per event). Here every worker has its own `SO_REUSEPORT`
//! socket on the same address, the kernel spreads new connections over them, and a connection's
//! tasks, its streams and the upstream connections they open stay on the thread that accepted it
//! (each worker keeps its own connections to plain-HTTP upstreams: `index`). This is nginx's worker
//! model.
//!
//! What still leaves a worker: a chain marked slow is called on tokio's blocking threads (see
//! `isolation`), and the control runtime (signals, reloads, the admin listener) runs beside the
//! workers.

use super::ProxyHandle;
use crate::config::{ProxyConfig, ThreadModel};
use anyhow::Context as _;
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// This thread's worker number (0 on threads that are not workers): which of an upstream's pools
/// its requests use.
#[inline]
pub(crate) fn index() -> usize {
    INDEX.with(Cell::get)
}

/// How many workers `count` asks for: itself, or with 0 one per core this process may run on.
pub fn resolve_count(count: usize) -> usize {
    match count {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    }
}

/// The running workers: [`Workers::stop`] ends them once the lifecycle's shutdown is over.
pub struct Workers {
    threads: Vec<std::thread::JoinHandle<anyhow::Result<()>>>,
    stop: watch::Sender<bool>,
    addr: SocketAddr,
}

impl Workers {
    /// Binds `count` listeners on `listen` (the first picks the port when it is 0; the others
    /// join it) and starts a worker on each, serving whatever proxy `handle` holds.
    pub fn start(listen: SocketAddr, count: usize, handle: Arc<ProxyHandle>) -> anyhow::Result<Self> {
        let first = bind(listen).with_context(|| format!("listening on {listen}"))?;
        let addr = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..count {
            listeners.push(bind(addr).with_context(|| format!("listening on {addr} (worker)"))?);
        }
        let (stop, stopped) = watch::channel(false);
        let mut threads = Vec::with_capacity(count);
        for (i, listener) in listeners.into_iter().enumerate() {
            let (handle, mut stopped) = (handle.clone(), stopped.clone());
            // Built here, so that a runtime that cannot start fails the start, not a thread.
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let thread = std::thread::Builder::new().name(format!("sluicegate-worker-{i}")).spawn(move || {
                INDEX.with(|index| index.set(i));
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    super::serve_handle(listener, handle).await?;
                    // The listener is closed; the connections it accepted live on this runtime
                    // until the shutdown's drain and finish are over.
                    let _ = stopped.wait_for(|stop| *stop).await;
                    Ok(())
                })
            })?;
            threads.push(thread);
        }
        Ok(Workers { threads, stop, addr })
    }

    /// The address the workers accept on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many workers run.
    pub fn count(&self) -> usize {
        self.threads.len()
    }

    /// Ends the workers (their listeners must have closed: the lifecycle has left `Running`) and
    /// waits for their threads; the first error of one is returned.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        let threads = self.threads;
        tokio::task::spawn_blocking(move || {
            let mut result = Ok(());
            for thread in threads {
                let ended = thread.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a worker thread panicked")));
                result = result.and(ended);
            }
            result
        })
        .await?
    }
}

/// The proxy's listener(s) and the threads that serve them, as `[threads]` says.
pub enum Server {
    /// Per-core workers, each with its own listener and single-threaded runtime.
    PerCore(Workers),
    /// One listener, served by this (multi-threaded) runtime.
    Shared {
        /// Where it accepts.
        addr: SocketAddr,
        /// The accept loop.
        task: tokio::task::JoinHandle<anyhow::Result<()>>,
    },
}

impl Server {
    /// Listens on `listen` and starts serving what `handle` holds, on the threads `config`'s
    /// `[threads]` asks for (the lifecycle keeps that choice).
    pub async fn start(listen: SocketAddr, config: &ProxyConfig, handle: &Arc<ProxyHandle>) -> anyhow::Result<Self> {
        let threads = handle.lifecycle().threads(config);
        Ok(match threads.model {
            ThreadModel::PerCore => Server::PerCore(Workers::start(listen, threads.count, handle.clone())?),
            ThreadModel::Shared => {
                let listener =
                    tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
                let addr = listener.local_addr()?;
                Server::Shared { addr, task: tokio::spawn(super::serve_handle(listener, handle.clone())) }
            }
        })
    }

    /// The address the proxy accepts on.
    pub fn local_addr(&self) -> SocketAddr {
        match self {
            Server::PerCore(workers) => workers.local_addr(),
            Server::Shared { addr, .. } => *addr,
        }
    }

    /// The thread model, for the log.
    pub fn describe(&self) -> String {
        match self {
            Server::PerCore(workers) => format!("per-core, {} workers", workers.count()),
            Server::Shared { .. } => "shared pool".into(),
        }
    }

    /// Waits for the listeners' threads once the shutdown is over.
    pub async fn stop(self) -> anyhow::Result<()> {
        match self {
            Server::PerCore(workers) => workers.stop().await,
            Server::Shared { task, .. } => task.await?,
        }
    }
}

/// A listening socket on `addr` that other sockets of this process may share
/// (`SO_REUSEPORT`: the kernel spreads connections over them).
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_share_one_port_and_a_second_bind_of_it_by_another_socket_is_refused_without_reuse() {
        let first = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let second = bind(addr).expect("a worker's listener joins the first");
        assert_eq!(second.local_addr().unwrap(), addr);
        let plain = std::net::TcpListener::bind(addr);
        assert!(plain.is_err(), "a socket without SO_REUSEPORT cannot take the port");
    }

    #[test]
    fn zero_workers_means_one_per_core() {
        assert!(resolve_count(0) >= 1);
        assert_eq!(resolve_count(3), 3);
    }
}
