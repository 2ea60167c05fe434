"""Hostile inputs where a user's reference lists and an API's answers enter (issue 25, items 3-5): one table of cases
per path, each with what must happen to it.

* Reference lists (data/reference_list.py): every entry type-checked with its index and field in the reason, a
  wrong entry skipped with a ``skipped.csv`` row while the rest runs, ids never taken from file-name digits,
  collisions refused naming both entries.
* API answers (models/api_model.py): log-probabilities finite and <= 0, token ids integers in the vocabulary,
  checked before caching; the cache key holds the endpoint; a total deadline and a size cap per request; the key
  never printed or written.
* The report's explorer: an answer holding ``<!--<script`` renders every figure and token in headless Chromium.
"""

from __future__ import annotations

import copy
import http.server
import json
import math
import threading
import time
from pathlib import Path

import httpx
import httpx2
import numpy as np
import pandas as pd
import pytest
import respx
from PIL import Image

from eagle_pipelines.data.coco import CocoFormatError
from eagle_pipelines.data.reference_list import mmvp_reference_questions, reference_eval_split, repope_records
from eagle_pipelines.models.api_model import (
    ApiError,
    ApiModel,
    ApiParams,
    MalformedResponse,
    ResponseTooLarge,
    ServerUnavailable,
    request_key,
)

from tests.chromium import CHROMIUM, devtools
from tests.conftest import MODEL_DIR


# === reference lists ===============================================================================================
def _caption(name: str) -> dict:
    return {"image_path": name, "gt_caption": ["a caption"], "generate_sentence": "a b",
            "generated_ids": [[11, 12, 13, 21, 22, 99]], "selected_interpretation_token_id": [0, 1, 2],
            "selected_interpretation_token_word_id": [21, 22, 99], "words": ["a", " b", ""]}


def _object(name: str) -> dict:
    return {"image_path": name, "gt_caption": "a caption", "generate_sentence": "a b",
            "generated_ids": [11, 12, 13, 21, 22, 99], "output_word_id": [21, 22, 99], "select_category": "person",
            "location": [2, 3, 20, 30], "segmentation": [[2, 3, 20, 3, 20, 30]], "target_generated_index": 1,
            "target_generated_id": 22, "target_generated_token": " b"}


def _mmvp(name: str, qid: str) -> dict:
    return {"question_id": qid, "image_filename": name, "question": "Open or closed?", "options": ["Open", "Closed"],
            "answer": "a", **{k: v for k, v in _caption(name).items() if k not in ("image_path", "gt_caption")}}


def _repope(name: str) -> dict:
    return {"id": 1, "image_name": name, "question": "Is there a dog?", "label": "no", "counter_word_id": [7],
            **{k: v for k, v in _caption(name).items() if k not in ("image_path", "gt_caption")}}


NAMES = ["000000000001.jpg", "x1.jpg", "y1.jpg"]  # all digits 1: the same id if ids came from the digits


def _set(k: int, field: str, value):
    def change(entries):
        entries[k][field] = value
    return change


def _drop(k: int, field: str):
    def change(entries):
        del entries[k][field]
    return change


def _replace(k: int, value):
    def change(entries):
        entries[k] = value
    return change


