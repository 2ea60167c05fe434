"""The Python API (module `eagle_pipelines.api`): ``explain(model, image, prompt, tokens=..., strategy=...)``
returns an Attribution.

    from eagle_pipelines import explain, load_model
    model = load_model("data/06_models/toy_qwen2_5_vl")
    attribution = explain(model, image, "Describe the image.", tokens=["red", "circle"], n_regions=16)
    attribution.plot(image)
"""

from __future__ import annotations

import time
from collections.abc import Callable

from eagle_pipelines.core.attribution import Attribution
from eagle_pipelines.core.images import as_rgb
from eagle_pipelines.core.memory import PeakMemory
from eagle_pipelines.core.regions import RegionMap, slico
from eagle_pipelines.core.scoring import RegionScorer
from eagle_pipelines.core.search import CountingScorer, efficient, greedy, lazy, pooled
from eagle_pipelines.core.targets import resolve_targets
from eagle_pipelines.models.base import Answer

STRATEGIES: dict[str, Callable] = {"pooled": pooled, "greedy": greedy, "efficient": efficient, "lazy": lazy}


def load_model(path: str, family: str = "auto", dtype: str = "float32", device: str = "cpu",
               device_map: str | None = None, **options):
    """Loads a saved model (a local folder, never downloads) as a model adapter: `family` ``auto`` picks the
    adapter from the checkpoint's config.json (``qwen_vl``, ``llava``, ``internvl``; docs/models.md); `dtype`
    ``auto`` is bfloat16/float16 on CUDA and float32 on the CPU; `device_map` (e.g. ``auto``) spreads the
    weights over the available devices instead of `device`; `options` are the family's (InternVL:
    ``max_tiles``)."""
    from eagle_pipelines.io import VisionLanguageModelDataset

    return VisionLanguageModelDataset(path=path, family=family, dtype=dtype, device=device,
                                      device_map=device_map, options=options).load()


def explain(model, image, prompt: str, tokens=None, strategy: str = "pooled", n_regions: int = 64,
            lambda1: float = 1.0, lambda2: float = 1.0, batch_size: int = 32,
            memory_budget_mb: float | None = None, answer: Answer | None = None,
            regions: RegionMap | None = None, search_params: dict | None = None,
            slic_params: dict | None = None, progress: bool = False, meta: dict | None = None,
            compose: str = "pixel_values") -> Attribution:
    """Explains `model`'s answer to `prompt` about `image`.

    Args:
        image: an (H, W, 3) uint8 RGB array, a grey array, floats in [0, 1], a PIL image or an image file path
            (``core/images.py: as_rgb``); the attribution is made at the model's resolution.
        tokens: None (every answer token: sentence level), positions in the answer, or words/phrases
            (word level, e.g. ``["red", "circle"]``).
        strategy: ``pooled`` (default: greedy inside a pool of the best-ranked regions, the rest in first-step
            rank; `search_params`: pool_size, budget), ``greedy`` (the exact definition, n(n+1) forward passes),
            ``efficient`` (the paper's bidirectional variant; `search_params`: search_scope, pending_samples,
            update_step) or ``lazy`` (lazy greedy; `search_params`: refresh).
        batch_size, memory_budget_mb: the most masked images per forward pass, lowered to fit the memory budget
            (MB; None: what the device has; 0: no planning) and halved on out-of-memory.
        answer: the answer to explain; generated greedily when not given.
        regions: a precomputed label map at model resolution; SLICO with about `n_regions` otherwise.
        compose: ``pixel_values`` (masked inputs composed directly) or ``processor`` (the image processor re-run
            per masked copy, as the paper's scripts do; slower, same numbers).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {sorted(STRATEGIES)}")
    if regions is None and n_regions < 2:
        raise ValueError(f"n_regions must be at least 2 (got {n_regions}): EAGLE orders the image's regions")
    image = model.model_image(as_rgb(image))
    if answer is None:
        answer = model.generate(image, prompt)
    tok = model.processor.tokenizer
    positions = resolve_targets(tok.decode, answer.token_ids, tokens)
    if regions is None:
        regions = slico(image, n_segments=n_regions, **(slic_params or {}))
    if regions.labels.shape != image.shape[:2]:
        raise ValueError(f"label map {regions.labels.shape} does not match the model image {image.shape[:2]}")
    scorer = model.scorer(image, prompt, answer.token_ids, positions, batch_size=batch_size, compose=compose,
                          memory_budget_mb=memory_budget_mb)
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
    return Attribution(
        order=trace.order, insertion=trace.insertion, deletion=trace.deletion, objective=trace.objective,
        area=area, full_score=trace.insertion[-1].copy(), empty_score=trace.deletion[-1].copy(),
        labels=regions.labels, target_positions=positions,
        target_token_ids=[int(answer.token_ids[p]) for p in positions],
        target_words=[tok.decode([answer.token_ids[p]]).strip() for p in positions],
        answer=answer.text, prompt=prompt, lambda1=lambda1, lambda2=lambda2, strategy=strategy,
        search_params=dict(search_params or {}), forward_passes=counting.forward_passes, seconds=seconds,
        peak_memory_mb=peak.mb, meta={"regions": regions.params, "n_regions": regions.n_regions,
                                     "memory_plan": getattr(scorer, "memory_plan", {}), **(meta or {})},
    )
