"""The windowed search strategy (core/search.py: windowed) on synthetic scorers: its order on a hand case, its pass
count, both curves of every prefix, and greedy as its limit."""

from __future__ import annotations

import numpy as np
import pytest

from eagle_pipelines.api import check_arguments, expected_forward_passes
from eagle_pipelines.core.search import (CountingScorer, greedy, objective_of, pooled, windowed, windowed_depth,
                                         windowed_passes)


def completing_pair(keep: np.ndarray) -> np.ndarray:
    """Six regions. Region 0 carries the answer alone; region 5 completes it (0 and 5 together: +0.35) but kept
    without 0 it pulls the answer away (-0.3), and with 0 present regions 3 and 4 together stand in for it, so
    removing 5 alone changes little; regions 1-3 add 0.02 each. p = 0.25 + ... clipped to [0, 1]."""
    out = []
    for row in np.asarray(keep, dtype=bool):
        has = set(np.flatnonzero(row).tolist())
        p = 0.25 + 0.3 * (0 in has) + 0.02 * len(has & {1, 2, 3})
        if 0 in has:
            p += 0.35 if 5 in has else 0.3 if {3, 4} <= has else 0.0
        elif 5 in has:
            p -= 0.3
        out.append([min(max(p, 0.0), 1.0)])
    return np.array(out)


def test_the_window_takes_the_region_ranked_last_alone_that_completes_the_first():
    # singles (keep {v} + 1 - keep(all but v)), by hand: 0: 0.55 + 1 - 0.06 = 1.49; 1-3: 0.27 + 0.06 = 0.33;
    # 4: 0.25 + 0.04 = 0.29; 5: 0 + (1 - 0.91) = 0.09, so the rank is 0, 1, 2, 3, 4, 5: region 5 last.
    # Step 2 on top of {0}: 5 scores 0.90 + (1 - 0.31) = 1.59, 1 scores 0.57 + (1 - 0) = 1.57, 4 scores 1.54.
    scorer = CountingScorer(completing_pair, 6)
    keep, remove = scorer.keep_and_remove(np.eye(6, dtype=bool))
    assert np.argsort(-objective_of(keep, remove, 1, 1), kind="stable").tolist() == [0, 1, 2, 3, 4, 5]
    assert greedy(CountingScorer(completing_pair, 6)).order.tolist()[:2] == [0, 5]
    # window {1 (top), 5 (bottom)} for one refined step: 5 is placed second, the rest follow in rank
    assert windowed(CountingScorer(completing_pair, 6), top=1, bottom=1, depth=1).order.tolist() == [0, 5, 1, 2, 3, 4]
    # without the bottom of the rank (or in a pool of the best-ranked, as pooled) region 5 comes last
    assert windowed(CountingScorer(completing_pair, 6), top=2, bottom=0, depth=1).order.tolist() == [0, 1, 2, 3, 4, 5]
    assert pooled(CountingScorer(completing_pair, 6), pool_size=3).order.tolist()[-1] == 5


