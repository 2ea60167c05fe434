"""explain(prompt_units=...) and eagle-explain --prompt-units on the shipped model: the joint order over image
regions and prompt words, the removal rule on the model's real token ids, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eagle_pipelines.api import explain
from eagle_pipelines.core.joint import JointAttribution, JointScorer, neutral_token_id, prompt_units
from eagle_pipelines.core.regions import RegionMap
from eagle_pipelines.explain_cli import main

from tests.conftest import SHIPPED_MODEL

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PROMPT = "Is there a blue square?"


@pytest.fixture(scope="module")
def square():
    image = np.zeros((112, 112, 3), np.uint8)
    image[20:60, 20:60] = (50, 90, 230)
    return image


@pytest.fixture(scope="module")
def halves(shipped_model, square):
    h, w = shipped_model.model_image(square).shape[:2]
    labels = np.zeros((h, w), np.int32)
    labels[:, w // 2:] = 1
    return RegionMap(labels=labels, params={"method": "halves"})


def test_the_model_scores_a_removed_word_as_its_pad_token_in_place(shipped_model, square, halves):
    seen = shipped_model.model_image(square)
    answer = shipped_model.generate(seen, PROMPT, max_new_tokens=4)
    scorer = shipped_model.scorer(seen, PROMPT, answer.token_ids, [0])
    tok = shipped_model.processor.tokenizer
    ids = scorer.sequence["input_ids"].tolist()
    units = prompt_units(tok, ids[:scorer.prompt_length], PROMPT, ["square"])
    word = tok("square", add_special_tokens=False)["input_ids"]
    assert [u.token_ids for u in units] == [tuple(word)]
    (at,) = units[0].positions
    assert ids[at] == word[0] and ids[at - 1] == tok("blue", add_special_tokens=False)["input_ids"][0]
    assert tok.convert_ids_to_tokens(ids[at - 5]) == "<|vision_end|>"  # after the image, never the template's
    joint = JointScorer(scorer, halves, units, neutral_token_id(tok))
    removed = joint.input_ids(np.array([False])).tolist()
    assert removed == ids[:at] + [tok.pad_token_id] + ids[at + 1:]
    both = joint(np.array([[True, True, True], [True, True, False]]))
    direct = scorer(np.ones((1,) + halves.labels.shape, bool))
    np.testing.assert_allclose(both[0], direct[0])  # everything kept: the model's own input
    assert not np.allclose(both[1], both[0])  # the word replaced changes the answer's probability
    assert scorer.sequence["input_ids"].tolist() == ids


def test_explain_with_no_prompt_units_is_the_image_only_search(shipped_model, square, halves):
    alone = explain(shipped_model, square, PROMPT, regions=halves, strategy="greedy", max_new_tokens=4)
    joint = explain(shipped_model, square, PROMPT, regions=halves, strategy="greedy", max_new_tokens=4,
                    prompt_units=[])
    assert isinstance(joint, JointAttribution) and joint.n_units == 0
    np.testing.assert_array_equal(joint.order, alone.order)
    np.testing.assert_allclose(joint.insertion, alone.insertion)
    np.testing.assert_allclose(joint.deletion, alone.deletion)
    assert joint.forward_passes == alone.forward_passes


def test_explain_orders_regions_and_prompt_words_together(shipped_model, square, halves):
    a = explain(shipped_model, square, PROMPT, regions=halves, strategy="greedy", max_new_tokens=4,
                prompt_units=["blue", "square"])
    assert sorted(a.order.tolist()) == [0, 1, 2, 3]
    assert [u["text"] for u in a.units] == ["blue", "square"]
    assert a.modality.count("prompt") == 2 and a.modality.count("image") == 2
    assert a.forward_passes == 4 * 5  # greedy n(n+1) over the joint set
    alone = explain(shipped_model, square, PROMPT, regions=halves, strategy="greedy", max_new_tokens=4)
    np.testing.assert_allclose(a.full_score, alone.full_score)  # whole image, whole prompt
    assert a.answer == alone.answer
    assert np.all((a.prompt_share >= 0) & (a.prompt_share <= 1))


def test_a_joint_explanation_searches_with_efficient_unless_a_strategy_is_given(shipped_model, square, halves):
    from eagle_pipelines.engine import expected_forward_passes

    joint = explain(shipped_model, square, PROMPT, regions=halves, max_new_tokens=4, prompt_units=["blue", "square"])
    assert joint.strategy == "efficient"
    assert joint.forward_passes == expected_forward_passes("efficient", 4)[0]
    alone = explain(shipped_model, square, PROMPT, regions=halves, max_new_tokens=4)
    assert alone.strategy == "pooled"


@pytest.mark.parametrize("units, prompt, message", [
    (["cat"], PROMPT, "prompt unit 'cat' is not in the prompt"),
    ("words", "", "non-empty string"),
    ("words", "?", "has no words"),
])
def test_bad_units_fail_in_one_line_before_any_work(shipped_model, square, units, prompt, message):
    with pytest.raises(ValueError, match=message) as info:
        explain(shipped_model, square, prompt, n_regions=4, prompt_units=units)
    assert "\n" not in str(info.value)


def test_eagle_explain_prompt_units_writes_the_joint_record(tmp_path, capsys):
    from PIL import Image

    image = np.zeros((112, 112, 3), np.uint8)
    image[20:60, 20:60] = (50, 90, 230)
    Image.fromarray(image).save(tmp_path / "sq.png")
    out = tmp_path / "out"
    common = [str(tmp_path / "sq.png"), "--model", str(SHIPPED_MODEL), "--prompt", PROMPT, "--regions", "4",
              "--max-new-tokens", "4", "--no-plot", "--out", str(out)]
    assert main(common + ["--prompt-units", "square"]) == 0
    printed = capsys.readouterr().out
    assert "prompt units by rank: 'square'" in printed
    record = json.loads((out / "sq.png_joint.json").read_text())
    assert [u["text"] for u in record["units"]] == ["square"]
    assert JointAttribution.load(out / "sq.png_joint.npz").n_units == 1
    assert main(common + ["--prompt-units", "square"]) == 0  # the same inputs: read back, not recomputed
    assert "already explained from the same inputs" in capsys.readouterr().out
    assert main(common + ["--prompt-units", "cat"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["eagle-explain: --prompt-units: prompt unit 'cat' is not in the prompt 'Is there a blue "
                   "square?'; give words or phrases of the prompt, or prompt_units='words'"]
