"""The API adapter (models/api_model.py) against a mocked transport (respx): retries and backoff on 429 storms and
5xx, timeouts, dead servers, malformed answers, the request budget, the response cache, bounded concurrency, the
key kept out of everything written, and both scoring protocols computed by hand. Fast: no server, no model.

openai 3.x sends through ``httpx2``; respx's router matches ``httpx`` requests, so ``Bridge`` hands each httpx2
request to the router as an httpx request and its answer (or exception) back."""

from __future__ import annotations

import json
import math
import pickle
import threading
import time

import httpx
import httpx2
import numpy as np
import pytest
import respx

from eagle_pipelines.io.model_dataset import ApiModelDataset
from eagle_pipelines.models.api_model import (
    ApiError,
    ApiModel,
    ApiParams,
    MalformedResponse,
    RequestBudgetExceeded,
    ServerUnavailable,
    TokenTable,
    load_api_model,
)

BASE = "http://api.test/v1"


class Bridge(httpx2.BaseTransport):
    """httpx2 transport answering from a respx router (httpx exceptions become their httpx2 twins)."""

    def __init__(self, router: respx.Router):
        self.router = router

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        body = request.read()
        mirrored = httpx.Request(request.method, str(request.url), headers=list(request.headers.multi_items()),
                                 content=body)
        try:
            response = self.router.handler(mirrored)
        except httpx.HTTPError as exc:
            raise getattr(httpx2, type(exc).__name__)(str(exc), request=request) from None
        return httpx2.Response(response.status_code, headers=list(response.headers.multi_items()),
                               content=response.read(), request=request)


@pytest.fixture
def router():
    return respx.Router(base_url=BASE, assert_all_mocked=True)


def _model(router, tmp_path, server="openai", sleeps=None, **settings) -> ApiModel:
    params = ApiParams(api_base=BASE, api_model="m", server=server, cache_dir=str(tmp_path / "cache"),
                       backoff_s=0.5, max_backoff_s=4.0, **settings)
    model = ApiModel(params, api_key="sk-test-SECRET-123", http_client=httpx2.Client(transport=Bridge(router)))
    model.client._sleep = (lambda s: sleeps.append(s)) if sleeps is not None else (lambda s: None)
    return model


def _top(entries: dict[str, float]) -> dict:
    """A chat completion whose first token has these top logprobs (token text -> probability)."""
    first = max(entries, key=entries.get)
    return {"choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": first},
                         "logprobs": {"content": [{"token": first, "logprob": math.log(entries[first]),
                                                   "top_logprobs": [{"token": t, "logprob": math.log(p)}
                                                                    for t, p in entries.items()]}]}}]}


def _body(call) -> dict:
    return json.loads(call.request.content)


IMAGE = np.full((28, 28, 3), 200, np.uint8)


# -- retries, timeouts, dead servers ---------------------------------------------------------------------------------
def test_a_429_storm_is_retried_with_exponential_backoff_and_retry_after(router, tmp_path):
    sleeps = []
    route = router.post("/chat/completions").mock(side_effect=[
        httpx.Response(429, json={"error": {"message": "slow down"}}),
        httpx.Response(429, json={"error": {"message": "slow down"}}, headers={"retry-after": "3"}),
        httpx.Response(503, json={"error": {"message": "busy"}}),
        httpx.Response(200, json=_top({"red": 0.8, "blue": 0.1})),
    ])
    model = _model(router, tmp_path, sleeps=sleeps, max_retries=4)
    answer, cached = model.client.request("chat", {"model": "m", "messages": []})
    assert not cached and answer["choices"][0]["message"]["content"] == "red"
    assert route.call_count == 4
    assert (model.client.requests, model.client.attempts, model.client.retries) == (1, 4, 3)
    # backoff 0.5·2^k with jitter in [0.5, 1]; the server's Retry-After (3 s) wins over the second delay
    assert 0.25 <= sleeps[0] <= 0.5 and sleeps[1] == 3.0 and 1.0 <= sleeps[2] <= 2.0
    # answered once: the same request again costs nothing
    again, cached = model.client.request("chat", {"model": "m", "messages": []})
    assert cached and again == answer and route.call_count == 4


