#!/usr/bin/env python3
"""Draws the boundary benchmark as an SVG bar chart (log scale), with no dependencies.

Usage: summarize.py run1.txt run2.txt run3.txt > boundary.tsv
       plot_boundary.py boundary.tsv > docs/boundary.svg
"""
import math
import sys

rows = {}
for line in open(sys.argv[1], encoding="utf-8"):
    name, _, _, per_event = line.rstrip("\n").split("\t")
    if name.startswith("boundary/"):
        _, subject, size = name.split("/")
        rows[(subject, int(size))] = float(per_event)

subjects = [("native:passthrough", "#9aa5b1", "native (no sandbox)"),
            ("example:passthrough", "#2f6fde", "batch guest"),
            ("example:legacy-passthrough", "#d9534f", "per-event guest")]
sizes = sorted({size for (_, size) in rows})
width, height, left, bottom, top = 720, 360, 70, 50, 40
plot_h = height - bottom - top
lo, hi = 0.01, 1000.0
y = lambda v: top + plot_h * (1 - (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))
group_w = (width - left - 20) / len(sizes)
bar_w = group_w / (len(subjects) + 1)

out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
       f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">ns per event (log scale), ~200-byte events, by batch size</text>']
for exp in range(-2, 4):
    v = 10 ** exp
    out.append(f'<line x1="{left}" x2="{width - 20}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>')
    out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
for i, size in enumerate(sizes):
    x0 = left + i * group_w + bar_w / 2
    for j, (subject, color, _) in enumerate(subjects):
        v = rows.get((subject, size))
        if v is None:
            continue
        x = x0 + j * bar_w
        out.append(f'<rect x="{x:.1f}" y="{y(v):.1f}" width="{bar_w - 2:.1f}" height="{height - bottom - y(v):.1f}" fill="{color}"/>')
        out.append(f'<text x="{x + bar_w / 2 - 1:.1f}" y="{y(v) - 3:.1f}" text-anchor="middle" font-size="10">{v:.3g}</text>')
    out.append(f'<text x="{x0 + len(subjects) * bar_w / 2:.1f}" y="{height - bottom + 16}" text-anchor="middle">batch {size}</text>')
for j, (_, color, label) in enumerate(subjects):
    out.append(f'<rect x="{left + j * 180}" y="{height - 18}" width="12" height="12" fill="{color}"/>')
    out.append(f'<text x="{left + j * 180 + 16}" y="{height - 8}">{label}</text>')
out.append("</svg>")
print("\n".join(out))
