"""Metrics of a clip's region order against a known cause: what happened in one frame at one place.

- ``prefix_curves``: insertion and deletion curves of a region order at `steps` evenly spaced prefix lengths (one
  protocol for every method: EAGLE's order and the random floor are scored at the same points; 2·steps passes).
- ``temporal_hit``: the first-ranked region lies in the event's frame ("which moment").
- ``st_point_game``: the spatio-temporal Point Game: the maximum of the order's map over the clip (the first-ranked
  region) lies in the event's frame *and* touches the event object's mask there ("which moment and which place";
  ``core.metrics.point_game`` on the (N, H, W) map, ties counting as hits).
"""

from __future__ import annotations

import numpy as np

from eagle_pipelines.core.evaluate import order_saliency
from eagle_pipelines.core.metrics import Curves, MetricError, point_game
from eagle_pipelines.core.regions import RegionMap, region_frames
from eagle_pipelines.core.scoring import RegionScorer, TokenScorer


def prefix_counts(n: int, steps: int) -> np.ndarray:
    """`steps` prefix lengths spread evenly over 1..n (ceil(i·n/steps), i = 1..steps; all n when steps >= n)."""
    if steps < 1:
        raise MetricError(f"steps must be positive, got {steps}")
    steps = min(steps, n)
    return np.unique(np.ceil(np.arange(1, steps + 1) * n / steps).astype(int))


def prefix_curves(scorer: TokenScorer, regions: RegionMap, order: np.ndarray, steps: int) -> Curves:
    """Curves of `order` at ``prefix_counts(n, steps)``: keep the first k regions (insertion) and remove them
    (deletion), x = the kept / removed share of the clip's pixels."""
    order = np.asarray(order)
    n = regions.n_regions
    if sorted(order.tolist()) != list(range(n)):
        raise MetricError(f"the order is not a permutation of the {n} regions")
    counts = prefix_counts(n, steps)
    sets = np.zeros((len(counts), n), dtype=bool)
    for i, k in enumerate(counts):
        sets[i, order[:k]] = True
    probs = RegionScorer(scorer, regions)(np.concatenate([sets, ~sets]))
    area = regions.cumulative_area(order)[counts - 1]
    return Curves(area, probs[:len(counts)], probs[len(counts):])


def temporal_hit(order: np.ndarray, regions: RegionMap, event_frame: int) -> bool:
    """True when the first region of `order` lies in frame `event_frame`."""
    return bool(region_frames(regions)[int(np.asarray(order)[0])] == int(event_frame))


def st_point_game(order: np.ndarray, regions: RegionMap, event_masks: np.ndarray) -> bool:
    """True when the maximum of the order's map (its first region) touches the event object's pixels, given as
    (N, H, W) masks that are empty outside the event frame."""
    masks = np.asarray(event_masks, dtype=bool)
    if masks.shape != regions.labels.shape:
        raise MetricError(f"event masks {masks.shape} and the clip's label map {regions.labels.shape} differ")
    return point_game(order_saliency(np.asarray(order), regions.labels), mask=masks)
