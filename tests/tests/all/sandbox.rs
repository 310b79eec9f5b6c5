//! Hostile guests behind the real proxy: each misbehaviour is contained, the fault policy is
//! applied, a concurrent healthy stream completes unaffected, and the counters say what happened.

use bytes::Bytes;
use sluicegate::chain::LinkStats;
use sluicegate::interceptor::TrapKind;
use sluicegate::sse::Event;
use sluicegate_tests::net::*;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const EVENTS: usize = 12;

/// Every GET gets `EVENTS` events, each in its own write, then the end.
async fn upstream() -> SocketAddr {
    start_upstream(|_| async {
        let (tx, response) = streamed("text/event-stream");
        tokio::spawn(async move {
            for i in 0..EVENTS {
                let event = format!("id: {i}\ndata: event {i} from bob@example.com\n\n");
                if tx.send(Ok(Bytes::from(event))).await.is_err() {
                    return;
                }
            }
        });
        response
    })
    .await
}

fn config(upstream: SocketAddr, mode: &str, policy: &str, extra: &str) -> String {
    format!(
        r#"upstream = "http://{upstream}"
[limits]
call_deadline_ms = 50
breaker_faults = 1000
[[route]]
prefix = "/hostile"
[[route.interceptor]]
spec = "{hostile}"
on_fault = "{policy}"
config = {{ mode = "{mode}" }}
{extra}
[[route]]
prefix = "/good"
[[route.interceptor]]
spec = "example:redact"
"#,
        hostile = sluicegate_tests::TEST_GUESTS_PATHS.iter().find(|(n, _)| *n == "hostile").unwrap().1,
    )
}

fn stats_of(proxy: &sluicegate::proxy::Proxy) -> &LinkStats {
    proxy.links().iter().find(|l| l.interceptor().name().ends_with("hostile.wasm")).unwrap().stats()
}

fn datas(events: &[Event]) -> Vec<String> {
    events.iter().filter_map(|e| e.data.as_ref()).map(|d| String::from_utf8_lossy(d).into_owned()).collect()
}

/// Runs one hostile stream and one healthy stream at the same time; returns both outputs.
async fn hostile_case(mode: &str, policy: &str, extra: &str) -> (Vec<Event>, std::sync::Arc<sluicegate::proxy::Proxy>) {
    let upstream = upstream().await;
    let (proxy, state) = start_proxy(&config(upstream, mode, policy, extra)).await;
    let started = Instant::now();
    let hostile =
        tokio::spawn(async move { EventReader::new(get(&format!("http://{proxy}/hostile"), &[]).await).rest().await });
    let good =
        tokio::spawn(async move { EventReader::new(get(&format!("http://{proxy}/good"), &[]).await).rest().await });
    let (hostile, good) = (hostile.await.unwrap(), good.await.unwrap());
    assert!(started.elapsed() < Duration::from_secs(30), "{mode}: the proxy was held up");

    // The healthy stream is complete and correct whatever the hostile one did.
    let expected: Vec<String> = (0..EVENTS).map(|i| format!("event {i} from [redacted]")).collect();
    assert_eq!(datas(&good), expected, "{mode}: the healthy stream was affected");

    // The proxy is still up and serving.
    let again = EventReader::new(get(&format!("http://{proxy}/good"), &[]).await).rest().await;
    assert_eq!(datas(&again), expected);
    (hostile, state)
}

fn assert_failed_closed(mode: &str, events: &[Event]) {
    let last = events.last().unwrap_or_else(|| panic!("{mode}: nothing received"));
    assert_eq!(last.event_type.as_deref(), Some(&b"error"[..]), "{mode}: {events:?}");
    let data = String::from_utf8_lossy(last.data.as_ref().unwrap()).into_owned();
    let json: serde_json::Value = serde_json::from_str(&data).expect("the error event carries JSON");
    assert_eq!(json["error"]["type"], "interceptor_error");
    assert!(
        events[..events.len() - 1].iter().all(|e| e.event_type.is_none()),
        "{mode}: only events from before the fault precede it"
    );
}

