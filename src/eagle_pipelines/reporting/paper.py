"""The paper's published tables beside a run's (docs/paper.md#the-papers-tables-beside-the-run). No Kedro here.

- ``read_paper_tables``: the shipped copy of the paper's sentence-level (COCO caption, MMVP) and word-level (COCO)
  tables (``data/paper_tables.csv``), validated row by row; a damaged copy is refused with one line naming the row.
- ``compare``: one run's ``metrics.csv`` rows beside the paper's cells of the same (table, model, method, metric):
  the paper's value, the run's, the difference, n, the protocol, the model's fingerprint, and how seconds and
  memory were measured (GPU allocator peak or CPU resident set).
- ``paper_coverage``: over the comparison rows of one or more runs, how many of the paper's cells for those
  models they cover.

How the run's names map onto the paper's (documented in docs/paper.md):

- experiment and level -> the paper's table (``TASKS``): eagle_coco sentence -> coco_caption/sentence, eagle_coco
  word -> coco_caption/word, eagle_mmvp sentence -> mmvp/sentence;
- model preset -> the paper's model name: the ``paper_comparison.paper_models`` table (conf/base);
- method (``METHODS``): eagle, llava_cam, igos_pp (the paper's "iGOS++ (w/ GNC)"), tam as named; captum and
  random have no paper row;
- metric (``METRICS``): the metrics.csv columns of the same name; ``peak_memory_mb`` -> ``gpu_memory_gb``
  (MiB / 1024).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

PAPER_TABLES = Path(__file__).parents[1] / "data" / "paper_tables.csv"
SOURCE = ('"Where MLLMs Attend and What They Rely On: Explaining Autoregressive Token Generation" (EAGLE), CVPR '
          "2026: its sentence-level table (COCO caption, MMVP) and word-level table (COCO objects)")
KEY = ["task", "level", "model", "method", "metric"]
COLUMNS = [*KEY, "value"]

#: (experiment namespace, level) -> (the paper's task, level)
TASKS: dict[tuple[str, str], tuple[str, str]] = {
    ("eagle_coco", "sentence"): ("coco_caption", "sentence"),
    ("eagle_coco", "word"): ("coco_caption", "word"),
    ("eagle_mmvp", "sentence"): ("mmvp", "sentence"),
}
#: the run's method name -> the paper's (None: a method of this project that the paper does not report)
METHODS: dict[str, str | None] = {"eagle": "eagle", "llava_cam": "llava_cam", "igos_pp": "igos_pp", "tam": "tam",
                                  "captum": None, "random": None}
#: the paper's metric -> the metrics.csv column it is compared with, and the factor from the run's unit to the paper's
METRICS: dict[str, tuple[str, float]] = {
    "insertion_auc": ("insertion_auc", 1.0), "deletion_auc": ("deletion_auc", 1.0), "ahc": ("ahc", 1.0),
    "insertion_auc_sensitive": ("insertion_auc_sensitive", 1.0),
    "deletion_auc_sensitive": ("deletion_auc_sensitive", 1.0), "ahc_sensitive": ("ahc_sensitive", 1.0),
    "point_game_box": ("point_game_box", 1.0), "point_game_mask": ("point_game_mask", 1.0),
    "seconds_per_sample": ("seconds_per_sample", 1.0),
    "gpu_memory_gb": ("peak_memory_mb", 1 / 1024),  # MiB -> GiB
}
OUTPUT = ["task", "level", "model", "method", "metric", "paper", "run", "difference", "n", "covered", "protocol",
          "measured_as", "preset", "model_fingerprint", "note"]


class PaperTableError(ValueError):
    """The paper's table (or a comparison) is damaged or names something unknown; one line says which and how."""


