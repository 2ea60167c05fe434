"""The baselines (LLaVA-CAM, IGOS++, TAM, Captum) on the embedded model, through the ModelInternals protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from eagle_pipelines.core.baselines import BASELINES, rank_gaussian_filter, run_baseline
from eagle_pipelines.core.baselines.captum_ablation import region_attributions
from eagle_pipelines.core.baselines.common import gaussian_blur, grid_to_image
from eagle_pipelines.core.baselines.igos_pp import bilateral_tv
from eagle_pipelines.parameters import BaselinesParams

ROOT = Path(__file__).parents[1]
MODEL = ROOT / "data/06_models/toy_qwen2_5_vl"
SETTINGS = BaselinesParams()  # the CPU defaults of the embedded run
N_IMAGES = 24
#: the floor on how often a gradient method puts more mass (per pixel) on the explained object than on the other
#: one; chance is 0.5
LOCALISATION_FLOOR = 0.7


@pytest.fixture(scope="module")
def vlm():
    from eagle_pipelines.models.qwen_vl import QwenVLAdapter

    if not (MODEL / "config.json").exists():
        pytest.skip(f"no embedded model at {MODEL}")
    return QwenVLAdapter.from_pretrained(MODEL)


@pytest.fixture(scope="module")
def two_objects(vlm):
    """Two-object shapes images (not the eval split) the model describes, with both objects' token positions:
    (image, objects, answer, positions per object)."""
    from eagle_pipelines.core.targets import phrase_positions
    from eagle_pipelines.data.params import ShapesParams
    from eagle_pipelines.data.shapes import generate_image

    cfg = yaml.safe_load((ROOT / "conf/base/parameters_data_preparation.yml").read_text())["shapes"]
    cfg.update(objects_per_image=[2, 2], seed=123, cooccurrence=None)
    params = ShapesParams(**cfg)
    drawn = [generate_image(params, "eval", i) for i in range(N_IMAGES)]
    answers = vlm.generate_batch([image for image, _ in drawn], "Describe the image.")
    samples = []
    for (image, objects), answer in zip(drawn, answers):
        positions = [phrase_positions(vlm.processor.tokenizer.decode, answer.token_ids, o.name) for o in objects]
        if all(positions):
            samples.append((vlm.model_image(image), objects, answer, positions))
    assert len(samples) >= 20, f"the model names both objects in only {len(samples)} of {N_IMAGES} images"
    return samples


def _labels(image: np.ndarray) -> np.ndarray:
    from eagle_pipelines.core.regions import slico

    return slico(image, n_segments=16).labels


def test_the_differentiable_pass_reproduces_the_scorer(vlm, two_objects):
    image, _objects, answer, _positions = two_objects[0]
    tf = vlm.teacher_forced(image, answer.prompt, answer.token_ids)
    everything = list(range(len(answer.token_ids)))
    expected = vlm.scorer(image, answer.prompt, answer.token_ids, everything)(np.ones((1, *image.shape[:2]), bool))
    x = tf.image[None].clone().requires_grad_(True)
    out = tf(x, hidden_states=True)
    probs = torch.softmax(out.logits.float(), -1)[0, torch.arange(len(everything)), tf.answer_ids]
    np.testing.assert_allclose(probs.detach().numpy(), expected[0], atol=1e-5)
    # the head on the last hidden states gives the same logits; the image gets a gradient
    head = tf.head(out.hidden_states[-1])[0, tf.answer_start - 1: -1]
    np.testing.assert_allclose(head.detach().numpy(), out.logits[0].detach().numpy(), atol=1e-4)
    probs.log().sum().backward()
    assert x.grad.abs().sum() > 0
    assert tf.image_grid[0] * tf.image_grid[1] == len(tf.image_positions)
    assert (tf.input_ids[tf.image_positions] == vlm.model.config.image_token_id).all()
    assert vlm.processor.tokenizer.decode(tf.input_ids[tf.context_positions]).strip() == answer.prompt


def test_each_method_returns_a_finite_non_constant_map_of_the_image_size(vlm, two_objects):
    image, _objects, answer, positions = two_objects[0]
    tf = vlm.teacher_forced(image, answer.prompt, answer.token_ids)
    labels = _labels(image)
    for level, tokens in (("sentence", range(len(answer.token_ids))), ("word", positions[0])):
        for method in BASELINES:
            result = run_baseline(method, tf, tokens, labels, **SETTINGS.settings(method))
            assert result.map.shape == image.shape[:2] and result.map.dtype == np.float32, (method, level)
            assert np.isfinite(result.map).all(), (method, level)
            assert np.ptp(result.map) > 0, f"{method} gives a constant map at {level} level"
            assert result.seconds > 0 and result.peak_memory_mb > 0


def test_gradient_methods_put_more_mass_on_the_explained_object(vlm, two_objects, record_property):
    """Over >= 20 two-object images, alternately explaining the first and the second object's words: how often
    a map's mean over the explained object exceeds its mean over the other object (chance: 0.5).

    Asserted for IGOS++ and for LLaVA-CAM's per-token weighting; LLaVA-CAM's Grad-CAM pooling (the default, as
    published) and the other methods are reported (docs/baselines.md)."""
    variants = {name: (name, SETTINGS.settings(name)) for name in BASELINES}
    variants["llava_cam_token"] = ("llava_cam", {**SETTINGS.settings("llava_cam"), "weighting": "token"})
    hits = {name: [] for name in variants}
    for k, (image, objects, answer, positions) in enumerate(two_objects):
        tf = vlm.teacher_forced(image, answer.prompt, answer.token_ids)
        target, other = objects[k % 2], objects[1 - k % 2]
        labels = _labels(image)
        for name, (method, settings) in variants.items():
            saliency = run_baseline(method, tf, positions[k % 2], labels, **settings).map
            hits[name].append(saliency[target.mask].mean() > saliency[other.mask].mean())
    rates = {name: float(np.mean(h)) for name, h in hits.items()}
    record_property("localisation_rates", rates)
    print(f"\nexplained object beats the other one in {len(two_objects)} images:", rates)
    for name in ("igos_pp", "llava_cam_token"):
        assert rates[name] >= LOCALISATION_FLOOR, rates


def test_captum_agrees_with_a_direct_ablation(vlm, two_objects):
    image, _objects, answer, positions = two_objects[1]
    tf = vlm.teacher_forced(image, answer.prompt, answer.token_ids)
    labels = _labels(image)
    tokens = positions[0]
    ids, values = region_attributions(tf, tokens, labels)
    assert sorted(ids.tolist()) == sorted(np.unique(labels).tolist())

    def log_prob(images: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            logp = torch.log_softmax(tf(images).logits.float(), -1)[:, tokens]
        return logp.gather(-1, tf.answer_ids[tokens].expand(len(images), -1).unsqueeze(-1)).sum((1, 2)).numpy()

    ablated = torch.stack([tf.image * torch.from_numpy(labels != r)[..., None] for r in ids])
    direct = log_prob(tf.image[None])[0] - log_prob(ablated)
    np.testing.assert_allclose(values, direct, atol=1e-4)
    saliency = run_baseline("captum", tf, tokens, labels).map
    np.testing.assert_allclose(saliency[labels == ids[0]], values[0], atol=1e-6)


def test_rank_gaussian_filter_by_hand():
    np.testing.assert_allclose(rank_gaussian_filter(np.full((4, 4), 0.3)), 0.3)  # a flat window keeps its value
    np.testing.assert_allclose(rank_gaussian_filter(np.zeros((3, 3))), 0.0)
    spike = np.zeros((3, 3))
    spike[1, 1] = 9.0  # the centre's window is the whole grid: values 0 x 8 and 9, mean 1, std sqrt(8)
    ax = np.arange(9) - 4
    weights = np.exp(-ax ** 2 / (2 * 8.0))
    assert rank_gaussian_filter(spike)[1, 1] == pytest.approx(9 * weights[-1] / weights.sum())
    with pytest.raises(ValueError, match="odd"):
        rank_gaussian_filter(spike, kernel_size=2)


def test_helpers_keep_what_they_should():
    flat = torch.full((20, 30, 3), 77.0)
    np.testing.assert_allclose(gaussian_blur(flat, 25, 24.0).numpy(), 77.0, rtol=1e-5)  # blur keeps a flat image
    assert grid_to_image(np.arange(4.0).reshape(2, 2), 8, 8).shape == (8, 8)
    mask = torch.full((1, 1, 4, 4), 0.5)
    assert bilateral_tv(flat / 255, mask, torch.full((1, 1, 20, 30), 0.5)).item() == 0.0


def test_a_model_without_internals_is_refused_with_the_fix():
    from eagle_pipelines.parameters import BaselinesParams
    from eagle_pipelines.pipelines.experiment.nodes import run_baselines

    class Api:
        name = "api-model"

    with pytest.raises(TypeError, match=r"baselines\.methods: \[\]"):
        run_baselines(Api(), None, {"targets": []}, None, None, BaselinesParams())


def test_a_registered_baseline_is_known_to_the_parameters_the_reports_and_eagle_repope():
    from eagle_pipelines.core.baselines import BASELINES, display_name
    from eagle_pipelines.parameters import BaselinesParams, EagleRepopeParams

    assert set(BaselinesParams().methods) == set(BASELINES) == set(BaselinesParams.model_fields) - {"methods"}
    assert set(EagleRepopeParams().methods) == {"eagle", "random", *BASELINES}
    assert display_name("igos_pp") == "IGOS++" and display_name("eagle") == "EAGLE"
    for name, record in BASELINES.items():
        assert BaselinesParams().settings(name) == record.params().model_dump()


def test_baselines_parameters_are_checked_with_their_names():
    from eagle_pipelines.parameters import ParameterError, parse

    for env in ("base", "paper"):
        parse("baselines", yaml.safe_load((ROOT / f"conf/{env}/parameters_baselines.yml").read_text())["baselines"])
    with pytest.raises(ParameterError, match=r"baselines\.tam\.kernel_size"):
        parse("baselines", {"tam": {"kernel_size": 4}})
    with pytest.raises(ParameterError, match=r"baselines\.methods\.0"):
        parse("baselines", {"methods": ["gradcam"]})
