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

from pydantic import ValidationError

from eagle_pipelines.api_video import explain_video, is_video_input
from eagle_pipelines.core.attribution import Attribution
from eagle_pipelines.core.diagnostics import diagnose as run_diagnostics
from eagle_pipelines.core.images import as_rgb, check_size
from eagle_pipelines.core.regions import RegionMap, superpixels
from eagle_pipelines.core.strategies import STRATEGIES, SearchParams  # noqa: F401 - STRATEGIES: eagle-explain --strategy
from eagle_pipelines.engine import (ALLOWED, LONG_SEARCH, MIN_REGION_PIXELS, check_arguments,  # noqa: F401
                                    check_max_new_tokens, expected_forward_passes, explain_image, max_regions)
from eagle_pipelines.models.base import Answer
from eagle_pipelines.models.checkpoint import CheckpointError, ModelCheckpoint
from eagle_pipelines.models.guidance import GuidanceParams, LogitLens, guided_generate

#: explain()'s search arguments, which a ``params`` object replaces
SEARCH_ARGUMENTS = {"strategy": None, "lambda1": 1.0, "lambda2": 1.0, "batch_size": 32, "memory_budget_mb": None,
                    "search_params": None}


def given_search(params: SearchParams | None, **arguments) -> SearchParams | None:
    """`params` when given and no search argument differs from its default (both would be ambiguous), else None."""
    if params is None:
        return None
    if not isinstance(params, SearchParams):
        raise ValueError(f"params must be a SearchParams (core/strategies.py; e.g. parameters.AttributionParams); "
                         f"got {type(params).__name__}")
    changed = sorted(k for k, v in arguments.items() if v != SEARCH_ARGUMENTS[k])
    if changed:
        raise ValueError(f"give the search either as params or as {changed}, not both")
    return params


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


def explain(model, image, prompt: str, tokens=None, strategy: str | None = None, n_regions: int = 64,
            lambda1: float = 1.0, lambda2: float = 1.0, batch_size: int = 32,
            memory_budget_mb: float | None = None, answer: Answer | None = None,
            regions: RegionMap | None = None, search_params: dict | None = None,
            slic_params: dict | None = None, progress: bool = False, meta: dict | None = None,
            compose: str = "pixel_values", max_new_tokens: int = 32, params: SearchParams | None = None,
            prompt_units=None, **video_options) -> Attribution:
    """Explains `model`'s answer to `prompt` about `image`.

    Args:
        image: an (H, W, 3) uint8 RGB array, a grey array, floats in [0, 1], a PIL image or an image file path
            (``core/images.py: as_rgb``); the attribution is made at the model's resolution.
        tokens: None (every answer token: sentence level), positions in the answer, or words/phrases
            (word level, e.g. ``["red", "circle"]``).
        strategy: None (default): ``pooled`` for the image's regions, ``efficient`` over a joint set
            (`prompt_units`: a question's words and its object's regions act together and ``pooled`` ranks them
            last; docs/method.md, "Joint attribution"). ``pooled``: this project's own strategy, not the paper's: greedy inside a pool of
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
        params: the search settings as one validated ``SearchParams`` (e.g. a pipeline's ``AttributionParams``)
            instead of strategy, lambda1, lambda2, batch_size, memory_budget_mb and search_params.
        prompt_units: ``"words"`` (every word of the prompt) or a list of words/phrases of the prompt: one order
            over the image's regions and these prompt units together (a removed word's tokens are replaced by the
            pad token); the result is a ``core/joint.py: JointAttribution`` (docs/method.md, "Joint attribution").

    The work is ``engine.explain_image`` (``engine.explain_clip`` for a video); this facade turns the keyword
    arguments into the validated ``SearchParams`` it takes.
    """
    if strategy is None and params is None:
        strategy = "pooled" if prompt_units is None else "efficient"
    search = dict(strategy=strategy, lambda1=lambda1, lambda2=lambda2, batch_size=batch_size,
                  memory_budget_mb=memory_budget_mb, search_params=search_params)
    params = given_search(params, **search)
    if prompt_units is not None and is_video_input(image):
        raise ValueError("prompt_units apply to an image; a video's prompt is not attributed")
    if is_video_input(image):  # a video file, a folder of frames, a Clip or (N, H, W, 3): docs/video.md
        return explain_video(model, image, prompt, tokens=tokens, answer=answer, regions=regions,
                             slic_params=slic_params, progress=progress, meta=meta, max_new_tokens=max_new_tokens,
                             **({"params": params} if params is not None else search), **video_options)
    if video_options:
        raise ValueError(f"{sorted(video_options)} apply to a video (a video file, a folder of frames or an "
                         f"(N, H, W, 3) array); the image takes none")
    if params is None:
        params = check_arguments(prompt, n_regions=n_regions if regions is None else 2, **search)
    return explain_image(model, image, prompt, params, tokens=tokens, n_regions=n_regions, answer=answer,
                         regions=regions, slic_params=slic_params, progress=progress, meta=meta, compose=compose,
                         max_new_tokens=max_new_tokens, prompt_units=prompt_units)