def test_an_endless_429_storm_stops_the_run_and_later_requests_fail_at_once(router, tmp_path):
    route = router.post("/chat/completions").mock(return_value=httpx.Response(429, json={"error": "rate"}))
    model = _model(router, tmp_path, max_retries=3)
    with pytest.raises(ServerUnavailable, match=r"does not answer: HTTP 429.*4 tries.*finished images are kept"):
        model.client.request("chat", {"model": "m", "n": 1})
    assert route.call_count == 4
    with pytest.raises(ServerUnavailable, match="HTTP 429"):
        model.client.request("chat", {"model": "m", "n": 2})
    assert route.call_count == 4  # nothing more was sent


def test_timeouts_are_retried_then_reported(router, tmp_path):
    route = router.post("/chat/completions").mock(side_effect=[httpx.ReadTimeout("slow"),
                                                               httpx.Response(200, json=_top({"a": 0.5}))])
    model = _model(router, tmp_path, max_retries=2, timeout_s=0.5)
    assert model.client.request("chat", {"q": 1})[0]["choices"]
    assert route.call_count == 2
    route.side_effect = httpx.ReadTimeout("slow")
    with pytest.raises(ServerUnavailable, match=r"no answer within 0.5 s \(timeout.*\), 3 tries"):
        model.client.request("chat", {"q": 2})
    assert route.call_count == 5


def test_a_refused_connection_names_the_server_and_the_cache(router, tmp_path):
    router.post("/chat/completions").mock(side_effect=httpx.ConnectError("refused"))
    model = _model(router, tmp_path, max_retries=1)
    with pytest.raises(ServerUnavailable) as err:
        model.client.request("chat", {"q": 1})
    text = str(err.value)
    assert BASE in text and "connection failed" in text and str(tmp_path / "cache") in text
    assert "start the server and run again" in text


def test_a_refused_request_is_not_retried(router, tmp_path):
    route = router.post("/chat/completions").mock(
        return_value=httpx.Response(400, json={"error": {"message": "image too large"}}))
    model = _model(router, tmp_path)
    with pytest.raises(ApiError, match=r"HTTP 400: image too large") as err:
        model.client.request("chat", {"q": 1})
    assert not isinstance(err.value, ServerUnavailable) and route.call_count == 1
    assert model.client.dead is None  # one bad request does not end the run


# -- malformed answers -----------------------------------------------------------------------------------------------
def test_malformed_answers_are_retried_and_never_cached(router, tmp_path):
    route = router.post("/chat/completions").mock(side_effect=[
        httpx.Response(200, json={"choices": []}),
        httpx.Response(200, content=b"{not json", headers={"content-type": "application/json"}),
        httpx.Response(200, json={"choices": [{"logprobs": None}]}),
    ])
    model = _model(router, tmp_path, max_retries=2)
    scorer = model.scorer(IMAGE, "Describe.", [model.processor.tokenizer.id_of("red")], [0])
    with pytest.raises(MalformedResponse, match=r"malformed answer .* 3 times"):
        scorer(np.ones((1, 28, 28), bool))
    assert route.call_count == 3 and len(model.client.cache) == 0
    assert model.client.dead is None
    route.side_effect = [httpx.Response(200, json={"choices": []}), httpx.Response(200, json=_top({"red": 0.25}))]
    assert scorer(np.ones((1, 28, 28), bool))[0, 0] == pytest.approx(0.25)
    assert len(model.client.cache) == 1


# -- budget, cache, concurrency ----------------------------------------------------------------------------------------
def test_the_budget_stops_cleanly_and_a_rerun_sends_only_the_rest(router, tmp_path):
    route = router.post("/chat/completions").mock(side_effect=lambda request: httpx.Response(
        200, json=_top({"red": 0.5})))
    model = _model(router, tmp_path, max_requests=5, max_concurrency=1)
    scorer = model.scorer(IMAGE, "Describe.", [model.processor.tokenizer.id_of("red")], [0])
    masks = np.ones((8, 28, 28), bool)
    for k in range(8):
        masks[k, k] = False  # eight different masked images
    with pytest.raises(RequestBudgetExceeded, match=r"max_requests=5 .*raise max_requests and run again"):
        scorer(masks)
    assert route.call_count == 5 and len(model.client.cache) == 5
    first = set(model.client.sent_keys)
    rerun = _model(router, tmp_path, max_requests=5)  # a new process: the same cache on disk
    probs = rerun.scorer(IMAGE, "Describe.", [0], [0])(masks)
    assert np.allclose(probs, 0.5)
    assert route.call_count == 8 and rerun.client.requests == 3 and rerun.client.cache_hits == 5
    assert not first & set(rerun.client.sent_keys)  # no request was sent twice