class PaperCell(BaseModel):
    """One cell of the paper's tables."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: Literal["coco_caption", "mmvp"]
    level: Literal["sentence", "word"]
    model: str
    method: Literal["eagle", "llava_cam", "igos_pp", "tam"]
    metric: Literal[tuple(METRICS)]  # type: ignore[valid-type]
    value: float

    @field_validator("model")
    @classmethod
    def _named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("empty model name")
        return value

    @field_validator("value")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value) or value < 0:
            raise ValueError("must be a finite number >= 0")
        return value


def read_paper_tables(path: str | Path = PAPER_TABLES) -> pd.DataFrame:
    """The paper's cells (columns ``task, level, model, method, metric, value``), each validated
    (``PaperCell``), no key twice. Lines starting with ``#`` (the source) are skipped. A damaged file raises
    ``PaperTableError`` with one line: the file, the row and the fix."""
    path = Path(path)
    fix = f"restore the shipped copy ({PAPER_TABLES.name} in src/eagle_pipelines/data/)"
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise PaperTableError(f"{path}: cannot be read ({exc.strerror or exc}); {fix}") from None
    comments = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    try:
        frame = pd.read_csv(path, comment=None, skiprows=comments, dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as exc:
        raise PaperTableError(f"{path}: not a CSV table ({str(exc).splitlines()[0]}); {fix}") from None
    if list(frame.columns) != COLUMNS:
        raise PaperTableError(f"{path}: columns are {list(frame.columns)}, expected {COLUMNS}; {fix}")
    if frame.empty:
        raise PaperTableError(f"{path}: no cell; {fix}")
    cells, seen = [], {}
    for i, record in enumerate(frame.to_dict("records")):
        line = comments + 2 + i  # the file's line (1-based, after the header)
        try:
            cell = PaperCell.model_validate(record)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            raise PaperTableError(f"{path}: line {line}: {field}: {err['msg']} (got {record.get(field)!r}); "
                                  f"{fix}") from None
        key = tuple(getattr(cell, k) for k in KEY)
        if key in seen:
            raise PaperTableError(f"{path}: line {line}: the cell {'/'.join(key)} is also on line {seen[key]}; "
                                  f"{fix}")
        seen[key] = line
        cells.append(cell.model_dump())
    return pd.DataFrame(cells, columns=COLUMNS)


def paper_models(paper: pd.DataFrame) -> list[str]:
    return sorted(paper["model"].unique())


def check_paper_model(paper_model: str | None, paper: pd.DataFrame, preset: str) -> None:
    """Refuses (one line) a preset mapped to a name the paper's table does not have."""
    if paper_model is not None and paper_model not in set(paper["model"]):
        raise PaperTableError(f"paper_comparison.paper_models.{preset}: {paper_model!r} is not a model of the "
                              f"paper's tables ({', '.join(paper_models(paper))}); fix the name in "
                              "conf/base/parameters_paper_comparison.yml or set it to null")


def memory_measure(device: str) -> str:
    """What ``peak_memory_mb`` measured on `device` (core/memory.py: PeakMemory)."""
    if str(device).startswith("cuda"):
        return "GPU peak allocated (torch.cuda.max_memory_allocated), GiB"
    return "CPU peak resident set of the process (VmHWM), GiB; not comparable with the paper's GPU memory"


def note_only(preset: str, fingerprint: str, note: str) -> pd.DataFrame:
    return pd.DataFrame([{**{c: None for c in OUTPUT}, "covered": False, "preset": preset,
                          "model_fingerprint": fingerprint, "note": note}], columns=OUTPUT)


def compare(metrics: pd.DataFrame, paper: pd.DataFrame, *, experiment: str, preset: str, paper_model: str | None,
            fingerprint: str = "", device: str = "cpu") -> pd.DataFrame:
    """One row per paper cell of `experiment`'s tables for `paper_model` (``OUTPUT`` columns): the paper's value,
    the run's (``metrics``: the aggregate table, one row per method, level and protocol), their difference (run −
    paper), n (the run's n_samples), ``covered`` (the run has this method at this level), the protocol the run's
    value comes from (the paper's: EAGLE under its region curves, the baselines under the pixel protocol) and how
    seconds and memory were measured. A preset without paper cells (``paper_model`` None) or an experiment without
    a paper table gives one row with a note and no cell. A method the mapping does not know is refused
    (``PaperTableError``, one line)."""
    check_paper_model(paper_model, paper, preset)
    tasks = {level: task for (exp, level), task in TASKS.items() if exp == experiment}
    if paper_model is None:
        return note_only(preset, fingerprint, f"the model preset {preset!r} has no cells in the paper's tables "
                                               "(nothing to compare)")
    if not tasks:
        return note_only(preset, fingerprint, f"the experiment {experiment!r} has no table in the paper")
    unknown = sorted(set(metrics["method"]) - set(METHODS)) if len(metrics) else []
    if unknown:
        raise PaperTableError(f"metrics: method {unknown[0]!r} has no entry in the paper mapping "
                              "(eagle_pipelines.reporting.paper.METHODS); add it (None if the paper has no row)")
    to_run = {paper_name: run for run, paper_name in METHODS.items() if paper_name is not None}
    measured = memory_measure(device)
    rows = []
    for level, (task, paper_level) in tasks.items():
        cells = paper[(paper["task"] == task) & (paper["level"] == paper_level) & (paper["model"] == paper_model)]
        for cell in cells.itertuples(index=False):
            method = to_run[cell.method]
            runs = metrics[(metrics["method"] == method) & (metrics["level"] == level)] if len(metrics) else metrics
            protocol = None
            if len(runs) and "protocol" in runs:
                protocol = "regions" if (runs["protocol"] == "regions").any() else "pixels"
                runs = runs[runs["protocol"] == protocol]
            column, factor = METRICS[cell.metric]
            row = {"task": task, "level": paper_level, "model": paper_model, "method": cell.method,
                   "metric": cell.metric, "paper": cell.value, "run": None, "difference": None, "n": None,
                   "covered": False, "protocol": protocol, "measured_as": None, "preset": preset,
                   "model_fingerprint": fingerprint, "note": ""}
            if cell.metric == "gpu_memory_gb":
                row["measured_as"] = measured
            elif cell.metric == "seconds_per_sample":
                row["measured_as"] = f"wall seconds per explained sample, on {device}"
            if runs.empty:
                row["note"] = (f"the run has no {level}-level row for {method} (level not run, or the method not in "
                               "baselines.methods)")
            elif column not in runs:
                row["note"] = f"the run's metrics have no column {column!r}"
            else:
                value = pd.to_numeric(runs.iloc[0][column], errors="coerce")
                row.update({"n": int(runs.iloc[0]["n_samples"]), "covered": True})
                if pd.isna(value):
                    row["note"] = "the run's value is undefined (e.g. no sensitive token, no object for Point Game)"
                else:
                    row["run"] = float(value) * factor
                    row["difference"] = row["run"] - cell.value
            rows.append(row)
    return pd.DataFrame(rows, columns=OUTPUT)


