//! `example:patterns` and `native:patterns` (issue 25) through `serve`, read with the providers'
//! real Python SDKs: an answer, its reasoning and a tool call's arguments carry a value of every
//! built-in detector and of an operator's pattern, split token by token (one event per write);
//! nothing of them reaches the application, everything else does, and the counts say what was
//! found without saying what it was. Bad configuration stops the start with the key named.

use crate::llm_sdks::{base_url, python, sdk_in, start_llm_upstream};
use serde_json::{Value, json};
use sluicegate::config::ProxyConfig;
use sluicegate_tests::net::start_proxy;

/// An answer with a value for every detector (the upstream streams it to routes under `/pii/`).
pub(crate) const ANSWER: &str = "Reach Ann at ann.lee@example.com or +44 20 7946 0958; card 4111 1111 1111 1111, \
IBAN GB82 WEST 1234 5698 7654 32, SSN 123-45-6789, hosts 10.0.0.12 and fe80::1ff:fe23:4567:890a, keys \
sk-proj-abcdefghijklmnopqrstuvwx1234 and AKIAABCDEFGHIJKLMNOP, token \
eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U, \
-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEA\n-----END PRIVATE KEY----- \
and ticket TCK-204811. Thanks!";

/// What the application must see instead.
const MASKED: &str = "Reach Ann at [email] or [phone]; card [card], IBAN [iban], SSN [ssn], hosts [ipv4] and \
[ipv6], keys [api-key] and [api-key], token [jwt], [private-key] and ticket [ticket]. Thanks!";

/// The values, none of which may reach the application in any part longer than a few characters.
const VALUES: [&str; 12] = [
    "ann.lee@",
    "7946 0958",
    "1111 1111",
    "WEST 1234",
    "45-6789",
    "10.0.0.12",
    "fe23:4567",
    "abcdefghijkl",
    "AKIAABCD",
    "eyJzdWIi",
    "MIIBVQIB",
    "204811",
];

pub(crate) const REASONING: &str = "The user gave ann.lee@example.com and card 4111 1111 1111 1111, so I call pay";
pub(crate) const ARGUMENTS: &str = r#"{"to":"ann.lee@example.com","phone":"+44 20 7946 0958","card":"4111 1111 1111 1111","key":"sk-proj-abcdefghijklmnopqrstuvwx1234"}"#;

/// Routes under `base` (which starts with `/pii/`, so the upstream answers with the values):
/// none, the guest, its native twin, and a guest that stops at a card. Each test has its own
/// `base`, so that the enforcement records (one log for the whole test binary) tell them apart.
fn routes(upstream: std::net::SocketAddr, base: &str) -> String {
    let operator = r#"config = { "pattern.ticket" = "TCK-[0-9]{6}" }"#;
    format!(
        "upstream = \"http://{upstream}\"\n\
         [[route]]\nprefix = \"{base}/plain\"\n\
         [[route]]\nprefix = \"{base}/guest\"\n[[route.interceptor]]\nspec = \"example:patterns\"\n{operator}\n\
         [[route]]\nprefix = \"{base}/native\"\n[[route.interceptor]]\nspec = \"native:patterns\"\n{operator}\n\
         [[route]]\nprefix = \"{base}/stop\"\n[[route.interceptor]]\nspec = \"example:patterns\"\n\
         config = {{ detect = \"card\", \"action.card\" = \"stop\" }}\n"
    )
}

