//! The store on a real Redis server: two `sluicegate serve` replicas share one token budget, the
//! streams they cut end cleanly for the providers' real SDKs, and a Redis that stops is a fault
//! of the interceptors that need it, under each one's policy, until it returns.

use crate::llm_sdks::{ANSWER, python, sdk_with, start_llm_upstream};
use serde_json::Value;
use sluicegate_tests::llm::tokens;
use sluicegate_tests::metric;
use sluicegate_tests::net::*;
use sluicegate_tests::process::{Serving, Start};
use sluicegate_tests::redis::Redis;
use std::path::Path;

fn estimate(text: &str) -> i64 {
    token_budget::estimate_of(&tokens(text))
}

fn replica(name: &str, config: &str) -> Serving {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("redis-replicas");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    Start::serve(&["--config", path.to_str().unwrap()]).start()
}

fn base(serving: &Serving, prefix: &str, api: &str) -> String {
    if api == "anthropic" {
        format!("http://{}{prefix}", serving.addr)
    } else {
        format!("http://{}{prefix}/v1", serving.addr)
    }
}

async fn call(python: &Path, at: String, api: &'static str, key: &str) -> Value {
    sdk_with(python, at, api, "stream", &[("SLUICEGATE_API_KEY", key)]).await
}

/// A budgeted route on both chains (`prefix` strips to the upstream's paths).
fn budget_route(prefix: &str, spec: &str, tokens: i64, extra: &str) -> String {
    let chain = format!("spec = \"{spec}\"\nconfig = {{ tokens = {tokens}, window_seconds = 900 }}\n{extra}");
    format!(
        "[[route]]\nprefix = \"{prefix}\"\nstrip_prefix = true\n\
         [[route.request_interceptor]]\n{chain}[[route.interceptor]]\n{chain}"
    )
}

