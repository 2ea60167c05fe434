"""The baselines (LLaVA-CAM, IGOS++, TAM, Captum) on the embedded model, through the ModelInternals protocol."""

from __future__ import annotations


import numpy as np
import pytest
import torch
import yaml

from eagle_pipelines.core.baselines import BASELINES, rank_gaussian_filter, run_baseline
from eagle_pipelines.core.baselines.captum_ablation import region_attributions
from eagle_pipelines.core.baselines.common import gaussian_blur, grid_to_image
from eagle_pipelines.core.baselines.igos_pp import bilateral_tv
from eagle_pipelines.parameters import BaselinesParams

from tests.conftest import ROOT

SETTINGS = BaselinesParams()  # the CPU defaults of the embedded run
N_IMAGES = 24
#: the floor on how often a gradient method puts more mass (per pixel) on the explained object than on the other
#: one; chance is 0.5
LOCALISATION_FLOOR = 0.7


@pytest.fixture(scope="module")
def two_objects(shipped_model):
    """Two-object shapes images (not the eval split) the model describes, with both objects' token positions:
    (image, objects, answer, positions per object)."""
    from eagle_pipelines.core.targets import phrase_positions
    from eagle_pipelines.data.params import ShapesParams
    from eagle_pipelines.data.shapes import generate_image

    cfg = yaml.safe_load((ROOT / "conf/base/parameters_data_preparation.yml").read_text())["shapes"]
    cfg.update(objects_per_image=[2, 2], seed=123, cooccurrence=None)
    params = ShapesParams(**cfg)
    drawn = [generate_image(params, "eval", i) for i in range(N_IMAGES)]
    answers = shipped_model.generate_batch([image for image, _ in drawn], "Describe the image.")
    samples = []
    for (image, objects), answer in zip(drawn, answers):
        decode = shipped_model.processor.tokenizer.decode
        positions = [phrase_positions(decode, answer.token_ids, o.name) for o in objects]
        if all(positions):
            samples.append((shipped_model.model_image(image), objects, answer, positions))
    assert len(samples) >= 20, f"the model names both objects in only {len(samples)} of {N_IMAGES} images"
    return samples


def _labels(image: np.ndarray) -> np.ndarray:
    from eagle_pipelines.core.regions import slico

    return slico(image, n_segments=16).labels


def test_the_differentiable_pass_reproduces_the_scorer(shipped_model, two_objects):
    image, _objects, answer, _positions = two_objects[0]
    tf = shipped_model.teacher_forced(image, answer.prompt, answer.token_ids)
    everything = list(range(len(answer.token_ids)))
    scorer = shipped_model.scorer(image, answer.prompt, answer.token_ids, everything)
    expected = scorer(np.ones((1, *image.shape[:2]), bool))
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
    assert (tf.input_ids[tf.image_positions] == shipped_model.model.config.image_token_id).all()
    assert shipped_model.processor.tokenizer.decode(tf.input_ids[tf.context_positions]).strip() == answer.prompt


def test_each_method_returns_a_finite_non_constant_map_of_the_image_size(shipped_model, two_objects):
    image, _objects, answer, positions = two_objects[0]
    tf = shipped_model.teacher_forced(image, answer.prompt, answer.token_ids)
    labels = _labels(image)
    for level, tokens in (("sentence", range(len(answer.token_ids))), ("word", positions[0])):
        for method in BASELINES:
            result = run_baseline(method, tf, tokens, labels, **SETTINGS.settings(method))
            assert result.map.shape == image.shape[:2] and result.map.dtype == np.float32, (method, level)
            assert np.isfinite(result.map).all(), (method, level)
            assert np.ptp(result.map) > 0, f"{method} gives a constant map at {level} level"
            assert result.seconds > 0 and result.peak_memory_mb > 0


def test_gradient_methods_put_more_mass_on_the_explained_object(shipped_model, two_objects, record_property):
    """Over >= 20 two-object images, alternately explaining the first and the second object's words: how often
    a map's mean over the explained object exceeds its mean over the other object (chance: 0.5).

    Asserted for IGOS++ and for LLaVA-CAM's per-token weighting; LLaVA-CAM's Grad-CAM pooling (the default, as
    published) and the other methods are reported (docs/baselines.md)."""
    variants = {name: (name, SETTINGS.settings(name)) for name in BASELINES}
    variants["llava_cam_token"] = ("llava_cam", {**SETTINGS.settings("llava_cam"), "weighting": "token"})
    hits = {name: [] for name in variants}
    for k, (image, objects, answer, positions) in enumerate(two_objects):
        tf = shipped_model.teacher_forced(image, answer.prompt, answer.token_ids)
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