#: (case, list format, change to three good entries, instances file's images, expected): expected is
#: ("ok", n images) or ("skipped", {entry: [words its reason holds]}, n images kept) or ("error", words)
LIST_CASES = [
    ("ids from file-name digits", "caption", None, [], ("ok", 3)),
    ("ids from file-name digits (object)", "object", None, [], ("ok", 3)),
    ("positions as a string '0123'", "caption", _set(1, "selected_interpretation_token_id", "0123"), [],
     ("skipped", {1: ["entry 1", "selected_interpretation_token_id", "'0123'"]}, 2)),
    ("positions as floats", "caption", _set(1, "selected_interpretation_token_id", [0.7, 1.9]), [],
     ("skipped", {1: ["selected_interpretation_token_id", "valid integer"]}, 2)),
    ("a position true", "caption", _set(2, "selected_interpretation_token_id", [True, 1]), [],
     ("skipped", {2: ["selected_interpretation_token_id"]}, 2)),
    ("a negative token id", "caption", _set(0, "generated_ids", [[11, -12, 13, 21, 22, 99]]), [],
     ("skipped", {0: ["'generated_ids' item 1", "greater than or equal to 0"]}, 2)),
    ("ids and positions of other lengths", "caption", _set(1, "selected_interpretation_token_word_id", [21]), [],
     ("skipped", {1: ["selected_interpretation_token_word_id", "1 token ids for 3 positions"]}, 2)),
    ("a missing key", "caption", _drop(2, "generated_ids"), [],
     ("skipped", {2: ["entry 2", "'generated_ids' is missing"]}, 2)),
    ("an entry that is not an object", "caption", _replace(1, ["x1.jpg"]), [],
     ("skipped", {1: ["entry 1", "expected a JSON object"]}, 2)),
    ("a caption that is a number", "caption", _set(0, "gt_caption", 5), [], ("skipped", {0: ["gt_caption"]}, 2)),
    ("the same image twice", "caption", _set(2, "image_path", "x1.jpg"), [],
     ("skipped", {2: ["entries 1 and 2", "x1.jpg"]}, 2)),
    ("an image the folder lacks", "caption", _set(1, "image_path", "missing.jpg"), [],
     ("skipped", {1: ["missing.jpg", "not in the COCO images folder"]}, 2)),
    ("two files with one id in the instances file", "caption", None,
     [{"id": 5, "file_name": "x1.jpg", "width": 40, "height": 40},
      {"id": 5, "file_name": "y1.jpg", "width": 40, "height": 40}],
     ("skipped", {2: ["entries 1 and 2", "image id 5", "x1.jpg"]}, 2)),
    ("a box of three numbers", "object", _set(0, "location", [1, 2, 3]), [],
     ("skipped", {0: ["location"]}, 2)),
    ("a box with NaN", "object", _set(1, "location", [1, float("nan"), 3, 4]), [],
     ("skipped", {1: ["location", "finite"]}, 2)),
    ("a box upside down", "object", _set(1, "location", [10, 10, 2, 2]), [],
     ("skipped", {1: ["location", "x2 > x1"]}, 2)),
    ("a target index as a string", "object", _set(2, "target_generated_index", "1"), [],
     ("skipped", {2: ["target_generated_index"]}, 2)),
    ("a polygon of two numbers", "object", _set(2, "segmentation", [[1, 2]]), [],
     ("skipped", {2: ["segmentation", "at least 3 points"]}, 2)),
    ("every entry wrong", "caption", lambda e: [x.update(selected_interpretation_token_id="0") for x in e], [],
     ("error", ["every entry of the list was refused (3)", "entry 0"])),
]


def _images(names, size=(40, 40)):
    return {n.rsplit(".", 1)[0]: (lambda: Image.new("RGB", size, (120, 60, 30))) for n in names}


def _run_list(fmt: str, change, known: list):
    entries = [(_caption if fmt == "caption" else _object)(n) for n in NAMES]
    if change is not None:
        change(entries)
    instances = {"images": known, "annotations": [], "categories": [{"id": 1, "name": "person"}]}
    _, split, _ = reference_eval_split(entries, _images(NAMES), instances, "list.json")
    return split


