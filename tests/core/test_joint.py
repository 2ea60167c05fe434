"""core/joint.py without a model: prompt units, the removal rule, the joint search over every strategy, the curves
and the modality share computed by hand."""

from __future__ import annotations

import re

import numpy as np
import pytest

from eagle_pipelines.core.joint import (IMAGE, PROMPT, JointAttribution, JointScorer, check_prompt_units,
                                        joint_auc, joint_record, joint_search, modality_share, neutral_token_id,
                                        prompt_units, removed_ids)
from eagle_pipelines.core.regions import RegionMap
from eagle_pipelines.core.scoring import RegionScorer
from eagle_pipelines.core.search import CountingScorer
from eagle_pipelines.core.strategies import STRATEGIES, SearchParams

PAD = 0


class WordTokenizer:
    """A word-level tokenizer (words and punctuation, ids from a fixed vocabulary) with a fast tokenizer's
    offsets; `merge` joins 'red-blue' into one token, as a BPE vocabulary may span two words."""

    pad_token_id = PAD

    def __init__(self, merge: bool = False):
        self.vocab: dict[str, int] = {}
        self.merge = merge

    def __call__(self, text, add_special_tokens=False, return_offsets_mapping=False):
        pattern = r"\w+-\w+|\w+|[^\w\s]" if self.merge else r"\w+|[^\w\s]"
        found = list(re.finditer(pattern, text))
        ids = [self.vocab.setdefault(m.group(), 100 + len(self.vocab)) for m in found]
        return {"input_ids": ids, "offset_mapping": [m.span() for m in found]}


def templated(tok, prompt):
    """A chat template around `prompt`: 3 template tokens, the prompt's, 2 more (as models/adapter.py lays them)."""
    return [1, 2, 3] + tok(prompt)["input_ids"] + [4, 5]


def test_prompt_units_are_the_words_of_the_prompt_inside_the_template():
    tok = WordTokenizer()
    prompt = "Is there a blue square?"
    ids = templated(tok, prompt)
    units = prompt_units(tok, ids, prompt)
    assert [u.text for u in units] == ["Is", "there", "a", "blue", "square"]  # no '?', no template token
    assert [u.positions for u in units] == [(3,), (4,), (5,), (6,), (7,)]
    assert all(ids[u.positions[0]] == u.token_ids[0] for u in units)
    chosen = prompt_units(tok, ids, prompt, ["blue square", "is"])
    assert [(u.text, u.positions) for u in chosen] == [("Is", (3,)), ("blue square", (6, 7))]


def test_a_token_spanning_two_words_makes_them_one_unit():
    tok = WordTokenizer(merge=True)
    prompt = "a red-blue cat"
    units = prompt_units(tok, templated(tok, prompt), prompt)
    assert [(u.text, u.positions) for u in units] == [("a", (3,)), ("red-blue", (4,)), ("cat", (5,))]


@pytest.mark.parametrize("units, message", [
    (["cat"], "prompt unit 'cat' is not in the prompt"),
    (["squ"], "prompt unit 'squ' is not in the prompt"),  # whole words only
    ("tokens", "prompt_units must be one of ['words']"),
    ([""], "empty unit"),
    (["blue", "blue square"], "overlaps"),
])
def test_bad_units_are_one_line_errors_naming_them(units, message):
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        check_prompt_units("Is there a blue square?", units)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("prompt", ["", "   ", None])
def test_an_empty_prompt_is_a_one_line_error(prompt):
    with pytest.raises(ValueError, match="non-empty string") as info:
        check_prompt_units(prompt, "words")
    assert "\n" not in str(info.value)


def test_a_prompt_without_words_has_no_units_to_attribute():
    with pytest.raises(ValueError, match="has no words"):
        check_prompt_units("?!", "words")
    check_prompt_units("Is there a blue square?", [])  # an empty list: no units (the image-only search)


