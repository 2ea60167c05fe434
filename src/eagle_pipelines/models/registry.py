"""Model families: which adapter class loads which checkpoints.

A family is one module in ``eagle_pipelines.models`` whose adapter class is decorated with
``@register_family("name", model_types=(...))``; the registry finds it by importing the package's modules the first
time a family is looked up (see docs/models.md). ``model_types`` are the ``model_type`` values of the checkpoints'
``config.json`` the adapter handles: ``family="auto"`` picks the family from them, and an explicit family that does
not match the checkpoint fails before any weight is read.
"""

from __future__ import annotations

import importlib
import json
import logging
import pkgutil
from pathlib import Path

import torch

FAMILIES: dict[str, type] = {}
MODEL_TYPES: dict[str, str] = {}  # config.json model_type -> family
BROKEN: dict[str, str] = {}  # module -> why it could not be imported
_discovered = False
logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def register_family(name: str, model_types: tuple[str, ...] = ()):
    """Class decorator: registers an adapter class as family `name` for checkpoints of `model_types`."""

    def decorate(cls: type) -> type:
        cls.family = name
        cls.model_types = tuple(model_types)
        FAMILIES[name] = cls
        for model_type in model_types:
            MODEL_TYPES[model_type] = name
        return cls

    return decorate


def discover() -> None:
    """Imports every module of ``eagle_pipelines.models`` once, so that each family registers itself."""
    global _discovered
    if _discovered:
        return
    import eagle_pipelines.models as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name in ("registry", "__init__"):
            continue
        try:
            importlib.import_module(f"{package.__name__}.{info.name}")
        except Exception as exc:  # noqa: BLE001 - one broken module must not hide the other families
            BROKEN[info.name] = f"{type(exc).__name__}: {exc}"
            logger.warning("model module %s could not be imported (%s)", info.name, BROKEN[info.name])
    _discovered = True


def family_class(family: str) -> type:
    """The adapter class of `family`; a clear error naming the known families otherwise."""
    discover()
    if family not in FAMILIES:
        broken = f" Modules that failed to import: {BROKEN}." if BROKEN else ""
        raise ValueError(f"Unknown model family {family!r}; known: {sorted(FAMILIES)} or 'auto' (from the "
                         f"checkpoint's config.json). A new family is one file in src/eagle_pipelines/models/ "
                         f"(docs/models.md).{broken}")
    return FAMILIES[family]


def checkpoint_model_type(path: str | Path) -> tuple[str, list[str]]:
    """``model_type`` and ``architectures`` of a checkpoint folder's config.json (read without transformers)."""
    config = Path(path) / "config.json"
    if not config.exists():
        raise FileNotFoundError(f"'{path}' is not a model folder (no config.json).")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"'{config}' cannot be read as JSON ({exc}); the checkpoint is damaged") from None
    if not isinstance(data, dict):
        raise ValueError(f"'{config}' holds a JSON {type(data).__name__}, not a model configuration (an object)")
    return str(data.get("model_type", "")), list(data.get("architectures") or [])


def family_for_checkpoint(path: str | Path, family: str = "auto") -> type:
    """The adapter class for the checkpoint at `path`: `family`'s, after checking that the checkpoint is of a
    model type it handles, or (``auto``) the family that handles the checkpoint's model type."""
    discover()
    model_type, architectures = checkpoint_model_type(path)
    fitting = MODEL_TYPES.get(model_type)
    what = f"'{path}' holds a {model_type or 'model_type-less'} checkpoint ({', '.join(architectures) or '?'})"
    if family == "auto":
        if fitting is None:
            raise ValueError(f"{what}, which no model family handles; known families: "
                             f"{ {f: c.model_types for f, c in FAMILIES.items()} }. Add one (docs/models.md).")
        return FAMILIES[fitting]
    cls = family_class(family)
    if model_type not in cls.model_types:
        fix = f"use family '{fitting}' (or 'auto')" if fitting else "no family handles it (docs/models.md)"
        raise ValueError(f"{what}, not one of family '{family}' ({', '.join(cls.model_types)}): {fix}.")
    return cls


def resolve_dtype(dtype: str, device: str | torch.device = "cpu") -> torch.dtype:
    """A parameter's dtype name as a torch dtype; ``auto`` is bfloat16 on a CUDA device that supports it, float16
    on other CUDA devices and float32 on the CPU."""
    if dtype == "auto":
        if str(device).startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)} or 'auto', got {dtype!r}")
    return DTYPES[dtype]