fn assert_no_value(api: &str, route: &str, seen: &Value) {
    let text = seen.to_string();
    for value in VALUES {
        assert!(!text.contains(value), "{api} through {route}: `{value}` leaked: {seen}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_llm_sdks_see_every_detectors_values_masked() {
    let log = crate::wasi::captured_log();
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let upstream = start_llm_upstream().await;
    let (proxy, state) = start_proxy(&routes(upstream, "/pii/answers")).await;
    for api in ["chat", "responses", "anthropic"] {
        // The control: without the guard the application sees every value.
        let plain = sdk_in(&python, base_url(proxy, "/pii/answers/plain", api), api, "stream").await;
        assert_eq!(plain["deltas"], ANSWER, "{api}: {plain}");
        for route in ["/pii/answers/guest", "/pii/answers/native"] {
            let seen = sdk_in(&python, base_url(proxy, route, api), api, "stream").await;
            assert_eq!(seen["deltas"], MASKED, "{api} through {route}: {seen}");
            if api != "chat" {
                assert_eq!(seen["final"], MASKED, "{api} through {route}: the final object agrees");
            }
            assert_no_value(api, route, &seen);
            let whole = sdk_in(&python, base_url(proxy, route, api), api, "whole").await;
            assert_eq!(whole["final"], MASKED, "{api} through {route}, not streamed: {whole}");
        }
    }
    let metrics = sluicegate::proxy::admin::metrics(&state);
    for name in ["email", "phone", "card", "iban", "ssn", "ipv4", "ipv6", "api-key", "jwt", "private-key", "ticket"] {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with("sluicegate_interceptor_counted_total{")
                    && l.contains("interceptor=\"example:patterns\"")
                    && l.contains(&format!("name=\"{name}\""))
            })
            .unwrap_or_else(|| panic!("no count of `{name}` in\n{metrics}"));
        let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        // Three APIs, streamed and whole; the answer has two API keys.
        let per_answer = if name == "api-key" { 2 } else { 1 };
        assert!(n >= 6 * per_answer, "{line}");
    }
    assert!(!metrics.contains("ann.lee"), "no value in a label");

    // Each stream's enforcement record counts what was found, by detector, and no value.
    let text = log.text();
    let records: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.contains("enforcement record") && l.contains("route=\"/pii/answers/guest\"") && l.contains("event_stream")
        })
        .collect();
    assert!(records.len() >= 3, "a record per streamed answer:\n{text}");
    for record in records {
        let interceptors = record.split("interceptors=").nth(1).unwrap().split_whitespace().next().unwrap();
        let interceptors: Value = serde_json::from_str(interceptors).unwrap();
        // Every masked occurrence counts: Responses repeats the answer whole four times after its
        // deltas (`.done`, `content_part.done`, `output_item.done`, `response.completed`).
        let counts = &interceptors[0]["counts"];
        let k = counts["card"].as_u64().unwrap_or(0);
        assert!(k == 1 || k == 5, "{record}");
        assert_eq!((&counts["api-key"], &counts["ticket"]), (&json!(2 * k), &json!(k)), "{record}");
        for value in VALUES {
            assert!(!record.contains(value), "`{value}` in {record}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_arguments_and_reasoning_are_masked_and_a_stop_ends_each_api_its_own_way() {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let upstream = start_llm_upstream().await;
    let (proxy, _) = start_proxy(&routes(upstream, "/pii/tools")).await;
    let arguments = r#"{"to":"[email]","phone":"[phone]","card":"[card]","key":"[api-key]"}"#;
    let reasoning = "The user gave [email] and card [card], so I call pay";
    for api in ["chat", "responses", "anthropic"] {
        let plain = sdk_in(&python, base_url(proxy, "/pii/tools/plain", api), api, "tools").await;
        assert_eq!((&plain["arguments"], &plain["reasoning"]), (&json!(ARGUMENTS), &json!(REASONING)), "{api}");
        for route in ["/pii/tools/guest", "/pii/tools/native"] {
            let seen = sdk_in(&python, base_url(proxy, route, api), api, "tools").await;
            assert_eq!(seen["arguments"], arguments, "{api} through {route}: {seen}");
            assert_eq!(seen["reasoning"], reasoning, "{api} through {route}: {seen}");
            assert_no_value(api, route, &seen);
            if api == "anthropic" {
                let input: Value = serde_json::from_str(arguments).unwrap();
                assert_eq!(seen["final_input"], input, "the SDK parsed the masked arguments: {seen}");
            }
        }
        // `action.card = "stop"`: the text before the card, then the answer ends as filtered.
        let seen = sdk_in(&python, base_url(proxy, "/pii/tools/stop", api), api, "stream").await;
        let before = &ANSWER[..ANSWER.find("4111").unwrap()];
        assert_eq!(seen["deltas"], before, "{api}: {seen}");
        let reason = if api == "anthropic" { "refusal" } else { "content_filter" };
        assert_eq!(seen["ended"], reason, "{api}: {seen}");
    }
}

/// Bad configuration stops the start, naming the route, the interceptor and the key.
#[test]
fn bad_configuration_is_refused_naming_route_interceptor_and_key() {
    let cases = [
        (r#"detect = "email, phon""#, "`detect`: no built-in detector `phon`"),
        (r#""pattern.ticket" = "TCK-[0-9]+""#, "`pattern.ticket`: the pattern has no longest match"),
        (r#""pattern.ticket" = "TCK-(""#, "`pattern.ticket`:"),
        (r#""action.ticket" = "stop""#, "`action.ticket`: no detector `ticket`"),
        (r#"actoin = "stop""#, "`actoin`: not a key"),
    ];
    for spec in ["example:patterns", "native:patterns"] {
        for (config, want) in cases {
            let toml = format!(
                "upstream = \"http://127.0.0.1:9\"\n[[route]]\nprefix = \"/llm\"\n\
                 [[route.interceptor]]\nspec = \"{spec}\"\nconfig = {{ {config} }}\n"
            );
            let config = ProxyConfig::from_toml(&toml).expect("the TOML parses");
            let addr = "127.0.0.1:0".parse().unwrap();
            let err = match sluicegate::proxy::Proxy::new(&config, sluicegate_tests::runtime(), addr) {
                Ok(_) => panic!("{spec} with {config:?} started"),
                Err(e) => format!("{e:#}"),
            };
            for part in ["route `/llm`", spec, want] {
                assert!(err.contains(part), "{spec}, {config:?}: `{part}` not in: {err}");
            }
        }
    }
}