@pytest.mark.parametrize("case, fmt, change, known, expected", LIST_CASES, ids=[c[0] for c in LIST_CASES])
def test_every_hostile_list_entry_is_kept_or_skipped_with_its_index_and_field(case, fmt, change, known, expected):
    if expected[0] == "error":
        with pytest.raises(CocoFormatError) as err:
            _run_list(fmt, change, known)
        text = str(err.value)
        assert "\n" not in text and all(w in text for w in expected[1]), text
        return
    split = _run_list(fmt, change, known)
    ids = [im["id"] for im in split["images"]]
    skipped = split["info"]["skipped"]
    # never an id from the digits of the name, never two entries on one id
    assert len(set(ids)) == len(ids)
    if expected[0] == "ok":
        assert len(ids) == expected[1] and skipped == [] and ids == [1, 2, 3]
        return
    reasons, kept = expected[1], expected[2]
    assert len(ids) == kept and {s["entry"] for s in skipped} == set(reasons)
    assert len(ids) + len(skipped) == 3  # nothing dropped without a row
    for row in skipped:
        text = f"{row['item']}: {row['reason']}"
        assert "\n" not in text and all(w in text for w in reasons[row["entry"]]), text
        assert row["item"].startswith(f"entry {row['entry']}")


def test_an_image_missing_from_the_instances_file_gets_the_next_free_id():
    known = [{"id": 41, "file_name": "x1.jpg", "width": 40, "height": 40}]
    split = _run_list("caption", None, known)
    assert [(im["source_file_name"], im["id"]) for im in split["images"]] == [
        ("000000000001.jpg", 42), ("x1.jpg", 41), ("y1.jpg", 43)]


MMVP_CASES = [
    ("MMVP's own numbers", [("1.jpg", "1"), ("2.jpg", "2")], ("ok", [1, 2])),
    ("one MMVP image twice under two names", [("1.jpg", "1"), ("01.jpg", "2")],
     ("skipped", {1: ["entries 0 and 1", "MMVP image 1"]}, [1])),
    ("a name that is no MMVP number", [("1.jpg", "1"), ("cat7.jpg", "2")],
     ("skipped", {1: ["cat7.jpg", "not an MMVP image name"]}, [1])),
    ("a question id that is a list", [("1.jpg", "1"), ("2.jpg", ["2"])],
     ("skipped", {1: ["entry 1", "question_id"]}, [1])),
]


@pytest.mark.parametrize("case, listed, expected", MMVP_CASES, ids=[c[0] for c in MMVP_CASES])
def test_mmvp_list_entries_get_mmvp_ids_and_collisions_are_named(case, listed, expected):
    entries = [_mmvp(name, qid) for name, qid in listed]
    skipped = []
    _, info, rows = mmvp_reference_questions(entries, _images([n for n, _ in listed]), "mmvp.json", skipped)
    assert [i["id"] for i in info] == expected[-1] and len(rows) + len(skipped) == len(entries)
    if expected[0] == "ok":
        assert skipped == []
        return
    assert {s["entry"] for s in skipped} == set(expected[1])
    for row in skipped:
        assert all(w in f"{row['item']}: {row['reason']}" for w in expected[1][row["entry"]]), row


def test_a_wrong_repope_entry_refuses_the_list_naming_the_entry_and_field():
    entries = [_repope("COCO_val2014_000000000001.jpg"), _repope("COCO_val2014_000000000002.jpg")]
    assert len(repope_records(entries, "fp.json")) == 2
    entries[1]["counter_word_id"] = "7"
    with pytest.raises(CocoFormatError, match=r"^fp.json: entry 1 \(COCO_val2014_000000000002.jpg\): field "
                                              r"'counter_word_id'"):
        repope_records(entries, "fp.json")


