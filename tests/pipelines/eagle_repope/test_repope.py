"""Hallucination diagnosis (eagle_repope): correction by removal, AMCR / CSR / cause hit on hand-made cases and
through the tables node, the POPE/RePOPE reader, the embedded model's biased hallucinations, and tiny KedroSession
runs (outputs, resumption, and --only-missing-outputs after a new CSR threshold)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from eagle_pipelines.core import hallucination as hal

from tests.conftest import MODEL_DIR, ROOT, SHIPPED_MODEL


# --- correction by removal on hand-made cases ----------------------------------------------------------------------
def _answer_no_when_removed(region: int, calls: list | None = None):
    """A fake model: answers 'No' once `region` is removed, 'Yes' otherwise."""

    def answer(keep: np.ndarray) -> list[str]:
        if calls is not None:
            calls.append(len(keep))
        return ["No" if not row[region] else "Yes" for row in keep]

    return answer


def test_the_lowest_ranked_region_alone_corrects_the_answer():
    order, areas = np.array([2, 0, 1, 3]), np.array([0.1, 0.2, 0.3, 0.4])
    fix = hal.correct_by_removal(_answer_no_when_removed(3), order, areas, "no", batch_size=1)
    assert fix.corrected_k == 1 and fix.correcting_region == 3 and fix.removed_regions == [3]
    assert fix.amcr == pytest.approx(0.4)
    assert fix.ks == [1] and fix.answers == ["No"]  # stops at the first correction


def test_amcr_is_the_area_removed_at_the_first_correction():
    order, areas = np.array([2, 0, 1, 3]), np.array([0.1, 0.2, 0.3, 0.4])
    # region 0 is third from the end: k = 3 removes regions 3, 1, 0 = 0.4 + 0.2 + 0.1 of the image
    fix = hal.correct_by_removal(_answer_no_when_removed(0), order, areas, "no", batch_size=2, stop_at_first=False)
    assert fix.corrected_k == 3 and fix.correcting_region == 0 and sorted(fix.removed_regions) == [0, 1, 3]
    assert fix.amcr == pytest.approx(0.7)
    assert fix.ks == [1, 2, 3, 4] and fix.answers == ["Yes", "Yes", "No", "No"]
    assert fix.removed_area == pytest.approx([0.4, 0.6, 0.7, 1.0])


def test_regeneration_stops_after_the_batch_with_the_first_correction():
    calls: list[int] = []
    order, areas = np.arange(10), np.full(10, 0.1)
    fix = hal.correct_by_removal(_answer_no_when_removed(8, calls), order, areas, "no", batch_size=3)
    assert fix.corrected_k == 2 and calls == [3]  # k = 1, 2, 3 in one batch, then stop


def test_a_never_corrected_answer_has_amcr_one():
    fix = hal.correct_by_removal(lambda keep: ["Yes"] * len(keep), np.arange(4), np.full(4, 0.25), "no")
    assert not fix.corrected and fix.amcr == 1.0 and fix.correcting_region is None and fix.ks == [1, 2, 3, 4]


def test_a_false_no_is_corrected_to_yes():
    fix = hal.correct_by_removal(lambda keep: ["no" if keep[1] else "yes." for keep in keep], np.array([0, 1]),
                                 np.array([0.5, 0.5]), "yes")
    assert fix.corrected_k == 1 and fix.amcr == 0.5


def test_csr_counts_never_corrected_samples_as_failures():
    amcrs, corrected = [0.05, 0.1, 0.4, 1.0], [True, True, True, False]
    assert hal.csr(amcrs, corrected, 0.1) == pytest.approx(0.5)
    assert hal.csr([0.05, 1.0], [True, False], 0.1) == pytest.approx(0.5)  # the reference would say 1.0
    assert hal.amcr_mean(amcrs) == pytest.approx((0.05 + 0.1 + 0.4 + 1.0) / 4)
    assert np.isnan(hal.csr([], [], 0.1))


def test_cause_hit_needs_the_correcting_region_to_overlap_the_cause():
    labels = np.repeat(np.arange(4), 4).reshape(4, 4)  # row r is region r
    cause = np.zeros((4, 4), bool)
    cause[2, :2] = True  # half of region 2
    hit = hal.Correction([1], [0.25], ["No"], 1, 0.25, 2, [2])
    miss = hal.Correction([1], [0.25], ["No"], 1, 0.25, 1, [1])
    never = hal.Correction([1], [0.25], ["Yes"], None, 1.0, None, [])
    assert hal.cause_hit(labels, hit, cause) is True
    assert hal.cause_hit(labels, hit, cause, min_overlap=0.5) is False  # exactly half is not more than half
    assert hal.cause_hit(labels, miss, cause) is False
    assert hal.cause_hit(labels, never, cause) is False
    assert hal.cause_hit(labels, hit, None) is None
    assert hal.removed_cause_fraction(labels, hit, cause) == 1.0
    assert hal.removed_cause_fraction(labels, miss, cause) == 0.0


def test_a_baseline_map_ranks_regions_by_mean_saliency():
    from eagle_pipelines.core.regions import RegionMap
    from eagle_pipelines.pipelines.eagle_repope.nodes import region_ranking

    labels = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]], dtype=np.int32)
    saliency = np.array([[0.1, 0.1, 0.9, 0.0], [0.1, 0.1, 0.9, 0.0], [0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2]])
    # means: region 0 0.1, region 1 0.45, region 2 0.5, region 3 0.2
    assert region_ranking(saliency, RegionMap(labels, {})).tolist() == [2, 1, 3, 0]


def test_an_object_sharing_the_companions_colour_or_shape_is_a_confounder():
    from types import SimpleNamespace

    from eagle_pipelines.pipelines.eagle_repope.nodes import confounded

    def objs(*names):
        return [SimpleNamespace(name=n, colour=n.split()[0], shape=n.split()[1]) for n in names]

    assert not confounded(objs("red circle", "green triangle", "yellow circle"), "red circle", "blue square")
    assert confounded(objs("red circle", "blue circle"), "red circle", "blue square")
    assert confounded(objs("red circle", "red square"), "red circle", "blue square")


def test_the_question_facts_survive_the_csv_round_trip(tmp_path):
    """The facts every record carries (and the fingerprints hash) are the same whether the list comes from the node
    that built it or from its CSV file, where an empty cause turns into NaN and an annotation id into a float."""
    import pandas as pd

    from eagle_pipelines.pipelines.eagle_repope.nodes import QUESTION_COLUMNS, question_facts

    rows = [{"question_id": 1, "image_id": 7, "file_name": "a.png", "text": "Is there a x in the image?",
             "prompt": "Is there a x in the image?", "label": "no", "object": "x", "kind": "absent", "cause": "",
             "cause_annotation_id": None},
            {"question_id": 2, "image_id": 8, "file_name": "b.png", "text": "Is there a y in the image?",
             "prompt": "Is there a y in the image?", "label": "no", "object": "y", "kind": "biased", "cause": "z",
             "cause_annotation_id": 5}]
    frame = pd.DataFrame(rows, columns=QUESTION_COLUMNS)
    frame.to_csv(tmp_path / "q.csv", index=False)
    facts = question_facts(frame)
    assert question_facts(pd.read_csv(tmp_path / "q.csv")) == facts
    assert facts[0]["cause"] == "" and facts[0]["cause_annotation_id"] is None
    assert facts[1]["cause_annotation_id"] == 5 and type(facts[1]["question_id"]) is int
    assert json.dumps(facts)  # plain JSON values (no numpy scalars)


# --- the tables from a hand-made correction manifest ------------------------------------------------------------------
def _record(qid: int, method: str, amcr: float, corrected: bool, cause_hit, seconds=None, kind="biased") -> dict:
    known = cause_hit is not None
    record = {"method": method, "question_id": qid, "image_id": 10 + qid, "question": "Is there a y in the image?",
              "prompt": "Is there a y in the image?", "label": "no", "object": "y", "kind": kind,
              "cause": "x" if known else "", "cause_annotation_id": 3 if known else None,
              "ks": [1, 2], "answers": ["Yes", "No" if corrected else "Yes"], "corrected_k": 2 if corrected else None,
              "amcr": amcr, "corrected": corrected, "cause_hit": cause_hit, "cause_removed_fraction": 0.5,
              "insertion_auc": 0.5 + qid / 10, "highest_confidence": 0.9}
    if seconds is not None:
        record["seconds"] = seconds
    return record


def _manifest(tmp_path, records: list[dict]):
    from eagle_pipelines.io.items import ItemStore, Manifest, fingerprint
    from eagle_pipelines.pipelines.eagle_repope.nodes import FACTS

    store = ItemStore(tmp_path / "corrections", "record")
    items = {}
    for r in records:
        key, fp = f"{r['method']}/{r['question_id']}", fingerprint(r)
        store.put(key, fp, r)
        items[key] = {"fp": fp, "method": r["method"], **{k: r[k] for k in FACTS}}
    return Manifest({"store": str(store.path), "kind": "record", "items": items, "skipped": {}})


def test_the_tables_read_exactly_the_manifest_and_compute_amcr_and_csr_by_hand(tmp_path):
    from eagle_pipelines.parameters import EagleRepopeParams
    from eagle_pipelines.pipelines.eagle_repope.nodes import summarise

    records = [_record(2, "eagle", 0.05, True, True, seconds=2.0), _record(10, "eagle", 0.4, True, False, seconds=4.0),
               _record(3, "eagle", 1.0, False, None, seconds=3.0, kind="absent"),
               _record(2, "random", 1.0, False, False), _record(10, "random", 0.1, True, True),
               _record(3, "random", 0.3, True, None, kind="absent")]
    manifest = _manifest(tmp_path, records)
    # a record of another configuration in the same store is never read: only the manifest's items are
    from eagle_pipelines.io.items import ItemStore

    ItemStore(tmp_path / "corrections", "record").put("eagle/99", "0" * 16, _record(99, "eagle", 0.0, True, True))
    summary = {"questions": 20, "wrong": 3, "biased": 10, "biased_yes": 2, "hallucination_rate_biased": 0.2}
    params = EagleRepopeParams(correction={"methods": ["eagle", "random"]}, csr_threshold=0.1)
    metrics, per_sample = summarise({"summary": summary}, manifest, params)
    eagle, random = metrics.set_index("method").loc["eagle"], metrics.set_index("method").loc["random"]
    assert list(metrics.method) == ["eagle", "random"] and (metrics.n_explained == 3).all()
    assert eagle.amcr == pytest.approx((0.05 + 0.4 + 1.0) / 3) and eagle.csr == pytest.approx(1 / 3)
    assert random.amcr == pytest.approx((1.0 + 0.1 + 0.3) / 3) and random.csr == pytest.approx(1 / 3)
    assert eagle.corrected_rate == pytest.approx(2 / 3) and random.corrected_rate == pytest.approx(2 / 3)
    assert eagle.cause_hit_rate == pytest.approx(0.5) and eagle.n_with_cause == 2  # the absent one has no cause
    assert eagle.seconds_per_sample == pytest.approx(3.0) and pd_isna(random.seconds_per_sample)
    assert eagle.insertion_auc == pytest.approx(((0.7 + 1.5 + 0.8) / 3))
    assert (metrics.n_wrong == 3).all() and (metrics.hallucination_rate_biased == 0.2).all()
    # question ids in text order, then methods by name (as the per-question records always gave them)
    assert list(zip(per_sample.question_id, per_sample.method)) == [
        (10, "eagle"), (10, "random"), (2, "eagle"), (2, "random"), (3, "eagle"), (3, "random")]
    assert per_sample.answer_after.tolist() == ["No", "No", "No", "Yes", "Yes", "No"]
    # the threshold is a parameter of the tables alone
    wider, _ = summarise({"summary": summary}, manifest, EagleRepopeParams(correction={"methods": ["eagle"]}, csr_threshold=0.4))
    assert wider.csr.tolist() == [pytest.approx(2 / 3)] and wider.csr_threshold.tolist() == [0.4]


def pd_isna(value) -> bool:
    import pandas as pd

    return bool(pd.isna(value))


def test_yes_no_parsing():
    assert [hal.parse_yes_no(t) for t in ["Yes", "No.", "yes, there is a dog", " NO", "a red circle", ""]] == [
        "yes", "no", "yes", "no", None, None]
    assert hal.counter_word("no") == "No"
    with pytest.raises(ValueError, match="yes"):
        hal.counter_word("maybe")


# --- parity with the reference (docs/hallucination.md, "Parity with the reference") ----------------------------------
#: faithfulness_explanation/Qwen25-VL-3B/Qwen25-VL-3B-RePOPE.py (and every *-RePOPE*.py / *-hallucination.py),
#: written out escape by escape: a space before the first two newlines, straight double quotes around Yes and No
REFERENCE_PROMPT = ("You are asked a visual question answering task. \n"
                    "First, answer strictly with \"Yes\" or \"No\". \n"
                    "Then, provide a short explanation if necessary.\n"
                    "\n"
                    "Question: {}\n"
                    "Answer:")


def _env_params(env: str) -> dict:
    """params:eagle_repope of `env` (paper over base, soft-merged), with the project's own config loader."""
    from kedro.config import OmegaConfigLoader

    from eagle_pipelines import settings

    loader = OmegaConfigLoader(conf_source=str(ROOT / "conf"), env=env, runtime_params={},
                               **settings.CONFIG_LOADER_ARGS)
    return loader["parameters"]["eagle_repope"]


