"""A split of clips (a folder of frames per clip, YouTube-VIS annotations) as one catalog dataset.

Saving is ``CocoSplitDataset``'s (the whole split swapped in at once, nothing written when the content is already
there): ``save((frames, annotations))`` with frames keyed ``<clip>/frame_00`` and the annotation dict of
``data.clips.generate_clip_split``, written as ``images/<clip>/frame_00.png`` and ``annotations/instances.json``.
Loading returns a ``ClipSplit``: the clip records and each clip's frames *with the hash of their bytes*, so every
result made from a clip is keyed by what the clip is.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from kedro.io.core import DatasetError

from eagle_pipelines.core.images import check_size, read_image
from eagle_pipelines.data.clips import ClipFormatError, ClipRecord, clip_records
from eagle_pipelines.io.split_dataset import CocoSplitDataset, answered_version


@dataclass
class LoadedClip:
    frames: np.ndarray  # (N, H, W, 3) uint8 RGB
    sha: str  # sha256 (first 16 hex digits) over the frames' file bytes, in frame order


class ClipSplit:
    """Clips on disk: ``records`` (id order), ``record(name)`` and ``clip(name)`` (frames + hash)."""

    def __init__(self, root: Path, annotations: dict):
        self.root = Path(root)
        self.annotations = annotations
        self.records = clip_records(annotations, source=f"{self.root}/annotations/instances.json")
        self._by_name = {r.name: r for r in self.records}

    def record(self, name: str) -> ClipRecord:
        if name not in self._by_name:
            raise KeyError(f"no clip {name!r} in {self.root}")
        return self._by_name[name]

    def folder(self, name: str) -> Path:
        """The clip's folder of frames (``images/<clip>``)."""
        return self.root / "images" / name

    def clip(self, name: str) -> LoadedClip:
        """The clip's frames and the hash of their bytes (read once, so both agree). An unreadable or missing
        frame is a ``ClipFormatError`` naming the clip and the frame."""
        digest, frames = hashlib.sha256(), []
        for file_name in self.record(name).file_names:
            file = self.root / "images" / file_name
            try:
                data = file.read_bytes()
                frames.append(read_image(file, data=data))
                check_size(frames[-1])
            except (OSError, ValueError) as exc:
                raise ClipFormatError(f"clip {name}: frame '{file_name}' cannot be read ({exc})") from None
            digest.update(hashlib.sha256(data).digest())
        if len({f.shape for f in frames}) != 1:
            raise ClipFormatError(f"clip {name}: its frames differ in size ({sorted({f.shape for f in frames})})")
        return LoadedClip(np.stack(frames), digest.hexdigest()[:16])

    def frames(self, name: str, sha: str) -> np.ndarray:
        """The clip's frames, refusing a clip whose bytes changed since its answer was made (`sha`)."""
        return answered_version(self.clip(name), sha, f"clip {name}", "frames", ClipFormatError).frames


class ClipSplitDataset(CocoSplitDataset):
    """A folder of clips: ``save((frames, annotations))``, ``load()`` -> ``ClipSplit``.

    Args:
        path: the split's folder (``data/01_raw/eagle_video/eval``).
    """

    def load(self) -> ClipSplit:
        file = self._path / "annotations" / "instances.json"
        if not file.is_file():
            raise DatasetError(f"no clip split at '{self._path}' (no annotations/instances.json): its producer has "
                               f"not run")
        try:
            return ClipSplit(self._path, json.loads(file.read_text()))
        except (ValueError, ClipFormatError) as exc:
            raise DatasetError(f"'{file}': {exc}") from None

    def save(self, data) -> None:
        frames, annotations = data
        super().save((frames, annotations, None))
