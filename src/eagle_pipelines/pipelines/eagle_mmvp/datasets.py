"""The local MMVP copy for the catalog (``mmvp_source``): ``Questions.csv`` beside the ``MMVP Images/`` folder, read
lazily, so that the embedded default runs without it and the run checks (``eagle_pipelines.hooks.InputCheckHook``)
name a missing part and how to obtain it before any node when ``eagle_mmvp.source`` is ``mmvp``.

It is a ``CocoFolderDataset`` only for those checks and the lazy image listing: MMVP has no annotation files.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import pandas as pd
from kedro.io.core import DatasetError

from eagle_pipelines.io.coco_dataset import CocoFolder, CocoFolderDataset


class MmvpSource(CocoFolder):
    """What ``MmvpSourceDataset.load`` returns: ``questions()`` (Questions.csv as a frame) and ``images()`` (file
    stem -> loader of the PIL image), each read on first use."""

    def questions(self) -> pd.DataFrame:
        return self._read("questions", lambda: pd.read_csv(self._dataset.questions_path))


class MmvpSourceDataset(CocoFolderDataset):
    """Read-only: MMVP's question list and images folder (the layout of the Hugging Face dataset ``MMVP/MMVP``).

    Args:
        path: the copy's root folder (``data/01_raw/mmvp``).
        questions: the question list, relative to `path` (``Questions.csv``).
        images: the images folder, relative to `path` (``MMVP Images``).
        image_suffix: the images' suffix (``.jpg``).
        missing_hint: how to obtain the data, said when a part is missing.
    """

    def __init__(self, path: str, questions: str = "Questions.csv", images: str = "MMVP Images",
                 image_suffix: str = ".jpg", missing_hint: str | None = None, metadata: dict | None = None):
        super().__init__(path, images=images, instances=questions, captions=None, image_suffix=image_suffix,
                         missing_hint=missing_hint, metadata=metadata)
        self._questions = questions

    @property
    def questions_path(self) -> str:
        return str(PurePosixPath(self._path) / self._questions)

    def missing(self) -> list[str]:
        """The expected paths that are not there (empty when complete)."""
        problems = [] if self._fs.isfile(self.questions_path) else [f"{self.questions_path} (the question list)"]
        images = self.part("images")
        if not self._fs.isdir(images):
            problems.append(f"{images}/ (the images folder)")
        elif not self._fs.glob(f"{images}/*{self._image_suffix}"):
            problems.append(f"{images}/*{self._image_suffix} (the folder has no image)")
        return problems

    def missing_message(self, problems: list[str]) -> str:
        hint = f" {self._missing_hint}" if self._missing_hint else ""
        return f"The MMVP copy at '{self._path}' is incomplete; missing: {'; '.join(problems)}.{hint}"

    def load(self) -> MmvpSource:
        return MmvpSource(self)

    def save(self, data: Any) -> None:
        raise DatasetError("the MMVP copy is read-only (a question list and images you supply)")

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path, "questions": self._questions, "images": self._images}
