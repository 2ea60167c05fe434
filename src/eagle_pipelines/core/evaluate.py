"""Scoring one sample under the shared protocol (needs a TokenScorer, not a model).

- Region protocol: a method that orders the superpixels (EAGLE, the random floor) is scored by the curves of its
  prefix sets: EAGLE's own recorded curves, the random order's computed the same way.
- Pixel protocol: any pixel map (EAGLE's saliency, a baseline's map, the random floor's) is ranked into `steps`
  keep/remove steps of equal pixel fractions, scored with the same scorer.
- ``MaskBank``: the scorer the methods of one target share. Each distinct keep-mask is scored once (step 0, the
  full image and the black image of every method; the steps of methods whose rankings agree), masks whose
  probabilities are already known (EAGLE's search record of its prefix sets) cost no pass, and the masks of all
  the methods are gathered first and scored in one batched call.
"""

from __future__ import annotations

import hashlib
import time
from contextlib import contextmanager

import numpy as np
from eagle_pipelines.core.geometry import PhotoGrid
from eagle_pipelines.core.metrics import Curves, faithfulness, pixel_order_masks, point_game
from eagle_pipelines.core.regions import RegionMap
from eagle_pipelines.core.scoring import RegionScorer, TokenScorer
from eagle_pipelines.core.search import CountingScorer, _prefix_sets, complete_trace


class MaskBank:
    """A TokenScorer over `scorer` that scores each distinct keep-mask once.

    Masks are told apart by a digest of their bits. ``know`` files masks whose probabilities exist already (no pass);
    ``want`` queues masks; ``flush`` scores every queued mask in one call of `scorer` (which chunks it into its
    batches); calling the bank returns each mask's probabilities, scoring what is still unknown. Inside
    ``gathering()`` a call only queues its masks and returns zeros, so running the methods' own code once there
    gathers exactly the masks they will ask for. The probabilities are the scorer's: the same as scoring each
    method alone wherever the scorer gives a mask the same probabilities in any batch (the models of this
    project on a CPU; tests/test_evaluation_reuse.py), so every metric is unchanged.

    ``forward_passes`` counts the masks sent to `scorer`; ``reused`` the masks served without a pass."""

    def __init__(self, scorer: TokenScorer):
        self.scorer = scorer
        self.target_positions = scorer.target_positions
        self._probs: dict[bytes, np.ndarray] = {}
        self._pending: dict[bytes, np.ndarray] = {}
        self._gathering = False
        self.forward_passes = 0
        self.reused = 0

    @staticmethod
    def _key(mask: np.ndarray) -> bytes:
        """The mask's identity: a 128-bit digest of its shape and bits (a bank holds many masks of large images)."""
        digest = hashlib.blake2b(np.asarray(mask.shape, dtype=np.int64).tobytes(), digest_size=16)
        digest.update(np.packbits(mask).tobytes())
        return digest.digest()

    def know(self, masks: np.ndarray, probs: np.ndarray) -> None:
        """Files the (B, T) probabilities of (B, H, W) masks that were scored already (the first value stays)."""
        probs = np.asarray(probs, dtype=np.float64)
        if len(masks) != len(probs):
            raise ValueError(f"{len(masks)} masks but {len(probs)} rows of probabilities")
        for mask, p in zip(np.asarray(masks, dtype=bool), probs):
            self._probs.setdefault(self._key(mask), p)

    def want(self, masks: np.ndarray) -> None:
        """Queues the masks not known yet (each distinct mask once)."""
        for mask in np.asarray(masks, dtype=bool):
            key = self._key(mask)
            if key not in self._probs:
                self._pending.setdefault(key, mask)

    def flush(self) -> None:
        """Scores every queued mask in one call of the scorer."""
        if not self._pending:
            return
        keys = list(self._pending)
        probs = np.asarray(self.scorer(np.stack([self._pending[k] for k in keys])), dtype=np.float64)
        self.forward_passes += len(keys)
        self._probs.update(zip(keys, probs))
        self._pending.clear()

    @contextmanager
    def gathering(self):
        """Calls inside only queue their masks (and return zeros); ``flush`` afterwards scores them together."""
        self._gathering = True
        try:
            yield self
        finally:
            self._gathering = False

    def __call__(self, keep_masks: np.ndarray) -> np.ndarray:
        keep_masks = np.asarray(keep_masks, dtype=bool)
        if self._gathering:
            self.want(keep_masks)
            return np.zeros((len(keep_masks), len(self.target_positions)))
        keys = [self._key(m) for m in keep_masks]
        before = sum(k in self._probs for k in keys)
        self.want(keep_masks)
        self.flush()
        self.reused += before
        if not keys:
            return np.zeros((0, len(self.target_positions)))
        return np.stack([self._probs[k] for k in keys])


