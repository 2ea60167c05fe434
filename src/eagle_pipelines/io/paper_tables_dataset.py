"""The paper's published tables as a read-only catalog dataset (``paper_tables``; reporting/paper.py reads and
validates them). The default file is the copy shipped in the package (src/eagle_pipelines/data/paper_tables.csv,
its source in its header)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io.core import AbstractDataset, DatasetError

from eagle_pipelines.reporting.paper import PAPER_TABLES, PaperTableError, read_paper_tables


class PaperTablesDataset(AbstractDataset[None, pd.DataFrame]):
    """``load()``: the paper's cells (``read_paper_tables``). ``problem()``: why the file cannot be used (one
    line), or None; the run's input check (hooks.py) asks it before any node, so a damaged copy stops a run at
    its start, not after hours at its comparison node.

    Args:
        filepath: the table (default: the copy shipped in the package).
    """

    def __init__(self, filepath: str | None = None, metadata: dict | None = None):
        self._filepath = Path(filepath) if filepath else PAPER_TABLES
        self.metadata = metadata

    def load(self) -> pd.DataFrame:
        return read_paper_tables(self._filepath)

    def save(self, data) -> None:
        raise DatasetError(f"'{self._filepath}' is the paper's published tables: read-only")

    def problem(self) -> str | None:
        try:
            read_paper_tables(self._filepath)
        except PaperTableError as exc:
            return str(exc)
        return None

    def stamp(self) -> str:
        """Provenance: the file's content."""
        try:
            return hashlib.sha256(self._filepath.read_bytes()).hexdigest()
        except OSError:
            return f"absent:{self._filepath}"

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