def test_the_paper_env_prompts_with_the_references_template_and_128_new_tokens():
    from eagle_pipelines.parameters import parse

    paper = parse("eagle_repope", _env_params("paper"))
    assert paper.prompt_template == REFERENCE_PROMPT and paper.prompt_suffix == ""
    assert paper.answering.max_new_tokens == 128 and paper.answering.answer_reading == "reference"
    assert paper.correction.protocol() == {"removal_steps": "reference", "baseline_maps": "pixels",
                                           "pixel_steps": 64, "invert_maps": ["tam"]}
    prompt = hal.question_prompt(paper.prompt_template, "Is there a skis in the image?", paper.prompt_suffix)
    assert prompt == ('You are asked a visual question answering task. \nFirst, answer strictly with "Yes" or "No". '
                      '\nThen, provide a short explanation if necessary.\n\nQuestion: Is there a skis in the image?'
                      '\nAnswer:')
    # the base env prompts with the bare question, as before the template existed
    base = parse("eagle_repope", _env_params("base"))
    assert base.prompt_template == "{question}" and base.answering.answer_reading == "ours"
    assert base.answering.max_new_tokens == 3
    assert hal.question_prompt(base.prompt_template, "Is there a x in the image?", base.prompt_suffix) == (
        "Is there a x in the image?")
    assert hal.question_prompt("Q: {question} ({x})", "Is there a x?", " Yes or No.") == (
        "Q: Is there a x? ({x}) Yes or No.")
    with pytest.raises(ValueError, match="no '{question}'"):
        hal.question_prompt("Answer strictly with Yes or No.", "Is there a x?")


