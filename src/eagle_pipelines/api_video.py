"""Explaining a clip: ``explain_video(model, video, prompt, ...)`` returns a ``VideoAttribution`` (core/video.py).

``explain()`` (api.py) hands a video here when it is given a video file, a folder of frames, a ``Clip`` or an
(N, H, W, 3) array. The clip is read (N frames sampled evenly, N even), brought to the model's video resolution,
cut into spatio-temporal regions (the reference's rows × cols grid per frame, or SLICO per frame), and the
regions are ordered by the same searches as an image's (core/search.py) through the adapter's ``video_scorer``.
See docs/video.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from eagle_pipelines.core.regions import RegionMap
from eagle_pipelines.core.strategies import SearchParams
from eagle_pipelines.core.video import VideoAttribution
from eagle_pipelines.engine import DEFAULT_FRAMES, MIN_CELL_PIXELS, check_arguments, explain_clip  # noqa: F401
from eagle_pipelines.models.base import Answer
from eagle_pipelines.models.video import Clip

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")
#: the default search over a clip's regions (docs/video.md: measured passes and AUCs)
DEFAULT_VIDEO_STRATEGY = "pooled"


def is_video_input(source) -> bool:
    """True for what ``explain`` treats as a video: a ``Clip``, an (N, H, W, 3) array, a folder (of frames) or a
    file with a video suffix."""
    if isinstance(source, Clip):
        return True
    if isinstance(source, np.ndarray):
        return source.ndim == 4
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return path.is_dir() or path.suffix.lower() in VIDEO_SUFFIXES
    return False


def explain_video(model, video, prompt: str, tokens=None, strategy: str = DEFAULT_VIDEO_STRATEGY,
                  n_frames: int | None = None, rows: int = 5, cols: int = 5, region_method: str = "grid",
                  n_segments: int = 25, lambda1: float = 1.0, lambda2: float = 1.0, batch_size: int = 8,
                  memory_budget_mb: float | None = None, answer: Answer | None = None,
                  regions: RegionMap | None = None, search_params: dict | None = None, slic_params: dict | None = None,
                  progress: bool = False, meta: dict | None = None, max_new_tokens: int = 32,
                  fps: float | None = None, params: SearchParams | None = None) -> VideoAttribution:
    """Explains `model`'s answer to `prompt` about a clip.

    Args:
        video: a video file (PyAV), a folder of frames (name order), a ``Clip`` or an (N, H, W, 3) uint8 array.
        n_frames: frames sampled evenly (even); default ``DEFAULT_FRAMES`` (8) from a file or folder, every frame of
            a ``Clip`` or an array. fps: the time base of a folder or an array.
        region_method: ``grid`` (default, the reference's: `rows` × `cols` cells per frame, 5 × 5) or ``slico``
            (about `n_segments` SLICO regions per frame; `slic_params` as ``explain``'s). A region is one cell of
            one frame: n = N · rows · cols (200 for 8 frames of 5 × 5).
        strategy, search_params, lambda1, lambda2, batch_size, memory_budget_mb, answer, tokens, max_new_tokens:
            as ``explain`` (``pooled`` by default; greedy costs n(n+1) passes, 40,200 at n = 200).
        regions: a precomputed (N, H, W) label map at the model's video resolution.
        params: the search settings as one validated ``SearchParams`` (e.g. ``EagleVideoParams``) instead of
            strategy, lambda1, lambda2, batch_size, memory_budget_mb and search_params.
    Returns a ``VideoAttribution``: labels (N, H, W), saliency (N, H, W), ``frame_importance()``. The work is
    ``engine.explain_clip``; the search settings are validated once, here."""
    if params is None:
        params = check_arguments(prompt, strategy, 2, lambda1, lambda2, batch_size, memory_budget_mb, search_params)
    return explain_clip(model, video, prompt, params, tokens=tokens, n_frames=n_frames, rows=rows, cols=cols,
                        region_method=region_method, n_segments=n_segments, answer=answer, regions=regions,
                        slic_params=slic_params, progress=progress, meta=meta, max_new_tokens=max_new_tokens,
                        fps=fps)
