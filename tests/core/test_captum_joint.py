"""core/baselines/captum_joint.py: Captum's LLMAttribution(FeatureAblation) over regions ∪ prompt units feeds the
embedded model exactly the masked inputs of EAGLE-joint's JointScorer (black regions, pad-token prompt units)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("captum", reason="captum is not installed (the pipelines extra: pip install -e '.[pipelines]')")

from eagle_pipelines.core.baselines.captum_joint import (  # noqa: E402
    joint_feature_ablation,
    prompt_template,
    text_image_input,
)
from eagle_pipelines.core.joint import JointScorer, PromptUnit, neutral_token_id, prompt_units  # noqa: E402
from eagle_pipelines.core.regions import RegionMap  # noqa: E402

PROMPT = "Is there a blue square in the image?"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def case(shipped_model):
    """(model image, 4 quadrant regions, answer, joint scorer, teacher-forced pass, units, neutral id)."""
    rng = np.random.default_rng(0)
    image = shipped_model.model_image(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))
    h, w = image.shape[:2]
    labels = (np.arange(h)[:, None] >= h // 2) * 2 + (np.arange(w)[None] >= w // 2)
    regions = RegionMap(labels.astype(np.int32), {})
    answer = shipped_model.generate(image, PROMPT, max_new_tokens=4)
    positions = list(range(len(answer.token_ids)))
    tok = shipped_model.processor.tokenizer
    scorer = shipped_model.scorer(image, PROMPT, answer.token_ids, positions)
    units = prompt_units(tok, scorer.sequence["input_ids"].tolist()[:scorer.prompt_length], PROMPT)
    neutral = neutral_token_id(tok)
    joint = JointScorer(scorer, regions, units, neutral)
    tf = shipped_model.teacher_forced(image, PROMPT, answer.token_ids)
    return image, regions, positions, joint, tf, units, neutral


def test_captum_sees_the_probabilities_of_the_joint_scorer_for_each_removed_region_and_unit(case):
    _image, regions, positions, joint, tf, units, neutral = case
    assert joint.n == 4 + 8  # 4 quadrants, the 8 words of the prompt ('?' is no unit)
    result = joint_feature_ablation(tf, positions, regions.labels, units, neutral, attr_target="prob")
    # FeatureAblation's attribution of a candidate is p(full) - p(that candidate alone removed)
    keep = np.ones((joint.n + 1, joint.n), dtype=bool)
    keep[np.arange(1, joint.n + 1), np.arange(joint.n)] = False
    probs = joint(keep)  # (1 + N, T): the full input, then each candidate removed alone
    np.testing.assert_allclose(result.token_attr.T, probs[0] - probs[1:], atol=1e-6)
    np.testing.assert_allclose(result.attributions, (probs[0] - probs[1:]).sum(axis=1), atol=1e-6)
    assert result.forward_passes == joint.n + 1
    assert result.n_image == 4
    assert np.array_equal(result.order(), np.argsort(-result.attributions, kind="stable"))
    assert np.ptp(result.attributions) > 1e-4  # the candidates are not all alike: the comparison means something


def test_the_joint_input_removes_a_unit_by_the_pad_token_or_cuts_it_out(case):
    _image, regions, _positions, joint, tf, units, neutral = case
    square = [u.text for u in units].index("square")
    drop = torch.ones(1, joint.n)
    drop[0, 4 + square] = 0
    drop[0, 1] = 0  # the top-right quadrant black as well
    padded = text_image_input(tf, regions.labels, units, neutral).to_model_input(drop)
    want = joint.input_ids(np.arange(len(units)) != square)[:tf.answer_start]
    assert padded["input_ids"][0].tolist() == want.tolist()
    black = tf.adapter.encode([tf.image.numpy().astype(np.uint8) * (regions.labels != 1)[..., None]], PROMPT)
    assert torch.equal(padded["pixel_values"], black["pixel_values"])
    cut = text_image_input(tf, regions.labels, units, neutral, "empty").to_model_input(drop)
    kept = [i for k, i in enumerate(want.tolist()) if k not in units[square].positions]
    assert cut["input_ids"][0].tolist() == kept  # Captum's own rule: the word is gone, later tokens shift


def test_the_template_has_one_field_per_unit_and_keeps_braces():
    units = [PromptUnit("Is", 0, 2, (0,), (1,)), PromptUnit("red", 7, 10, (3,), (2,))]
    template, values = prompt_template("Is {x} red?", units)
    assert (template, values) == ("{} {{x}} {}?", ["Is", "red"])
    assert template.format(*values) == "Is {x} red?"


def test_bad_settings_are_one_line_errors(case):
    _image, regions, positions, _joint, tf, units, neutral = case
    with pytest.raises(ValueError, match="text_baseline must be one of"):
        text_image_input(tf, regions.labels, units, neutral, "blank")
    with pytest.raises(ValueError, match=r"superpixel map is \(2, 2\)"):
        text_image_input(tf, np.zeros((2, 2), int), units, neutral)
    with pytest.raises(ValueError, match="no prompt units"):
        joint_feature_ablation(tf, positions, regions.labels, [], neutral)
