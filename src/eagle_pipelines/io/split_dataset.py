"""An evaluation split in COCO layout (``images/``, ``annotations/instances.json``, ``annotations/captions.json``)
as one catalog dataset.

Saving writes the whole split into a temporary folder beside the target and swaps it in, and writes nothing at
all when the content is what is already there: a rerun never deletes images another reader is using, and an
unchanged split keeps its files (and their provenance). Saving never decodes an image: an image of a dataset you
supply (``core.images.SourceImage``) is copied byte for byte under its own file name, a generated one (an array or
a PIL image) is written as PNG; a source file that cannot even be read (a directory, a broken link, no
permission) is recorded with its reason in ``split.json`` and named when its item is reached. ``split.json`` also
holds the SHA-256 of every file (content stamps): a split whose bytes changed since it was saved (an edited or
truncated image) does not exist for Kedro, so ``--only-missing-outputs`` remakes it.

The split may also live on any fsspec filesystem (``path: s3://bucket/01_raw/...`` with ``credentials: s3``;
io/storage.py), so that Ray workers that share no folder with the driver fetch the one image each item needs
(docs/scale.md). There, saving removes ``split.json`` first, writes every file in one PUT each, removes the files
the new split no longer has and writes ``split.json`` last: a split cut off midway has no ``split.json`` and is
remade; its content stamps are checked as locally.

Loading returns a ``CocoSplit``: the COCO index and each image's pixels *with the hash of its bytes*, so every
result made from an image is keyed by what the image is, not by its id. Pixels come from ``core.images``
(``read_image``, the decoder of every path); an image that cannot be decoded is a ``CocoFormatError`` naming it,
which the answer stage records as skipped while the rest of the run finishes.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from kedro.io.core import AbstractDataset, DatasetError
from PIL import Image

from eagle_pipelines.core.images import SourceImage, check_size, read_image
from eagle_pipelines.data.coco import CocoFormatError, CocoIndex, split_file_name
from eagle_pipelines.io import storage

logger = logging.getLogger(__name__)

CONTENT_FILE = "split.json"



def answered_version(loaded, sha: str, name: str, what: str, error: type[Exception]):
    """`loaded` (an image or clip with its ``sha``), refused with `error` when its bytes changed since its answer
    was made (`sha`): the answer would not be the one of these pixels."""
    if loaded.sha != sha:
        raise error(f"{name} changed since it was answered ({what} {loaded.sha}, answered {sha}); rerun from the "
                    f"answers")
    return loaded


@dataclass
class LoadedImage:
    pixels: np.ndarray  # (H, W, 3) uint8 RGB
    sha: str  # sha256 (first 16 hex digits) of the file's bytes


class CocoSplit:
    """A COCO-format split on disk: ``index`` (pycocotools, built once) and ``image(image_id)``."""

    def __init__(self, root: Path | str, instances: dict, captions: dict | None, image_suffix: str = ".png",
                 unreadable: dict[str, str] | None = None, storage_options: dict | None = None):
        #: an object store (``s3://...``): images read with one GET each, through fsspec (io/storage.py)
        self.remote = storage.Remote(str(root), storage_options) if storage.is_remote(root) else None
        self.root = self.remote.url if self.remote else Path(root)
        self.instances = instances
        self.captions = captions
        self.image_suffix = image_suffix
        self.unreadable = unreadable or {}  # file name -> why its source could not be read when the split was saved
        self._index: CocoIndex | None = None

    @property
    def index(self) -> CocoIndex:
        if self._index is None:
            self._index = CocoIndex(self.instances, self.captions, source=f"{self.root}/annotations")
        return self._index

    def image_file(self, image_id: int) -> Path | str:
        """The image's file (a local path, or the URL of its object)."""
        name = PurePosixPath(self.index.image_info(image_id)["file_name"]).name
        return f"{self.root}/images/{name}" if self.remote else self.root / "images" / name

    def _image_bytes(self, image_id: int) -> tuple[str, bytes]:
        file = self.image_file(image_id)
        name = PurePosixPath(str(file)).name
        if name in self.unreadable:
            raise CocoFormatError(f"image {image_id} ('{name}'): {self.unreadable[name]}")
        if self.remote:
            try:
                return name, self.remote.read(f"images/{name}")  # a StorageError when the store cannot be reached
            except FileNotFoundError:
                raise CocoFormatError(f"image {image_id} ('{file}') cannot be read: it does not exist") from None
        try:
            return name, file.read_bytes()
        except OSError as exc:
            raise CocoFormatError(f"image {image_id} ('{name}') cannot be read: {exc.strerror or exc}") from None

    def image(self, image_id: int) -> LoadedImage:
        """The image's pixels and the hash of the bytes they were decoded from (read once, so both agree).
        An unreadable image is a ``CocoFormatError`` naming it."""
        name, data = self._image_bytes(image_id)
        file = self.image_file(image_id) if not self.remote else Path(name)
        sha = hashlib.sha256(data).hexdigest()[:16]

        try:  # the rules eagle-explain and explain() apply: 16-bit scaled, EXIF orientation, bombs and non-finite,
            pixels = read_image(file, data=data)  # empty or tiny images refused
        except ValueError as exc:
            raise CocoFormatError(f"image {image_id}: {exc}") from None
        try:
            check_size(pixels)
        except ValueError as exc:
            raise CocoFormatError(f"image {image_id} ('{name}'): {exc}") from None
        info = self.index.image_info(image_id)
        width, height = info.get("width"), info.get("height")
        if width and height and (int(width), int(height)) != (pixels.shape[1], pixels.shape[0]):
            raise CocoFormatError(f"image {image_id} ('{name}') is {pixels.shape[1]}x{pixels.shape[0]} pixels "
                                  f"(EXIF orientation applied), its annotation says {width}x{height}: its objects "
                                  f"would not lie where the annotation puts them; fix the width and height (and "
                                  f"the objects) in the instances file, or the image")
        return LoadedImage(pixels, sha)

    def pixels(self, image_id: int, sha: str) -> np.ndarray:
        """The image's pixels, refusing an image whose bytes changed since its answer was made (`sha`)."""
        return answered_version(self.image(image_id), sha, f"image {image_id}", "bytes", CocoFormatError).pixels


