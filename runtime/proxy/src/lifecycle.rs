//! What outlives one configuration of the proxy: the count of live event streams, stream ids,
//! the shutdown phase, the threads; and [`ProxyHandle`], through which a reload swaps the configuration.
//!
//! Reload: a new [`Proxy`] is built (and every component compiled) beside the running one; only
//! if that succeeds does it replace the old one. New requests then use the new proxy; a live event
//! stream keeps the proxy, and so the chain, it started with, until it ends. Nothing is dropped.
//!
//! Shutdown, in two phases: *draining* (the listener closes, new requests get `503`, live event
//! streams go on) until every stream has ended or the drain time is over, then *ending* (each
//! remaining stream's chain is finished with `shutdown`, its final events are sent and its body
//! ends cleanly).

use super::Proxy;
use super::admission::Admission;
use super::isolation::SlowCalls;
use crate::config::ThreadModel;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// Where the process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Serving.
    Running,
    /// No new connections or requests; live streams go on.
    Draining,
    /// Live streams are being ended.
    Ending,
}

/// A future that resolves once the phase is [`Phase::Ending`] (or the lifecycle is gone), made to
/// be polled at every event: an event stream waits on it beside its upstream for its whole life.
/// `watch::Receiver::wait_for` registers anew at each poll under the channel's lock, which every
/// stream on every worker shares (a lock and an unlock of a line both cores write, per event);
/// this one registers once per waker and then, until the phase changes, costs an atomic load.
pub(crate) struct Ending {
    /// Registered with the channel; polled only on a phase change or a new waker.
    wait: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Tells whether the phase changed since `wait` was last polled.
    probe: watch::Receiver<Phase>,
    /// The waker `wait` was last polled with.
    waker: Option<Waker>,
    done: bool,
}

impl Ending {
    fn new(phase: watch::Receiver<Phase>) -> Ending {
        let mut wait = phase.clone();
        Ending {
            wait: Box::pin(async move {
                let _ = wait.wait_for(|p| *p == Phase::Ending).await;
            }),
            probe: phase,
            waker: None,
            done: false,
        }
    }
}