class ScorerSetup:
    """What the scorers of one evaluation run share beyond their masks: a memory plan per ``plan_key`` (the first
    scorer of a kind measures it with its probe passes, the others adopt it: ``BatchedTokenScorer.adopt_plan``),
    and patch-embedding reuse where the scorer offers it (``share_patches``: a patch a mask keeps or removes whole
    is embedded once per image). Neither changes a probability: the plan only sets how many masks go in one
    pass, and the models give a mask the same probabilities in any batch. ``plans_measured`` and
    ``plans_adopted`` count them."""

    def __init__(self):
        self._plans: dict[tuple, dict] = {}
        self.plans_measured = self.plans_adopted = 0

    def prepare(self, scorer):
        """`scorer`, with a plan of its kind adopted and its patch sharing on (where it has them)."""
        key = getattr(scorer, "plan_key", None)
        if key is not None and key in self._plans:
            scorer.adopt_plan(self._plans[key])
            self.plans_adopted += 1
        share = getattr(scorer, "share_patches", None)
        if share is not None:
            share()
        return scorer

    def keep(self, scorer) -> None:
        """Files the plan `scorer` measured, for the scorers of its kind that come after it."""
        key, plan = getattr(scorer, "plan_key", None), getattr(scorer, "memory_plan", None)
        if key is not None and plan and key not in self._plans:
            self._plans[key] = dict(plan)
            self.plans_measured += 1


def prefix_masks(regions: RegionMap, order: np.ndarray) -> np.ndarray:
    """The keep-masks of the prefix sets of `order` (n, then their removals: 2n), as ``region_curves`` scores
    them."""
    sets = _prefix_sets(np.asarray(order, dtype=int), regions.n_regions)
    return regions.masks(np.concatenate([sets, ~sets]))


def know_record(bank: MaskBank, regions: RegionMap, order: np.ndarray, insertion: np.ndarray,
                deletion: np.ndarray) -> None:
    """Files a search's record (the prefix sets of its order, kept and removed) in `bank`: no pass for them."""
    bank.know(prefix_masks(regions, order), np.concatenate([insertion, deletion]))


def random_order(n: int, seed: int, *ids: int) -> np.ndarray:
    """A seeded random order of n regions, fixed per sample."""
    return np.random.default_rng([seed, *[int(i) for i in ids]]).permutation(n)


def order_saliency(order: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """A map that paints regions by rank: the first region 1, the last 0."""
    n = len(order)
    value = np.empty(n)
    value[order] = 1.0 - np.arange(n) / max(n - 1, 1)
    return value[labels].astype(np.float32)


def region_curves(scorer: TokenScorer, regions: RegionMap, order: np.ndarray) -> Curves:
    """Curves of the prefix sets of `order` (2n forward passes)."""
    counting = CountingScorer(RegionScorer(scorer, regions), regions.n_regions)
    trace = complete_trace(counting, np.asarray(order), {}, 1.0, 1.0)
    return Curves(regions.cumulative_area(trace.order), trace.insertion, trace.deletion)


def pixel_curves(scorer: TokenScorer, saliency: np.ndarray, steps: int, ties: str = "stable") -> Curves:
    """Curves of a pixel map under the pixel protocol (2·steps forward passes); `ties`: ``pixel_ranking``."""
    masks, area = pixel_order_masks(saliency, steps, ties)
    probs = scorer(np.concatenate([masks, ~masks]))
    return Curves(area, probs[:steps], probs[steps:])


def object_at(grid: PhotoGrid, mask: np.ndarray, bbox) -> tuple[np.ndarray, np.ndarray]:
    """An object's mask and COCO box (photo pixels) as masks of the working image, carried through the model
    processor's own resize, crop and padding (``grid``: ``PhotoGrid``). Parts the crop cuts off are dropped; an
    object wholly outside the crop gives empty masks (its Point Game is then undefined: NaN)."""
    return grid.to_model(mask), grid.box_mask(bbox)


def score_methods(scorer: TokenScorer, maps: dict[str, tuple[np.ndarray, Curves | None]], steps: int,
                  obj: tuple[np.ndarray, np.ndarray] | None = None, ties: str = "stable") -> list[dict]:
    """Metric rows for each method: its own region curves when given, and the pixel protocol for its map."""
    rows = []
    for method, (saliency, own) in maps.items():
        protocols = ([("regions", own)] if own is not None else []) + [("pixels", None)]
        for protocol, curves in protocols:
            start = time.perf_counter()
            if curves is None:
                curves = pixel_curves(scorer, saliency, steps, ties)
            x, ins = curves.insertion_curve()
            row = {"method": method, "protocol": protocol, **faithfulness(curves),
                   "eval_seconds": time.perf_counter() - start,
                   "curve": {"x": x.tolist(), "insertion": ins.tolist(),
                             "deletion": curves.deletion_curve()[1].tolist()}}
            if obj is not None:
                mask, box = obj
                row["point_game_box"] = float(point_game(saliency, mask=box)) if box.any() else np.nan
                row["point_game_mask"] = float(point_game(saliency, mask=mask)) if mask.any() else np.nan
            rows.append(row)
    return rows
