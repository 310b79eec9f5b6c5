//! Token budgets across streams: `example:token-budget` and its native twin on the host store,
//! in the engine (every format, cut mid-stream; charges exact under concurrency), through the
//! proxy with the providers' real SDKs (a stream cut cleanly, then 429), and components built
//! for the 0.1.0 and 0.1.1 WIT still loading on the 0.1.2 host. Two replicas on one Redis:
//! `tests/tests/redis.rs`.

use crate::llm_sdks::{ANSWER, python, sdk_with};
use serde_json::Value;
use sluicegate::chain::Chain;
use sluicegate::spec::Spec;
use sluicegate::sse::Event;
use sluicegate::store::{Backend, SharedStore};
use sluicegate_guest::Store;
use sluicegate_tests::llm::{FORMATS, Format, stream, text_of, tokens};
use sluicegate_tests::net::*;
use sluicegate_tests::{batches_of, config_of, parse_all, run_chain, run_chain_in, runtime};
use std::sync::Arc;

fn budget_link(spec: &str, tokens: i64, store: &Arc<SharedStore>) -> Arc<dyn sluicegate::interceptor::Interceptor> {
    let config = config_of(&[("tokens", &tokens.to_string())]).with_store(Store::new(Arc::new(store.scoped("budget"))));
    spec.parse::<Spec>().unwrap().load(runtime(), config).unwrap()
}

/// The key's total in the store, as the interceptor keeps it (no header: `anonymous`).
fn charged(store: &Arc<SharedStore>) -> i64 {
    store.scoped("budget").get("anonymous").unwrap().map_or(0, |e| e.value.parse().unwrap())
}

fn data_json(event: &Event) -> Option<Value> {
    serde_json::from_slice(event.data.as_deref()?).ok()
}

/// True if `out` ends the way `format` ends an answer cut for length.
fn ends_for_length(format: Format, out: &[Event]) -> bool {
    let json: Vec<Value> = out.iter().filter_map(data_json).collect();
    match format {
        Format::Chat => {
            out.last().and_then(|e| e.data.as_deref()) == Some(&b"[DONE]"[..])
                && json.iter().any(|j| j["choices"][0]["finish_reason"] == "length")
        }
        Format::Anthropic => {
            json.iter().any(|j| j["type"] == "message_delta" && j["delta"]["stop_reason"] == "max_tokens")
                && json.last().is_some_and(|j| j["type"] == "message_stop")
        }
        Format::Responses => json.last().is_some_and(|j| {
            j["type"] == "response.incomplete" && j["response"]["incomplete_details"]["reason"] == "max_output_tokens"
        }),
    }
}

#[test]
fn a_budget_cuts_each_format_mid_stream_the_same_way_in_guest_and_native() {
    let deltas = tokens(ANSWER);
    let estimate: i64 = token_budget::estimate_of(&deltas);
    let budget = estimate / 2;
    for format in FORMATS {
        let events = parse_all(stream(format, &deltas, false).as_bytes());
        let mut outputs = Vec::new();
        for spec in ["example:token-budget", "native:token-budget"] {
            let store = SharedStore::memory();
            let out = run_chain(&Chain::new(vec![budget_link(spec, budget, &store)]), &batches_of(&events, 1));
            let text = text_of(format, &out);
            assert!(ANSWER.starts_with(&text) && text.len() < ANSWER.len() / 2 + 8, "{format:?} {spec}: {text:?}");
            assert!(!text.is_empty(), "{format:?} {spec}: the text within the budget goes out");
            assert!(ends_for_length(format, &out), "{format:?} {spec}: {out:?}");
            let charged = charged(&store);
            assert!((budget..budget + 2).contains(&charged), "{format:?} {spec}: charged {charged} of {budget}");
            outputs.push(out);
        }
        assert_eq!(outputs[0], outputs[1], "{format:?}: the guest and its native twin agree");
    }
}