def _encode(image) -> bytes:
    """A generated image (an array or a PIL image, or a loader of one) as PNG bytes."""
    if callable(image):  # a lazy loader (a PartitionedDataset's)
        image = image()
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _file_stamps(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(blob).hexdigest() for name, blob in sorted(files.items())}


def _content(stamps: dict[str, str], unreadable: dict[str, str]) -> dict:
    """What ``split.json`` holds: the hash over every file's name and bytes, their count, each file's SHA-256 and
    the source files that could not be read (with why)."""
    digest = hashlib.sha256()
    for name, sha in sorted(stamps.items()):
        digest.update(name.encode("utf-8", "surrogateescape") + b"\0" + bytes.fromhex(sha))
    content = {"sha256": digest.hexdigest(), "files": len(stamps), "file_sha256": stamps}
    if unreadable:
        content["unreadable"] = dict(sorted(unreadable.items()))
    return content


class CocoSplitDataset(AbstractDataset[tuple, CocoSplit]):
    """One COCO-format split folder. ``save((images, instances, captions))`` with images keyed by file stem
    (``SourceImage`` files, copied as they are under their own name; PIL images or uint8 arrays, written as
    ``<stem>.png``: ``split_file_name``); ``load()`` returns a ``CocoSplit``.

    Args:
        path: the split's folder (``data/01_raw/shapes/eval``), or an fsspec URL (``s3://bucket/01_raw/...``).
        credentials: fsspec storage options of a remote path (``credentials: s3``: key, secret, endpoint_url).
        fs_args: further storage options.
    """

    def __init__(self, path: str, credentials: dict | None = None, fs_args: dict | None = None,
                 metadata: dict | None = None):
        self._options = storage.options_of(credentials, fs_args)
        #: an object store: every file one PUT, split.json last (module docstring)
        self._remote, self._path = storage.located(path, self._options)
        self.metadata = metadata

    # -- an object store's split ---------------------------------------------------------------------------------
    def _get(self, relative: str) -> bytes | None:
        """A remote split's file, or None when it is not there (a StorageError when the store fails)."""
        try:
            return self._remote.read(relative)
        except FileNotFoundError:
            return None

    def _remote_names(self) -> list[str]:
        """Every file of the remote split (relative names)."""
        try:
            fs = self._remote.fs
            root = fs._strip_protocol(self._remote.url).rstrip("/")
            fs.invalidate_cache()
            found = fs.find(root)
        except Exception as exc:  # noqa: BLE001 - connection, credentials: named with the endpoint
            raise self._remote._fail(f"list '{self._path}'", exc) from None
        return sorted(f[len(root) + 1:] for f in found if f.startswith(root + "/"))

    def _load_remote(self) -> CocoSplit:
        instances, captions = self._get("annotations/instances.json"), self._get("annotations/captions.json")
        if instances is None:
            raise DatasetError(f"no split at '{self._path}' (no annotations/instances.json): its producer has "
                               f"not run")
        try:
            instances = json.loads(instances)
            captions = json.loads(captions) if captions is not None else None
        except ValueError as exc:
            raise DatasetError(f"'{self._path}/annotations': an annotation file is damaged ({exc})") from None
        return CocoSplit(self._path, instances, captions, unreadable=self._recorded().get("unreadable", {}),
                         storage_options=self._options)

    def _save_remote(self, files: dict[str, bytes], content: dict) -> None:
        """split.json removed first, every file one PUT, stale files removed, split.json last."""
        self._remote.remove(CONTENT_FILE)
        for name, blob in files.items():
            self._remote.write(name, blob)
        for name in set(self._remote_names()) - set(files) - {CONTENT_FILE}:
            self._remote.remove(name)
        self._remote.write(CONTENT_FILE, json.dumps(content).encode())

    def load(self) -> CocoSplit:
        if self._remote:
            return self._load_remote()
        ann = self._path / "annotations"
        if not (ann / "instances.json").is_file():
            raise DatasetError(f"no split at '{self._path}' (no annotations/instances.json): its producer has "
                               f"not run")
        try:
            instances = json.loads((ann / "instances.json").read_text())
            captions = json.loads((ann / "captions.json").read_text()) if (ann / "captions.json").is_file() else None
        except ValueError as exc:
            raise DatasetError(f"'{ann}': an annotation file is damaged ({exc})") from None
        return CocoSplit(self._path, instances, captions, unreadable=self._recorded().get("unreadable", {}))

    def _files(self, images: dict) -> tuple[dict[str, bytes], dict[str, str]]:
        """The split's image files (``images/<name>`` -> bytes), never decoding a source file, and the source
        files that cannot be read (name -> why)."""
        files, unreadable = {}, {}
        for stem, image in sorted(images.items()):
            name = split_file_name(stem, image)
            if isinstance(image, SourceImage):
                try:
                    files[f"images/{name}"] = image.read_bytes()
                except ValueError as exc:
                    logger.warning("%s: %s (its item is skipped)", self._path, exc)
                    unreadable[name] = str(exc)
            else:
                files[f"images/{name}"] = _encode(image)
        return files, unreadable

    def save(self, data) -> None:
        images, instances, captions = data
        files, unreadable = self._files(images)
        files["annotations/instances.json"] = json.dumps(instances, sort_keys=True).encode()
        if captions is not None:
            files["annotations/captions.json"] = json.dumps(captions, sort_keys=True).encode()
        content = _content(_file_stamps(files), unreadable)
        if self._recorded() == content and self._current_content() == content:
            return  # the same split is already there: keep its files
        if self._remote:
            self._save_remote(files, content)
            return
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

    def _recorded(self) -> dict:
        """``split.json`` as saved ({} when absent or damaged)."""
        try:
            if self._remote:
                text = self._get(CONTENT_FILE)
                if text is None:
                    return {}
                recorded = json.loads(text)
            else:
                recorded = json.loads((self._path / CONTENT_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return recorded if isinstance(recorded, dict) else {}

    def _current_content(self) -> dict | None:
        """``split.json``'s content for the split as it is on disk (every file read, so a damaged or replaced
        image is seen), or None when there is no split.json."""
        recorded = self._recorded()
        if not recorded:
            return None
        stamps = {}
        if self._remote:
            for name in self._remote_names():
                if name != CONTENT_FILE:
                    blob = self._get(name)
                    stamps[name] = hashlib.sha256(blob).hexdigest() if blob is not None else "unreadable"
            return _content(stamps, recorded.get("unreadable", {}))
        for file in sorted(p for p in self._path.rglob("*") if p.is_file() and p.name != CONTENT_FILE):
            try:
                stamps[file.relative_to(self._path).as_posix()] = hashlib.sha256(file.read_bytes()).hexdigest()
            except OSError:
                stamps[file.relative_to(self._path).as_posix()] = "unreadable"
        return _content(stamps, recorded.get("unreadable", {}))

    def changed_files(self) -> list[str]:
        """The files whose bytes differ from their content stamps in ``split.json`` (added, removed or changed
        since the split was saved); every file when there is no split.json."""
        recorded, current = self._recorded(), self._current_content()
        if current is None:
            return ["split.json"]
        if "file_sha256" not in recorded:  # a split saved before per-file stamps: its overall hash decides
            return [] if recorded.get("sha256") == current["sha256"] else ["(a file)"]
        old, new = recorded["file_sha256"], current["file_sha256"]
        return sorted(name for name in old.keys() | new.keys() if old.get(name) != new.get(name))

    def stamp(self) -> Any:
        return self._recorded() or "absent"

    def _exists(self) -> bool:
        """True when the split is there with the bytes it was saved with: an image edited, truncated, added or
        removed since makes it missing (``--only-missing-outputs`` remakes it)."""
        if self._remote:
            if not self._remote.exists("annotations/instances.json"):
                return False
        elif not (self._path / "annotations" / "instances.json").is_file():
            return False
        changed = self.changed_files()
        if changed:
            logger.warning("%s: %s changed since the split was saved (content stamps in %s); it counts as missing "
                           "and is remade", self._path, ", ".join(changed[:5]) + (" ..." if len(changed) > 5 else ""),
                           CONTENT_FILE)
        return not changed

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