def test_at_most_max_concurrency_requests_are_in_flight(router, tmp_path):
    lock, state = threading.Lock(), {"now": 0, "peak": 0}

    def slow(request):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.02)
        with lock:
            state["now"] -= 1
        return httpx.Response(200, json=_top({"red": 0.5}))

    router.post("/chat/completions").mock(side_effect=slow)
    model = _model(router, tmp_path, max_concurrency=3)
    masks = np.ones((12, 28, 28), bool)
    for k in range(12):
        masks[k, k] = False
    model.scorer(IMAGE, "Describe.", [model.processor.tokenizer.id_of("red")], [0])(masks)
    assert 1 < state["peak"] <= 3


def test_the_cache_key_is_the_request_content(router, tmp_path):
    route = router.post("/chat/completions").mock(return_value=httpx.Response(200, json=_top({"a": 0.5})))
    model = _model(router, tmp_path)
    model.client.request("chat", {"model": "m", "x": [1, 2]})
    model.client.request("chat", {"x": [1, 2], "model": "m"})  # the same content in another key order
    model.client.request("chat", {"model": "m", "x": [2, 1]})
    assert route.call_count == 2


# -- scoring by hand -------------------------------------------------------------------------------------------------
def test_top_logprobs_scoring_continues_each_prefix_and_counts_what_is_missing(router, tmp_path):
    """p(token) read off the top-k of the first generated token after the answer's prefix; a token missing from
    the top-k is 0 and counted. The fake endpoint answers from the masked image: 'square' is among the top-k only
    when the image keeps at least half its pixels."""
    def answer(request):
        body = json.loads(request.content)
        prefix = body["messages"][-1]["content"] if body["messages"][-1]["role"] == "assistant" else ""
        from PIL import Image
        import base64
        import io

        url = body["messages"][0]["content"][0]["image_url"]["url"]
        pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
        kept = float((pixels > 0).any(axis=-1).mean())
        if prefix == "":
            return httpx.Response(200, json=_top({"red": 0.9, "blue": 0.1}))
        assert prefix == "red" and body["top_logprobs"] == 3
        top = {"square": kept / 2, "circle": 0.3} if kept >= 0.5 else {"circle": 0.6, "triangle": 0.2}
        return httpx.Response(200, json=_top(top))

    router.post("/chat/completions").mock(side_effect=answer)
    model = _model(router, tmp_path, top_logprobs=3)
    table = model.processor.tokenizer
    ids = [table.id_of("red"), table.id_of(" square")]  # as generated: with its leading space
    scorer = model.scorer(IMAGE, "Describe.", ids, [0, 1])
    masks = np.zeros((3, 28, 28), bool)
    masks[0] = True           # all kept: ' square' found without its leading space (the reference's rule)
    masks[1, :14] = True      # half kept
    masks[2, :7] = True       # a quarter: 'square' missing -> 0
    probs = scorer(masks)
    assert np.allclose(probs, [[0.9, 0.5], [0.9, 0.25], [0.9, 0.0]])
    meta = scorer.attribution_meta()["api"]
    assert (meta["scored"], meta["missing"], meta["requests"]) == (6, 1, 6)
    assert meta["coverage"] == pytest.approx(5 / 6)


def _vllm_prompt(ids: list[int], probs: list[float]) -> dict:
    """A vLLM answer with prompt_logprobs: a prompt of [1, 2, 3] then `ids`, with these probabilities."""
    entries = [None, {"2": {"logprob": -1.0}}, {"3": {"logprob": -2.0}}]
    entries += [{str(i): {"logprob": math.log(p), "rank": 1}} for i, p in zip(ids, probs)]
    return {"choices": [{"finish_reason": "length", "message": {"content": "x"}}], "prompt_logprobs": entries}