def test_captum_agrees_with_a_direct_ablation(shipped_model, two_objects):
    image, _objects, answer, positions = two_objects[1]
    tf = shipped_model.teacher_forced(image, answer.prompt, answer.token_ids)
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
        run_baselines(Api(), None, {"targets": []}, None, BaselinesParams())


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

    parse("baselines", yaml.safe_load((ROOT / "conf/base/parameters_baselines.yml").read_text())["baselines"])
    parse("baselines", _paper_baselines())  # the paper file interpolates the model's preset: load it with Kedro
    with pytest.raises(ParameterError, match=r"baselines\.tam\.kernel_size"):
        parse("baselines", {"tam": {"kernel_size": 4}})
    with pytest.raises(ParameterError, match=r"baselines\.methods\.0"):
        parse("baselines", {"methods": ["gradcam"]})


# --- the reference code's settings (conf/paper, docs/baselines.md) --------------------------------------------------
def _paper_baselines(model: str | None = None) -> dict:
    """``params:baselines`` of the paper environment for the preset `model` (default: the paper's main model),
    resolved by Kedro's config loader as a run would."""
    from kedro.config import OmegaConfigLoader

    loader = OmegaConfigLoader(str(ROOT / "conf"), base_env="base", default_run_env="paper", env="paper",
                               runtime_params={"model": model} if model else {})
    return loader["parameters"]["baselines"]


def test_the_paper_environment_uses_the_reference_values_per_model():
    from eagle_pipelines.parameters import parse

    layers = {None: 32, "qwen2_5_vl_3b_local": 32, "qwen2_5_vl_7b": 26, "internvl3_5_4b": 32, "llava_1_5_7b": 13,
              "toy": 0}
    bases = {None: "blur", "qwen2_5_vl_7b": "blur", "internvl3_5_4b": "mean", "llava_1_5_7b": "mean", "toy": "blur"}
    for model, layer in layers.items():
        params = parse("baselines", _paper_baselines(model))
        cam, igos = params.llava_cam, params.igos_pp
        assert (cam.layer, cam.submodule) == (layer, "post_attention_layernorm"), model
        assert (cam.samples, cam.noise, cam.noisy_uint8, cam.relu_gradients) == (50, 0.1, True, True)
        assert igos.baseline == bases.get(model, "blur"), model
        assert (igos.blur_kernel, igos.keyword_threshold, igos.l2_decay, igos.align_corners) == (
            "by_width", 1.0, "compounding", False)
        assert igos.tv == 10 * 0.5  # the reference's L3 = 10 times a norm halved inside bilateral_tv_norm
    base = BaselinesParams()  # our defaults keep the embedded run's behaviour
    assert (base.llava_cam.layer, base.llava_cam.hidden_state, base.llava_cam.noisy_uint8) == (None, -2, False)
    assert (base.igos_pp.keyword_threshold, base.igos_pp.l2_decay, base.igos_pp.tv) == (None, "exponential", 10.0)


def _hooked(module: torch.nn.Module, run):
    """(what `run()` returns, the output `module` gave during it), read with a hook of the test's own."""
    seen = []
    handle = module.register_forward_hook(lambda _m, _a, out: seen.append(out[0] if isinstance(out, tuple) else out))
    try:
        result = run()
    finally:
        handle.remove()
    assert len(seen) == 1
    return result, seen[0]


def _grad_cam_by_hand(tf, module: torch.nn.Module, positions: list[int]) -> np.ndarray:
    """One sample without noise: ReLU(grad)-pooled channel weights times the activations of `module` at the
    image tokens, ReLU, divided by the maximum (a blank map: the signed scores min-max normalised), on the grid."""
    out, acts = _hooked(module, lambda: tf(tf.image[None]))
    target = sum(out.logits[0, p, tf.answer_ids[p]] for p in positions)
    (grad,) = torch.autograd.grad(target, acts)
    a = acts[0, tf.image_positions].detach().double()
    weights = torch.relu(grad[0, tf.image_positions].double()).mean(0)
    scores = a @ weights
    cam = torch.relu(scores)
    cam = cam / cam.max() if cam.max() > 0 else (scores - scores.min()) / (scores.max() - scores.min())
    return grid_to_image(cam.reshape(tf.image_grid).float(), tf.height, tf.width)


