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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_streams_and_faults() {
    let upstream = start_upstream(|_| async {
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
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    tokio::spawn(sluicegate::proxy::admin::serve_admin(admin, sluicegate::proxy::ProxyHandle::new(state.clone())));

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
}
