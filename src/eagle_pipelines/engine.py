"""The explain engine: one target of one image or clip, from validated settings to the attribution record.

``explain_image`` and ``explain_clip`` check what the settings object cannot (the prompt, the image or clip, the
region map against it), estimate the search's forward passes (``expected_forward_passes``, logged before it
starts), run the strategy of the registry (``core/strategies.py``) and build the record (``run_search``). The
settings reach them as one validated ``SearchParams`` (or a model built on it: ``AttributionParams``,
``EagleVideoParams``, ``GuidanceParams``); ``search_params_of`` makes that object from ``explain()``'s keyword
arguments, naming a wrong one with its allowed range. ``api.py`` (the public ``explain``), ``api_video.py``, the
pipelines' nodes and guided decoding (handed ``explain_image``) call it; nothing below the engine imports it.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np
from pydantic import BaseModel, ValidationError

from eagle_pipelines.console import progress_bar
from eagle_pipelines.core.attribution import Attribution
from eagle_pipelines.core.images import as_rgb, check_size
from eagle_pipelines.core.joint import check_prompt_units, explain_joint
from eagle_pipelines.core.memory import PeakMemory
from eagle_pipelines.core.regions import RegionMap, clip_regions, region_frames, superpixels
from eagle_pipelines.core.scoring import RegionScorer
from eagle_pipelines.core.search import CountingScorer
from eagle_pipelines.core.strategies import STRATEGIES, SearchParams, group_of
from eagle_pipelines.core.targets import resolve_targets
from eagle_pipelines.core.video import VideoAttribution
from eagle_pipelines.models.base import Answer
from eagle_pipelines.models.video import Clip, read_frames
from eagle_pipelines.parameters import SuperpixelParams

#: the fewest pixels a region may hold on average: n_regions is refused beyond H·W / MIN_REGION_PIXELS of the image
#: (the smaller of the image as given and at the model's resolution). A 4x4 block is about the smallest area SLICO
#: can still place by colour; beyond it the regions become single pixels and the search cost (greedy: n(n+1)
#: forward passes) explodes for no information.
MIN_REGION_PIXELS = 16
#: the fewest pixels a spatio-temporal region may hold (as MIN_REGION_PIXELS for images)
MIN_CELL_PIXELS = 16
#: frames sampled from a video file or a folder of frames when n_frames is not given
DEFAULT_FRAMES = 8
#: searches expected to take more forward passes than this are logged as a warning (the others at DEBUG, so a
#: pipeline's log does not get a line per attribution; eagle-explain prints them all)
LONG_SEARCH = 20_000
#: the explain path logs as the public API did (eagle-explain prints that logger, users filter on its name)
logger = logging.getLogger("eagle_pipelines.api")

ALLOWED = {
    "strategy": f"one of {sorted(STRATEGIES)}",
    "lambda1": "a finite number >= 0 (lambda1 + lambda2 > 0)",
    "lambda2": "a finite number >= 0 (lambda1 + lambda2 > 0)",
    "batch_size": "an integer >= 1",
    "memory_budget_mb": "None (what the device has), 0 (no planning) or a finite number of MB > 0",
    "n_regions": "an integer from 2 to 65536 (parameters.MAX_SEGMENTS), at most one per 16 pixels of the image",
}


# --- argument checks ----------------------------------------------------------------------------------------------
def check_prompt(prompt) -> None:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt must be a non-empty string (the question asked about the image); got {prompt!r}")


def check_max_new_tokens(max_new_tokens) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1; got {max_new_tokens!r}")


def check_n_regions(n_regions) -> None:
    """`n_regions` as ``params:superpixels.n_segments`` (``SuperpixelParams``: an integer, not a bool, from 2 to
    MAX_SEGMENTS)."""
    regions = n_regions.item() if isinstance(n_regions, np.integer) else n_regions
    try:
        SuperpixelParams(n_segments=regions)
    except ValidationError as exc:
        if isinstance(regions, int) and not isinstance(regions, bool) and regions < 2:
            raise ValueError(f"n_regions must be at least 2 (got {n_regions!r}): EAGLE orders the image's regions; "
                             f"allowed: {ALLOWED['n_regions']}") from None
        raise ValueError(f"n_regions must be {ALLOWED['n_regions']}; got {n_regions!r} "
                         f"({exc.errors()[0]['msg']})") from None


def search_params_of(strategy: str = "pooled", lambda1: float = 1.0, lambda2: float = 1.0, batch_size: int = 32,
                     memory_budget_mb: float | None = None, search_params: dict | None = None) -> SearchParams:
    """``explain()``'s search arguments as one validated ``SearchParams`` (the model the pipelines validate
    ``params:attribution`` with, so both refuse the same values): `search_params` are the strategy's own settings
    (its parameter model in the registry). A wrong one is a ValueError naming the argument, the value and the
    allowed range."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {sorted(STRATEGIES)}")
    given = {"lambda1": lambda1, "lambda2": lambda2, "batch_size": batch_size, "memory_budget_mb": memory_budget_mb}
    for name, value in given.items():  # numbers only: the model would read "1" or True as one
        if isinstance(value, bool) or (value is not None and not isinstance(value, (int, float, np.number))):
            raise ValueError(f"{name} must be {ALLOWED[name]}; got {value!r}")
    model = STRATEGIES[strategy].params
    if search_params and model is None:
        raise ValueError(f"strategy {strategy!r} takes no search_params; got {search_params!r}")
    group = group_of(strategy)
    try:
        return SearchParams(strategy=strategy, **{k: v.item() if isinstance(v, np.generic) else v
                                                  for k, v in given.items()},
                            **({group: search_params} if search_params else {}))
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else ""
        if name in given:
            raise ValueError(f"{name} must be {ALLOWED[name]}; got {err.get('input')!r} ({err['msg']})") from None
        if name == group:
            key = ".".join(str(p) for p in err["loc"][1:])
            raise ValueError(f"search_params[{key!r}] of strategy {strategy!r}: {err['msg']} (got "
                             f"{err.get('input')!r}); allowed: {sorted(model.model_fields)} as in "
                             f"{model.__module__}.{model.__name__}") from None
        raise ValueError(str(err.get("ctx", {}).get("error", err["msg"]))) from None


