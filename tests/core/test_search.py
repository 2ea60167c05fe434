"""The search strategies on synthetic scorers whose best order is known."""

from __future__ import annotations

import numpy as np
import pytest

from eagle_pipelines.core.search import (CountingScorer, bidirectional, bidirectional_passes, efficient,
                                         efficient_passes, greedy, lazy, pool_size_for_budget, pooled)


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


@pytest.mark.parametrize("search", [efficient, bidirectional])
@pytest.mark.parametrize("n", [1, 2, 7, 30])
def test_efficient_returns_a_permutation_with_consistent_curves(n, search):
    rng = np.random.default_rng(n)
    w = rng.random(n)
    w /= w.sum()
    scorer = CountingScorer(additive(w), n)
    trace = search(scorer, search_scope=3, pending_samples=2, update_step=2)
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


def reference_efficient(score, n, lambda1=1.0, lambda2=1.0, search_scope=10, pending_samples=8, update_step=5):
    """The authors' ``EfficientMLLMSubModularExplanationVision.get_merge_set`` (interpretation/
    efficient_attribution.py), transcribed line by line with boolean keep-masks in place of image masks: V_set,
    S_set, S_set_opposite, refer_baseline(_opposite), the saved score lists and their final concatenation. The
    one liberty: its torch.argsort is not stable, here ties keep V's order. Returns (order, insertion, deletion,
    smdl_score, forward passes)."""
    passes = 0

    def model(keeps):  # MLLM_inference_batch_images: one forward pass per image
        nonlocal passes
        passes += len(keeps)
        return np.asarray(score(np.array(keeps)), dtype=float)

    V = list(np.eye(n, dtype=bool))
    S, S_opp = [], []
    base, base_opp = np.zeros(n, bool), np.ones(n, bool)
    baseline, org = model([base, base_opp])  # black image, full image
    ins, dele, ins_opp, del_opp = [], [], [], []
    for i in range(n):
        if len(V) == 1:
            S += V
            break
        alpha = [v | base for v in V]
        update = len(S) == 0 or i % update_step == 0
        if not update:
            alpha = alpha[:search_scope]
        insertion, deletion = model(alpha), model([~a for a in alpha])
        smdl = (lambda1 * insertion + lambda2 * (1 - deletion)).mean(-1)
        arg_max = int(np.argmax(smdl))
        if update:
            V = [V[j] for j in np.argsort(-smdl, kind="stable")]
            pick = 0
        else:
            pick = arg_max
        S.append(V[pick])
        base = base | V[pick]
        del V[pick]
        ins.append(insertion[arg_max])
        dele.append(deletion[arg_max])
        if len(S_opp) == 0:
            arg_min = int(np.argmin(smdl))
            ins_opp.append(deletion[arg_min])
            del_opp.append(insertion[arg_min])
            S_opp.append(V[-1])
            base_opp = base_opp & ~V[-1]
            del V[-1]
        elif len(V) > pending_samples:
            candidates = V[-pending_samples:]
            alpha = [base_opp & ~c for c in candidates]
            insertion, deletion = model(alpha), model([~a for a in alpha])
            j = int(np.argmax((lambda1 * insertion + lambda2 * (1 - deletion)).mean(-1)))
            ins_opp.append(insertion[j])
            del_opp.append(deletion[j])
            S_opp.append(candidates[j])
            base_opp = base_opp & ~candidates[j]
            del V[-pending_samples + j]
    insertion = np.array(ins + ins_opp[::-1] + [org])
    deletion = np.array(dele + del_opp[::-1] + [baseline])
    order = [int(np.flatnonzero(m)[0]) for m in S + S_opp[::-1]]
    return order, insertion, deletion, insertion.mean(-1) + 1 - deletion.mean(-1), passes


@pytest.mark.parametrize("seed, n, scope, pending, update, lambdas", [
    (0, 12, 10, 8, 5, (1.0, 1.0)), (1, 20, 3, 2, 2, (1.0, 0.5)), (2, 30, 10, 8, 5, (0.5, 1.0)),
    (3, 9, 1, 1, 1, (1.0, 1.0)), (4, 17, 4, 5, 3, (2.0, 0.0)), (5, 3, 10, 8, 5, (1.0, 1.0))])
def test_efficient_equals_the_transcribed_reference_loop(seed, n, scope, pending, update, lambdas):
    score = _interacting(seed, n, tokens=3)
    order, insertion, deletion, smdl, passes = reference_efficient(score, n, *lambdas, scope, pending, update)
    counting = CountingScorer(score, n)
    trace = efficient(counting, *lambdas, search_scope=scope, pending_samples=pending, update_step=update)
    assert trace.order.tolist() == order
    np.testing.assert_allclose(trace.insertion, insertion)
    np.testing.assert_allclose(trace.deletion, deletion)
    np.testing.assert_allclose(trace.objective, smdl)
    assert counting.forward_passes == passes == efficient_passes(n, scope, pending, update)


def _contextual(keep):
    """One token. p = 0.05 + 0.30·[0] + 0.01·[1] + 0.25·[1 and 2] + 0.05·[3] + 0.04·[4] + 0.15·[3 and 4]
    + 0.09·[5] + 0.03·[6] + 0.06·[7] − 0.12·[0 and 7]: regions 1+2 and 3+4 are worth more together than alone, and
    7 helps alone but hurts beside region 0."""
    k = np.asarray(keep, dtype=bool)
    p = (0.05 + 0.30 * k[:, 0] + 0.01 * k[:, 1] + 0.25 * (k[:, 1] & k[:, 2]) + 0.05 * k[:, 3] + 0.04 * k[:, 4]
         + 0.15 * (k[:, 3] & k[:, 4]) + 0.09 * k[:, 5] + 0.03 * k[:, 6] + 0.06 * k[:, 7] - 0.12 * (k[:, 0] & k[:, 7]))
    return p[:, None]


