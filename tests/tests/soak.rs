//! A bounded soak on loopback: waves of concurrent event streams through guests, with upstream
//! connections dropped at random points and clients vanishing at random. At the end: every stream
//! that was read to its end saw each event exactly once, in order; no stream task or guest stream
//! state is left; and memory is back near where it was after the first wave.

use bytes::Bytes;
use sluicegate::sse::Event;
use sluicegate_tests::net::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const EVENTS: u64 = 60;
const WAVES: usize = 4;
const STREAMS_PER_WAVE: usize = 24;

/// A small deterministic generator, so a failure can be replayed.
fn next_random(state: &AtomicU64) -> u64 {
    let mut x = state.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x
}

fn rss_kib() -> u64 {
    sluicegate::proxy::admin::resident_bytes(std::process::id()).expect("/proc is readable") / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_with_random_drops_and_disconnects() {
    let random = Arc::new(AtomicU64::new(0x5EED));
    let upstream_random = random.clone();
    // Every response resumes after Last-Event-ID and breaks after a random number of events.
    let upstream = start_upstream(move |request: http::Request<hyper::body::Incoming>| {
        let random = upstream_random.clone();
        async move {
            let after: u64 =
                request.headers().get("last-event-id").and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
            let breaks_after = 3 + next_random(&random) % 20;
            let (tx, response) = streamed("text/event-stream");
            tokio::spawn(async move {
                for n in after + 1..=EVENTS {
                    let event = format!("id: {n}\ndata: event {n} for ops@example.com\n\n");
                    if tx.send(Ok(Bytes::from(event))).await.is_err() {
                        return;
                    }
                    if n - after >= breaks_after && n < EVENTS {
                        let _ = tx.send(Err(std::io::Error::other("dropped"))).await;
                        return;
                    }
                }
            });
            response
        }
    })
    .await;
    let extra = "[reconnect]\nmax_attempts = 20\ninitial_delay_ms = 1\nmax_delay_ms = 10";
    let (proxy, state) = start_proxy(&config_with_chain(upstream, &["example:redact", "example:summary"], extra)).await;

    let started = Instant::now();
    let mut baseline = 0;
    let (mut completed, mut vanished) = (0, 0);
    for wave in 0..WAVES {
        let mut clients = Vec::new();
        for _ in 0..STREAMS_PER_WAVE {
            // One client in four goes away after a random number of events.
            let leave_after = next_random(&random).is_multiple_of(4).then(|| 1 + next_random(&random) % EVENTS);
            clients.push(tokio::spawn(async move {
                let mut reader = EventReader::new(get(&format!("http://{proxy}/s"), &[]).await);
                let mut events: Vec<Event> = Vec::new();
                while let Some(event) = reader.next().await {
                    events.push(event);
                    if leave_after.is_some_and(|n| events.len() as u64 >= n) {
                        return None; // drops the connection
                    }
                }
                Some(events)
            }));
        }
        for client in clients {
            match client.await.unwrap() {
                None => vanished += 1,
                Some(events) => {
                    completed += 1;
                    let ids: Vec<u64> = events
                        .iter()
                        .filter_map(|e| e.id.as_ref())
                        .map(|id| std::str::from_utf8(id).unwrap().parse().unwrap())
                        .collect();
                    assert_eq!(ids, (1..=EVENTS).collect::<Vec<_>>(), "lost or duplicated events");
                    assert!(events.iter().filter_map(|e| e.data.as_ref()).all(|d| !d.windows(1).any(|w| w == b"@")));
                    let last = events.last().unwrap();
                    assert_eq!(last.event_type.as_deref(), Some(&b"summary"[..]));
                    assert!(last.data.as_ref().unwrap().starts_with(format!("{{\"events\":{EVENTS},").as_bytes()));
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while state.active_streams() != 0 || state.live_guest_streams() != 0 {
            assert!(Instant::now() < deadline, "wave {wave}: streams left behind");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if wave == 0 {
            baseline = rss_kib();
        }
    }
    assert!(completed > 0 && vanished > 0, "both kinds of client ran ({completed} completed, {vanished} vanished)");
    let grown = rss_kib().saturating_sub(baseline);
    assert!(grown < 32 * 1024, "memory grew by {grown} KiB over {} waves", WAVES - 1);
    assert!(started.elapsed() < Duration::from_secs(120));
}