def generate(model, image, prompt: str, guidance=None, max_new_tokens: int = 32):
    """The model's greedy answer to `prompt` about `image` (any form ``explain`` takes), as an ``Answer``.

    `guidance` (a ``parameters.GuidanceParams`` or its dict, e.g. ``{"strength": 1.0, "b": -1.0}``): evidence-
    guided decoding (``models/guidance.py``, docs/mitigation.md), greedy otherwise unchanged; the returned
    ``GuidedAnswer`` has the ``answer``, its cost (``decode_passes``, ``evidence_passes``, ``seconds``) and the
    evidence vector before each step. Without it, the model's own ``generate``."""
    check_max_new_tokens(max_new_tokens)
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt must be a non-empty string; got {prompt!r}")
    given = as_rgb(image)
    check_size(given)
    if guidance is None:
        return model.generate(model.model_image(given), prompt, max_new_tokens=max_new_tokens)
    if not hasattr(model, "model") or not hasattr(model.model, "get_decoder"):
        raise ValueError(f"guidance needs a transformers model (load_model of a checkpoint folder); got "
                         f"{type(model).__name__}")
    try:
        guidance = guidance if isinstance(guidance, GuidanceParams) else GuidanceParams.model_validate(guidance)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ValueError(f"guidance[{'.'.join(str(p) for p in err['loc'])!r}]: {err['msg']} (got "
                         f"{err.get('input')!r}); fields: {sorted(GuidanceParams.model_fields)}") from None
    return guided_generate(model, given, prompt, guidance, max_new_tokens, explain=explain_image)


def diagnose(model, image, prompt: str, answer: Answer | None = None, top_k: int = 3, n_regions: int = 16,
             strategy: str = "pooled", eps: float = 1e-3, prior_threshold: float = 0.5, max_new_tokens: int = 32,
             regions: RegionMap | None = None):
    """Necessity and sufficiency of every answer token at every layer (``core/diagnostics.py``): the logit lens
    with the image, without it, and with only the token's top-k EAGLE regions (one word-level attribution per
    token over `n_regions` SLICO regions, or `regions`). Returns a ``Diagnostics`` (``.table()``, ``.plot()``)."""
    check_arguments(prompt, strategy, n_regions if regions is None else 2)
    seen = model.model_image(as_rgb(image))
    if answer is None:
        answer = model.generate(seen, prompt, max_new_tokens=max_new_tokens)
    if not answer.token_ids:
        raise ValueError("the answer is empty: no tokens to diagnose")
    regions = regions if regions is not None else superpixels(seen, n_segments=n_regions)
    return run_diagnostics(LogitLens(model), seen, prompt, answer.token_ids, list(answer.tokens),
               lambda t: explain(model, seen, prompt, tokens=[t], answer=answer, regions=regions,
                                 strategy=strategy), top_k=top_k, eps=eps, prior_threshold=prior_threshold,
               answer=answer.text)