def test_prompt_logprobs_scoring_finds_the_answer_at_the_end_of_the_prompt(router, tmp_path):
    router.post("http://api.test/detokenize").mock(side_effect=lambda r: httpx.Response(
        200, json={"prompt": " ".join(f"w{i}" for i in json.loads(r.content)["tokens"])}))
    sent = router.post("/chat/completions").mock(return_value=httpx.Response(
        200, json=_vllm_prompt([7, 8, 7, 29, 29], [0.9, 0.6, 0.3, 0.8, 0.99])))
    model = _model(router, tmp_path, server="vllm")
    assert model.scoring == "prompt_logprobs"
    # the answer "w7 w8 w7" and its end-of-turn token 29 (the template repeats it after the message)
    probs = model.scorer(IMAGE, "Describe.", [7, 8, 7, 29], [1, 3])(np.ones((2, 28, 28), bool))
    assert np.allclose(probs, [[0.6, 0.8], [0.6, 0.8]])
    body = _body(sent.calls[0])
    assert body["prompt_logprobs"] == 0 and body["messages"][1] == {"role": "assistant", "content": "w7 w8 w7 w29"}
    with pytest.raises(ApiError, match=r"tokenizes the answer .* use scoring 'top_logprobs'"):
        model.scorer(IMAGE, "Describe.", [7, 9], [0])(np.ones((1, 28, 28), bool))


def test_generation_reads_ids_probabilities_and_the_end_token(router, tmp_path):
    vllm_answer = {"choices": [{"finish_reason": "stop", "stop_reason": None, "message": {"content": " a red"},
                                "logprobs": {"content": [{"token": "token_id:4", "logprob": math.log(0.9)},
                                                         {"token": "token_id:15", "logprob": math.log(0.8)},
                                                         {"token": "token_id:29", "logprob": math.log(0.7)}]}}]}
    router.post("/chat/completions").mock(return_value=httpx.Response(200, json=vllm_answer))
    router.post("http://api.test/detokenize").mock(side_effect=lambda r: httpx.Response(
        200, json={"prompt": {(4, 15): "a red", (4,): "a", (15,): "red"}[tuple(json.loads(r.content)["tokens"])]}))
    answer = _model(router, tmp_path, server="vllm").generate(IMAGE, "Describe.")
    assert answer.token_ids == (4, 15) and answer.end_token_id == 29 and answer.finished
    assert answer.text == "a red" and answer.tokens == ("a", "red")
    assert np.allclose(answer.token_probs, [0.9, 0.8])


def test_token_texts_keep_their_ids_across_runs(router, tmp_path):
    openai_answer = {"choices": [{"finish_reason": "stop", "message": {"content": "A cat."},
                                  "logprobs": {"content": [{"token": "A", "logprob": -0.1},
                                                           {"token": " cat", "logprob": -0.2},
                                                           {"token": ".", "logprob": -0.3}]}}]}
    router.post("/chat/completions").mock(return_value=httpx.Response(200, json=openai_answer))
    answer = _model(router, tmp_path).generate(IMAGE, "Describe.")
    assert answer.text == "A cat." and answer.end_token_id is None and answer.finished
    table = TokenTable(next((tmp_path / "cache").glob("tokens-*.json")))  # another process reads the same table
    assert table.decode(answer.token_ids) == "A cat." and table.id_of(" cat") == answer.token_ids[1]
    assert pickle.loads(pickle.dumps(table)).decode(answer.token_ids) == "A cat."


# -- setup: server detection, settings, the key ------------------------------------------------------------------------
def test_the_server_kind_comes_from_its_model_listing(router, tmp_path):
    listing = router.get("/models").mock(return_value=httpx.Response(200, json={"data": [
        {"id": "m", "owned_by": "vllm"}]}))
    model = _model(router, tmp_path, server="auto")
    assert (model.server, model.scoring) == ("vllm", "prompt_logprobs")
    listing.return_value = httpx.Response(200, json={"data": [{"id": "gpt-x", "owned_by": "openai"}]})
    with pytest.raises(ValueError, match=r"serves \['gpt-x'\], not 'm'"):
        _model(router, tmp_path, server="auto")
    listing.return_value = httpx.Response(404, json={"error": "no listing"})
    assert _model(router, tmp_path, server="auto").scoring == "top_logprobs"
    with pytest.raises(ValueError, match="needs a vLLM server"):
        _model(router, tmp_path, server="openai", scoring="prompt_logprobs")