def test_removal_replaces_each_token_of_a_removed_unit_by_the_pad_token_keeping_positions():
    tok = WordTokenizer(merge=True)
    prompt = "a red-blue big cat"
    ids = np.array(templated(tok, prompt) + [77, 78])  # + two answer tokens
    units = prompt_units(tok, ids, prompt, ["red-blue big", "cat"])  # one unit of two tokens
    assert units[0].positions == (4, 5)
    out = removed_ids(ids, units, np.array([False, True]), neutral_token_id(tok))
    expected = ids.copy()
    expected[[4, 5]] = PAD
    np.testing.assert_array_equal(out, expected)
    assert len(out) == len(ids)  # same count: no position moves
    np.testing.assert_array_equal(removed_ids(ids, units, np.array([True, True]), PAD), ids)


class NoPad:
    pad_token_id = None
    unk_token_id = None
    eos_token_id = 9


def test_the_neutral_token_falls_back_to_end_of_sequence():
    assert neutral_token_id(WordTokenizer()) == PAD
    assert neutral_token_id(NoPad()) == 9


# -- a pixel scorer that reads its input ids ------------------------------------------------------------------------
LEFT, RIGHT, WORD = 0.5, 0.1, 0.2  # what the left half, the right half and the word 'blue' add to p


class AdditiveScorer:
    """p = 0.1 + 0.5·[left half kept] + 0.1·[right half kept] + 0.2·['blue' not replaced]; records the ids of
    each call."""

    def __init__(self, ids, word_position):
        self.sequence = {"input_ids": np.array(ids), "attention_mask": np.ones(len(ids), int)}
        self.prompt_length = len(ids) - 1
        self.word_position = word_position
        self.calls: list[tuple[np.ndarray, int]] = []

    def __call__(self, masks):
        ids = self.sequence["input_ids"]
        self.calls.append((ids.copy(), len(masks)))
        word = float(ids[self.word_position] != PAD)
        p = 0.1 + LEFT * masks[:, 0, 0] + RIGHT * masks[:, 0, -1] + WORD * word
        return p[:, None].astype(float)


@pytest.fixture
def halves():
    labels = np.zeros((2, 4), np.int32)
    labels[:, 2:] = 1
    return RegionMap(labels=labels, params={})


def joint_of(halves, units="blue"):
    tok = WordTokenizer()
    prompt = "a blue cat"
    ids = templated(tok, prompt) + [50]
    scorer = AdditiveScorer(ids, word_position=4)
    found = prompt_units(tok, ids[:scorer.prompt_length], prompt, [units] if units else [])
    return JointScorer(scorer, halves, found, neutral_token_id(tok)), scorer


def test_the_joint_scorer_scores_each_row_with_its_units_removed(halves):
    joint, scorer = joint_of(halves)
    keep = np.array([[1, 1, 1], [1, 0, 0], [0, 1, 1], [0, 0, 0]], bool)
    np.testing.assert_allclose(joint(keep)[:, 0], [0.9, 0.6, 0.4, 0.1])
    assert sorted(n for _ids, n in scorer.calls) == [2, 2]  # one call per unit pattern
    removed = [ids for ids, _n in scorer.calls if ids[4] == PAD]
    assert len(removed) == 1
    base = np.array(scorer.sequence["input_ids"])
    np.testing.assert_array_equal(np.delete(removed[0], 4), np.delete(base, 4))  # only the word changed
    assert scorer.sequence["input_ids"] is not removed[0]  # the scorer's own ids are back


def test_curves_order_auc_and_modality_share_by_hand(halves):
    joint, _ = joint_of(halves)
    params = SearchParams(strategy="greedy")
    trace, passes = joint_search(joint, params)
    # objective(S) = 1 + 2·Σ_S w − Σ w: greedy takes the heaviest first (left 0.5, 'blue' 0.2, right 0.1)
    np.testing.assert_array_equal(trace.order, [0, 2, 1])
    np.testing.assert_allclose(trace.insertion[:, 0], [0.6, 0.8, 0.9])
    np.testing.assert_allclose(trace.deletion[:, 0], [0.4, 0.2, 0.1])
    assert passes == 3 * 4  # greedy: n(n+1)
    a = joint_record(trace, joint, passes, target_words=["Yes"])
    assert a.modality == [IMAGE, PROMPT, IMAGE]
    np.testing.assert_allclose(a.area, [0.5, 0.5, 1.0])  # the word adds no area
    # trapezoids over steps 0..3 at x = k/3: insertion [0.1, 0.6, 0.8, 0.9], deletion [0.9, 0.4, 0.2, 0.1]
    assert a.aucs()["insertion_auc"] == pytest.approx((0.35 + 0.7 + 0.85) / 3)
    assert a.aucs()["deletion_auc"] == pytest.approx((0.65 + 0.3 + 0.15) / 3)
    # gains 0.5 (image), 0.2 (prompt), 0.1 (image): the prompt brings 0.2 of 0.8
    np.testing.assert_allclose(a.prompt_share, [0.25])
    # N_t over the area: x [0, .5, .5, 1], y [.1, .6, .8, .9] -> 0.175 + 0 + 0.425 − min 0.1
    np.testing.assert_allclose(a.influence, [0.5])
    assert a.unit_ranks() == {"blue": 2}
    assert a.step_names() == ["region 0", "'blue'", "region 1"]


