"""The search strategies on synthetic scorers whose best order is known."""

from __future__ import annotations

import numpy as np
import pytest

from eagle_pipelines.core.search import CountingScorer, efficient, greedy, lazy, pool_size_for_budget, pooled


def additive(weights, token_scales=(1.0,)):
    weights = np.asarray(weights, dtype=float)
    scales = np.asarray(token_scales, dtype=float)

    def score(keep):
        return (keep @ weights)[:, None] * scales[None, :]

    return score


def test_greedy_on_an_additive_scorer_orders_by_weight_and_records_exact_curves():
    w = np.array([0.05, 0.3, 0.1, 0.2, 0.15, 0.2])
    scorer = CountingScorer(additive(w, (1.0, 0.5)), 6)
    trace = greedy(scorer)
    # descending weight; the tie between regions 3 and 5 (0.2 each) goes to the lower index
    assert trace.order.tolist() == [1, 3, 5, 4, 2, 0]
    assert scorer.forward_passes == 6 * 7  # n(n+1)
    np.testing.assert_allclose(trace.insertion[:, 0], np.cumsum(w[trace.order]))
    np.testing.assert_allclose(trace.deletion[:, 0], 1 - np.cumsum(w[trace.order]))
    np.testing.assert_allclose(trace.insertion[:, 1], 0.5 * np.cumsum(w[trace.order]))
    # objective = mean_t(p_keep + 1 - p_remove)
    expected = np.mean(trace.insertion + 1 - trace.deletion, axis=1)
    np.testing.assert_allclose(trace.objective, expected)


def test_greedy_on_a_submodular_coverage_scorer_follows_the_greedy_coverage_order():
    # regions cover elements; p = covered fraction. The greedy coverage order, by hand:
    # r0 covers {0,1,2,3}, r1 {3,4,5}, r2 {0,1}, r3 {5,6}, r4 {6}: picks r0 (4), r1 (+2), r3 (+1), r2 (0), r4 (0)
    covers = [{0, 1, 2, 3}, {3, 4, 5}, {0, 1}, {5, 6}, {6}]

    def score(keep):
        return np.array([[len(set().union(*[covers[i] for i in np.flatnonzero(row)])) / 7] for row in keep])

    trace = greedy(CountingScorer(score, 5), lambda1=1.0, lambda2=0.0)  # insight only: plain coverage greedy
    assert trace.order.tolist() == [0, 1, 3, 2, 4]
    np.testing.assert_allclose(trace.insertion[:, 0], [4 / 7, 6 / 7, 1, 1, 1])


def test_lambda_weights_choose_between_insight_and_necessity():
    # region 0: the token appears only when region 0 is kept alone (insight); removing region 1 kills it
    def score(keep):
        out = []
        for row in keep:
            k = tuple(np.flatnonzero(row))
            if k == (0,):
                out.append(0.9)
            elif 1 not in k:
                out.append(0.0)
            else:
                out.append(0.5)
        return np.array(out)[:, None]

    insight = greedy(CountingScorer(score, 3), lambda1=1.0, lambda2=0.0)
    necessity = greedy(CountingScorer(score, 3), lambda1=0.0, lambda2=1.0)
    assert insight.order[0] == 0
    assert necessity.order[0] == 1


@pytest.mark.parametrize("n", [1, 2, 7, 30])
def test_efficient_returns_a_permutation_with_consistent_curves(n):
    rng = np.random.default_rng(n)
    w = rng.random(n)
    w /= w.sum()
    scorer = CountingScorer(additive(w), n)
    trace = efficient(scorer, search_scope=3, pending_samples=2, update_step=2)
    assert sorted(trace.order.tolist()) == list(range(n))
    np.testing.assert_allclose(trace.insertion[:, 0], np.cumsum(w[trace.order]), atol=1e-12)
    np.testing.assert_allclose(trace.deletion[:, 0], 1 - np.cumsum(w[trace.order]), atol=1e-12)


def test_efficient_finds_the_additive_order_with_fewer_passes():
    rng = np.random.default_rng(0)
    w = rng.random(64)
    w /= w.sum()
    g, e = CountingScorer(additive(w), 64), CountingScorer(additive(w), 64)
    assert greedy(g).order.tolist() == np.argsort(-w, kind="stable").tolist()
    order = efficient(e).order
    assert order.tolist() == np.argsort(-w, kind="stable").tolist()
    assert g.forward_passes == 64 * 65
    assert e.forward_passes < 0.4 * g.forward_passes


def test_scorer_rejects_a_wrong_shape():
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        CountingScorer(additive([1, 1, 1, 1]), 4)(np.ones((2, 3), bool))


def _coverage(seed: int, n: int = 30, elements: int = 40):
    rng = np.random.default_rng(seed)
    covers = [set(rng.choice(elements, 6, replace=False).tolist()) for _ in range(n)]

    def score(keep):
        return np.array([[len(set().union(*[covers[i] for i in np.flatnonzero(row)])) / elements] for row in keep])

    return score


