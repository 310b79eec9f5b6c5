//! The admin listener: Prometheus metrics that follow what the proxy does, and health checks.

use bytes::Bytes;
use http_body_util::BodyExt;
use sluicegate_tests::net::*;
use tokio::net::TcpListener;

async fn fetch(url: &str) -> (u16, String) {
    let response = get(url, &[]).await;
    let status = response.status().as_u16();
    (status, String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap())
}

fn value(metrics: &str, line_start: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no `{line_start}` in:\n{metrics}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The admin listener of the proxy `state`, on a free port; its address.
async fn start_admin(state: &std::sync::Arc<sluicegate::proxy::Proxy>) -> std::net::SocketAddr {
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = admin.local_addr().unwrap();
    tokio::spawn(sluicegate::proxy::admin::serve_admin(admin, sluicegate::proxy::ProxyHandle::new(state.clone())));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_streams_and_faults() {
    let upstream = start_upstream(|request| async move {
        if request.uri().path() == "/plain" {
            return full(200, "application/json", "{\"ok\":true}");
        }
        let (tx, response) = streamed("text/event-stream");
        tokio::spawn(async move {
            let _ = tx.send(Ok(Bytes::from_static(b"data: one\n\n"))).await;
        });
        response
    })
    .await;
    let hostile = sluicegate_tests::TEST_GUESTS_PATHS.iter().find(|(n, _)| *n == "hostile").unwrap().1;
    let config = format!(
        "upstream = \"http://{upstream}\"\n[[route]]\nprefix = \"/\"\n[[route.interceptor]]\nspec = \"example:redact\"\n[[route]]\nprefix = \"/bad\"\n[[route.interceptor]]\nspec = \"{hostile}\"\non_fault = \"fail-open\"\nconfig = {{ mode = \"short-count\" }}\n"
    );
    let (proxy, state) = start_proxy(&config).await;
    let admin_addr = start_admin(&state).await;

    assert_eq!(fetch(&format!("http://{admin_addr}/healthz")).await, (200, "ok\n".into()));
    assert_eq!(fetch(&format!("http://{admin_addr}/readyz")).await.0, 200);
    assert_eq!(fetch(&format!("http://{admin_addr}/nope")).await.0, 404);

    let (_, before) = fetch(&format!("http://{admin_addr}/metrics")).await;
    assert!(before.contains("# TYPE sluicegate_interceptor_batches_total counter"));
    let redact = "sluicegate_interceptor_batches_total{interceptor=\"example:redact\"";
    assert_eq!(value(&before, redact), 0);

    for _ in 0..3 {
        EventReader::new(get(&format!("http://{proxy}/s"), &[]).await).rest().await;
    }
    EventReader::new(get(&format!("http://{proxy}/bad/s"), &[]).await).rest().await;

    let (_, after) = fetch(&format!("http://{admin_addr}/metrics")).await;
    assert_eq!(value(&after, redact), 3);
    assert_eq!(value(&after, "sluicegate_interceptor_invalid_verdicts_total{interceptor=\"/"), 1);
    assert_eq!(value(&after, "sluicegate_interceptor_failed_open_total{interceptor=\"/"), 1);
    assert!(value(&after, "process_resident_memory_bytes") > 1 << 20);
    assert!(after.contains("sluicegate_active_streams "));
    let link0 = "{interceptor=\"example:redact\",link=\"0\"";
    assert_eq!(value(&after, &format!("sluicegate_interceptor_events_in_total{link0}")), 3);
    assert_eq!(value(&after, &format!("sluicegate_interceptor_events_out_total{link0}")), 3);
    assert_eq!(value(&after, &format!("sluicegate_interceptor_batch_events_bucket{link0},le=\"1\"}}")), 3);
    assert_eq!(value(&after, &format!("sluicegate_interceptor_call_seconds_count{link0}")), 3);
    assert_eq!(value(&after, &format!("sluicegate_interceptor_call_seconds_bucket{link0},le=\"+Inf\"}}")), 3);
    assert_eq!(value(&after, &format!("sluicegate_interceptor_circuit_open{link0}")), 0);
    assert_eq!(value(&after, "sluicegate_route_streams_total{route=\"/\"}"), 3);
    assert_eq!(value(&after, "sluicegate_route_streams_total{route=\"/bad\"}"), 1);
    assert_eq!(value(&after, "sluicegate_route_active_streams{route=\"/\"}"), 0);
    assert_eq!(value(&after, "sluicegate_route_bytes_out_total{route=\"/\"}"), 3 * "data: one\n\n".len() as u64);
    // A JSON response goes through the chain as one event (unchanged here), and its bytes count
    // on its route; it is not an event stream.
    assert_eq!(fetch(&format!("http://{proxy}/plain")).await, (200, "{\"ok\":true}".into()));
    let (_, plain) = fetch(&format!("http://{admin_addr}/metrics")).await;
    let event_bytes = 3 * "data: one\n\n".len() as u64;
    assert_eq!(value(&plain, "sluicegate_route_bytes_out_total{route=\"/\"}"), event_bytes + 11);
    assert_eq!(value(&plain, "sluicegate_route_streams_total{route=\"/\"}"), 3, "not an event stream");
    let (status, json) = fetch(&format!("http://{admin_addr}/status.json")).await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["interceptors"][0]["name"], "example:redact");
    assert_eq!(json["interceptors"][0]["events_in"], 3 + 1, "three events, and the JSON body");
    assert_eq!(json["routes"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routes_latency_histograms_see_the_wait_for_the_first_event_and_every_write() {
    let next = std::sync::Arc::new(tokio::sync::Notify::new());
    let upstream = start_upstream({
        let next = next.clone();
        move |_| {
            let next = next.clone();
            async move {
                let (tx, response) = streamed("text/event-stream");
                tokio::spawn(async move {
                    // A slow first token: the upstream thinks for 60 ms (a delay to measure, not
                    // a wait for anything).
                    tokio::time::sleep(std::time::Duration::from_millis(60)).await;
                    for n in 1..=3 {
                        let _ = tx.send(Ok(Bytes::from(format!("data: token {n}\n\n")))).await;
                        next.notified().await;
                    }
                });
                response
            }
        }
    })
    .await;
    let config = format!(
        "upstream = \"http://{upstream}\"\n[[route]]\nprefix = \"/\"\n[[route.interceptor]]\nspec = \"example:passthrough\"\n"
    );
    let (proxy, state) = start_proxy(&config).await;
    let admin_addr = start_admin(&state).await;

    let mut reader = EventReader::new(get(&format!("http://{proxy}/s"), &[]).await);
    for n in 1..=3 {
        let event = reader.next().await.expect("each token");
        assert_eq!(event.data.as_deref(), Some(format!("token {n}").as_bytes()));
        next.notify_one();
    }
    assert!(reader.next().await.is_none());

    let (_, metrics) = fetch(&format!("http://{admin_addr}/metrics")).await;
    let first = "sluicegate_route_time_to_first_event_seconds";
    assert_eq!(value(&metrics, &format!("{first}_count{{route=\"/\"}}")), 1);
    assert_eq!(
        value(&metrics, &format!("{first}_bucket{{route=\"/\",le=\"0.05\"}}")),
        0,
        "the 60 ms the first token took"
    );
    assert_eq!(value(&metrics, &format!("{first}_bucket{{route=\"/\",le=\"+Inf\"}}")), 1);
    assert_eq!(value(&metrics, "sluicegate_route_time_between_events_seconds_count{route=\"/\"}"), 2);
    assert_eq!(value(&metrics, "sluicegate_route_chain_delay_seconds_count{route=\"/\"}"), 3);
}

/// One chunk of an OpenAI Chat stream carrying `content`.
fn chat_chunk(content: &str) -> Bytes {
    let chunk = serde_json::json!({
        "id": "c1", "object": "chat.completion.chunk", "model": "m",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]
    });
    Bytes::from(format!("data: {chunk}\n\n"))
}

#[tokio::test]
async fn the_time_a_guard_held_text_back_is_measured_from_its_arrival_to_its_release() {
    let seen = std::sync::Arc::new(tokio::sync::Notify::new());
    let upstream = start_upstream({
        let seen = seen.clone();
        move |_| {
            let seen = seen.clone();
            async move {
                let (tx, response) = streamed("text/event-stream");
                tokio::spawn(async move {
                    // `ann@exa` could be the start of an address: the guard holds it.
                    let _ = tx.send(Ok(chat_chunk("Mail ann@exa"))).await;
                    seen.notified().await;
                    // The rest of the address comes 60 ms later (a delay to measure).
                    tokio::time::sleep(std::time::Duration::from_millis(60)).await;
                    let _ = tx.send(Ok(chat_chunk("mple.org today"))).await;
                    let _ = tx.send(Ok(Bytes::from("data: [DONE]\n\n"))).await;
                });
                response
            }
        }
    })
    .await;
    let config = format!(
        "upstream = \"http://{upstream}\"\n[[route]]\nprefix = \"/\"\n[[route.interceptor]]\nspec = \"native:patterns\"\nconfig = {{ detect = \"email\" }}\n"
    );
    let (proxy, state) = start_proxy(&config).await;
    let admin_addr = start_admin(&state).await;

    let mut reader = EventReader::new(get(&format!("http://{proxy}/v1/chat/completions"), &[]).await);
    let mut text = String::new();
    while let Some(event) = reader.next().await {
        let data = String::from_utf8(event.data.unwrap_or_default().to_vec()).unwrap();
        if let Ok(chunk) = serde_json::from_str::<serde_json::Value>(&data) {
            text.push_str(chunk["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
        }
        if text == "Mail " {
            seen.notify_one(); // only what could not be an address went out
        }
    }
    assert_eq!(text, "Mail [email] today");

    let (_, metrics) = fetch(&format!("http://{admin_addr}/metrics")).await;
    let held = "sluicegate_route_held_text_seconds";
    // Two releases: the address, held 60 ms, and `today` (a word could start an address) at the
    // end of the stream.
    let (count, quick) = (
        value(&metrics, &format!("{held}_count{{route=\"/\"}}")),
        value(&metrics, &format!("{held}_bucket{{route=\"/\",le=\"0.05\"}}")),
    );
    assert_eq!(count, 2, "two releases of held text");
    assert!(quick < count, "the address was held for the 60 ms: {quick} of {count} under 50 ms");
}