#[test]
fn a_stream_within_its_budget_is_untouched_and_the_providers_count_settles_the_charge() {
    let deltas = tokens(ANSWER);
    for format in FORMATS {
        let events = parse_all(stream(format, &deltas, false).as_bytes());
        let store = SharedStore::memory();
        let out =
            run_chain(&Chain::new(vec![budget_link("example:token-budget", 10_000, &store)]), &batches_of(&events, 3));
        assert_eq!(out, events, "{format:?}: nothing changed");
        let estimate: i64 = token_budget::estimate_of(&deltas);
        // Anthropic's stream reports its output tokens (the fixture: one per delta); the others
        // are charged the estimate.
        let expected = if format == Format::Anthropic { deltas.len() as i64 } else { estimate };
        assert_eq!(charged(&store), expected, "{format:?}");
    }
}

#[test]
fn a_whole_answer_is_charged_the_usage_it_reports() {
    // A request without `stream: true` gets one JSON body; it cannot be cut, but it is charged
    // (so the next request of a spent key is refused).
    let body = r#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hi there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":17,"total_tokens":26}}"#;
    for spec in ["example:token-budget", "native:token-budget"] {
        let store = SharedStore::memory();
        let out = run_chain(&Chain::new(vec![budget_link(spec, 1000, &store)]), &[vec![Event::message(body)]]);
        assert_eq!(out, vec![Event::message(body)], "{spec}: the body is unchanged");
        assert_eq!(charged(&store), 17, "{spec}");
    }
}

