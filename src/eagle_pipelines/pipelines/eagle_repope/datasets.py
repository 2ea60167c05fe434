"""The RePOPE source for the catalog: a POPE/RePOPE question list and the COCO folder of the images it asks about,
read lazily, so that the embedded default runs without them and a missing part names its path and how to obtain
it (when ``eagle_repope.source`` is ``repope``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kedro.io.core import AbstractDataset, DatasetError

from eagle_pipelines.core.hallucination import read_pope_questions


class RepopeSource:
    """What ``RepopeSourceDataset.load`` returns: each part is read (and validated) on first use."""

    def __init__(self, dataset: RepopeSourceDataset):
        self._dataset = dataset
        self._cache: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return self._dataset._coco_path

    def _read(self, key: str, make):
        if key not in self._cache:
            problems = self._dataset.missing()
            if problems:
                raise DatasetError(self._dataset.missing_message(problems))
            self._cache[key] = make()
        return self._cache[key]

    def records(self) -> list[dict]:
        path = self._dataset._questions
        return self._read("questions", lambda: read_pope_questions(Path(path).read_text(), source=path))

    def instances(self) -> dict:
        return self._read("instances", lambda: json.loads(Path(self._dataset.part("instances")).read_text()))

    def images(self) -> dict:
        """File stem -> loader of the ``PIL`` image (lazy)."""
        from kedro_datasets.partitions import PartitionedDataset

        return self._read("images", lambda: PartitionedDataset(
            path=self._dataset.part("images"), dataset={"type": "pillow.ImageDataset"},
            filename_suffix=self._dataset._image_suffix).load())


class RepopeSourceDataset(AbstractDataset[None, RepopeSource]):
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
        self._questions = str(filepath)
        self._coco_path = str(path).rstrip("/")
        self._images, self._instances, self._image_suffix = images, instances, image_suffix
        self._missing_hint = missing_hint
        self.metadata = metadata

    def part(self, which: str) -> str:
        return str(Path(self._coco_path) / {"images": self._images, "instances": self._instances}[which])

    def missing(self) -> list[str]:
        """The expected paths that are not there (empty when complete)."""
        problems = []
        if not Path(self._questions).is_file():
            problems.append(f"{self._questions} (the question list)")
        images = Path(self.part("images"))
        if not images.is_dir():
            problems.append(f"{images}/ (the images folder)")
        elif not any(images.glob(f"*{self._image_suffix}")):
            problems.append(f"{images}/*{self._image_suffix} (the folder has no image)")
        if not Path(self.part("instances")).is_file():
            problems.append(f"{self.part('instances')} (the instances annotation file)")
        return problems

    def missing_message(self, problems: list[str]) -> str:
        hint = f" {self._missing_hint}" if self._missing_hint else ""
        return f"The RePOPE source is incomplete; missing: {'; '.join(problems)}.{hint}"

    def load(self) -> RepopeSource:
        return RepopeSource(self)

    def save(self, data: Any) -> None:
        raise DatasetError("the RePOPE source is read-only (a question list and COCO images you supply)")

    def _exists(self) -> bool:
        return not self.missing()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._questions, "path": self._coco_path}
