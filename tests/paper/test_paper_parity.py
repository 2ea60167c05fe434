"""The seven parity points of issue 24: each switch's reference reading (conf/paper) does what the reference's code
does, its base reading is unchanged, and the paper configuration selects the reference's (docs/paper.md#parity)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from eagle_pipelines.core.evaluate import pixel_curves
from eagle_pipelines.core.metrics import MetricError, faithfulness, pixel_order_masks, pixel_ranking
from eagle_pipelines.core.regions import RegionMap, opencv_slico
from eagle_pipelines.core.targets import literal_match, literal_position, per_category_selection, token_char_spans

from tests.conftest import ROOT, SHIPPED_MODEL

LISTS = ROOT / "tests/fixtures/reference_lists"


# --- 4. pixel-protocol ties ----------------------------------------------------------------------------------------
def _plateau() -> np.ndarray:
    saliency = np.zeros((32, 32), dtype=np.float32)
    saliency[8:24, 8:24] = 0.5  # a plateau (as LLaVA-CAM after ReLU or TAM leave them) inside a flat floor
    saliency[15, 15] = 1.0
    return saliency


def test_numpy_default_ties_rank_pixels_as_the_references_argsort_and_move_the_auc():
    saliency = _plateau()
    reference = np.argsort(-saliency.flatten())  # baseline_comparison/*/*-inference.py: perturbed()
    np.testing.assert_array_equal(pixel_ranking(saliency, "numpy_default"), reference)
    stable = pixel_ranking(saliency, "stable")
    np.testing.assert_array_equal(stable[:1], [15 * 32 + 15])
    assert (stable != reference).any()  # same values, another order on the plateau
    np.testing.assert_array_equal(np.sort(saliency.ravel()[stable])[::-1], saliency.ravel()[stable])

    def scorer(keep):  # a token that reads the top-left quarter of the plateau
        keep = np.asarray(keep, dtype=float)
        return keep[:, 8:16, 8:16].mean(axis=(1, 2))[:, None]

    ours = faithfulness(pixel_curves(scorer, saliency, 16, "stable"))
    ref = faithfulness(pixel_curves(scorer, saliency, 16, "numpy_default"))
    assert abs(ours["insertion_auc"] - ref["insertion_auc"]) > 1e-3
    # ties only: a map without them ranks alike under both
    distinct = np.arange(1024, dtype=np.float32).reshape(32, 32)
    for a, b in zip(pixel_order_masks(distinct, 8, "stable"), pixel_order_masks(distinct, 8, "numpy_default")):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(MetricError, match="pixel ties"):
        pixel_ranking(saliency, "quicksort")


# --- 5. softmax dtype ---------------------------------------------------------------------------------------------
def test_model_dtype_softmax_is_computed_in_bf16_and_float32_upcasts_first():
    from eagle_pipelines.models.adapter import token_softmax

    logits = (torch.randn(2, 3, 50, generator=torch.Generator().manual_seed(0)) * 4).to(torch.bfloat16)
    model = token_softmax(logits, "model", torch.bfloat16)
    np.testing.assert_array_equal(model.numpy(), torch.softmax(logits, dim=-1).float().numpy())  # the reference
    assert torch.equal(model, model.to(torch.bfloat16).float())  # every value a bf16 number
    ours = token_softmax(logits, "float32")
    np.testing.assert_allclose(ours.numpy(), torch.softmax(logits.float(), dim=-1).numpy(), rtol=0, atol=0)
    assert (ours != model).any() and torch.allclose(ours, model, atol=1e-2)


def test_the_scorer_takes_the_softmax_dtype_from_the_model_options():
    from eagle_pipelines.models.qwen_vl import QwenVLAdapter

    with pytest.raises(ValueError, match="softmax_dtype must be one of"):
        QwenVLAdapter.from_pretrained(SHIPPED_MODEL, softmax_dtype="bf16")
    ref = QwenVLAdapter.from_pretrained(SHIPPED_MODEL, dtype="bfloat16", softmax_dtype="model")
    ours = QwenVLAdapter.from_pretrained(SHIPPED_MODEL, dtype="bfloat16")
    image = np.full((56, 56, 3), 128, dtype=np.uint8)  # at the embedded model's resolution
    image[8:36, 8:36] = (220, 40, 40)
    answer = ours.generate(image, "Describe the image.", max_new_tokens=6)
    positions = list(range(len(answer.token_ids)))
    masks = np.ones((3, 56, 56), dtype=bool)
    masks[1, :28] = False
    masks[2] = False
    p_ref = ref.scorer(image, "Describe the image.", answer.token_ids, positions)(masks)
    p_ours = ours.scorer(image, "Describe the image.", answer.token_ids, positions)(masks)
    assert np.array_equal(p_ref, torch.tensor(p_ref).to(torch.bfloat16).float().numpy())  # rounded in bf16
    assert not np.array_equal(p_ref, p_ours) and np.abs(p_ref - p_ours).max() < 2e-2


# --- 6. region numbering ------------------------------------------------------------------------------------------
def _noise(seed: int = 62) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
    return (rng.random((h, w, 3)) * 255).astype(np.uint8)


def test_opencv_ids_are_kept_with_an_empty_label_as_a_no_op_region():
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2, "ximgproc"):
        pytest.skip("OpenCV without its contrib modules")
    image = _noise()  # 62 x 70 noise at n = 64: OpenCV makes 68 ids, one of which labels no pixel
    slic = cv2.ximgproc.createSuperpixelSLIC(np.ascontiguousarray(image[..., ::-1]), algorithm=cv2.ximgproc.SLICO,
                                             region_size=int((image.shape[0] * image.shape[1] / 64) ** 0.5),
                                             ruler=20.0)
    slic.iterate(20)
    kept = opencv_slico(image, 64, labels="opencv")
    np.testing.assert_array_equal(kept.labels, slic.getLabels())  # the reference's ids, unchanged
    assert kept.n_regions == slic.getNumberOfSuperpixels()  # utils.py: range(getNumberOfSuperpixels())
    empty = sorted(set(range(kept.n_regions)) - set(np.unique(kept.labels).tolist()))
    assert len(empty) == 1
    assert kept.areas()[empty[0]] == 0
    keep = np.zeros((2, kept.n_regions), dtype=bool)
    keep[:, :5] = True
    keep[1, empty[0]] = True
    masks = kept.masks(keep)
    np.testing.assert_array_equal(masks[0], masks[1])  # keeping (or removing) it changes no pixel
    ours = opencv_slico(image, 64)
    assert ours.n_regions == kept.n_regions - 1 and set(np.unique(ours.labels)) == set(range(ours.n_regions))
    with pytest.raises(ValueError, match="opencv_labels"):
        opencv_slico(image, 64, labels="sorted")


def test_a_trailing_empty_id_still_counts_under_the_opencv_numbering():
    labels = np.array([[0, 0, 1], [1, 2, 2]], dtype=np.int32)
    assert RegionMap(labels, {}).n_regions == 3
    assert RegionMap(labels, {"labels": "opencv", "n_labels": 5}).n_regions == 5


# --- 3. IGOS++ objective ------------------------------------------------------------------------------------------
class _PathRecorder:
    """A teacher-forced pass whose one token's log-probability is a smooth function of the image; it records the
    images IGOS++ sends it."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.height = self.width = 16
        self.image = torch.rand((16, 16, 3), generator=g) * 255
        self.answer_ids = torch.tensor([1])
        self.pixel_mean = [127.5, 127.5, 127.5]  # the baseline "mean": a flat grey image
        self.weights = torch.randn((16, 16, 3), generator=g)
        self.seen = []

    def __call__(self, images):
        self.seen.append(images.detach().clone())
        score = (images * self.weights).mean(dim=(1, 2, 3)) / 255.0
        logits = torch.stack([torch.zeros_like(score), score], dim=-1)[:, None, :]  # (B, 1 answer token, 2)
        return type("Out", (), {"logits": logits})()