ONE_CLEAN_SAMPLE = {"samples": 1, "noise": 0.0, "noisy_uint8": True, "relu_gradients": True, "weighting": "pooled"}


def test_llava_cam_hooks_the_configured_decoder_layer(shipped_model, two_objects):
    """The map is Grad-CAM of the configured layer's submodule (checked by hand for one clean sample) and changes
    with the layer; the layers are numbered as the checkpoint numbers them."""
    from eagle_pipelines.core.baselines import llava_cam

    image, _objects, answer, positions = two_objects[0]
    tf = shipped_model.teacher_forced(image, answer.prompt, answer.token_ids)
    layers = shipped_model.model.model.language_model.layers
    assert len(tf.decoder_layers) == len(layers) == 2 and all(a is b for a, b in zip(tf.decoder_layers, layers))
    tokens = positions[0]
    maps = {}
    for layer, submodule in ((0, "post_attention_layernorm"), (1, "input_layernorm")):
        maps[layer] = llava_cam(tf, tokens, layer=layer, submodule=submodule, **ONE_CLEAN_SAMPLE)
        expected = _grad_cam_by_hand(tf, getattr(layers[layer], submodule), tokens)
        np.testing.assert_allclose(maps[layer], expected, atol=1e-5)
        assert np.ptp(maps[layer]) > 0.1
    assert np.abs(maps[0] - maps[1]).max() > 0.1
    # the output of decoder layer 0 is hidden state 1 (index 0: the embeddings), here the same as hidden_states[-2]
    hooked = llava_cam(tf, tokens, layer=0, submodule="", **ONE_CLEAN_SAMPLE)
    np.testing.assert_allclose(hooked, llava_cam(tf, tokens, layer=None, hidden_state=1, **ONE_CLEAN_SAMPLE),
                               atol=1e-6)
    assert np.abs(hooked - maps[0]).max() > 0.1
    with pytest.raises(ValueError, match=r"llava_cam\.layer 32 is outside the model's 2 decoder layers"):
        llava_cam(tf, tokens, layer=32)
    with pytest.raises(ValueError, match=r"no submodule 'post_attn_norm'"):
        llava_cam(tf, tokens, layer=0, submodule="post_attn_norm")


@pytest.mark.parametrize("family", ["llava", "internvl"])
def test_llava_cam_hooks_a_decoder_submodule_of_each_family(family):
    """LLaVA-1.5 and InternVL (tiny random-weight configs of the real classes): ``decoder_layers`` are the
    language model's layers, a hook on one of their submodules gives the hand-computed Grad-CAM, and the image of
    ``pixel_mean`` has all-zero pixel values (IGOS++'s ``mean`` baseline)."""
    from eagle_pipelines.core.baselines import llava_cam
    from eagle_pipelines.core.baselines.igos_pp import baseline_image
    from eagle_pipelines.models.internvl import InternVLAdapter
    from eagle_pipelines.models.llava import LlavaAdapter
    from tests.models.test_adapters import BUILDERS, PROMPT

    model, processor = BUILDERS[family]()
    adapter = {"llava": LlavaAdapter, "internvl": InternVLAdapter}[family](model, processor)
    rng = np.random.default_rng(0)
    image = adapter.model_image((rng.random((40, 30, 3)) * 255).astype(np.uint8))
    answer = adapter.generate(image, PROMPT, max_new_tokens=4)
    tf = adapter.teacher_forced(image, PROMPT, answer.token_ids)
    assert tf.decoder_layers[0] is model.model.language_model.layers[0]
    tokens = list(range(len(answer.token_ids)))
    # the tiny models have one layer: its input norm (before the attention) reaches the answer from the image tokens
    saliency = llava_cam(tf, tokens, layer=0, submodule="input_layernorm", **ONE_CLEAN_SAMPLE)
    expected = _grad_cam_by_hand(tf, model.model.language_model.layers[0].input_layernorm, tokens)
    np.testing.assert_allclose(saliency, expected, atol=1e-5)
    ip = processor.image_processor
    np.testing.assert_allclose(tf.pixel_mean.cpu().numpy(), np.array(ip.image_mean) * 255, rtol=1e-6)
    mean_image = baseline_image(tf, "mean")
    assert mean_image.shape == tf.image.shape
    assert tf.pixel_values(mean_image[None]).abs().max() < 1e-5


