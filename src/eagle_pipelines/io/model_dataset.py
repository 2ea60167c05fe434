"""A catalog dataset for vision-language models saved with ``save_pretrained``.

The embedded toy model and real checkpoints (a local folder, or a Hugging Face cache entry) load through this one
type with ``local_files_only=True``: nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io.core import AbstractDataset, DatasetError

from eagle_pipelines.models.qwen_vl import QwenVLAdapter

FAMILIES = {"qwen_vl": QwenVLAdapter}


class VisionLanguageModelDataset(AbstractDataset[Any, Any]):
    """Loads a model adapter (``VisionLanguageModel``) from `path`; saves one there with ``save_pretrained``.

    Args:
        path: a local checkpoint folder, or a Hub id (``Qwen/Qwen2.5-VL-3B-Instruct``) already in the local
            Hugging Face cache.
        family: the adapter family (``qwen_vl``).
        dtype: ``float32``, ``bfloat16`` or ``float16``.
        device: ``cpu``, ``cuda``, ``cuda:1``...
        device_map: passed to ``from_pretrained`` when set (e.g. ``auto``).
        missing_hint: what to tell the user when the checkpoint is not there.
    """

    def __init__(self, path: str, family: str = "qwen_vl", dtype: str = "float32", device: str = "cpu",
                 device_map: str | None = None, missing_hint: str | None = None, metadata: dict | None = None):
        if family not in FAMILIES:
            raise DatasetError(f"Unknown model family {family!r} for {path}; known: {sorted(FAMILIES)}")
        self._path = path
        self._family = family
        self._dtype = dtype
        self._device = device
        self._device_map = device_map
        self._missing_hint = missing_hint
        self.metadata = metadata

    def _resolve(self) -> Path:
        local = Path(self._path)
        if local.is_dir():
            return local
        if "/" in self._path and not local.is_absolute():  # a Hub id: look in the local cache only
            try:
                from huggingface_hub import snapshot_download

                return Path(snapshot_download(self._path, local_files_only=True))
            except Exception:  # noqa: BLE001 - reported below with the fix
                pass
        hint = self._missing_hint or "see docs/models.md for how to obtain it"
        raise DatasetError(f"No model checkpoint at '{self._path}' (looked for a local folder and the local "
                           f"Hugging Face cache; nothing is downloaded). {hint}")

    def load(self) -> QwenVLAdapter:
        path = self._resolve()
        if not (path / "config.json").exists():
            raise DatasetError(f"'{path}' is not a model folder (no config.json). "
                               f"{self._missing_hint or ''}".strip())
        return FAMILIES[self._family].from_pretrained(path, dtype=self._dtype, device=self._device,
                                                      device_map=self._device_map, name=Path(self._path).name)

    def save(self, data: QwenVLAdapter) -> None:
        data.save(self._path)

    def _exists(self) -> bool:
        try:
            return (self._resolve() / "config.json").exists()
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path, "family": self._family, "dtype": self._dtype, "device": self._device}
