//! The precompiled component cache: a second runtime (a restart) loads what the first compiled,
//! with the same behaviour; a damaged entry is compiled again and replaced.

use sluicegate::chain::Chain;
use sluicegate::examples;
use sluicegate::host::{Limits, Runtime};
use sluicegate::interceptor::Interceptor;
use sluicegate_tests::*;
use std::path::Path;
use std::sync::Arc;

fn entries(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    found.sort();
    found
}

fn redacted_with(runtime: &Runtime) -> Vec<sluicegate::sse::Event> {
    let wasm = examples::component("redact").unwrap();
    let interceptor: Arc<dyn Interceptor> = Arc::new(runtime.load("redact", wasm, config_of(&[])).unwrap());
    run_chain(&Chain::new(vec![interceptor]), &batches_of(&parse_all(&sample_stream()), 16))
}

#[test]
fn a_restart_loads_compiled_components_from_the_cache() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("component-cache");
    let _ = std::fs::remove_dir_all(&dir);
    let expected = redacted_with(runtime());

    let first = Runtime::new(Limits::default()).unwrap().with_disk_cache(&dir).unwrap();
    assert_eq!(redacted_with(&first), expected);
    let stored = entries(&dir);
    assert_eq!(stored.len(), 1, "one entry for one component: {stored:?}");
    assert!(stored[0].extension().is_some_and(|e| e == "cwasm"));
    let written = std::fs::metadata(&stored[0]).unwrap().modified().unwrap();

    let second = Runtime::new(Limits::default()).unwrap().with_disk_cache(&dir).unwrap();
    assert_eq!(redacted_with(&second), expected, "the cached code behaves the same");
    assert_eq!(entries(&dir), stored, "nothing new was written");
    assert_eq!(std::fs::metadata(&stored[0]).unwrap().modified().unwrap(), written, "the entry was only read");

    std::fs::write(&stored[0], b"not machine code").unwrap();
    let third = Runtime::new(Limits::default()).unwrap().with_disk_cache(&dir).unwrap();
    assert_eq!(redacted_with(&third), expected, "a damaged entry is compiled again");
    assert!(std::fs::metadata(&stored[0]).unwrap().len() > 1000, "and replaced");
    assert_eq!(entries(&dir), stored, "no temporary file is left behind");
}
