"""EAGLE on real models: scoring paths agree, curves are what they claim, and the notebook runs."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from eagle_pipelines.api import explain
from eagle_pipelines.core.regions import slico
from eagle_pipelines.models.qwen_vl import QwenVLAdapter

from tests.conftest import ROOT

PROMPT = "Describe the image."


@pytest.fixture(scope="module")
def image(eval_split):
    return eval_split.images["eval_000001.png"]


def test_masked_pixel_values_equal_the_processor_path_and_batching_changes_nothing(tiny_model, tiny_processor,
                                                                                     image):
    adapter = QwenVLAdapter(tiny_model, tiny_processor)
    answer = adapter.generate(image, PROMPT, max_new_tokens=5)
    positions = list(range(len(answer.token_ids)))
    masks = np.random.default_rng(0).random((6, 112, 112)) > 0.5
    masks[0] = True
    masks[1] = False
    direct = adapter.scorer(image, PROMPT, answer.token_ids, positions, batch_size=4)(masks)
    processor = adapter.scorer(image, PROMPT, answer.token_ids, positions, compose="processor")(masks)
    one_by_one = np.concatenate([adapter.scorer(image, PROMPT, answer.token_ids, positions, batch_size=1)(m[None])
                                 for m in masks])
    np.testing.assert_allclose(direct, processor, atol=1e-5)
    np.testing.assert_allclose(direct, one_by_one, atol=1e-5)


def test_teacher_forced_probabilities_equal_those_of_generation(shipped_model, image):
    answer = shipped_model.generate(image, PROMPT)
    assert answer.finished and len(answer.token_ids) >= 3
    probs = shipped_model.scorer(image, PROMPT, answer.token_ids, list(range(len(answer.token_ids))))(
        np.ones((1, 112, 112), bool))
    np.testing.assert_allclose(probs[0], answer.token_probs, atol=1e-5)


@pytest.mark.parametrize("strategy", ["greedy", "efficient", "pooled"])
def test_recorded_curves_equal_independently_recomputed_probabilities(shipped_model, image, strategy):
    regions = slico(image, n_segments=8)
    a = explain(shipped_model, image, PROMPT, strategy=strategy, regions=regions,
                search_params={"efficient": {"search_scope": 2, "pending_samples": 2, "update_step": 2},
                               "pooled": {"pool_size": 4}}.get(strategy))
    n = regions.n_regions
    assert sorted(a.order.tolist()) == list(range(n))
    assert np.all(np.diff(a.area) > 0) and a.area[-1] == 1.0
    np.testing.assert_allclose(a.area, np.cumsum(regions.areas()[a.order]), atol=1e-9)
    answer = shipped_model.generate(image, PROMPT)
    scorer = shipped_model.scorer(image, PROMPT, answer.token_ids, a.target_positions, batch_size=5)
    prefixes = np.zeros((n, n), bool)
    for k in range(n):
        prefixes[k, a.order[: k + 1]] = True
    np.testing.assert_allclose(a.insertion, scorer(regions.masks(prefixes)), atol=1e-5)
    np.testing.assert_allclose(a.deletion, scorer(regions.masks(~prefixes)), atol=1e-5)
    np.testing.assert_allclose(a.full_score, scorer(np.ones((1, 112, 112), bool))[0], atol=1e-5)
    np.testing.assert_allclose(a.empty_score, scorer(np.zeros((1, 112, 112), bool))[0], atol=1e-5)
    if strategy == "greedy":
        assert a.forward_passes == n * (n + 1)
    else:
        assert a.forward_passes < n * (n + 1)


def test_word_level_puts_the_first_region_on_the_object(shipped_model, eval_split):
    from eagle_pipelines.data.coco import CocoIndex

    index = CocoIndex(eval_split.instances)
    hits = total = 0
    for image_id in index.image_ids()[:8]:
        image = eval_split.images[index.image_info(image_id)["file_name"]]
        answer = shipped_model.generate(image, PROMPT)
        for obj in index.objects(image_id):
            if obj.category not in answer.text:
                continue
            a = explain(shipped_model, image, PROMPT, tokens=[obj.category], answer=answer, n_regions=16,
                        strategy="efficient")
            top = a.labels == a.order[0]
            hits += (top & obj.mask.astype(bool)).sum() / top.sum() > 0.5
            total += 1
    assert total >= 8
    assert hits / total >= 0.75


@pytest.mark.slow
def test_the_notebook_runs_offline():
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "notebooks" / "explain_embedded_model.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "forward passes" in outputs and "inside the object" in outputs
    assert any(o.get("output_type") == "display_data" for c in nb.cells for o in c.get("outputs", []))


def test_scoring_halves_the_batch_on_out_of_memory_and_gives_the_same_numbers(tiny_model, tiny_processor, image,
                                                                              monkeypatch):
    adapter = QwenVLAdapter(tiny_model, tiny_processor)
    answer = adapter.generate(image, PROMPT, max_new_tokens=4)
    masks = np.random.default_rng(1).random((7, 112, 112)) > 0.3
    positions = list(range(len(answer.token_ids)))
    expected = adapter.scorer(image, PROMPT, answer.token_ids, positions, batch_size=7)(masks)
    scorer = adapter.scorer(image, PROMPT, answer.token_ids, positions, batch_size=8)
    real = scorer._forward

    def limited(chunk):
        if len(chunk) > 2:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 GB")
        return real(chunk)

    monkeypatch.setattr(scorer, "_forward", limited)
    np.testing.assert_allclose(scorer(masks), expected, atol=1e-6)
    assert scorer.batch_size == 2
    monkeypatch.setattr(scorer, "_forward", lambda chunk: (_ for _ in ()).throw(RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        scorer(masks)


def test_batch_size_follows_the_memory_budget():
    from eagle_pipelines.models.scoring import BatchedTokenScorer, batch_for_budget

    # room = 0.8 * (1000 - 200) = 640 MB at 100 MB per image -> 6 images; capped by the maximum; never below 1
    assert batch_for_budget(200, 100, 1000, 64) == 6
    assert batch_for_budget(200, 100, 1000, 4) == 4
    assert batch_for_budget(200, 100, 150, 64) == 1
    assert batch_for_budget(200, 0, 150, 64) == 64

    class Allocating(BatchedTokenScorer):
        """Each masked image costs 40 MB of touched memory; the probability is the kept fraction."""

        height = width = 8
        device = torch.device("cpu")
        target_positions = (0,)

        def __init__(self, **kw):
            super().__init__(**kw)
            self.chunks = []

        def _forward(self, chunk):
            self.chunks.append(len(chunk))
            buffer = np.ones((len(chunk), 40 * 2**20 // 8))  # 40 MB per image, written, so resident
            assert buffer.sum() > 0
            return chunk.reshape(len(chunk), -1).mean(axis=1, keepdims=True)

    rss = next(int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith("VmRSS:"))
    masks = np.random.default_rng(0).random((20, 8, 8)) > 0.5
    scorer = Allocating(batch_size=16, memory_budget_mb=rss + 250)  # room for about 0.8 * 250 / 40 = 5 images
    probs = scorer(masks)
    np.testing.assert_allclose(probs[:, 0], masks.reshape(20, -1).mean(axis=1))
    assert 3 <= scorer.batch_size <= 6, scorer.memory_plan
    assert scorer.memory_plan["per_image_mb"] == pytest.approx(40, rel=0.25)
    assert scorer.chunks[:2] == [1, 2] and max(scorer.chunks[2:]) == scorer.batch_size
    unplanned = Allocating(batch_size=16, memory_budget_mb=0)
    unplanned(masks)
    assert unplanned.chunks == [16, 4]


def test_explain_takes_an_image_file_and_names_a_bad_region_count(shipped_model, image, tmp_path):
    from PIL import Image

    Image.fromarray(image).save(tmp_path / "shapes.png")
    from_array = explain(shipped_model, image, PROMPT, n_regions=8, strategy="greedy")
    from_file = explain(shipped_model, tmp_path / "shapes.png", PROMPT, n_regions=8, strategy="greedy")
    np.testing.assert_array_equal(from_file.order, from_array.order)
    np.testing.assert_allclose(from_file.insertion, from_array.insertion)
    with pytest.raises(ValueError, match="n_regions must be at least 2"):
        explain(shipped_model, image, PROMPT, n_regions=0)
