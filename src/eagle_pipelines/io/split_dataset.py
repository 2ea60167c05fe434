"""An evaluation split in COCO layout (``images/``, ``annotations/instances.json``, ``annotations/captions.json``)
as one catalog dataset.

Saving writes the whole split into a temporary folder beside the target and swaps it in, and writes nothing at
all when the content is what is already there: a rerun never deletes images another reader is using, and an
unchanged split keeps its files (and their provenance). Loading returns a ``CocoSplit``: the COCO index and
each image's pixels *with the hash of its bytes*, so every result made from an image is keyed by what the image
is, not by its id.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from kedro.io.core import AbstractDataset, DatasetError
from PIL import Image

from eagle_pipelines.data.coco import CocoFormatError, CocoIndex

CONTENT_FILE = "split.json"


@dataclass
class LoadedImage:
    pixels: np.ndarray  # (H, W, 3) uint8 RGB
    sha: str  # sha256 (first 16 hex digits) of the file's bytes


class CocoSplit:
    """A COCO-format split on disk: ``index`` (pycocotools, built once) and ``image(image_id)``."""

    def __init__(self, root: Path, instances: dict, captions: dict | None, image_suffix: str = ".png"):
        self.root = Path(root)
        self.instances = instances
        self.captions = captions
        self.image_suffix = image_suffix
        self._index: CocoIndex | None = None

    @property
    def index(self) -> CocoIndex:
        if self._index is None:
            self._index = CocoIndex(self.instances, self.captions, source=f"{self.root}/annotations")
        return self._index

    def image_file(self, image_id: int) -> Path:
        file_name = self.index.image_info(image_id)["file_name"]
        return self.root / "images" / PurePosixPath(file_name).name

    def image(self, image_id: int) -> LoadedImage:
        """The image's pixels and the hash of the bytes they were decoded from (read once, so both agree).
        An unreadable image is a ``CocoFormatError`` naming it."""
        file = self.image_file(image_id)
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise CocoFormatError(f"image {image_id} ('{file.name}') cannot be read: {exc.strerror or exc}") from None
        sha = hashlib.sha256(data).hexdigest()[:16]
        from eagle_pipelines.core.images import check_size, read_image

        try:  # the rules eagle-explain and explain() apply: 16-bit scaled, bombs and empty or tiny images refused
            pixels = read_image(file, data=data)
            check_size(pixels)
        except ValueError as exc:
            raise CocoFormatError(f"image {image_id}: {exc}") from None
        return LoadedImage(pixels, sha)

    def pixels(self, image_id: int, sha: str) -> np.ndarray:
        """The image's pixels, refusing an image whose bytes changed since its answer was made (`sha`)."""
        loaded = self.image(image_id)
        if loaded.sha != sha:
            raise CocoFormatError(f"image {image_id} changed since it was answered (bytes {loaded.sha}, answered "
                                  f"{sha}); rerun from the answers")
        return loaded.pixels


def _encode(image) -> bytes:
    if callable(image):  # a lazy loader (a PartitionedDataset's)
        image = image()
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


class CocoSplitDataset(AbstractDataset[tuple, CocoSplit]):
    """One COCO-format split folder. ``save((images, instances, captions))`` with images keyed by file stem (PIL
    images or uint8 arrays, written as PNG); ``load()`` returns a ``CocoSplit``.

    Args:
        path: the split's folder (``data/01_raw/shapes/eval``).
    """

    def __init__(self, path: str, metadata: dict | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> CocoSplit:
        ann = self._path / "annotations"
        if not (ann / "instances.json").is_file():
            raise DatasetError(f"no split at '{self._path}' (no annotations/instances.json): its producer has "
                               f"not run")
        try:
            instances = json.loads((ann / "instances.json").read_text())
            captions = json.loads((ann / "captions.json").read_text()) if (ann / "captions.json").is_file() else None
        except ValueError as exc:
            raise DatasetError(f"'{ann}': an annotation file is damaged ({exc})") from None
        return CocoSplit(self._path, instances, captions)

    def save(self, data) -> None:
        images, instances, captions = data
        files = {f"images/{stem}.png": _encode(image) for stem, image in sorted(images.items())}
        files["annotations/instances.json"] = json.dumps(instances, sort_keys=True).encode()
        if captions is not None:
            files["annotations/captions.json"] = json.dumps(captions, sort_keys=True).encode()
        digest = hashlib.sha256()
        for name, content in sorted(files.items()):
            digest.update(name.encode() + b"\0" + hashlib.sha256(content).digest())
        content = {"sha256": digest.hexdigest(), "files": len(files)}
        if self._current_content() == content:
            return  # the same split is already there: keep its files
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self._path.parent, prefix=f".{self._path.name}.new-"))
        try:
            for name, blob in files.items():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp / name).write_bytes(blob)
            (tmp / CONTENT_FILE).write_text(json.dumps(content))
            os.chmod(tmp, 0o755)
            old = None
            if self._path.exists():
                old = self._path.parent / f".{self._path.name}.old-{os.getpid()}"
                os.replace(self._path, old)
            os.replace(tmp, self._path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _current_content(self) -> dict | None:
        """The content hash of the split as it is on disk (every file read, so a damaged or replaced image is
        seen), or None when there is none."""
        if not (self._path / CONTENT_FILE).is_file():
            return None
        digest = hashlib.sha256()
        files = sorted(p for p in self._path.rglob("*") if p.is_file() and p.name != CONTENT_FILE)
        for file in files:
            name = file.relative_to(self._path).as_posix()
            digest.update(name.encode() + b"\0" + hashlib.sha256(file.read_bytes()).digest())
        return {"sha256": digest.hexdigest(), "files": len(files)}

    def stamp(self) -> Any:
        try:
            return json.loads((self._path / CONTENT_FILE).read_text())
        except (OSError, ValueError):
            return "absent"

    def _exists(self) -> bool:
        return (self._path / "annotations" / "instances.json").is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