def check_arguments(prompt=None, strategy: str = "pooled", n_regions: int = 64, lambda1: float = 1.0,
                    lambda2: float = 1.0, batch_size: int = 32, memory_budget_mb: float | None = None,
                    search_params: dict | None = None) -> SearchParams:
    """``explain``'s settings, checked before any work: the prompt, `n_regions` (``check_n_regions``) and the
    search (``search_params_of``, whose validated object it returns)."""
    check_prompt(prompt)
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {sorted(STRATEGIES)}")
    check_n_regions(n_regions)
    return search_params_of(strategy, lambda1, lambda2, batch_size, memory_budget_mb, search_params)


def max_regions(*shapes: tuple[int, ...]) -> int:
    """The most regions an image of these (H, W, ...) shapes can hold: H·W / MIN_REGION_PIXELS of the smallest."""
    return min(int(shape[0]) * int(shape[1]) for shape in shapes) // MIN_REGION_PIXELS


# --- forward-pass estimates ---------------------------------------------------------------------------------------
def expected_forward_passes(strategy: str | SearchParams, n: int, search_params: dict | None = None
                            ) -> tuple[int, bool]:
    """(forward passes, exact) of `strategy` (a name with its `search_params`, or a ``SearchParams``) over `n`
    regions, as ``core/search.py`` counts them (one per masked image): the registry's ``passes`` (greedy n(n+1);
    pooled 2n + K(K−1) + 2(n−K) for its pool of K; efficient and bidirectional by replaying their schedules; lazy
    only a lower bound, 2 + 2n + 2·Σ min(refresh, remaining): stale bounds may need more rounds)."""
    if isinstance(strategy, BaseModel):
        spec, settings = STRATEGIES[strategy.strategy], strategy.search_params()
    else:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; choose one of {sorted(STRATEGIES)}")
        spec, settings = STRATEGIES[strategy], dict(search_params or {})
        if spec.params is not None:
            settings = spec.params.model_validate(settings).model_dump()
    return spec.passes(n, **settings), spec.exact


