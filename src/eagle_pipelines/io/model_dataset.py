"""The catalog's model datasets: vision-language models saved with ``save_pretrained``
(``VisionLanguageModelDataset``), the same checkpoints run by vLLM (``VllmModelDataset``) and a model behind an
OpenAI-compatible endpoint (``ApiModelDataset``).

The embedded toy model and real checkpoints (a local folder, or a Hugging Face cache entry) load through this one
type with ``local_files_only=True``: nothing is ever downloaded.

A loaded adapter carries its load spec (``ModelSpec``: where the checkpoint is, family, dtype, device, and the
checkpoint's fingerprint). An executor that ships jobs to other processes (``io/executors.py``, Ray) pickles the
adapter as that small spec (``model_reference``), and each worker process loads the model from it once
(``model_from_spec``, memoized per process), refusing a checkpoint whose content differs from the driver's.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from kedro.io.core import AbstractDataset, DatasetError

from eagle_pipelines.models.adapter import checkpoint_fingerprint
from eagle_pipelines.models.api_model import ApiModel, ApiParams, resolve_key
from eagle_pipelines.models.checkpoint import SPEC_ATTRIBUTE, ModelCheckpoint, ModelSpec
from eagle_pipelines.models.vllm_backend import VllmAdapter

logger = logging.getLogger(__name__)
__all__ = ["SPEC_ATTRIBUTE", "ApiModelDataset", "ModelSpec", "VisionLanguageModelDataset", "VllmModelDataset",
           "model_from_spec", "model_reference"]


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


class VllmModelDataset(AbstractDataset[None, VllmAdapter]):
    """The catalog's ``vlm`` run by vLLM (``backend: vllm`` of a GPU environment's catalog):

        vlm:
          type: eagle_pipelines.io.model_dataset.VllmModelDataset
          path: data/06_models/Qwen2.5-VL-3B-Instruct
          dtype: auto
          llm_options: {gpu_memory_utilization: 0.8, max_model_len: 4096}

    Loads ``VllmAdapter.from_pretrained`` once per run (nothing is saved); its stamp is the checkpoint's
    fingerprint, as the transformers dataset's."""

    def __init__(self, path: str, family: str = "auto", dtype: str = "auto", llm_options: dict | None = None,
                 metadata: dict | None = None):
        self._path, self._family, self._dtype = path, family, dtype
        self._llm_options = dict(llm_options or {})
        self.metadata = metadata
        self._loaded = None

    def load(self) -> VllmAdapter:
        if self._loaded is None:
            if not (Path(self._path) / "config.json").is_file():
                raise DatasetError(f"No model checkpoint at '{self._path}' (nothing is downloaded; docs/models.md)")
            self._loaded = VllmAdapter.from_pretrained(self._path, family=self._family, dtype=self._dtype,
                                                       **self._llm_options)
        return self._loaded

    def save(self, data) -> None:
        raise DatasetError("the vLLM backend does not save checkpoints; use VisionLanguageModelDataset")

    def _exists(self) -> bool:
        return (Path(self._path) / "config.json").is_file()

    def _release(self) -> None:
        self._loaded = None

    def stamp(self) -> str:
        return f"vllm-{checkpoint_fingerprint(self._path)}" if self._exists() else f"absent:{self._path}"

    def _describe(self) -> dict:
        return {"path": self._path, "family": self._family, "dtype": self._dtype, "llm_options": self._llm_options}


class ApiModelDataset(AbstractDataset[None, ApiModel]):
    """A model behind an OpenAI-compatible endpoint as the catalog's ``vlm`` (conf/api/catalog.yml).

    Args: ``api_base``, ``api_model`` and the other ``ApiParams`` fields (``max_requests``, ``max_concurrency``...);
    ``path``: the response cache's folder (``cache_dir``; under ``path`` Kedro makes it relative to the project);
    ``credentials``: a Kedro credentials entry with ``api_key`` (else the environment variable ``api_key_env``).
    Nothing is saved; the key is never part of ``_describe`` or the stamp."""

    def __init__(self, api_base: str, api_model: str, path: str | None = None, credentials: dict | None = None,
                 metadata: dict | None = None, **settings: Any):
        if path is not None:
            settings["cache_dir"] = path
        try:
            self._params = ApiParams(api_base=api_base, api_model=api_model, **settings)
        except Exception as exc:  # noqa: BLE001 - pydantic's message names the field
            raise DatasetError(f"the API model entry ({api_model} at {api_base}): {exc}") from None
        self._credentials = dict(credentials or {})
        self.metadata = metadata
        self._loaded: ApiModel | None = None

    def load(self) -> ApiModel:
        if self._loaded is None:
            key = resolve_key(None, self._credentials, self._params.api_key_env)
            self._loaded = ApiModel(self._params, api_key=key)
            logger.info("API model '%s' at %s: %s server, %s scoring%s", self._params.api_model,
                        self._params.api_base, self._loaded.server, self._loaded.scoring,
                        "" if self._params.max_requests is None else f", max_requests={self._params.max_requests}")
        return self._loaded

    def save(self, data) -> None:
        raise DatasetError(f"'{self._params.api_model}' is served by {self._params.api_base}: nothing to save")

    def _exists(self) -> bool:
        return True

    def _release(self) -> None:
        self._loaded = None

    def stamp(self) -> str:
        """Provenance without a request: the model name and the scoring settings (not the URL or the key)."""
        p = self._params
        return json.dumps({"api_model": p.api_model, "server": p.server, "scoring": p.scoring,
                           "top_logprobs": p.top_logprobs, "image_size": p.image_size}, sort_keys=True)

    def _describe(self) -> dict[str, Any]:
        return {k: v for k, v in self._params.model_dump().items() if k != "api_key_env"}
