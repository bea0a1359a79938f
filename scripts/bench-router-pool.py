#!/usr/bin/env python3
"""Pools the raw rows of several `scripts/bench-router.sh` runs (their BENCH_OUT files).

For each pair (router/nginx, router/haproxy, and router/before, before/nginx when a run
had "before") and connection count, takes the ratio of the same round for req/s, p99 and
CPU per request, over every round of every file given, and prints their median, a
bootstrap 95 % interval of that median (2,000 resamples, fixed seed, so the same files
give the same figures) and the number of rounds in which the first of the pair was
ahead (more req/s; p99 and CPU no higher).

Pool only runs whose routers placed connections alike at the counts compared: the
`workers` column of the rows says how each router run split its connections.

Usage: scripts/bench-router-pool.py RUN.tsv [RUN.tsv ...]
"""

import random
import statistics
import sys

PAIRS = [("router", "nginx"), ("router", "haproxy"), ("before", "nginx"), ("router", "before")]
# Name, index in a row's figures (req/s, p99, CPU per request), whether more is better.
FIGURES = [("req/s", 0, True), ("p99", 1, False), ("CPU per request", 2, False)]


def load(paths):
    rows = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            header = f.readline().rstrip("\n").split("\t")
            if header[:6] != ["round", "proxy", "conns", "req_s", "p99_ms", "cpu_us_per_req"]:
                sys.exit(f"{path}: not a bench-router.sh result (header {header})")
            for line in f:
                cols = line.rstrip("\n").split("\t")
                rows[(path, cols[0], cols[1], int(cols[2]))] = [float(c) for c in cols[3:6]]
    return rows


def main(paths):
    if not paths:
        sys.exit(__doc__.strip().splitlines()[-1])
    rows = load(paths)
    conns = sorted({k[3] for k in rows})
    rng = random.Random(1)
    print("| connections | pair | figure | median | 95 % interval | rounds ahead |")
    print("|---|---|---|---|---|---|")
    for a, b in PAIRS:
        for c in conns:
            for name, k, more_is_better in FIGURES:
                ratios = [
                    v[k] / peer[k]
                    for (path, r, proxy, cc), v in rows.items()
                    if proxy == a and cc == c
                    for peer in [rows.get((path, r, b, c))]
                    if peer and peer[k] > 0
                ]
                if not ratios:
                    continue
                medians = sorted(
                    statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(2000)
                )
                ahead = sum(1 for x in ratios if (x > 1 if more_is_better else x <= 1))
                print(
                    f"| {c} | {a}/{b} | {name} | {statistics.median(ratios):.2f}× "
                    f"| [{medians[49]:.2f}, {medians[1949]:.2f}] | {ahead}/{len(ratios)} |"
                )


if __name__ == "__main__":
    main(sys.argv[1:])