def test_the_reference_objective_puts_all_four_terms_on_the_image_to_baseline_path():
    from eagle_pipelines.core.baselines.igos_pp import igos_pp

    settings = {"size": 4, "iterations": 1, "ig_steps": 3, "noise": 0.0, "baseline": "mean", "batch_size": 100}
    maps = {}
    for objective in ("paper", "reference"):
        tf = _PathRecorder()
        maps[objective] = igos_pp(tf, [0], objective=objective, **settings)
        images = tf.seen[0]
        n = settings["ig_steps"]
        deletion, insertion = images[:n], images[n:2 * n]
        base = torch.full_like(tf.image, 127.5)
        # at alpha = 1 and the initial all-ones mask: phi(image, base, 1) = image, phi(base, image, 1) = base
        torch.testing.assert_close(deletion[-1], tf.image)
        torch.testing.assert_close(insertion[-1], base if objective == "paper" else tf.image)
        if objective == "reference":
            torch.testing.assert_close(insertion, deletion)  # the same path, subtracted instead of added
            torch.testing.assert_close(images[3 * n:], images[2 * n:3 * n])
    assert np.abs(maps["paper"] - maps["reference"]).max() > 1e-4
    with pytest.raises(ValueError, match="objective"):
        igos_pp(_PathRecorder(), [0], objective="blur_to_image", **settings)