impl Future for Ending {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(());
        }
        let registered = this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
        if registered && matches!(this.probe.has_changed(), Ok(false)) {
            return Poll::Pending;
        }
        // Marked before `wait` looks at the phase: a change after this mark shows in the probe,
        // one before it is seen by `wait`.
        this.probe.mark_unchanged();
        match this.wait.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.done = true;
                Poll::Ready(())
            }
            Poll::Pending => {
                if !registered {
                    this.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

/// State shared by every configuration the process runs with.
pub struct Lifecycle {
    active_streams: AtomicUsize,
    next_stream: AtomicU64,
    phase: watch::Sender<Phase>,
    /// Notified when the last live stream ends.
    idle: Notify,
    pub(crate) reloads: AtomicU64,
    pub(crate) failed_reloads: AtomicU64,
    /// Connection and stream limits, and what they turned away.
    pub(crate) admission: Admission,
    /// The interceptors' store, kept across reloads while `[store]` stays the same (a reload
    /// must not reset a budget kept in memory).
    store: std::sync::Mutex<Option<(crate::config::StoreConfig, Arc<crate::store::SharedStore>)>>,
    /// The thread model and worker count, fixed by the first configuration (threads are not
    /// restarted by a reload).
    threads: std::sync::OnceLock<Threads>,
    /// The lanes slow chains' calls share, sized with the threads.
    slow_calls: std::sync::OnceLock<SlowCalls>,
}

/// How the process spreads its work over threads: see `workers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threads {
    /// Per-core workers or one shared pool.
    pub model: ThreadModel,
    /// Worker threads (per-core), or the shared pool's size.
    pub count: usize,
    /// `[threads] slow_calls` as configured (0: half the cores).
    pub slow_calls: usize,
}

impl Threads {
    /// Connection pools each upstream keeps: one per worker in the per-core model.
    pub fn pools(self) -> usize {
        match self.model {
            ThreadModel::PerCore => self.count,
            ThreadModel::Shared => 1,
        }
    }
}

impl Lifecycle {
    /// A lifecycle in the running phase.
    pub fn new() -> Arc<Self> {
        Arc::new(Lifecycle {
            active_streams: AtomicUsize::new(0),
            next_stream: AtomicU64::new(1),
            phase: watch::Sender::new(Phase::Running),
            idle: Notify::new(),
            reloads: AtomicU64::new(0),
            failed_reloads: AtomicU64::new(0),
            admission: Admission::default(),
            store: std::sync::Mutex::default(),
            threads: std::sync::OnceLock::new(),
            slow_calls: std::sync::OnceLock::new(),
        })
    }

    /// The threads the process runs with, once decided.
    pub fn running_threads(&self) -> Option<Threads> {
        self.threads.get().copied()
    }

    /// The threads the process runs with: decided by the first configuration asked about, kept
    /// after (a reload that changes `[threads]` takes a restart, and says so).
    pub fn threads(&self, config: &crate::config::ProxyConfig) -> Threads {
        let wanted = Threads {
            model: config.threads.model_for(&config.store),
            count: super::workers::resolve_count(config.threads.count),
            slow_calls: config.threads.slow_calls,
        };
        let threads = *self.threads.get_or_init(|| wanted);
        if threads != wanted {
            tracing::warn!(running = ?threads, configured = ?wanted, "[threads] changed: that takes a restart");
        }
        threads
    }

    /// The lanes calls into slow chains share (see `isolation`), as many as the threads decided
    /// say.
    pub(crate) fn slow_calls(&self) -> &SlowCalls {
        self.slow_calls.get_or_init(|| SlowCalls::new(self.running_threads().map_or(0, |t| t.slow_calls)))
    }

    /// How many calls into slow chains may run at once (`[threads] slow_calls`, resolved).
    pub fn slow_call_lanes(&self) -> usize {
        self.slow_calls().lanes()
    }

    /// The store `config` describes: the one in use if `config` is unchanged, else a new one.
    pub(crate) fn store(&self, config: &crate::config::StoreConfig) -> anyhow::Result<Arc<crate::store::SharedStore>> {
        use crate::store::{RedisStore, SharedStore};
        let mut current = self.store.lock().expect("the store cell");
        if let Some((_, store)) = current.as_ref().filter(|(c, _)| c == config) {
            return Ok(store.clone());
        }
        let store = match &config.url {
            None => SharedStore::memory(),
            Some(url) => {
                let url = crate::config::expand_env(url)?;
                SharedStore::over(Arc::new(RedisStore::new(&url, config.timeout_ms)?), "redis")
            }
        };
        *current = Some((config.clone(), store.clone()));
        Ok(store)
    }

    /// Connection and stream admission, with its counters.
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// Event streams live now, under any configuration.
    pub fn active_streams(&self) -> usize {
        self.active_streams.load(Ordering::SeqCst)
    }

    pub(crate) fn next_stream_id(&self) -> u64 {
        self.next_stream.fetch_add(1, Ordering::Relaxed)
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// A receiver that sees every phase change.
    pub fn watch(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Resolves once live streams are being ended; see [`Ending`].
    pub(crate) fn ending(&self) -> Ending {
        Ending::new(self.phase.subscribe())
    }

    /// Counts a stream as live until the guard is dropped.
    pub(crate) fn stream_started(self: &Arc<Self>) -> StreamGuard {
        self.active_streams.fetch_add(1, Ordering::SeqCst);
        StreamGuard(self.clone())
    }

    /// Waits until no stream is live, or `limit` has passed; true if none is live.
    async fn wait_idle(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.idle.notified();
                if self.active_streams() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }

    /// Shuts down: drains for up to `drain`, then ends the streams still live and waits up to
    /// `finish` for them to send their last events.
    pub async fn shut_down(&self, drain: Duration, finish: Duration) {
        self.phase.send_replace(Phase::Draining);
        tracing::info!(streams = self.active_streams(), drain_ms = drain.as_millis() as u64, "draining");
        if self.wait_idle(drain).await {
            return;
        }
        tracing::info!(streams = self.active_streams(), "drain time over: ending the remaining streams");
        self.phase.send_replace(Phase::Ending);
        if !self.wait_idle(finish).await {
            tracing::warn!(streams = self.active_streams(), "streams still open at exit");
        }
    }
}

/// Counts one live stream; see [`Lifecycle::stream_started`].
pub(crate) struct StreamGuard(Arc<Lifecycle>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.0.active_streams.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The proxy currently serving new requests; a reload replaces it.
pub struct ProxyHandle {
    current: RwLock<Arc<Proxy>>,
}

impl ProxyHandle {
    /// A handle serving `proxy` first.
    pub fn new(proxy: Arc<Proxy>) -> Arc<Self> {
        Arc::new(ProxyHandle { current: RwLock::new(proxy) })
    }

    /// The proxy serving new requests now.
    pub fn current(&self) -> Arc<Proxy> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// What outlives each configuration.
    pub fn lifecycle(&self) -> Arc<Lifecycle> {
        self.current().lifecycle.clone()
    }

    /// Makes `built` (a result of [`Proxy::successor`]) serve new requests; on an error the
    /// running proxy stays. Either way the outcome is logged and counted.
    pub fn reload(&self, built: anyhow::Result<Proxy>) -> anyhow::Result<()> {
        let lifecycle = self.lifecycle();
        match built {
            Ok(proxy) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(proxy);
                lifecycle.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!("reloaded: new streams use the new configuration; live streams keep theirs");
                Ok(())
            }
            Err(e) => {
                lifecycle.failed_reloads.fetch_add(1, Ordering::Relaxed);
                tracing::error!("reload failed, still running the previous configuration: {e:#}");
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct Counted(AtomicUsize);

    impl Wake for Counted {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<Counted>, Waker) {
        let counted = Arc::new(Counted(AtomicUsize::new(0)));
        (counted.clone(), Waker::from(counted))
    }

    #[test]
    fn ending_wakes_its_latest_waker_at_every_phase_change_and_resolves_at_ending() {
        let (phase, receiver) = watch::channel(Phase::Running);
        let mut ending = Ending::new(receiver);
        let (first, first_waker) = waker();
        let mut cx = Context::from_waker(&first_waker);
        assert!(Pin::new(&mut ending).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut ending).poll(&mut cx).is_pending(), "polled again, same waker");

        phase.send_replace(Phase::Draining);
        assert_eq!(first.0.load(Ordering::SeqCst), 1, "a change wakes the stream");
        assert!(Pin::new(&mut ending).poll(&mut cx).is_pending(), "draining is not ending");

        // The stream is now polled with another waker: the next change must wake that one.
        let (second, second_waker) = waker();
        let mut cx = Context::from_waker(&second_waker);
        assert!(Pin::new(&mut ending).poll(&mut cx).is_pending());
        phase.send_replace(Phase::Ending);
        assert_eq!(second.0.load(Ordering::SeqCst), 1, "the new waker is woken");
        assert!(Pin::new(&mut ending).poll(&mut cx).is_ready());
        assert!(Pin::new(&mut ending).poll(&mut cx).is_ready(), "and stays ready");
    }

    #[test]
    fn ending_resolves_at_once_when_created_late_or_when_the_lifecycle_is_gone() {
        let (phase, receiver) = watch::channel(Phase::Ending);
        let (_, waker) = waker();
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut Ending::new(receiver)).poll(&mut cx).is_ready(), "already ending");

        phase.send_replace(Phase::Running);
        let mut ending = Ending::new(phase.subscribe());
        assert!(Pin::new(&mut ending).poll(&mut cx).is_pending());
        drop(phase);
        assert!(Pin::new(&mut ending).poll(&mut cx).is_ready(), "no lifecycle left to wait for");
    }
}