def test_llava_cam_noisy_copies_are_uint8_valued(shipped_model, two_objects):
    """With ``noisy_uint8`` every image the pass sees is a whole-valued 0..255 image: the noisy copy clipped and
    truncated exactly as ``np.clip(x, 0, 255).astype(np.uint8)``; without it the copies are raw floats."""
    from eagle_pipelines.core.baselines import llava_cam
    from eagle_pipelines.core.baselines.llava_cam import noisy_copies

    image, _objects, answer, positions = two_objects[0]
    tf = shipped_model.teacher_forced(image, answer.prompt, answer.token_ids)

    class Spy:
        """The pass, recording the images it is given."""

        def __init__(self):
            self.seen = []

        def __getattr__(self, name):
            return getattr(tf, name)

        def __call__(self, images, **kwargs):
            self.seen.append(images.detach().clone())
            return tf(images, **kwargs)

    for uint8 in (True, False):
        spy = Spy()
        llava_cam(spy, positions[0], layer=0, samples=3, noise=0.1, noisy_uint8=uint8, batch_size=2)
        seen = torch.cat(spy.seen)
        assert len(seen) == 3 and not torch.equal(seen[0], tf.image)
        if uint8:
            assert torch.equal(seen, seen.round()) and seen.min() >= 0 and seen.max() <= 255
            noise = (seen - tf.image)[(tf.image > 60).expand_as(seen) & (tf.image < 195).expand_as(seen)]
            assert noise.std().item() == pytest.approx(0.1 * 255, rel=0.1)  # plus the truncation's 1/sqrt(12)
        else:
            assert not torch.equal(seen, seen.round())
    raw = noisy_copies(tf.image, 2, 0.3, torch.Generator().manual_seed(5))
    quantised = noisy_copies(tf.image, 2, 0.3, torch.Generator().manual_seed(5), uint8=True)
    assert raw.min() < 0 and raw.max() > 255  # the clipping matters here
    np.testing.assert_array_equal(quantised.numpy(), np.clip(raw.numpy(), 0, 255).astype(np.uint8))


class ControlledScorer:
    """A stand-in pass whose answer-token probabilities are set by the test: ``p_image`` on the intact image,
    ``p_base`` on any other image (vocabulary of two; every answer token is id 0)."""

    def __init__(self, p_image, p_base):
        self.p_image, self.p_base = torch.tensor(p_image).double(), torch.tensor(p_base).double()
        self.image = torch.full((4, 4, 3), 120.0)
        self.answer_ids = torch.zeros(len(p_image), dtype=torch.long)

    def __call__(self, images, hidden_states=False):
        from eagle_pipelines.models.base import TeacherForcedOutput

        rows = [self.p_image if torch.equal(x, self.image) else self.p_base for x in images]
        return TeacherForcedOutput(logits=torch.stack([torch.log(torch.stack([p, 1 - p], -1)) for p in rows]))


def test_keywords_are_exactly_the_tokens_whose_log_probability_falls_by_more_than_the_threshold():
    from eagle_pipelines.core.baselines.igos_pp import keyword_positions, select_keywords

    ratios = np.array([2.0, 0.5, 1.001, 0.999, -1.0, 3.0])
    p_image = np.array([0.9, 0.5, 0.8, 0.7, 0.3, 0.99])
    p_base = p_image / np.exp(ratios)
    scorer = ControlledScorer(p_image, p_base)
    base = torch.zeros(4, 4, 3)
    assert keyword_positions(scorer, range(6), base, 1.0) == [0, 2, 5]
    assert keyword_positions(scorer, [1, 2, 3, 4], base, 1.0) == [2]  # positions keep their answer indices
    assert keyword_positions(scorer, range(6), base, 2.5) == [5]
    # none above the threshold: the one token whose probability falls most (not the largest log-ratio)
    p_image, p_base = np.array([0.5, 0.9, 0.3]), np.array([0.3, 0.6, 0.25])
    assert keyword_positions(ControlledScorer(p_image, p_base), range(3), base, 1.0) == [1]
    assert select_keywords(np.log(p_image), np.log(p_base), 1.0) == [1]
    assert np.argmax(np.log(p_image) - np.log(p_base)) == 0