def test_refused_entries_become_answer_errors_and_skipped_csv_rows():
    """The split carries its refused entries (``info.skipped``); the answers stage lists each one, so the report's
    skipped.csv has a row per refused entry."""
    from eagle_pipelines.pipelines.experiment.nodes import generate_answers
    from eagle_pipelines.pipelines.experiment.report import coverage

    split = _run_list("caption", _set(1, "selected_interpretation_token_id", "0123"), [])

    class Split:
        instances = split

    class Settings:
        max_new_tokens, batch_size = 4, 2

    class Model:
        name, fingerprint = "m", "f"

    answers = generate_answers(Model(), Split(), pd.DataFrame(columns=["item", "image_id", "file_name", "prompt",
                                                                    "reference"]), Settings())
    assert [(e["item"], "selected_interpretation_token_id" in e["error"]) for e in answers["errors"]] == [
        ("entry 1 (x1.jpg)", True)]

    class Empty:
        params: dict = {}

        def not_made(self):
            return {}

    targets = {"answer_errors": answers["errors"], "skipped": [], "levels": []}
    import eagle_pipelines.pipelines.experiment.report as report

    original = report.common_targets
    report.common_targets = lambda evaluation: ({}, {})
    try:
        rows = coverage(targets, Empty(), Empty(), Empty())["not_made"]
    finally:
        report.common_targets = original
    assert rows == [{"stage": "answers", "item": "entry 1 (x1.jpg)", "reason": answers["errors"][0]["error"]}]


@pytest.mark.slow
def test_a_paper_run_on_a_list_with_wrong_entries_explains_the_rest_and_lists_each_one(project, tmp_path,
                                                                                        tiny_model, tiny_processor):
    """A caption list from the tiny model with three good entries and three wrong ones (positions as the string
    "0123", an image listed twice, an image the folder lacks): the run explains the three, exit 0, and skipped.csv
    names each wrong entry with its reason."""
    from eagle_pipelines.models.qwen_vl import QwenVLAdapter
    from kedro.framework.session import KedroSession
    from tests.coco_fixtures import make_coco
    from tests.paper.test_reference_list import TINY, _write_list

    made = make_coco(tmp_path / "coco", n_plain=3)
    adapter = QwenVLAdapter(tiny_model, tiny_processor)
    adapter.save(project / MODEL_DIR)
    listed = _write_list(adapter, tmp_path / "coco", made, "caption", tmp_path / "list.json")
    bad = [copy.deepcopy(listed[0]), copy.deepcopy(listed[1]), copy.deepcopy(listed[2])]
    bad[0]["selected_interpretation_token_id"] = "0123"
    bad[2]["image_path"] = "000000999999.jpg"
    entries = listed + bad  # entry 3: wrong positions, 4: listed[1]'s image again, 5: not in the folder
    (tmp_path / "list.json").write_text(json.dumps(entries))
    params = {"model": "toy", "coco_root": str(tmp_path / "coco"), "reference_list": str(tmp_path / "list.json"),
              **TINY, "attribution": {**TINY["attribution"], "levels": ["sentence"]}}
    with KedroSession.create(project_path=project, env="paper", runtime_params=params) as session:
        session.run(pipeline_names=["eagle_coco"])
    answers = json.loads((project / "data/07_model_output/eagle_coco_paper/toy/answers.json").read_text())
    assert len(answers["answers"]) == 3
    skipped = pd.read_csv(project / "data/08_reporting/eagle_coco_paper/toy/skipped.csv")
    rows = {r.item.split(" (")[0]: r.reason for r in skipped.itertuples() if r.item.startswith("entry ")}
    assert set(rows) == {"entry 3", "entry 4", "entry 5"}
    assert "selected_interpretation_token_id" in rows["entry 3"] and "entries 1 and 4" in rows["entry 4"]
    assert "not in the COCO images folder" in rows["entry 5"]


# === API answers ===================================================================================================
BASE = "http://api.test/v1"
SECRET = "sk-test-SECRET-4711"


class Bridge(httpx2.BaseTransport):
    """httpx2 transport answering from a respx router (as in test_api_model.py)."""

    def __init__(self, router: respx.Router):
        self.router = router

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        mirrored = httpx.Request(request.method, str(request.url), headers=list(request.headers.multi_items()),
                                 content=request.read())
        response = self.router.handler(mirrored)
        return httpx2.Response(response.status_code, headers=list(response.headers.multi_items()),
                               content=response.read(), request=request)


