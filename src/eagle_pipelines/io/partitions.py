"""Resumable per-item outputs (label maps, attributions): one partition per key, written atomically, computed
only where missing.

A node returns ``{key: callable}`` for every item; ``save`` calls the callables of missing keys only, one at a
time, with a progress bar, and writes each result as soon as it is ready (temporary file, then rename). Killing
the run loses at most the item in flight; the next run computes only what is missing. Keys carry a hash of the
parameters that made them (``<hash>/<item>``), so changing a parameter computes a new set beside the old one.

A callable may return ``Skipped(reason)`` (e.g. an unreadable image): a ``<key>.skipped.json`` marker records
the reason and the item counts as done; delete the marker to retry it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from kedro.io.core import AbstractDataset, DatasetError

from eagle_pipelines.core.attribution import Attribution, atomic_write
from eagle_pipelines.core.regions import RegionMap

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Skipped:
    reason: str


class _Kind:
    suffix = ""

    def done(self, base: Path) -> bool:
        raise NotImplementedError

    def write(self, base: Path, value) -> None:
        raise NotImplementedError

    def read(self, base: Path):
        raise NotImplementedError


class _LabelMaps(_Kind):
    """RegionMap -> <key>.npz (labels + the SLIC parameters as JSON text)."""

    suffix = ".npz"

    def done(self, base: Path) -> bool:
        return base.with_suffix(".npz").exists()

    def write(self, base: Path, value: RegionMap) -> None:
        atomic_write(base.with_suffix(".npz"), lambda f: np.savez_compressed(
            f, labels=value.labels, params=np.array(json.dumps(value.params, sort_keys=True))))

    def read(self, base: Path) -> RegionMap:
        with np.load(base.with_suffix(".npz")) as data:
            return RegionMap(data["labels"], json.loads(str(data["params"])))


class _Attributions(_Kind):
    """Attribution -> <key>.npz + <key>.json (the JSON is written last: it marks the partition complete)."""

    suffix = ".json"

    def done(self, base: Path) -> bool:
        return base.with_suffix(".json").exists() and base.with_suffix(".npz").exists()

    def write(self, base: Path, value: Attribution) -> None:
        value.save(base)

    def read(self, base: Path) -> Attribution:
        return Attribution.load(base)


class _Arrays(_Kind):
    """(H, W) float32 maps -> <key>.npz, with an optional JSON-able dict of facts (seconds, memory)."""

    suffix = ".npz"

    def done(self, base: Path) -> bool:
        return base.with_suffix(".npz").exists()

    def write(self, base: Path, value) -> None:
        array, info = value if isinstance(value, tuple) else (value, {})
        atomic_write(base.with_suffix(".npz"), lambda f: np.savez_compressed(
            f, map=np.asarray(array, dtype=np.float32), info=np.array(json.dumps(info, sort_keys=True))))

    def read(self, base: Path):
        with np.load(base.with_suffix(".npz")) as data:
            return data["map"], json.loads(str(data["info"]))


class _Records(_Kind):
    """JSON-able dicts -> <key>.json (e.g. per-sample metric rows)."""

    suffix = ".json"

    def done(self, base: Path) -> bool:
        return base.with_suffix(".json").exists()

    def write(self, base: Path, value: dict) -> None:
        text = json.dumps(value, sort_keys=True, default=float).encode()
        atomic_write(base.with_suffix(".json"), lambda f: f.write(text))

    def read(self, base: Path) -> dict:
        return json.loads(base.with_suffix(".json").read_text())


KINDS: dict[str, _Kind] = {"label_map": _LabelMaps(), "attribution": _Attributions(), "array": _Arrays(),
                           "record": _Records()}


class ResumablePartitionsDataset(AbstractDataset[dict[str, Callable[[], Any]], dict[str, Callable[[], Any]]]):
    """Partitions under `path`, keyed by relative path without suffix.

    Args:
        path: the folder.
        kind: ``label_map``, ``attribution``, ``array`` or ``record``.
        description: shown on the progress bar.
    """

    def __init__(self, path: str, kind: str, description: str | None = None, metadata: dict | None = None):
        if kind not in KINDS:
            raise DatasetError(f"unknown partition kind {kind!r} for {path}; known: {sorted(KINDS)}")
        self._path = Path(path)
        self._kind = KINDS[kind]
        self._kind_name = kind
        self._description = description or self._path.name
        self.metadata = metadata

    def _base(self, key: str) -> Path:
        key = str(key)
        if key.startswith("/") or ".." in Path(key).parts:
            raise DatasetError(f"partition key {key!r} must be a relative path inside {self._path}")
        return self._path / key

    def _skipped(self, key: str) -> Path:
        return self._base(key).with_name(self._base(key).name + ".skipped.json")

    def is_done(self, key: str) -> bool:
        return self._kind.done(self._base(key)) or self._skipped(key).exists()

    def keys(self) -> list[str]:
        """Keys of complete partitions (not skipped), sorted."""
        if not self._path.exists():
            return []
        keys = []
        for file in self._path.rglob(f"*{self._kind.suffix}"):
            if file.name.startswith(".") or file.name.endswith(".skipped.json"):
                continue
            key = file.relative_to(self._path).with_suffix("").as_posix()
            if self._kind.done(self._base(key)):
                keys.append(key)
        return sorted(keys)

    def skipped(self) -> dict[str, str]:
        """Keys of skipped items with their reasons."""
        if not self._path.exists():
            return {}
        out = {}
        for file in self._path.rglob("*.skipped.json"):
            key = file.relative_to(self._path).as_posix().removesuffix(".skipped.json")
            out[key] = json.loads(file.read_text())["reason"]
        return dict(sorted(out.items()))

    def load(self) -> dict[str, Callable[[], Any]]:
        """Lazy loaders of every complete partition (an empty dict when there are none)."""
        return {key: (lambda b=self._base(key): self._kind.read(b)) for key in self.keys()}

    def save(self, data: dict[str, Any]) -> None:
        from tqdm.auto import tqdm

        missing = [k for k in sorted(data) if not self.is_done(k)]
        if len(missing) < len(data):
            logger.info("%s: %d of %d items already done, computing %d", self._description,
                        len(data) - len(missing), len(data), len(missing))
        for key in tqdm(missing, desc=self._description, unit="item", disable=not missing):
            value = data[key]() if callable(data[key]) else data[key]
            if value is None:
                continue
            if isinstance(value, Skipped):
                logger.warning("%s: %s skipped: %s", self._description, key, value.reason)
                text = json.dumps({"key": key, "reason": value.reason}).encode()
                atomic_write(self._skipped(key), lambda f, t=text: f.write(t))
                continue
            self._kind.write(self._base(key), value)

    def _exists(self) -> bool:
        return bool(self.keys())

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "kind": self._kind_name}