#[test]
fn charges_are_exact_when_many_streams_of_one_key_run_at_once() {
    let deltas = tokens(ANSWER);
    let per_stream: i64 = token_budget::estimate_of(&deltas);
    let events = parse_all(stream(Format::Chat, &deltas, false).as_bytes());
    for spec in ["example:token-budget", "native:token-budget"] {
        let store = SharedStore::memory();
        let chain = Arc::new(Chain::new(vec![budget_link(spec, 1 << 40, &store)]));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (chain, events) = (chain.clone(), events.clone());
                std::thread::spawn(move || {
                    for _ in 0..5 {
                        run_chain(&chain, &batches_of(&events, 1 + t % 4));
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(charged(&store), 8 * 5 * per_stream, "{spec}: every charge counted once");
        let calls: u64 = store.calls(sluicegate::store::Op::Increment).map(|(_, n)| n).sum();
        assert!(calls <= 8 * 5 * deltas.len() as u64, "{spec}: one increment per batch at most ({calls})");
    }
}

#[test]
fn the_tenant_is_the_first_key_header_present() {
    let deltas = tokens(ANSWER);
    let per_stream: i64 = token_budget::estimate_of(&deltas);
    let events = parse_all(stream(Format::Chat, &deltas, false).as_bytes());
    let openai = ("authorization", "sha256:0a");
    let anthropic = ("x-api-key", "sha256:0b");
    // Which key each request is charged to: the first of the configured headers it carries.
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[anthropic], anthropic.1),
        (&[anthropic, openai], openai.1),
        (&[openai], openai.1),
        (&[("x-other", "sha256:0c")], "anonymous"),
    ];
    for spec in ["example:token-budget", "native:token-budget"] {
        for (headers, expected) in cases {
            let store = SharedStore::memory();
            let config = config_of(&[("tokens", "100000"), ("key_header", " Authorization ,x-API-key")])
                .with_store(Store::new(Arc::new(store.scoped("budget"))));
            let link = spec.parse::<Spec>().unwrap().load(runtime(), config).unwrap();
            let request_headers = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
            let context = sluicegate::StreamContext { request_headers, ..sluicegate_tests::context() };
            run_chain_in(&Chain::new(vec![link]), &context, &batches_of(&events, 4));
            let key = if expected == "anonymous" { expected.to_string() } else { token_budget::key_of(Some(expected)) };
            let total = store.scoped("budget").get(&key).unwrap().map(|e| e.value);
            assert_eq!(total, Some(per_stream.to_string()), "{spec}, {headers:?}: charged to {expected}");
        }
        // A `key_header` naming no header is refused: at load, or as a fault of the first stream.
        let loaded =
            spec.parse::<Spec>().unwrap().load(runtime(), config_of(&[("tokens", "1"), ("key_header", " , ")]));
        let refused = loaded.map_or(true, |link| {
            let mut batch = parse_all(b"data: hi\n\n").into_iter().collect();
            let opened = Chain::new(vec![link]).open(&sluicegate_tests::context());
            opened.and_then(|mut stream| stream.process(&mut batch).map(|_| ())).is_err()
        });
        assert!(refused, "{spec}: a `key_header` naming no header is refused");
    }
}

#[test]
fn a_component_built_for_the_0_1_0_contract_still_loads_and_runs() {
    let upper = sluicegate_tests::load_test_guest("v0-1-0", &[("prefix", "> ")]);
    let events = parse_all(b"id: 1\ndata: hello\n\n: note\n\nevent: x\ndata: world\n\n");
    let out = run_chain(&Chain::new(vec![upper]), &[events]);
    let data: Vec<_> = out.iter().filter_map(|e| e.data.as_deref()).map(String::from_utf8_lossy).collect();
    assert_eq!(data, ["> HELLO", " note", "> WORLD"], "events rewritten, the comment kept");
    assert!(out[1].comment);
    assert_eq!(out[0].id.as_deref(), Some(&b"1"[..]), "the id is kept");
    assert_eq!(out[2].event_type.as_deref(), Some(&b"x"[..]));
}

/// 0.1.2 added the text world: a batch-world component built for 0.1.1 still loads, and its store
/// import still reaches the host's store.
#[test]
fn a_component_built_for_the_0_1_1_contract_still_loads_and_uses_the_store() {
    let store = SharedStore::memory();
    let config = config_of(&[]).with_store(Store::new(Arc::new(store.scoped("counted"))));
    let counted: Arc<dyn sluicegate::interceptor::Interceptor> =
        Arc::new(runtime().load("v0-1-1", sluicegate_tests::test_guest("v0-1-1"), config).unwrap());
    assert_eq!(counted.world(), sluicegate::interceptor::World::Batch);
    let events = parse_all(b"id: 1\ndata: hello\n\n: note\n\ndata: world\n\n");
    let out = run_chain(&Chain::new(vec![counted]), &[events[..2].to_vec(), events[2..].to_vec()]);
    let data: Vec<_> = out.iter().filter_map(|e| e.data.as_deref()).map(String::from_utf8_lossy).collect();
    assert_eq!(data, ["1: hello", " note", "2: world"], "each batch counted in the host's store");
    assert_eq!(store.scoped("counted").get("batches").unwrap().map(|e| e.value), Some("2".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_sdks_see_a_budget_cut_a_stream_cleanly_then_get_429_with_retry_after() {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let upstream = crate::llm_sdks::start_llm_upstream().await;
    let estimate: i64 = token_budget::estimate_of(&tokens(ANSWER));
    // One and a half answers: the first stream of a key is whole, the second is cut.
    let budget = estimate * 3 / 2;
    let chain = format!("spec = \"example:token-budget\"\nconfig = {{ tokens = {budget}, window_seconds = 600 }}\n");
    let anthropic_chain = format!(
        "spec = \"native:token-budget\"\nconfig = {{ tokens = {budget}, window_seconds = 600, key_header = \"Authorization\" }}\n"
    );
    let config = format!(
        "upstream = \"http://{upstream}\"\n\
         [[route]]\nprefix = \"/openai\"\nstrip_prefix = true\n\
         [[route.request_interceptor]]\n{chain}[[route.interceptor]]\n{chain}\
         [[route]]\nprefix = \"/anthropic\"\nstrip_prefix = true\n\
         [[route.request_interceptor]]\n{anthropic_chain}[[route.interceptor]]\n{anthropic_chain}"
    );
    let (proxy, state) = start_proxy(&config).await;
    let cut = |api: &str| match api {
        "chat" => "length",
        "responses" => "max_output_tokens",
        _ => "max_tokens",
    };
    for (api, prefix) in [("chat", "/openai"), ("responses", "/openai"), ("anthropic", "/anthropic")] {
        let key = format!("key-of-{api}");
        let env = [("SLUICEGATE_API_KEY", key.as_str())];
        let call = |mode| sdk_with(&python, sdk_base(proxy, prefix, api), api, mode, &env);
        let whole = call("stream").await;
        assert_eq!(whole["deltas"], ANSWER, "{api}: the first answer is within the budget: {whole}");
        let second = call("stream").await;
        let text = second["deltas"].as_str().unwrap_or_default().to_string();
        assert!(!text.is_empty() && ANSWER.starts_with(&text) && text.len() < ANSWER.len(), "{api}: cut: {second}");
        assert_eq!(second["ended"], cut(api), "{api}: the SDK reports why it ended: {second}");
        if api == "anthropic" {
            assert_eq!(second["final"], text, "{api}: the final message agrees with the deltas");
        }
        let third = call("stream").await;
        assert_eq!(third["status"], 429, "{api}: a spent key is refused: {third}");
        let retry: u64 = third["retry_after"].as_str().unwrap().parse().unwrap();
        assert!((1..=600).contains(&retry), "{api}: Retry-After is the window's remaining time: {retry}");
        // Another key of the same route still has its whole budget.
        let other_key = format!("another-key-of-{api}");
        let other = [("SLUICEGATE_API_KEY", other_key.as_str())];
        let fresh = sdk_with(&python, sdk_base(proxy, prefix, api), api, "stream", &other).await;
        assert_eq!(fresh["deltas"], ANSWER, "{api}: budgets are per key: {fresh}");
    }
    let ended: u64 =
        state.links().iter().map(|l| l.stats().streams_ended.load(std::sync::atomic::Ordering::Relaxed)).sum();
    assert_eq!(ended, 6, "three streams cut and three requests refused, each counted once");
    let scopes = state.store().incremented();
    assert!(scopes.iter().any(|(scope, n)| scope == "example:token-budget" && *n > 0), "{scopes:?}");
}

fn sdk_base(proxy: std::net::SocketAddr, prefix: &str, api: &str) -> String {
    if api == "anthropic" { format!("http://{proxy}{prefix}") } else { format!("http://{proxy}{prefix}/v1") }
}

/// A store that cannot be reached.
struct Down;

impl Backend for Down {
    fn get(&self, _: &str) -> Result<Option<sluicegate_guest::store::Entry>, sluicegate_guest::StoreError> {
        Err(sluicegate_guest::StoreError::Unavailable("down".into()))
    }
    fn increment(&self, _: &str, _: i64, _: u32) -> Result<i64, sluicegate_guest::StoreError> {
        Err(sluicegate_guest::StoreError::Unavailable("down".into()))
    }
    fn compare_and_set(&self, _: &str, _: Option<&str>, _: &str, _: u32) -> Result<bool, sluicegate_guest::StoreError> {
        Err(sluicegate_guest::StoreError::Unavailable("down".into()))
    }
}

#[test]
fn an_unreachable_store_under_fail_open_lets_the_stream_through_unmetered() {
    let deltas = tokens(ANSWER);
    let store = SharedStore::over(Arc::new(Down), "down");
    for spec in ["example:token-budget", "native:token-budget"] {
        for format in FORMATS {
            let events = parse_all(stream(format, &deltas, false).as_bytes());
            let config = config_of(&[("tokens", "1000")]).with_store(Store::new(Arc::new(store.scoped("budget"))));
            let link = spec.parse::<Spec>().unwrap().load(runtime(), config).unwrap();
            let link =
                sluicegate::chain::Link::new(link, sluicegate::config::FaultPolicy::FailOpen, Default::default());
            let chain = Chain::from_links(vec![link]);
            let request = parse_all(b"data: {\"model\":\"m\",\"stream\":true}\n\n");
            let context = sluicegate::StreamContext { status: 0, ..sluicegate_tests::context() };
            assert_eq!(run_chain_in(&chain, &context, std::slice::from_ref(&request)), request, "{spec}: admitted");
            let out = run_chain(&chain, &batches_of(&events, 1));
            assert_eq!(text_of(format, &out), ANSWER, "{spec}, {format:?}");
        }
    }
}

/// 0.1.3 added the host's `count`: a text guard built for 0.1.2 still loads and judges text.
#[test]
fn a_text_guard_built_for_the_0_1_2_contract_still_loads() {
    let upper: Arc<dyn sluicegate::interceptor::Interceptor> =
        Arc::new(runtime().load("v0-1-2", sluicegate_tests::test_guest("v0-1-2"), config_of(&[])).unwrap());
    assert_eq!(upper.world(), sluicegate::interceptor::World::Text);
    let events = parse_all(stream(Format::Chat, &tokens("write to bob, please"), false).as_bytes());
    let out = run_chain(&Chain::new(vec![upper]), &batches_of(&events, 3));
    assert_eq!(text_of(Format::Chat, &out), "WRITE TO BOB, PLEASE");
}