def test_the_reference_reads_case_sensitive_prefixes_of_the_text():
    texts = ["Yes", "Yes. There is a skis.", "yes", "YES", " Yes", "**Yes**", "No", "No\n\nExplanation: ...", "no",
             " No", "Not sure", "None of them", "Yesterday", "", "The answer is Yes"]
    assert [hal.read_answer(t, "reference") for t in texts] == [
        "yes", "yes", None, None, None, None, "no", "no", None, None, "no", "no", "yes", None, None]
    assert [hal.read_answer(t, "ours") for t in texts] == [
        "yes", "yes", "yes", "yes", "yes", "yes", "no", "no", "no", "no", None, None, None, None, None]
    with pytest.raises(ValueError, match="unknown answer reading 'exact'"):
        hal.read_answer("Yes", "exact")


def test_a_lower_case_yes_does_not_correct_a_false_no_under_the_reference_reading():
    order, areas = np.array([0, 1, 2, 3]), np.full(4, 0.25)
    texts = iter(["No", "yes", " Yes, a dog", "Yes.", "Yes"])  # k = 1, 2, 3, 4 (ours) / k = 0, 1, 2, 3 (reference)

    def answer(keep):
        return [next(texts) for _ in keep]

    ours = hal.correct_by_removal(answer, order, areas, "yes", batch_size=1)
    assert ours.corrected_k == 2 and ours.answers == ["No", "yes"] and ours.amcr == pytest.approx(0.5)
    texts = iter(["No", "yes", " Yes, a dog", "Yes.", "Yes"])
    ref = hal.correct_by_removal(answer, order, areas, "yes", batch_size=1, reading="reference", steps="reference")
    assert ref.ks == [0, 1, 2, 3] and ref.corrected_k == 3 and ref.amcr == pytest.approx(0.75)
    assert ref.correcting_region == 1 and ref.removed_regions == [1, 2, 3]