async fn metrics(serving: &Serving) -> String {
    let response = get(&format!("http://{}/metrics", serving.admin.unwrap()), &[]).await;
    String::from_utf8(http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes().to_vec())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_budget_and_cut_running_streams_cleanly() {
    let Some(redis) = Redis::start() else { return };
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let upstream = start_llm_upstream().await;
    let answer = estimate(ANSWER);
    let config = format!(
        "upstream = \"http://{upstream}\"\n[store]\nurl = \"{}\"\n{}{}",
        redis.url(),
        // One and a half answers for the sequential keys; the concurrent key's budget is below.
        budget_route("/openai", "example:token-budget", answer * 3 / 2, ""),
        budget_route("/anthropic", "native:token-budget", answer * 3 / 2, ""),
    );
    let (a, b) = (replica("a", &config), replica("b", &config));

    // One key, three calls spread over the replicas: whole on A, cut on B (which knows of A's
    // charge only through Redis), refused on A.
    for (api, prefix, cut) in [
        ("chat", "/openai", "length"),
        ("responses", "/openai", "max_output_tokens"),
        ("anthropic", "/anthropic", "max_tokens"),
    ] {
        let key = format!("sk-{api}-secret");
        let first = call(&python, base(&a, prefix, api), api, &key).await;
        assert_eq!(first["deltas"], ANSWER, "{api} on A: {first}");
        let second = call(&python, base(&b, prefix, api), api, &key).await;
        let text = second["deltas"].as_str().unwrap_or_default();
        assert!(!text.is_empty() && ANSWER.starts_with(text) && text.len() < ANSWER.len(), "{api} on B: {second}");
        assert_eq!(second["ended"], cut, "{api} on B ends cleanly, saying why: {second}");
        if api != "chat" {
            assert_eq!(second["final"].as_str().unwrap_or(text), text, "{api}: the final object agrees: {second}");
        }
        let third = call(&python, base(&a, prefix, api), api, &key).await;
        assert_eq!(third["status"], 429, "{api}: refused on A once B spent the budget: {third}");
        assert!(third["retry_after"].as_str().unwrap().parse::<u64>().unwrap() <= 900);
    }

    // Many streams of one key at once, over both replicas: what they deliver stays within the
    // budget plus one batch per live stream (a stream learns of the others' charges with each of
    // its own; batches here are one event, at most two tokens).
    let budget = answer * 2;
    let config = format!(
        "upstream = \"http://{upstream}\"\n[store]\nurl = \"{}\"\n{}",
        redis.url(),
        budget_route("/openai", "example:token-budget", budget, "store_scope = \"crowd\"\n")
    );
    let (c, d) = (replica("c", &config), replica("d", &config));
    let streams = 6;
    let calls: Vec<_> = (0..streams)
        .map(|i| {
            let at = base(if i % 2 == 0 { &c } else { &d }, "/openai", "chat");
            let python = python.clone();
            tokio::spawn(async move { call(&python, at, "chat", "sk-crowd").await })
        })
        .collect();
    let mut delivered = 0;
    let mut ends = Vec::new();
    for call in calls {
        let seen = call.await.unwrap();
        if let Some(text) = seen["deltas"].as_str() {
            assert!(ANSWER.starts_with(text), "{seen}");
            delivered += estimate(text).max(0);
            ends.push(seen["ended"].as_str().unwrap_or("").to_string());
        } else {
            assert_eq!(seen["status"], 429, "{seen}");
            ends.push("429".into());
        }
    }
    assert!(delivered <= budget + 2 * streams as i64, "delivered {delivered} tokens on a budget of {budget}: {ends:?}");
    assert!(ends.iter().all(|e| ["stop", "length", "429"].contains(&e.as_str())), "{ends:?}");
    assert!(ends.iter().any(|e| e != "stop"), "six answers on a budget of two: some were cut or refused: {ends:?}");
    let next = call(&python, base(&d, "/openai", "chat"), "chat", "sk-crowd").await;
    assert_eq!(next["status"], 429, "{next}");

    // The keys are kept hashed: no secret reaches Redis.
    let keys = redis.command("KEYS *");
    assert!(keys.contains("sluicegate:crowd/key:"), "{keys}");
    assert!(!keys.contains("secret") && !keys.contains("sk-"), "{keys}");
    // Both replicas read the key from Redis (every stream does, first); the charges may all have
    // been made on one of them (the other's streams can find the budget spent before any text).
    let calls = |text: &str, op: &str| {
        metric(text, &format!("sluicegate_store_calls_total{{backend=\"redis\",op=\"{op}\",result=\"ok\"}}"))
    };
    let (c_metrics, d_metrics) = (metrics(&c).await, metrics(&d).await);
    for text in [&c_metrics, &d_metrics] {
        assert!(calls(text, "get") > 0, "{text}");
    }
    assert!(calls(&c_metrics, "increment") + calls(&d_metrics, "increment") > 0, "{c_metrics}\n{d_metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_stops_is_a_fault_under_each_policy_and_service_resumes_when_it_returns() {
    let Some(mut redis) = Redis::start() else { return };
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let upstream = start_llm_upstream().await;
    let config = format!(
        "upstream = \"http://{upstream}\"\n[store]\nurl = \"{}\"\n{}{}",
        redis.url(),
        budget_route("/closed", "example:token-budget", 1 << 30, ""),
        budget_route("/open", "example:token-budget", 1 << 30, "on_fault = \"fail-open\"\n"),
    );
    let proxy = replica("stops", &config);
    for prefix in ["/closed", "/open"] {
        let seen = call(&python, base(&proxy, prefix, "chat"), "chat", "sk-1").await;
        assert_eq!(seen["deltas"], ANSWER, "{prefix} with Redis up: {seen}");
    }

    redis.stop();
    let closed = call(&python, base(&proxy, "/closed", "chat"), "chat", "sk-1").await;
    assert_eq!(closed["status"], 502, "fail-closed: the request is refused while the budget cannot be read: {closed}");
    let open = call(&python, base(&proxy, "/open", "chat"), "chat", "sk-1").await;
    assert_eq!(open["deltas"], ANSWER, "fail-open: the stream passes unmetered: {open}\n{}", proxy.log());
    let text = metrics(&proxy).await;
    assert!(
        metric(&text, "sluicegate_store_calls_total{backend=\"redis\",op=\"get\",result=\"unavailable\"}") > 0,
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("sluicegate_interceptor_store_faults_total") && !l.ends_with(" 0")));
    // The fault is logged (the log is read from the proxy's stderr by another thread: wait for it).
    proxy.wait_for_line("the store is unavailable", std::time::Duration::from_secs(10));

    redis.restart();
    // The connection comes back on its own; the first calls after the restart may still find it
    // down, so try a bounded number of times.
    let mut back = Value::Null;
    for _ in 0..20 {
        back = call(&python, base(&proxy, "/closed", "chat"), "chat", "sk-1").await;
        if back["deltas"] == ANSWER {
            break;
        }
    }
    assert_eq!(back["deltas"], ANSWER, "service resumes when Redis returns: {back}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_stream_is_ended_cleanly_when_redis_stops_under_it() {
    let Some(mut redis) = Redis::start() else { return };
    // A model that streams until its client goes, a token every 20 ms (pacing, as a model's).
    let upstream = start_upstream(|_request: http::Request<hyper::body::Incoming>| async {
        let (tx, response) = streamed("text/event-stream");
        tokio::spawn(async move {
            for i in 0.. {
                let chunk = format!(
                    "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"token{i} \"}},\"finish_reason\":null}}]}}\n\n"
                );
                if tx.send(Ok(chunk.into())).await.is_err() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        });
        response
    })
    .await;
    let config = format!(
        "upstream = \"http://{upstream}\"\n[store]\nurl = \"{}\"\n\
         [[route]]\nprefix = \"/\"\n[[route.interceptor]]\nspec = \"example:token-budget\"\nconfig = {{ tokens = 1000000 }}\n",
        redis.url()
    );
    let proxy = replica("midstream", &config);
    let url = format!("http://{}/v1/chat/completions", proxy.addr);
    let mut reader = EventReader::new(get(&url, &[("authorization", "Bearer sk-live")]).await);
    for _ in 0..3 {
        assert!(reader.next().await.is_some(), "the stream runs, charged on Redis");
    }
    redis.stop();
    let rest = reader.rest().await;
    let error = rest.iter().find(|e| e.event_type.as_deref() == Some(&b"error"[..]));
    assert!(error.is_some(), "fail-closed: the stream ends with an error event: {rest:?}");
    assert!(rest.last().is_some_and(|e| e.event_type.as_deref() == Some(&b"error"[..])), "and nothing after it");
    proxy.wait_for_line("the store is unavailable", std::time::Duration::from_secs(10));
    // The proxy goes on serving: a new stream while Redis is down is refused the same way.
    let mut next = EventReader::new(get(&url, &[("authorization", "Bearer sk-live")]).await);
    let events = next.rest().await;
    assert!(events.iter().any(|e| e.event_type.as_deref() == Some(&b"error"[..])), "{events:?}");
}