def _log_passes(params: SearchParams, n: int, what: str, label: str) -> tuple[int, bool]:
    """Logs the search's forward passes before it starts (a warning beyond LONG_SEARCH) and returns them."""
    passes, exact = expected_forward_passes(params, n)
    logger.log(logging.WARNING if passes > LONG_SEARCH else logging.DEBUG,  # eagle-explain prints both
               "%s%s search over %d %s: %s%d forward passes%s", label, params.strategy, n, what,
               "" if exact else "at least ", passes,
               " (a long search: fewer regions or strategy 'pooled' cut it)" if passes > LONG_SEARCH else "")
    return passes, exact


# --- the search and its record ------------------------------------------------------------------------------------
def run_search(cls, model, scorer, regions: RegionMap, answer: Answer, positions, prompt: str,
               params: SearchParams, progress: bool, meta: dict | None):
    """Runs the strategy of `params` over `regions` with `scorer` (an image's or a clip's TokenScorer) and returns
    the `cls` (``Attribution`` or ``VideoAttribution``) record of it: order, curves, targets, cost, the search's
    settings, the regions' parameters and the scorer's memory plan, then `meta`."""
    counting = CountingScorer(RegionScorer(scorer, regions), regions.n_regions)
    settings = params.search_params()
    bar = progress_bar(total=regions.n_regions, desc=f"{params.strategy} search", unit="region",
                       leave=False) if progress else None
    start = time.perf_counter()
    with PeakMemory(model.device) as peak:
        trace = params.spec.search(counting, lambda1=params.lambda1, lambda2=params.lambda2, **settings,
                                   progress=(lambda k: bar.update(k - bar.n)) if bar else None)
    seconds = time.perf_counter() - start
    if bar:
        bar.close()
    area = regions.cumulative_area(trace.order)
    tok = model.processor.tokenizer
    return cls(
        order=trace.order, insertion=trace.insertion, deletion=trace.deletion, objective=trace.objective,
        area=area, full_score=trace.insertion[-1].copy(), empty_score=trace.deletion[-1].copy(),
        labels=regions.labels, target_positions=positions,
        target_token_ids=[int(answer.token_ids[p]) for p in positions],
        target_words=[tok.decode([answer.token_ids[p]]).strip() for p in positions],
        answer=answer.text, prompt=prompt, lambda1=params.lambda1, lambda2=params.lambda2,
        strategy=params.strategy, search_params=settings, forward_passes=counting.forward_passes, seconds=seconds,
        peak_memory_mb=peak.mb, meta={"regions": regions.params, "n_regions": regions.n_regions,
                                     "memory_plan": getattr(scorer, "memory_plan", {}),
                                     **(scorer.attribution_meta() if hasattr(scorer, "attribution_meta") else {}),
                                     **(meta or {})},
    )