def _model(router, tmp_path, base=BASE, server="openai", **settings) -> ApiModel:
    params = ApiParams(api_base=base, api_model="m", server=server, cache_dir=str(tmp_path / "cache"),
                       backoff_s=0.0, max_retries=1, **settings)
    model = ApiModel(params, api_key=SECRET, http_client=httpx2.Client(transport=Bridge(router)))
    model.client._sleep = lambda s: None
    return model


def _top(first: str, logprob, alternatives=None) -> dict:
    top = [{"token": first, "logprob": logprob}] + [{"token": t, "logprob": v} for t, v in (alternatives or [])]
    return {"choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": first},
                         "logprobs": {"content": [{"token": first, "logprob": logprob, "top_logprobs": top}]}}]}


def _gen(tokens: list[tuple[str, object]]) -> dict:
    return {"choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "x"},
                         "logprobs": {"content": [{"token": t, "logprob": v, "top_logprobs": []}
                                                  for t, v in tokens]}}]}


def _prompt(entries: list) -> dict:
    return {"choices": [{"index": 0, "message": {"content": ""}}], "prompt_logprobs": [None, *entries]}


IMAGE = np.full((28, 28, 3), 200, np.uint8)
ONE = np.ones((1, 28, 28), bool)

#: (case, how: "top" scoring / "gen"eration / "prompt" logprobs (vLLM), the answer, expected): expected is
#: ("ok", probability) or ("refused", words of the one-line error)
API_CASES = [
    ("a log-probability of +3.0", "top", _top("red", 3.0), ("refused", ["above 0"])),
    ("a log-probability 'NaN' (text)", "top", _top("red", "NaN"), ("refused", ["'NaN' is not a number"])),
    ("a log-probability NaN", "top", _top("red", float("nan")), ("refused", ["not finite"])),
    ("a log-probability -inf", "top", _top("red", float("-inf")), ("refused", ["not finite"])),
    ("a log-probability true", "top", _top("red", True), ("refused", ["not a number"])),
    ("an alternative above 0", "top", _top("blue", -0.1, [("red", 0.5)]), ("refused", ["top_logprobs", "above 0"])),
    ("rounding just above 0", "top", _top("red", 4e-7), ("ok", 1.0)),
    ("an ordinary answer", "top", _top("red", math.log(0.25)), ("ok", 0.25)),
    ("a generated logprob of +1", "gen", _gen([("a", -0.1), ("b", 1.0)]), ("refused", ["content[1]", "above 0"])),
    ("a generated token without text", "gen", _gen([("a", -0.1), (None, -0.2)]), ("refused", ["token text"])),
    ("vLLM: a token id that is text", "vgen", _gen([("token_id:abc", -0.1)]), ("refused", ["not a token id"])),
    ("vLLM: a token id outside the vocabulary", "vgen", _gen([("token_id:5000", -0.1)]),
     ("refused", ["token id 5000 is outside the vocabulary (1000 ids)"])),
    ("vLLM: a prompt logprob above 0", "prompt", _prompt([{"5": {"logprob": 2.0}}, {"6": {"logprob": -0.1}}]),
     ("refused", ["prompt_logprobs", "above 0"])),
    ("vLLM: a prompt token that is no id", "prompt", _prompt([{"x": {"logprob": -1.0}}, {"6": {"logprob": -0.1}}]),
     ("refused", ["not a token id"])),
    ("vLLM: ordinary prompt logprobs", "prompt", _prompt([{"5": {"logprob": -0.5}}, {"6": {"logprob": -0.1}}]),
     ("ok", math.exp(-0.1))),
]


def _ask(model, how: str):
    if how == "top":
        return model.scorer(IMAGE, "Describe.", [model.processor.tokenizer.id_of("red")], [0])(ONE)[0, 0]
    if how in ("gen", "vgen"):
        return model.generate(IMAGE, "Describe.", max_new_tokens=2).token_probs[0]
    model.processor.tokenizer._texts.update({(5,): "a", (6,): "b", (5, 6): "ab"})  # no /detokenize needed
    return model.scorer(IMAGE, "Describe.", [5, 6], [1])(ONE)[0, 0]


