//! What a chain adds to a JSON response: a 2 KB JSON body with an address in it, fetched through
//! the proxy on a route without a chain and on one with `example:redact` (and `native:redact`),
//! interleaved request by request, one at a time, over kept-alive connections. Prints p50 and
//! p99 per route and the difference to the route without a chain.
//!
//! The upstream, the proxy and the client each run on a tokio runtime of their own (one thread
//! each), in one process: a rough figure for the cost of reading, inspecting and re-sending a
//! body, not a deployment's latency.
//!
//!     cargo run --release -p sluicegate-benches --bin bodylatency [REQUESTS_PER_ROUTE]

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sluicegate::config::ProxyConfig;
use sluicegate::host::{Limits, Runtime};
use sluicegate::proxy::Proxy;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A 2 KB JSON body with one address, shaped like an MCP tool result.
fn body() -> Bytes {
    let filler = "lorem ipsum dolor sit amet ".repeat(72);
    let text = format!("{filler} write to ada@example.com");
    let json = format!(r#"{{"jsonrpc":"2.0","id":1,"result":{{"content":[{{"type":"text","text":"{text}"}}]}}}}"#);
    assert!((2000..2200).contains(&json.len()), "{}", json.len());
    Bytes::from(json)
}

fn single_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn start_upstream() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        single_thread_runtime().block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let body = body();
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                let body = body.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_request| {
                        let body = body.clone();
                        async move {
                            let response = http::Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(body))
                                .unwrap();
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        })
    });
    addr
}

fn start_proxy(upstream: SocketAddr) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = format!(
        "upstream = \"http://{upstream}\"\n\
         [[route]]\nprefix = \"/redact\"\n[[route.interceptor]]\nspec = \"example:redact\"\n\
         [[route]]\nprefix = \"/native\"\n[[route.interceptor]]\nspec = \"native:redact\"\n"
    );
    let config = ProxyConfig::from_toml(&config).unwrap();
    std::thread::spawn(move || {
        single_thread_runtime().block_on(async move {
            let runtime = Box::leak(Box::new(Runtime::new(Limits::default()).unwrap()));
            let proxy = Arc::new(Proxy::new(&config, runtime, addr).unwrap());
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            sluicegate::proxy::serve(listener, proxy).await.unwrap();
        })
    });
    addr
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let per_route: usize = std::env::args().nth(1).map_or(5000, |n| n.parse().expect("a number of requests"));
    let upstream = start_upstream();
    let proxy = start_proxy(upstream);
    single_thread_runtime().block_on(async move {
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let routes = ["/plain", "/redact", "/native"];
        let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(per_route); routes.len()];
        let expected = body();
        for round in 0..per_route + 200 {
            for (i, route) in routes.iter().enumerate() {
                let uri = format!("http://{proxy}{route}");
                let started = Instant::now();
                let response = loop {
                    match client.request(http::Request::get(&uri).body(Empty::new()).unwrap()).await {
                        Ok(response) => break response,
                        // The proxy is still starting (compiling the component).
                        Err(_) if round == 0 => tokio::time::sleep(Duration::from_millis(50)).await,
                        Err(e) => panic!("{e}"),
                    }
                };
                let got = response.into_body().collect().await.unwrap().to_bytes();
                let elapsed = started.elapsed();
                assert_eq!(got.len() == expected.len(), *route == "/plain", "{route}: redacted or not");
                // The first 200 rounds warm up connections, caches and the guest's instance.
                if round >= 200 {
                    times[i].push(elapsed);
                }
            }
        }
        let mut base = (Duration::ZERO, Duration::ZERO);
        println!("{} requests per route, 2 KB JSON body, interleaved", per_route);
        println!("{:<10} {:>10} {:>10} {:>14} {:>14}", "route", "p50 us", "p99 us", "added p50 us", "added p99 us");
        for (i, route) in routes.iter().enumerate() {
            times[i].sort();
            let (p50, p99) = (percentile(&times[i], 0.5), percentile(&times[i], 0.99));
            if i == 0 {
                base = (p50, p99);
            }
            let us = |d: Duration| d.as_secs_f64() * 1e6;
            println!(
                "{route:<10} {:>10.1} {:>10.1} {:>14.1} {:>14.1}",
                us(p50),
                us(p99),
                us(p50) - us(base.0),
                us(p99) - us(base.1)
            );
        }
    });
}