# --- one image ----------------------------------------------------------------------------------------------------
def explain_image(model, image, prompt: str, params: SearchParams, tokens=None, n_regions: int = 64,
                  answer: Answer | None = None, regions: RegionMap | None = None, slic_params: dict | None = None,
                  progress: bool = False, meta: dict | None = None, compose: str = "pixel_values",
                  max_new_tokens: int = 32, prompt_units=None) -> Attribution:
    """`model`'s answer to `prompt` about `image` explained with the validated search settings `params`; the other
    arguments as ``api.explain``'s. Checks the prompt, `n_regions` (when `regions` is not given), the answer length,
    the image and the label map against it before any forward pass. `prompt_units` (``"words"`` or words/phrases
    of the prompt): one joint order over regions and prompt units, a ``core/joint.py: JointAttribution``."""
    check_prompt(prompt)
    if prompt_units is not None:
        check_prompt_units(prompt, prompt_units)
    if regions is None:
        check_n_regions(n_regions)
    if answer is None:
        check_max_new_tokens(max_new_tokens)
    given = as_rgb(image)  # a file's errors name it
    where = f"'{image}': " if isinstance(image, (str, os.PathLike)) else ""
    try:
        check_size(given)
        try:
            seen = model.model_image(given)
        except ValueError as exc:
            raise ValueError(f"the {given.shape[1]}x{given.shape[0]} image cannot be brought to the model's "
                             f"resolution ({exc})") from None
        limit = max_regions(given.shape, seen.shape)
        if regions is None and n_regions > limit:
            raise ValueError(f"n_regions={n_regions} is more than a {given.shape[1]}x{given.shape[0]} image can "
                             f"hold (seen by the model at {seen.shape[1]}x{seen.shape[0]}): at most {limit}, at "
                             f"least {MIN_REGION_PIXELS} pixels per region")
        # pixel_values: regions and masks on the image the model sees; processor: on the photo itself, each masked
        # copy resized by the processor (the reference's protocol)
        image = given if compose == "processor" else seen
    except ValueError as exc:
        raise ValueError(f"{where}{exc}") from None
    if answer is None:
        answer = model.generate(image, prompt, max_new_tokens=max_new_tokens)
    tok = model.processor.tokenizer
    positions = resolve_targets(tok.decode, answer.token_ids, tokens)
    if regions is None:
        regions = superpixels(image, n_segments=n_regions, **(slic_params or {}))
    if regions.labels.shape != image.shape[:2]:
        raise ValueError(f"label map {regions.labels.shape} does not match the "
                         f"{'photo' if compose == 'processor' else 'model image'} {image.shape[:2]}")
    if regions.n_regions > max_regions(image.shape):
        raise ValueError(f"the label map has {regions.n_regions} regions, more than its {image.shape[1]}x"
                         f"{image.shape[0]} image can hold: at most {max_regions(image.shape)}, at least "
                         f"{MIN_REGION_PIXELS} pixels per region")
    label = f"{(meta or {})['image']}: " if "image" in (meta or {}) else ""
    passes, exact = _log_passes(params, regions.n_regions, "regions", label)
    scorer = model.scorer(image, prompt, answer.token_ids, positions, batch_size=params.batch_size,
                          compose=compose, memory_budget_mb=params.memory_budget_mb)
    if hasattr(scorer, "announce"):  # an API model: the requests the search will send, against its budget
        scorer.announce(passes, exact, label)
    if prompt_units is not None:  # the joint search edits the scorer's prompt ids: every patch embedded per pass
        return explain_joint(model.processor.tokenizer, scorer, regions, prompt, prompt_units, params,
                             target_positions=list(positions),
                             target_token_ids=[int(answer.token_ids[p]) for p in positions],
                             target_words=[tok.decode([answer.token_ids[p]]).strip() for p in positions],
                             answer=answer.text, meta={"n_regions": regions.n_regions, **(meta or {})})
    share = getattr(scorer, "share_patches", None)
    if share is not None:  # Qwen-VL: whole patches embedded once, the vision geometry made once (same bits)
        share()
    return run_search(Attribution, model, scorer, regions, answer, positions, prompt, params, progress, meta)


# --- one clip -----------------------------------------------------------------------------------------------------
def explain_clip(model, video, prompt: str, params: SearchParams, tokens=None, n_frames: int | None = None,
                 rows: int = 5, cols: int = 5, region_method: str = "grid", n_segments: int = 25,
                 answer: Answer | None = None, regions: RegionMap | None = None, slic_params: dict | None = None,
                 progress: bool = False, meta: dict | None = None, max_new_tokens: int = 32,
                 fps: float | None = None) -> VideoAttribution:
    """`model`'s answer to `prompt` about a clip explained with the validated search settings `params`; the other
    arguments as ``api_video.explain_video``'s."""
    check_prompt(prompt)
    if not hasattr(model, "video_scorer"):
        raise ValueError(f"the model '{getattr(model, 'name', model)}' has no video input (the Qwen-VL family has: "
                         f"Qwen2-VL, Qwen2.5-VL, Qwen3-VL)")
    if answer is None:
        check_max_new_tokens(max_new_tokens)
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
    _log_passes(params, regions.n_regions, f"spatio-temporal regions ({len(frames)} frames)", where)
    scorer = model.video_scorer(clip, prompt, answer.token_ids, positions, batch_size=params.batch_size,
                                memory_budget_mb=params.memory_budget_mb)
    video_meta = {"source": clip.source, "fps": clip.fps, "indices": list(clip.indices),
                  "total_frames": clip.total_frames, "timestamps": clip.timestamps, "n_frames": len(frames),
                  "frame_size": list(frames.shape[1:3]),
                  "region_frames": region_frames(regions).tolist()}
    return run_search(VideoAttribution, model, scorer, regions, answer, positions, prompt, params, progress,
                      {"video": video_meta, **(meta or {})})
