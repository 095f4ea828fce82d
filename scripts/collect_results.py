#!/usr/bin/env python
"""Summarise reproduction runs as a markdown table next to the published figures.

    python scripts/collect_results.py runs/repro [--json]

For each row folder written by scripts/reproduce.py: test error (mean +- std over the retrain
seeds, last epoch as in DARTS), parameters, search cost in GPU-days (wall time of the search, from
derive.json) and the paper's figure (REFERENCE Sec. 6).
"""
import argparse
import json
import statistics
import sys
from pathlib import Path

PAPER = {
    "enas_micro": "2.89 (ENAS micro + cutout), 4.6 M, 0.45 days",
    "enas_darts_protocol": "2.91 (ENAS in the DARTS protocol), 4.2 M, 4 days",
    "darts_1st": "3.00 +- 0.14, 3.3 M, 1.5 days",
    "darts_2nd": "2.76 +- 0.09, 3.3 M, 4 days",
    "random_ws": "2.85 +- 0.08 (Li & Talwalkar, DARTS space), 4.3 M, 9.7 days",
    "random_ws_micro": "none published (ENAS micro space)",
    "enas_macro": "4.23 (ENAS macro), 21.3 M, 0.32 days",
    "enas_macro_wide": "3.87 (ENAS macro, more channels), 38.0 M, 0.32 days",
}


def summarise(row_dir: Path) -> dict:
    results = [json.loads(p.read_text()) for p in sorted(row_dir.glob("train-*/result.json"))]
    derive = [json.loads(p.read_text()) for p in sorted(row_dir.glob("search-*/derive.json"))]
    errors = [100.0 * (1.0 - r["test_acc"]) for r in results]
    return {
        "row": row_dir.name,
        "runs": len(results),
        "test_error_mean": statistics.mean(errors) if errors else None,
        "test_error_std": statistics.stdev(errors) if len(errors) > 1 else None,
        "params_m": results[0]["params"] / 1e6 if results else None,
        "search_gpu_days": sum(d.get("search_hours", 0.0) for d in derive) / 24.0 if derive else None,
        "paper": PAPER.get(row_dir.name, ""),
    }


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.root.is_dir():
        print(f"error: {args.root} is not a folder", file=sys.stderr)
        return 2
    rows = [summarise(d) for d in sorted(args.root.iterdir()) if d.is_dir()]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print("| row | runs | test error % | params (M) | search (GPU days) | paper |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        err = fmt(r["test_error_mean"], ".2f") + ("" if r["test_error_std"] is None
                                                  else " +- " + fmt(r["test_error_std"], ".2f"))
        print(f"| {r['row']} | {r['runs']} | {err} | {fmt(r['params_m'], '.2f')} | "
              f"{fmt(r['search_gpu_days'], '.3f')} | {r['paper']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