@pytest.mark.parametrize("case, how, answer, expected", API_CASES, ids=[c[0] for c in API_CASES])
def test_every_api_answer_is_checked_before_it_is_used_or_cached(case, how, answer, expected, tmp_path):
    router = respx.Router(base_url=BASE, assert_all_mocked=True)
    route = router.post("/chat/completions").mock(return_value=httpx.Response(  # NaN as Python's json writes it
        200, content=json.dumps(answer).encode(), headers={"content-type": "application/json"}))
    server = "vllm" if how in ("vgen", "prompt") else "openai"
    model = _model(router, tmp_path, server=server, vocab_size=1000,
                   scoring="prompt_logprobs" if how == "prompt" else "top_logprobs")
    if expected[0] == "ok":
        assert _ask(model, how) == pytest.approx(expected[1])
        assert len(model.client.cache) == 1
        return
    with pytest.raises(MalformedResponse) as err:
        _ask(model, how)
    text = str(err.value)
    assert "\n" not in text and BASE in text and "chat request" in text and "model 'm'" in text, text
    assert all(w in text for w in expected[1]), text
    assert len(model.client.cache) == 0 and route.call_count == 2  # retried once, never cached


def test_the_cache_key_holds_the_endpoint_and_the_model(tmp_path):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert request_key("chat", body, "http://a/v1") != request_key("chat", body, "http://b/v1")
    assert request_key("chat", body, "http://a/v1") != request_key("chat", {**body, "model": "n"}, "http://a/v1")
    routers = {}
    for base, p in (("http://one.test/v1", 0.5), ("http://two.test/v1", 0.25)):
        routers[base] = respx.Router(base_url=base, assert_all_mocked=True)
        routers[base].post("/chat/completions").mock(return_value=httpx.Response(200, json=_top("red", math.log(p))))
    one = _model(routers["http://one.test/v1"], tmp_path, base="http://one.test/v1")
    two = _model(routers["http://two.test/v1"], tmp_path, base="http://two.test/v1")  # the same cache folder
    assert _ask(one, "top") == pytest.approx(0.5)
    assert _ask(two, "top") == pytest.approx(0.25)  # the other server is asked, not one's cached answer
    assert two.client.requests == 1 and len(two.client.cache) == 2


def test_a_bad_answer_in_the_cache_is_refused_and_asked_again(tmp_path):
    router = respx.Router(base_url=BASE, assert_all_mocked=True)
    route = router.post("/chat/completions").mock(return_value=httpx.Response(200, json=_top("red", math.log(0.5))))
    model = _model(router, tmp_path)
    assert _ask(model, "top") == pytest.approx(0.5)
    cache = model.client.cache
    key = cache._connection().execute("SELECT key FROM responses").fetchone()[0]
    cache.put(key, "chat", _top("red", 3.0))  # as an older version cached it
    fresh = _model(router, tmp_path)
    assert _ask(fresh, "top") == pytest.approx(0.5) and route.call_count == 2
    assert cache.get(key)["choices"][0]["logprobs"]["content"][0]["logprob"] == pytest.approx(math.log(0.5))


def test_an_answer_larger_than_the_cap_is_refused_at_once_and_not_cached(tmp_path):
    router = respx.Router(base_url=BASE, assert_all_mocked=True)
    big = _top("red", -0.1)
    big["padding"] = "x" * 5000
    route = router.post("/chat/completions").mock(return_value=httpx.Response(200, json=big))
    model = _model(router, tmp_path, max_response_mb=0.002)
    with pytest.raises(ResponseTooLarge) as err:
        _ask(model, "top")
    text = str(err.value)
    assert "\n" not in text and "max_response_mb=0.002" in text and BASE in text and "chat request" in text
    assert route.call_count == 1 and len(model.client.cache) == 0 and model.client.dead is None


