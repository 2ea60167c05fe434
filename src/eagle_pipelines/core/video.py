"""The attribution of a clip: an ``Attribution`` whose label map is (N, H, W) over the clip's frames (a region is
one piece of one frame; core/regions.py ``frame_grid`` / ``frame_superpixels``), with per-frame views.

The search, the curves, the influence and the saliency are the image ones unchanged: ``saliency()`` is (N, H, W).
What is added answers "which moment": ``frame_importance`` (each frame's share of the search's positive gain) and
``top_frame``; the figures are ``core/plotting.py``'s ``plot_video_attribution``, ``video_frame_displays``,
``save_frame_overlays`` and ``save_video_gif``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eagle_pipelines.core.attribution import Attribution
from eagle_pipelines.core.plotting import plot_video_attribution, save_video_gif
from eagle_pipelines.core.regions import RegionMap, region_frames


@dataclass
class VideoAttribution(Attribution):
    """``Attribution`` of a clip: ``labels`` (N, H, W); ``meta["video"]`` holds the frames' source indices, the
    source's fps, the timestamps and the region layout."""

    @property
    def n_frames(self) -> int:
        return int(self.labels.shape[0])

    @property
    def timestamps(self) -> list[float]:
        return list((self.meta.get("video") or {}).get("timestamps") or range(self.n_frames))

    def region_frames(self) -> np.ndarray:
        """(n,) the frame each region lies in."""
        return region_frames(RegionMap(self.labels, {}))

    def region_gains(self) -> np.ndarray:
        """(n,) each region's marginal gain of the recorded objective when the search added it (indexed by
        region id; as ``saliency`` computes it)."""
        l1, l2 = (1.0, 1.0) if self.strategy == "efficient" else (self.lambda1, self.lambda2)
        start = l1 * self.empty_score.mean() + l2 * (1.0 - self.full_score.mean())
        gains = np.diff(np.concatenate([[start], self.objective]))
        out = np.empty(len(self.order))
        out[self.order] = gains
        return out

    def frame_importance(self) -> np.ndarray:
        """(N,) each frame's share of the search's positive marginal gains (sums to 1; uniform when no region
        gained anything): which moment the explained tokens rely on."""
        gains = np.maximum(self.region_gains(), 0.0)
        per_frame = np.bincount(self.region_frames(), weights=gains, minlength=self.n_frames)
        total = per_frame.sum()
        return per_frame / total if total > 0 else np.full(self.n_frames, 1.0 / self.n_frames)

    def top_frame(self) -> int:
        """The frame of the first region of the order (the region EAGLE ranks first)."""
        return int(self.region_frames()[self.order[0]])

    def plot(self, frames=None, token_labels: list[str] | None = None):
        """A figure: every frame with its map (first three regions of the clip numbered), the faithfulness curves
        and each frame's share of the gain."""
        return plot_video_attribution(self, frames, token_labels)

    def gif(self, frames, path, duration_ms: int = 500):
        """An animated GIF of the map over the clip (``save_video_gif``)."""
        return save_video_gif(self, frames, path, duration_ms=duration_ms)
