"""Explaining a clip: ``explain_video(model, video, prompt, ...)`` returns a ``VideoAttribution`` (core/video.py).

``explain()`` (api.py) hands a video here when it is given a video file, a folder of frames, a ``Clip`` or an
(N, H, W, 3) array. The clip is read (N frames sampled evenly, N even), brought to the model's video resolution,
cut into spatio-temporal regions (the reference's rows × cols grid per frame, or SLICO per frame), and the
regions are ordered by the same searches as an image's (core/search.py) through the adapter's ``video_scorer``.
See docs/video.md.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from eagle_pipelines.core.regions import RegionMap, clip_regions, region_frames
from eagle_pipelines.core.targets import resolve_targets
from eagle_pipelines.core.video import VideoAttribution
from eagle_pipelines.models.base import Answer

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")
#: the default search over a clip's regions (docs/video.md: measured passes and AUCs)
DEFAULT_VIDEO_STRATEGY = "pooled"
#: frames sampled from a video file or a folder of frames when n_frames is not given
DEFAULT_FRAMES = 8
#: the fewest pixels a spatio-temporal region may hold (as MIN_REGION_PIXELS for images)
MIN_CELL_PIXELS = 16


def is_video_input(source) -> bool:
    """True for what ``explain`` treats as a video: a ``Clip``, an (N, H, W, 3) array, a folder (of frames) or a
    file with a video suffix."""
    from eagle_pipelines.models.video import Clip

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
                  fps: float | None = None) -> VideoAttribution:
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
    Returns a ``VideoAttribution``: labels (N, H, W), saliency (N, H, W), ``frame_importance()``."""
    from eagle_pipelines.api import LONG_SEARCH, check_arguments, expected_forward_passes, search_attribution
    from eagle_pipelines.models.video import Clip, read_frames

    check_arguments(prompt, strategy, 2, lambda1, lambda2, batch_size, memory_budget_mb, search_params)
    if not hasattr(model, "video_scorer"):
        raise ValueError(f"the model '{getattr(model, 'name', model)}' has no video input (the Qwen-VL family has: "
                         f"Qwen2-VL, Qwen2.5-VL, Qwen3-VL)")
    if answer is None and (isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int)
                           or max_new_tokens < 1):
        raise ValueError(f"max_new_tokens must be an integer >= 1; got {max_new_tokens!r}")
    where = f"'{video}': " if isinstance(video, (str, os.PathLike)) else ""
    if n_frames is None and not isinstance(video, (Clip, np.ndarray)):
        n_frames = DEFAULT_FRAMES
    try:
        clip = model.model_clip(read_frames(video, n_frames, fps=fps))
    except ValueError as exc:
        raise ValueError(f"{where}{exc}" if where and str(video) not in str(exc) else str(exc)) from None
    frames = clip.frames
    if regions is None:
        cell = frames.shape[1] * frames.shape[2] / (rows * cols if region_method == "grid" else n_segments)
        if cell < MIN_CELL_PIXELS:
            raise ValueError(f"{where}{rows}x{cols} cells of {frames.shape[2]}x{frames.shape[1]} frames hold "
                             f"{cell:.0f} pixels each, fewer than {MIN_CELL_PIXELS}; use fewer cells")
        regions = clip_regions(frames, region_method, rows=rows, cols=cols, n_segments=n_segments,
                               **(slic_params or {}))
    if regions.labels.shape != frames.shape[:3]:
        raise ValueError(f"label map {regions.labels.shape} does not match the clip at the model's video "
                         f"resolution {frames.shape[:3]}")
    if answer is None:
        answer = model.generate_video(clip, prompt, max_new_tokens=max_new_tokens)
    tok = model.processor.tokenizer
    positions = resolve_targets(tok.decode, answer.token_ids, tokens)
    n = regions.n_regions
    passes, exact = expected_forward_passes(strategy, n, search_params)
    logger.log(logging.WARNING if passes > LONG_SEARCH else logging.DEBUG,
               "%s%s search over %d spatio-temporal regions (%d frames): %s%d forward passes", where, strategy, n,
               len(frames), "" if exact else "at least ", passes)
    scorer = model.video_scorer(clip, prompt, answer.token_ids, positions, batch_size=batch_size,
                                memory_budget_mb=memory_budget_mb)
    video_meta = {"source": clip.source, "fps": clip.fps, "indices": list(clip.indices),
                  "total_frames": clip.total_frames, "timestamps": clip.timestamps, "n_frames": len(frames),
                  "frame_size": list(frames.shape[1:3]),
                  "region_frames": region_frames(regions).tolist()}
    return search_attribution(VideoAttribution, model, scorer, regions, answer, positions, prompt, strategy,
                              lambda1, lambda2, search_params, progress, {"video": video_meta, **(meta or {})})