def synergy_scorer(n: int, tokens: int = 3, seed: int = 0):
    """A non-additive scorer: per token a sigmoid of additive weights plus pairwise synergies."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1, (n, tokens))
    pairs = rng.normal(0, 0.6, (n, n, tokens))

    def score(keep):
        keep = np.asarray(keep, dtype=float)
        z = keep @ w + np.einsum("bi,ijt,bj->bt", keep, pairs, keep) / n - 1.0
        return 1 / (1 + np.exp(-z))

    return score


@pytest.mark.parametrize("n", [2, 3, 7, 17, 40, 64])
@pytest.mark.parametrize("params", [{}, {"top": 1, "bottom": 0, "depth": 3}, {"top": 3, "bottom": 2, "depth": 100},
                                    {"top": 8, "bottom": 0, "depth": None, "budget": 2.0}, {"depth": 0}])
def test_the_forward_passes_follow_the_formula(n, params):
    scorer = CountingScorer(synergy_scorer(n), n)
    trace = windowed(scorer, **params)
    assert sorted(trace.order.tolist()) == list(range(n))
    top, bottom = params.get("top", 5), params.get("bottom", 1)
    depth = params.get("depth")
    d = windowed_depth(n, top, bottom, params.get("budget", 1.2)) if depth is None else min(depth, n - 1)
    # 2n singles, 2 * |window| per refined step (the window shrinks with the regions left), 2 per later prefix
    by_hand = 2 * n + sum(2 * min(top + bottom, n - s) for s in range(1, d + 1)) + 2 * (n - 1 - d)
    assert scorer.forward_passes == windowed_passes(n, **params) == by_hand
    assert expected_forward_passes("windowed", n, params) == (by_hand, True)


def test_the_default_budget_holds_the_passes_within_1_2_times_4n():
    for n in (16, 36, 63, 64, 100):
        d = windowed_depth(n)
        assert windowed_passes(n) <= 1.2 * 4 * n < windowed_passes(n, depth=d + 1)
    assert windowed_passes(64) < 64 * 65 / 10  # under a tenth of greedy's n(n+1)


def test_both_curves_of_every_prefix_are_recorded():
    n = 12
    score = synergy_scorer(n, seed=3)
    trace = windowed(CountingScorer(score, n), top=3, bottom=1, depth=4)
    prefixes = np.zeros((n, n), dtype=bool)
    for k in range(n):
        prefixes[k, trace.order[: k + 1]] = True
    np.testing.assert_allclose(trace.insertion, score(prefixes))  # p(keep S_k)
    np.testing.assert_allclose(trace.deletion, score(~prefixes))  # p(remove S_k)
    np.testing.assert_allclose(trace.insertion[-1], score(np.ones((1, n), bool))[0])  # the full image
    np.testing.assert_allclose(trace.deletion[-1], score(np.zeros((1, n), bool))[0])  # the black image
    np.testing.assert_allclose(trace.objective, objective_of(trace.insertion, trace.deletion, 1.0, 1.0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_window_holding_every_region_is_greedy(seed):
    n = 9
    score = synergy_scorer(n, seed=seed)
    ours, theirs = CountingScorer(score, n), CountingScorer(score, n)
    a = windowed(ours, lambda1=1.0, lambda2=0.5, top=n, bottom=0, depth=n - 1)
    b = greedy(theirs, lambda1=1.0, lambda2=0.5)
    assert a.order.tolist() == b.order.tolist()
    np.testing.assert_allclose(a.insertion, b.insertion)
    np.testing.assert_allclose(a.deletion, b.deletion)
    assert ours.forward_passes == theirs.forward_passes == n * (n + 1)


def test_the_first_region_is_greedys_first():
    for seed in range(5):
        score = synergy_scorer(20, seed=seed)
        assert (windowed(CountingScorer(score, 20)).order[0] == greedy(CountingScorer(score, 20)).order[0])


@pytest.mark.parametrize("params, message", [
    ({"top": 0}, "top"), ({"bottom": -1}, "bottom"), ({"depth": 1.5}, "depth"), ({"budget": 0}, "budget"),
    ({"window": 4}, "window"),
])
def test_bad_settings_are_refused_with_their_name(params, message):
    with pytest.raises(ValueError, match=message):
        check_arguments("Describe the image.", "windowed", 16, search_params=params)
    if message != "window":
        with pytest.raises(ValueError, match=message):
            windowed(CountingScorer(synergy_scorer(4), 4), **params)


def test_explain_runs_the_windowed_search_on_the_embedded_model(shipped_model):
    from eagle_pipelines.api import explain
    from eagle_pipelines.core.regions import superpixels

    model = shipped_model
    image = np.zeros((112, 112, 3), np.uint8)
    image[20:60, 20:60] = (220, 40, 40)
    regions = superpixels(model.model_image(image), n_segments=9)
    a = explain(model, image, "Describe the image.", strategy="windowed", regions=regions,
                search_params={"top": 2, "bottom": 1}, memory_budget_mb=0)
    b = explain(model, image, "Describe the image.", strategy="greedy", regions=regions, memory_budget_mb=0)
    n = regions.n_regions
    assert a.strategy == "windowed" and a.search_params == {"top": 2, "bottom": 1, "depth": None, "budget": 1.2}
    assert a.forward_passes == windowed_passes(n, top=2, bottom=1) == expected_forward_passes(
        "windowed", n, {"top": 2, "bottom": 1})[0]
    assert a.order[0] == b.order[0]
    np.testing.assert_allclose(a.insertion[-1], b.insertion[-1], atol=1e-5)  # the full image, either way
