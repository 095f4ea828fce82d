#!/usr/bin/env python
"""Table-mode search on the synthetic NAS-Bench-201 table: ENAS controller vs random vs REINFORCE.

    python scripts/bench_table.py                       # 20 seeds, table seed 0, ~2 min on 2 CPU cores
    python scripts/bench_table.py --seeds 10 --table-seed 1 --queries 100 200 500

Each method runs ``max(--queries)`` queries per seed; the figure at a smaller budget is read from
the best-so-far trajectory of the same run (exactly what a shorter run gives: nothing before
query Q depends on the budget, and every policy here takes one sample per step). Per method and
budget it prints, as one JSON object: mean +- sample std of the test accuracy of the
best-by-validation cell (``valid_acc_epoch12`` searched, ``test_acc`` reported), the mean regret
(table optimum - result), the mean rank of the chosen cell (1 = the table's best), and whether
the ENAS controller beats random search. The ENAS ``benchmark`` preset was tuned on table seed 1
with run seeds 100-109; the default report uses table seed 0 and run seeds 0-19.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from enas.benchmark.synthetic import synthetic_table  # noqa: E402
from enas.benchmark.table_config import build_table_config  # noqa: E402
from enas.benchmark.table_search import TableSearch  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20, help="runs per method (>= 10 for the README figures)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--table-seed", type=int, default=0)
    parser.add_argument("--queries", type=int, nargs="+", default=[100, 200, 500])
    parser.add_argument("--methods", nargs="+", default=["random", "reinforce", "enas"])
    parser.add_argument("--set", dest="sets", nargs="*", default=[], metavar="KEY=JSON",
                        help="table config overrides, e.g. enas.lr=0.01")
    args = parser.parse_args()
    torch.set_num_threads(1)
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.sets)}
    table = synthetic_table(args.table_seed)
    cfg = build_table_config(None, None, {"budget.queries": max(args.queries), "tensorboard": False, **overrides})
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    optimum = table.best("test_acc")[1]
    acc = table.column("test_acc")
    out = {"table": f"synthetic seed {args.table_seed}", "table_optimum": optimum,
           "seeds": f"{seeds[0]}..{seeds[-1]}",
           "reward": cfg.columns.reward, "report": cfg.columns.report, "enas_preset": cfg.enas_preset,
           "overrides": overrides, "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
           "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "methods": {}}
    for method in args.methods:
        start = time.perf_counter()
        runs = [TableSearch(table, cfg, method, seed).run() for seed in seeds]
        rows = {}
        for q in sorted(args.queries):
            reports = [r["trajectory"]["best_report"][min(q, r["queries"]) - 1] for r in runs]
            ranks = [1 + int((acc > v).sum()) for v in reports]
            rows[str(q)] = {"test_acc_mean": round(statistics.mean(reports), 3),
                            "test_acc_std": round(statistics.stdev(reports), 3) if len(reports) > 1 else 0.0,
                            "regret_mean": round(optimum - statistics.mean(reports), 3),
                            "rank_mean": round(statistics.mean(ranks), 1)}
        out["methods"][method] = {"budgets": rows, "seconds_wall": round(time.perf_counter() - start, 1),
                                  "duplicates_mean_at_max": statistics.mean(r["duplicates"] for r in runs)}
    if "enas" in out["methods"] and "random" in out["methods"]:
        e, r = out["methods"]["enas"]["budgets"], out["methods"]["random"]["budgets"]
        out["enas_beats_random"] = {q: e[q]["test_acc_mean"] > r[q]["test_acc_mean"] for q in e}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
