"""Compare two published runs of an experiment: what changed in the parameters, and what it did to the metrics.

    eagle-compare                                  # eagle_coco: the latest run against the one before it
    eagle-compare --experiment eagle_repope
    eagle-compare --list                           # the runs on record
    eagle-compare --runs 2026-11-22T02.50 2026-11-22T03.10   # two history entries (a unique prefix is enough)
    eagle-compare --metrics insertion_auc deletion_auc

Every run that changes a table, a figure or a parameter publishes data/08_reporting/<experiment>/history/<time>/
(metrics.csv, run.json with the parameters of every stage, ...; docs/outputs.md). This prints the parameters that
differ (flattened dotted keys, old -> new) and, per method, level and protocol, each metric of the old run, of the
new one and new - old. It works from any folder inside the project (or --project PATH).
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

import pandas as pd

from eagle_pipelines.errors import UserError, show_traceback

KEYS = ["method", "level", "protocol"]
MISSING = "<absent>"


class CompareError(UserError):
    """Something the user can fix: the message says what."""


def flatten(tree, prefix: str = "") -> dict:
    """``{"a": {"b": 1, "c": [1, 2]}}`` -> ``{"a.b": 1, "a.c": [1, 2]}`` (lists are values; an empty dict is one)."""
    if not isinstance(tree, dict) or (not tree and prefix):
        return {prefix: tree}
    out = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def show(value) -> str:
    """A parameter value as one short line: strings as they are, everything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def find_project(start: Path) -> Path:
    """The Kedro project `start` is in: the nearest folder upwards whose pyproject.toml has ``[tool.kedro]``."""
    start = start.resolve()
    for folder in (start, *start.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            try:
                if "kedro" in tomllib.loads(pyproject.read_text()).get("tool", {}):
                    return folder
            except (OSError, tomllib.TOMLDecodeError):
                continue
    raise CompareError(f"no Kedro project here: no pyproject.toml with [tool.kedro] in '{start}' or above it; "
                       f"run eagle-compare inside the project or give --project PATH")


def history(report_dir: Path) -> list[str]:
    """The published runs of a report folder, oldest first (folders of history/ with a run.json)."""
    folder = report_dir / "history"
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and (p / "run.json").is_file())


def resolve(runs: list[str], wanted: str) -> str:
    """A run given by its full name or a unique prefix of it."""
    if wanted in runs:
        return wanted
    matches = [r for r in runs if r.startswith(wanted)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise CompareError(f"'{wanted}' names {len(matches)} runs ({', '.join(matches[:4])}...); give more of it")
    raise CompareError(f"no run '{wanted}'; the runs on record are listed by `eagle-compare --list`")


def _damaged(path: Path, exc: BaseException) -> CompareError:
    reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:160]}" if str(exc).strip() else \
        type(exc).__name__
    return CompareError(f"'{path}' is damaged ({reason}); delete that history entry ({path.parent}) or restore the "
                        f"file, then compare again (`eagle-compare --list` shows the runs left)")


def read_facts(path: Path) -> dict:
    """A history entry's ``run.json``: a JSON object, or a CompareError naming the file and the fix."""
    try:
        facts = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not JSON
        raise _damaged(path, exc) from None
    if not isinstance(facts, dict):
        raise _damaged(path, ValueError(f"a JSON {type(facts).__name__}, not an object"))
    return facts


def load_run(report_dir: Path, run: str) -> tuple[dict, pd.DataFrame]:
    """``run.json`` and ``metrics.csv`` of one history entry (a damaged one is a CompareError naming it)."""
    entry = report_dir / "history" / run
    facts = read_facts(entry / "run.json")
    metrics = pd.DataFrame()
    if (entry / "metrics.csv").is_file():
        try:
            metrics = pd.read_csv(entry / "metrics.csv")
        except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise _damaged(entry / "metrics.csv", exc) from None
    if not isinstance(facts.get("params", {}), dict):
        raise _damaged(entry / "run.json", ValueError("its 'params' is not an object"))
    return facts, metrics


def param_diff(old: dict, new: dict) -> list[tuple[str, str, str]]:
    """(dotted key, old, new) for every parameter that differs, added or removed; sorted by key."""
    a, b = flatten(old or {}), flatten(new or {})
    out = []
    for key in sorted(a.keys() | b.keys()):
        if a.get(key, MISSING) != b.get(key, MISSING) or (key in a) != (key in b):
            out.append((key, show(a[key]) if key in a else MISSING, show(b[key]) if key in b else MISSING))
    return out