def test_the_key_echoed_by_a_server_is_never_printed_or_written(tmp_path, caplog):
    router = respx.Router(base_url=BASE, assert_all_mocked=True)
    route = router.post("/chat/completions").mock(return_value=httpx.Response(
        400, json={"error": {"message": f"invalid request with key {SECRET}"}}))
    model = _model(router, tmp_path)
    with pytest.raises(ApiError) as err:
        _ask(model, "top")
    assert SECRET not in str(err.value) and "key ***" in str(err.value)
    route.return_value = httpx.Response(401, json={"error": {"message": f"bad key {SECRET}"}})
    with pytest.raises(ServerUnavailable) as err:
        model.client.request("chat", {"model": "m", "n": 2})
    assert SECRET not in str(err.value) and SECRET not in (model.client.dead or "")
    model.client.dead = None  # the server is back
    answer = _top("red", -0.1)
    answer["choices"][0]["message"]["content"] = f"your key is {SECRET}"
    route.return_value = httpx.Response(200, json=answer)
    model.client.request("chat", {"model": "m", "n": 3})
    written = b"".join(p.read_bytes() for p in (tmp_path / "cache").iterdir())
    assert SECRET.encode() not in written and SECRET not in caplog.text


class _Trickle(http.server.BaseHTTPRequestHandler):
    """Answers every POST with a 200 whose body arrives one byte every 0.1 s (1000 bytes: 100 s in all)."""

    def do_POST(self):  # noqa: N802 - the base class's name
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", "1000")
        self.end_headers()
        try:
            for _ in range(1000):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:  # the client gave up
            pass

    def log_message(self, format, *args):  # noqa: A002
        pass


