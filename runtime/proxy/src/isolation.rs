//! Keeping one tenant's slow interceptor from stalling every other stream.
//!
//! Chains run inside the client connection's task (the stream runs in its response body), on
//! tokio's worker threads, which also serve every socket.
//! A call into an interceptor cannot yield, so a guest that spends 40 ms of CPU on a batch (legal:
//! the deadline is 100 ms by default) holds its worker for 40 ms; with two such streams on two
//! workers, every other stream of every route waits (measured: another route's p99 delivery went
//! from ~1 ms to ~41 ms).
//!
//! So a chain that has been slow lately (a call of [`SLOW_CALL`](crate::chain::SLOW_CALL) or
//! more; the mark decays by an eighth per call) is called through
//! [`tokio::task::block_in_place`]: tokio hands this worker's queue and I/O duties to another
//! thread for the length of the call, and the slow stream alone waits for its guest. Fast chains,
//! the common case, are called directly and pay nothing (one atomic load per link per batch).
//! What is left: the first slow call of an interceptor (after a start or a reload, or after its
//! mark has decayed) still holds a worker once.

/// Runs `work` (a call into a chain): off the I/O threads if the chain is `slow` and the runtime
/// can hand a worker's duties over (a multi-threaded one), directly otherwise.
pub(crate) fn chain_call<R>(slow: bool, work: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    // The runtime is looked at only for a slow chain: the common case pays one branch.
    let can_hand_over = || Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    if slow && can_hand_over() { tokio::task::block_in_place(work) } else { work() }
}
