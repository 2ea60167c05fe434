"""Compare two published runs of an experiment: what changed in the parameters, and what it did to the metrics.

    eagle-compare                                  # eagle_coco: the latest run against the one before it
    eagle-compare --experiment eagle_repope
    eagle-compare --list                           # the runs on record
    eagle-compare --runs 2026-11-22T02.50 2026-11-22T03.10   # two history entries (a unique prefix is enough)
    eagle-compare --metrics insertion_auc deletion_auc
    eagle-compare --figures                        # also an HTML page: the two runs' figures side by side

Every run that changes a table, a figure or a parameter publishes data/08_reporting/<experiment>/history/<time>/
(metrics.csv, run.json with the parameters of every stage, ...; docs/outputs.md). This prints the parameters that
differ (flattened dotted keys, old -> new) and, per method, level and protocol, each metric of the old run, of the
new one and new - old. It works from any folder inside the project (or --project PATH). ``--figures [PAGE]``
also writes an HTML page (default data/08_reporting/<experiment>/compare/<old>_vs_<new>.html) with that text and
every figure of the two runs side by side, paired by file name, changed ones first; the page links the history
entries' PNGs (nothing is copied) and opens from disk.
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


def figure_pairs(old_entry: Path, new_entry: Path) -> list[tuple[str, Path | None, Path | None, str]]:
    """(name, old PNG, new PNG, status) for every PNG of either history entry, paired by its path inside the entry;
    status is ``changed``, ``only in old``, ``only in new`` or ``same`` (identical bytes); changed ones first."""
    import hashlib

    def pngs(entry: Path) -> dict[str, Path]:
        return {p.relative_to(entry).as_posix(): p for p in sorted(entry.rglob("*.png")) if p.is_file()}

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    old, new = pngs(old_entry), pngs(new_entry)
    rows = []
    for name in sorted(old.keys() | new.keys()):
        a, b = old.get(name), new.get(name)
        status = "only in new" if a is None else "only in old" if b is None else \
            "same" if digest(a) == digest(b) else "changed"
        rows.append((name, a, b, status))
    rank = {"changed": 0, "only in new": 1, "only in old": 2, "same": 3}
    return sorted(rows, key=lambda row: rank[row[3]])


def figures_page(page: Path, title: str, summary: str, pairs: list[tuple[str, Path | None, Path | None, str]],
                 labels: tuple[str, str]) -> Path:
    """Writes `page`: `summary` (the text eagle-compare prints) and one row per figure pair, old left and new
    right, each image linked by its path relative to the page."""
    import html
    import os

    page.parent.mkdir(parents=True, exist_ok=True)

    def cell(path: Path | None, side: str) -> str:
        if path is None:
            return f'<td class="none">not in the {side} run</td>'
        src = html.escape(Path(os.path.relpath(path, page.parent)).as_posix(), quote=True)
        return f'<td><a href="{src}"><img src="{src}" alt="{side}: {html.escape(path.name)}"></a></td>'

    counts = {s: sum(row[3] == s for row in pairs) for s in ("changed", "only in new", "only in old", "same")}
    rows = "\n".join(f'<tr class="{status.replace(" ", "-")}"><th colspan="2">{html.escape(name)} '
                      f'<span class="status">{status}</span></th></tr><tr>{cell(a, "old")}{cell(b, "new")}</tr>'
                      for name, a, b, status in pairs)
    text = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; }}
pre {{ background: #f6f6f6; padding: 0.8em; overflow-x: auto; }}
table {{ border-collapse: collapse; width: 100%; table-layout: fixed; }}
th {{ text-align: left; padding: 1.2em 0 0.3em; font-weight: 600; }}
td {{ width: 50%; vertical-align: top; padding: 0.3em; border: 1px solid #ddd; }}
td.none {{ color: #888; text-align: center; }}
img {{ max-width: 100%; height: auto; }}
.status {{ font-weight: normal; color: #666; margin-left: 0.6em; }}
tr.changed .status {{ color: #b35900; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<pre>{html.escape(summary)}</pre>
<p>{len(pairs)} figures: {counts["changed"]} changed, {counts["only in new"]} only in the new run,
{counts["only in old"]} only in the old run, {counts["same"]} the same (identical files).</p>
<table><thead><tr><th>old: {html.escape(labels[0])}</th><th>new: {html.escape(labels[1])}</th></tr></thead>
<tbody>
{rows}
</tbody></table>
</body></html>
"""
    page.write_text(text, encoding="utf-8")
    return page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="eagle-compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="eagle_coco", help="the experiment (namespace); default eagle_coco")
    parser.add_argument("--runs", nargs=2, metavar=("OLD", "NEW"), help="two history entries (default: the last two)")
    parser.add_argument("--project", type=Path, help="the project folder (default: found upwards from here)")
    parser.add_argument("--list", action="store_true", help="list the runs on record")
    parser.add_argument("--metrics", nargs="+", help="only these metric columns (default: every numeric column)")
    parser.add_argument("--changed", action="store_true", help="only the metrics whose value changed")
    parser.add_argument("--figures", nargs="?", const="", metavar="PAGE",
                        help="also write an HTML page with the two runs' figures side by side (default PAGE: "
                             "data/08_reporting/<experiment>/compare/<old>_vs_<new>.html)")
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
    text = render(args.experiment, a, b, old_run, new_run, params, table, args.changed)
    print(text)
    if args.figures is not None:
        page = Path(args.figures) if args.figures else report_dir / "compare" / f"{a}_vs_{b}.html"
        pairs = figure_pairs(report_dir / "history" / a, report_dir / "history" / b)
        try:
            figures_page(page, f"{args.experiment}: {a} vs {b}", text, pairs, (a, b))
        except OSError as error:
            print(f"eagle-compare: the figures page '{page}' cannot be written ({error.strerror or error}); give "
                  f"another with --figures PAGE", file=sys.stderr)
            return 2
        changed = sum(row[3] != "same" for row in pairs)
        print(f"\nFigures: {len(pairs)} side by side ({changed} differ) in {page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
