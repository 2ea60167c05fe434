"""A catalog dataset for vision-language models saved with ``save_pretrained``.

The embedded toy model and real checkpoints (a local folder, or a Hugging Face cache entry) load through this one
type with ``local_files_only=True``: nothing is ever downloaded.

A loaded adapter carries its load spec (``ModelSpec``: where the checkpoint is, family, dtype, device, and the
checkpoint's fingerprint). An executor that ships jobs to other processes (``io/executors.py``, Ray) pickles the
adapter as that small spec (``model_reference``), and each worker process loads the model from it once
(``model_from_spec``, memoized per process), refusing a checkpoint whose content differs from the driver's.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedro.io.core import AbstractDataset, DatasetError

from eagle_pipelines.models.registry import family_class, family_for_checkpoint

logger = logging.getLogger(__name__)
#: the attribute of a loaded adapter that holds its ``ModelSpec``
SPEC_ATTRIBUTE = "_eagle_model_spec"


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


class VisionLanguageModelDataset(AbstractDataset[Any, Any]):
    """Loads a model adapter (``VisionLanguageModel``) from `path`; saves one there with ``save_pretrained``.

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

    def __init__(self, path: str | None = None, hub_id: str | None = None, family: str = "qwen_vl",
                 dtype: str = "float32", device: str = "cpu", device_map: str | None = None,
                 missing_hint: str | None = None, options: dict | None = None, metadata: dict | None = None):
        if (path is None) == (hub_id is None):
            raise DatasetError("give a model either a local `path` or a `hub_id` (one of them)")
        if family != "auto":
            try:
                family_class(family)
            except ValueError as exc:
                raise DatasetError(f"{path or hub_id}: {exc}") from None
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
            raise DatasetError(f"No model checkpoint at '{self._path}' (nothing is downloaded). {hint}")
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(self._hub_id, local_files_only=True))
        except Exception as exc:  # noqa: BLE001 - reported with the fix
            raise DatasetError(f"'{self._hub_id}' is not in the local Hugging Face cache ({type(exc).__name__}; "
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
        except DatasetError:
            return f"absent:{self._name}"

    def _load_model(self):  # not `_load`: Kedro would make that the dataset's `load` and bypass the cache
        path = self._resolve()
        if not (path / "config.json").exists():
            raise DatasetError(f"'{path}' is not a model folder (no config.json). "
                               f"{self._missing_hint or ''}".strip())
        try:
            adapter = family_for_checkpoint(path, self._family)
        except ValueError as exc:
            raise DatasetError(f"{exc} (catalog entry: family={self._family!r})") from None
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

    def save(self, data) -> None:
        if self._path is None:
            raise DatasetError(f"cannot save into the Hugging Face cache entry '{self._hub_id}'; give a `path`")
        data.save(self._path)

    def _exists(self) -> bool:
        try:
            return (self._resolve() / "config.json").exists()
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path, "hub_id": self._hub_id, "family": self._family, "dtype": self._dtype,
                "device": self._device, **({"options": self._options} if self._options else {})}


# --- the model in worker processes --------------------------------------------------------------------------------
_WORKER_MODELS: dict[ModelSpec, Any] = {}
_WORKER_LOCK = threading.Lock()
#: the device a worker process runs models on instead of the spec's CUDA device (a Ray worker sees only the GPU it
#: was given, as ``cuda``); set by the executor, None elsewhere
WORKER_DEVICE: str | None = None


def model_reference(obj) -> ModelSpec | None:
    """The load spec of a model adapter loaded by ``VisionLanguageModelDataset``, or None for anything else."""
    try:
        spec = vars(obj).get(SPEC_ATTRIBUTE)  # the instance's own attribute (a class or module never has one)
    except TypeError:  # no __dict__
        return None
    return spec if isinstance(spec, ModelSpec) else None


def model_from_spec(spec: ModelSpec):
    """The model of `spec`, loaded once per process (what a pickled model reference becomes in a worker). A
    checkpoint whose fingerprint differs from the driver's is refused: the worker would explain another model."""
    with _WORKER_LOCK:
        if spec not in _WORKER_MODELS:
            device = spec.device
            if WORKER_DEVICE is not None and str(device).startswith("cuda"):
                device = WORKER_DEVICE
            dataset = VisionLanguageModelDataset(path=spec.path, hub_id=spec.hub_id, family=spec.family,
                                                 dtype=spec.dtype, device=device, device_map=spec.device_map,
                                                 options=dict(spec.options))
            try:
                model = dataset._load_model()
            except DatasetError as exc:
                raise DatasetError(f"worker on {os.uname().nodename}: {exc} Every worker needs the model folder at "
                                   f"the driver's path (a shared filesystem; docs/scale.md)") from None
            found = getattr(model, "fingerprint", "")
            if spec.fingerprint and found != spec.fingerprint:
                raise DatasetError(f"worker on {os.uname().nodename}: the checkpoint at '{spec.path or spec.hub_id}' "
                                   f"has fingerprint {found}, the driver's has {spec.fingerprint}; copy the same "
                                   f"model folder to every host (docs/scale.md)")
            setattr(model, SPEC_ATTRIBUTE, spec)  # re-shipped from here, it is the same reference
            _WORKER_MODELS[spec] = model
            logger.info("worker %d loaded the model '%s' (%s) on %s", os.getpid(), spec.name, spec.fingerprint,
                        device)
        return _WORKER_MODELS[spec]