def test_the_reference_steps_start_with_the_intact_image_and_never_show_a_black_one():
    seen: list[list[bool]] = []

    def answer(keep):
        seen.extend(row.tolist() for row in keep)
        return ["Yes"] * len(keep)

    order, areas = np.array([2, 0, 1]), np.array([0.2, 0.3, 0.5])
    never = hal.correct_by_removal(answer, order, areas, "no", batch_size=2, steps="reference")
    assert never.ks == [0, 1, 2] and seen == [[True, True, True], [True, False, True], [False, False, True]]
    assert never.removed_area == pytest.approx([0.0, 0.3, 0.5]) and not never.corrected and never.amcr == 1.0
    # ours: k = 1..3, the last one removes everything (a black image, removed area 1)
    seen.clear()
    ours = hal.correct_by_removal(answer, order, areas, "no", batch_size=2)
    assert ours.ks == [1, 2, 3] and seen[-1] == [False, False, False] and ours.removed_area[-1] == 1.0
    # an answer already correct on the intact image: AMCR 0, nothing removed, no correcting region
    intact = hal.correct_by_removal(lambda keep: ["No"] * len(keep), order, areas, "no", steps="reference")
    assert intact.corrected_k == 0 and intact.amcr == 0.0 and intact.correcting_region is None
    assert intact.removed_regions == [] and intact.corrected
    labels = np.array([[0, 1], [2, 2]])
    assert hal.cause_hit(labels, intact, labels == 2) is False
    assert hal.removed_cause_fraction(labels, intact, labels == 2) == 0.0


def _reference_keep(saliency: np.ndarray, rate: float) -> np.ndarray:
    """baseline_comparison/*/*-hallucination.py, ``perturbed(image, saliency_map, rate, mode="insertion")``: keep
    the top int(N·rate) pixels of ``np.argsort(-map)``."""
    flat = saliency.ravel()
    keep = np.zeros(flat.size, dtype=bool)
    keep[np.argsort(-flat)[:int(len(flat) * rate)]] = True
    return keep.reshape(saliency.shape)


def test_pixel_bands_keep_the_top_i_over_steps_of_the_pixels_as_the_reference_does():
    saliency = np.array([[0.9, 0.1, 0.5], [0.3, 0.8, 0.2], [0.7, 0.4, 0.6]])  # 9 pixels, 4 steps: 2, 4, 6, 9 kept
    bands = hal.pixel_bands(saliency, 4)
    assert bands.tolist() == [[0, 3, 2], [3, 0, 3], [1, 2, 1]]  # 0.9 0.8 | 0.7 0.6 | 0.5 0.4 | 0.3 0.2 0.1
    for i in range(1, 5):
        assert ((bands < i) == _reference_keep(saliency, i / 4)).all(), i
    # 64 steps over 23 x 17 pixels (391, not a multiple of 64), distinct values
    rng = np.random.default_rng(0)
    big = rng.permutation(23 * 17).reshape(23, 17).astype(float)
    bands = hal.pixel_bands(big, 64)
    for i in range(1, 65):
        assert ((bands < i) == _reference_keep(big, i / 64)).all(), i
    assert hal.pixel_bands(np.zeros((2, 2)), 2).tolist() == [[0, 0], [1, 1]]  # ties: raster order


def test_an_inverted_map_keeps_its_least_salient_pixels_first_and_corrects_by_removing_its_peak():
    """The reference's TAM protocol on RePOPE: the map upside down, then keep the top i/steps of the pixels. Kept at
    step i of 4 (8 pixels: 2 per step): the 2·i lowest pixels of the map. Removing k of the steps removes the 2·k
    most salient pixels of the original map."""
    from eagle_pipelines.pipelines.eagle_repope.nodes import pixel_units

    tam = np.array([[0.9, 0.1, 0.5, 0.3], [0.8, 0.2, 0.7, 0.4]])
    flipped = hal.inverted(tam)
    units, order = pixel_units(flipped, 4)
    assert order.tolist() == [0, 1, 2, 3] and units.areas().tolist() == [0.25] * 4
    kept = {i: {tuple(map(int, p)) for p in np.argwhere(units.labels < i)} for i in range(1, 5)}
    assert kept[1] == {(0, 1), (1, 1)}  # 0.1 and 0.2
    assert kept[2] == kept[1] | {(0, 3), (1, 3)}  # then 0.3 and 0.4
    assert kept[3] == kept[2] | {(0, 2), (1, 2)}  # then 0.5 and 0.7; never 0.9 or 0.8 before the last step
    assert (units.labels == 3).tolist() == (tam >= 0.8).tolist()

    def answer(keep):  # "No" once the map's peak (0, 0) is removed
        return ["No" if not m[0, 0] else "Yes" for m in units.masks(keep)]

    fix = hal.correct_by_removal(answer, order, units.areas(), "no", batch_size=4, reading="reference",
                                 steps="reference", stop_at_first=False)
    assert fix.ks == [0, 1, 2, 3] and fix.answers == ["Yes", "No", "No", "No"]
    assert fix.corrected_k == 1 and fix.amcr == pytest.approx(0.25) and fix.correcting_region == 3
    # not inverted, the peak is in the first band: only the last reference step (top 1/4 kept) removes it
    units, order = pixel_units(tam, 4)
    fix = hal.correct_by_removal(answer, order, units.areas(), "no", reading="reference", steps="reference")
    assert fix.corrected_k is None and fix.ks == [0, 1, 2, 3]


def test_our_protocol_adds_nothing_to_the_correction_fingerprints_and_the_paper_one_does():
    from eagle_pipelines.parameters import parse

    base = parse("eagle_repope", _env_params("base"))
    ours = base.correction
    assert all(ours.protocol_facts(m, base.answering.answer_reading) == {} for m in base.methods)
    assert not any(ours.pixel_protocol(m) for m in base.methods)
    paper = parse("eagle_repope", _env_params("paper"))
    ref, reading = paper.correction, paper.answering.answer_reading
    assert ref.protocol_facts("eagle", reading) == {"answer_reading": "reference", "removal_steps": "reference"}
    assert ref.protocol_facts("tam", reading) == {"answer_reading": "reference", "removal_steps": "reference",
                                                  "pixel_steps": 64, "inverted": True}
    assert "inverted" not in ref.protocol_facts("igos_pp", reading) and ref.pixel_protocol("igos_pp")
    assert not ref.pixel_protocol("eagle") and not ref.pixel_protocol("random")


class _FakeAnswer:
    def __init__(self, text: str):
        self.text = text

    def to_dict(self) -> dict:
        return {"text": self.text}