# --- 2. MMVP prompt -----------------------------------------------------------------------------------------------
def test_the_bare_mmvp_prompt_is_the_question_alone():
    import pandas as pd

    from eagle_pipelines.data.mmvp import MmvpParams, mmvp_eval_list

    questions = pd.DataFrame({"Index": [1, 2], "Question": ["Are the butterfly's wings closer to being open or "
                                                             "closed?"] * 2,
                              "Options": ["(a) Open (b) Closed"] * 2, "Correct Answer": ["(a)", "(b)"]})
    images = {"1": None, "2": None}
    bare = mmvp_eval_list(questions, images, MmvpParams(prompt_format="bare"))
    assert bare["prompt"].tolist() == ["Are the butterfly's wings closer to being open or closed?"] * 2
    sample = json.loads((LISTS / "sample-mmvp.json").read_text())
    assert bare["prompt"].iloc[0] == sample[0]["question"]  # the reference's prompt: content["question"]
    options = mmvp_eval_list(questions, images, MmvpParams())
    assert options["prompt"].iloc[0].splitlines()[1:3] == ["(a) Open", "(b) Closed"]


# --- 1. word level ------------------------------------------------------------------------------------------------
def test_literal_names_match_inside_words_and_in_any_case():
    assert literal_match("A busy city street", "bus") == (2, 5)
    assert literal_match("Two ceramic cups", "cup") == (12, 15)
    assert literal_match("A cat watches TV on a JVC television set", "tv") == (14, 16)
    assert literal_match("A cat on a mat", "dog") is None

    vocab = ["A", " bus", "y", " city", " and", " a", " bus"]

    def decode(ids):
        return "".join(vocab[i] for i in ids)

    assert token_char_spans(decode, list(range(7)))[0] == "A busy city and a bus"
    assert literal_position(decode, list(range(7)), "bus") == 1  # the first match, where it begins ("busy")
    assert literal_position(decode, list(range(7)), "train") is None


def test_the_per_category_rule_keeps_a_quota_in_candidate_order_each_image_once():
    sentences = {1: "A person rides a bus.", 2: "A busy street.", 3: "A man sits.", 4: "People and a bus.",
                 5: "A person with cups.", 6: "A bus at a stop.", 7: "A person."}
    candidates = [("person", [5, 1, 3, 7, 9]), ("bus", [1, 2, 4, 6]), ("cup", [5, 6])]
    chosen = per_category_selection(candidates, sentences, quota=2)
    # person: 5 and 1 (3 names no "person"; the quota stops at 2); bus: 1 is taken, so 2 ("busy") and 4;
    # cup: 5 is taken and 6 has none
    assert chosen == [(5, "person"), (1, "person"), (2, "bus"), (4, "bus")]
    assert per_category_selection(candidates, {}, quota=4) == []  # no answers, nothing chosen
    with pytest.raises(ValueError, match="quota"):
        per_category_selection(candidates, sentences, quota=0)


def test_the_authors_sample_entries_are_found_by_the_rule():
    for entry in json.loads((LISTS / "sample-object.json").read_text()):
        start, _ = literal_match(entry["generate_sentence"], entry["select_category"])
        assert entry["generate_sentence"][start:].lower().startswith(entry["select_category"])
        assert entry["target_generated_token"].replace("Ġ", "").lower() == entry["select_category"]


def test_word_candidates_follow_pycocotools_order_and_the_split_marks_each_images_level(tmp_path):
    from pycocotools.coco import COCO

    from eagle_pipelines.data.coco import CocoIndex
    from eagle_pipelines.data.coco_sample import CocoSampleParams, coco_eval_split, word_candidates
    from tests.coco_fixtures import make_coco

    root = tmp_path
    make_coco(root)
    instances = json.loads((root / "annotations/instances_val2017.json").read_text())
    params = CocoSampleParams(images=1, word_sample="per_category", word_candidates=2, word_quota=1)
    found = word_candidates(CocoIndex(instances, None), params)
    coco = COCO()
    coco.dataset = instances
    coco.createIndex()
    for c in found:
        assert c["image_ids"] == coco.getImgIds(catIds=[c["category_id"]])[:2]
    from PIL import Image

    images = {p.stem: (lambda p=p: Image.open(p)) for p in (root / "val2017").glob("*.jpg")}
    _, split, _ = coco_eval_split(instances, None, images, params)
    marked = {im["id"]: im["samples"] for im in split["images"]}
    assert sum("caption" in s for s in marked.values()) == 1
    assert {i for c in found for i in c["image_ids"]} == {i for i, s in marked.items() if "word" in s}
    assert split["info"]["word_candidates"] == found


