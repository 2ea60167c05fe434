"""Baselines under the same protocol as EAGLE: each returns an (H, W) float32 map at model resolution for the
explained answer tokens (sentence level: all of them; word level: a word's tokens). They talk only to a
``TeacherForcedPass`` (models/base.py), so any model family that implements ``ModelInternals`` runs them.

- ``llava_cam``: Smooth Grad-CAM on the LM hidden states at the image tokens (gradients).
- ``igos_pp``: IGOS++ mask optimisation against a blurred baseline (gradients).
- ``tam``: Token Activation Map with estimated causal inference and the rank Gaussian filter (activations).
- ``captum``: Captum's LLMAttribution(FeatureAblation) over EAGLE's superpixels (black box).

``run_baseline`` times one call and measures its peak memory. See docs/baselines.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from eagle_pipelines.core.baselines.captum_ablation import captum_feature_ablation
from eagle_pipelines.core.baselines.igos_pp import igos_pp
from eagle_pipelines.core.baselines.llava_cam import llava_cam
from eagle_pipelines.core.baselines.tam import rank_gaussian_filter, tam
from eagle_pipelines.core.memory import PeakMemory

#: name -> (function, whether it needs the superpixel label map)
BASELINES: dict[str, tuple[Callable, bool]] = {
    "llava_cam": (llava_cam, False),
    "igos_pp": (igos_pp, False),
    "tam": (tam, False),
    "captum": (captum_feature_ablation, True),
}
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
    func, needs_labels = BASELINES[method]
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


__all__ = ["BASELINES", "GRADIENT_METHODS", "BaselineResult", "captum_feature_ablation", "igos_pp", "llava_cam",
           "rank_gaussian_filter", "run_baseline", "tam"]