def test_answers_read_by_the_reference_explain_only_answers_that_read_as_the_opposite():
    import pandas as pd
    from types import SimpleNamespace

    from eagle_pipelines.core.hallucination import wrong_answers as _wrong
    from eagle_pipelines.pipelines.eagle_repope.nodes import QUESTION_COLUMNS, answer_questions

    said = {1: "Yes. There is a skis.", 2: "yes", 3: "No", 4: "No\n\nExplanation: none", 5: "Sure"}
    labels = {1: "no", 2: "no", 3: "no", 4: "yes", 5: "yes"}
    questions = pd.DataFrame([{"question_id": q, "image_id": q, "file_name": f"{q}.jpg", "text": "Is there a x?",
                               "prompt": "P", "label": labels[q], "object": "x", "kind": "repope", "cause": "",
                               "cause_annotation_id": None} for q in said], columns=QUESTION_COLUMNS)
    split = SimpleNamespace(image=lambda image_id: SimpleNamespace(pixels=image_id, sha=f"sha{image_id}"))
    vlm = SimpleNamespace(name="fake", fingerprint="f",
                          generate_batch=lambda images, prompt, max_new_tokens: [_FakeAnswer(said[i]) for i in images])
    from eagle_pipelines.parameters import EagleRepopeParams

    answering = EagleRepopeParams.Answering
    ref = answer_questions(vlm, split, questions, answering(batch_size=2, max_new_tokens=128,
                                                             answer_reading="reference"))
    assert [a["parsed"] for a in ref["answers"]] == ["yes", None, "no", "no", None]
    assert [a["question_id"] for a in _wrong(ref)] == [1, 4]  # "yes" and "Sure" read as neither: not explained
    assert ref["summary"]["wrong"] == 2 and ref["summary"]["unparsed"] == 2
    assert ref["settings"] == {"batch_size": 2, "max_new_tokens": 128, "answer_reading": "reference"}
    ours = answer_questions(vlm, split, questions, answering(batch_size=2, max_new_tokens=128))
    assert [a["parsed"] for a in ours["answers"]] == ["yes", "yes", "no", "no", None]
    assert [a["question_id"] for a in _wrong(ours)] == [1, 2, 4, 5]  # anything not correct


# --- the POPE / RePOPE reader ---------------------------------------------------------------------------------------
RECORDS = [
    {"question_id": 1, "image": "COCO_val2014_000000310196.jpg", "text": "Is there a snowboard in the image?",
     "label": "yes"},
    {"question_id": 2, "image": "COCO_val2014_000000310196.jpg", "text": "Is there a dining table in the image?",
     "label": "No"},
]


def test_the_reader_reads_json_lines_and_json_arrays(tmp_path):
    lines = tmp_path / "coco_repope_random.json"
    lines.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n\n")
    array = tmp_path / "array.json"
    array.write_text(json.dumps(RECORDS))
    for path in (lines, array):
        records = hal.read_pope_file(path)
        assert [r["object"] for r in records] == ["snowboard", "dining table"]
        assert [r["label"] for r in records] == ["yes", "no"]
        assert records[0]["image"] == "COCO_val2014_000000310196.jpg"
    assert hal.read_pope_questions(hal.write_pope_questions(hal.read_pope_file(lines))) == hal.read_pope_file(lines)


@pytest.mark.parametrize("line, message", [
    ('{"question_id": 3, "image": "x.jpg", "text": "Is there a cat in the image?"}', r"line 3: missing \['label'\]"),
    ('{"question_id": 3, "image": "x.jpg", "text": "Is there a cat in the image?", "label": "maybe"}',
     r"line 3: label 'maybe' is not yes/no"),
    ('{"question_id": 1, "image": "x.jpg", "text": "Is there a cat in the image?", "label": "no"}',
     r"line 3: question_id 1 repeats"),
    ('{"question_id": 3, "image": "x.jpg", "text": "What colour is the cat?", "label": "no"}',
     r"line 3: cannot find the object"),
    ('{"question_id": 3, "image": ', r"line 3: not valid JSON"),
])
def test_the_reader_names_the_file_and_line_of_a_bad_record(tmp_path, line, message):
    path = tmp_path / "bad.json"
    path.write_text("\n".join([json.dumps(r) for r in RECORDS] + [line]))
    with pytest.raises(hal.QuestionFormatError, match=message) as err:
        hal.read_pope_file(path)
    assert str(path) in str(err.value)


def test_a_missing_list_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="YanNeu/RePOPE"):
        hal.read_pope_file(tmp_path / "nope.json")


def test_shapes_questions_ask_about_the_companion_beside_the_anchor():
    images = [("a.png", {"red circle", "green square"}), ("b.png", {"blue square", "red circle"}),
              ("c.png", {"yellow triangle"}), ("d.png", {"green circle"}), ("e.png", {"red circle"})]
    cats = ["red circle", "blue square", "green square", "yellow triangle", "green circle"]
    records = hal.shapes_questions(images, cats, "red circle", "blue square", controls=2,
                                   rng=np.random.default_rng(0))
    biased = [r for r in records if r["kind"] == "biased"]
    assert [r["image"] for r in biased] == ["a.png", "e.png"]
    assert all(r["object"] == "blue square" and r["label"] == "no" and r["cause"] == "red circle" for r in biased)
    controls = [r for r in records if r["kind"] != "biased"]
    assert [(r["image"], r["kind"]) for r in controls] == [("b.png", "absent"), ("c.png", "present")]
    assert controls[0]["object"] not in {"blue square", "red circle"} and controls[0]["label"] == "no"
    assert controls[1]["object"] == "yellow triangle" and controls[1]["label"] == "yes"
    assert [r["question_id"] for r in records] == [1, 2, 3, 4]
    assert records[0]["text"] == "Is there a blue square in the image?"
    assert hal.read_pope_questions(hal.write_pope_questions(records))[0]["cause"] == "red circle"