# --- 7. masked images per pass, and the paper configuration as a whole -------------------------------------------
def test_the_paper_configuration_selects_every_reference_reading(project):
    from kedro.framework.session import KedroSession

    from eagle_pipelines.parameters import parse

    session = KedroSession.create(project_path=project, env="paper")
    context = session.load_context()
    params = {k: v.model_dump() if hasattr(v, "model_dump") else v for k, v in context.params.items()}
    assert parse("evaluation", params["evaluation"]).pixel_ties == "numpy_default"
    assert params["evaluation"]["batch_size"] == params["attribution"]["batch_size"] == 1
    assert parse("superpixels", params["superpixels"]).opencv_labels == "opencv"
    assert parse("baselines", params["baselines"]).igos_pp.objective == "reference"
    mmvp = parse("eagle_mmvp", params["eagle_mmvp"])
    assert (mmvp.prompt_format, mmvp.max_new_tokens) == ("bare", 128)
    coco = parse("eval_data", params["eval_data"]).coco
    assert (coco.word_sample, coco.word_quota, coco.reference_lists) == ("per_category", 4, None)
    assert params["attribution"]["word_selection"] == "reference"
    assert context.config_loader["catalog"]["vlm"]["options"] == {"softmax_dtype": "model"}
    assert context.catalog.get("word_reference_list")._describe()["filepath"].endswith(
        "data/01_raw/reference_lists/coco_single_target_once_qwen25vl-3B.json")
    session.close()
    # a folder of lists is named by one runtime parameter, the list by the model preset
    session = KedroSession.create(project_path=project, env="paper",
                                  runtime_params={"reference_lists": "/lists", "model": "llava_1_5_7b"})
    context = session.load_context()
    assert parse("eval_data", context.params["eval_data"]).coco.reference_lists == "/lists"
    assert context.catalog.get("word_reference_list")._describe()["filepath"] == (
        "/lists/coco_single_target_once_llava-1_5-7B.json")
    session.close()


def test_base_keeps_our_readings(project):
    from kedro.framework.session import KedroSession

    from eagle_pipelines.parameters import parse

    session = KedroSession.create(project_path=project, env="base")
    params = session.load_context().params
    assert parse("evaluation", params["evaluation"]).pixel_ties == "stable"
    assert parse("superpixels", params["superpixels"]).opencv_labels == "renumbered"
    assert parse("baselines", params["baselines"]).igos_pp.objective == "paper"
    assert parse("eagle_mmvp", params["eagle_mmvp"]).prompt_format == "options"
    assert parse("eval_data", params["eval_data"]).coco.word_sample == "caption_sample"
    assert parse("attribution", params["attribution"]).word_selection == "each"
    session.close()


@pytest.mark.slow
def test_a_reference_lists_folder_without_the_list_stops_the_run_naming_the_file_and_the_fix(project, tmp_path):
    from kedro.framework.session import KedroSession

    from eagle_pipelines.hooks import MissingInputError

    folder = tmp_path / "lists"
    folder.mkdir()
    (folder / "Qwen2.5-VL-3B-coco-caption.json").write_text("[]")
    with KedroSession.create(project_path=project, env="paper",
                             runtime_params={"reference_lists": str(folder)}) as session:
        with pytest.raises(MissingInputError) as err:
            session.run(pipeline_names=["eagle_coco"])
    message = str(err.value)
    line = next(ln for ln in message.splitlines() if "word_reference_list" in ln)
    assert "coco_single_target_once_qwen25vl-3B.json" in line and "reference_lists" in line
    assert "leave out --params reference_lists" in message


