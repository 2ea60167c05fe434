"""The RePOPE source for the catalog: a POPE/RePOPE question list beside the COCO folder of the images it asks
about (a ``CocoFolderDataset`` without captions), read lazily, so that the embedded default runs without them and
the run checks (``eagle_pipelines.hooks.InputCheckHook``) name a missing part and how to obtain it before any node
when ``eagle_repope.source`` is ``repope``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kedro.io.core import DatasetError

from eagle_pipelines.core.hallucination import read_pope_questions
from eagle_pipelines.data.reference_list import repope_records
from eagle_pipelines.io.coco_dataset import CocoFolder, CocoFolderDataset


class RepopeSource(CocoFolder):
    """What ``RepopeSourceDataset.load`` returns: the COCO folder's parts plus the question records, each read
    (and validated) on first use."""

    def records(self) -> list[dict]:
        """The question records: a POPE/RePOPE list, or the reference's own RePOPE list (its FP or TN file,
        ``datasets/<model>-RePOPE-FP.json``), whose generated answers are then teacher-forced as listed."""
        path = self._dataset._questions
        return self._read("questions", lambda: _records(Path(path).read_text(), path))


def _records(text: str, path: str) -> list[dict]:
    if text.lstrip().startswith("["):
        try:
            entries = json.loads(text)
        except json.JSONDecodeError:
            entries = None
        if isinstance(entries, list) and entries and isinstance(entries[0], dict) and "generated_ids" in entries[0]:
            return read_pope_questions(json.dumps(repope_records(entries, path)), source=path)
    return read_pope_questions(text, source=path)


class RepopeSourceDataset(CocoFolderDataset):
    """Read-only: a POPE/RePOPE question list (JSON lines or a JSON array) and a COCO-format folder.

    Args:
        filepath: the question list, e.g. ``data/01_raw/repope/coco_repope_random.json``.
        path: the COCO root folder (``data/01_raw/coco``).
        images: its images folder, relative to `path` (``val2014``).
        instances: its instances file, relative to `path` (``annotations/instances_val2014.json``).
        image_suffix: the images' suffix (``.jpg``).
        missing_hint: how to obtain the data, said when a part is missing.
    """

    def __init__(self, filepath: str, path: str, images: str = "val2014",
                 instances: str = "annotations/instances_val2014.json", image_suffix: str = ".jpg",
                 missing_hint: str | None = None, metadata: dict | None = None):
        super().__init__(path, images=images, instances=instances, captions=None, image_suffix=image_suffix,
                         missing_hint=missing_hint, metadata=metadata)
        self._questions = str(filepath)

    def missing(self) -> list[str]:
        """The expected paths that are not there (empty when complete)."""
        questions = [] if self._fs.isfile(self._questions) else [f"{self._questions} (the question list)"]
        return questions + super().missing()

    def missing_message(self, problems: list[str]) -> str:
        hint = f" {self._missing_hint}" if self._missing_hint else ""
        return f"The RePOPE source is incomplete; missing: {'; '.join(problems)}.{hint}"

    def load(self) -> RepopeSource:
        return RepopeSource(self)

    def save(self, data: Any) -> None:
        raise DatasetError("the RePOPE source is read-only (a question list and COCO images you supply)")

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._questions, **super()._describe()}