SMALL_IGOS = {"size": 8, "iterations": 1, "ig_steps": 1, "seed": 3}


def test_igos_explains_only_the_keywords_at_sentence_level(shipped_model, two_objects):
    """With a keyword threshold, IGOS++ over the whole answer equals IGOS++ over exactly its keywords (same noise);
    a word-level target (not the whole answer) is explained as given."""
    from eagle_pipelines.core.baselines import igos_pp
    from eagle_pipelines.core.baselines.igos_pp import baseline_image, keyword_positions

    image, _objects, answer, positions = two_objects[0]
    tf = shipped_model.teacher_forced(image, answer.prompt, answer.token_ids)
    everything = list(range(len(answer.token_ids)))
    base = baseline_image(tf, "blur", "by_width")
    with torch.no_grad():
        logp = torch.log_softmax(tf(torch.stack([tf.image, base])).logits.double(), -1)
    drop = (logp[0] - logp[1])[torch.arange(len(everything)), tf.answer_ids].numpy()
    ordered = np.sort(drop)
    gap = len(ordered) // 2  # a threshold halfway between two tokens' drops: about half of them are keywords
    threshold = float(ordered[gap - 1] + ordered[gap]) / 2
    keywords = [t for t in everything if drop[t] > threshold]
    assert 0 < len(keywords) < len(everything)
    assert keyword_positions(tf, everything, base, threshold) == keywords
    settings = {**SMALL_IGOS, "blur_kernel": "by_width"}
    selected = igos_pp(tf, everything, keyword_threshold=threshold, **settings)
    np.testing.assert_array_equal(selected, igos_pp(tf, keywords, **settings))
    assert np.abs(selected - igos_pp(tf, everything, **settings)).max() > 0
    word = positions[0]
    np.testing.assert_array_equal(igos_pp(tf, word, keyword_threshold=1e9, **settings), igos_pp(tf, word, **settings))


def test_the_reference_blur_kernel_follows_the_image_width():
    from eagle_pipelines.core.baselines.common import blur_kernel_size
    from eagle_pipelines.core.baselines.igos_pp import blur_settings

    for width, kernel in ((100, 101), (499, 101), (500, 201), (640, 201), (799, 201), (800, 301), (1999, 301),
                          (2000, 501), (4000, 501)):
        assert blur_settings(480, width, "by_width") == (kernel, kernel - 1.0), width
    assert blur_settings(640, 480, "by_width") == (101, 100.0)  # the width decides, not the longer side
    assert blur_settings(480, 640, "scaled") == (blur_kernel_size(480, 640), blur_kernel_size(480, 640) - 1.0)
    assert blur_kernel_size(480, 640) == 111  # ours: 51 per 224 px of the shorter side


def test_igos_baselines_are_the_blur_of_the_rule_or_the_mean_colour(shipped_model, two_objects):
    from eagle_pipelines.core.baselines.igos_pp import baseline_image

    image, _objects, answer, _positions = two_objects[0]
    tf = shipped_model.teacher_forced(image, answer.prompt, answer.token_ids)
    assert tf.width < 500
    np.testing.assert_array_equal(baseline_image(tf, "blur", "by_width").numpy(),
                                  gaussian_blur(tf.image, 101, 100.0).numpy())
    mean = baseline_image(tf, "mean")
    np.testing.assert_allclose(mean[0, 0].numpy(), np.array(shipped_model.processor.image_processor.image_mean) * 255,
                               rtol=1e-6)
    assert tf.pixel_values(mean[None]).abs().max() < 1e-5  # what the reference's `pixel_values * 0` shows


