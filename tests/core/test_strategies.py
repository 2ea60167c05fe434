"""The strategy registry (core/strategies.py) and the engine (engine.py): every registered strategy is accepted by
every SearchParams model and costs what it is estimated to cost; a new strategy is one registry entry away from
explain() and the pipelines' parameters; a validated parameter object and explain()'s keywords give one result."""

from __future__ import annotations

import numpy as np
import pytest

from eagle_pipelines.api import explain
from eagle_pipelines.core.search import CountingScorer, complete_trace
from eagle_pipelines.core.strategies import STRATEGIES, SearchParams, Strategy, group_of
from eagle_pipelines.engine import expected_forward_passes
from eagle_pipelines.models.qwen_vl import QwenVLAdapter
from eagle_pipelines.parameters import AttributionParams, EagleVideoParams, GuidanceParams, parse

PROMPT = "Describe the image."


def _additive(n: int, seed: int = 0):
    weights = np.random.default_rng(seed).random(n)
    return lambda keep: (keep @ weights)[:, None] / weights.sum()


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_is_accepted_by_every_search_model_with_its_settings(name):
    spec = STRATEGIES[name]
    for model in (SearchParams, AttributionParams, EagleVideoParams, GuidanceParams):
        params = model(strategy=name)
        assert params.spec is spec
        expected = spec.params().model_dump() if spec.params is not None else {}
        assert params.search_params() == expected
        if spec.params is not None:
            assert isinstance(getattr(params, group_of(name)), spec.params)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
@pytest.mark.parametrize("n", [2, 9, 17])
def test_the_registry_pass_count_is_what_the_search_spends(name, n):
    params = SearchParams(strategy=name)
    scorer = CountingScorer(_additive(n), n)
    trace = params.spec.search(scorer, lambda1=1.0, lambda2=1.0, **params.search_params())
    passes, exact = expected_forward_passes(params, n)
    assert sorted(trace.order.tolist()) == list(range(n))
    if exact:
        assert scorer.forward_passes == passes
    else:  # lazy: a lower bound
        assert scorer.forward_passes >= passes
    assert expected_forward_passes(name, n, params.search_params()) == (passes, exact)


def _identity(scorer, lambda1=1.0, lambda2=1.0, progress=None):
    """A toy strategy: the regions in id order, every prefix scored once."""
    order = np.arange(scorer.n)
    if progress:
        progress(scorer.n)
    return complete_trace(scorer, order, {}, lambda1, lambda2)


@pytest.fixture
def identity(monkeypatch):
    """The toy strategy registered as the one line a new strategy needs in core/strategies.py."""
    monkeypatch.setitem(STRATEGIES, "identity", Strategy(_identity, lambda n: 2 * n))
    return "identity"


@pytest.fixture(scope="module")
def adapter(tiny_model, tiny_processor):
    return QwenVLAdapter(tiny_model, tiny_processor)


@pytest.fixture(scope="module")
def image(eval_split):
    return eval_split.images["eval_000001.png"]


def test_a_registered_strategy_runs_through_explain_and_the_parameters(identity, adapter, image):
    attribution = explain(adapter, image, PROMPT, strategy=identity, n_regions=6, max_new_tokens=3)
    n = attribution.n_regions
    assert attribution.strategy == "identity"
    assert attribution.order.tolist() == list(range(n))
    assert attribution.forward_passes == 2 * n == expected_forward_passes("identity", n)[0]
    assert parse("attribution", {"strategy": "identity"}).spec.search is _identity
    with pytest.raises(ValueError, match="strategy 'identity' takes no search_params"):
        explain(adapter, image, PROMPT, strategy=identity, search_params={"pool_size": 2})


def test_an_unregistered_strategy_is_refused_by_name(adapter, image):
    with pytest.raises(ValueError, match=r"unknown strategy 'identity'; choose one of \['bidirectional'"):
        explain(adapter, image, PROMPT, strategy="identity")
    with pytest.raises(ValueError, match=r"attribution.strategy: unknown strategy 'identity'"):
        parse("attribution", {"strategy": "identity"})


def test_a_parameter_object_and_the_keywords_give_one_attribution(adapter, image):
    answer = adapter.generate(adapter.model_image(image), PROMPT, max_new_tokens=4)
    params = AttributionParams(strategy="pooled", lambda1=0.5, batch_size=7, pooled={"pool_size": 3})
    by_object = explain(adapter, image, PROMPT, answer=answer, n_regions=8, params=params)
    by_keywords = explain(adapter, image, PROMPT, answer=answer, n_regions=8, strategy="pooled", lambda1=0.5,
                          batch_size=7, search_params={"pool_size": 3})
    assert by_object.order.tolist() == by_keywords.order.tolist()
    np.testing.assert_array_equal(by_object.insertion, by_keywords.insertion)
    np.testing.assert_array_equal(by_object.deletion, by_keywords.deletion)
    assert by_object.search_params == by_keywords.search_params == {"pool_size": 3, "budget": 0.1}
    assert by_object.forward_passes == by_keywords.forward_passes
    with pytest.raises(ValueError, match=r"either as params or as \['strategy'\], not both"):
        explain(adapter, image, PROMPT, answer=answer, params=params, strategy="greedy")