def paper_coverage(rows: pd.DataFrame, paper: pd.DataFrame) -> dict:
    """Of the paper's cells for the models in `rows` (the comparison rows of one or more runs), how many a row
    covers: ``{"models", "cells", "covered", "with_value", "missing": ["task/level/model/method/metric"...],
    "per_model": {model: {"cells", "covered"}}}``. A row naming a cell the paper does not have is refused
    (``PaperTableError``)."""
    cells = rows[rows["metric"].notna()] if len(rows) else rows
    paper_keys = {tuple(r) for r in paper[KEY].itertuples(index=False)}
    row_keys = [tuple(r) for r in cells[KEY].itertuples(index=False)] if len(cells) else []
    stray = [k for k in row_keys if k not in paper_keys]
    if stray:
        raise PaperTableError(f"comparison row {'/'.join(map(str, stray[0]))} is not a cell of the paper's tables; "
                              "was it made with another copy of paper_tables.csv?")
    models = sorted(set(cells["model"])) if len(cells) else []
    wanted = {k for k in paper_keys if k[2] in models}
    covered = {k for k, c in zip(row_keys, cells["covered"] if len(cells) else [], strict=True) if bool(c)}
    valued = {k for k, c, v in zip(row_keys, cells["covered"] if len(cells) else [],
                                   cells["run"] if len(cells) else [], strict=True) if bool(c) and pd.notna(v)}
    per_model = {m: {"cells": sum(k[2] == m for k in wanted), "covered": sum(k[2] == m for k in covered)}
                 for m in models}
    return {"models": models, "cells": len(wanted), "covered": len(covered & wanted),
            "with_value": len(valued & wanted), "missing": sorted("/".join(k) for k in wanted - covered),
            "per_model": per_model}


def main(argv: list[str] | None = None) -> int:
    """``python -m eagle_pipelines.reporting.paper <paper_comparison.csv>...``: the cells of the paper's tables
    the given comparisons cover, out of the cells for their models (``make paper`` prints it after its runs)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m eagle_pipelines.reporting.paper", description=main.__doc__)
    parser.add_argument("comparisons", nargs="+", help="paper_comparison.csv files (missing ones are listed)")
    args = parser.parse_args(argv)
    frames = []
    for name in args.comparisons:
        try:
            frames.append(pd.read_csv(name))
        except (OSError, ValueError) as exc:
            print(f"{name}: not read ({type(exc).__name__}: {str(exc).splitlines()[0]})")
    if not frames:
        print("no comparison was read: nothing to count (has the run published its report?)")
        return 1
    rows = pd.concat(frames, ignore_index=True)
    try:
        found = paper_coverage(rows, read_paper_tables())
    except PaperTableError as exc:
        print(f"error: {exc}")
        return 2
    for model, counts in found["per_model"].items():
        print(f"{model}: {counts['covered']} of the paper's {counts['cells']} cells covered")
    print(f"in all: {found['covered']} of {found['cells']} cells ({found['with_value']} with a value)")
    for cell in found["missing"]:
        print(f"  not covered: {cell}")
    return 0 if found["cells"] and found["covered"] == found["cells"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
