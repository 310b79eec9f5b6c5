#!/usr/bin/env python3
"""Runs a loadtest command several times and prints its table with the median of each cell.

    python3 benches/scripts/medians.py RUNS target/release/loadtest throughput --seconds 4 ...

The loadtest prints a Markdown table (a header, a rule, one row per path or chain); rows are
matched by their first cell. Numeric cells become the median over the runs; the spread (lowest
and highest) is printed below the table, since single runs on a 2-core machine vary a lot.
"""

import statistics
import subprocess
import sys


def table(output):
    rows = [line for line in output.splitlines() if line.startswith("|")]
    return rows[0], {cells(r)[0]: cells(r)[1:] for r in rows[2:]}


def cells(row):
    return [c.strip() for c in row.strip().strip("|").split("|")]


def number(cell):
    """The number in a cell such as `3.5%`, `64 us` or `131`, else None."""
    try:
        return float(cell.split()[0].rstrip("%")) if cell else None
    except ValueError:
        return None


def unit(cell):
    """What follows the number: `%`, ` us` or nothing."""
    if cell.endswith("%"):
        return "%"
    parts = cell.split()
    return " " + parts[1] if len(parts) == 2 else ""


def main():
    runs, command = int(sys.argv[1]), sys.argv[2:]
    header, results = None, {}
    for run in range(runs):
        print(f"run {run + 1}/{runs}: {' '.join(command)}", file=sys.stderr)
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        header, rows = table(out)
        for label, values in rows.items():
            results.setdefault(label, []).append(values)
    print(header)
    print("|" + "---|" * len(cells(header)))
    spread = []
    for label, samples in results.items():
        row = [label]
        for column in range(len(samples[0])):
            values = [number(s[column]) for s in samples]
            if None in values:
                row.append(samples[0][column])
                continue
            suffix = unit(samples[0][column])
            median = statistics.median(values)
            row.append(f"{median:.1f}{suffix}" if suffix == "%" or median < 100 else f"{median:.0f}{suffix}")
            spread.append(f"{label} / {cells(header)[column + 1]}: {min(values):g} .. {max(values):g}")
        print("| " + " | ".join(row) + " |")
    print()
    print("spread over the runs (lowest .. highest):")
    for line in spread:
        print("  " + line)


if __name__ == "__main__":
    main()
