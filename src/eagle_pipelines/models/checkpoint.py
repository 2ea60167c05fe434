"""Loading a model checkpoint folder (``save_pretrained``), without Kedro.

``ModelCheckpoint`` is what ``load_model`` (the core API) loads with; the catalog's ``VisionLanguageModelDataset``
(``io/model_dataset.py``) is the same loader as a Kedro dataset. Nothing is ever downloaded: a local folder, or a
Hugging Face cache entry with ``local_files_only=True``. A loaded adapter carries its load spec (``ModelSpec``), so
that an executor can ship it to other processes by reference (``io/model_dataset.py: model_reference``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eagle_pipelines.errors import UserError
from eagle_pipelines.models.registry import family_class, family_for_checkpoint

logger = logging.getLogger(__name__)
#: the attribute of a loaded adapter that holds its ``ModelSpec``
SPEC_ATTRIBUTE = "_eagle_model_spec"


class CheckpointError(UserError, ValueError):
    """A model folder that is not there, not a model, or a family that does not fit it; the message says which."""


@dataclass(frozen=True)
class ModelSpec:
    """How to load a model again in another process: the dataset's arguments (``path`` absolute) and the
    checkpoint's fingerprint, which the reloaded model must have."""

    path: str | None
    hub_id: str | None
    family: str
    dtype: str
    device: str
    device_map: str | None
    options: tuple[tuple[str, Any], ...]
    fingerprint: str
    name: str


class ModelCheckpoint:
    """Loads a model adapter (``VisionLanguageModel``) from `path`, without Kedro (``load_model`` and the
    catalog's ``VisionLanguageModelDataset`` both load through it). A folder that is not there or not a model is
    ``self.error``: ``CheckpointError`` here, Kedro's ``DatasetError`` in the dataset.

    Args:
        path: a local checkpoint folder (where ``save`` writes).
        hub_id: instead of `path`, a Hub id (``Qwen/Qwen2.5-VL-3B-Instruct``) already in the local Hugging Face
            cache (``HF_HUB_CACHE``).
        family: the adapter family (``qwen_vl``, ``llava``, ``internvl``; docs/models.md), or ``auto``: the family
            whose model types include the checkpoint's ``config.json`` ``model_type``.
        dtype: ``float32``, ``bfloat16``, ``float16`` or ``auto`` (bfloat16/float16 on CUDA, float32 on the CPU).
        device: ``cpu``, ``cuda``, ``cuda:1``...
        device_map: passed to ``from_pretrained`` when set (e.g. ``auto``).
        missing_hint: what to tell the user when the checkpoint is not there.
        options: family-specific adapter options (InternVL: ``max_tiles``; docs/models.md).
    """

    #: the error of a missing or unusable checkpoint
    error: type[Exception] = ValueError  # CheckpointError, set below

    def __init__(self, path: str | None = None, hub_id: str | None = None, family: str = "qwen_vl",
                 dtype: str = "float32", device: str = "cpu", device_map: str | None = None,
                 missing_hint: str | None = None, options: dict | None = None, metadata: dict | None = None):
        if (path is None) == (hub_id is None):
            raise self.error("give a model either a local `path` or a `hub_id` (one of them)")
        if family != "auto":
            try:
                family_class(family)
            except ValueError as exc:
                raise self.error(f"{path or hub_id}: {exc}") from None
        self._path = path
        self._hub_id = hub_id
        self._family = family
        self._dtype = dtype
        self._device = device
        self._device_map = device_map
        self._missing_hint = missing_hint
        self._options = dict(options or {})
        self.metadata = metadata
        self._loaded = None

    @property
    def _name(self) -> str:
        return self._path or self._hub_id

    def _resolve(self) -> Path:
        hint = self._missing_hint or "See docs/models.md for how to obtain it."
        if self._path is not None:
            if Path(self._path).is_dir():
                return Path(self._path)
            raise self.error(f"No model checkpoint at '{self._path}' (nothing is downloaded). {hint}")
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(self._hub_id, local_files_only=True))
        except Exception as exc:  # noqa: BLE001 - reported with the fix
            raise self.error(f"'{self._hub_id}' is not in the local Hugging Face cache ({type(exc).__name__}; "
                               f"nothing is downloaded). {hint}") from None

    def load(self):
        """The model adapter, loaded once per dataset (so once per run) and shared by every node that reads it."""
        if self._loaded is None:
            self._loaded = self._load_model()
        return self._loaded

    def _release(self) -> None:
        self._loaded = None

    def stamp(self) -> str:
        """Provenance: the checkpoint's content fingerprint (config and weight files), without loading it."""
        from eagle_pipelines.models.adapter import checkpoint_fingerprint

        try:
            return checkpoint_fingerprint(self._resolve())
        except self.error:
            return f"absent:{self._name}"

    def _load_model(self):  # not `_load`: Kedro would make that the dataset's `load` and bypass the cache
        path = self._resolve()
        if not (path / "config.json").exists():
            raise self.error(f"'{path}' is not a model folder (no config.json). "
                               f"{self._missing_hint or ''}".strip())
        try:
            adapter = family_for_checkpoint(path, self._family)
        except ValueError as exc:
            raise self.error(f"{exc} (catalog entry: family={self._family!r})") from None
        model = adapter.from_pretrained(path, dtype=self._dtype, device=self._device, device_map=self._device_map,
                                        name=Path(self._name).name, **self._options)
        try:
            setattr(model, SPEC_ATTRIBUTE, self.spec(getattr(model, "fingerprint", "")))
        except AttributeError:  # an adapter with __slots__: it is shipped whole instead of by reference
            pass
        return model

    def spec(self, fingerprint: str) -> ModelSpec:
        """This entry's load spec (``path`` made absolute, so a worker with another working folder finds it)."""
        path = None if self._path is None else str(Path(self._path).resolve())
        return ModelSpec(path=path, hub_id=self._hub_id, family=self._family, dtype=self._dtype, device=self._device,
                         device_map=self._device_map, options=tuple(sorted(self._options.items())),
                         fingerprint=fingerprint, name=Path(self._name).name)


ModelCheckpoint.error = CheckpointError
