"""End to end against the real thing: vLLM's CPU build serving a copy of the embedded model on 127.0.0.1.

The vLLM environment is built once in .venvs/vllm (about 4 minutes; EAGLE_VLLM_VENV names another folder) and
reused while it is there; one server is started for the whole session (about a minute, eager mode, a 1 GB KV
cache) and stopped at its end. Requests are few: three images, six regions. What must hold (docs/api.md):

- the API path gives the local path's answers and orders wherever coverage is complete (exact prompt_logprobs
  scoring), and insertion/deletion AUCs within 0.01 where the top-k protocol misses probabilities;
- a server killed mid-run stops eagle-explain with a clear message, keeps the finished images, and a rerun
  completes only the rest without sending any answered request again (counted by the client and by the server);
- ``kedro run --pipeline=eagle_coco --env=api`` runs on it;
- the vLLM scoring backend's probabilities equal the transformers scorer's within 1e-5 (4.2e-6 measured), with
  the masked copies composed from one rendering of the image (the default) and through vLLM's processor.

EAGLE_SKIP_VLLM=1 skips the module (e.g. a quick local run); CI runs it.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

from eagle_pipelines.api import explain, load_model
from eagle_pipelines.core.metrics import Curves, deletion_auc, insertion_auc
from eagle_pipelines.core.regions import superpixels

from tests.conftest import ROOT, SHIPPED_MODEL

PROMPT = "Describe the image."
VENV = Path(os.environ.get("EAGLE_VLLM_VENV", ROOT / ".venvs/vllm"))

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.environ.get("EAGLE_SKIP_VLLM") == "1", reason="EAGLE_SKIP_VLLM=1")]


@pytest.fixture(scope="session")
def vllm_venv():
    from eagle_pipelines.deploy.vllm_server import ensure_venv

    return ensure_venv(VENV, python=sys.executable)


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    from eagle_pipelines.deploy.vllm_server import served_copy

    return served_copy(SHIPPED_MODEL, tmp_path_factory.mktemp("served") / "toy_qwen2_5_vl")


@pytest.fixture(scope="session")
def server(vllm_venv, served, tmp_path_factory):
    from eagle_pipelines.deploy.vllm_server import VllmServer

    running = VllmServer(vllm_venv, served, tmp_path_factory.mktemp("vllm-server")).start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def photos():
    from eagle_pipelines.data.shapes import generate_split
    from eagle_pipelines.parameters import parse

    shapes = parse("shapes", yaml.safe_load((ROOT / "conf/base/parameters_data_preparation.yml").read_text())["shapes"])
    split = generate_split(shapes.model_copy(update={"splits": shapes.splits.model_copy(update={"eval": 3})}), "eval")
    return [split.images[k] for k in sorted(split.images)]


def _aucs(a) -> tuple[float, float]:
    curves = Curves(a.area, a.insertion, a.deletion)
    return insertion_auc(curves), deletion_auc(curves)


def _served_requests(server) -> int:
    """Chat completions the server's engine finished (its Prometheus counter, every finish reason)."""
    with urllib.request.urlopen(server.url.rsplit("/v1", 1)[0] + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return int(sum(float(v) for v in re.findall(r'^vllm:request_success_total\{[^}]*\} (\S+)$', text, re.M)))


# -- the offline backend (first: before the server takes the CPUs) ----------------------------------------------------
def test_vllm_backend_probabilities_equal_the_transformers_scorer(vllm_venv, served, shipped_model, photos, tmp_path):
    from eagle_pipelines.deploy.vllm_server import score_in_venv

    image = shipped_model.model_image(photos[1])
    answer = shipped_model.generate(image, PROMPT)
    ids = [*answer.token_ids, answer.end_token_id]
    rng = np.random.default_rng(0)
    masks = np.concatenate([np.ones((1, *image.shape[:2]), bool), np.zeros((1, *image.shape[:2]), bool),
                            rng.random((46, *image.shape[:2])) > rng.uniform(0.2, 0.8, (46, 1, 1))])
    expected = shipped_model.scorer(image, PROMPT, ids, list(range(len(ids))), memory_budget_mb=0)(masks)
    np.savez(tmp_path / "masks.npz", image=image, prompt=np.array(PROMPT), answer_ids=np.array(ids),
             positions=np.arange(len(ids)), masks=masks)
    out = score_in_venv(vllm_venv, tmp_path / "masks.npz", served, tmp_path / "vllm.json", tmp_path,
                        dtype="float32", max_model_len=256, enforce_eager=True, max_num_seqs=64,
                        composes=["pixel_values", "processor"])
    assert out["answer_ids"] == list(answer.token_ids) and out["end_token_id"] == answer.end_token_id
    assert np.allclose(out["answer_probs"], answer.token_probs, atol=1e-4)
    for compose in ("pixel_values", "processor"):
        got = np.array(out["probs_by_compose"][compose])
        assert got.shape == expected.shape == (48, len(ids))
        assert np.abs(got - expected).max() < 1e-5, (compose, np.abs(got - expected).max())
    assert out["probs"] == out["probs_by_compose"]["pixel_values"]
    assert expected[:, 1].min() < 0.5 < expected[:, 1].max()  # the masks do change the colour word's probability


# -- the API path against the server -----------------------------------------------------------------------------------
def test_the_api_path_gives_the_local_answers_and_orders(server, shipped_model, photos, tmp_path):
    api = load_model(api_base=server.url, api_model=server.model_name, cache_dir=str(tmp_path / "cache"))
    assert (api.server, api.scoring) == ("vllm", "prompt_logprobs")
    for photo in photos:
        mine, theirs = shipped_model.generate(photo, PROMPT), api.generate(photo, PROMPT)
        assert theirs.token_ids == mine.token_ids and theirs.text == mine.text
        assert theirs.end_token_id == mine.end_token_id and theirs.finished
        assert np.allclose(theirs.token_probs, mine.token_probs, atol=1e-4)
        regions = superpixels(shipped_model.model_image(photo), n_segments=6)
        ours = explain(shipped_model, photo, PROMPT, strategy="greedy", answer=mine, regions=regions)
        served_one = explain(api, photo, PROMPT, strategy="greedy", answer=theirs, regions=regions)
        meta = served_one.meta["api"]
        assert meta["coverage"] == 1.0 and meta["missing"] == 0
        assert meta["requests"] == served_one.forward_passes == ours.forward_passes  # one request per masked image
        assert served_one.order.tolist() == ours.order.tolist()
        assert np.allclose(served_one.insertion, ours.insertion, atol=1e-4)
        assert np.allclose(served_one.deletion, ours.deletion, atol=1e-4)
    # the end-of-turn token too (conf/paper explains it): the answer's ids plus <|im_end|>, on random masks
    image = shipped_model.model_image(photos[0])
    answer = shipped_model.generate(image, PROMPT)
    ids, positions = [*answer.token_ids, answer.end_token_id], list(range(len(answer.token_ids) + 1))
    masks = np.random.default_rng(1).random((6, *image.shape[:2])) > 0.5
    expected = shipped_model.scorer(image, PROMPT, ids, positions, memory_budget_mb=0)(masks)
    assert np.allclose(api.scorer(image, PROMPT, ids, positions)(masks), expected, atol=1e-4)


def test_the_top_k_protocol_records_coverage_and_keeps_the_aucs(server, shipped_model, photos, tmp_path):
    api = load_model(api_base=server.url, api_model=server.model_name, cache_dir=str(tmp_path / "cache"),
                     scoring="top_logprobs")
    coverages = []
    for photo in photos:
        answer = shipped_model.generate(photo, PROMPT)
        regions = superpixels(shipped_model.model_image(photo), n_segments=6)
        ours = explain(shipped_model, photo, PROMPT, strategy="greedy", answer=answer, regions=regions)
        topk = explain(api, photo, PROMPT, strategy="greedy", answer=answer, regions=regions)
        meta = topk.meta["api"]
        assert meta["requests"] == topk.forward_passes * len(topk.target_positions)
        assert meta["scored"] == meta["requests"] and 0.0 < meta["coverage"] <= 1.0
        coverages.append(meta["coverage"])
        if meta["coverage"] == 1.0:
            assert topk.order.tolist() == ours.order.tolist()
        assert np.allclose(_aucs(topk), _aucs(ours), atol=0.01)
        # a missing token is 0, never more than the exact probability
        assert (topk.insertion <= ours.insertion + 1e-4).all()
    assert min(coverages) < 1.0  # the embedded model's top-20 misses some (a vocabulary of 34 tokens)


def test_kedro_run_on_the_api_environment(server, project):
    from kedro.framework.session import KedroSession

    catalog = project / "conf/api/catalog.yml"
    entry = yaml.safe_load(catalog.read_text())
    entry["vlm"].update(api_base=server.url, api_model=server.model_name)
    catalog.write_text(yaml.safe_dump(entry))
    params = {"shapes": {"splits": {"eval": 2}}, "superpixels": {"n_segments": 6}, "evaluation": {"pixel_steps": 4},
              "reporting": {"figure_samples": 1}}
    with KedroSession.create(project_path=project, env="api", runtime_params=params) as session:
        session.run(pipeline_name="eagle_coco")
    data = project / "data"
    answers = json.loads((data / "07_model_output/eagle_coco/answers.json").read_text())
    assert answers["model"] == "toy_qwen2_5_vl" and answers["model_fingerprint"].startswith("api-")
    assert len(answers["answers"]) == 2 and all(a["end_token_id"] == 29 for a in answers["answers"])
    import pandas as pd

    metrics = pd.read_csv(data / "08_reporting/eagle_coco/metrics.csv")
    assert set(metrics.method) == {"eagle", "random"}  # no baselines: they need the model's internals
    assert metrics[["insertion_auc", "deletion_auc"]].apply(lambda c: c.between(0, 1)).all().all()
    manifest = json.loads((data / "07_model_output/eagle_coco/attributions.json").read_text())
    from eagle_pipelines.core.attribution import Attribution

    store = data / "07_model_output/eagle_coco/attributions"
    for key, info in manifest["items"].items():
        a = Attribution.load(store / f"{key}.{info['fp']}.npz")
        assert a.meta["api"]["coverage"] == 1.0 and a.meta["api"]["scoring"] == "prompt_logprobs"
    assert (data / "07_model_output/api_cache/responses.sqlite").is_file()
    run = json.loads((data / "08_reporting/eagle_coco/run.json").read_text())
    assert run["coverage"]["api"]["coverage"] == 1.0 and run["coverage"]["api"]["missing"] == 0
    assert "API coverage" in (data / "08_reporting/eagle_coco/report.html").read_text()


def test_a_server_killed_mid_run_stops_cleanly_and_the_rerun_sends_nothing_twice(server, photos, tmp_path,
                                                                                 monkeypatch, capsys):
    """eagle-explain over three images; the server is killed (SIGKILL) while the second is being explained, then
    started again and the same command rerun."""
    from PIL import Image

    from eagle_pipelines import explain_cli
    from eagle_pipelines.models.api_model import ApiClient

    folder = tmp_path / "images"
    folder.mkdir()
    for k, photo in enumerate(photos):
        Image.fromarray(photo).save(folder / f"img{k}.png")
    out = tmp_path / "out"
    log: list[tuple[str, str, str]] = []  # (run, event, request key)
    run = {"name": "first"}
    reserve, store = ApiClient._reserve, ApiClient._store

    def spy_reserve(self, key, budgeted):
        reserve(self, key, budgeted)
        log.append((run["name"], "sent" if budgeted else "sent (detokenize)", key))

    def spy_store(self, key, kind, response):
        store(self, key, kind, response)
        log.append((run["name"], "answered", key))

    monkeypatch.setattr(ApiClient, "_reserve", spy_reserve)
    monkeypatch.setattr(ApiClient, "_store", spy_store)
    killed = threading.Event()

    def killer():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if (out / "img0.png.json").exists():
                mark = len(log)
                while len(log) < mark + 8 and time.monotonic() < deadline:  # the second image is under way
                    time.sleep(0.005)
                server.kill()
                killed.set()
                return
            time.sleep(0.01)

    argv = [str(folder), "--api-base", server.url, "--api-model", server.model_name, "--regions", "6",
            "--strategy", "greedy", "--out", str(out), "--no-plot"]
    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    status = explain_cli.main(argv)
    thread.join(timeout=60)
    assert killed.is_set()
    err = capsys.readouterr().err
    assert status == 1
    assert "does not answer" in err and "finished images are kept" in err and "start the server and run again" in err
    rows = {r["image"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert [rows[str(folder / f"img{k}.png")]["status"] for k in range(3)] == ["explained", "failed", "failed"]
    assert "not started" in rows[str(folder / "img2.png")]["error"]
    assert (out / "img0.png.npz").exists() and not (out / "img1.png.json").exists()
    first_sent = {k for r, e, k in log if r == "first" and e == "sent"}  # chat completions
    first_answered = {k for r, e, k in log if r == "first" and e == "answered"}

    server.start()  # the same port, a new process: its request counter starts at 0
    run["name"] = "rerun"
    assert explain_cli.main(argv) == 0
    rows = {r["image"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert [rows[str(folder / f"img{k}.png")]["status"] for k in range(3)] == ["resumed", "explained", "explained"]
    rerun_sent = [k for r, e, k in log if r == "rerun" and e == "sent"]
    rerun_all = [k for r, e, k in log if r == "rerun" and e.startswith("sent")]
    assert rerun_sent and len(rerun_all) == len(set(rerun_all))
    assert not set(rerun_all) & first_answered  # nothing answered before was sent again
    in_flight = first_sent - first_answered  # sent when the server died, never answered
    assert set(rerun_sent) & first_sent <= in_flight
    # the server's engine finished exactly the chat requests the client sent (detokenize calls are not engine work)
    assert _served_requests(server) == len(rerun_sent)
    print(f"\nkilled mid-run: the first run sent {len(first_sent)} chat requests ({len(first_answered & first_sent)} "
          f"answered, {len(in_flight)} in flight when it died); the rerun sent {len(rerun_sent)}, none answered "
          f"before; the restarted server counted {_served_requests(server)}")


def test_the_vllm_backend_where_vllm_is_missing_says_how_to_get_it():
    """This project's own environment has no vLLM: backend 'vllm' names the fix instead of failing deep inside."""
    import importlib.util

    from eagle_pipelines.models.adapter import checkpoint_fingerprint
    from eagle_pipelines.io.model_dataset import VllmModelDataset

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    with pytest.raises(ImportError, match=r"backend 'vllm' needs vLLM installed .*ensure_venv"):
        load_model(str(SHIPPED_MODEL), backend="vllm")
    with pytest.raises(ValueError, match="backend must be 'transformers' or 'vllm'"):
        load_model(str(SHIPPED_MODEL), backend="tensorrt")
    assert VllmModelDataset(path=str(SHIPPED_MODEL)).stamp() == f"vllm-{checkpoint_fingerprint(SHIPPED_MODEL)}"
