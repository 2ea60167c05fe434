"""SLICO superpixels as one integer label map per image."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
from skimage.segmentation import slic


@dataclass(frozen=True)
class RegionMap:
    """`labels` (H, W) int32 with values 0..n-1, and the SLIC parameters that made it."""

    labels: np.ndarray = field(repr=False)
    params: dict

    @property
    def n_regions(self) -> int:
        return int(self.labels.max()) + 1

    def areas(self) -> np.ndarray:
        """Fraction of the image each region covers, (n,) summing to 1."""
        return np.bincount(self.labels.ravel(), minlength=self.n_regions) / self.labels.size

    def cumulative_area(self, order: np.ndarray) -> np.ndarray:
        """(n,) area fraction of each prefix of `order`; the last is exactly 1."""
        area = np.cumsum(self.areas()[np.asarray(order)])
        area[-1] = 1.0
        return area

    def masks(self, keep: np.ndarray) -> np.ndarray:
        """Pixel keep-masks (B, H, W) bool from region keep-indicators (B, n) bool."""
        keep = np.asarray(keep, dtype=bool)
        return keep[:, self.labels]


def slico(image: np.ndarray, n_segments: int = 64, compactness: float = 10.0, max_num_iter: int = 10,
          sigma: float = 0.0) -> RegionMap:
    """SLICO superpixels (scikit-image ``slic(..., slic_zero=True)``) of an (H, W, 3) image.

    The count is about `n_segments`; the real count depends on the image. Labels are renumbered 0..n-1 in
    raster order of first appearance, so the map is deterministic for a given image and parameters.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"superpixels need an (H, W, 3) image, got shape {image.shape}")
    raw = slic(image, n_segments=n_segments, compactness=compactness, max_num_iter=max_num_iter, sigma=sigma,
               slic_zero=True, start_label=0, channel_axis=-1, enforce_connectivity=True)
    _, first = np.unique(raw.ravel(), return_index=True)
    order = np.argsort(first)  # raster order of first appearance
    lookup = np.empty(raw.max() + 1, dtype=np.int32)
    lookup[np.unique(raw)[order]] = np.arange(len(order), dtype=np.int32)
    labels = lookup[raw]
    params = {"method": "slico", "n_segments": n_segments, "compactness": compactness,
              "max_num_iter": max_num_iter, "sigma": sigma}
    return RegionMap(labels.astype(np.int32), params)


def params_hash(params: dict) -> str:
    """A short stable hash of a parameter dictionary (cache keys)."""
    return hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:10]