def metric_diff(old: pd.DataFrame, new: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    """One row per method/level/protocol and metric: old, new and delta (new - old); a row only one run has
    shows the other as missing."""
    keys = [k for k in KEYS if k in old.columns and k in new.columns]
    numeric = [c for c in new.columns if c in old.columns and c not in keys
               and pd.api.types.is_numeric_dtype(new[c]) and pd.api.types.is_numeric_dtype(old[c])]
    if metrics:
        unknown = [m for m in metrics if m not in numeric]
        if unknown:
            raise CompareError(f"no metric {', '.join(unknown)} in both tables; they have: {', '.join(numeric)}")
        numeric = [m for m in numeric if m in metrics]
    columns = keys + ["metric", "old", "new", "delta"]
    if not numeric:
        return pd.DataFrame(columns=columns)
    long = [frame[keys + numeric].melt(id_vars=keys, var_name="metric", value_name=side)
            for frame, side in ((old, "old"), (new, "new"))]
    merged = long[0].merge(long[1], on=keys + ["metric"], how="outer")
    merged = merged.dropna(subset=["old", "new"], how="all")
    merged["delta"] = merged["new"] - merged["old"]
    order = {m: i for i, m in enumerate(numeric)}
    merged = merged.assign(_m=merged["metric"].map(order)).sort_values(keys + ["_m"], kind="stable")
    return merged[columns].reset_index(drop=True)


def _columns(table: pd.DataFrame) -> list[str]:
    """The metric table as aligned text: names left, numbers right, a missing value as '-'."""
    cells = [[str(c) for c in table.columns]]
    numeric = [c in ("old", "new", "delta") for c in table.columns]
    for row in table.itertuples(index=False):
        cells.append([str(v) if not n else "-" if pd.isna(v) else f"{v:+.4f}" if c == "delta" else f"{v:.4f}"
                      for c, v, n in zip(table.columns, row, numeric, strict=True)])
    widths = [max(len(r[i]) for r in cells) for i in range(len(table.columns))]
    return ["  " + "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(r, widths, numeric, strict=True))
            .rstrip() for r in cells]


def render(experiment: str, a: str, b: str, old_run: dict, new_run: dict, params: list, table: pd.DataFrame,
           changed_only: bool = False) -> str:
    lines = [f"{experiment}: old = {a}", f"{' ' * len(experiment)}  new = {b}"]
    for label, facts in (("old", old_run), ("new", new_run)):
        commit = facts.get("git commit") or "?"
        lines.append(f"  {label}: generated {facts.get('generated', '?')}, git commit {commit}")
    lines.append("")
    if params:
        lines.append(f"Parameters ({len(params)} changed, old -> new):")
        width = max(len(k) for k, _, _ in params)
        lines += [f"  {key:<{width}}  {old} -> {new}" for key, old, new in params]
    else:
        lines.append("Parameters: the same in both runs.")
    lines.append("")
    if changed_only and len(table):
        table = table[~((table["old"] == table["new"]) | (table["old"].isna() & table["new"].isna()))]
    if len(table):
        lines.append("Metrics (delta = new - old):")
        lines += _columns(table)
    else:
        lines.append("Metrics: no metric changed." if changed_only else "Metrics: the tables have no metric in common.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="eagle-compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="eagle_coco", help="the experiment (namespace); default eagle_coco")
    parser.add_argument("--runs", nargs=2, metavar=("OLD", "NEW"), help="two history entries (default: the last two)")
    parser.add_argument("--project", type=Path, help="the project folder (default: found upwards from here)")
    parser.add_argument("--list", action="store_true", help="list the runs on record")
    parser.add_argument("--metrics", nargs="+", help="only these metric columns (default: every numeric column)")
    parser.add_argument("--changed", action="store_true", help="only the metrics whose value changed")
    parser.add_argument("--verbose", action="store_true", help="show the traceback of an error as well")
    args = parser.parse_args(argv)
    try:
        root = find_project(args.project or Path.cwd())
        report_dir = root / "data" / "08_reporting" / args.experiment
        runs = history(report_dir)
        where = report_dir.relative_to(root) / "history"
        if args.list:
            if not runs:
                print(f"no published runs of {args.experiment} under {where}")
            for run in runs:
                try:
                    facts = read_facts(report_dir / "history" / run / "run.json")
                except CompareError as damaged:  # listed, so that the user sees which entry to delete
                    print(f"{run}  {damaged}")
                    continue
                print(f"{run}  git {facts.get('git commit', '?')}  {facts.get('model', '')}")
            return 0
        if args.runs:
            a, b = (resolve(runs, r) for r in args.runs)
        elif len(runs) < 2:
            known = sorted(p.parent.name for p in (root / "data" / "08_reporting").glob("*/history"))
            raise CompareError(
                f"{args.experiment} has {len(runs)} published run{'s' * (len(runs) != 1)} under {where}; comparing "
                f"needs two. A run adds one when its parameters or results change (a rerun that changes nothing "
                f"adds none)." + (f" Experiments with a history: {', '.join(known)}." if known and not runs else ""))
        else:
            a, b = runs[-2:]
        (old_run, old_metrics), (new_run, new_metrics) = load_run(report_dir, a), load_run(report_dir, b)
        table = metric_diff(old_metrics, new_metrics, args.metrics)
    except CompareError as error:
        if args.verbose or show_traceback():
            raise
        print(f"eagle-compare: {error}", file=sys.stderr)
        return 2
    params = param_diff(old_run.get("params"), new_run.get("params"))
    print(render(args.experiment, a, b, old_run, new_run, params, table, args.changed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