def test_modality_share_counts_only_rising_steps():
    insertion = np.array([[0.5], [0.3], [0.9]])  # image +0.4, prompt −0.2, image +0.6
    share = modality_share(insertion, np.array([0.1]), [IMAGE, PROMPT, IMAGE])
    np.testing.assert_allclose(share[PROMPT], [0.0])
    np.testing.assert_allclose(share[IMAGE], [1.0])
    flat = modality_share(np.array([[0.1], [0.1]]), np.array([0.1]), [IMAGE, PROMPT])
    assert np.isnan(flat[PROMPT][0])


def test_joint_auc_is_the_trapezoid_over_the_steps():
    np.testing.assert_allclose(joint_auc(np.array([[1.0], [1.0]]), np.array([0.0])), [0.75])


class Interacting:
    """A non-additive pixel scorer (two tokens): regions count more together than alone."""

    def __init__(self, n_pixels):
        rng = np.random.default_rng(3)
        self.w = rng.normal(size=(n_pixels, 2))
        self.sequence = {"input_ids": np.arange(5)}

    def __call__(self, masks):
        x = masks.reshape(len(masks), -1).astype(float)
        z = x @ self.w
        return 1 / (1 + np.exp(-(z + 0.3 * z ** 2 - 1)))


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_the_joint_search_equals_the_image_only_search_when_the_prompt_has_no_units(strategy):
    labels = np.repeat(np.arange(8, dtype=np.int32), 3).reshape(4, 6)
    regions = RegionMap(labels=labels, params={})
    scorer = Interacting(labels.size)
    params = SearchParams(strategy=strategy)
    image = CountingScorer(RegionScorer(scorer, regions), regions.n_regions)
    alone = params.spec.search(image, lambda1=1.0, lambda2=1.0, **params.search_params())
    joint = JointScorer(scorer, regions, [], PAD)
    trace, passes = joint_search(joint, params)
    np.testing.assert_array_equal(trace.order, alone.order)
    np.testing.assert_array_equal(trace.insertion, alone.insertion)
    np.testing.assert_array_equal(trace.deletion, alone.deletion)
    assert passes == image.forward_passes


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_orders_the_joint_set(strategy, halves):
    joint, _ = joint_of(halves)
    trace, passes = joint_search(joint, SearchParams(strategy=strategy))
    assert sorted(trace.order.tolist()) == [0, 1, 2]
    assert trace.order[0] == 0  # the left half: the largest single gain
    assert passes > 0


def test_a_scorer_without_token_ids_is_refused(halves):
    with pytest.raises(ValueError, match="token ids"):
        JointScorer(lambda masks: np.zeros((len(masks), 1)), halves, [], PAD)


def test_the_record_saves_and_loads(halves, tmp_path):
    joint, _ = joint_of(halves)
    trace, passes = joint_search(joint, SearchParams(strategy="greedy"))
    a = joint_record(trace, joint, passes, target_words=["Yes"], prompt="a blue cat")
    a.save(tmp_path / "j.npz")
    b = JointAttribution.load(tmp_path / "j.npz")
    np.testing.assert_array_equal(b.order, a.order)
    np.testing.assert_allclose(b.prompt_share, a.prompt_share)
    assert b.modality == a.modality and b.units[0]["text"] == "blue" and b.neutral_token_id == PAD


