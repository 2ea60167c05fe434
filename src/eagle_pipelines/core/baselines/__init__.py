"""Baselines under the same protocol as EAGLE: each returns an (H, W) float32 map at model resolution for the
explained answer tokens (sentence level: all of them; word level: a word's tokens). They talk only to a
``TeacherForcedPass`` (models/base.py), so any model family that implements ``ModelInternals`` runs them.

- ``llava_cam``: Smooth Grad-CAM on the LM activations at the image tokens (a hidden state, or a hooked decoder
  submodule as the reference does; gradients).
- ``igos_pp``: IGOS++ mask optimisation against a blurred (or mean-colour) baseline (gradients).
- ``tam``: Token Activation Map with estimated causal inference and the rank Gaussian filter (activations).
- ``captum``: Captum's LLMAttribution(FeatureAblation) over EAGLE's superpixels (black box).

``run_baseline`` times one call and measures its peak memory. See docs/baselines.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from pydantic import BaseModel

from eagle_pipelines.core.baselines.captum_ablation import CaptumParams, captum_feature_ablation
from eagle_pipelines.core.baselines.igos_pp import IgosParams, igos_pp
from eagle_pipelines.core.baselines.llava_cam import LlavaCamParams, llava_cam
from eagle_pipelines.core.baselines.tam import TamParams, rank_gaussian_filter, tam
from eagle_pipelines.core.memory import PeakMemory


class Baseline(NamedTuple):
    """One registration record: everything the pipelines, the parameters and the reports know of a method."""

    func: Callable  # (tf, positions[, labels], **settings) -> (H, W) map
    needs_labels: bool  # takes EAGLE's superpixel label map
    params: type[BaseModel]  # its settings (params:baselines.<name>)
    display: str  # its name in tables and figures


#: The registry. A new baseline is a module (its function and its parameter model) and one record here: the
#: parameters (params:baselines), the experiment pipelines, eagle_repope and the reports read it from here.
BASELINES: dict[str, Baseline] = {
    "llava_cam": Baseline(llava_cam, False, LlavaCamParams, "LLaVA-CAM"),
    "igos_pp": Baseline(igos_pp, False, IgosParams, "IGOS++"),
    "tam": Baseline(tam, False, TamParams, "TAM"),
    "captum": Baseline(captum_feature_ablation, True, CaptumParams, "Captum FA"),
}


def display_name(method: str) -> str:
    """A method's name in tables and figures (EAGLE and the random floor included)."""
    return BASELINES[method].display if method in BASELINES else {"eagle": "EAGLE"}.get(method, method)
GRADIENT_METHODS = ("llava_cam", "igos_pp")


@dataclass(frozen=True)
class BaselineResult:
    map: np.ndarray  # (H, W) float32
    seconds: float
    peak_memory_mb: float

    def info(self) -> dict:
        return {"seconds": self.seconds, "peak_memory_mb": self.peak_memory_mb}


def run_baseline(method: str, tf, positions: Sequence[int], labels: np.ndarray | None = None,
                 **settings) -> BaselineResult:
    """Runs baseline `method` on a TeacherForcedPass for the answer tokens at `positions`; `labels` (the
    superpixel map) is needed by ``captum`` only."""
    if method not in BASELINES:
        raise ValueError(f"unknown baseline {method!r}; known: {sorted(BASELINES)}")
    func, needs_labels = BASELINES[method].func, BASELINES[method].needs_labels
    if needs_labels and labels is None:
        raise ValueError(f"baseline {method!r} needs the superpixel label map (labels)")
    device = getattr(tf, "device", None) or tf.image.device
    start = time.perf_counter()
    with PeakMemory(device) as peak:
        saliency = func(tf, positions, labels, **settings) if needs_labels else func(tf, positions, **settings)
    seconds = time.perf_counter() - start
    saliency = np.asarray(saliency, dtype=np.float32)
    if saliency.shape != (tf.height, tf.width):
        raise RuntimeError(f"{method} returned a {saliency.shape} map for a {(tf.height, tf.width)} image")
    return BaselineResult(saliency, seconds, peak.mb)


__all__ = ["BASELINES", "GRADIENT_METHODS", "Baseline", "BaselineResult", "CaptumParams", "IgosParams",
           "LlavaCamParams", "TamParams", "captum_feature_ablation", "display_name", "igos_pp", "llava_cam",
           "rank_gaussian_filter", "run_baseline", "tam"]
