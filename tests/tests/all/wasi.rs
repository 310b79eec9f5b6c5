//! WASI is provided inertly: a guest reaches no environment, arguments, files or network, and
//! what it prints goes to the proxy's log, attributed to it.

use sluicegate::batch::Batch;
use sluicegate::sse::Event;
use sluicegate_tests::{context, load_test_guest};
use std::io::Write;
use std::sync::{Arc, Mutex};

/// Collects log output.
#[derive(Clone, Default)]
pub(crate) struct Captured(pub(crate) Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log of this test binary, captured (installed once).
pub(crate) fn captured_log() -> Captured {
    static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let captured = Captured::default();
            let writer = captured.clone();
            tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).init();
            captured
        })
        .clone()
}

impl Captured {
    /// What has been logged so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[test]
fn guest_output_is_rate_limited() {
    let captured = captured_log();
    let guest = load_test_guest("hostile", &[("mode", "log-flood")]);
    let mut stream = guest.open(&context()).unwrap();
    let input: Batch = [Event::message("x")].into_iter().collect();
    stream.process(&input, &mut Batch::new()).unwrap();
    // Once the budget has refilled a little, the next line reports how many were dropped.
    std::thread::sleep(std::time::Duration::from_millis(200));
    stream.process(&input, &mut Batch::new()).unwrap();
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let logged = log.lines().filter(|l| l.contains("flood line")).count();
    assert!((200..=260).contains(&logged), "{logged} of 2000 lines logged: a burst of 200, then 20 per second");
    assert!(
        log.lines().any(|l| l.contains("guest output over its rate limit was dropped") && l.contains("lines=")),
        "{log}"
    );
}

#[test]
fn guests_reach_nothing_and_print_to_the_log() {
    let captured = captured_log();
    // Environment and arguments exist in this process; the guest must not see them.
    assert!(std::env::vars().count() > 0);

    let guest = load_test_guest("hostile", &[("mode", "probe-wasi")]);
    let mut stream = guest.open(&context()).unwrap();
    let input: Batch = [Event::message("x")].into_iter().collect();
    let mut output = Batch::new();
    stream.process(&input, &mut output).unwrap();
    assert_eq!(
        output.to_events(),
        vec![Event::message("x"), Event::message("env=0 args=0 files=false net=false clock=false")]
    );

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = log.lines().find(|l| l.contains("hello from the guest on stdout")).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("interceptor=hostile") && line.contains("output=\"stdout\""), "{line}");
    assert!(log.lines().any(|l| l.contains("and on stderr") && l.contains("output=\"stderr\"")), "{log}");
}

#[test]
fn clocks_are_granted_only_when_configured() {
    let mut limits = sluicegate_tests::runtime().limits().clone();
    limits.grant_clocks = true;
    let wasm = sluicegate_tests::test_guest("hostile");
    let config = sluicegate_tests::config_of(&[("mode", "probe-wasi")]);
    let guest = sluicegate_tests::runtime().load_with_limits("hostile", wasm, config, limits).unwrap();
    use sluicegate::interceptor::Interceptor;
    let mut stream = guest.open(&context()).unwrap();
    let input: Batch = [Event::message("x")].into_iter().collect();
    let mut output = Batch::new();
    stream.process(&input, &mut output).unwrap();
    assert_eq!(output.to_events()[1], Event::message("env=0 args=0 files=false net=false clock=true"));
}

#[test]
fn a_guest_cannot_block_a_thread_by_sleeping() {
    // A host call is beyond the reach of the epoch deadline, so WASI must not wait for the guest:
    // its hour-long sleep returns at once. (Run on a thread, so that a regression fails, not hangs.)
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let guest = load_test_guest("hostile", &[("mode", "sleep")]);
        let mut stream = guest.open(&context()).unwrap();
        let input: Batch = [Event::message("x")].into_iter().collect();
        let _ = done.send(stream.process(&input, &mut Batch::new()).map(|a| a.unchanged));
    });
    let outcome =
        result.recv_timeout(std::time::Duration::from_secs(30)).expect("the guest's sleep blocked the thread");
    assert_eq!(outcome, Ok(true));
}