def test_the_figure_shows_the_prompt_words_with_their_joint_ranks(halves):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    joint, _ = joint_of(halves)
    trace, passes = joint_search(joint, SearchParams(strategy="greedy"))
    a = joint_record(trace, joint, passes, target_words=["Yes"], prompt="a blue cat")
    fig = a.plot(np.zeros((2, 4, 3), np.uint8))
    try:
        texts = [t.get_text() for t in fig.axes[0].texts]
        assert texts == ["blue"]
        assert "blue (2)" in fig.axes[0].get_title()
    finally:
        plt.close(fig)


# --- the pipelines' views of a joint record -------------------------------------------------------------------------
def two_by_two_record() -> JointAttribution:
    """Regions 0, 1 (left, right halves) and the words 'red', 'circle' (candidates 2, 3), ordered red, region 1,
    circle, region 0; one token: insertion 0.1 (empty) -> 0.5 -> 0.7 -> 0.7 -> 0.9."""
    labels = np.zeros((4, 4), np.int32)
    labels[:, 2:] = 1
    ins = np.array([[0.5], [0.7], [0.7], [0.9]])
    dele = np.array([[0.6], [0.3], [0.3], [0.1]])
    units = [{"text": "red", "start": 11, "end": 14, "positions": [7], "token_ids": [40]},
             {"text": "circle", "start": 15, "end": 21, "positions": [8], "token_ids": [41]}]
    return JointAttribution(order=np.array([2, 1, 3, 0]), insertion=ins, deletion=dele,
                            objective=ins[:, 0] + 1 - dele[:, 0], area=np.array([0, 0.5, 0.5, 1.0]),
                            full_score=np.array([0.9]), empty_score=np.array([0.1]), labels=labels, n_image=2,
                            units=units, target_words=["Yes"], target_positions=[0], target_token_ids=[9],
                            answer="Yes", prompt="Is there a red circle?", meta={"image_id": 3})


def test_the_image_view_keeps_the_regions_in_their_joint_order_and_the_summary():
    from eagle_pipelines.core.attribution import Attribution
    from eagle_pipelines.core.joint import image_view

    record = two_by_two_record()
    view = image_view(record)
    assert isinstance(view, Attribution) and view.order.tolist() == [1, 0]
    np.testing.assert_allclose(view.insertion[:, 0], [0.7, 0.9])  # the image steps (2nd and 4th) of the order
    np.testing.assert_allclose(view.area, [0.5, 1.0])
    joint = view.meta["joint"]
    assert [(u["text"], u["rank"], u["gain"]) for u in joint["units"]] == [("red", 1, [0.4]), ("circle", 3, [0.0])]
    assert joint["prompt_share"] == [pytest.approx(0.4 / 0.8)] and joint["steps"] == 4
    assert image_view(view) is view  # an image-only record is its own view


def test_the_joint_evaluation_row_is_the_records_own_aucs_and_prompt_share():
    from eagle_pipelines.core.joint import joint_row

    record = two_by_two_record()
    row = joint_row(record)
    # insertion over x = 0, 1/4 .. 1: [0.1, 0.5, 0.7, 0.7, 0.9] -> trapezoids / 4
    assert row["insertion_auc"] == pytest.approx((0.3 + 0.6 + 0.7 + 0.8) / 4)
    assert row["insertion_auc"] == pytest.approx(record.aucs()["insertion_auc"])
    assert row["deletion_auc"] == pytest.approx(record.aucs()["deletion_auc"])
    assert row["protocol"] == "joint" and row["prompt_share"] == pytest.approx(0.5) and row["prompt_units"] == 2


def test_joint_and_image_only_items_load_back_as_what_they_are(tmp_path):
    from eagle_pipelines.core.attribution import Attribution
    from eagle_pipelines.core.joint import image_view, units_fingerprint
    from eagle_pipelines.io.items import ItemStore

    store = ItemStore(tmp_path / "store", "attribution")
    record = two_by_two_record()
    store.put("joint", "f1", record)
    store.put("image", "f2", image_view(record))
    back = store.get("joint", "f1")
    assert isinstance(back, JointAttribution) and back.modality == record.modality
    np.testing.assert_allclose(back.prompt_share, record.prompt_share)
    assert type(store.get("image", "f2")) is Attribution
    assert units_fingerprint("none") == {} and units_fingerprint("words")["prompt_units"] == "words"
    with pytest.raises(ValueError, match="prompt_units must be one of"):
        units_fingerprint("letters")


