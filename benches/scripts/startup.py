#!/usr/bin/env python3
"""Start-up time of `sluicegate serve`, from launch to "sluicegate is serving", with and without
the precompiled component cache (--cache-dir), for components in each language.

    python3 benches/scripts/startup.py [RUNS]

Uses target/release/sluicegate and the guests the tests build (see languages.py). Each figure is
the median of RUNS (default 5) launches; "cold" uses an empty cache directory each time, "warm"
one filled by an earlier launch.
"""

import shutil
import statistics
import subprocess
import sys
import tempfile
import time

BIN = "target/release/sluicegate"
RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
COMPONENTS = [
    ("Rust (example:redact, 0.1 MB)", "target/guests/wasm32-wasip2/guest/redact.wasm"),
    ("Python redact (18 MB)", "target/tmp/python-guests/redact.wasm"),
    ("JavaScript redact, ComponentizeJS (12 MB)", "target/tmp/js-guests/redact.spidermonkey.wasm"),
    ("JavaScript redact, componentize-qjs (1.7 MB)", "target/tmp/js-guests/redact.quickjs.wasm"),
]


def launch(component, cache):
    args = [BIN, "serve", "--listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:9", "-i", component]
    if cache:
        args += ["--cache-dir", cache]
    started = time.monotonic()
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env={"SLUICEGATE_LOG": "info"})
    for line in proc.stderr:
        if "sluicegate is serving" in line:
            elapsed = time.monotonic() - started
            break
    else:
        raise SystemExit(f"{component}: serve did not start")
    proc.terminate()
    proc.wait()
    return elapsed


print("| component | no cache | cold cache (compile and store) | warm cache |")
print("|---|---:|---:|---:|")
for name, component in COMPONENTS:
    none = [launch(component, None) for _ in range(RUNS)]
    cold = []
    for _ in range(RUNS):
        d = tempfile.mkdtemp()
        cold.append(launch(component, d))
        shutil.rmtree(d)
    d = tempfile.mkdtemp()
    launch(component, d)
    warm = [launch(component, d) for _ in range(RUNS)]
    shutil.rmtree(d)
    fmt = lambda xs: f"{statistics.median(xs) * 1000:,.0f} ms"
    print(f"| {name} | {fmt(none)} | {fmt(cold)} | {fmt(warm)} |")
    sys.stdout.flush()
