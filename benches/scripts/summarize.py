#!/usr/bin/env python3
"""Summarizes criterion output from several runs of the same bench into ns/event medians.

Usage: summarize.py RUN1.txt RUN2.txt ... (each the `cargo bench` output of one run)
Prints `name<TAB>ns per batch<TAB>events<TAB>ns per event`, the median over runs of criterion's
median estimate.
"""
import re
import statistics
import sys

UNITS = {"ps": 1e-3, "ns": 1.0, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}


def parse(path):
    """Criterion's median estimate per benchmark, in ns. A benchmark's name starts a line; its
    `time:` is on the same line or an indented one below."""
    results, name = {}, None
    for line in open(path, encoding="utf-8"):
        line = line.rstrip()
        if line and not line.startswith(" "):
            name = line.split()[0]
        m = re.search(r"time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", line)
        if m and name:
            results.setdefault(name, float(m.group(1)) * UNITS[m.group(2)])
    return results


def events_in(name):
    last = name.rsplit("/", 1)[-1]
    return int(last) if last.isdigit() else 64


runs = [parse(p) for p in sys.argv[1:]]
for name in runs[0]:
    values = [r[name] for r in runs if name in r]
    med = statistics.median(values)
    n = events_in(name)
    print(f"{name}\t{med:.1f}\t{n}\t{med / n:.2f}")