def test_igos_regularisation_weights_by_hand():
    """l1 · mean|1 − m| + tv · (TV + bilateral TV) + l2 · Σ(1 − m)² on a 2×2 checkerboard mask over a flat image
    (bilateral weights 1): mean|1 − m| = 0.5, TV = 1 + 1 and bilateral TV = 1 + 1 (squared steps of 1),
    Σ(1 − m)² = 2. The reference's L3 = 10 times its halved norm, 10 · 0.5 · 4 = 20, is our tv = 5."""
    from eagle_pipelines.core.baselines.igos_pp import regularisation

    flat = torch.full((2, 2, 3), 0.4)
    m = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 1, 2, 2)
    assert regularisation(flat, m, 2, 2, l1=1.0, tv=5.0, weight_l2=0.1).item() == pytest.approx(0.5 + 20 + 0.2)
    assert regularisation(flat, m, 2, 2, l1=0.0, tv=10.0, weight_l2=0.0).item() == pytest.approx(40.0)


def test_igos_l2_decay_schedules(shipped_model, two_objects):
    """``exponential``: l2·e^(−γi); ``compounding``: the reference's loop ``L2 = L2·e^(−γi)`` before each use,
    e^0, e^−1, e^−3, e^−6, e^−10 for γ = 1. IGOS++ follows the schedule it is given (they differ from i = 2)."""
    import math

    from eagle_pipelines.core.baselines import igos_pp
    from eagle_pipelines.core.baselines.igos_pp import l2_weight

    reference, running = [], 0.1
    for i in range(5):
        running = running * math.exp(-1.0 * i)
        reference.append(running)
    assert [l2_weight(0.1, 1.0, i, "compounding") for i in range(5)] == pytest.approx(reference, rel=1e-12)
    assert reference == pytest.approx([0.1 * math.exp(-k) for k in (0, 1, 3, 6, 10)])
    assert [l2_weight(0.1, 1.0, i) for i in range(5)] == pytest.approx([0.1 * math.exp(-i) for i in range(5)])
    with pytest.raises(ValueError, match="l2_decay"):
        l2_weight(0.1, 1.0, 1, "linear")

    image, _objects, answer, positions = two_objects[0]
    tf = shipped_model.teacher_forced(image, answer.prompt, answer.token_ids)
    settings = {**SMALL_IGOS, "iterations": 3, "l2": 50.0, "lr": 0.01}  # a large l2 so that its weight shows
    maps = {(decay, gamma): igos_pp(tf, positions[0], l2_decay=decay, gamma=gamma, **settings)
            for decay in ("exponential", "compounding") for gamma in (0.0, 1.0)}
    np.testing.assert_array_equal(maps["exponential", 0.0], maps["compounding", 0.0])
    assert np.abs(maps["exponential", 1.0] - maps["compounding", 1.0]).max() > 1e-6


def test_igos_masks_upsample_with_or_without_aligned_corners():
    from eagle_pipelines.core.baselines.igos_pp import _upscale

    ramp = torch.tensor([[0.0, 1.0]]).view(1, 1, 1, 2)
    np.testing.assert_allclose(_upscale(ramp, 1, 4, align_corners=True)[0, 0, 0].numpy(), [0, 1 / 3, 2 / 3, 1],
                               atol=1e-6)
    np.testing.assert_allclose(_upscale(ramp, 1, 4, align_corners=False)[0, 0, 0].numpy(), [0, 0.25, 0.75, 1],
                               atol=1e-6)


def test_the_paper_settings_run_on_the_embedded_model(shipped_model, two_objects):
    """The paper's LLaVA-CAM and IGOS++ settings for the `toy` preset (fewer samples and iterations) give finite,
    non-constant maps at both levels."""
    from eagle_pipelines.parameters import parse

    params = parse("baselines", _paper_baselines("toy"))
    cam = {**params.settings("llava_cam"), "samples": 3}
    igos = {**params.settings("igos_pp"), "iterations": 2, "ig_steps": 2}
    image, _objects, answer, positions = two_objects[1]
    tf = shipped_model.teacher_forced(image, answer.prompt, answer.token_ids)
    for tokens in (range(len(answer.token_ids)), positions[0]):
        for method, settings in (("llava_cam", cam), ("igos_pp", igos)):
            result = run_baseline(method, tf, tokens, **settings)
            assert np.isfinite(result.map).all() and np.ptp(result.map) > 0, (method, list(tokens))