def test_select_targets_applies_the_rule_across_the_images_and_explains_where_the_name_begins():
    """select_targets with word_selection: reference on a split of four images: per category in candidate order,
    the quota, each image once, the token where the literal name begins, the image's object of that category;
    sentence targets only for the caption sample."""
    from types import SimpleNamespace

    from eagle_pipelines.data.coco import CocoIndex
    from eagle_pipelines.parameters import AttributionParams
    from eagle_pipelines.pipelines.experiment.nodes import select_targets

    words = ["A", " busy", " bus", " person", " with", " cups", ".", " cat"]
    sentences = {1: [0, 3, 4, 5, 6], 2: [0, 1, 7, 6], 3: [0, 2, 4, 3, 6], 4: [0, 7, 6]}

    def decode(ids):
        return "".join(words[i] for i in ids)

    def box(image_id, ann_id, cat):
        return {"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": [0, 0, 2, 2], "area": 4,
                "iscrowd": 0, "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]}

    cats = [{"id": 1, "name": "person"}, {"id": 6, "name": "bus"}, {"id": 47, "name": "cup"}]
    images = [{"id": i, "file_name": f"{i}.png", "width": 4, "height": 4,
               "samples": ["caption", "word"] if i == 1 else ["word"]} for i in sentences]
    anns = [box(1, 11, 1), box(1, 12, 47), box(2, 21, 6), box(3, 31, 1), box(3, 32, 6), box(4, 41, 1)]
    instances = {"images": images, "annotations": anns, "categories": cats,
                 "info": {"sample": {"word_quota": 1},
                          "word_candidates": [{"category": "person", "image_ids": [3, 1, 4]},
                                              {"category": "bus", "image_ids": [3, 2]},
                                              {"category": "cup", "image_ids": [1]}]}}
    split = SimpleNamespace(index=CocoIndex(instances, None), instances=instances)
    answers = {"answers": [
        {"item": str(i), "image_id": i, "image_sha": "x", **{
            "prompt": "Describe the image.", "token_ids": ids, "tokens": [words[t] for t in ids],
            "text": decode(ids), "token_probs": [0.5] * len(ids), "finished": True, "end_token_id": None}}
        for i, ids in sentences.items()]}
    vlm = SimpleNamespace(processor=SimpleNamespace(tokenizer=SimpleNamespace(decode=decode)))
    out = select_targets(vlm, split, answers, AttributionParams(word_selection="reference"))
    word = {t["image_id"]: t for t in out["targets"] if t["level"] == "word"}
    # person: image 3 first (quota 1); bus: 3 is taken, so 2 ("busy": the token " busy", position 1);
    # cup: image 1 ("cups", position 3), whose person came after the quota was filled
    assert {i: (t["meta"]["category"], t["positions"]) for i, t in word.items()} == {
        3: ("person", [3]), 2: ("bus", [1]), 1: ("cup", [3])}
    assert word[1]["meta"]["annotation_id"] == 12
    assert [s["image_id"] for s in out["skipped"] if s["level"] == "word"] == [4]
    assert [t["image_id"] for t in out["targets"] if t["level"] == "sentence"] == [1]  # the caption sample only


def test_with_the_authors_word_list_the_split_holds_the_caption_sample_and_the_listed_images(tmp_path):
    """eval_data.coco.reference_lists: the word level's images are the list's, each with its record and its one
    object (not COCO's annotations); the caption sample keeps its images; a caption list in its place is refused
    naming the file and the fix."""
    from PIL import Image

    from eagle_pipelines.data.coco import CocoFormatError
    from eagle_pipelines.data.coco_sample import CocoSampleParams, coco_eval_split
    from tests.coco_fixtures import make_coco

    make_coco(tmp_path)
    instances = json.loads((tmp_path / "annotations/instances_val2017.json").read_text())
    files = {im["id"]: im["file_name"] for im in instances["images"]}
    images = {p.stem: (lambda p=p: Image.open(p)) for p in (tmp_path / "val2017").glob("*.jpg")}
    entry = json.loads((LISTS / "sample-object.json").read_text())[0]
    listed = [{**entry, "image_path": files[i], "location": [1, 1, 20, 30], "segmentation": []} for i in (1, 10)]
    params = CocoSampleParams(images=2, seed=0, reference_lists=str(tmp_path))
    _, split, captions = coco_eval_split(instances, None, images, params, word_list=(listed, "once.json"))
    by_id = {im["id"]: im for im in split["images"]}
    assert {i for i, im in by_id.items() if "word" in im["samples"]} == {1, 10}
    assert all("reference" in by_id[i] for i in (1, 10))
    assert sum("caption" in im["samples"] for im in by_id.values()) == 2
    for i in (1, 10):  # the list's object alone, its box as listed
        objects = [a for a in split["annotations"] if a["image_id"] == i]
        assert len(objects) == 1 and objects[0]["bbox"] == [1.0, 1.0, 19.0, 29.0]
    caption = json.loads((LISTS / "sample-caption.json").read_text())[:1]
    caption[0]["image_path"] = files[1]
    with pytest.raises(CocoFormatError, match="coco_single_target_once.*globals.yml"):
        coco_eval_split(instances, None, images, params, word_list=(caption, "caption.json"))
