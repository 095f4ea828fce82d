#!/usr/bin/env python
"""Does the quick search beat random cells? Retrain the derived cell and random cells, several seeds.

    python scripts/quick_compare.py --out runs/quick-compare            # ~3 min on 2 CPU cores
    python scripts/quick_compare.py --out runs/quick-compare --random-cells 3 --seeds 0 1 2

Runs ``enas search --preset quick`` once (ENAS controller, digits), draws ``--random-cells``
uniform cells from the same space (same node count and ops, loose-end concat), retrains each
cell with ``enas train --preset quick`` for every seed and prints one JSON object: per cell the
test accuracies and their mean, and the derived cell's mean next to the mean of the random cells.
Every run folder is kept under ``--out``; a rerun reuses finished runs.
"""
import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from enas.config.search import build_search_config  # noqa: E402
from shared_model.spaces import make_space  # noqa: E402


def enas(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "enas", *args], check=True, stdout=subprocess.DEVNULL)


def test_acc(run_dir: Path) -> float:
    return float(json.loads((run_dir / "result.json").read_text())["test_acc"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/quick-compare"))
    parser.add_argument("--search-seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="retrain seeds")
    parser.add_argument("--random-cells", type=int, default=3)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    search_dir = args.out / "search"
    if not (search_dir / "genotype.json").is_file():
        enas("search", "--preset", "quick", "--seed", str(args.search_seed), "--device", "cpu",
             "--out", str(search_dir), "--force")
    cfg = build_search_config("enas", "quick", None, {})
    space = make_space(cfg.model.space, cfg.model.num_nodes, cfg.model.ops)
    cells = {"derived": search_dir / "genotype.json"}
    generator = torch.Generator().manual_seed(1000 + args.search_seed)
    for k in range(args.random_cells):
        path = args.out / f"random{k}.json"
        path.write_text(space.decode(space.random_actions(generator)).to_json(indent=1))
        cells[f"random{k}"] = path

    report = {"search": str(search_dir), "seeds": args.seeds, "cells": {}}
    for name, genotype in cells.items():
        accs = []
        for seed in args.seeds:
            run_dir = args.out / f"train-{name}-seed{seed}"
            if not (run_dir / "result.json").is_file():
                enas("train", str(genotype), "--preset", "quick", "--seed", str(seed), "--device", "cpu",
                     "--out", str(run_dir), "--force")
            accs.append(test_acc(run_dir))
        report["cells"][name] = {"test_acc": accs, "mean": statistics.mean(accs)}
    randoms = [v["mean"] for k, v in report["cells"].items() if k != "derived"]
    report["derived_mean"] = report["cells"]["derived"]["mean"]
    report["random_mean"] = statistics.mean(randoms) if randoms else None
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
