"""The Python API (module `eagle_pipelines.api`): ``explain(model, image, prompt, tokens=..., strategy=...)``
returns an Attribution.

    from eagle_pipelines import explain, load_model
    model = load_model("data/06_models/toy_qwen2_5_vl")
    attribution = explain(model, image, "Describe the image.", tokens=["red", "circle"], n_regions=16)
    attribution.plot(image)

``explain`` checks every argument before any work and names the wrong one with its allowed range (ValueError);
an image it cannot take (unreadable file, decompression bomb, NaN floats, a side under 14 pixels) is a ValueError
naming the file and the reason; a region count beyond what the image can hold (fewer than ``MIN_REGION_PIXELS``
pixels per region) is refused, and the search's forward passes are logged before it starts
(``expected_forward_passes``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import numpy as np

from eagle_pipelines.core.attribution import Attribution
from eagle_pipelines.core.images import as_rgb, check_size
from eagle_pipelines.core.memory import PeakMemory
from eagle_pipelines.core.regions import RegionMap, superpixels
from eagle_pipelines.core.scoring import RegionScorer
from eagle_pipelines.core.search import (CountingScorer, bidirectional, bidirectional_passes, efficient,
                                         efficient_passes, greedy, lazy, pool_size_for_budget, pooled, windowed,
                                         windowed_passes)
from eagle_pipelines.core.targets import resolve_targets
from eagle_pipelines.models.base import Answer

STRATEGIES: dict[str, Callable] = {"pooled": pooled, "greedy": greedy, "efficient": efficient, "lazy": lazy,
                                   "bidirectional": bidirectional, "windowed": windowed}
#: the fewest pixels a region may hold on average: n_regions is refused beyond H·W / MIN_REGION_PIXELS of the image
#: (the smaller of the image as given and at the model's resolution). A 4x4 block is about the smallest area SLICO
#: can still place by colour; beyond it the regions become single pixels and the search cost (greedy: n(n+1)
#: forward passes) explodes for no information.
MIN_REGION_PIXELS = 16
#: searches expected to take more forward passes than this are logged as a warning (the others at DEBUG, so a
#: pipeline's log does not get a line per attribution; eagle-explain prints them all)
LONG_SEARCH = 20_000
logger = logging.getLogger(__name__)

ALLOWED = {
    "strategy": f"one of {sorted(STRATEGIES)}",
    "lambda1": "a finite number >= 0 (lambda1 + lambda2 > 0)",
    "lambda2": "a finite number >= 0 (lambda1 + lambda2 > 0)",
    "batch_size": "an integer >= 1",
    "memory_budget_mb": "None (what the device has), 0 (no planning) or a finite number of MB > 0",
    "n_regions": "an integer from 2 to 65536 (parameters.MAX_SEGMENTS), at most one per 16 pixels of the image",
}


def _search_models() -> dict:
    from eagle_pipelines.parameters import EfficientParams, LazyParams, PooledParams, WindowedParams

    return {"pooled": PooledParams, "efficient": EfficientParams, "lazy": LazyParams,
            "bidirectional": EfficientParams, "windowed": WindowedParams}


def check_arguments(prompt=None, strategy: str = "pooled", n_regions: int = 64, lambda1: float = 1.0,
                    lambda2: float = 1.0, batch_size: int = 32, memory_budget_mb: float | None = None,
                    search_params: dict | None = None, check_prompt: bool = True) -> None:
    """Validates ``explain``'s settings with the pipelines' own parameter models, so that explain() and a
    pipeline refuse the same values: `strategy`, the lambdas, `batch_size`, `memory_budget_mb` and
    `search_params` as ``params:attribution`` (``AttributionParams``: finite numbers, not both λ zero, the
    strategy's ``PooledParams`` / ``EfficientParams`` / ``LazyParams``), `n_regions` as
    ``params:superpixels.n_segments`` (``SuperpixelParams``: an integer, not a bool, from 2 to MAX_SEGMENTS); plus a
    prompt. A wrong one is a ValueError naming the argument, the value and the allowed range."""
    from pydantic import ValidationError

    from eagle_pipelines.parameters import AttributionParams, SuperpixelParams

    if check_prompt and (not isinstance(prompt, str) or not prompt.strip()):
        raise ValueError(f"prompt must be a non-empty string (the question asked about the image); got {prompt!r}")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {sorted(STRATEGIES)}")
    regions = n_regions.item() if isinstance(n_regions, np.integer) else n_regions
    try:
        SuperpixelParams(n_segments=regions)
    except ValidationError as exc:
        if isinstance(regions, int) and not isinstance(regions, bool) and regions < 2:
            raise ValueError(f"n_regions must be at least 2 (got {n_regions!r}): EAGLE orders the image's regions; "
                             f"allowed: {ALLOWED['n_regions']}") from None
        raise ValueError(f"n_regions must be {ALLOWED['n_regions']}; got {n_regions!r} "
                         f"({exc.errors()[0]['msg']})") from None
    given = {"lambda1": lambda1, "lambda2": lambda2, "batch_size": batch_size, "memory_budget_mb": memory_budget_mb}
    for name, value in given.items():  # numbers only: the model would read "1" or True as one
        if isinstance(value, bool) or (value is not None and not isinstance(value, (int, float, np.number))):
            raise ValueError(f"{name} must be {ALLOWED[name]}; got {value!r}")
    model = _search_models().get(strategy)
    if search_params and model is None:
        raise ValueError(f"strategy {strategy!r} takes no search_params; got {search_params!r}")
    group = {"bidirectional": "efficient"}.get(strategy, strategy)
    try:
        AttributionParams(strategy=strategy, **{k: v.item() if isinstance(v, np.generic) else v
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
                             f"parameters.{model.__name__}") from None
        raise ValueError(str(err.get("ctx", {}).get("error", err["msg"]))) from None


def max_regions(*shapes: tuple[int, ...]) -> int:
    """The most regions an image of these (H, W, ...) shapes can hold: H·W / MIN_REGION_PIXELS of the smallest."""
    return min(int(shape[0]) * int(shape[1]) for shape in shapes) // MIN_REGION_PIXELS


def expected_forward_passes(strategy: str, n: int, search_params: dict | None = None) -> tuple[int, bool]:
    """(forward passes, exact) of `strategy` over `n` regions, as ``core/search.py`` counts them (one per masked
    image): greedy n(n+1); pooled 2n + K(K−1) + 2(n−K) for its pool of K; windowed ``windowed_passes``;
    efficient and bidirectional by replaying their schedules (``core/search.py``); lazy only a lower bound,
    2 + 2n + 2·Σ min(refresh, remaining) (stale bounds may need more rounds)."""
    params = dict(search_params or {})
    model = _search_models().get(strategy)
    if model is not None:
        params = model.model_validate(params).model_dump()
    if strategy == "greedy":
        return n * (n + 1), True
    if strategy == "pooled":
        k = min(n, params["pool_size"] if params["pool_size"] is not None
                else pool_size_for_budget(n, params["budget"]))
        return 2 * n + k * (k - 1) + 2 * (n - k), True
    if strategy == "lazy":
        return 2 + 2 * n + 2 * sum(min(params["refresh"], n - step) for step in range(1, n)), False
    if strategy == "efficient":
        return efficient_passes(n, **params), True
    if strategy == "bidirectional":
        return bidirectional_passes(n, **params), True
    if strategy == "windowed":
        return windowed_passes(n, **params), True
    raise ValueError(f"unknown strategy {strategy!r}; choose one of {sorted(STRATEGIES)}")


def load_model(path: str | None = None, family: str = "auto", dtype: str = "float32", device: str = "cpu",
               device_map: str | None = None, api_base: str | None = None, api_model: str | None = None,
               backend: str = "transformers", **options):
    """Loads a saved model (a local folder, never downloads) as a model adapter: `family` ``auto`` picks the
    adapter from the checkpoint's config.json (``qwen_vl``, ``llava``, ``internvl``; docs/models.md); `dtype`
    ``auto`` is bfloat16/float16 on CUDA and float32 on the CPU; `device_map` (e.g. ``auto``) spreads the
    weights over the available devices instead of `device`; `options` are the family's (InternVL:
    ``max_tiles``). A folder that is not there or not a model is a ``CheckpointError`` (a ValueError); one whose
    files cannot be read (a corrupt config, tokenizer or weights file) a ValueError naming the folder and the error.

    `api_base` and `api_model` instead: the model behind an OpenAI-compatible endpoint (`options`: ``api_key``,
    ``max_requests``, ``max_concurrency``, ``cache_dir``... of ``models/api_model.py: ApiParams``; docs/api.md).
    `backend` ``vllm``: the checkpoint at `path` generated and scored by an in-process vLLM engine (a GPU;
    `options` go to ``vllm.LLM``; ``models/vllm_backend.py``)."""
    from eagle_pipelines.models.checkpoint import CheckpointError, ModelCheckpoint

    if api_base is not None or api_model is not None:
        if not api_base or not api_model or path is not None:
            raise ValueError("an API model needs both api_base and api_model (and no path); got "
                             f"api_base={api_base!r}, api_model={api_model!r}, path={path!r}")
        from eagle_pipelines.models.api_model import load_api_model

        return load_api_model(api_base, api_model, **options)
    if path is None:
        raise ValueError("load_model needs a model folder (path) or an endpoint (api_base and api_model)")
    if backend == "vllm":
        from eagle_pipelines.models.vllm_backend import VllmAdapter

        return VllmAdapter.from_pretrained(path, family=family, dtype=dtype, **options)
    if backend != "transformers":
        raise ValueError(f"backend must be 'transformers' or 'vllm'; got {backend!r}")
    try:
        return ModelCheckpoint(path=path, family=family, dtype=dtype, device=device, device_map=device_map,
                               options=options).load()
    except (CheckpointError, FileNotFoundError, ValueError):
        raise
    except Exception as exc:  # noqa: BLE001 - transformers, tokenizers and safetensors raise many kinds
        raise ValueError(f"the model in '{path}' cannot be loaded ({type(exc).__name__}: {exc})") from None


def explain(model, image, prompt: str, tokens=None, strategy: str = "pooled", n_regions: int = 64,
            lambda1: float = 1.0, lambda2: float = 1.0, batch_size: int = 32,
            memory_budget_mb: float | None = None, answer: Answer | None = None,
            regions: RegionMap | None = None, search_params: dict | None = None,
            slic_params: dict | None = None, progress: bool = False, meta: dict | None = None,
            compose: str = "pixel_values", max_new_tokens: int = 32, **video_options) -> Attribution:
    """Explains `model`'s answer to `prompt` about `image`.

    Args:
        image: an (H, W, 3) uint8 RGB array, a grey array, floats in [0, 1], a PIL image or an image file path
            (``core/images.py: as_rgb``); the attribution is made at the model's resolution.
        tokens: None (every answer token: sentence level), positions in the answer, or words/phrases
            (word level, e.g. ``["red", "circle"]``).
        strategy: ``pooled`` (default; this project's own strategy, not the paper's: greedy inside a pool of
            the regions best ranked alone, the rest in that rank, about 10 % of greedy's passes; a region worthless
            alone but decisive in context never enters the pool; `search_params`: pool_size, budget), ``greedy``
            (the paper's definition, n(n+1) forward passes), ``efficient`` (the paper's faster variant as the
            authors' code runs it; `search_params`: search_scope, pending_samples, update_step),
            ``bidirectional`` (this project's earlier reading of it; the same `search_params`) or ``lazy`` (lazy
            greedy; `search_params`: refresh). See docs/method.md.
        batch_size, memory_budget_mb: the most masked images per forward pass, lowered to fit the memory budget
            (MB; None: what the device has; 0: no planning) and halved on out-of-memory.
        answer: the answer to explain; generated greedily (at most `max_new_tokens` tokens) when not given.
        regions: a precomputed label map (at model resolution; at the photo's with ``compose="processor"``);
            SLICO with about `n_regions` otherwise (`slic_params`: ``backend`` ``skimage`` (default) or ``opencv``
            (the reference's OpenCV SLICO) and that backend's settings). Either way at most
            H·W / MIN_REGION_PIXELS regions (a ValueError naming the image's size beyond it).
        compose: ``pixel_values`` (default: regions and masks on the image the model sees, masked inputs composed
            directly) or ``processor`` (the reference's protocol: regions and masks on the photo itself, the image
            processor re-run on every masked copy, so the attribution is at the photo's resolution; slower, and
            the resize then blends masked edges as the paper's scripts do).
        video_options: for a video (`image` a video file, a folder of frames, a ``Clip`` or an (N, H, W, 3)
            array): ``n_frames`` (8), ``rows``/``cols`` (5 × 5 cells per frame), ``region_method`` (``grid`` or
            ``slico``), ``n_segments``, ``fps``; the result is a ``VideoAttribution`` (``api_video.explain_video``,
            docs/video.md).
    """
    from eagle_pipelines.api_video import explain_video, is_video_input

    if is_video_input(image):  # a video file, a folder of frames, a Clip or (N, H, W, 3): docs/video.md
        return explain_video(model, image, prompt, tokens=tokens, strategy=strategy, lambda1=lambda1,
                             lambda2=lambda2, batch_size=batch_size, memory_budget_mb=memory_budget_mb,
                             answer=answer, regions=regions, search_params=search_params, slic_params=slic_params,
                             progress=progress, meta=meta, max_new_tokens=max_new_tokens, **video_options)
    if video_options:
        raise ValueError(f"{sorted(video_options)} apply to a video (a video file, a folder of frames or an "
                         f"(N, H, W, 3) array); the image takes none")
    check_arguments(prompt, strategy, n_regions if regions is None else 2, lambda1, lambda2, batch_size,
                    memory_budget_mb, search_params)
    if answer is None and (isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int)
                           or max_new_tokens < 1):
        raise ValueError(f"max_new_tokens must be an integer >= 1; got {max_new_tokens!r}")
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
    passes, exact = expected_forward_passes(strategy, regions.n_regions, search_params)
    logger.log(logging.WARNING if passes > LONG_SEARCH else logging.DEBUG,  # eagle-explain prints both
               "%s%s search over %d regions: %s%d forward passes%s",
               f"{(meta or {})['image']}: " if "image" in (meta or {}) else "", strategy, regions.n_regions,
               "" if exact else "at least ", passes,
               " (a long search: fewer regions or strategy 'pooled' cut it)" if passes > LONG_SEARCH else "")
    scorer = model.scorer(image, prompt, answer.token_ids, positions, batch_size=batch_size, compose=compose,
                          memory_budget_mb=memory_budget_mb)
    if hasattr(scorer, "announce"):  # an API model: the requests the search will send, against its budget
        scorer.announce(passes, exact, f"{(meta or {})['image']}: " if "image" in (meta or {}) else "")
    return search_attribution(Attribution, model, scorer, regions, answer, positions, prompt, strategy, lambda1,
                              lambda2, search_params, progress, meta)


def search_attribution(cls, model, scorer, regions: RegionMap, answer: Answer, positions, prompt: str,
                       strategy: str, lambda1: float, lambda2: float, search_params: dict | None, progress: bool,
                       meta: dict | None):
    """Runs `strategy` over `regions` with `scorer` (an image's or a clip's TokenScorer) and returns the
    `cls` (``Attribution`` or ``VideoAttribution``) record of it: order, curves, targets, cost, the regions'
    parameters and the scorer's memory plan, then `meta`."""
    counting = CountingScorer(RegionScorer(scorer, regions), regions.n_regions)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=regions.n_regions, desc=f"{strategy} search", unit="region", leave=False)
    start = time.perf_counter()
    with PeakMemory(model.device) as peak:
        trace = STRATEGIES[strategy](counting, lambda1=lambda1, lambda2=lambda2, **(search_params or {}),
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
        answer=answer.text, prompt=prompt, lambda1=lambda1, lambda2=lambda2, strategy=strategy,
        search_params=dict(search_params or {}), forward_passes=counting.forward_passes, seconds=seconds,
        peak_memory_mb=peak.mb, meta={"regions": regions.params, "n_regions": regions.n_regions,
                                     "memory_plan": getattr(scorer, "memory_plan", {}),
                                     **(scorer.attribution_meta() if hasattr(scorer, "attribution_meta") else {}),
                                     **(meta or {})},
    )


def generate(model, image, prompt: str, guidance=None, max_new_tokens: int = 32):
    """The model's greedy answer to `prompt` about `image` (any form ``explain`` takes), as an ``Answer``.

    `guidance` (a ``parameters.GuidanceParams`` or its dict, e.g. ``{"strength": 1.0, "b": -1.0}``): evidence-
    guided decoding (``models/guidance.py``, docs/mitigation.md), greedy otherwise unchanged; the returned
    ``GuidedAnswer`` has the ``answer``, its cost (``decode_passes``, ``evidence_passes``, ``seconds``) and the
    evidence vector before each step. Without it, the model's own ``generate``."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1; got {max_new_tokens!r}")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt must be a non-empty string; got {prompt!r}")
    given = as_rgb(image)
    check_size(given)
    if guidance is None:
        return model.generate(model.model_image(given), prompt, max_new_tokens=max_new_tokens)
    from pydantic import ValidationError

    from eagle_pipelines.models.guidance import guided_generate
    from eagle_pipelines.parameters import GuidanceParams

    if not hasattr(model, "model") or not hasattr(model.model, "get_decoder"):
        raise ValueError(f"guidance needs a transformers model (load_model of a checkpoint folder); got "
                         f"{type(model).__name__}")
    try:
        guidance = guidance if isinstance(guidance, GuidanceParams) else GuidanceParams.model_validate(guidance)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ValueError(f"guidance[{'.'.join(str(p) for p in err['loc'])!r}]: {err['msg']} (got "
                         f"{err.get('input')!r}); fields: {sorted(GuidanceParams.model_fields)}") from None
    return guided_generate(model, given, prompt, guidance, max_new_tokens)


def diagnose(model, image, prompt: str, answer: Answer | None = None, top_k: int = 3, n_regions: int = 16,
             strategy: str = "pooled", eps: float = 1e-3, prior_threshold: float = 0.5, max_new_tokens: int = 32,
             regions: RegionMap | None = None):
    """Necessity and sufficiency of every answer token at every layer (``core/diagnostics.py``): the logit lens
    with the image, without it, and with only the token's top-k EAGLE regions (one word-level attribution per
    token over `n_regions` SLICO regions, or `regions`). Returns a ``Diagnostics`` (``.table()``, ``.plot()``)."""
    from eagle_pipelines.core.diagnostics import diagnose as run
    from eagle_pipelines.models.guidance import LogitLens

    check_arguments(prompt, strategy, n_regions if regions is None else 2)
    seen = model.model_image(as_rgb(image))
    if answer is None:
        answer = model.generate(seen, prompt, max_new_tokens=max_new_tokens)
    if not answer.token_ids:
        raise ValueError("the answer is empty: no tokens to diagnose")
    regions = regions if regions is not None else superpixels(seen, n_segments=n_regions)
    return run(LogitLens(model), seen, prompt, answer.token_ids, list(answer.tokens),
               lambda t: explain(model, seen, prompt, tokens=[t], answer=answer, regions=regions,
                                 strategy=strategy), top_k=top_k, eps=eps, prior_threshold=prior_threshold,
               answer=answer.text)