def test_a_server_trickling_its_answer_is_cut_off_at_the_total_deadline(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/v1"
        params = ApiParams(api_base=base, api_model="m", server="openai", cache_dir=str(tmp_path / "cache"),
                           timeout_s=1.0, max_retries=1, backoff_s=0.0)
        model = ApiModel(params, api_key=SECRET)
        start = time.monotonic()
        with pytest.raises(ServerUnavailable, match=r"no answer within 1 s \(timeout.*2 tries"):
            model.client.request("chat", {"model": "m", "messages": []})
        assert time.monotonic() - start < 6  # two tries of 1 s, not 100 s each
        assert len(model.client.cache) == 0
    finally:
        server.shutdown()
        server.server_close()


# === the report's explorer =========================================================================================
HOSTILE = "<!--<script"


def _hostile_report(folder: Path) -> tuple[Path, int, dict]:
    """A report page (pipelines/experiment/report.py: _html) whose answer, tokens, object label and skipped reason
    hold ``<!--<script``: 6 figures, one explored image with 2 tokens and 1 object."""
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    from eagle_pipelines.core.attribution import Attribution
    from eagle_pipelines.pipelines.experiment.report import _html
    from eagle_pipelines.reporting.explorer import ExplorerImage, explorer_data

    labels = np.zeros((40, 40), int)
    labels[:20, 20:], labels[20:, :20], labels[20:, 20:] = 1, 2, 3
    answer = f"a {HOSTILE} circle</script>"
    sentence = Attribution(order=np.array([2, 0, 1, 3]), insertion=np.array([[0.9, 0.2], [0.9, 0.8], [0.9, 0.8],
                                                                             [0.9, 0.8]]),
                           deletion=np.array([[0.1, 0.8], [0.1, 0.2], [0.1, 0.2], [0.1, 0.2]]),
                           objective=np.array([1.1, 1.7, 1.7, 1.7]), area=np.array([0.25, 0.5, 0.75, 1.0]),
                           full_score=np.array([0.9, 0.8]), empty_score=np.array([0.1, 0.2]), labels=labels,
                           target_positions=[1, 2], target_token_ids=[5, 6], target_words=[HOSTILE, "circle</script>"],
                           answer=answer, prompt="Describe the image.", meta={"image_id": 7, "level": "sentence"})
    word = Attribution(order=np.array([1, 0, 2, 3]), insertion=np.array([[0.3], [0.35], [0.4], [0.4]]),
                       deletion=np.array([[0.35], [0.3], [0.25], [0.2]]), objective=np.array([0.95, 1.05, 1.15, 1.2]),
                       area=np.array([0.25, 0.5, 0.75, 1.0]), full_score=np.array([0.4]), empty_score=np.array([0.2]),
                       labels=labels, target_positions=[2], target_token_ids=[6], target_words=["circle</script>"],
                       answer=answer, meta={"image_id": 7, "level": "word", "bbox": [20, 0, 20, 20],
                                            "category": f"{HOSTILE} & co"})
    item = ExplorerImage(7, np.full((40, 40, 3), 90, np.uint8), ("sentence/7", sentence), [("word/7_1", word)])
    data = explorer_data([item])
    pngs = {}
    for name in ("sentence_overlays", "word_overlays", "curves", "curves_word", "influence", "table"):
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot([0, 1], [0, 1])
        ax.set_title(answer)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        pngs[name] = buf.getvalue()
    metrics = pd.DataFrame([{"method": "eagle", "level": "sentence", "protocol": "pixels", "insertion_auc": 0.5,
                             "deletion_auc": 0.2, "n_samples": 1}])
    coverage = {"not_made": [{"stage": "answers", "item": HOSTILE, "reason": f"{HOSTILE}<b>"}],
                "left_out": {"sentence": {"tam": [f"sentence/{HOSTILE}"]}}}  # an item key from a list's question id
    page = _html(metrics, {**pngs, "table": pngs["table"]}, coverage, {"model": HOSTILE}, {"note": HOSTILE},
                 "pixels", data)
    path = folder / "report.html"
    path.write_text(page, encoding="utf-8")
    return path, len(pngs) - 1, data["images"][0]  # the table is not shown as a figure


def test_the_explorer_payload_escapes_what_could_end_or_switch_the_script_element(tmp_path):
    path, _, _ = _hostile_report(tmp_path)
    page = path.read_text()
    start = page.index('id="explorer-data">') + len('id="explorer-data">')
    payload = page[start:page.index("</script>", start)]
    assert not set("<>&") & set(payload) and "\\u003c!--\\u003cscript" in payload
    assert HOSTILE not in page.replace(payload, "")  # nowhere else in the page as markup either
    data = json.loads(payload)
    assert data["images"][0]["answer"] == f"a {HOSTILE} circle</script>"


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)")
def test_an_answer_holding_a_script_comment_renders_every_figure_and_token_in_chromium(tmp_path):
    from tests.integration.test_browser import EXPLORER, _explorer_after

    path, n_figures, shown = _hostile_report(tmp_path)
    with devtools(tmp_path, path.as_uri()) as page:
        start = page.wait(EXPLORER, what="the explorer's first map")
        figures = page.wait(f"(() => {{ const f = [...document.querySelectorAll('figure[id^=figure-] img')]; "
                            f"return f.length === {n_figures} && f.every(i => i.complete && i.naturalWidth > 0) "
                            f"? f.length : 0; }})()", what="every figure drawn")
        assert figures == n_figures
        assert len(start["tokens"]) == len(shown["tokens"]) == 2
        texts = page.js("[...document.querySelectorAll('#ex-answer .ex-token')].map(b => b.textContent)")
        assert texts == [HOSTILE, "circle</script>"]  # shown as text, not parsed as markup
        for view in start["tokens"]:
            state = _explorer_after(page, f"document.querySelector('.ex-token[data-view=\"{view}\"]').click()",
                                    view, "eagle")
            assert "token" in state["caption"]
        assert page.js("[...document.querySelectorAll('#ex-objects .ex-object')].map(b => b.textContent)") == [
            o["label"] for o in shown["objects"]] == ["circle</script>"]
        assert page.js("document.querySelectorAll('script').length") == 2  # the data block and the explorer's