# --- the embedded model -----------------------------------------------------------------------------------------------
def test_the_embedded_model_hallucinates_the_companion_and_removing_the_cause_corrects_it(shipped_model):
    """Biased questions ('Is there a blue square?' beside a red circle, no blue square, no other blue object or
    square): the model says yes on at least 20%; for those, EAGLE on "No" ranks the red circle last, so the first
    correcting removal hits it."""
    from eagle_pipelines.api import explain
    from eagle_pipelines.core.regions import slico
    from eagle_pipelines.data.shapes import generate_image
    from eagle_pipelines.parameters import parse
    from eagle_pipelines.pipelines.eagle_repope.nodes import confounded, counter_answer

    shapes = parse("shapes", yaml.safe_load((ROOT / "conf/base/parameters_data_preparation.yml").read_text())
                   ["shapes"])
    images, causes = [], []
    for i in range(3000):  # the pipeline's biased questions: X without Y, nothing else blue or square
        image, objects = generate_image(shapes, "repope", i)
        names = {o.name for o in objects}
        if ("red circle" in names and "blue square" not in names
                and not confounded(objects, "red circle", "blue square")):
            images.append(image)
            causes.append(next(o.mask for o in objects if o.name == "red circle"))
        if len(images) == 100:
            break
    prompt = "Is there a blue square in the image?"
    answers = [hal.parse_yes_no(a.text) for a in shipped_model.generate_batch(images, prompt, max_new_tokens=3)]
    wrong = [i for i, a in enumerate(answers) if a == "yes"]
    assert len(wrong) >= 0.2 * len(images), answers
    hits = []
    for i in wrong[:5]:
        regions = slico(images[i], n_segments=16)
        attr = explain(shipped_model, images[i], prompt, answer=counter_answer(shipped_model, prompt, "no"),
                       regions=regions, batch_size=64)

        def answer(keep, image=images[i], regions=regions):
            masks = regions.masks(keep)
            return [a.text for a in shipped_model.generate_batch([image * m[..., None] for m in masks], prompt, 3)]

        fix = hal.correct_by_removal(answer, attr.order, regions.areas(), "no")
        hits.append(hal.cause_hit(regions.labels, fix, causes[i]))
    assert np.mean(hits) >= 0.8, hits


# --- the pipeline's shape ---------------------------------------------------------------------------------------------
def test_the_pipeline_lives_in_its_namespace_and_reads_whole_parameters_only_in_its_tables():
    from eagle_pipelines.pipelines.eagle_repope import create_pipeline

    pipeline = create_pipeline()
    datasets = {d for n in pipeline.nodes for d in (*n.inputs, *n.outputs) if not d.startswith("params:")}
    assert {d for d in datasets if not d.startswith("eagle_repope.")} == {"vlm", "repope_source"}
    assert all(n.name.startswith("eagle_repope.") for n in pipeline.nodes)
    assert max(len(n.inputs) for n in pipeline.nodes) <= 6
    whole = {n.name.rsplit(".", 1)[1] for n in pipeline.nodes if "params:eagle_repope" in n.inputs}
    assert whole == {"summarise", "build_figures", "publish_report"}  # the others take the fields they use


# --- a tiny run through a KedroSession --------------------------------------------------------------------------------
@pytest.fixture
def project(project):
    """The project copy (conftest) with the shipped checkpoint."""
    shutil.copytree(SHIPPED_MODEL, project / MODEL_DIR)
    return project


TINY = {"eagle_repope": {"questions": {"biased": 4, "controls": 2}, "figure_samples": 2,
                         "correction": {"methods": ["eagle", "random", "tam"]}},
        "superpixels": {"n_segments": 6}}
OUT = Path("data/07_model_output/eagle_repope")
REPORT = Path("data/08_reporting/eagle_repope")


def _run(project: Path, params: dict, **kwargs) -> set[str]:
    """Runs eagle_repope; returns the names of the nodes that ran (without their namespaces)."""
    from kedro.framework.hooks import hook_impl
    from kedro.framework.session import KedroSession

    ran: set[str] = set()

    class Recorder:
        @hook_impl
        def before_node_run(self, node):
            ran.add(node.name.rsplit(".", 1)[-1])

    with KedroSession.create(project_path=project, runtime_params=params) as session:
        session._hook_manager.register(Recorder())
        session.run(pipeline_names=["eagle_repope"], **kwargs)
    return ran