# -- a question's causes act together: what a singles-ranked strategy misses ---------------------------------------
class Conjunction:
    """Five one-column regions (region 4 the object) and the prompt 'is there a red cat' (units 5..9: is, there,
    a, red, cat). With the object kept, p = 0.01 / 0.7 / 0.9 for 0 / 1 / 2 of 'red' and 'cat' kept; without it,
    0.4 (the prior: no question, no evidence) when neither word is kept, else 0.01 (the question asked of an image
    without its object: No). As the embedded model's 'Yes' answers on eagle_mmvp (docs/method.md, 'Joint
    attribution'): the object and the question's words each alone score below every irrelevant candidate."""

    def __init__(self, ids, word_positions):
        self.sequence = {"input_ids": np.array(ids)}
        self.prompt_length = len(ids) - 1
        self.word_positions = list(word_positions)

    def __call__(self, masks):
        words = int(sum(self.sequence["input_ids"][q] != PAD for q in self.word_positions))
        obj = masks[:, 0, 4] > 0
        return np.where(obj, [0.01, 0.7, 0.9][words], 0.4 if words == 0 else 0.01)[:, None].astype(float)


def conjunction():
    tok = WordTokenizer()
    prompt = "is there a red cat"
    ids = templated(tok, prompt) + [50]
    scorer = Conjunction(ids, word_positions=[6, 7])  # 3 template tokens, then is, there, a, red, cat
    regions = RegionMap(labels=np.arange(5, dtype=np.int32)[None].repeat(2, axis=0), params={})
    units = prompt_units(tok, ids[:scorer.prompt_length], prompt)
    assert [u.text for u in units] == ["is", "there", "a", "red", "cat"]
    return JointScorer(scorer, regions, units, neutral_token_id(tok))


def test_a_singles_ranked_strategy_places_causes_that_act_together_last_and_says_so(caplog):
    joint = conjunction()
    # singles (keep alone + 1 − remove alone): the object 0.01 + 1 − 0.01 = 1.0; an irrelevant candidate
    # 0.4 + 1 − 0.9 = 0.5; 'red' or 'cat' 0.01 + 1 − 0.7 = 0.31: the question's words rank last
    with caplog.at_level("WARNING", logger="eagle_pipelines.core.joint"):
        pooled, _ = joint_search(joint, SearchParams(strategy="pooled", pooled={"pool_size": 3}))
    np.testing.assert_array_equal(pooled.order, [4, 0, 1, 2, 3, 5, 6, 7, 8, 9])
    assert "pooled ranks the joint set's 10 candidates (5 regions + 5 prompt units)" in caplog.text
    assert "strategy='greedy' (110 forward passes)" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="eagle_pipelines.core.joint"):
        greedy, passes = joint_search(joint, SearchParams(strategy="greedy"))
        exact_pool, _ = joint_search(joint, SearchParams(strategy="pooled", pooled={"pool_size": 10}))
    assert caplog.text == ""  # greedy, and pooled with the whole set as its pool, re-score every candidate
    np.testing.assert_array_equal(exact_pool.order, greedy.order)
    # greedy: the object (1.0), then 'red' (keep 0.7, remove 0.01: 1.69, the lower id of the tie with 'cat')
    np.testing.assert_array_equal(greedy.order[:2], [4, 8])
    empty = np.array([0.4])
    # insertion from the empty input's 0.4: pooled 0.01 for 8 steps, then 0.7, 0.9; greedy 0.01, then 0.7 ... 0.9
    assert joint_auc(pooled.insertion, empty)[0] == pytest.approx((0.205 + 7 * 0.01 + 0.355 + 0.8) / 10)
    assert joint_auc(greedy.insertion, empty)[0] == pytest.approx((0.205 + 0.355 + 7 * 0.7 + 0.8) / 10)
    assert passes == 110
