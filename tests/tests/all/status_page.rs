//! The admin status page, rendered by a real headless browser (Debian's Chromium): it lists the
//! loaded interceptors and shows their counters as streams pass.
//!
//! Needs `chromium` on the PATH. Where it is missing and the tests run as root on Debian (a fresh
//! machine, CI), the test installs Debian's package itself, as the other tests install their
//! Python and npm tools; otherwise it fails and says what to install, unless
//! SLUICEGATE_SKIP_BROWSER=1 skips it on purpose.

use sluicegate::proxy::ProxyHandle;
use sluicegate_tests::net::*;
use std::net::SocketAddr;
use std::process::Command;
use tokio::net::TcpListener;

/// Makes sure `chromium` can be started, installing Debian's package if need be and possible.
fn ensure_chromium() {
    let works = || Command::new("chromium").arg("--version").output().is_ok_and(|o| o.status.success());
    if !sluicegate_tests::debian::ensure("chromium", works) {
        panic!(
            "this test needs Chromium: install it (Debian: apt-get install chromium), or set SLUICEGATE_SKIP_BROWSER=1"
        );
    }
}

/// The page's DOM after its scripts ran, as Chromium sees it.
fn rendered(url: &str) -> String {
    let profile = tempdir("chromium-profile");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // Let the page's fetch of /status.json finish before the DOM is dumped.
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("could not start chromium ({e}): install it (Debian: apt-get install chromium)"));
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The cells of the interceptor row whose `data-link` is `link`.
fn interceptor_row(dom: &str, link: usize) -> Vec<String> {
    let start = dom.find(&format!("<tr data-link=\"{link}\">")).unwrap_or_else(|| panic!("no row {link} in:\n{dom}"));
    let row = &dom[start..start + dom[start..].find("</tr>").unwrap()];
    row.split("<td")
        .skip(1)
        .map(|cell| cell[cell.find('>').unwrap() + 1..cell.find("</td>").unwrap()].to_string())
        .collect()
}

async fn one_stream(proxy: SocketAddr) {
    let events = EventReader::new(get(&format!("http://{proxy}/"), &[]).await).rest().await;
    assert_eq!(events.len(), 2, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_interceptors_and_live_counters_in_a_browser() {
    if std::env::var_os("SLUICEGATE_SKIP_BROWSER").is_some() {
        eprintln!("SKIPPED: the status page browser test (SLUICEGATE_SKIP_BROWSER is set)");
        return;
    }
    let upstream = start_upstream(|_| async {
        full(200, "text/event-stream", "event: ping\ndata: {}\n\ndata: mail <ada@example.com>\n\n: keep-alive\n\n")
    })
    .await;
    let (proxy, state) = start_proxy(&config_with_chain(upstream, &["example:drop", "example:redact"], "")).await;
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    tokio::spawn(sluicegate::proxy::admin::serve_admin(admin, ProxyHandle::new(state)));
    let page = format!("http://{admin_addr}/status");
    tokio::task::spawn_blocking(ensure_chromium).await.unwrap();

    one_stream(proxy).await;
    let first = tokio::task::spawn_blocking({
        let page = page.clone();
        move || rendered(&page)
    })
    .await
    .unwrap();
    // link, interceptor, world, circuit, batches, in, out, dropped, modified, injected, faults
    let drop = interceptor_row(&first, 0);
    assert_eq!(drop[1..4], ["example:drop", "sluicegate:interceptor/batch-interceptor", "closed"], "{drop:?}");
    assert_eq!(drop[5..10], ["3", "2", "1", "0", "0"], "drop: 3 in, 2 out, 1 dropped: {drop:?}");
    let redact = interceptor_row(&first, 1);
    assert_eq!(redact[1], "example:redact");
    assert_eq!(redact[5..10], ["2", "2", "0", "1", "0"], "redact: 1 modified: {redact:?}");
    assert!(
        first.contains(&format!("<td>/</td><td>http://{upstream}</td><td class=\"n\">0</td><td class=\"n\">1</td>")),
        "the route, its upstream, and 1 stream served:\n{first}"
    );

    // The counters follow the traffic.
    one_stream(proxy).await;
    one_stream(proxy).await;
    let later = tokio::task::spawn_blocking(move || rendered(&page)).await.unwrap();
    assert_eq!(interceptor_row(&later, 0)[5..8], ["9", "6", "3"], "{later}");
    assert_eq!(interceptor_row(&later, 1)[8], "3");
}