@pytest.mark.parametrize("seed", range(4))
def test_lazy_equals_greedy_on_submodular_objectives_with_far_fewer_passes(seed):
    g, lz = CountingScorer(_coverage(seed), 30), CountingScorer(_coverage(seed), 30)
    exact, fast = greedy(g, 1.0, 0.0), lazy(lz, 1.0, 0.0)
    assert fast.order.tolist() == exact.order.tolist()  # ties included
    np.testing.assert_allclose(fast.insertion, exact.insertion)
    np.testing.assert_allclose(fast.deletion, exact.deletion)
    assert lz.forward_passes < 0.4 * g.forward_passes


def test_lazy_on_an_additive_scorer_scores_each_region_about_twice():
    rng = np.random.default_rng(1)
    w = rng.random(64)
    w /= w.sum()
    scorer = CountingScorer(additive(w), 64)
    trace = lazy(scorer, refresh=2)
    assert trace.order.tolist() == np.argsort(-w, kind="stable").tolist()
    # 2 (black + full) + 128 (first step) + 2·2 per later step at most, and the curves need nothing more
    assert scorer.forward_passes <= 2 + 128 + 4 * 63
    np.testing.assert_allclose(trace.insertion[:, 0], np.cumsum(w[trace.order]), atol=1e-12)


def _interacting(seed: int, n: int, tokens: int = 2):
    """Probabilities from region weights plus pairwise synergies (neither additive nor submodular)."""
    rng = np.random.default_rng(seed)
    w = rng.random((n, tokens)) / n
    pairs = np.triu(rng.random((n, n)) * (rng.random((n, n)) < 0.1), 1) / n

    def score(keep):
        k = keep.astype(float)
        raw = k @ w + np.einsum("bi,ij,bj->b", k, pairs, k)[:, None]
        return 1 / (1 + np.exp(-8 * (raw - 0.3)))

    return score


@pytest.mark.parametrize("seed", range(3))
def test_pooled_with_every_region_in_the_pool_is_exactly_greedy(seed):
    g, p = CountingScorer(_interacting(seed, 12), 12), CountingScorer(_interacting(seed, 12), 12)
    exact, full_pool = greedy(g), pooled(p, pool_size=12)
    assert full_pool.order.tolist() == exact.order.tolist()
    np.testing.assert_allclose(full_pool.insertion, exact.insertion)
    np.testing.assert_allclose(full_pool.deletion, exact.deletion)
    assert p.forward_passes == g.forward_passes == 12 * 13


def test_pooled_searches_the_pool_in_context_and_ranks_the_rest_once():
    # insight only (λ2 = 0). p = 0.3·[0] + 0.2·[1] + 0.45·[0 and 2]: alone, region 2 is worth nothing, so the
    # first step ranks 0, 1, then 2..5 (all worth 0: ties go to the lower id); beside region 0 it is worth most,
    # so greedy (and the pool) picks 0, 2, 1
    def score(keep):
        return (0.3 * keep[:, 0] + 0.2 * keep[:, 1] + 0.45 * (keep[:, 0] & keep[:, 2]))[:, None]

    counting = CountingScorer(score, 6)
    trace = pooled(counting, lambda1=1.0, lambda2=0.0, pool_size=3)
    assert trace.order.tolist() == [0, 2, 1, 3, 4, 5] == greedy(CountingScorer(score, 6), 1.0, 0.0).order.tolist()
    # curves: exact probabilities of every prefix, kept and removed
    np.testing.assert_allclose(trace.insertion[:, 0], [0.3, 0.75, 0.95, 0.95, 0.95, 0.95])
    np.testing.assert_allclose(trace.deletion[:, 0], [0.2, 0.2, 0.0, 0.0, 0.0, 0.0], atol=1e-12)
    # 2n singletons + K(K-1) inside the pool + 2(n-K) curves of the rest
    assert counting.forward_passes == 12 + 6 + 6


def test_pooled_stays_within_a_tenth_of_greedy_at_64_regions():
    rng = np.random.default_rng(3)
    w = rng.random(64)
    w /= w.sum()
    scorer = CountingScorer(additive(w), 64)
    trace = pooled(scorer)
    assert pool_size_for_budget(64, 0.1) == 14
    assert scorer.forward_passes == 2 * 64 + 14 * 13 + 2 * 50 <= 0.1 * 64 * 65
    assert trace.order.tolist() == np.argsort(-w, kind="stable").tolist()
    np.testing.assert_allclose(trace.insertion[:, 0], np.cumsum(w[trace.order]), atol=1e-12)
    # small n: the pool never shrinks below 8 regions (or n)
    assert pool_size_for_budget(16, 0.1) == 8 and pool_size_for_budget(5, 0.1) == 5
