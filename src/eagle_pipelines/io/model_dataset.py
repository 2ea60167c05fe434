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
from typing import Any

from kedro.io.core import AbstractDataset, DatasetError

from eagle_pipelines.models.checkpoint import SPEC_ATTRIBUTE, ModelCheckpoint, ModelSpec

logger = logging.getLogger(__name__)
__all__ = ["SPEC_ATTRIBUTE", "ModelSpec", "VisionLanguageModelDataset", "model_from_spec", "model_reference"]


class VisionLanguageModelDataset(ModelCheckpoint, AbstractDataset[Any, Any]):
    """The catalog's model entry: ``models/checkpoint.py: ModelCheckpoint`` (same arguments) as a Kedro dataset,
    whose errors are ``DatasetError``; ``save`` writes an adapter there with ``save_pretrained``."""

    error = DatasetError

    def load(self):
        """The model adapter, loaded once per dataset (so once per run) and shared by every node that reads it."""
        return ModelCheckpoint.load(self)

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