def test_efficient_by_hand_on_interacting_regions():
    """λ1 = 1, λ2 = 0.25, search_scope 2, pending_samples 3, update_step 2; obj = p(keep) + 0.25·(1 − p(remove)).

    2 passes: p(full) = 0.91, p(black) = 0.05.
    Step 0 (update, 16 passes): singletons 0 .4175, 5 .185, 3 .1725, 4 .16, 1 .1475, 2 .135, 7 .1175, 6 .11.
      S = [0]; the first backward pick is the last of that ranking, 6, with no pass (point 1). A scored pick among
      the last three (2, 7, 6) by p(keep V∖c) + 0.25·(1 − p(keep c)) would take 7 (1.1925 > 1.11 > .8975).
    Step 1 (4 passes: only 5 and 3, the first two of V = [5, 3, 4, 1, 2, 7]): {0,5} .53 > {0,3} .5175: S = [0, 5].
      V = [3, 4, 1, 2, 7] holds 5 > 3: backward among 1, 2, 7 with 6 removed (6 passes): removing 7 keeps
      p = .94, objective .94 + .25·(1 − .14) = 1.155 (1: .8475, 2: .86): the tail is [6, 7].
    Step 2 (update, 8 passes) on top of {0, 5}: 3 .63, 4 .6175, 1 .605, 2 .5925: S = [0, 5, 3]. V = [4, 1, 2]
      holds 3, not more than pending_samples: no backward pick (point 2). One here would remove 4 (.955 against
      1 .8925, 2 .905), breaking the 3+4 pair that the forward search completes next.
    Step 3 (4 passes: 4 and 1; 2 is not scored): 4 .83 > 1 .705. Step 4 (update, 4 passes): 1 .905 > 2 .8925.
    The leftover 2 follows S unscored. 2 + 16 + 4 + 6 + 8 + 4 + 4 = 44 passes.
    """
    counting = CountingScorer(_contextual, 8)
    trace = efficient(counting, 1.0, 0.25, search_scope=2, pending_samples=3, update_step=2)
    assert trace.order.tolist() == [0, 5, 3, 4, 1, 2, 7, 6]
    assert counting.forward_passes == 44 == efficient_passes(8, 2, 3, 2)
    np.testing.assert_allclose(trace.insertion[:, 0], [.35, .44, .49, .68, .69, .94, .88, .91])
    np.testing.assert_allclose(trace.deletion[:, 0], [.73, .64, .44, .40, .14, .14, .08, .05])
    # point 3: recorded as insertion + 1 − deletion, without λ (λ-weighted the first would be .35 + .25·.27)
    np.testing.assert_allclose(trace.objective, [.62, .80, 1.05, 1.28, 1.55, 1.80, 1.80, 1.86])
    # the facts behind the alternatives named above
    full = np.ones(8, dtype=bool)

    def without(*regions):
        keep = full.copy()
        keep[list(regions)] = False
        return keep

    def back(removed):  # p(keep V∖removed) + 0.25·(1 − p(keep removed)) for a scored backward pick
        return _contextual(without(*removed)[None])[0, 0] + 0.25 * (1 - _contextual(~without(*removed)[None])[0, 0])
    np.testing.assert_allclose([back([2]), back([7]), back([6])], [.8975, 1.1925, 1.11])
    np.testing.assert_allclose([back([6, 7, 4]), back([6, 7, 1]), back([6, 7, 2])], [.955, .8925, .905])
    # and the transcribed reference agrees
    order, insertion, deletion, smdl, passes = reference_efficient(_contextual, 8, 1.0, 0.25, 2, 3, 2)
    assert order == trace.order.tolist() and passes == 44
    np.testing.assert_allclose(smdl, trace.objective)


def test_bidirectional_differs_from_efficient_in_the_three_points():
    """Our earlier reading of the variant, kept as ``bidirectional``, on the same regions and settings: its first
    backward pick is scored (7, whose removal from the full image hurts least; 6 passes), it keeps picking backward
    with three candidates left (it removes 4 and breaks the 3+4 pair) and it records the λ-weighted objective."""
    counting = CountingScorer(_contextual, 8)
    trace = bidirectional(counting, 1.0, 0.25, search_scope=2, pending_samples=3, update_step=2)
    assert trace.order.tolist() == [0, 5, 3, 1, 2, 4, 6, 7]
    # steps 0-3 forward + backward: 16 + 6, 4 + 6, 8 + 6, 4 + 2; then the full image's curves: 2
    assert counting.forward_passes == 54 == bidirectional_passes(8, 2, 3, 2)
    np.testing.assert_allclose(trace.insertion[:, 0], [.35, .44, .49, .50, .75, .94, .97, .91])
    np.testing.assert_allclose(trace.objective, trace.insertion[:, 0] + 0.25 * (1 - trace.deletion[:, 0]))


def test_efficient_schedule_costs():
    # n = 64 with the defaults: 2 + Σ 2·|scored forward| + 2·8 per later backward pick
    assert efficient_passes(64) == 1412
    assert efficient_passes(1) == 2 and efficient_passes(2) == 6
    for n, args in [(16, (10, 8, 5)), (40, (3, 4, 2)), (25, (1, 1, 1))]:
        counting = CountingScorer(_interacting(n, n), n)
        efficient(counting, search_scope=args[0], pending_samples=args[1], update_step=args[2])
        assert counting.forward_passes == efficient_passes(n, *args)
    with pytest.raises(ValueError, match="pending_samples must be an integer >= 1, got 0"):
        efficient(CountingScorer(additive([1, 1, 1]), 3), pending_samples=0)


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
