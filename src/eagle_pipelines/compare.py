"""Compare the metrics tables of two eagle_coco runs.

    eagle-compare                      # the latest run against the one before it
    eagle-compare --list               # the runs on record
    eagle-compare 2026-11-22T02.50.02.016Z 2026-11-22T03.10.11.002Z

Every run writes its table to data/08_reporting/eagle_coco/history/metrics.csv/<run>/metrics.csv (Kedro's
versioned dataset); this prints, per method, level and protocol, each metric of run A, of run B and B − A.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

KEYS = ["method", "level", "protocol"]
DEFAULT_HISTORY = Path("data/08_reporting/eagle_coco/history/metrics.csv")


def runs(history: Path) -> list[str]:
    if not history.is_dir():
        return []
    return sorted(p.name for p in history.iterdir() if (p / "metrics.csv").exists())


def compare(history: Path, a: str, b: str, metrics: list[str] | None = None) -> pd.DataFrame:
    """One row per method/level/protocol with <metric>_a, <metric>_b and <metric>_delta columns."""
    left = pd.read_csv(history / a / "metrics.csv")
    right = pd.read_csv(history / b / "metrics.csv")
    metrics = metrics or [c for c in left.columns if c not in KEYS and c in right.columns]
    merged = left[KEYS + metrics].merge(right[KEYS + metrics], on=KEYS, how="outer", suffixes=("_a", "_b"))
    for m in metrics:
        merged[f"{m}_delta"] = merged[f"{m}_b"] - merged[f"{m}_a"]
    ordered = KEYS + [f"{m}_{s}" for m in metrics for s in ("a", "b", "delta")]
    return merged[ordered].sort_values(KEYS).reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="eagle-compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help="two run ids (folder names); default: the last two")
    parser.add_argument("--history", type=Path, default=DEFAULT_HISTORY)
    parser.add_argument("--list", action="store_true", help="list the runs on record")
    parser.add_argument("--metrics", nargs="+", default=["n_samples", "insertion_auc", "deletion_auc", "ahc",
                                                         "point_game_mask"])
    args = parser.parse_args(argv)
    available = runs(args.history)
    if args.list:
        print("\n".join(available) or f"no runs under {args.history}")
        return 0
    if args.runs and len(args.runs) != 2:
        parser.error("give two run ids, or none for the last two")
    a, b = args.runs or available[-2:] if len(available) >= 2 else (None, None)
    if a is None:
        print(f"need two runs under {args.history}, found {len(available)}; run eagle_coco again after a "
              f"parameter change", file=sys.stderr)
        return 2
    for run in (a, b):
        if run not in available:
            print(f"no run '{run}' under {args.history}; `eagle-compare --list` shows them", file=sys.stderr)
            return 2
    table = compare(args.history, a, b, args.metrics)
    print(f"A = {a}\nB = {b}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