fn assert_failed_open(mode: &str, events: &[Event]) {
    let expected: Vec<String> = (0..EVENTS).map(|i| format!("event {i} from bob@example.com")).collect();
    assert_eq!(datas(events), expected, "{mode}: fail-open passes every batch unmodified");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traps_of_every_kind_are_contained() {
    // Each is a trap: a panic, an infinite loop cut off by the deadline, a memory bomb stopped
    // by the memory limit, a stack overflow.
    // Each is told apart by its trap code (or the host's limit), not by its message.
    // The memory bomb gets a small limit, so that it reaches it well before its deadline.
    let cases = [
        ("trap", TrapKind::Unreachable, ""),
        ("loop", TrapKind::Deadline, ""),
        ("memory", TrapKind::Memory, "max_memory_bytes = 8388608"),
        ("recursion", TrapKind::StackOverflow, ""),
    ];
    for (mode, kind, extra) in cases {
        let (events, proxy) = hostile_case(mode, "fail-closed", extra).await;
        assert_failed_closed(mode, &events);
        let stats = stats_of(&proxy);
        assert!(stats.traps() >= 1, "{mode}: counted as a trap");
        let others: u64 = TrapKind::ALL.iter().filter(|k| **k != kind).map(|k| stats.traps_of(*k)).sum();
        assert!(
            stats.traps_of(kind) >= 1 && others == 0,
            "{mode}: counted as {kind} and only as {kind}: {:?}",
            TrapKind::ALL.map(|k| (k.name(), stats.traps_of(k)))
        );
        let metrics = sluicegate::proxy::admin::metrics(&proxy);
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with("sluicegate_interceptor_traps_by_kind_total{") && l.contains(&format!("kind=\"{kind}\""))
            })
            .unwrap_or_else(|| panic!("{mode}: no {kind} line in /metrics"));
        let count: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert_eq!(count, stats.traps_of(kind), "{mode}: /metrics says {line}");

        let (events, proxy) = hostile_case(mode, "fail-open", extra).await;
        assert_failed_open(mode, &events);
        let stats = stats_of(&proxy);
        assert!(stats.traps() >= 1 && stats.failed_open.load(Ordering::Relaxed) >= 1, "{mode}");
        assert_eq!(proxy.live_guest_streams(), 0, "{mode}: nothing leaked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_verdicts_are_contained() {
    for mode in ["short-count", "bad-span", "invalid-utf8", "newline-type", "nul-id", "huge-word"] {
        let (events, proxy) = hostile_case(mode, "fail-closed", "").await;
        assert_failed_closed(mode, &events);
        assert!(stats_of(&proxy).invalid_verdicts.load(Ordering::Relaxed) >= 1, "{mode}");
        let (events, _) = hostile_case(mode, "fail-open", "").await;
        assert_failed_open(mode, &events);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn giant_output_is_refused() {
    // The guest builds 8 MiB of output in time and memory; the output limit (1 MiB) refuses it.
    let extra = "call_deadline_ms = 2000\nmax_output_bytes = 1048576";
    let (events, proxy) = hostile_case("giant-output", "fail-closed", extra).await;
    assert_failed_closed("giant-output", &events);
    assert!(stats_of(&proxy).invalid_verdicts.load(Ordering::Relaxed) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_reopens_state_lost_with_a_discarded_instance() {
    // Traps every third batch of a stream: the stream goes on, with a fresh state each time.
    let (events, proxy) = hostile_case("trap-every-3", "fail-open", "").await;
    assert_failed_open("trap-every-3", &events);
    let stats = stats_of(&proxy);
    assert!(stats.traps() >= 1);
    assert!(stats.batches.load(Ordering::Relaxed) >= 2, "batches after a trap still go through the guest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_opens_after_repeated_faults() {
    let upstream = upstream().await;
    let config = config(upstream, "trap", "fail-open", "")
        .replace("breaker_faults = 1000", "breaker_faults = 3\nbreaker_backoff_ms = 600000");
    let (proxy, state) = start_proxy(&config).await;
    for _ in 0..3 {
        let events = EventReader::new(get(&format!("http://{proxy}/hostile"), &[]).await).rest().await;
        assert_failed_open("trap", &events);
    }
    let stats = stats_of(&state);
    assert_eq!(stats.circuit_opened.load(Ordering::Relaxed), 1);
    let traps = stats.traps();
    assert!(stats.bypassed.load(Ordering::Relaxed) > 0, "once open, batches skip the interceptor");
    // While open, the guest is not called at all.
    let events = EventReader::new(get(&format!("http://{proxy}/hostile"), &[]).await).rest().await;
    assert_failed_open("trap", &events);
    assert_eq!(stats.traps(), traps);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_upstream_events_are_dropped_and_the_stream_goes_on() {
    let upstream = start_upstream(|_| async {
        let (tx, response) = streamed("text/event-stream");
        tokio::spawn(async move {
            let _ = tx.send(Ok(Bytes::from_static(b"data: before\n\n"))).await;
            let big = format!("data: {}\n\n", "x".repeat(5000));
            let _ = tx.send(Ok(Bytes::from(big))).await;
            let _ = tx.send(Ok(Bytes::from(format!("data: {}", "y".repeat(10_000))))).await; // a line that does not end...
            let _ = tx.send(Ok(Bytes::from_static(b"\n\ndata: after\n\n"))).await; // ...until here
        });
        response
    })
    .await;
    let extra = "[limits]\nmax_event_bytes = 1024";
    let (proxy, _) = start_proxy(&config_with_chain(upstream, &["example:passthrough"], extra)).await;
    let events = EventReader::new(get(&format!("http://{proxy}/e"), &[]).await).rest().await;
    assert_eq!(datas(&events), vec!["before", "after"]);
}

/// One stream's fault must not cost its neighbours their state. A stream that the first link of
/// its chain fails (fail-closed) drops the rest of its chain unfinished, and freeing the second
/// link's state for it is a call into the instance that link shares with every other stream.
/// After that instance had been idle for longer than a call deadline, the call ran under the
/// deadline of the instance's last call, long passed, and was stopped at its first instruction:
/// the instance was discarded, silently, and the neighbour's next batch failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_stream_does_not_cost_its_neighbours_their_state() {
    let (upstream, mut feeds) = fed_upstream().await;
    let hostile = sluicegate_tests::TEST_GUESTS_PATHS.iter().find(|(n, _)| *n == "hostile").unwrap().1;
    let config = format!(
        r#"upstream = "http://{upstream}"
[limits]
call_deadline_ms = 10
instances_per_interceptor = 1
[[route]]
prefix = "/"
[[route.interceptor]]
spec = "{hostile}"
config = {{ mode = "trap-every-3" }}
instances = 2
[[route.interceptor]]
spec = "example:summary"
"#
    );
    let (proxy, state) = start_proxy(&config).await;
    let summary = state.links().iter().find(|l| l.interceptor().name().ends_with("summary")).unwrap();
    let data_of = |event: Option<Event>| String::from_utf8(event.unwrap().data.unwrap().to_vec()).unwrap();

    // The neighbour: one batch through both links (each on an instance of its own: hostile's
    // first, summary's only one), then it waits.
    let mut neighbour = EventReader::new(get(&format!("http://{proxy}/neighbour"), &[]).await);
    let neighbour_feed = feeds.recv().await.unwrap();
    neighbour_feed.send(Ok(Bytes::from_static(b"data: one\n\n"))).await.unwrap();
    assert_eq!(data_of(neighbour.next().await), "one");

    // The other stream: two batches pass; its third traps in `hostile` (its own instance).
    let mut failing = EventReader::new(get(&format!("http://{proxy}/failing"), &[]).await);
    let failing_feed = feeds.recv().await.unwrap();
    for data in ["a", "b"] {
        failing_feed.send(Ok(Bytes::from(format!("data: {data}\n\n")))).await.unwrap();
        assert_eq!(data_of(failing.next().await), data);
    }
    // Idle for twenty deadlines (the precondition, not a synchronisation: longer only repeats it).
    tokio::time::sleep(Duration::from_millis(200)).await;
    failing_feed.send(Ok(Bytes::from_static(b"data: c\n\n"))).await.unwrap();
    assert_failed_closed("trap-every-3", &failing.rest().await);
    while summary.interceptor().live_streams() > 1 {
        tokio::time::sleep(Duration::from_millis(1)).await; // until its chain has been dropped
    }

    // The neighbour goes on with its state: its summary counts both of its events.
    neighbour_feed.send(Ok(Bytes::from_static(b"data: two\n\n"))).await.unwrap();
    drop(neighbour_feed);
    let rest: Vec<String> = neighbour
        .rest()
        .await
        .iter()
        .filter_map(|e| e.data.as_ref())
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .collect();
    assert_eq!(rest, ["two", r#"{"events":2,"data_bytes":6}"#], "the neighbour lost its state");
    assert_eq!(summary.stats().faults(), 0, "freeing the failed stream's state is not a fault");
}
