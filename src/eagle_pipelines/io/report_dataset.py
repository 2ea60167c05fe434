"""Figures and published reports.

- ``FiguresDataset``: a folder of PNGs, saved from ``{name: matplotlib Figure}``, loaded as ``{name: PNG bytes}``
  (a ``dict`` value, the report explorer's data, goes to ``<name>.json``); kedro-viz previews the curves.
- ``PublishedReportDataset``: one run's report, published whole or not at all. ``save`` writes every file of the
  run (tables, figures, the HTML page, ``run.json``) into ``history/<time>/`` and then points the ``latest`` link
  at it in one atomic rename; ``metrics.csv``, ``metrics_per_sample.csv`` and ``report.html`` beside ``latest``
  are fixed links through it. A run killed while publishing leaves the previous report whole (and at most an
  unreferenced ``history/.incomplete-*`` folder, removed by the next publish). A run whose tables, figures and
  parameters are those of the latest report adds no history entry.

  On an object store (``path: s3://bucket/08_reporting/<namespace>`` with ``credentials: s3``; io/storage.py)
  there are no links and no renames. Each file of the run is one PUT into ``history/<time>/``, ``run.json``
  last, and then the object ``latest.json`` (``{"history": "<time>"}``) is PUT: that one PUT is the publication,
  so a reader that follows ``latest.json`` sees the previous report whole or the new one whole. The linked files
  beside it (``metrics.csv``...) are copies written after the publication. A run killed before ``latest.json``
  leaves an unreferenced ``history/<time>/`` that the next publish removes (an entry with no ``run.json``, or
  newer than the one ``latest.json`` names).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io.core import AbstractDataset, DatasetError
from kedro_datasets._typing import ImagePreview, TablePreview

from eagle_pipelines.files import atomic_write
from eagle_pipelines.io import storage

LINKED = ("metrics.csv", "metrics_per_sample.csv", "skipped.csv", "paper_comparison.csv", "report.html", "run.json")


def figure_png(fig, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


class FiguresDataset(AbstractDataset[dict, dict]):
    """``{name: Figure or PNG bytes}`` as ``<path>/<name>.png``, and ``{name: dict}`` (the report explorer's data) as
    ``<path>/<name>.json``, each written atomically. A save replaces the folder's figures: a PNG or JSON file that
    the new figures do not name (a figure an earlier run drew) is removed, so it cannot reach the next report.
    ``load`` gives ``{name: PNG bytes or dict}``."""

    def __init__(self, path: str, dpi: int = 110, metadata: dict | None = None):
        self._path = Path(path)
        self._dpi = dpi
        self.metadata = metadata

    def save(self, data: dict) -> None:
        written = set()
        for name, value in data.items():
            if isinstance(value, dict):
                text = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
                atomic_write(self._path / f"{name}.json", lambda f, b=text: f.write(b))
                written.add(f"{name}.json")
            else:
                png = value if isinstance(value, bytes) else figure_png(value, self._dpi)
                atomic_write(self._path / f"{name}.png", lambda f, b=png: f.write(b))
                written.add(f"{name}.png")
        for stale in [*self._path.glob("*.png"), *self._path.glob("*.json")]:
            if stale.name not in written:
                stale.unlink(missing_ok=True)

    def load(self) -> dict[str, bytes | dict]:
        if not self._path.is_dir():
            raise DatasetError(f"no figures at '{self._path}': their node has not run")
        out: dict[str, bytes | dict] = {p.stem: p.read_bytes() for p in sorted(self._path.glob("*.png"))}
        for file in sorted(self._path.glob("*.json")):
            try:
                out[file.stem] = json.loads(file.read_text())
            except ValueError as exc:
                raise DatasetError(f"'{file}' is damaged ({exc}); run build_figures again") from None
        return out

    def _exists(self) -> bool:
        return self._path.is_dir() and any(self._path.glob("*.png"))

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}

    def preview(self) -> ImagePreview:
        """kedro-viz: the curves of every method (or the first figure)."""
        figures = {name: value for name, value in self.load().items() if isinstance(value, bytes)}
        name = "curves" if "curves" in figures else next(iter(figures), None)
        return ImagePreview(base64.b64encode(figures[name]).decode("ascii") if name else "")


def _content_hash(files: dict[str, bytes]) -> str:
    """What makes a report new: its tables, figures and the parameters and coverage in ``run.json`` (not the
    page itself or the run's time and commit, which change on every publication)."""
    digest = hashlib.sha256()
    for name, blob in sorted(files.items()):
        if name == "report.html":
            continue  # the page carries the publication time
        if name == "run.json":
            run = json.loads(blob or b"{}")
            blob = json.dumps({k: run.get(k) for k in ("params", "coverage")}, sort_keys=True, default=str).encode()
        digest.update(name.encode() + b"\0" + hashlib.sha256(blob).digest())
    return digest.hexdigest()


class PublishedReportDataset(AbstractDataset[dict, dict]):
    """A report folder with ``history/<time>/`` per run and ``latest`` pointing at the newest (see the module
    docstring). ``save({"metrics.csv": DataFrame, "report.html": str, "figures/x.png": bytes, "run.json": dict,
    ...})``; ``load()`` returns the latest run's ``run.json``.

    Args:
        path: the report folder (``data/08_reporting/eagle_coco``), or an fsspec URL (``s3://bucket/...``).
        credentials: fsspec storage options of a remote path (``credentials: s3``).
        fs_args: further storage options.
    """

    #: on an object store: the object that names the latest history entry (its PUT is the publication)
    POINTER = "latest.json"

    def __init__(self, path: str, credentials: dict | None = None, fs_args: dict | None = None,
                 metadata: dict | None = None):
        self._options = storage.options_of(credentials, fs_args)
        self._remote, self._path = storage.located(path, self._options)
        self.metadata = metadata

    @staticmethod
    def _bytes(name: str, value) -> bytes:
        if isinstance(value, pd.DataFrame):
            return value.to_csv(index=False, float_format="%.6g").encode()
        if isinstance(value, bytes):
            return value
        if isinstance(value, str):
            return value.encode()
        return json.dumps(value, indent=1, sort_keys=True, default=str).encode()

    def save(self, data: dict) -> None:
        files = {name: self._bytes(name, value) for name, value in data.items()}
        content = _content_hash(files)
        latest = self.latest()
        if latest is not None and latest.get("content_sha256") == content:
            return  # nothing changed since the latest report: no new history entry
        run = json.loads(files.get("run.json", b"{}"))
        run["content_sha256"] = content
        files["run.json"] = json.dumps(run, indent=1, sort_keys=True, default=str).encode()
        if self._remote:
            self._publish_remote(files, latest)
            return
        history = self._path / "history"
        history.mkdir(parents=True, exist_ok=True)
        for stale in history.glob(".incomplete-*"):
            shutil.rmtree(stale, ignore_errors=True)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H.%M.%S.%fZ")
        staging = history / f".incomplete-{stamp}"
        for name, blob in files.items():
            atomic_write(staging / name, lambda f, b=blob: f.write(b))
        os.replace(staging, history / stamp)
        link = self._path / ".latest.tmp"
        link.unlink(missing_ok=True)
        os.symlink(Path("history") / stamp, link)
        os.replace(link, self._path / "latest")  # the publication: one atomic rename
        for name in LINKED:
            top = self._path / name
            if name in files and not top.is_symlink():
                if top.exists():
                    top.unlink()
                os.symlink(Path("latest") / name, top)

    # -- an object store ------------------------------------------------------------------------------------------
    def _pointed(self) -> str | None:
        """The history entry ``latest.json`` names (None: nothing published)."""
        try:
            return json.loads(self._remote.read(self.POINTER))["history"]
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            return None

    def history(self) -> list[str]:
        """The published history entries, oldest first (on an object store: those with a run.json, up to the one
        ``latest.json`` names)."""
        if not self._remote:
            folder = self._path / "history"
            return sorted(p.name for p in folder.glob("*") if (p / "run.json").is_file()) if folder.is_dir() else []
        pointed = self._pointed()
        if pointed is None:
            return []
        return sorted(e for e in self._remote_entries() if e <= pointed)

    def _remote_entries(self) -> set[str]:
        """History entries that have a run.json (however far their publication got)."""
        fs = self._remote.fs
        root = fs._strip_protocol(self._remote.url).rstrip("/") + "/history"
        try:
            fs.invalidate_cache()
            found = fs.find(root)
        except Exception as exc:  # noqa: BLE001 - named with the endpoint
            raise self._remote._fail(f"list '{self._path}/history'", exc) from None
        return {f[len(root) + 1:].split("/", 1)[0] for f in found if f.endswith("/run.json")}

    def _publish_remote(self, files: dict[str, bytes], latest: dict | None) -> None:
        fs = self._remote.fs
        root = fs._strip_protocol(self._remote.url).rstrip("/")
        pointed = self._pointed()
        try:  # leftovers of a publish cut off before its pointer: no run.json, or newer than the latest
            fs.invalidate_cache()
            found = fs.find(f"{root}/history")
        except Exception as exc:  # noqa: BLE001
            raise self._remote._fail(f"list '{self._path}/history'", exc) from None
        entries: dict[str, list[str]] = {}
        for f in found:
            entries.setdefault(f[len(root) + len("/history/"):].split("/", 1)[0], []).append(f)
        for entry, objects in entries.items():
            complete = any(o.endswith("/run.json") for o in objects)
            if not complete or pointed is None or entry > pointed:
                for o in objects:
                    self._remote.remove(o[len(root) + 1:])
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H.%M.%S.%fZ")
        for name, blob in sorted(files.items(), key=lambda kv: kv[0] == "run.json"):  # run.json last
            self._remote.write(f"history/{stamp}/{name}", blob)
        self._remote.write(self.POINTER, json.dumps({"history": stamp}).encode())  # the publication
        for name in LINKED:
            if name in files:
                self._remote.write(name, files[name])

    def latest(self) -> dict | None:
        if self._remote:
            pointed = self._pointed()
            if pointed is None:
                return None
            try:
                return json.loads(self._remote.read(f"history/{pointed}/run.json"))
            except (FileNotFoundError, ValueError):
                return None
        try:
            return json.loads((self._path / "latest" / "run.json").read_text())
        except (OSError, ValueError):
            return None

    def load(self) -> dict:
        run = self.latest()
        if run is None:
            raise DatasetError(f"no published report at '{self._path}/latest'")
        return run

    def _exists(self) -> bool:
        return self.latest() is not None

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}

    def preview(self) -> TablePreview:
        """kedro-viz: the latest report's metrics table."""
        if self._remote:
            frame = pd.read_csv(io.BytesIO(self._remote.read(f"history/{self._pointed()}/metrics.csv")))
        else:
            frame = pd.read_csv(self._path / "latest" / "metrics.csv")
        return TablePreview(json.loads(frame.round(4).to_json(orient="split")))
