"""EAGLE on real models: scoring paths agree, curves are what they claim, and the notebook runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from eagle_pipelines.api import explain
from eagle_pipelines.core.regions import slico
from eagle_pipelines.io import VisionLanguageModelDataset
from eagle_pipelines.models.qwen_vl import QwenVLAdapter

ROOT = Path(__file__).parents[1]
PROMPT = "Describe the image."


@pytest.fixture(scope="module")
def toy():
    return VisionLanguageModelDataset(path=str(ROOT / "data/06_models/toy_qwen2_5_vl")).load()


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


def test_teacher_forced_probabilities_equal_those_of_generation(toy, image):
    answer = toy.generate(image, PROMPT)
    assert answer.finished and len(answer.token_ids) >= 3
    probs = toy.scorer(image, PROMPT, answer.token_ids, list(range(len(answer.token_ids))))(
        np.ones((1, 112, 112), bool))
    np.testing.assert_allclose(probs[0], answer.token_probs, atol=1e-5)


@pytest.mark.parametrize("strategy", ["greedy", "efficient"])
def test_recorded_curves_equal_independently_recomputed_probabilities(toy, image, strategy):
    regions = slico(image, n_segments=8)
    a = explain(toy, image, PROMPT, strategy=strategy, regions=regions,
                search_params={"search_scope": 2, "pending_samples": 2, "update_step": 2} if strategy == "efficient"
                else None)
    n = regions.n_regions
    assert sorted(a.order.tolist()) == list(range(n))
    assert np.all(np.diff(a.area) > 0) and a.area[-1] == 1.0
    np.testing.assert_allclose(a.area, np.cumsum(regions.areas()[a.order]), atol=1e-9)
    scorer = toy.scorer(image, PROMPT, toy.generate(image, PROMPT).token_ids, a.target_positions, batch_size=5)
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


def test_word_level_puts_the_first_region_on_the_object(toy, eval_split):
    from eagle_pipelines.data.coco import CocoIndex

    index = CocoIndex(eval_split.instances)
    hits = total = 0
    for image_id in index.image_ids()[:8]:
        image = eval_split.images[index.image_info(image_id)["file_name"]]
        answer = toy.generate(image, PROMPT)
        for obj in index.objects(image_id):
            if obj.category not in answer.text:
                continue
            a = explain(toy, image, PROMPT, tokens=[obj.category], answer=answer, n_regions=16, strategy="efficient")
            top = a.labels == a.order[0]
            hits += (top & obj.mask.astype(bool)).sum() / top.sum() > 0.5
            total += 1
    assert total >= 8
    assert hits / total >= 0.75


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
