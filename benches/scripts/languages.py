#!/usr/bin/env python3
"""What each guest language costs: component size, compile time, instantiation (first stream)
and ns/event at batch sizes 1 and 64, measured with `sluicegate check` and `sluicegate bench`.

    python3 benches/scripts/languages.py [RUNS] [EVENTS] > languages.md

With EVENTS (a sample of `sluicegate bench --events`, e.g. `openai-chat`) the guards over text
(`redact`) are measured on whole streams of that format's real chunks instead of synthetic events.

Uses target/release/sluicegate, the Rust examples built into it, and the Python and JavaScript
examples as the tests build them (target/tmp/python-guests, target/tmp/js-guests: run
`cargo test -p sluicegate-tests --test all languages::` first). Each figure is the median of RUNS
runs (default 3); every run measures the guest beside its Rust twin, side by side.
"""

import json
import re
import statistics
import subprocess
import sys

BIN = "target/release/sluicegate"
RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
EVENTS = sys.argv[2] if len(sys.argv) > 2 else None
SUBJECTS = [
    ("Rust", "target/guests/wasm32-wasip2/guest/{name}.wasm"),
    ("Python (componentize-py)", "target/tmp/python-guests/{name}.wasm"),
    ("JavaScript (ComponentizeJS)", "target/tmp/js-guests/{name}.spidermonkey.wasm"),
    ("JavaScript (componentize-qjs)", "target/tmp/js-guests/{name}.quickjs.wasm"),
]


def check(path):
    out = subprocess.run([BIN, "check", path], capture_output=True, text=True, check=True).stdout
    size = float(re.search(r": ([\d.]+) MB", out).group(1))
    compiled = float(re.search(r"compiled.* in ([\d.]+) s", out).group(1))
    opened = float(re.search(r"opened a stream in ([\d.]+) ms", out).group(1))
    return size, compiled, opened


def bench(path, name):
    out = subprocess.run(
        [BIN, "bench", "-i", path, "--against", f"native:{name}", "--batch-sizes", "1,64", "--json"]
        + (["--events", EVENTS] if EVENTS else []),
        capture_output=True, text=True, check=True,
    ).stdout
    cells = json.loads(out)["results"]
    return {(c["interceptor"] == path, c["batch_size"]): c["ns_per_event"] for c in cells}


print("| interceptor | language (toolchain) | size | compile | first stream | ns/event, batch 1 | ns/event, batch 64 | native twin, batch 64 |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for name in ["redact"] if EVENTS else ["redact", "drop"]:
    for language, pattern in SUBJECTS:
        path = pattern.format(name=name)
        checks = [check(path) for _ in range(RUNS)]
        benches = [bench(path, name) for _ in range(RUNS)]
        med = lambda xs: statistics.median(xs)
        size = checks[0][0]
        compiled = med([c[1] for c in checks])
        opened = med([c[2] for c in checks])
        b1 = med([b[(True, 1)] for b in benches])
        b64 = med([b[(True, 64)] for b in benches])
        n64 = med([b[(False, 64)] for b in benches])
        print(f"| {name} | {language} | {size:.1f} MB | {compiled:.2f} s | {opened:.1f} ms | {b1:,.0f} | {b64:,.0f} | {n64:,.1f} |")
        sys.stdout.flush()