def test_settings_are_checked_by_name():
    with pytest.raises(ValueError, match=r"'max_concurrency'.*greater than or equal to 1"):
        load_api_model(BASE, "m", server="openai", max_concurrency=0)
    with pytest.raises(ValueError, match=r"'api_base'.*http\(s\) URL"):
        load_api_model("127.0.0.1:8000", "m", server="openai")
    from eagle_pipelines.api import load_model

    with pytest.raises(ValueError, match="needs both api_base and api_model"):
        load_model(api_base=BASE)


def test_the_key_is_never_logged_written_or_fingerprinted(router, tmp_path, caplog, monkeypatch):
    from eagle_pipelines.api import explain
    from eagle_pipelines.core.regions import RegionMap

    router.post("/chat/completions").mock(side_effect=lambda r: httpx.Response(200, json=_top({"red": 0.7})))
    caplog.set_level("DEBUG")
    model = _model(router, tmp_path)
    red = model.processor.tokenizer.id_of("red")
    from eagle_pipelines.models.base import Answer

    answer = Answer(prompt="Describe.", token_ids=(red,), tokens=("red",), text="red", token_probs=(0.7,),
                    finished=True)
    labels = np.repeat(np.arange(4), 196).reshape(28, 28)
    a = explain(model, IMAGE, "Describe.", strategy="greedy", answer=answer, regions=RegionMap(labels, {}))
    assert a.meta["api"]["coverage"] == 1.0 and a.meta["api"]["requests"] == 20
    a.save(tmp_path / "out.npz")
    secret = "sk-test-SECRET-123"
    written = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert secret.encode() not in written and secret not in caplog.text
    assert secret not in repr(model) + repr(model.client) + model.fingerprint
    monkeypatch.setenv("MY_KEY", secret)
    dataset = ApiModelDataset(api_base=BASE, api_model="m", server="openai", api_key_env="MY_KEY",
                              cache_dir=str(tmp_path / "c2"))
    assert secret not in json.dumps(dataset._describe()) + dataset.stamp()
    assert dataset.load().client._api_key == secret
    credentials = ApiModelDataset(api_base=BASE, api_model="m", server="openai", credentials={"api_key": "sk-cred"},
                                  cache_dir=str(tmp_path / "c3"))
    assert credentials.load().client._api_key == "sk-cred"


def test_a_pickled_model_answers_from_the_same_cache(router, tmp_path):
    """What a Ray worker gets: the model without its connection and locks, the same key, cache and token table."""
    route = router.post("/chat/completions").mock(return_value=httpx.Response(200, json=_top({"red": 0.4})))
    model = _model(router, tmp_path)
    red = model.processor.tokenizer.id_of("red")
    first = model.scorer(IMAGE, "Describe.", [red], [0])(np.ones((1, 28, 28), bool))
    copy = pickle.loads(pickle.dumps(model))
    assert copy.client._api_key == "sk-test-SECRET-123" and copy.fingerprint == model.fingerprint
    assert copy.processor.tokenizer.id_of("red") == red
    assert np.array_equal(copy.scorer(IMAGE, "Describe.", [red], [0])(np.ones((1, 28, 28), bool)), first)
    assert route.call_count == 1 and copy.client.cache_hits == 1


def test_the_report_counts_what_the_top_k_left_out():
    """coverage() of an API model's run: the targets missing from the endpoint's top-k, over every attribution."""
    from types import SimpleNamespace

    from eagle_pipelines.pipelines.experiment.report import api_coverage

    metas = {"a": {"scored": 40, "missing": 0, "coverage": 1.0, "scoring": "top_logprobs", "requests": 10, "sent": 10},
             "b": {"scored": 60, "missing": 6, "coverage": 0.9, "scoring": "top_logprobs", "requests": 12, "sent": 2}}
    manifest = SimpleNamespace(items=dict.fromkeys(metas),
                               load=lambda k: SimpleNamespace(meta={"api": metas[k]}))
    got = api_coverage(manifest)
    assert got["missing"] == 6 and got["scored"] == 100 and abs(got["coverage"] - 0.94) < 1e-12
    assert got["min_coverage"] == 0.9 and got["incomplete"] == 1 and (got["requests"], got["sent"]) == (22, 12)
    local = SimpleNamespace(items={"a": None}, load=lambda k: SimpleNamespace(meta={}))
    assert api_coverage(local) is None
