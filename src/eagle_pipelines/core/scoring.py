"""The TokenScorer protocol: pixel keep-masks (B, H, W) -> probabilities (B, T) of the explained tokens.

A model adapter builds one per (image, prompt, answer, explained tokens); the search sees regions only, through
``RegionScorer`` which turns region keep-indicators into pixel masks with the label map.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from eagle_pipelines.core.regions import RegionMap


@runtime_checkable
class TokenScorer(Protocol):
    """p(y_t | image with only the kept pixels, prompt, y_<t) for each explained token t, teacher-forced."""

    target_positions: tuple[int, ...]

    def __call__(self, keep_masks: np.ndarray) -> np.ndarray:
        """keep_masks: (B, H, W) bool at the model's input resolution; returns (B, T) float probabilities."""
        ...


class RegionScorer:
    """Adapts a pixel TokenScorer to region keep-indicators (B, n) for the search."""

    def __init__(self, scorer: TokenScorer, regions: RegionMap):
        self.scorer = scorer
        self.regions = regions

    def __call__(self, keep: np.ndarray) -> np.ndarray:
        return self.scorer(self.regions.masks(keep))
