"""A read-only catalog dataset for a COCO-format folder that is read only when used (COCO val2017).

Loading returns a ``CocoFolder`` handle and reads nothing: the annotation files are parsed on the first call of
``instances()`` / ``captions()`` and the images are listed on the first call of ``images()``. So a pipeline can
name the dataset while it is absent (the embedded default never reads it); the run checks
(``eagle_pipelines.hooks.InputCheckHook``) stop a run that needs it before any node, naming what is missing.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import fsspec
from kedro.io.core import AbstractDataset, DatasetError, get_protocol_and_path
from kedro_datasets.json import JSONDataset

from eagle_pipelines.core.images import SourceImage


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

    def missing(self) -> list[str]:
        """The expected paths that are not there (empty when the dataset is complete)."""
        problems = []
        images = self.part("images")
        if not self._fs.isdir(images):
            problems.append(f"{images}/ (the images folder)")
        elif not self._fs.glob(f"{images}/*{self._image_suffix}"):
            problems.append(f"{images}/*{self._image_suffix} (the folder has no image)")
        for which in ("instances", "captions"):
            if which == "captions" and self._captions is None:
                continue
            if not self._fs.isfile(self.part(which)):
                problems.append(f"{self.part(which)} (the {which} annotation file)")
        return problems

    def missing_message(self, problems: list[str]) -> str:
        hint = f" {self._missing_hint}" if self._missing_hint else ""
        return f"The COCO-format dataset at '{self._path}' is incomplete; missing: {'; '.join(problems)}.{hint}"

    def load(self) -> CocoFolder:
        return CocoFolder(self)

    def save(self, data: Any) -> None:
        raise DatasetError(f"'{self._path}' is a read-only source dataset (a COCO-format folder you supply)")

    def _exists(self) -> bool:
        return not self.missing()

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path, "images": self._images, "instances": self._instances,
                "captions": self._captions}
