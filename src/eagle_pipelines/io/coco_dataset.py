"""Read-only catalog datasets for a COCO-format folder that is read only when used (COCO val2017), and the sources
built on it: a POPE/RePOPE question list beside COCO images (``RepopeSourceDataset``) and the local MMVP copy
(``MmvpSourceDataset``).

Loading returns a ``CocoFolder`` handle and reads nothing: the annotation files are parsed on the first call of
``instances()`` / ``captions()`` and the images are listed on the first call of ``images()``. So a pipeline can
name the dataset while it is absent (the embedded default never reads it); the run checks
(``eagle_pipelines.hooks.InputCheckHook``) stop a run that needs it before any node, naming what is missing.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import json
from pathlib import Path

import fsspec
import pandas as pd
from kedro.io.core import AbstractDataset, DatasetError, get_protocol_and_path
from kedro_datasets.json import JSONDataset

from eagle_pipelines.core.hallucination import read_pope_questions
from eagle_pipelines.core.images import SourceImage
from eagle_pipelines.data.reference_list import repope_records


class CocoFolder:
    """Lazy access to a COCO-format folder (what ``CocoFolderDataset.load`` returns)."""

    def __init__(self, dataset: CocoFolderDataset):
        self._dataset = dataset
        self._cache: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return self._dataset._path

    def _read(self, key: str, make):
        if key not in self._cache:
            problems = self._dataset.missing()
            if problems:
                raise DatasetError(self._dataset.missing_message(problems))
            self._cache[key] = make()
        return self._cache[key]

    def instances(self) -> dict:
        return self._read("instances", lambda: JSONDataset(filepath=self._dataset.part("instances")).load())

    def captions(self) -> dict | None:
        if self._dataset._captions is None:
            return None
        return self._read("captions", lambda: JSONDataset(filepath=self._dataset.part("captions")).load())

    def images(self) -> dict[str, SourceImage]:
        """File stem -> ``core.images.SourceImage`` of every entry of the images folder with the image suffix,
        read only when used: a split copies its bytes and decodes them only when its item is reached, so a damaged
        file, a directory or a broken link among them is named then, with its reason, instead of stopping the
        whole run."""
        return self._read("images", self._dataset.image_files)


class CocoFolderDataset(AbstractDataset[None, CocoFolder]):
    """A COCO-format folder: an images folder and the instances (and captions) annotation files.

    Args:
        path: the dataset's root folder (``data/01_raw/coco``).
        images: the images folder, relative to `path` (``val2017``).
        instances: the instances file, relative to `path` (``annotations/instances_val2017.json``).
        captions: the captions file, relative to `path`, or null.
        image_suffix: the images' file suffix (``.jpg``).
        missing_hint: how to obtain the dataset, said when a part is missing.
    """

    def __init__(self, path: str, images: str = "val2017", instances: str = "annotations/instances_val2017.json",
                 captions: str | None = "annotations/captions_val2017.json", image_suffix: str = ".jpg",
                 missing_hint: str | None = None, metadata: dict | None = None):
        self._path = str(path).rstrip("/")
        self._images = images
        self._instances = instances
        self._captions = captions
        self._image_suffix = image_suffix
        self._missing_hint = missing_hint
        self.metadata = metadata
        protocol, _ = get_protocol_and_path(self._path)
        self._fs = fsspec.filesystem(protocol)

    def part(self, which: str) -> str:
        relative = {"images": self._images, "instances": self._instances, "captions": self._captions}[which]
        return str(PurePosixPath(self._path) / relative)

    def image_files(self) -> dict[str, SourceImage]:
        """File stem -> ``SourceImage`` of every entry of the images folder whose name ends with the image suffix
        (a directory or a broken link with such a name included: it is refused, named, when read)."""
        folder = self.part("images")
        suffix = self._image_suffix
        local = get_protocol_and_path(self._path)[0] == "file"
        files = {}
        for entry in sorted(self._fs.ls(folder, detail=False)):
            name = PurePosixPath(str(entry)).name
            if name.endswith(suffix):
                stem = name[: len(name) - len(suffix)] if suffix else name
                files[stem] = SourceImage(str(entry), None if local else self._fs)
        return files

    #: how `missing_message` names the source (``{path}``: its root folder)
    what = "The COCO-format dataset at '{path}'"

    def missing_images(self) -> list[str]:
        """The images folder, when it is not there or holds no image."""
        images = self.part("images")
        if not self._fs.isdir(images):
            return [f"{images}/ (the images folder)"]
        if not self._fs.glob(f"{images}/*{self._image_suffix}"):
            return [f"{images}/*{self._image_suffix} (the folder has no image)"]
        return []

    def missing(self) -> list[str]:
        """The expected paths that are not there (empty when the dataset is complete)."""
        problems = self.missing_images()
        for which in ("instances", "captions"):
            if which == "captions" and self._captions is None:
                continue
            if not self._fs.isfile(self.part(which)):
                problems.append(f"{self.part(which)} (the {which} annotation file)")
        return problems

    def missing_message(self, problems: list[str]) -> str:
        hint = f" {self._missing_hint}" if self._missing_hint else ""
        return f"{self.what.format(path=self._path)} is incomplete; missing: {'; '.join(problems)}.{hint}"

    def load(self) -> CocoFolder:
        return CocoFolder(self)

    def save(self, data: Any) -> None:
        raise DatasetError(f"'{self._path}' is a read-only source dataset (a COCO-format folder you supply)")

    def _exists(self) -> bool:
        return not self.missing()

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path, "images": self._images, "instances": self._instances,
                "captions": self._captions}


# --- sources built on a COCO-format folder ------------------------------------------------------------------------
class RepopeSource(CocoFolder):
    """What ``RepopeSourceDataset.load`` returns: the COCO folder's parts plus the question records, each read
    (and validated) on first use."""

    def records(self) -> list[dict]:
        """The question records: a POPE/RePOPE list, or the reference's own RePOPE list (its FP or TN file,
        ``datasets/<model>-RePOPE-FP.json``), whose generated answers are then teacher-forced as listed."""
        path = self._dataset._questions
        return self._read("questions", lambda: _pope_records(Path(path).read_text(), path))


def _pope_records(text: str, path: str) -> list[dict]:
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

    what = "The RePOPE source"

    def load(self) -> RepopeSource:
        return RepopeSource(self)

    def save(self, data: Any) -> None:
        raise DatasetError("the RePOPE source is read-only (a question list and COCO images you supply)")

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._questions, **super()._describe()}


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

    what = "The MMVP copy at '{path}'"

    def missing(self) -> list[str]:
        """The expected paths that are not there (empty when complete)."""
        problems = [] if self._fs.isfile(self.questions_path) else [f"{self.questions_path} (the question list)"]
        return problems + self.missing_images()

    def load(self) -> MmvpSource:
        return MmvpSource(self)

    def save(self, data: Any) -> None:
        raise DatasetError("the MMVP copy is read-only (a question list and images you supply)")

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path, "questions": self._questions, "images": self._images}
