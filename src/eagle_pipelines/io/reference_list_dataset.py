"""The reference's evaluation list (a JSON file of the authors' repository, ``datasets/*.json``), read lazily: the
file is opened only by a run whose ``eval_data.source`` is ``reference_list`` (data/reference_list.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError


class ReferenceList:
    """A handle on the list file: ``entries()`` reads it."""

    def __init__(self, path: Path):
        self.path = path

    @property
    def name(self) -> str:
        return self.path.name

    def entries(self) -> list:
        if not self.path.is_file():
            raise DatasetError(f"no reference evaluation list at '{self.path}': point `--params "
                               f"reference_list=<file>` at one of the reference's datasets/*.json (docs/paper.md)")
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetError(f"the reference evaluation list '{self.path}' cannot be read: {exc}") from None


class ReferenceListDataset(AbstractDataset[None, ReferenceList]):
    """``load()`` returns a ``ReferenceList`` (nothing is read until a node asks for the entries)."""

    def __init__(self, filepath: str, metadata: dict | None = None):
        self._path = Path(filepath)
        self.metadata = metadata

    def load(self) -> ReferenceList:
        return ReferenceList(self._path)

    def save(self, data: Any) -> None:
        raise DatasetError("the reference evaluation list is an input; it is never written")

    def _exists(self) -> bool:
        return self._path.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._path)}