def _items(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_eagle_repope_runs_and_writes_its_outputs(project):
    import pandas as pd

    assert len(_run(project, TINY)) == 10  # the template's superpixel node; no settings-bundling node
    data = project / "data"
    questions = hal.read_pope_file(data / "01_raw/eagle_repope/questions.jsonl")
    assert [q["kind"] for q in questions].count("biased") == 4 and len(questions) == 6
    assert len(list((data / "01_raw/eagle_repope/split/images").glob("*.png"))) == 6
    answers = json.loads((project / OUT / "answers.json").read_text())
    summary = answers["summary"]
    assert summary["questions"] == 6 and summary["biased"] == 4
    assert all(len(a["image_sha"]) == 16 for a in answers["answers"])
    wrong = {str(a["question_id"]) for a in answers["answers"] if not a["correct"]}

    # EAGLE: one attribution of the counter token per wrong answer, read through its manifest
    attributions = json.loads((project / OUT / "attributions.json").read_text())
    assert set(attributions["items"]) == wrong and not attributions["skipped"]
    for qid, info in attributions["items"].items():
        meta = json.loads((project / OUT / "attributions" / f"{qid}.{info['fp']}.json").read_text())
        assert meta["answer"] in ("Yes", "No") and meta["target_words"] == [meta["answer"]]
        assert meta["answer"] == hal.counter_word(info["label"]) and meta["meta"]["question_id"] == int(qid)
    superpixels = json.loads((data / "02_intermediate/eagle_repope/superpixels.json").read_text())
    assert set(superpixels["items"]) == {str(i["image_id"]) for i in attributions["items"].values()}

    # corrections: one record per method and wrong answer
    corrections = json.loads((project / OUT / "corrections.json").read_text())
    assert set(corrections["items"]) == {f"{m}/{q}" for m in ("eagle", "random", "tam") for q in wrong}
    for key, info in corrections["items"].items():
        record = json.loads((project / OUT / "corrections" / f"{key}.{info['fp']}.json").read_text())
        assert record["method"] == key.split("/")[0] and record["amcr"] == (
            record["removed_area"][record["ks"].index(record["corrected_k"])] if record["corrected"] else 1.0)
        assert sorted(record["order"]) == list(range(record["n_regions"]))

    # the published report: tables, figures, page and run.json together
    metrics = pd.read_csv(project / REPORT / "metrics.csv")
    assert (project / REPORT / "latest").is_symlink()
    assert list(metrics.method) == ["eagle", "random", "tam"]
    assert {"insertion_auc", "ahc", "amcr", "csr", "cause_hit_rate", "hallucination_rate_biased"} <= set(
        metrics.columns)
    assert (metrics.n_wrong == len(wrong)).all() and (metrics.n_explained == len(wrong)).all()
    if wrong:
        assert metrics.amcr.between(0, 1).all() and metrics.csr.between(0, 1).all()
        per_sample = pd.read_csv(project / REPORT / "metrics_per_sample.csv")
        assert len(per_sample) == 3 * len(wrong)
    report = (project / REPORT / "report.html").read_text()
    assert "eagle_repope" in report and "amcr" in report and report.count("data:image/png;base64,") == 2
    assert "Not in the tables" in report
    assert (project / REPORT / "latest/figures/corrections.png").stat().st_size > 1000
    run = json.loads((project / REPORT / "run.json").read_text())
    assert run["wrong answers"] == len(wrong) and run["params"]["eagle_repope"]["csr_threshold"] == 0.1
    assert run["params"]["removal"]["methods"] == ["eagle", "random", "tam"]

    # a second run computes nothing new: every item is read back under its fingerprint, none rewritten
    stores = [data / "02_intermediate/eagle_repope/superpixels", project / OUT / "attributions",
              project / OUT / "corrections"]
    before = {s: _items(s) for s in stores}
    _run(project, TINY)
    assert {s: _items(s) for s in stores} == before
    assert json.loads((project / OUT / "corrections.json").read_text())["items"] == corrections["items"]


@pytest.mark.slow
def test_the_reference_protocol_runs_on_the_photo(project):
    """The paper environment's protocol on the embedded data: the reference's reading, removal steps from the
    intact image, TAM inverted and corrected by pixel bands, regions and masks on the photo (compose: processor)."""
    reference = {"answering": {"answer_reading": "reference"},
                 "correction": {**TINY["eagle_repope"]["correction"], "removal_steps": "reference",
                                "baseline_maps": "pixels", "pixel_steps": 16, "invert_maps": ["tam"]}}
    params = {"eagle_repope": {**TINY["eagle_repope"], **reference},
              "superpixels": {**TINY["superpixels"], "compose": "processor"}}
    _run(project, params)
    answers = json.loads((project / OUT / "answers.json").read_text())
    assert answers["settings"]["answer_reading"] == "reference"
    assert all(a["parsed"] == hal.read_reference(a["text"]) for a in answers["answers"])
    wrong = {str(a["question_id"]) for a in answers["answers"] if a["wrong"]}
    assert wrong and wrong == {str(a["question_id"]) for a in answers["answers"]
                               if a["parsed"] not in (None, a["label"])}
    corrections = json.loads((project / OUT / "corrections.json").read_text())
    protocol = {k: v for k, v in reference["correction"].items() if k != "methods"}
    assert corrections["params"]["removal"]["correction"] == protocol
    assert set(corrections["items"]) == {f"{m}/{q}" for m in ("eagle", "random", "tam") for q in wrong}
    for key, info in corrections["items"].items():
        record = json.loads((project / OUT / "corrections" / f"{key}.{info['fp']}.json").read_text())
        assert record["ks"][0] == 0 and record["removed_area"][0] == 0.0  # the intact image first
        assert record["units"] == ("pixel_bands" if record["method"] == "tam" else "regions")
        n = record["n_regions"]
        assert (n == 16) == (record["method"] == "tam") and max(record["ks"]) <= n - 1  # never a black image
        assert record["corrected"] == any(hal.read_reference(t) == record["label"] for t in record["answers"])


@pytest.mark.slow
def test_a_new_csr_threshold_reruns_only_the_tables_and_the_report(project):
    import pandas as pd

    _run(project, TINY)
    before = _items(project / "data")
    history = sorted((project / REPORT / "history").iterdir())
    wider = {**TINY, "eagle_repope": {**TINY["eagle_repope"], "csr_threshold": 0.5}}
    assert _run(project, wider, only_missing_outputs=True) == {"summarise", "build_figures", "publish_report"}
    after = _items(project / "data")
    changed = {p.relative_to(project / "data").as_posix() for p in after if before.get(p) != after[p]}
    assert not {c for c in changed if c.startswith(("01_raw", "02_intermediate", "05_model_input",
                                                    "07_model_output"))}, changed
    metrics = pd.read_csv(project / REPORT / "metrics.csv")
    assert (metrics.csr_threshold == 0.5).all()
    assert len(sorted((project / REPORT / "history").iterdir())) == len(history) + 1
    # and nothing else is out of date: a second such run runs nothing
    assert _run(project, wider, only_missing_outputs=True) == set()


@pytest.mark.slow
def test_the_repope_source_says_what_is_missing(project):
    from kedro.io.core import DatasetError

    params = {**TINY, "eagle_repope": {**TINY["eagle_repope"], "source": "repope"}}
    with pytest.raises(DatasetError, match=r"coco_repope_random\.json.*YanNeu/RePOPE"):
        _run(project, params)


@pytest.mark.slow
def test_the_repope_source_reads_a_question_list_and_a_coco_folder(project):
    """The paper environment's path on a fixture: a RePOPE-format list about three COCO-named images."""
    import pandas as pd
    from PIL import Image

    from eagle_pipelines.data.shapes import generate_images
    from eagle_pipelines.parameters import parse

    shapes = parse("shapes", yaml.safe_load((ROOT / "conf/base/parameters_data_preparation.yml").read_text())
                   ["shapes"])
    split = generate_images(shapes, "eval", [0, 1, 2])
    coco = project / "fixture" / "coco"
    (coco / "val2014").mkdir(parents=True)
    (coco / "annotations").mkdir()
    instances = split.instances
    records = []
    for n, (info, (name, pixels)) in enumerate(zip(instances["images"], sorted(split.images.items()))):
        info["file_name"] = f"COCO_val2014_{info['id']:012d}.jpg"
        Image.fromarray(pixels).save(coco / "val2014" / info["file_name"], quality=95)
        present = {a["category_id"] for a in instances["annotations"] if a["image_id"] == info["id"]}
        cat = next(c for c in instances["categories"] if c["id"] in present)
        records.append({"question_id": n + 1, "image": info["file_name"],
                        "text": f"Is there a {cat['name']} in the image?", "label": "yes"})
    (coco / "annotations" / "instances_val2014.json").write_text(json.dumps(instances))
    questions = project / "fixture" / "coco_repope_random.json"
    questions.write_text("".join(json.dumps(r) + "\n" for r in records))
    (project / "conf" / "local" / "catalog.yml").write_text(yaml.safe_dump({"repope_source": {
        "type": "eagle_pipelines.io.coco_dataset.RepopeSourceDataset",
        "filepath": str(questions), "path": str(coco), "metadata": {"kedro-viz": {"layer": "raw"}}}}))

    _run(project, {"eagle_repope": {"source": "repope", "correction": {"methods": ["eagle", "random"]}},
                   "superpixels": {"n_segments": 6}})
    data = project / "data"
    stored = data / "01_raw/eagle_repope/split/images"  # COCO's files as they are, copied, never re-encoded
    assert sorted(p.name for p in stored.iterdir()) == [i["file_name"] for i in instances["images"]]
    assert all((stored / i["file_name"]).read_bytes() == (coco / "val2014" / i["file_name"]).read_bytes()
               for i in instances["images"])
    listed = pd.read_csv(data / "05_model_input/eagle_repope/questions.csv")
    assert listed.question_id.tolist() == [1, 2, 3] and set(listed.kind) == {"repope"}
    assert listed.image_id.tolist() == [i["id"] for i in instances["images"]]
    answers = json.loads((project / OUT / "answers.json").read_text())
    assert answers["summary"]["questions"] == 3 and answers["summary"]["repope"] == 3
    metrics = pd.read_csv(project / REPORT / "metrics.csv")
    assert (metrics.n_with_cause == 0).all() and metrics.cause_hit_rate.isna().all()  # no known cause on RePOPE


def test_a_missing_repope_source_is_named_before_any_node(tmp_path):
    from eagle_pipelines.hooks import missing_input
    from eagle_pipelines.io.coco_dataset import RepopeSourceDataset

    entry = yaml.safe_load((ROOT / "conf/base/catalog_eagle_repope.yml").read_text())["repope_source"]
    assert entry["metadata"]["needed_when"] == {"eagle_repope.source": "repope"}
    dataset = RepopeSourceDataset(filepath=str(tmp_path / "coco_repope_random.json"), path=str(tmp_path / "coco"),
                                  missing_hint="Copy RePOPE's list.")
    message = missing_input("repope_source", dataset)
    assert f"{tmp_path}/coco_repope_random.json (the question list)" in message
    assert f"{tmp_path}/coco/val2014/ (the images folder)" in message
    assert "instances_val2014.json" in message and "Copy RePOPE's list." in message
    (tmp_path / "coco_repope_random.json").write_text('{"question_id": 1, "image": "a.jpg", "text": "Is there a '
                                                      'dog in the image?", "label": "yes"}\n')
    (tmp_path / "coco" / "val2014").mkdir(parents=True)
    message = missing_input("repope_source", dataset)
    assert "question list" not in message and "val2014/*.jpg (the folder has no image)" in message


@pytest.mark.slow
def test_prompt_units_words_explains_the_counter_token_over_regions_and_question_words(project):
    """eagle_repope.prompt_units: words: each wrong answer's counter token gets a joint record (regions and the
    question's words, each step's modality) read back from the store; the correction removes regions only, in
    their joint order; the explorer shows the question's words by rank."""
    from eagle_pipelines.core.joint import WORD, JointAttribution
    from eagle_pipelines.io.items import AttributionManifestDataset, ManifestDataset

    _run(project, {**TINY, "eagle_repope": {**TINY["eagle_repope"], "prompt_units": "words",
                                            "correction": {"methods": ["eagle", "random"]}}})
    out = project / OUT
    manifest = AttributionManifestDataset(str(out / "attributions.json"),
                                          store={"path": str(out / "attributions"), "kind": "attribution"}).load()
    assert manifest.items and manifest.params["prompt_units"] == "words"
    corrections = ManifestDataset(str(out / "corrections.json"),
                                  store={"path": str(out / "corrections"), "kind": "record"}).load()
    for key, info in manifest.items.items():
        record = manifest.load(key)
        assert isinstance(record, JointAttribution)
        assert [u["text"] for u in record.units] == WORD.findall(info["prompt"])
        assert record.modality.count("prompt") == record.n_units and record.modality.count("image") == record.n_image
        fix = corrections.load(f"eagle/{key}")
        assert fix["order"] == record.region_order().tolist()  # regions only, in their joint order
        assert fix["n_regions"] == record.n_image
    explorer = (project / REPORT / "report.html").read_text()
    assert '"segments"' in explorer and "rx-prompt" in explorer
    assert "Every metric above is image-only" in explorer  # the report says which metrics are image-only
